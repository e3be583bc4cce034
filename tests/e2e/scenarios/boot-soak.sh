#!/bin/sh
# rig: timeout=1500 needs=tern
# boot-soak (rig-stability study, not in any suite): boots the default guest with tern
# SOAK_BOOTS times (default 15) in this L1, alternating --cpus 1 and 2, and counts how
# each boot ended: ok (init marker, then exit 0), crash (kernel panic/oops/triple fault
# before init), stuck (no marker in time), or bad-exit. Prints one TERN-BENCH line per
# boot and a tally; passes whatever the tally (it measures the rig, not tern), so run
# it with --retries 0.
. "$E2E_DIR/lib.sh"
need_kvm
need_tern
n=${SOAK_BOOTS:-15}
ok=0 crash=0 stuck=0 badexit=0
i=1
while [ $i -le "$n" ]; do
    cpus=$((1 + i % 2))
    con=$WORK/console-$i.log
    t0=$(now_ms)
    start_vmm "boot-$i" "$TERN" run --kernel "$GUEST/vmlinux" --initrd "$GUEST/initramfs.cpio.gz" \
        --cpus $cpus --memory 512M --cmdline "console=ttyS0 tern.job=boot $GUEST_APPEND" --serial "file=$con"
    # Wait for the marker, or for tern to end first (a crashed guest ends it).
    deadline=$((t0 + 90000))
    until grep -a -q '^TERN-GUEST-INIT ' "$con" 2>/dev/null || ! alive "$VMM_PID" || [ "$(now_ms)" -ge $deadline ]; do
        sleep 0.1
    done
    if grep -a -q '^TERN-GUEST-INIT ' "$con" 2>/dev/null; then
        t=$(since_ms "$t0")
        if wait_exit "$VMM_PID" 60 && [ "$EXIT_RC" = 0 ]; then
            outcome=ok ok=$((ok + 1))
        else
            outcome=bad-exit badexit=$((badexit + 1))
            stop_pid "$VMM_PID"
        fi
    else
        t=$(since_ms "$t0")
        stop_pid "$VMM_PID"
        if grep -a -q -E 'Kernel panic|BUG: unable to handle|Oops|triple fault|general protection fault' "$con" "$WORK/boot-$i.out"; then
            outcome=crash crash=$((crash + 1))
        else
            outcome=stuck stuck=$((stuck + 1))
        fi
        show_log "$con" 30
        show_log "$WORK/boot-$i.out" 10
    fi
    bench boot=$i cpus=$cpus outcome=$outcome ms=$t
    i=$((i + 1))
done
bench summary=soak boots=$n ok=$ok crash=$crash stuck=$stuck bad_exit=$badexit
pass
