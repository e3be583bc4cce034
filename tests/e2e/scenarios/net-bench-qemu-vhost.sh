#!/bin/sh
# rig: timeout=900
# net-bench-qemu-vhost (benchmark): netperf from a guest of qemu-vhost; see tests/e2e/net_bench.sh.
NET_BENCH_VMM=qemu-vhost
. "$E2E_DIR/net_bench.sh"
