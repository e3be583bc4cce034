#!/bin/sh
# rig: timeout=900 needs=tern
# net-bench-tern-seccomp-off (benchmark): net-bench-tern with tern's seccomp filters off,
# for what confinement costs; see tests/e2e/net_bench.sh.
NET_BENCH_VMM=tern-seccomp-off
. "$E2E_DIR/net_bench.sh"
