#!/bin/sh
# rig: timeout=300 needs=tern
# tern-smoke: tern boots the default test guest to its init marker and exits 0 when the
# guest powers off: once from the ELF vmlinux (PVH entry) with 1 vCPU, once from the
# bzImage (64-bit boot protocol) with 2 vCPUs, where the guest must report 2 CPUs online.
# Figures: time from starting tern to the guest's TERN-GUEST-INIT line, and to exit.
. "$E2E_DIR/lib.sh"
need_kvm
need_tern

boot() { # LABEL KERNEL CPUS
    label=$1 kernel=$2 cpus=$3
    con=$WORK/console-$label.log
    t0=$(now_ms)
    start_vmm "tern-$label" "$TERN" run --on-reboot exit --kernel "$kernel" --initrd "$GUEST/initramfs.cpio.gz" --cpus "$cpus" \
        --cmdline "console=ttyS0 tern.job=boot $GUEST_APPEND" --serial "file=$con"
    pid=$VMM_PID
    wait_for_marker "$con" '^TERN-GUEST-INIT ' 120 "$VMM_PID" || no_init "$label: no TERN-GUEST-INIT within 120 s or tern ended" "$con" "$WORK/tern-$label.out"
    t_init=$(since_ms "$t0")
    online=$(echo "$MARKER_LINE" | sed -n 's/.*cpus=\([0-9]*\).*/\1/p')
    [ "$online" = "$cpus" ] || fail "$label: guest reports $online CPUs online, expected $cpus" "$con"
    wait_exit "$pid" 60 || fail "$label: tern still running 60 s after the init marker" "$con" "$WORK/tern-$label.out"
    t_exit=$(since_ms "$t0")
    [ "$EXIT_RC" = 0 ] || fail "$label: tern exited with $EXIT_RC" "$con" "$WORK/tern-$label.out"
    grep -q '^TERN-GUEST-POWEROFF' "$con" || fail "$label: guest did not print TERN-GUEST-POWEROFF" "$con"
    grep -q 'guest powered off' "$WORK/tern-$label.out" || fail "$label: tern did not see the ACPI power-off" "$WORK/tern-$label.out"
    step "$label: init after ${t_init} ms with $online CPU(s), exit 0 after ${t_exit} ms"
    bench vmm=tern boot=$label cpus=$cpus time_to_init_ms=$t_init time_to_exit_ms=$t_exit
}

boot vmlinux-1cpu "$GUEST/vmlinux" 1
boot bzimage-2cpu "$GUEST/bzImage" 2
pass
