#!/usr/bin/env python3
"""Summarises one tests/bench.sh run: medians of every TERN-BENCH figure, tern/QEMU
ratios per benchmark, and a PNG plot of netperf TCP_STREAM throughput against payload
size for tern, QEMU (userspace virtio-net) and QEMU with vhost-net.

  tests/bench/report.py --label LABEL [--out DIR]

Reads target/rig-logs/*-LABEL-*.log. Prints a Markdown report (also written to
DIR/LABEL.md); the plot goes to DIR/LABEL-netperf.png (matplotlib, installed into a
venv under target/ when missing; without it the report says so and goes on).
"""
import argparse
import collections
import glob
import os
import re
import statistics
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
LINE = re.compile(r"TERN-BENCH name=(\S+) (.*)$")


def parse(label):
    rows = []
    for path in sorted(glob.glob(os.path.join(ROOT, "target", "rig-logs", f"*-{label}-*boot*.log"))):
        for line in open(path, errors="replace"):
            m = LINE.search(line)
            if not m:
                continue
            fields = dict(kv.split("=", 1) for kv in m.group(2).split() if "=" in kv)
            fields["name"] = m.group(1)
            rows.append(fields)
    return rows


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=1):
    return "-" if v is None else f"{v:.{digits}f}"


def ratio(a, b):
    return None if a is None or not b else a / b


def boot_section(rows, out):
    boots = [r for r in rows if r["name"] == "boot-bench" and r.get("vmm")]

    def times(vmm, console):
        # Runs from before the quiet pass existed carry no console field: verbose.
        return [num(r.get("time_to_init_ms")) for r in boots
                if r["vmm"] == vmm and r.get("console", "verbose") == console]

    mem = [num(r.get("overhead_mib")) for r in rows if r["name"] == "boot-bench" and r.get("summary") == "memory"]
    out.append("## Boot: start to guest init marker (ms, medians)\n")
    out.append("| guest console | tern | QEMU | tern/QEMU | target |")
    out.append("|---|---|---|---|---|")
    for console, target in (("verbose", "<= 0.5"), ("quiet", "-")):
        tern, qemu = times("tern", console), times("qemu", console)
        if not tern and not qemu:
            continue
        t, q = median(tern), median(qemu)
        out.append(f"| {console} | {fmt(t,0)} (n={len(tern)}) | {fmt(q,0)} (n={len(qemu)}) | {fmt(ratio(t,q),2)} | {target} |")
    out.append(f"\ntern memory overhead: {fmt(median(mem))} MiB (target <= 10)\n")


def net_section(rows, out):
    data = collections.defaultdict(list)
    for r in rows:
        if r["name"].startswith("net-bench") and r.get("result") not in (None, "error"):
            data[(r["test"], int(r["size"]), r["vmm"])].append(num(r["result"]))
    keys = sorted({(t, s) for t, s, _ in data}, key=lambda k: (k[0] != "TCP_STREAM", k[0], k[1]))
    out.append("## Network: netperf guest -> host side of the TAP (medians)\n")
    out.append("| test | size | tern | QEMU user | QEMU vhost | tern/QEMU user | tern/QEMU vhost | n |")
    out.append("|---|---|---|---|---|---|---|---|")
    for t, s in keys:
        tern, user, vhost = (median(data[(t, s, v)]) for v in ("tern", "qemu-user", "qemu-vhost"))
        n = len(data[(t, s, "tern")])
        out.append(f"| {t} | {s} | {fmt(tern)} | {fmt(user)} | {fmt(vhost)} | {fmt(ratio(tern,user),2)} | {fmt(ratio(tern,vhost),2)} | {n} |")
    out.append("")
    out.append("### tern: seccomp filters on (net-bench-tern) vs off (net-bench-tern-seccomp-off), same L1s (medians)\n")
    out.append("| test | size | on | off | on/off | n |")
    out.append("|---|---|---|---|---|---|")
    for t, s in keys:
        on, off = median(data[(t, s, "tern")]), median(data[(t, s, "tern-seccomp-off")])
        out.append(f"| {t} | {s} | {fmt(on)} | {fmt(off)} | {fmt(ratio(on,off),2)} | {len(data[(t, s, 'tern-seccomp-off')])} |")
    out.append("")
    return data


def blk_section(rows, out):
    data = collections.defaultdict(list)
    units = {}
    for r in rows:
        if r["name"] == "blk-bench" and "test" in r:
            data[(r["test"], r["vmm"])].append(num(r.get("result")))
            units[r["test"]] = r.get("unit", "")
    out.append("## Block: virtio-blk on a raw image, direct I/O from the guest (medians)\n")
    out.append("| test | unit | tern | QEMU | tern/QEMU | n |")
    out.append("|---|---|---|---|---|---|")
    for test in ("seqwrite", "seqread", "randread"):
        t, q = median(data[(test, "tern")]), median(data[(test, "qemu")])
        out.append(f"| {test} | {units.get(test, '')} | {fmt(t)} | {fmt(q)} | {fmt(ratio(t, q), 2)} | {len(data[(test, 'tern')])} |")
    out.append("")
    out.append("### tern: seccomp filters on vs off, same L1s (medians)\n")
    out.append("| test | unit | on | off | on/off | n |")
    out.append("|---|---|---|---|---|---|")
    for test in ("seqwrite", "seqread", "randread"):
        on, off = median(data[(test, "tern")]), median(data[(test, "tern-seccomp-off")])
        out.append(f"| {test} | {units.get(test, '')} | {fmt(on)} | {fmt(off)} | {fmt(ratio(on, off), 2)} | {len(data[(test, 'tern-seccomp-off')])} |")
    out.append("")


def comparison(out, col, a, b, heads, figures):
    """A table of `figures` ((key, label), ...): the medians of scenario `a` and of `b`
    (`heads`: their column names) and a/b."""
    out.append(f"| figure | {heads[0]} | {heads[1]} | {heads[0]}/{heads[1]} |")
    out.append("|---|---|---|---|")
    for key, label in figures:
        x, y = median(col(a, key)), median(col(b, key))
        out.append(f"| {label} | {fmt(x,0)} | {fmt(y,0)} | {fmt(ratio(x,y),2)} |")


MIGRATION_FIGURES = (("total_ms", "total time (ms)"), ("downtime_ms", "downtime, VMM figure (ms)"),
                     ("ping_max_gap_ms", "largest ping gap (ms)"))


def migrate_section(rows, out):
    def col(name, key):
        return [num(r.get(key)) for r in rows if r["name"] == name]

    out.append("## Live migration: 512 MiB guest running the dirty job, loopback TCP (medians)\n")
    comparison(out, col, "tern-migrate", "qemu-migrate", ("tern", "QEMU"),
               MIGRATION_FIGURES + (("bytes_sent", "bytes on the wire"),))
    out.append(f"\nruns: tern {len(col('tern-migrate', 'total_ms'))}, QEMU {len(col('qemu-migrate', 'total_ms'))}\n")
    out.append("### tern plaintext (tern-migrate-plain) vs QEMU (plaintext), same L1s (medians)\n")
    comparison(out, col, "tern-migrate-plain", "qemu-migrate", ("tern plaintext", "QEMU"), MIGRATION_FIGURES)
    out.append("")
    out.append("Where tern's downtime goes (medians, ms; TLS / plaintext): " + ", ".join(
        f"{k} {fmt(median(col('tern-migrate', 'downtime_' + k + '_ms')))} / {fmt(median(col('tern-migrate-plain', 'downtime_' + k + '_ms')))}"
        for k in ("pause", "last_pages", "state", "capture", "decode", "restore", "release", "take_over", "handoff", "transfer")) + "\n")
    out.append("### tern: mutual TLS (tern-migrate) vs plaintext (tern-migrate-plain), same L1s (medians)\n")
    comparison(out, col, "tern-migrate", "tern-migrate-plain", ("TLS", "plaintext"), MIGRATION_FIGURES)
    out.append(f"\nruns: TLS {len(col('tern-migrate', 'total_ms'))}, plaintext {len(col('tern-migrate-plain', 'total_ms'))}\n")


def snapshot_section(rows, out):
    """tern-snapshot against qemu-snapshot (the same dirty-job guest saved to a file and
    restored from it), and tern-clones against qemu-clones (8 restores at once)."""
    def col(name, key):
        return [num(r.get(key)) for r in rows if r["name"] == name]

    if col("tern-snapshot", "snapshot_total_ms") or col("qemu-snapshot", "snapshot_total_ms"):
        out.append("## Snapshot and restore: 512 MiB dirty-job guest, to a file and back (medians)\n")
        comparison(out, col, "tern-snapshot", "qemu-snapshot", ("tern", "QEMU"),
                   (("snapshot_paused_ms", "guest paused by the snapshot (ms)"),
                    ("snapshot_total_ms", "snapshot total (ms)"), ("snapshot_mib", "snapshot size (MiB)"),
                    ("restore_first_line_ms", "restore: start to the guest's first line (ms)"),
                    ("cold_boot_first_line_ms", "cold boot to that line (ms)")))
        out.append(f"\nruns: tern {len(col('tern-snapshot', 'snapshot_total_ms'))}, QEMU {len(col('qemu-snapshot', 'snapshot_total_ms'))}\n")
    if col("tern-clones", "all_running_ms") or col("qemu-clones", "all_running_ms"):
        out.append("## 8 clones of one snapshot restored at once: 256 MiB guests (medians)\n")
        t, q = median(col("tern-clones", "all_running_ms")), median(col("qemu-clones", "all_running_ms"))
        out.append("| figure | tern | QEMU | tern/QEMU |")
        out.append("|---|---|---|---|")
        out.append(f"| first restore to all 8 counting (ms) | {fmt(t,0)} | {fmt(q,0)} | {fmt(ratio(t,q),2)} |")
        pss, ram = median(col("tern-clones", "pss_total_mib")), median(col("tern-clones", "guest_ram_total_mib"))
        out.append(f"\ntern's 8 processes' PSS: {fmt(pss,0)} MiB against {fmt(ram,0)} MiB of guest RAM "
                   f"({fmt(ratio(pss, ram), 3)}); runs: tern {len(col('tern-clones', 'all_running_ms'))}, "
                   f"QEMU {len(col('qemu-clones', 'all_running_ms'))}\n")


def venv_python():
    """A Python with matplotlib from a venv under target/ (made and filled from PyPI
    on first use), or None when that fails."""
    venv = os.path.join(ROOT, "target", "bench-venv")
    py = os.path.join(venv, "bin", "python3")
    if not os.path.exists(py):
        subprocess.run([sys.executable, "-m", "venv", venv], check=False)
        subprocess.run([py, "-m", "pip", "install", "-q", "matplotlib"], check=False)
    if os.path.exists(py) and os.environ.get("TERN_BENCH_IN_VENV") != "1":
        env = dict(os.environ, TERN_BENCH_IN_VENV="1")
        if subprocess.run([py, "-c", "import matplotlib"], env=env).returncode == 0:
            return py
    return None


def plot(data, path):
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "venv" if venv_python() else "matplotlib unavailable: no plot"
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for vmm, label in (("tern", "tern"), ("qemu-user", "QEMU virtio-net (userspace)"), ("qemu-vhost", "QEMU vhost-net")):
        sizes = sorted(s for t, s, v in data if t == "TCP_STREAM" and v == vmm)
        if sizes:
            ax.plot(sizes, [median(data[("TCP_STREAM", s, vmm)]) for s in sizes], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("netperf TCP_STREAM payload (bytes), 8 KiB socket buffers")
    ax.set_ylabel("throughput (Mbit/s), median")
    ax.set_title("Guest -> host over virtio-net + TAP, same nested rig run")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--label", required=True)
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "bench"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    rows = parse(a.label)
    if not rows:
        sys.exit(f"no TERN-BENCH lines for label {a.label}")
    out = [f"# tern benchmark report ({a.label})\n", "All figures measured in the same nested-rig runs; ratios are tern / QEMU.\n"]
    boot_section(rows, out)
    blk_section(rows, out)
    data = net_section(rows, out)
    migrate_section(rows, out)
    snapshot_section(rows, out)
    png = os.path.join(a.out, f"{a.label}-netperf.png")
    where = plot(data, png)
    if where == "venv":
        py = os.path.join(ROOT, "target", "bench-venv", "bin", "python3")
        env = dict(os.environ, TERN_BENCH_IN_VENV="1")
        # Re-run this script under the venv's Python for the plot only.
        import pickle
        pick = os.path.join(a.out, f"{a.label}-net.pickle")
        with open(pick, "wb") as f:
            pickle.dump(dict(data), f)
        subprocess.run([py, __file__, "--plot-only", pick, png], env=env, check=False)
        where = png if os.path.exists(png) else "plot failed"
    out.append(f"Plot: {where}\n")
    text = "\n".join(out)
    print(text)
    with open(os.path.join(a.out, f"{a.label}.md"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--plot-only":
        import pickle
        with open(sys.argv[2], "rb") as f:
            plot(collections.defaultdict(list, pickle.load(f)), sys.argv[3])
    else:
        main()
