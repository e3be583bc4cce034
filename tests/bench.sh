#!/usr/bin/env bash
# Benchmarks: tern vs QEMU in the same rig runs (tests/bench/suite.txt), then a report
# with medians and tern/QEMU ratios and a PNG plot of netperf throughput against payload
# size (target/bench/). Figures are printed, never asserted. Extra arguments go to rig.py.
set -euo pipefail
cd "$(dirname "$0")/.."
resources/install-host-packages.sh
cargo build --release
mkdir -p target/bench
label="bench-$(date +%Y%m%d-%H%M%S)"
python3 tests/rig/rig.py --suite tests/bench/suite.txt --no-install --label "$label" "$@" | tee "target/bench/$label.txt" || true
python3 tests/bench/report.py --label "$label" --out target/bench
