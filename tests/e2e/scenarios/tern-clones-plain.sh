#!/bin/sh
# rig: timeout=900 needs=tern
# tern-clones-plain (diagnostic, on demand): tern-clones with plain restores (no
# --clone): the 8 restores keep the snapshot's VM generation ID (and its MAC), so no
# generation notify reaches the guests, and none may report a VM fork. Compares the
# crash rate of restores with and without the generation change (tests/rig/README.md,
# "Snapshots, restores and clones").
CLONES_PLAIN=1
. "$E2E_DIR/scenarios/tern-clones.sh"
