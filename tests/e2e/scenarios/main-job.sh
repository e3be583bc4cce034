#!/bin/sh
# rig: timeout=600 needs=tern
# main-job: what the README's first command shows, end to end with tern:
#   1. boot the default guest (2 vCPUs, virtio-net on tap0) and run netperf inside it
#      against netserver on the host side of the TAP;
#   2. boot it again with the dirty workload and a disk, and live-migrate it to a second
#      tern (tap1) with `tern migrate` over mutual TLS, printing the migration report.
. "$E2E_DIR/lib.sh"
need_kvm
need_tern
need_tls
set -- $TAPS
tap_src=$1 tap_dst=$2
ip=10.0.2.15

step "1. tern run: netperf inside the guest"
start_vmm netserver netserver -D -p 12865
con=$WORK/netperf.log
start_vmm tern "$TERN" run --kernel "$GUEST/vmlinux" --initrd "$GUEST/initramfs.cpio.gz" --cpus 2 --memory 512M \
    --cmdline "console=ttyS0 tern.job=netperf tern.ip=$ip/24 tern.peer=$BRIDGE_IP tern.netperf=TCP_STREAM:5:16384,TCP_RR:5:1 $GUEST_APPEND" \
    --net "tap=$tap_src" --serial "file=$con"
wait_exit "$VMM_PID" 240 || fail "netperf guest did not finish" "$con" "$WORK/tern.out"
grep -a -q '^TERN-GUEST-INIT' "$con" || no_init "netperf guest did not reach init" "$con" "$WORK/tern.out"
[ "$EXIT_RC" = 0 ] || fail "tern exited with $EXIT_RC" "$con" "$WORK/tern.out"
grep '^TERN-GUEST-INIT\|^TERN-GUEST-NET\|^TERN-NETPERF' "$con" | sed 's/^/    /'
grep -q '^TERN-NETPERF test=TCP_RR .*result=[0-9]' "$con" || fail "netperf did not complete" "$con"

step "2. tern run + tern receive + tern migrate (mutual TLS)"
truncate -s 64M "$WORK/data.img"
mkfifo "$WORK/dst.in"
start_vmm src "$TERN" run --kernel "$GUEST/vmlinux" --initrd "$GUEST/initramfs.cpio.gz" --cpus 2 --memory 512M \
    --cmdline "console=ttyS0 tern.job=dirty tern.ip=$ip/24 tern.dirty_report=2 $GUEST_APPEND" \
    --disk "path=$WORK/data.img" --net "tap=$tap_src" --serial "file=$WORK/src.log" --api-socket "$WORK/src.sock"
src=$VMM_PID
wait_for_marker "$WORK/src.log" '^TERN-DIRTY counter=' 180 || no_init "source guest not running its workload" "$WORK/src.log" "$WORK/src.out"
"$TERN" receive --listen 127.0.0.1:4444 --tls-dir "$TLS_CERTS/dest" --disk "path=$WORK/data.img" --net "tap=$tap_dst" --serial stdio \
    <"$WORK/dst.in" >"$WORK/dst.log" 2>"$WORK/dst.out" &
dst=$!
_lib_pids="$_lib_pids $dst"
exec 6>"$WORK/dst.in"
sleep 1
"$TERN" migrate --api-socket "$WORK/src.sock" --to 127.0.0.1:4444 --tls-dir "$TLS_CERTS/source" >"$WORK/migrate.out" 2>&1 ||
    fail "tern migrate failed" "$WORK/migrate.out" "$WORK/src.out" "$WORK/dst.out"
sed 's/^/    /' "$WORK/migrate.out"
wait_exit "$src" 20 || fail "source still running" "$WORK/src.out"
echo verify >&6
wait_for_marker "$WORK/dst.log" '^TERN-DIRTY verify ' 180 || fail "no verify answer on the destination" "$WORK/dst.log"
echo "    $MARKER_LINE"
echo "$MARKER_LINE" | grep -q 'verify ok' || fail "guest memory did not verify after migration" "$WORK/dst.log"
ping -c 3 -W 2 $ip >/dev/null 2>&1 || fail "guest does not answer pings after migration" "$WORK/dst.log"
echo poweroff >&6
wait_exit "$dst" 60 || fail "destination did not power off" "$WORK/dst.out"
[ "$EXIT_RC" = 0 ] || fail "destination exited with $EXIT_RC" "$WORK/dst.out"
pass
