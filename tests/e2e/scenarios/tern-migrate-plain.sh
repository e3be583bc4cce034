#!/bin/sh
# rig: timeout=600 needs=tern
# tern-migrate-plain: tern-migrate without TLS (plaintext over loopback), for the
# benchmark's TLS-vs-plaintext comparison of total time and downtime in one rig run.
MIGRATE_TLS=off
. "$E2E_DIR/scenarios/tern-migrate.sh"
