#!/usr/bin/env python3
"""tern's end-to-end rig: runs tests/e2e scenarios where real KVM can boot Linux.

Nested mode (this kind of host: /dev/kvm is kvm_pvm, no vmx/svm): boots L1, a Debian
cloud kernel under QEMU TCG with an emulated AMD-SVM CPU, whose /dev/kvm is ordinary
KVM; the scenarios run inside L1 and boot L2 guests. Host mode (a host whose /dev/kvm
can boot Linux): the same scenario scripts run directly on the host.

  tests/rig/rig.py --suite tests/e2e/suite.txt          every group of the suite
  tests/rig/rig.py --scenario qemu-smoke --repeat 20    one scenario, 20 fresh L1 boots
  tests/rig/rig.py --scenario qemu-smoke --repeat 20 --retries 0   raw rig fault rate

Rig faults (L1 silent past the watchdog, L1 never up, L1 gone or panicked mid-scenario,
L1 kernel lockup/stall messages during a scenario that timed out or printed no result,
or a scenario's own result=rig-fault) are retried on a fresh L1, at most --retries
times, each retry printed with its reason. Scenario failures (an explicit result=fail
in a live L1 included, whatever L1's kernel printed) are never retried. A pass that
needed retries passes the run but is counted and shown apart (pass-after-retry). The
rules: classify() below and tests/rig/README.md.
Python 3 standard library only.
"""
import argparse
import collections
import datetime
import hashlib
import os
import queue
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TARGET = os.path.join(ROOT, "target")
CACHE = os.path.join(TARGET, "rig-cache")
LOGS = os.path.join(TARGET, "rig-logs")
GUEST = os.path.join(TARGET, "guest")
# Migration TLS test certificates (tests/tls/make-test-certs.sh); scenarios find them
# beside the guest artifacts: $GUEST/../tls (target/tls here, /payload/tls in L1).
TLS_CERTS = os.path.join(TARGET, "tls")
OCF_AGENT = os.path.join(ROOT, "resources", "ocf", "tern")
E2E = os.path.join(ROOT, "tests", "e2e")
RIG = os.path.join(ROOT, "tests", "rig")
GUEST_SRC = os.path.join(ROOT, "resources", "guest")
TERN_BIN = os.path.join(TARGET, "release", "tern")
sys.path.insert(0, GUEST_SRC)
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import tools  # noqa: E402  (resources/guest/tools.py)

L1_MODULES = ["irqbypass", "kvm", "kvm_amd", "tun", "tap", "vhost_iotlb", "vhost", "vhost_net",
              "llc", "stp", "bridge", "virtio_pci", "virtio_blk", "veth"]
# iproute2's ip (busybox's has no netns or veth), as ip-full in the scenarios' PATH.
IP_FULL = "/usr/sbin/ip" if os.path.exists("/usr/sbin/ip") else (shutil.which("ip") or "/sbin/ip")
QEMU_FIRMWARE = [
    "/usr/share/qemu/pvh.bin", "/usr/share/qemu/linuxboot.bin", "/usr/share/qemu/linuxboot_dma.bin",
    "/usr/share/qemu/multiboot.bin", "/usr/share/qemu/multiboot_dma.bin", "/usr/share/qemu/kvmvapic.bin",
    "/usr/share/qemu/qboot.rom",
    "/usr/share/seabios/bios-256k.bin", "/usr/share/seabios/bios.bin", "/usr/share/seabios/bios-microvm.bin",
    "/usr/share/seabios/vgabios-stdvga.bin", "/usr/share/seabios/vgabios-virtio.bin",
    "/usr/share/seabios/vgabios-isavga.bin", "/usr/share/seabios/vgabios.bin",
    "/usr/lib/ipxe/qemu/efi-e1000.rom", "/usr/lib/ipxe/qemu/efi-e1000e.rom", "/usr/lib/ipxe/qemu/efi-virtio.rom",
]
HOST_TOOLS = ["qemu-system-x86_64", "cpio", "gzip", "lz4", "mkfs.ext4", "debugfs", "e2fsck", "busybox", "netperf", "netserver", "ldd", "ip"]
# L1 kernel messages that mean the rig itself is in trouble (what they change: classify).
# Matched only on lines that start with a printk timestamp: guest logs shown by scenarios
# are prefixed ("  | ").
KERNEL_FAULT = re.compile(
    r"^\[\s*\d+\.\d+\] .*(soft lockup|hard LOCKUP|rcu: INFO|rcu_\w+ (self-)?detected stall|"
    r"detected stalls on CPUs|watchdog: BUG|Kernel panic|BUG: |Oops|general protection fault|"
    r"blocked for more than|Unable to handle|Call Trace)")
DEFAULT_TIMEOUT = 300


def die(msg):
    print(f"rig: {msg}", file=sys.stderr)
    sys.exit(2)


class Report:
    """Prints and keeps everything the rig says, for target/rig-logs/<stamp>-summary.txt."""

    def __init__(self, path):
        self.path = path
        self.f = open(path, "w")

    def __call__(self, *lines):
        for line in lines:
            print(line, flush=True)
            self.f.write(line + "\n")
        self.f.flush()


# ---------------------------------------------------------------- environment
def host_can_boot_linux():
    try:
        cpu = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return (os.path.exists("/dev/kvm") and re.search(r"\b(vmx|svm)\b", cpu) is not None
            and not os.path.exists("/sys/module/kvm_pvm"))


def ensure_host(install):
    if install:
        r = subprocess.run([os.path.join(ROOT, "resources", "install-host-packages.sh")])
        if r.returncode != 0:
            print("rig: resources/install-host-packages.sh failed", file=sys.stderr)
    missing = [t for t in HOST_TOOLS if shutil.which(t) is None]
    if missing:
        die("missing tool(s): " + ", ".join(missing) + " (resources/install-host-packages.sh installs them)")
    v = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True).stdout
    if not re.search(r"version 10\.", v):
        die(f"qemu-system-x86_64 is not QEMU 10 ({v.splitlines()[0] if v else '?'}); "
            "resources/install-host-packages.sh installs it from bookworm-backports")


def build_guest():
    r = subprocess.run([os.path.join(GUEST_SRC, "build.sh")])
    if r.returncode != 0:
        die("resources/guest/build.sh failed")
    env = {}
    for line in open(os.path.join(GUEST, "kernel.env")):
        k, _, v = line.strip().partition("=")
        env[k] = v
    return env


def file_key(paths):
    h = hashlib.sha256()
    for p in paths:
        p = os.path.realpath(p)
        try:
            st = os.stat(p)
            h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}:missing\n".encode())
    return h


def cache_gc(keep):
    """Cached images are named by key, so concurrent rig runs never overwrite one
    another's. Keep the 3 most recently used of each kind; remove older ones once unused
    for 10 minutes (a running L1 keeps its open image even when it is unlinked; every L1
    boot marks its images as used, see L1Boot.command)."""
    now = time.time()
    for prefix in ("l1-", "payload-", "distro-"):
        files = []
        for f in os.listdir(CACHE):
            path = os.path.join(CACHE, f)
            if f.startswith(prefix) and os.path.isfile(path):
                try:
                    files.append((os.stat(path).st_mtime, path))
                except OSError:
                    pass
        files.sort(reverse=True)
        for i, (mtime, path) in enumerate(files):
            if path in keep or i < 3 or now - mtime < 600:
                continue
            try:
                os.unlink(path)
            except OSError:
                pass


def ldd(paths):
    libs = []
    for p in paths:
        out = subprocess.run(["ldd", p], capture_output=True, text=True).stdout
        for line in out.splitlines():
            m = re.search(r"(/\S+) \(0x", line)
            if m and m.group(1) not in libs:
                libs.append(m.group(1))
    return libs


def copy_into(stage, path, dest=None):
    dst = os.path.join(stage, (dest or path).lstrip("/"))
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.copy2(os.path.realpath(path), dst)
    return dst


def write_cpio(stage, out, compress):
    names = subprocess.run(["find", ".", "-mindepth", "1"], cwd=stage, capture_output=True,
                           text=True, check=True).stdout
    names = "\n".join(sorted(names.split())) + "\n"
    tmp = f"{out}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        cp = subprocess.Popen(["cpio", "-o", "-H", "newc", "-R", "0:0", "--reproducible", "--quiet"],
                              cwd=stage, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        comp = {"gzip": ["gzip", "-6", "-n"], "lz4": ["lz4", "-l", "-9", "-q"], "none": ["cat"]}[compress]
        z = subprocess.Popen(comp, stdin=cp.stdout, stdout=f)
        cp.stdout.close()
        cp.stdin.write(names.encode())
        cp.stdin.close()
        if cp.wait() != 0 or z.wait() != 0:
            die(f"building {out} failed")
    os.replace(tmp, out)


def build_l1_initrd(kenv, compress):
    """busybox, L1 modules, QEMU 10 with libraries and firmware, netperf; cached."""
    qemu = shutil.which("qemu-system-x86_64")
    progs = [qemu, shutil.which("netperf"), shutil.which("netserver"), shutil.which("debugfs"), shutil.which("e2fsck")]
    libs_for = progs + [IP_FULL]
    busybox = "/bin/busybox" if os.path.exists("/bin/busybox") else shutil.which("busybox")
    libs = ldd(libs_for)
    fw = [f for f in QEMU_FIRMWARE if os.path.exists(f)]
    h = file_key(libs_for + libs + fw + [busybox, os.path.join(RIG, "l1-init.sh"),
                                      os.path.join(GUEST_SRC, "tern-pattern"), os.path.join(GUEST_SRC, "tools.py")])
    h.update((kenv["MODULES_DIR"] + " ".join(L1_MODULES + QEMU_FIRMWARE) + compress).encode())
    key = h.hexdigest()[:16]
    out = os.path.join(CACHE, f"l1-{key}.cpio.{compress}")
    if os.path.exists(out):
        os.utime(out)
        return out
    print(f"rig: building the L1 initramfs ({os.path.relpath(out, ROOT)})", flush=True)
    stage = tempfile.mkdtemp(prefix="l1-stage.", dir=CACHE)
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp", "run", "etc", "payload",
              "lib/modules/tern", "lib64"):
        os.makedirs(os.path.join(stage, d), exist_ok=True)
    copy_into(stage, busybox, "/bin/busybox")
    applets = subprocess.run([busybox, "--list-full"], capture_output=True, text=True).stdout.split()
    for a in applets:
        if a in ("linuxrc", "sbin/init", "bin/busybox"):
            continue
        dst = os.path.join(stage, a)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if not os.path.lexists(dst):
            os.symlink("/bin/busybox", dst)
    for p in progs:
        copy_into(stage, p, "/usr/bin/" + os.path.basename(p))
    # iproute2's ip beside busybox's (netns, veth: the main job's no-VM baseline).
    copy_into(stage, IP_FULL, "/usr/bin/ip-full")
    for lib in libs:
        copy_into(stage, lib)
        # the loader must also be found at its canonical path
    ld = "/lib64/ld-linux-x86-64.so.2"
    if not os.path.exists(os.path.join(stage, ld.lstrip("/"))):
        copy_into(stage, ld)
    for f in fw:
        copy_into(stage, f)
    order = []
    for name, path in tools.resolve_modules(kenv["MODULES_DIR"], L1_MODULES):
        with open(os.path.join(stage, "lib/modules/tern", name + ".ko"), "wb") as f:
            f.write(tools.read_module(path))
        order.append(name)
    with open(os.path.join(stage, "lib/modules/tern/load-order"), "w") as f:
        f.write("\n".join(order) + "\n")
    copy_into(stage, os.path.join(RIG, "l1-init.sh"), "/init")
    copy_into(stage, os.path.join(GUEST_SRC, "tern-pattern"), "/usr/bin/tern-pattern")
    os.chmod(os.path.join(stage, "init"), 0o755)
    os.chmod(os.path.join(stage, "usr/bin/tern-pattern"), 0o755)
    with open(os.path.join(stage, "etc/passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\n")
    with open(os.path.join(stage, "etc/group"), "w") as f:
        f.write("root:x:0:\n")
    write_cpio(stage, out, compress)
    shutil.rmtree(stage, ignore_errors=True)
    return out


def make_test_certs():
    r = subprocess.run(["sh", os.path.join(ROOT, "tests", "tls", "make-test-certs.sh"), TLS_CERTS])
    if r.returncode != 0:
        die("tests/tls/make-test-certs.sh failed")


def build_payload(with_tern, base_libs):
    """ext4 image for L1's /payload: guest artifacts, tern (+ libraries L1 lacks), tests/e2e,
    the TLS test certificates."""
    e2e_files = []
    for dp, _dn, fn in os.walk(E2E):
        e2e_files += [os.path.join(dp, f) for f in sorted(fn)]
    tls_files = []
    for dp, _dn, fn in os.walk(TLS_CERTS):
        tls_files += [os.path.join(dp, f) for f in sorted(fn)]
    # Guest artifacts, subdirectories (i386/) included; dot files (stamps) left out.
    guest_files = []
    for dp, dn, fn in os.walk(GUEST):
        dn[:] = sorted(d for d in dn if not d.startswith("."))
        guest_files += [os.path.join(dp, f) for f in sorted(fn) if not f.startswith(".")]
    tern = TERN_BIN if with_tern and os.path.exists(TERN_BIN) else None
    tern_libs = [lib for lib in ldd([tern]) if os.path.basename(lib) not in base_libs] if tern else []
    h = file_key(sorted(e2e_files) + sorted(tls_files) + guest_files + ([tern] if tern else []) + tern_libs
                 + [OCF_AGENT])
    key = h.hexdigest()[:16]
    out = os.path.join(CACHE, f"payload-{key}.ext4")
    if os.path.exists(out):
        os.utime(out)
        return out, tern is not None
    stage = tempfile.mkdtemp(prefix="payload-stage.", dir=CACHE)
    os.makedirs(os.path.join(stage, "guest"))

    def link(src, dst):
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        try:
            os.link(os.path.realpath(src), dst)
        except OSError:
            shutil.copy2(src, dst)

    for f in guest_files:
        link(f, os.path.join(stage, "guest", os.path.relpath(f, GUEST)))
    for f in e2e_files:
        link(f, os.path.join(stage, "e2e", os.path.relpath(f, E2E)))
    for f in tls_files:
        link(f, os.path.join(stage, "tls", os.path.relpath(f, TLS_CERTS)))
    # The Pacemaker resource agent (the cluster e2e runs it as ocf:tern:tern).
    link(OCF_AGENT, os.path.join(stage, "ocf", "tern"))
    if tern:
        link(tern, os.path.join(stage, "tern"))
        for lib in tern_libs:
            link(lib, os.path.join(stage, "lib", os.path.basename(lib)))
    size = 0
    for dp, _dn, fn in os.walk(stage):
        for f in fn:
            size += os.stat(os.path.join(dp, f)).st_size
    mb = size // (1 << 20) + 128
    tmp = f"{out}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.truncate(mb << 20)
    r = subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "tern-payload", "-E", "root_owner=0:0",
                        "-d", stage, tmp], capture_output=True, text=True)
    shutil.rmtree(stage, ignore_errors=True)
    if r.returncode != 0:
        os.unlink(tmp)
        die(f"mkfs.ext4 -d for the payload failed: {r.stderr}")
    os.replace(tmp, out)
    return out, tern is not None


def build_distro_disk():
    """ext4 image for L1's /distro (second drive, attached with snapshot=on: the guests'
    writes go to a throwaway overlay): the disk images of resources/distro/build.sh
    (releases in TERN_DISTRO_RELEASES, default all; images named in TERN_DISTRO_IMAGES,
    default all built), with their .img.txt. Cached by the images' build stamps."""
    releases = os.environ.get("TERN_DISTRO_RELEASES", "").split()
    r = subprocess.run([os.path.join(ROOT, "resources", "distro", "build.sh"), *releases])
    if r.returncode != 0:
        die("resources/distro/build.sh failed")
    src = os.path.join(TARGET, "distro")
    wanted = os.environ.get("TERN_DISTRO_IMAGES", "").split()
    names = sorted(f[:-4] for f in os.listdir(src) if f.endswith(".img") and (not wanted or f[:-4] in wanted))
    if not names:
        die(f"no distro images in {os.path.relpath(src, ROOT)} (TERN_DISTRO_IMAGES={' '.join(wanted)})")
    h = hashlib.sha256()
    for n in names:
        h.update(n.encode())
        with open(os.path.join(src, n + ".img.stamp"), "rb") as f:
            h.update(f.read())
    out = os.path.join(CACHE, f"distro-{h.hexdigest()[:16]}.ext4")
    if os.path.exists(out):
        os.utime(out)
        return out
    print(f"rig: building the distro disk ({', '.join(names)})", flush=True)
    stage = tempfile.mkdtemp(prefix="distro-stage.", dir=CACHE)
    used = 0
    for n in names:
        for suffix in (".img", ".img.txt"):
            dst = os.path.join(stage, n + suffix)
            try:
                os.link(os.path.join(src, n + suffix), dst)
            except OSError:
                subprocess.run(["cp", "--sparse=always", os.path.join(src, n + suffix), dst], check=True)
            used += os.stat(dst).st_blocks * 512
    tmp = f"{out}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        # Allocated bytes (the images are sparse) plus room for what the guests write.
        f.truncate((used // (1 << 20) + 512 + 256 * len(names)) << 20)
    r = subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "tern-distro", "-E", "root_owner=0:0", "-d", stage, tmp],
                       capture_output=True, text=True)
    shutil.rmtree(stage, ignore_errors=True)
    if r.returncode != 0:
        os.unlink(tmp)
        die(f"mkfs.ext4 -d for the distro disk failed: {r.stderr}")
    os.replace(tmp, out)
    return out


def build_cluster_disk():
    """The cluster e2e's host root file system (resources/cluster/build.sh), for L1's
    /cluster (attached read-only: every host binds its own writable directories over it)."""
    r = subprocess.run([os.path.join(ROOT, "resources", "cluster", "build.sh")])
    if r.returncode != 0:
        die("resources/cluster/build.sh failed")
    return os.path.join(TARGET, "cluster", "rootfs.ext4")


# ---------------------------------------------------------------- scenarios
def scenario_meta(name):
    path = os.path.join(E2E, "scenarios", name + ".sh")
    meta = {"timeout": DEFAULT_TIMEOUT, "needs": [], "path": path, "exists": os.path.exists(path)}
    if meta["exists"]:
        for line in open(path):
            m = re.match(r"#\s*rig:\s*(.*)", line)
            if m:
                for kv in m.group(1).split():
                    k, _, v = kv.partition("=")
                    if k == "timeout":
                        meta["timeout"] = int(v)
                    elif k == "needs":
                        meta["needs"] = v.split(",")
    return meta


def parse_suite(path):
    groups = []
    for line in open(path):
        line = line.split("#", 1)[0].split()
        if line:
            groups.append(line)
    return groups


MARK_RESULT = re.compile(r'TERN-SCENARIO name=(\S+) result=(pass|fail|rig-fault)(?: reason="([^"]*)")?')
MARK_BENCH = re.compile(r"TERN-BENCH name=(\S+) (.*)")


# Lines of each shown log repeated under a failure in the tally (the end of a CI log is
# often all that is left of a run).
EVIDENCE_LINES = 4


class Outcome:
    def __init__(self, name):
        self.name = name
        self.kind = "not-run"   # pass | fail | rig-fault | not-run
        self.reason = ""
        self.results = []       # (result, reason) markers seen
        self.bench_lines = []   # one list of (key, value) per TERN-BENCH line
        self.lines = collections.deque(maxlen=50)
        self.shown_logs = []    # (header, last lines) of each log a failing scenario showed
        self.faults = []        # L1 kernel fault lines seen while it ran
        self.timed_out = False
        self.timeout = scenario_meta(name)["timeout"]
        self.rc = None
        self.start = self.end = None
        self.retried = []       # reasons of earlier attempts that rig-faulted it (run_group)

    def add_line(self, line):
        """Keeps a console line: the last 50, and the tail of each log that lib.sh's
        show_log printed (a failure's evidence, repeated in the tally)."""
        self.lines.append(line)
        if line.startswith("  --- "):
            self.shown_logs.append((line.strip("- "), collections.deque(maxlen=EVIDENCE_LINES)))
        elif line.startswith("  | ") and self.shown_logs:
            self.shown_logs[-1][1].append(line[4:])

    def evidence(self):
        """The last lines of each log the scenario showed when it failed, for the tally."""
        out = []
        for header, tail in self.shown_logs[-4:]:
            out.append(f"      {header}:")
            out.extend(f"      | {ln[:160]}" for ln in tail)
        return out

    def figures(self):
        """{name: float} from the TERN-BENCH lines. Non-numeric fields of a line (vmm=qemu,
        boot=pvh) label its numeric ones: time_to_init_ms[boot=pvh]."""
        out = {}
        for line in self.bench_lines:
            labels, nums = [], []
            for k, v in line:
                try:
                    nums.append((k, float(v)))
                except ValueError:
                    labels.append(f"{k}={v}")
            tag = f"[{','.join(labels)}]" if labels else ""
            for k, v in nums:
                out[k + tag] = v
        return out

    @property
    def seconds(self):
        return None if self.start is None or self.end is None else self.end - self.start

    def finish(self, ended=True, l1_fault=None):
        """Sets kind and reason from what was seen (see classify). ended: L1 printed this
        scenario's TERN-RIG-SCENARIO-END (always true in host mode); l1_fault: the boot's
        own rig fault, if any."""
        self.kind, self.reason = classify(self.results, started=self.start is not None or ended, ended=ended,
                                          timed_out=self.timed_out, timeout=self.timeout, faults=self.faults,
                                          rc=self.rc, l1_fault=l1_fault)


# An L1 kernel fault line that means L1 itself is dead (panic=-1: L1 resets at once).
L1_DEATH = re.compile(r"Kernel panic")


def fault_note(faults):
    """The L1 kernel fault lines of a scenario, shortened for a reason."""
    more = f" (+{len(faults) - 1} more)" if len(faults) > 1 else ""
    return f"L1 kernel: {faults[0]}{more}"


def classify(results, *, started=True, ended=True, timed_out=False, timeout=DEFAULT_TIMEOUT, faults=(),
             rc=None, l1_fault=None):
    """One scenario run's outcome: (kind, reason), kind pass | fail | rig-fault | not-run.

    results: the (result, reason) pairs of its TERN-SCENARIO markers; started / ended: L1
    printed its TERN-RIG-SCENARIO-BEGIN / -END (both always true in host mode);
    timed_out: L1's timer for it fired; faults: L1 kernel fault lines (KERNEL_FAULT)
    printed while it ran; rc: its exit code; l1_fault: the boot's own rig fault, if any.

    The first rule that matches decides:
    1. not started: not-run (L1 ended, or had no /dev/kvm, before it began).
    2. exactly one marker, result=rig-fault: rig-fault (the scenario says the rig broke
       its L2 guest: lib.sh's rig_fault, no_init, net_guest_ended).
    3. more than one marker: fail (the contract is exactly one).
    4. exactly one marker, result=pass, L1's timer did not fire: pass, even if L1 printed
       kernel faults meanwhile or died right after it.
    5. L1 died while it ran: L1 never printed its end (L1 silent past the watchdog,
       L1's own timer never ending it, L1 reset, powered off or crashed: l1_fault says
       which), or an L1 "Kernel panic" line appeared: rig-fault, whatever the scenario
       printed; a failure it reported is kept in the reason.
    6. L1's timer fired: rig-fault if L1 printed kernel faults meanwhile (a stalled L1
       slows everything), else fail (timeout). The scenario's own "interrupted (signal)"
       failure, printed when the timer ends it, does not count as an explicit failure.
    7. result=fail: fail with its reason. L1 lived on, so L1 kernel fault lines (a Call
       Trace, a lockup warning) do not make it a rig fault; they are added to the reason.
    8. no marker: rig-fault if L1 printed kernel faults meanwhile, else fail.
    """
    passes = [r for r in results if r[0] == "pass"]
    fails = [r for r in results if r[0] == "fail"]
    rig = [r for r in results if r[0] == "rig-fault"]
    if not started:
        return "not-run", l1_fault or "L1 ended early"
    if len(results) == 1 and rig:
        return "rig-fault", "scenario: " + (rig[0][1] or "rig fault")
    if len(results) > 1:
        return "fail", f"{len(results)} result markers (the contract is exactly one)"
    if passes and not timed_out:
        return "pass", ""
    said = f" (the scenario had reported a failure: {fails[0][1] or '(no reason given)'})" if fails else ""
    panics = [f for f in faults if L1_DEATH.search(f)]
    if not ended:
        return "rig-fault", (l1_fault or (fault_note(panics) if panics else "L1 ended mid-scenario")) + said
    if panics:
        return "rig-fault", fault_note(panics) + said
    if timed_out:
        if faults:
            return "rig-fault", fault_note(faults) + f" (and the scenario's {timeout} s timeout fired)"
        return "fail", f"timeout ({timeout} s) inside a live L1"
    if fails:
        return "fail", (fails[0][1] or "(no reason given)") + (f" [{fault_note(faults)}]" if faults else "")
    if faults:
        return "rig-fault", fault_note(faults) + f" (and no TERN-SCENARIO result marker, exit code {rc})"
    return "fail", f"no TERN-SCENARIO result marker (exit code {rc})"


def tally_kind(oc):
    """pass-after-retry for a pass that needed a retry (oc.retried), else oc.kind."""
    return "pass-after-retry" if oc.kind == "pass" and oc.retried else oc.kind


class Options:
    pass


class L1Boot:
    """One L1 boot that runs `names` in order; fills self.outcomes."""

    def __init__(self, opts, names, log_path):
        self.o = opts
        self.names = names
        self.log_path = log_path
        self.outcomes = {n: Outcome(n) for n in names}
        self.fault = None          # boot-level rig fault reason
        self.l1_up = None          # seconds from QEMU start to TERN-RIG-L1-UP
        self.last = collections.deque(maxlen=50)
        self.warnings = []
        self.kernel_faults = []    # L1 kernel fault lines, in order
        self.wall = None

    def command(self):
        o = self.o
        # Mark the images as in use: cache_gc in a concurrent rig run only removes
        # images unused for 10 minutes, and a long run boots many L1s from them.
        for image in filter(None, (o.l1_initrd, o.payload, o.distro, o.cluster)):
            try:
                os.utime(image)
            except OSError:
                pass
        # The timeouts read when this boot began: a scenario file edited while L1 runs
        # (caught mid-write, even) must not change the limit below.
        plan = ",".join(f"{n}:{self.outcomes[n].timeout}" for n in self.names)
        # The extra drives, in order after the payload (vdb, vdc, ...), by what L1
        # mounts them as.
        disks = [(n, p) for n, p in (("distro", o.distro), ("cluster", o.cluster)) if p]
        append = f"console=ttyS0 panic=-1 loglevel=4 {o.l1_append} tern.rig.plan={plan} tern.rig.hb={o.heartbeat}"
        if disks:
            append += " tern.rig.disks=" + ",".join(n for n, _ in disks)
        if o.l2_append:
            append += " tern.rig.l2=" + ",".join(o.l2_append.split())
        return [o.qemu, "-accel", "tcg,thread=multi", "-cpu", o.cpu, "-smp", str(o.smp), "-m", o.mem,
                "-kernel", os.path.join(GUEST, "vmlinux"), "-initrd", o.l1_initrd, "-append", append,
                "-display", "none", "-nodefaults", "-no-reboot", "-serial", "stdio", "-monitor", "none",
                "-drive", f"file={o.payload},if=none,id=payload,format=raw,readonly=on",
                "-device", "virtio-blk-pci,drive=payload"] + [
                    a for n, p in disks for a in (
                        "-drive", f"file={p},if=none,id={n},format=raw," + ("readonly=on" if n == "cluster" else "snapshot=on"),
                        "-device", f"virtio-blk-pci,drive={n}")]

    def run(self):
        o = self.o
        cmd = self.command()
        log = open(self.log_path, "w", buffering=1)  # line-buffered: readable while L1 runs
        log.write("# " + " ".join(shlex.quote(c) for c in cmd) + "\n")
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True)
        q = queue.Queue()

        def reader():
            for raw in iter(p.stdout.readline, b""):
                q.put((time.monotonic(), raw))
            q.put(None)

        threading.Thread(target=reader, daemon=True).start()
        last_out = t0
        cur = None
        done_at = None
        eof = False
        while True:
            try:
                item = q.get(timeout=1)
            except queue.Empty:
                item = False
            now = time.monotonic()
            if item is None:
                eof = True
                break
            if item:
                t, raw = item
                last_out = t
                line = raw.decode("utf-8", "replace").rstrip("\r\n").replace("\r", "")
                log.write(f"[{t - t0:8.3f}] {line}\n")
                self.last.append(line)
                cur = self.on_line(line, t - t0, cur)
                if "TERN-RIG-DONE" in line and done_at is None:
                    done_at = now
                if self.fault and self.fault.startswith("L1 has no /dev/kvm"):
                    break
            if done_at is not None:
                if p.poll() is not None or now - done_at > 30:
                    break
                continue
            if now - last_out > o.watchdog:
                self.fault = f"watchdog: L1 printed nothing for {o.watchdog} s" + (
                    "" if self.l1_up is not None else " (before reaching its init marker)")
                break
            if self.l1_up is None and now - t0 > o.l1_up_timeout:
                self.fault = f"L1 never reached its init marker (TERN-RIG-L1-UP) within {o.l1_up_timeout} s"
                break
            if cur is not None:
                oc = self.outcomes[cur]
                limit = oc.timeout + 90
                if now - t0 - oc.start > limit:
                    self.fault = f"scenario {cur} ran {limit} s with no end from L1's own timer"
                    break
        # stop L1
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        rc = p.wait()
        if not eof:
            # drain what the reader already has
            while True:
                try:
                    item = q.get(timeout=0.5)
                except queue.Empty:
                    break
                if item is None:
                    break
                t, raw = item
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                log.write(f"[{t - t0:8.3f}] {line}\n")
                self.last.append(line)
        self.wall = time.monotonic() - t0
        self.settle(rc, done_at is not None)
        log.write(f"# rig: fault={self.fault} wall={self.wall:.1f}s qemu_rc={rc}\n")
        log.close()
        return self

    def settle(self, rc, done):
        """After L1 stopped (QEMU exit code rc; done: L1 printed TERN-RIG-DONE): the boot's
        own fault, if any, and every scenario's outcome (classify)."""
        if not done and self.fault is None:
            self.fault = (f"L1 ended (QEMU exit code {rc}) before finishing its scenarios"
                          + (": L1 reset or powered off (a triple fault ends QEMU under -no-reboot)" if rc == 0 else ""))
            panics = [ln for ln in self.last if "Kernel panic" in ln]
            if panics:
                self.fault += ": " + panics[-1].strip()
        if self.fault and self.kernel_faults and "L1 kernel" not in self.fault:
            self.fault += f" (L1 kernel said first: {self.kernel_faults[0]})"
        for n in self.names:
            oc = self.outcomes[n]
            oc.finish(ended=oc.end is not None, l1_fault=self.fault)
            if oc.kind == "pass" and oc.end is None:
                self.warnings.append(f"{n}: passed, but L1 failed before the scenario ended ({self.fault})")

    def on_line(self, line, t, cur):
        if cur is not None:
            self.outcomes[cur].add_line(line)
        if KERNEL_FAULT.search(line):
            msg = line.strip()
            self.kernel_faults.append(msg)
            if cur is not None:
                self.outcomes[cur].faults.append(msg)
            if len(self.kernel_faults) <= 3:
                self.warnings.append("L1 kernel: " + msg)
        if "TERN-RIG-" in line:
            m = re.search(r"TERN-RIG-(L1-UP|SCENARIO-BEGIN|SCENARIO-END|SCENARIO-TIMEOUT|ERROR)\b(.*)", line)
            if m:
                kind, rest = m.group(1), m.group(2)
                kv = dict(re.findall(r"(\w+)=(\S+)", rest))
                if kind == "L1-UP":
                    self.l1_up = t
                    if kv.get("kvm") != "yes":
                        self.fault = "L1 has no /dev/kvm (kvm_amd did not load)"
                elif kind == "SCENARIO-BEGIN" and kv.get("name") in self.outcomes:
                    cur = kv["name"]
                    self.outcomes[cur].start = t
                elif kind == "SCENARIO-TIMEOUT" and kv.get("name") in self.outcomes:
                    self.outcomes[kv["name"]].timed_out = True
                elif kind == "SCENARIO-END" and kv.get("name") in self.outcomes:
                    oc = self.outcomes[kv["name"]]
                    oc.end = t
                    oc.rc = kv.get("rc")
                    cur = None
                elif kind == "ERROR":
                    self.warnings.append("L1: " + rest.strip())
            return cur
        m = MARK_RESULT.search(line)
        if m and m.group(1) in self.outcomes:
            self.outcomes[m.group(1)].results.append((m.group(2), m.group(3) or ""))
        m = MARK_BENCH.search(line)
        if m and m.group(1) in self.outcomes:
            self.outcomes[m.group(1)].bench_lines.append(re.findall(r"(\w+)=(\S+)", m.group(2)))
        return cur


class HostRun:
    """Host mode: the scenarios run directly on a host whose /dev/kvm boots Linux."""

    def __init__(self, opts, names, log_path):
        self.o = opts
        self.names = names
        self.log_path = log_path
        self.outcomes = {n: Outcome(n) for n in names}
        self.fault = None
        self.l1_up = None
        self.warnings = []
        self.wall = None

    def run(self):
        t0 = time.monotonic()
        log = open(self.log_path, "w", buffering=1)  # line-buffered: readable while L1 runs
        for n in self.names:
            oc = self.outcomes[n]
            meta = scenario_meta(n)
            work = os.path.join(TARGET, "rig-work", n)
            shutil.rmtree(work, ignore_errors=True)
            os.makedirs(work)
            env = dict(os.environ, TERN=TERN_BIN if self.o.with_tern else "", QEMU=self.o.qemu, GUEST=GUEST,
                       WORK=work, BRIDGE_IP="10.0.2.1", TAPS="tap0 tap1", E2E_DIR=E2E, SCENARIO=n,
                       RIG_MODE="host", GUEST_APPEND=self.o.l2_append,
                       PATH=os.pathsep.join([busybox_bin(), GUEST_SRC, os.environ.get("PATH", "")]))
            oc.start = time.monotonic() - t0
            p = subprocess.Popen(["sh", meta["path"]], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, start_new_session=True)
            q = queue.Queue()
            threading.Thread(target=lambda: ([q.put(r) for r in iter(p.stdout.readline, b"")], q.put(None)),
                             daemon=True).start()
            deadline = time.monotonic() + meta["timeout"]
            while True:
                try:
                    raw = q.get(timeout=1)
                except queue.Empty:
                    raw = False
                if raw is None:
                    break
                if raw:
                    line = raw.decode("utf-8", "replace").rstrip("\r\n")
                    log.write(f"[{time.monotonic() - t0:8.3f}] {line}\n")
                    oc.add_line(line)
                    print("  " + line, flush=True) if self.o.verbose else None
                    m = MARK_RESULT.search(line)
                    if m and m.group(1) == n:
                        oc.results.append((m.group(2), m.group(3) or ""))
                    m = MARK_BENCH.search(line)
                    if m and m.group(1) == n:
                        oc.bench_lines.append(re.findall(r"(\w+)=(\S+)", m.group(2)))
                if time.monotonic() > deadline and not oc.timed_out:
                    oc.timed_out = True
                    os.killpg(p.pid, signal.SIGTERM)
                    time.sleep(3)
                    try:
                        os.killpg(p.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            oc.rc = p.wait()
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            oc.end = time.monotonic() - t0
            oc.finish()
        log.close()
        self.wall = time.monotonic() - t0
        return self


def busybox_bin():
    """Host mode: a directory of busybox applet links, first in PATH, so that scenarios
    see the same userland as inside L1."""
    d = os.path.join(TARGET, "rig-work", "busybox-bin")
    busybox = "/bin/busybox" if os.path.exists("/bin/busybox") else shutil.which("busybox")
    os.makedirs(d, exist_ok=True)
    for a in subprocess.run([busybox, "--list"], capture_output=True, text=True).stdout.split():
        link = os.path.join(d, a)
        if not os.path.lexists(link):
            os.symlink(busybox, link)
    if not os.path.lexists(os.path.join(d, "ip-full")):
        os.symlink(IP_FULL, os.path.join(d, "ip-full"))
    return d


def host_network(create):
    """Host mode: br0 10.0.2.1/24 with tap0 and tap1, as inside L1. Returns a cleanup list."""
    made = []
    if not create:
        return made

    def ip(*a):
        return subprocess.run(["ip", *a], capture_output=True, text=True).returncode == 0

    if not os.path.exists("/sys/class/net/br0"):
        if ip("link", "add", "br0", "type", "bridge"):
            made.append("br0")
            ip("addr", "add", "10.0.2.1/24", "dev", "br0")
            ip("link", "set", "br0", "up")
    for t in ("tap0", "tap1"):
        if not os.path.exists(f"/sys/class/net/{t}"):
            if ip("tuntap", "add", "dev", t, "mode", "tap"):
                made.append(t)
                ip("link", "set", t, "master", "br0")
                ip("link", "set", t, "up")
    return made


# ---------------------------------------------------------------- driver
def fmt_s(x):
    return "-" if x is None else f"{x:.1f}s"


def run_group(opts, names, say, tag, runner=None):
    """Runs one group (one L1 boot, plus retries on rig faults). Returns (outcomes, boots).
    Each final outcome's `retried` lists the earlier attempts that rig-faulted that
    scenario ("boot N: reason"); a scenario that only did not run in a faulted boot was
    not retried. runner: the boot class (default L1Boot, or HostRun in host mode)."""
    final = {}
    pending = list(names)
    boots = []
    retried = {n: [] for n in names}
    for n in list(pending):
        meta = scenario_meta(n)
        if not meta["exists"]:
            oc = Outcome(n)
            oc.kind, oc.reason = "fail", f"no scenario script tests/e2e/scenarios/{n}.sh"
            final[n] = oc
            pending.remove(n)
        elif "tern" in meta["needs"] and not opts.with_tern:
            oc = Outcome(n)
            oc.kind, oc.reason = "fail", opts.no_tern_reason
            final[n] = oc
            pending.remove(n)
    runner = runner or (HostRun if opts.mode == "host" else L1Boot)
    attempt = 0
    while pending:
        log_path = os.path.join(LOGS, f"{opts.stamp}-{tag}-boot{attempt}.log")
        b = runner(opts, pending, log_path).run()
        boots.append(b)
        for w in b.warnings:
            say(f"  warning: {w}")
        for n in list(pending):
            oc = b.outcomes[n]
            oc.retried = list(retried[n])
            if oc.kind in ("pass", "fail"):
                final[n] = oc
                pending.remove(n)
            elif oc.kind == "rig-fault":
                retried[n].append(f"boot {attempt + 1}: {oc.reason}")
        if not pending:
            break
        reasons = sorted({b.outcomes[n].reason for n in pending if b.outcomes[n].kind == "rig-fault"} |
                         ({b.fault} if b.fault else set()))
        reason = "; ".join(r for r in reasons if r) or "rig fault"
        if attempt >= opts.retries:
            for n in pending:
                oc = b.outcomes[n]
                oc.kind = "rig-fault"
                oc.reason = oc.reason or reason
                final[n] = oc
            say(f"  RIG FAULT (no retries left, {attempt} used): {reason}  [log: {os.path.relpath(log_path, ROOT)}]")
            say("  --- last 50 L1 console lines:")
            say(*["  | " + ln for ln in getattr(b, "last", [])])
            break
        attempt += 1
        say(f"  RETRY {attempt}/{opts.retries} of [{' '.join(pending)}] on a fresh L1: rig fault: {reason}  "
            f"[log: {os.path.relpath(log_path, ROOT)}]")
    return [final[n] for n in names], boots


def retries_text(n):
    return f"{n} {'retry' if n == 1 else 'retries'}"


def verdict(oc):
    """The outcome of a per-scenario line: pass, pass after N retries, FAIL, RIG-FAULT, NOT-RUN."""
    if oc.kind == "pass":
        return f"pass after {retries_text(len(oc.retried))}" if oc.retried else "pass"
    return oc.kind.upper()


def describe(oc, boots):
    bench = " ; ".join(" ".join(f"{k}={v}" for k, v in line) for line in oc.bench_lines)
    l1 = boots[-1].l1_up if boots else None
    s = f"{oc.name}: {verdict(oc)}"
    s += f" | L1-up {fmt_s(l1)} | scenario {fmt_s(oc.seconds)} | boots {len(boots)}"
    if bench:
        s += f" | {bench}"
    if oc.kind != "pass":
        s += f" | reason: {oc.reason}"
    if oc.retried:
        s += " | retried after: " + " ; ".join(oc.retried)
    return s


# The kinds a scenario run is counted as, in the tally and the final line.
TALLY_KINDS = ("pass", "pass-after-retry", "fail", "rig-fault", "not-run")


def final_verdict(outcomes):
    """(last line of the run, exit status). Only passes, clean or after retries, make the
    run pass (exit 0); the line counts every kind and names the scenarios that passed
    only after retries, so that a retry never hides."""
    kinds = collections.Counter(tally_kind(oc) for oc in outcomes)
    ok = bool(outcomes) and all(k in ("pass", "pass-after-retry") for k in kinds)
    line = (f"RESULT: {'PASS' if ok else 'FAIL'} ({len(outcomes)} scenario runs: "
            + " ".join(f"{k}={kinds[k]}" for k in TALLY_KINDS) + ")")
    after = [f"{oc.name} after {retries_text(len(oc.retried))}" for oc in outcomes
             if tally_kind(oc) == "pass-after-retry"]
    if after:
        line += "; passed only after rig-fault retries: " + ", ".join(after)
    return line, 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", help="suite file: one L1 boot per line, scenario names separated by spaces")
    ap.add_argument("--scenario", action="append", default=[], help="scenario name (repeatable: one L1 boot)")
    ap.add_argument("--repeat", type=int, default=1, help="run the scenario group this many times")
    ap.add_argument("--retries", type=int, default=2, help="fresh-L1 retries after a rig fault (default 2)")
    ap.add_argument("--watchdog", type=int, default=120, help="kill L1 after this many silent seconds")
    ap.add_argument("--l1-up-timeout", type=int, default=180)
    ap.add_argument("--heartbeat", type=int, default=15, help="L1 heartbeat interval (s)")
    ap.add_argument("--mode", choices=["auto", "nested", "host"], default="auto")
    ap.add_argument("--smp", type=int, default=2, help="L1 vCPUs")
    ap.add_argument("--mem", default="3G", help="L1 memory")
    ap.add_argument("--cpu", default="EPYC,+svm,+npt", help="L1 CPU model")
    ap.add_argument("--l1-append", default=os.environ.get("RIG_L1_APPEND", "nowatchdog nmi_watchdog=0"),
                    help="extra L1 kernel parameters")
    ap.add_argument("--l2-append", default=os.environ.get("RIG_L2_APPEND", ""),
                    help="extra L2 kernel parameters, given to scenarios as GUEST_APPEND")
    ap.add_argument("--initrd-compress", choices=["gzip", "lz4", "none"], default="lz4")
    ap.add_argument("--no-install", action="store_true", help="skip resources/install-host-packages.sh")
    ap.add_argument("--no-tern", metavar="REASON", help="treat the tern binary as unavailable (e.g. build failed)")
    ap.add_argument("--label", default="", help="label in log file names")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()

    if a.suite and a.scenario:
        die("give --suite or --scenario, not both")
    groups = parse_suite(a.suite) if a.suite else ([a.scenario] if a.scenario else None)
    if not groups:
        die("nothing to run: give --suite FILE or --scenario NAME")

    os.makedirs(CACHE, exist_ok=True)
    os.makedirs(LOGS, exist_ok=True)
    o = Options()
    o.__dict__.update(vars(a))
    o.stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S") + (f"-{a.label}" if a.label else "")
    say = Report(os.path.join(LOGS, f"{o.stamp}-summary.txt"))
    if a.mode == "auto":
        o.mode = "host" if host_can_boot_linux() else "nested"
    ensure_host(not a.no_install)
    o.qemu = shutil.which("qemu-system-x86_64")
    t_prep = time.monotonic()
    kenv = build_guest()
    make_test_certs()
    o.with_tern = a.no_tern is None and os.path.exists(TERN_BIN)
    o.no_tern_reason = (f"tern binary unavailable: {a.no_tern}" if a.no_tern else
                        f"tern binary missing: {os.path.relpath(TERN_BIN, ROOT)} (run cargo build --release)")
    made = []
    if o.mode == "nested":
        o.l1_initrd = build_l1_initrd(kenv, a.initrd_compress)
        base_libs = {os.path.basename(x) for x in ldd([o.qemu, shutil.which("netperf")])}
        o.payload, _ = build_payload(o.with_tern, base_libs)
        # Scenarios with needs=distro boot Debian disk images: L1 gets them on /distro.
        o.distro = None
        if any("distro" in scenario_meta(n)["needs"] for g in groups for n in g):
            o.distro = build_distro_disk()
        # Scenarios with needs=cluster run Corosync and Pacemaker: L1 gets their root on /cluster.
        o.cluster = None
        if any("cluster" in scenario_meta(n)["needs"] for g in groups for n in g):
            o.cluster = build_cluster_disk()
        cache_gc({o.l1_initrd, o.payload} | ({o.distro} if o.distro else set()))
    else:
        made = host_network(os.geteuid() == 0)
    say(f"rig: mode={o.mode} prep {time.monotonic() - t_prep:.1f}s; logs: {os.path.relpath(LOGS, ROOT)}/{o.stamp}-*",
        f"rig: L1 = -smp {a.smp} -m {a.mem} -cpu {a.cpu} append '{a.l1_append}' l2-append '{a.l2_append}' "
        f"watchdog {a.watchdog}s retries {a.retries}" if o.mode == "nested" else "rig: scenarios run on this host",
        f"rig: tern binary: {'yes' if o.with_tern else 'no (' + o.no_tern_reason + ')'}")

    all_results = []   # (run, group_index, outcome, boots)
    t_all = time.monotonic()
    try:
        for r in range(a.repeat):
            for gi, names in enumerate(groups):
                tag = f"r{r + 1:02d}-g{gi + 1}"
                t = time.monotonic()
                prefix = f"run {r + 1}/{a.repeat}" if a.repeat > 1 else f"group {gi + 1}/{len(groups)}"
                say(f"{prefix}: {'L1 boot' if o.mode == 'nested' else 'host run'} for [{' '.join(names)}]")
                outcomes, boots = run_group(o, names, say, tag)
                for oc in outcomes:
                    say(f"  {describe(oc, boots)}")
                    if oc.kind != "pass" and oc.lines:
                        say(f"  --- last {len(oc.lines)} console lines of {oc.name}:", *["  | " + ln for ln in oc.lines])
                    all_results.append((r, gi, oc, boots))
                say(f"  wall {time.monotonic() - t:.1f}s (L1 boots: {len(boots)}, each "
                    + ", ".join(fmt_s(b.wall) for b in boots) + ")")
    finally:
        for dev in reversed(made):
            subprocess.run(["ip", "link", "del", dev], capture_output=True)

    # tally
    kinds = collections.Counter(tally_kind(oc) for _r, _g, oc, _b in all_results)
    seen_boots = {}
    for _r, _g, _oc, boots in all_results:
        for b in boots:
            seen_boots[id(b)] = b
    boots = list(seen_boots.values())
    retries = [b.fault or "; ".join(sorted({oc.reason for oc in b.outcomes.values() if oc.kind == "rig-fault"}))
               for b in boots if b.fault or any(oc.kind == "rig-fault" for oc in b.outcomes.values())]
    say("", "=" * 78,
        f"TALLY scenarios={len(all_results)} pass={kinds['pass']} pass-after-retry={kinds['pass-after-retry']} "
        f"scenario-fail={kinds['fail']} rig-fault={kinds['rig-fault']} not-run={kinds['not-run']} "
        f"| L1 boots={len(boots)} rig-faulted boots={len(retries)} "
        f"| wall {time.monotonic() - t_all:.0f}s")
    for i, why in enumerate(retries):
        say(f"  rig fault {i + 1}: {why}")
    ups = [b.l1_up for b in boots if b.l1_up is not None]
    if ups and o.mode == "nested":
        say(f"  L1-up: min {min(ups):.1f}s median {statistics.median(ups):.1f}s max {max(ups):.1f}s")
    by_name = collections.defaultdict(list)
    for _r, _g, oc, _b in all_results:
        by_name[oc.name].append(oc)
    for n, ocs in by_name.items():
        secs = [oc.seconds for oc in ocs if oc.seconds is not None and oc.kind == "pass"]
        line = f"  {n}: pass {sum(oc.kind == 'pass' for oc in ocs)}/{len(ocs)}"
        after = sum(tally_kind(oc) == "pass-after-retry" for oc in ocs)
        if after:
            line += f" ({after} only after retries)"
        if secs:
            line += f"; scenario time min {min(secs):.1f}s median {statistics.median(secs):.1f}s max {max(secs):.1f}s"
        figs = [oc.figures() for oc in ocs]
        for k in sorted({k for f in figs for k in f}):
            vals = [f[k] for f in figs if k in f]
            line += f"; {k} median {statistics.median(vals):g} (min {min(vals):g}, max {max(vals):g}, n {len(vals)})"
        say(line)
        for oc in ocs:
            if oc.kind != "pass":
                say(f"    {oc.kind}: {oc.reason}", *oc.evidence())
            elif oc.retried:
                say("    pass-after-retry: retried after " + " ; ".join(oc.retried))
    say(f"summary: {say.path}")
    line, status = final_verdict([oc for _r, _g, oc, _b in all_results])
    say(line)
    sys.exit(status)


if __name__ == "__main__":
    main()
