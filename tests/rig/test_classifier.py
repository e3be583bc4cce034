#!/usr/bin/env python3
"""Tests of the rig's classification: what is a pass, a scenario failure or a rig fault,
and how retries are reported (tests/rig/rig.py), and lib.sh's shell classifiers no_init
and net_guest_ended, on the canned consoles in tests/rig/testdata/ (see its README.md).
Boots nothing. Standard library only; from the repository root:
    python3 -m unittest discover -s tests/rig -p 'test_*.py'
    python3 tests/rig/test_classifier.py
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ for rig.py in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import rig  # noqa: E402

DATA = os.path.join(HERE, "testdata")
LIB_SH = os.path.join(rig.E2E, "lib.sh")
WATCHDOG = "watchdog: L1 printed nothing for 120 s"


def data(name):
    return os.path.join(DATA, name)


def replay(names, console, rc=0, fault=None):
    """An L1Boot fed with a canned L1 console, as L1Boot.run feeds it, then settled.
    fault: the boot-level fault run() would have set (e.g. the watchdog's)."""
    b = rig.L1Boot(rig.Options(), names, os.devnull)
    cur = None
    done = False
    with open(console) as f:
        for i, line in enumerate(f):
            line = line.rstrip("\n")
            b.last.append(line)
            cur = b.on_line(line, float(i), cur)
            done = done or "TERN-RIG-DONE" in line
    b.fault = b.fault or fault
    b.settle(rc, done)
    return b


class ClassifyRules(unittest.TestCase):
    """classify(): one test per rule of its docstring."""

    LOCKUP = "[   58.204117] watchdog: BUG: soft lockup - CPU#1 stuck for 26s! [tern-vcpu0:311]"
    TRACE = "[   58.206810] Call Trace:"
    PANIC = "[   45.118702] Kernel panic - not syncing: Fatal exception in interrupt"

    def test_not_started_is_not_run(self):
        self.assertEqual(rig.classify([], started=False, ended=False, l1_fault=WATCHDOG), ("not-run", WATCHDOG))

    def test_scenario_rig_fault_marker_is_rig_fault(self):
        kind, reason = rig.classify([("rig-fault", "QEMU's guest never booted")])
        self.assertEqual((kind, reason), ("rig-fault", "scenario: QEMU's guest never booted"))

    def test_two_markers_fail(self):
        kind, reason = rig.classify([("pass", ""), ("fail", "x")], faults=[self.LOCKUP])
        self.assertEqual(kind, "fail")
        self.assertIn("2 result markers", reason)

    def test_pass_despite_l1_kernel_faults_passes(self):
        self.assertEqual(rig.classify([("pass", "")], faults=[self.LOCKUP, self.TRACE]), ("pass", ""))

    def test_pass_then_l1_died_passes(self):
        self.assertEqual(rig.classify([("pass", "")], ended=False, l1_fault=WATCHDOG)[0], "pass")

    def test_explicit_fail_with_call_trace_stays_fail(self):
        kind, reason = rig.classify([("fail", "guest does not answer ping")], faults=[self.TRACE])
        self.assertEqual(kind, "fail")
        self.assertTrue(reason.startswith("guest does not answer ping"), reason)
        self.assertIn("Call Trace", reason)

    def test_explicit_fail_with_lockup_stays_fail_and_counts_faults(self):
        kind, reason = rig.classify([("fail", "no TCP_RR result")], faults=[self.LOCKUP, self.TRACE])
        self.assertEqual(kind, "fail")
        self.assertIn("soft lockup", reason)
        self.assertIn("(+1 more)", reason)

    def test_explicit_fail_then_l1_gone_is_rig_fault(self):
        kind, reason = rig.classify([("fail", "no TCP_STREAM result")], ended=False, l1_fault=WATCHDOG)
        self.assertEqual(kind, "rig-fault")
        self.assertIn(WATCHDOG, reason)
        self.assertIn("no TCP_STREAM result", reason)

    def test_explicit_fail_with_l1_panic_line_is_rig_fault(self):
        kind, reason = rig.classify([("fail", "no TCP_STREAM result")], faults=[self.TRACE, self.PANIC])
        self.assertEqual(kind, "rig-fault")
        self.assertIn("Kernel panic", reason)

    def test_started_never_ended_no_marker_is_rig_fault(self):
        self.assertEqual(rig.classify([], ended=False, l1_fault=None), ("rig-fault", "L1 ended mid-scenario"))

    def test_timeout_with_l1_lockup_is_rig_fault(self):
        # lib.sh's INT/TERM trap prints result=fail when L1's timer ends the scenario:
        # that is not an explicit failure.
        kind, reason = rig.classify([("fail", "interrupted (signal)")], timed_out=True, faults=[self.LOCKUP])
        self.assertEqual(kind, "rig-fault")
        self.assertIn("soft lockup", reason)

    def test_timeout_in_quiet_l1_fails(self):
        kind, reason = rig.classify([("fail", "interrupted (signal)")], timed_out=True, timeout=240)
        self.assertEqual((kind, reason), ("fail", "timeout (240 s) inside a live L1"))

    def test_explicit_fail_without_faults(self):
        self.assertEqual(rig.classify([("fail", "tern exited with 1")]), ("fail", "tern exited with 1"))
        self.assertEqual(rig.classify([("fail", "")]), ("fail", "(no reason given)"))

    def test_no_marker_with_l1_faults_is_rig_fault(self):
        self.assertEqual(rig.classify([], faults=[self.LOCKUP], rc=137)[0], "rig-fault")

    def test_no_marker_in_quiet_l1_fails(self):
        self.assertEqual(rig.classify([], rc=2), ("fail", "no TERN-SCENARIO result marker (exit code 2)"))


class L1Consoles(unittest.TestCase):
    """Canned L1 consoles through L1Boot.on_line and L1Boot.settle, as run() does."""

    def test_soft_lockup_during_failing_scenario_stays_fail(self):
        b = replay(["tern-net"], data("l1-softlockup-fail.log"))
        oc = b.outcomes["tern-net"]
        self.assertIsNone(b.fault)
        self.assertEqual(oc.kind, "fail")
        self.assertIn("guest does not answer ping on tap0", oc.reason)
        self.assertIn("soft lockup", oc.reason)
        self.assertEqual(len(oc.faults), 2)  # the lockup line and its Call Trace

    def test_l1_panic_after_fail_marker_is_rig_fault(self):
        b = replay(["tern-net"], data("l1-panic-mid-scenario.log"), rc=0)
        oc = b.outcomes["tern-net"]
        self.assertIn("L1 ended (QEMU exit code 0)", b.fault)
        self.assertIn("Kernel panic", b.fault)
        self.assertEqual(oc.kind, "rig-fault")
        self.assertIn("Kernel panic", oc.reason)
        self.assertIn("no TCP_STREAM result", oc.reason)

    def test_watchdog_after_a_pass(self):
        b = replay(["qemu-smoke", "tern-net"], data("l1-pass-then-silent.log"), fault=WATCHDOG)
        self.assertEqual(b.outcomes["qemu-smoke"].kind, "pass")
        self.assertEqual(b.outcomes["tern-net"].kind, "rig-fault")
        self.assertIn(WATCHDOG, b.outcomes["tern-net"].reason)

    def test_l1_gone_before_a_scenario_started_is_not_run(self):
        b = replay(["qemu-smoke", "tern-smoke"], data("l1-panic-mid-scenario.log"), rc=0)
        self.assertEqual(b.outcomes["qemu-smoke"].kind, "not-run")


class Retries(unittest.TestCase):
    """run_group with canned boots: a pass after a retry is reported apart, never hidden."""

    def opts(self, retries=2):
        o = rig.Options()
        o.retries, o.stamp, o.mode, o.with_tern, o.no_tern_reason = retries, "test", "nested", True, ""
        return o

    def run_boots(self, boots, retries=2):
        """run_group over replayed consoles: boots is a list of (console, fault)."""
        queue = list(boots)

        class Canned:
            def __init__(self, opts, names, log_path):
                self.names = list(names)

            def run(self):
                console, fault = queue.pop(0)
                return replay(self.names, data(console), fault=fault)

        said = []
        outcomes, ran = rig.run_group(self.opts(retries), ["qemu-smoke", "tern-net"], lambda *a: said.extend(a),
                                      "t", Canned)
        return {oc.name: oc for oc in outcomes}, ran, said

    def test_pass_after_retry_is_counted_and_shown(self):
        ocs, ran, said = self.run_boots([("l1-pass-then-silent.log", WATCHDOG), ("l1-retry-pass.log", None)])
        self.assertEqual(len(ran), 2)
        self.assertTrue(any(s.startswith("  RETRY 1/2 of [tern-net]") for s in said), said)
        smoke, net = ocs["qemu-smoke"], ocs["tern-net"]
        self.assertEqual((smoke.kind, rig.tally_kind(smoke), smoke.retried), ("pass", "pass", []))
        self.assertEqual((net.kind, rig.tally_kind(net)), ("pass", "pass-after-retry"))
        self.assertEqual(len(net.retried), 1)
        self.assertIn(WATCHDOG, net.retried[0])
        line = rig.describe(net, ran)
        self.assertTrue(line.startswith("tern-net: pass after 1 retry |"), line)
        self.assertIn("retried after: boot 1: " + WATCHDOG, line)
        self.assertTrue(rig.describe(smoke, ran).startswith("qemu-smoke: pass |"))
        verdict, status = rig.final_verdict([smoke, net])
        self.assertEqual(status, 0)  # a pass after a retry passes the run...
        self.assertTrue(verdict.startswith("RESULT: PASS (2 scenario runs: pass=1 pass-after-retry=1 fail=0 "),
                        verdict)
        self.assertIn("tern-net after 1 retry", verdict)  # ...but is named on the last line

    def test_no_retries_left_is_rig_fault(self):
        ocs, ran, said = self.run_boots([("l1-pass-then-silent.log", WATCHDOG)], retries=0)
        self.assertEqual(len(ran), 1)
        self.assertEqual(ocs["tern-net"].kind, "rig-fault")
        self.assertTrue(any(s.startswith("  RIG FAULT (no retries left, 0 used)") for s in said), said)
        verdict, status = rig.final_verdict(list(ocs.values()))
        self.assertEqual(status, 1)
        self.assertIn("rig-fault=1", verdict)

    def test_failing_scenario_is_not_retried(self):
        queue = [("l1-softlockup-fail.log", None)]

        class Canned:
            def __init__(self, opts, names, log_path):
                self.names = list(names)

            def run(self):
                console, fault = queue.pop(0)
                return replay(self.names, data(console), fault=fault)

        outcomes, ran = rig.run_group(self.opts(), ["tern-net"], lambda *a: None, "t", Canned)
        self.assertEqual(len(ran), 1)
        self.assertEqual(outcomes[0].kind, "fail")
        verdict, status = rig.final_verdict(outcomes)
        self.assertEqual(status, 1)
        self.assertIn("fail=1", verdict)


def shells():
    """(name, argv, PATH prefix) of the shells lib.sh runs under: the system sh with the
    system tools, and, when busybox is here, busybox sh with busybox's applets first in
    PATH, as in the rig's L1 and host mode."""
    out = [("sh", ["sh"], None)]
    busybox = shutil.which("busybox")
    if busybox:
        out.append(("busybox", [busybox, "sh"], busybox))
    return out


def applet_dir(busybox, into):
    """A directory of links to busybox's applets (like rig.busybox_bin, but temporary)."""
    names = subprocess.run([busybox, "--list"], capture_output=True, text=True).stdout.split()
    for name in names:
        os.symlink(busybox, os.path.join(into, name))
    return into


MARKER = re.compile(r'^TERN-SCENARIO name=(\S+) result=(\S+) reason="(.*)"$')


class ShellClassifiers(unittest.TestCase):
    """lib.sh's no_init, early_boot_fault and net_guest_ended, sourced as a scenario would, on canned logs."""

    def call(self, shell, busybox, func, *args):
        """Runs `. lib.sh; func args...` and returns (result, reason) of its one marker."""
        with tempfile.TemporaryDirectory(prefix="tern-lib-test.") as work:
            path = os.environ.get("PATH", "")
            if busybox:
                path = applet_dir(busybox, tempfile.mkdtemp(dir=work)) + os.pathsep + path
            env = dict(os.environ, SCENARIO="unit", WORK=os.path.join(work, "w"), E2E_DIR=rig.E2E, PATH=path)
            p = subprocess.run(shell + ["-c", '. "$E2E_DIR/lib.sh"; ' + func + ' "$@"', "sh", *args],
                               env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
        marks = [m for m in map(MARKER.match, p.stdout.splitlines()) if m]
        self.assertEqual(len(marks), 1, p.stdout + p.stderr)
        self.assertEqual(p.returncode, 1)
        self.assertEqual(marks[0].group(1), "unit")
        return marks[0].group(2), marks[0].group(3)

    def check(self, func, args, result, *phrases):
        for name, argv, busybox in shells():
            with self.subTest(shell=name):
                got, reason = self.call(argv, busybox, func, *args)
                self.assertEqual(got, result, reason)
                for phrase in phrases:
                    self.assertIn(phrase, reason)

    def test_no_init_guest_stopped_before_init_is_rig_fault(self):
        self.check("no_init", ["no init marker", data("l2-stopped-early.console"), data("tern-error.out")],
                   "rig-fault", "no init marker (L2 guest stopped in early boot, before init; last console output: [    0.518")

    def test_no_init_guest_panic_before_init_is_rig_fault(self):
        self.check("no_init", ["no init marker", data("l2-early-panic.console")],
                   "rig-fault", "L2 guest crashed in early boot: [    0.402213] BUG: unable to handle page fault")

    def test_no_init_triple_fault_in_vmm_log_is_rig_fault(self):
        self.check("no_init", ["no init marker", data("l2-stopped-early.console"), data("tern-triple-fault.out")],
                   "rig-fault", "L2 guest crashed in early boot: tern: guest crashed: vCPU 1 triple fault")

    def test_no_init_after_run_init_is_fail(self):
        self.check("no_init", ["no init marker", data("l2-init-no-marker.console"), data("tern-error.out")],
                   "fail", "no init marker")

    def test_no_init_guest_that_reached_init_is_fail(self):
        # TERN-GUEST-INIT was printed: whatever came after (here a panic) is tern's problem.
        self.check("no_init", ["guest network not configured", data("l2-net-panic.console")],
                   "fail", "guest network not configured")

    # early_boot_fault returns rather than ending the scenario: a caller that counts such
    # guests and goes on (tern-density) sees the class; the marker here only reports it.
    EARLY = 'f() { early_boot_fault "$@" && rig_fault "early: $EARLY_BOOT_FAULT"; fail "not early"; }; f'

    def test_early_boot_fault_crash_before_init(self):
        self.check(self.EARLY, [data("l2-early-panic.console")],
                   "rig-fault", "early: L2 guest crashed in early boot: [    0.402213] BUG: unable to handle page fault")

    def test_early_boot_fault_stopped_before_init(self):
        self.check(self.EARLY, [data("l2-stopped-early.console"), data("tern-error.out")],
                   "rig-fault", "early: L2 guest stopped in early boot, before init")

    def test_early_boot_fault_not_after_run_init(self):
        self.check(self.EARLY, [data("l2-init-no-marker.console"), data("tern-error.out")], "fail", "not early")

    def test_early_boot_fault_not_after_init_marker(self):
        self.check(self.EARLY, [data("l2-net-panic.console")], "fail", "not early")

    def test_net_silent_reset_is_rig_fault(self):
        self.check("net_guest_ended", ["no TCP_RR result", data("l2-net-silent-reset.console"),
                                       data("tern-triple-fault.out")],
                   "rig-fault", "no TCP_RR result (L2 guest reset silently under network load: tern: guest crashed: vCPU")

    def test_net_guest_panic_is_fail(self):
        self.check("net_guest_ended", ["no TCP_RR result", data("l2-net-panic.console"), data("tern-triple-fault.out")],
                   "fail", "no TCP_RR result")

    def test_net_vmm_error_without_reset_is_fail(self):
        self.check("net_guest_ended", ["no TCP_RR result", data("l2-net-silent-reset.console"), data("tern-error.out")],
                   "fail", "no TCP_RR result")


class WaitForMarker(unittest.TestCase):
    """lib.sh's wait_for_marker gives up at once on a guest kernel that panicked."""

    def wait(self, console_text, regex):
        with tempfile.TemporaryDirectory(prefix="tern-lib-test.") as work:
            con = os.path.join(work, "guest.console")
            with open(con, "w") as f:
                f.write(console_text)
            env = dict(os.environ, SCENARIO="unit", WORK=os.path.join(work, "w"), E2E_DIR=rig.E2E)
            script = '. "$E2E_DIR/lib.sh"; if wait_for_marker "$1" "$2" 20; then echo found; else echo gone; fi'
            t = time.monotonic()
            p = subprocess.run(["sh", "-c", script, "sh", con, regex], env=env, stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=60)
            return p.stdout.strip(), time.monotonic() - t

    PANIC = ("[    1.186995] Kernel panic - not syncing: Fatal exception in interrupt\n"
             "[    1.186995] ---[ end Kernel panic - not syncing: Fatal exception in interrupt ]---\n")

    def test_a_panicked_guest_ends_the_wait_at_once(self):
        got, secs = self.wait(self.PANIC, "^TERN-DIRTY counter=")
        self.assertEqual(got, "gone")
        self.assertLess(secs, 10, "waited out the time limit")

    def test_a_marker_that_names_the_panic_still_matches(self):
        got, _ = self.wait(self.PANIC, "TERN-GUEST-INIT|Kernel panic")
        self.assertEqual(got, "found")


class CloneEnded(unittest.TestCase):
    """lib.sh's clone_ended: a restored clone that triple-faulted is the rig's (QEMU's
    clones die so at the same rate); any other end is a failure."""

    def ended(self, what, out_text):
        with tempfile.TemporaryDirectory(prefix="tern-lib-test.") as work:
            w = os.path.join(work, "w")
            os.makedirs(w)
            with open(os.path.join(w, "clone3.out"), "w") as f:
                f.write(out_text)
            open(os.path.join(w, "clone3.log"), "w").close()
            env = dict(os.environ, SCENARIO="unit", WORK=w, E2E_DIR=rig.E2E)
            p = subprocess.run(["sh", "-c", '. "$E2E_DIR/lib.sh"; clone_ended "$1" 3', "sh", what], env=env,
                               stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
            marks = [m for m in map(MARKER.match, p.stdout.splitlines()) if m]
            self.assertEqual(len(marks), 1, p.stdout + p.stderr)
            return marks[0].group(2), marks[0].group(3)

    def test_a_tern_clone_that_triple_faulted_is_a_rig_fault(self):
        kind, reason = self.ended("clone", "tern: guest restored from /tmp/snap and running after 111 ms\n"
                                  "tern: guest crashed: vCPU 0 triple fault (KVM_EXIT_SHUTDOWN) [registers lost]\n")
        self.assertEqual((kind, reason), ("rig-fault", "clone 3 triple-faulted after its restore (8 restores at once)"))

    def test_a_tern_clone_that_failed_otherwise_is_a_failure(self):
        kind, reason = self.ended("clone", "tern: error: vCPU 0 stopped: KVM_RUN failed: Bad address\n")
        self.assertEqual((kind, reason), ("fail", "clone 3 ended"))

    def test_a_qemu_clone_that_ended_silently_is_a_rig_fault_and_one_that_said_why_fails(self):
        self.assertEqual(self.ended("QEMU clone", "")[0], "rig-fault")
        self.assertEqual(self.ended("QEMU clone", "qemu-system-x86_64: load of migration failed\n")[0], "fail")


class FailureEvidence(unittest.TestCase):
    """A failure's tally line carries the tail of each log the scenario showed."""

    def test_evidence_keeps_the_tail_of_each_shown_log(self):
        oc = rig.Outcome("tern-smoke")
        oc.add_line("[    3.1] guest booting")
        oc.add_line("  --- last 50 lines of /tmp/w/dst.out")
        for i in range(60):
            oc.add_line(f"  | out line {i}")
        oc.add_line("  --- last 50 lines of /tmp/w/dst.log")
        oc.add_line("  | TERN-DIRTY counter=7")
        lines = oc.evidence()
        self.assertIn("      last 50 lines of /tmp/w/dst.out:", lines)
        self.assertIn("      | out line 59", lines)
        self.assertNotIn(f"      | out line {59 - rig.EVIDENCE_LINES}", lines)
        self.assertEqual(lines[-1], "      | TERN-DIRTY counter=7")

    def test_no_shown_log_no_evidence(self):
        oc = rig.Outcome("tern-smoke")
        oc.add_line("  | a line before any shown log")
        self.assertEqual(oc.evidence(), [])


if __name__ == "__main__":
    unittest.main()
