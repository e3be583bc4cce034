#!/bin/sh
# rig: timeout=300 needs=tern
# tern-net: tern boots the test guest with virtio-net on a TAP in br0 and the MAC given
# on the command line. The guest's link comes up with that MAC; L1 pings the guest;
# the guest reaches netserver on L1 and runs netperf TCP_STREAM and TCP_RR, which must
# give sane (positive) figures; the guest powers off and tern exits 0.
. "$E2E_DIR/lib.sh"
need_kvm
need_tern
set -- $TAPS
tap=$1
mac=52:54:00:12:34:56
ip=10.0.2.15
tests=${NETPERF_TESTS:-TCP_STREAM:5:16384,TCP_RR:5:1}
start_vmm netserver netserver -D -p 12865
con=$WORK/console.log
# A short pause at the start gives L1 time to ping the guest before netperf runs.
start_vmm tern "$TERN" run --on-reboot exit --kernel "$GUEST/vmlinux" --initrd "$GUEST/initramfs.cpio.gz" --memory 512M \
    --cmdline "console=ttyS0 tern.job=netperf tern.ip=$ip/24 tern.peer=$BRIDGE_IP tern.netperf=$tests $GUEST_APPEND" \
    --net "tap=$tap,mac=$mac" --serial "file=$con"
pid=$VMM_PID
wait_for_marker "$con" '^TERN-GUEST-NET ' 120 "$VMM_PID" || no_init "guest network not configured" "$con" "$WORK/tern.out"
echo "$MARKER_LINE" | grep -q "mac=$mac" || fail "guest link has the wrong MAC: $MARKER_LINE" "$con"
i=0
until ping -c 1 -W 1 $ip >"$WORK/ping.out" 2>&1; do
    i=$((i + 1))
    [ $i -lt 20 ] || fail "L1 cannot ping the guest at $ip" "$con" "$WORK/ping.out"
done
step "link up with $mac, L1 pings the guest"
if ! wait_exit "$pid" 200; then
    # Evidence for next time: does the guest still answer, and which of tern's
    # threads still run (a spinning vCPU, an idle one, a busy worker)?
    answers=no; ping -c 2 -W 1 $ip >/dev/null 2>&1 && answers=yes
    fail "guest did not finish netperf and power off (answers ping: $answers; tern threads' CPU ticks over 1 s: $(threads_cpu "$pid"))" \
        "$con" "$WORK/tern.out"
fi
[ "$EXIT_RC" = 0 ] || fail "tern exited with $EXIT_RC" "$con" "$WORK/tern.out"
grep -q '^TERN-JOB error' "$con" && fail "guest job error: $(grep '^TERN-JOB error' "$con")" "$con" "$WORK/tern.out"
grep -q '^TERN-NETPERF .*result=error' "$con" && fail "netperf error" "$con" "$WORK/tern.out"
figures=
for spec in $(echo "$tests" | tr ',' ' '); do
    t=${spec%%:*}
    r=$(grep -a "^TERN-NETPERF test=$t " "$con" | head -n 1 | sed -n 's/.* result=\([0-9.]*\) .*/\1/p')
    [ -n "$r" ] || net_guest_ended "no $t result" "$con" "$WORK/tern.out"
    awk -v r="$r" 'BEGIN { exit !(r > 0) }' || fail "$t gave $r" "$con"
    figures="$figures $(echo "$t" | tr 'A-Z' 'a-z')=$r"
done
step "netperf:$figures"
bench vmm=tern$figures
pass
