#!/bin/sh
# rig: timeout=1800 needs=tern
# boot-soak (rig-stability study, not in any suite): boots the default guest 20 times in
# this L1, alternating tern and QEMU (-kernel vmlinux, same guest), --cpus/-smp 1 and 2,
# and counts per VMM how each boot ended: ok (init marker, then exit 0), crash (kernel
# panic/oops/double or triple fault before init), stuck (no marker in 90 s), or
# bad-exit. Prints one TERN-BENCH line per boot and a tally per VMM; passes whatever
# the tally (it measures the rig, not the VMMs), so run it with --retries 0.
. "$E2E_DIR/lib.sh"
need_kvm
need_tern
[ -x "$QEMU" ] || fail "no QEMU at '$QEMU'"
n=20
tern_ok=0 tern_crash=0 tern_stuck=0 tern_badexit=0
qemu_ok=0 qemu_crash=0 qemu_stuck=0 qemu_badexit=0
i=1
while [ $i -le $n ]; do
    vmm=tern cpus=$((1 + (i / 2) % 2))
    [ $((i % 2)) = 0 ] && vmm=qemu
    con=$WORK/console-$i.log
    t0=$(now_ms)
    start_boot_job "boot-$i" "$vmm" "$cpus" "$con"
    if wait_for_marker "$con" '^TERN-GUEST-INIT ' 90 "$VMM_PID"; then
        t=$(since_ms "$t0")
        if wait_exit "$VMM_PID" 60 && [ "$EXIT_RC" = 0 ]; then
            outcome=ok
        else
            outcome=badexit
            stop_pid "$VMM_PID"
        fi
    else
        t=$(since_ms "$t0")
        stop_pid "$VMM_PID"
        if grep -a -q -E "$CRASH_SIGNATURES" "$con" "$WORK/boot-$i.out"; then
            outcome=crash
        else
            outcome=stuck
        fi
        show_log "$con" 30
        show_log "$WORK/boot-$i.out" 10
    fi
    eval "${vmm}_$outcome=\$((${vmm}_$outcome + 1))"
    bench boot=$i vmm=$vmm cpus=$cpus outcome=$outcome ms=$t
    i=$((i + 1))
done
for vmm in tern qemu; do
    eval "bench summary=soak vmm=$vmm boots=$((n / 2)) ok=\$${vmm}_ok crash=\$${vmm}_crash stuck=\$${vmm}_stuck bad_exit=\$${vmm}_badexit"
done
pass
