#!/bin/sh
# rig: timeout=420 needs=tern
# tern-migrate-trust: who a tern destination refuses, with a real running Linux guest
# (768 MiB, the dirty job counting) as the source. Each refusal must come before the
# guest pauses: `tern migrate` exits non-zero with the reason, the receiver exits
# non-zero with one error line, and the guest keeps counting on the source.
#   1. a receiver given --memory 512M (mutual TLS) refuses the 768 MiB source;
#   2. a source whose certificate comes from another CA is refused by a TLS receiver;
#   3. a plaintext source is refused by a TLS receiver;
#   4. a receiver on a non-loopback address without --tls-dir does not start.
. "$E2E_DIR/lib.sh"
need_kvm
need_tern
need_tls
ip=10.0.2.15
set -- $TAPS
tap_src=$1 tap_dst=$2
mkfifo "$WORK/src.in"
"$TERN" run --on-reboot exit --kernel "$GUEST/vmlinux" --initrd "$GUEST/initramfs.cpio.gz" --memory 768M \
    --cmdline "console=ttyS0 tern.job=dirty tern.ip=$ip/24 tern.dirty_mb=16 tern.dirty_report=1 $GUEST_APPEND" \
    --serial stdio --api-socket "$WORK/src.sock" --net "tap=$tap_src" <"$WORK/src.in" >"$WORK/src.log" 2>"$WORK/src.out" &
src=$!
_lib_pids="$_lib_pids $src"
exec 5>"$WORK/src.in"
wait_for_marker "$WORK/src.log" '^TERN-DIRTY counter=' 180 "$src" || no_init "source guest not running its workload" "$WORK/src.log" "$WORK/src.out"

# counter: the guest's latest counter (asks it for a status line).
counter() {
    echo status >&5
    sleep 2
    grep -a '^TERN-DIRTY status counter=' "$WORK/src.log" | tail -n 1 | sed -n 's/.*counter=\([0-9]*\).*/\1/p'
}

# refused LABEL PORT WHY RECEIVE_ARGS -- MIGRATE_ARGS: a receiver on PORT with
# RECEIVE_ARGS, a migration to it with MIGRATE_ARGS; both must fail with WHY, and the
# guest must still be running and counting afterwards.
refused() {
    _label=$1 _port=$2 _why=$3
    shift 3
    _recv="" _mig=""
    while [ $# -gt 0 ] && [ "$1" != -- ]; do _recv="$_recv $1"; shift; done
    [ $# -gt 0 ] && shift
    _mig="$*"
    # shellcheck disable=SC2086
    "$TERN" receive --listen "127.0.0.1:$_port" --serial null --net "tap=$tap_dst" $_recv \
        >"$WORK/$_label-dst.out" 2>&1 &
    _dst=$!
    _lib_pids="$_lib_pids $_dst"
    sleep 1
    _c0=$(counter)
    # shellcheck disable=SC2086
    "$TERN" migrate --api-socket "$WORK/src.sock" --to "127.0.0.1:$_port" $_mig >"$WORK/$_label-migrate.out" 2>&1 &&
        fail "$_label: tern migrate succeeded" "$WORK/$_label-migrate.out" "$WORK/$_label-dst.out"
    grep -q 'keeps running here' "$WORK/$_label-migrate.out" || fail "$_label: tern migrate did not say the guest keeps running" "$WORK/$_label-migrate.out"
    grep -q "$_why" "$WORK/$_label-migrate.out" || fail "$_label: tern migrate did not give the reason ($_why)" "$WORK/$_label-migrate.out"
    wait_exit "$_dst" 30 || fail "$_label: the receiver did not exit" "$WORK/$_label-dst.out"
    [ "$EXIT_RC" != 0 ] || fail "$_label: the receiver exited 0" "$WORK/$_label-dst.out"
    [ "$(grep -c '^tern: error' "$WORK/$_label-dst.out")" = 1 ] || fail "$_label: the receiver did not end with one error line" "$WORK/$_label-dst.out"
    alive "$src" || fail "$_label: the source exited" "$WORK/src.out"
    _n=0
    while :; do
        _c1=$(counter)
        [ "${_c1:-0}" -gt "${_c0:-0}" ] && break
        _n=$((_n + 1))
        [ $_n -lt 15 ] || fail "$_label: the guest stopped counting after the refusal ($_c0 -> $_c1)" "$WORK/src.log" "$WORK/src.out"
    done
    step "$_label: refused ($(tail -n 1 "$WORK/$_label-migrate.out")); receiver: $(grep '^tern: error' "$WORK/$_label-dst.out"); guest counting $_c0 -> $_c1"
}

refused memory 4450 "more than --memory 512 MiB" --memory 512M --tls-dir "$TLS_CERTS/dest" -- --tls-dir "$TLS_CERTS/source"
refused rogue-ca 4451 "TLS" --tls-dir "$TLS_CERTS/dest" -- --tls-dir "$TLS_CERTS/rogue"
refused plaintext-source 4452 "." --tls-dir "$TLS_CERTS/dest" --
grep -q "does not speak TLS" "$WORK/plaintext-source-dst.out" || fail "the TLS receiver did not say the source does not speak TLS" "$WORK/plaintext-source-dst.out"

"$TERN" receive --listen 0.0.0.0:4453 --serial null >"$WORK/open.out" 2>&1 </dev/null &
open=$!
_lib_pids="$_lib_pids $open"
wait_exit "$open" 20 || fail "a plaintext receiver on 0.0.0.0 kept running" "$WORK/open.out"
[ "$EXIT_RC" != 0 ] && grep -q -- '--tls-dir' "$WORK/open.out" || fail "a plaintext receiver on 0.0.0.0 did not refuse clearly" "$WORK/open.out"
step "non-loopback without --tls-dir: $(cat "$WORK/open.out")"
echo poweroff >&5
wait_exit "$src" 60 || fail "source guest did not power off" "$WORK/src.out"
[ "$EXIT_RC" = 0 ] || fail "source exited with $EXIT_RC" "$WORK/src.out"
pass
