#!/usr/bin/env python3
"""Prints the README main job's results again, cleanly, after its rig run: the netperf
table (namespace baseline, tern, QEMU, ratios), the migration's last progress line and
report, and a PNG bar chart of the netperf figures.

  tests/bench/main_job_report.py [--label LABEL] [--out DIR]

Reads the newest target/rig-logs/*-LABEL-*boot*.log holding main-job lines (default
label main-job); the chart goes to DIR/main-job-netperf.png (default target/main-job),
through matplotlib (tests/bench/report.py's venv when the system has none)."""
import argparse
import glob
import os
import re
import subprocess
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report  # noqa: E402

BENCH = re.compile(r"TERN-BENCH name=main-job (.*)$")


def newest_log(label):
    logs = [p for p in glob.glob(os.path.join(report.ROOT, "target", "rig-logs", f"*-{label}-*boot*.log"))
            if "TERN-MAIN-TABLE" in open(p, errors="replace").read()]
    return max(logs, key=os.path.getmtime) if logs else None


def read(path):
    table, migrate, figures = [], [], []
    for line in open(path, errors="replace"):
        line = line.rstrip("\n")
        for mark, into in (("TERN-MAIN-TABLE ", table), ("TERN-MAIN-MIGRATE ", migrate)):
            i = line.find(mark)
            if i >= 0:
                into.append(line[i + len(mark):])
        m = BENCH.search(line)
        if m:
            fields = dict(kv.split("=", 1) for kv in m.group(1).split() if "=" in kv)
            if "setup" in fields and report.num(fields.get("result")) is not None:
                figures.append(fields)
    return table, migrate, figures


def chart(figures, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    tests = []
    for f in figures:
        key = (f["test"], f["size"], f.get("unit", ""))
        if key not in tests:
            tests.append(key)
    setups = [("host", "host namespace (no VM)"), ("tern", "tern"), ("qemu", "QEMU (userspace virtio-net)")]
    fig, axes = plt.subplots(1, len(tests), figsize=(3.2 * len(tests), 4), squeeze=False)
    for ax, (test, size, unit) in zip(axes[0], tests):
        values = []
        for setup, _ in setups:
            v = [report.num(f["result"]) for f in figures if (f["test"], f["size"], f["setup"]) == (test, size, setup)]
            values.append(v[0] if v else 0.0)
        ax.bar(range(len(setups)), values, color=["#999999", "#1f77b4", "#ff7f0e"])
        ax.set_xticks(range(len(setups)), [s for s, _ in setups])
        ax.set_title(f"{test} {size} B", fontsize=10)
        ax.set_ylabel(unit)
    fig.suptitle("netperf to the host over the bridge: tern vs QEMU vs no VM (same rig run)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--label", default="main-job")
    ap.add_argument("--out", default=os.path.join(report.ROOT, "target", "main-job"))
    ap.add_argument("--chart-only", nargs=2, metavar=("LOG", "PNG"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.chart_only:
        chart(read(a.chart_only[0])[2], a.chart_only[1])
        return 0
    log = newest_log(a.label)
    if not log:
        print(f"main-job report: no main-job run with label {a.label} in target/rig-logs", file=sys.stderr)
        return 1
    table, migrate, figures = read(log)
    print("\n== netperf (figures from one run; ratios against the namespace without a VM) ==")
    print("\n".join(table))
    progress = [line for line in migrate if line.startswith("round ")]
    rest = [line for line in migrate if not line.startswith("round ")]
    print("\n== live migration over mutual TLS (tern migrate) ==")
    if progress:
        print(f"{len(progress)} progress lines; the last: {progress[-1]}")
    print("\n".join(rest) if rest else "(no migration report in the log)")
    os.makedirs(a.out, exist_ok=True)
    png = os.path.join(a.out, "main-job-netperf.png")
    python = sys.executable
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        python = report.venv_python()
    if python and figures:
        subprocess.run([python, os.path.abspath(__file__), "--chart-only", log, png], check=False)
    print(f"\nplot: {png}" if os.path.exists(png) else "\nplot: not made (matplotlib unavailable)")
    print(f"log: {log}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
