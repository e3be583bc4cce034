#!/bin/sh
# rig: timeout=900 needs=tern
# net-bench-tern (benchmark): netperf from a guest of tern; see tests/e2e/net_bench.sh.
NET_BENCH_VMM=tern
. "$E2E_DIR/net_bench.sh"
