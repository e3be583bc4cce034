#!/bin/sh
# rig: timeout=1800 needs=tern
# net-soak (rig-stability study, not in any suite; run with --retries 0): does the
# nested rig reset tern's guests under network load more often than QEMU's? Starts the
# netperf guest NET_SOAK_RUNS times (default 10) in this L1, alternating tern and QEMU
# (userspace virtio-net: the same guest, the same tap, the same 8 netperf tests as
# net-bench, NET_BENCH_SECONDS each), and counts per VMM how each run ended:
#   ok        all 8 figures, the VMM exited 0
#   reset     the guest ended before its 8th figure with no crash message on its
#             console (tern under --on-reboot exit: its "guest crashed: vCPU N triple fault" report; QEMU under
#             -no-reboot just exits 0): the silent reset this study is about
#   crash     a kernel panic/oops/fault message on the console
#   no-init   the guest never reached init (early-boot rig crashes, counted apart)
#   stuck     not finished in time
#   bad-exit  anything else (e.g. the VMM failed)
# Prints one TERN-BENCH line per run and a tally per VMM; passes whatever the tally.
# tests/rig/soak_tally.py adds up the tallies of several runs with 95% intervals.
. "$E2E_DIR/lib.sh"
need_kvm
need_tern
[ -x "$QEMU" ] || fail "no QEMU at '$QEMU'"
set -- $TAPS
tap=$1
n=${NET_SOAK_RUNS:-10}
net_bench_guest
for vmm in tern qemu; do
    for outcome in ok reset crash noinit stuck badexit; do eval "${vmm}_$outcome=0"; done
done
i=1
while [ $i -le "$n" ]; do
    vmm=tern
    [ $((i % 2)) = 0 ] && vmm=qemu
    con=$WORK/console-$i.log
    log=$WORK/run-$i.out
    t0=$(now_ms)
    if [ $vmm = tern ]; then
        start_vmm "run-$i" "$TERN" run --on-reboot exit --kernel "$GUEST/vmlinux" --initrd "$GUEST/initramfs.cpio.gz" --memory 512M \
            --cmdline "$append" --net "tap=$tap,mac=52:54:00:12:34:56" --serial "file=$con"
    else
        start_vmm "run-$i" "$QEMU" -accel kvm -cpu host -m 512M -smp 1 -kernel "$GUEST/vmlinux" \
            -initrd "$GUEST/initramfs.cpio.gz" -append "$append" -display none -nodefaults -no-reboot \
            -serial "file:$con" -netdev "tap,id=n0,ifname=$tap,script=no,downscript=no,vhost=off" \
            -device virtio-net-pci,netdev=n0,romfile=,mac=52:54:00:12:34:56
    fi
    figures=0 EXIT_RC=
    if wait_exit "$VMM_PID" $((secs * 12 + 240)); then
        figures=$(grep -a -c '^TERN-NETPERF .* result=[0-9]' "$con")
        if ! grep -a -q '^TERN-GUEST-INIT' "$con"; then
            outcome=noinit
        elif grep -a -q -E "$CRASH_SIGNATURES" "$con"; then
            outcome=crash
        elif [ "$figures" -eq 8 ] && [ "$EXIT_RC" = 0 ]; then
            outcome=ok
        elif [ $vmm = tern ] && grep -a -q 'guest crashed: vCPU [0-9]* triple fault' "$log"; then
            outcome=reset
        elif [ $vmm = qemu ] && [ "$EXIT_RC" = 0 ]; then
            outcome=reset
        else
            outcome=badexit
        fi
    else
        outcome=stuck
        stop_pid "$VMM_PID"
    fi
    t=$(since_ms "$t0")
    if [ $outcome != ok ]; then
        step "run $i ($vmm): $outcome after $figures of 8 figures, exit ${EXIT_RC:-none}"
        show_log "$con" 15
        show_log "$log" 10
    fi
    eval "${vmm}_$outcome=\$((${vmm}_$outcome + 1))"
    bench run=$i vmm=$vmm outcome=$outcome figures=$figures ms=$t
    i=$((i + 1))
done
for vmm in tern qemu; do
    eval "bench summary=net-soak vmm=$vmm runs=\$(( ${vmm}_ok + ${vmm}_reset + ${vmm}_crash + ${vmm}_noinit + ${vmm}_stuck + ${vmm}_badexit )) ok=\$${vmm}_ok reset=\$${vmm}_reset crash=\$${vmm}_crash no_init=\$${vmm}_noinit stuck=\$${vmm}_stuck bad_exit=\$${vmm}_badexit"
done
pass
