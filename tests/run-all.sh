#!/usr/bin/env bash
# tests/run-all.sh: every test of tern, the single command for a fresh machine.
#   1. host packages (resources/install-host-packages.sh: QEMU 10 from bookworm-backports,
#      busybox-static, cpio, lz4, e2fsprogs, netperf)
#   2. rig classifier tests (tests/rig/test_*.py), then
#      cargo test --workspace --release   (unit tests and host-KVM tests)
#   3. cargo build --release              (target/release/tern, used by the e2e scenarios);
#      tests/fuzz.sh 12                   (every cargo-fuzz target for 12 s: fuzz/README.md)
#   4. resources/guest/build.sh, resources/cluster/build.sh (guest kernel, initramfs,
#      rootfs; the cluster hosts' root; cached), started in the background at step 2
#   5. tests/rig/rig.py --suite tests/e2e/suite.txt   (e2e scenarios: nested rig, or
#      directly on a host whose /dev/kvm can boot Linux)
# Prints a summary; exits non-zero if any step failed. Every step runs even after an
# earlier failure (except when a needed tool is missing), so one run reports everything.
# Options: --no-cargo (skip steps 2 and 3), --no-e2e (skip steps 4 and 5); extra
# arguments after -- go to rig.py (e.g. -- --watchdog 180).
set -uo pipefail
cd "$(dirname "$0")/.."

do_cargo=1 do_e2e=1 rig_args=()
while [ $# -gt 0 ]; do
    case "$1" in
    --no-cargo) do_cargo=0 ;;
    --no-e2e) do_e2e=0 ;;
    --) shift; rig_args=("$@"); break ;;
    *) echo "usage: tests/run-all.sh [--no-cargo] [--no-e2e] [-- RIG_ARGS...]" >&2; exit 2 ;;
    esac
    shift
done

summary=()
failed=0
t_start=$(date +%s)
run_step() { # NAME CMD...
    local name=$1 t0 rc
    shift
    echo
    echo "=== run-all: $name: $*"
    t0=$(date +%s)
    "$@"
    rc=$?
    if [ $rc -eq 0 ]; then
        summary+=("PASS  $name ($(($(date +%s) - t0)) s)")
    else
        summary+=("FAIL  $name (exit $rc, $(($(date +%s) - t0)) s)")
        failed=1
    fi
    return $rc
}
finish() {
    echo
    echo "=== run-all summary ($(($(date +%s) - t_start)) s)"
    printf '  %s\n' "${summary[@]}"
    [ $failed -eq 0 ] && echo "=== run-all: ALL PASSED" || echo "=== run-all: FAILED"
    exit $failed
}

run_step "host packages" resources/install-host-packages.sh
missing=()
for t in python3 qemu-system-x86_64 busybox cpio gzip lz4 mkfs.ext4 netperf netserver apt-get dpkg-deb; do
    command -v "$t" >/dev/null || missing+=("$t")
done
[ $do_cargo -eq 1 ] && ! command -v cargo >/dev/null && missing+=(cargo)
if [ ${#missing[@]} -gt 0 ]; then
    echo "run-all: missing tool(s): ${missing[*]}" >&2
    summary+=("FAIL  missing tools: ${missing[*]}")
    failed=1
    finish
fi

# The guest and cluster artifacts are mostly downloads and packing: they build in the
# background while cargo compiles, and the "guest artifacts" step waits for them.
artifacts_log=target/run-all-artifacts.log
build_artifacts() {
    resources/guest/build.sh && resources/cluster/build.sh
}
wait_artifacts() { # waits for the background build, shows its log, returns its status
    local rc=0
    wait "$artifacts_pid" || rc=$?
    cat "$artifacts_log"
    return $rc
}
if [ $do_e2e -eq 1 ]; then
    mkdir -p target
    build_artifacts >"$artifacts_log" 2>&1 &
    artifacts_pid=$!
fi

run_step "rig classifier tests" env PYTHONDONTWRITEBYTECODE=1 python3 -m unittest discover -s tests/rig -p 'test_*.py'

no_tern=()
if [ $do_cargo -eq 1 ]; then
    run_step "cargo test --workspace --release" cargo test --workspace --release --no-fail-fast
    run_step "cargo build --release" cargo build --release ||
        no_tern=(--no-tern "cargo build --release failed")
    run_step "fuzz targets, 12 s each (tests/fuzz.sh)" bash tests/fuzz.sh 12
fi

if [ $do_e2e -eq 1 ]; then
    if run_step "guest artifacts (built beside cargo)" wait_artifacts; then
        run_step "e2e suite (tests/e2e/suite.txt)" \
            python3 tests/rig/rig.py --suite tests/e2e/suite.txt --no-install "${no_tern[@]}" "${rig_args[@]}"
    fi
fi
finish
