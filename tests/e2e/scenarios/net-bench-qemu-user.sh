#!/bin/sh
# rig: timeout=900
# net-bench-qemu-user (benchmark): netperf from a guest of qemu-user; see tests/e2e/net_bench.sh.
NET_BENCH_VMM=qemu-user
. "$E2E_DIR/net_bench.sh"
