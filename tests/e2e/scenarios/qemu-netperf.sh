#!/bin/sh
# rig: timeout=300
# qemu-netperf: the network anchor. QEMU boots the test guest with virtio-net on a tap in
# br0; the guest runs netperf against netserver on the bridge address, first with QEMU's
# userspace virtio-net (vhost=off), then with vhost-net (vhost=on).
# Figures: TCP_STREAM Mbit/s and TCP_RR transactions/s for each.
. "$E2E_DIR/lib.sh"
need_kvm
set -- $TAPS
tap=$1
tests=${NETPERF_TESTS:-TCP_STREAM:5:16384,TCP_RR:5:1}
start_vmm netserver netserver -D -p 12865
sleep 0.5
for vhost in off on; do
    con=$WORK/console-vhost-$vhost.log
    t0=$(now_ms)
    start_vmm qemu-$vhost "$QEMU" -accel kvm -cpu host -m 512M -smp 1 \
        -kernel "$GUEST/vmlinux" -initrd "$GUEST/initramfs.cpio.gz" \
        -append "console=ttyS0 tern.job=netperf tern.ip=10.0.2.15/24 tern.peer=$BRIDGE_IP tern.netperf=$tests $GUEST_APPEND" \
        -display none -nodefaults -no-reboot -serial "file:$con" \
        -netdev "tap,id=n0,ifname=$tap,script=no,downscript=no,vhost=$vhost" \
        -device virtio-net-pci,netdev=n0,romfile=,mac=52:54:00:12:34:56
    pid=$VMM_PID
    wait_for_marker "$con" '^TERN-GUEST-INIT ' 120 || rig_fault "vhost=$vhost: QEMU's guest did not reach init" "$con" "$WORK/qemu-$vhost.out"
    wait_exit "$pid" 200 || rig_fault "vhost=$vhost: QEMU's guest did not finish netperf and power off" "$con"
    [ "$EXIT_RC" = 0 ] || fail "vhost=$vhost: QEMU exited with $EXIT_RC" "$con" "$WORK/qemu-$vhost.out"
    grep -q '^TERN-NETPERF .*result=error' "$con" && fail "vhost=$vhost: netperf error" "$con"
    figures=
    for spec in $(echo "$tests" | tr ',' ' '); do
        t=${spec%%:*}
        line=$(grep -a "^TERN-NETPERF test=$t " "$con" | head -n 1)
        r=$(echo "$line" | sed -n 's/.* result=\([0-9.]*\) .*/\1/p')
        [ -n "$r" ] || rig_fault "vhost=$vhost: QEMU's guest gave no $t result" "$con"
        figures="$figures $(echo "$t" | tr 'A-Z' 'a-z')_vhost_$vhost=$r"
    done
    step "vhost=$vhost:$figures ($(since_ms "$t0") ms)"
    bench vmm=qemu$figures
done
pass
