#!/usr/bin/env bash
# The README's main-job command: builds tern and the default guest, then runs the
# main-job scenario (tests/e2e/scenarios/main-job.sh) directly on a host whose KVM can
# boot Linux, or inside the nested rig otherwise. Extra arguments go to rig.py.
set -euo pipefail
cd "$(dirname "$0")/.."
resources/install-host-packages.sh
cargo build --release
exec python3 tests/rig/rig.py --scenario main-job --no-install -v "$@"
