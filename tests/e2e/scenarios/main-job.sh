#!/bin/sh
# rig: timeout=900 needs=tern
# main-job: what the README's first command shows, end to end with tern:
#   1. netperf against netserver on the bridge's host side, from three places with the
#      same tests: a network namespace on the bridge (the host without virtualization:
#      the baseline), a tern guest (2 vCPUs, virtio-net on tap0) and a QEMU guest
#      (userspace virtio-net, same tap); a table of the figures and the ratios;
#   2. boot the guest again with the dirty workload and a disk, and live-migrate it to a
#      second tern (tap1) with `tern migrate` over mutual TLS: its live progress, then
#      its report.
# TERN-BENCH lines carry every figure; tests/bench/main_job_report.py prints them again
# after the run and plots them.
. "$E2E_DIR/lib.sh"
need_kvm
need_tern
need_tls
[ -x "$QEMU" ] || fail "no QEMU at '$QEMU'"
set -- $TAPS
tap_src=$1 tap_dst=$2
ip=10.0.2.15
tests=TCP_STREAM:3:16384,TCP_STREAM:3:1024,TCP_RR:3:1
append_net="console=ttyS0 tern.job=netperf tern.ip=$ip/24 tern.peer=$BRIDGE_IP tern.netperf=$tests $GUEST_APPEND"

# figures SETUP FILE: TERN-NETPERF lines of FILE as TERN-BENCH lines for SETUP.
figures() {
    grep -a '^TERN-NETPERF ' "$2" | while read -r _ t s l r u rest; do
        bench setup=$1 $t $s $r $u
    done
}

step "1a. baseline: netperf from a network namespace on the bridge (no VM)"
start_vmm netserver netserver -D -p 12865
ipf=ip-full
command -v $ipf >/dev/null || fail "no iproute2 ip (ip-full) for the baseline's network namespace"
$ipf netns add tern-base 2>/dev/null || fail "cannot create a network namespace"
drop_netns() { $ipf netns del tern-base 2>/dev/null; $ipf link del tern-veth0 2>/dev/null; }
trap 'drop_netns; _lib_cleanup' EXIT
$ipf link add tern-veth0 type veth peer name tern-veth1 || fail "cannot create a veth pair (veth module?)"
brctl addif "${BRIDGE:-br0}" tern-veth0 && $ipf link set tern-veth0 up || fail "cannot add the veth to the bridge"
$ipf link set tern-veth1 netns tern-base
$ipf -n tern-base addr add 10.0.2.16/24 dev tern-veth1
$ipf -n tern-base link set tern-veth1 up
$ipf -n tern-base link set lo up
base=$WORK/baseline.log
for spec in $(echo "$tests" | tr ',' ' '); do
    t=${spec%%:*} rest=${spec#*:}; secs=${rest%%:*} size=${rest#*:}
    case $t in
    *_RR) opts="-r $size,$size" ;;
    *) opts="-m $size" ;;
    esac
    line=$($ipf netns exec tern-base netperf -H "$BRIDGE_IP" -t "$t" -l "$secs" -P 0 -- $opts -o THROUGHPUT,THROUGHPUT_UNITS 2>&1 |
        grep -E '^[0-9.]+,' | tail -n 1)
    [ -n "$line" ] || fail "baseline netperf $t failed"
    echo "$line" | awk -F, -v t="$t" -v s="$size" -v l="$secs" '{
        u = $2; if (u == "10^6bits/s") u = "Mbit/s"; else if (u == "Trans/s") u = "trans/s"
        printf "TERN-NETPERF test=%s size=%s seconds=%s result=%s unit=%s\n", t, s, l, $1, u }' >>"$base"
done
drop_netns
figures host "$base"

step "1b. tern run: netperf inside the guest"
con=$WORK/netperf.log
start_vmm tern "$TERN" run --on-reboot exit --kernel "$GUEST/vmlinux" --initrd "$GUEST/initramfs.cpio.gz" --cpus 2 --memory 512M \
    --cmdline "$append_net" --net "tap=$tap_src" --serial "file=$con"
wait_exit "$VMM_PID" 240 || fail "netperf guest did not finish" "$con" "$WORK/tern.out"
grep -a -q '^TERN-GUEST-INIT' "$con" || no_init "netperf guest did not reach init" "$con" "$WORK/tern.out"
[ "$EXIT_RC" = 0 ] || fail "tern exited with $EXIT_RC" "$con" "$WORK/tern.out"
grep -q '^TERN-NETPERF test=TCP_RR .*result=[0-9]' "$con" || fail "netperf did not complete" "$con"
figures tern "$con"

step "1c. QEMU (userspace virtio-net, same guest, same tap): netperf inside the guest"
qcon=$WORK/qemu-netperf.log
start_vmm qemu "$QEMU" -accel kvm -cpu host -m 512M -smp 2 -kernel "$GUEST/vmlinux" -initrd "$GUEST/initramfs.cpio.gz" \
    -append "$append_net" -display none -nodefaults -no-reboot -serial "file:$qcon" \
    -netdev "tap,id=n0,ifname=$tap_src,script=no,downscript=no,vhost=off" -device virtio-net-pci,netdev=n0,romfile=
if wait_exit "$VMM_PID" 240 && grep -q '^TERN-NETPERF test=TCP_RR .*result=[0-9]' "$qcon"; then
    figures qemu "$qcon"
else
    stop_pid "$VMM_PID"
    step "QEMU's guest did not finish its netperf run (the rig's anchor): its column stays empty"
fi
echo "TERN-MAIN-TABLE netperf: guest (or namespace) -> netserver on the bridge, 3 s per test"
for f in host:"$base" tern:"$con" qemu:"$qcon"; do
    grep -a '^TERN-NETPERF .*result=[0-9]' "${f#*:}" 2>/dev/null | sed "s/^/${f%%:*} /"
done | awk '
    { setup = $1; split($3, t, "="); split($4, s, "="); split($6, r, "="); split($7, u, "=")
      key = t[2] " " s[2]; if (!(key in unit)) { order[++n] = key; unit[key] = u[2] }
      v[key, setup] = r[2] }
    function cell(x) { return x == "" ? "-" : x }
    function ratio(a, b) { return (a == "" || b == "" || b + 0 == 0) ? "-" : sprintf("%.2f", a / b) }
    END {
        printf "TERN-MAIN-TABLE %-10s %6s %-8s %10s %10s %10s %9s %9s %9s\n", "test", "size", "unit", "host", "tern", "qemu", "tern/host", "qemu/host", "tern/qemu"
        for (i = 1; i <= n; i++) {
            k = order[i]; split(k, p, " ")
            printf "TERN-MAIN-TABLE %-10s %6s %-8s %10s %10s %10s %9s %9s %9s\n", p[1], p[2], unit[k], cell(v[k, "host"]), cell(v[k, "tern"]), cell(v[k, "qemu"]),
                ratio(v[k, "tern"], v[k, "host"]), ratio(v[k, "qemu"], v[k, "host"]), ratio(v[k, "tern"], v[k, "qemu"])
        }
    }'

step "2. tern run + tern receive + tern migrate (mutual TLS)"
truncate -s 64M "$WORK/data.img"
mkfifo "$WORK/dst.in"
start_vmm src "$TERN" run --on-reboot exit --kernel "$GUEST/vmlinux" --initrd "$GUEST/initramfs.cpio.gz" --cpus 2 --memory 512M \
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
# Progress lines as they come (stderr), then the report (stdout), each line marked.
{ "$TERN" migrate --api-socket "$WORK/src.sock" --to 127.0.0.1:4444 --tls-dir "$TLS_CERTS/source" 2>&1
  echo "rc=$?" >"$WORK/migrate.rc"; } | while IFS= read -r line; do
    echo "$line" >>"$WORK/migrate.out"
    echo "TERN-MAIN-MIGRATE $line"
done
[ "$(cat "$WORK/migrate.rc")" = rc=0 ] || fail "tern migrate failed" "$WORK/migrate.out" "$WORK/src.out" "$WORK/dst.out"
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
