#!/bin/sh
# rig: timeout=240
# qemu-smoke: QEMU (the comparison anchor) boots the default test guest under KVM to its
# init marker, and the guest powers itself off (QEMU exits 0).
# Figures: time from starting QEMU to the guest's TERN-GUEST-INIT line (host wall, ms),
# to QEMU's exit, and the guest kernel's own uptime at the marker.
. "$E2E_DIR/lib.sh"
need_kvm
[ -x "$QEMU" ] || fail "no QEMU at '$QEMU'"

con=$WORK/console.log
t0=$(now_ms)
start_vmm qemu "$QEMU" -accel kvm -cpu host -m 512M -smp 1 \
    -kernel "$GUEST/vmlinux" -initrd "$GUEST/initramfs.cpio.gz" \
    -append "console=ttyS0 tern.job=boot $GUEST_APPEND" \
    -display none -nodefaults -no-reboot -serial "file:$con"
pid=$VMM_PID
wait_for_marker "$con" '^TERN-GUEST-INIT ' 120 || rig_fault "QEMU's guest did not reach init within 120 s" "$con" "$WORK/qemu.out"
t_init=$(since_ms "$t0")
uptime=$(echo "$MARKER_LINE" | sed -n 's/.*uptime=\([0-9.]*\).*/\1/p')
step "guest init after ${t_init} ms (guest uptime ${uptime} s)"
wait_exit "$pid" 60 || fail "QEMU still running 60 s after the init marker" "$con" "$WORK/qemu.out"
t_exit=$(since_ms "$t0")
[ "$EXIT_RC" = 0 ] || fail "QEMU exited with $EXIT_RC" "$con" "$WORK/qemu.out"
grep -q '^TERN-GUEST-POWEROFF' "$con" || fail "guest did not print TERN-GUEST-POWEROFF" "$con"
bench vmm=qemu time_to_init_ms=$t_init time_to_exit_ms=$t_exit guest_uptime_at_init_s=$uptime
pass
