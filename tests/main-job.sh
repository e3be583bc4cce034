#!/usr/bin/env bash
# The README's main-job command: builds tern and the default guest, then runs the
# main-job scenario (tests/e2e/scenarios/main-job.sh) directly on a host whose KVM can
# boot Linux, or inside the nested rig otherwise, showing the scenario's lines live
# (netperf figures, the migration's progress), then prints its results again cleanly:
# the netperf table (no-VM baseline, tern, QEMU), the migration report and the plot's
# path (tests/bench/main_job_report.py). Extra arguments go to rig.py.
set -euo pipefail
cd "$(dirname "$0")/.."
resources/install-host-packages.sh
cargo build --release
status=0
python3 tests/rig/rig.py --scenario main-job --no-install --label main-job -v "$@" || status=$?
python3 tests/bench/main_job_report.py --label main-job || true
exit $status
