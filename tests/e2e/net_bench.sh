# tests/e2e/net_bench.sh: the body of the net-bench-VMM scenarios (benchmarks; never
# fail on a figure). netperf from the guest to netserver on the host side of the TAP,
# for one VMM per scenario — net-bench-tern, net-bench-tern-seccomp-off (tern with its
# seccomp filters off: what confinement costs), net-bench-qemu-user (QEMU, userspace
# virtio-net) and net-bench-qemu-vhost (QEMU, vhost-net) — same guest, same TAP. One
# VMM per scenario keeps each scenario a couple of minutes long: the rig's L1 now and
# then dies under long network runs, and a retry then repeats one VMM's tests, not
# all three; the bench suite runs the three in one L1, in alternating orders.
# Tests: TCP_STREAM at payloads 128..2048 bytes with 8 KiB socket buffers (the seeds'
# sweep), TCP_MAERTS, TCP_RR and UDP_RR, NET_BENCH_SECONDS (default 5) each.
# Prints one TERN-BENCH line per test: vmm= test= size= result= unit= plus the guest's
# TCP segment counts (segs_in= segs_out= retrans=) and, for *_RR, latencies.
. "$E2E_DIR/lib.sh"
need_kvm
case $NET_BENCH_VMM in tern*) need_tern ;; esac
[ -x "$QEMU" ] || fail "no QEMU at '$QEMU'"
set -- $TAPS
tap=$1
net_bench_guest
vmm=$NET_BENCH_VMM
con=$WORK/console-$vmm.log
case $vmm in
tern | tern-seccomp-off)
    seccomp=on; [ $vmm = tern-seccomp-off ] && seccomp=off
    start_vmm $vmm "$TERN" run --on-reboot exit --kernel "$GUEST/vmlinux" --initrd "$GUEST/initramfs.cpio.gz" --memory 512M \
        --cmdline "$append" --net "tap=$tap,mac=52:54:00:12:34:56" --serial "file=$con" --seccomp $seccomp ;;
qemu-*)
    vhost=off; [ $vmm = qemu-vhost ] && vhost=on
    start_vmm $vmm "$QEMU" -accel kvm -cpu host -m 512M -smp 1 -kernel "$GUEST/vmlinux" \
        -initrd "$GUEST/initramfs.cpio.gz" -append "$append" -display none -nodefaults -no-reboot \
        -serial "file:$con" -netdev "tap,id=n0,ifname=$tap,script=no,downscript=no,vhost=$vhost" \
        -device virtio-net-pci,netdev=n0,romfile=,mac=52:54:00:12:34:56 ;;
esac
# QEMU is the anchor: its guest not finishing (it hangs now and then in the rig, or
# loses a UDP_RR packet for good) is the rig's problem, retried on a fresh L1.
broken=fail
case $vmm in qemu-*) broken=rig_fault ;; esac
wait_exit "$VMM_PID" $((secs * 12 + 240)) || $broken "$vmm: netperf guest did not finish" "$con" "$WORK/$vmm.out"
if ! grep -a -q '^TERN-GUEST-INIT' "$con"; then
    case $vmm in tern*) no_init "tern: guest did not reach init" "$con" "$WORK/$vmm.out" ;; esac
    rig_fault "$vmm: its guest did not boot" "$con" "$WORK/$vmm.out"
fi
[ "$EXIT_RC" = 0 ] || fail "$vmm exited with $EXIT_RC" "$WORK/$vmm.out" "$con"
n=$(grep -a -c '^TERN-NETPERF .* result=[0-9]' "$con")
if [ "$n" -ne 8 ]; then
    case $vmm in tern*) net_guest_ended "tern: $n of 8 netperf figures" "$con" "$WORK/$vmm.out" ;; esac
    rig_fault "$vmm: $n of 8 netperf figures" "$con" "$WORK/$vmm.out"
fi
grep -a "^TERN-NETPERF " "$con" | while read -r _ t s l r u rest; do
    bench vmm=$vmm $t $s $r $u $rest
done
pass
