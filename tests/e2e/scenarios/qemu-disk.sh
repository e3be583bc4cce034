#!/bin/sh
# rig: timeout=300
# qemu-disk: the block anchor. QEMU boots the test guest from rootfs.ext4 (virtio-blk,
# root=/dev/vda, through the initramfs) with a second virtio-blk disk; the guest writes
# 64 MiB of known data to /dev/vdb, syncs, reads it back. L1 then checks the bytes in the
# backing file itself.
# Figures: time to init, disk job time.
. "$E2E_DIR/lib.sh"
need_kvm
mb=64
cp "$GUEST/rootfs.ext4" "$WORK/rootfs.ext4" || fail "cannot copy rootfs.ext4 to WORK"
truncate -s 128M "$WORK/vdb.img" 2>/dev/null || dd if=/dev/zero of="$WORK/vdb.img" bs=1M count=0 seek=128 2>/dev/null
con=$WORK/console.log
t0=$(now_ms)
start_vmm qemu "$QEMU" -accel kvm -cpu host -m 512M -smp 1 \
    -kernel "$GUEST/vmlinux" -initrd "$GUEST/initramfs.cpio.gz" \
    -append "console=ttyS0 root=/dev/vda init=/init tern.job=disk tern.disk=/dev/vdb tern.disk_mb=$mb $GUEST_APPEND" \
    -display none -nodefaults -no-reboot -serial "file:$con" \
    -drive "file=$WORK/rootfs.ext4,if=none,id=root,format=raw" -device virtio-blk-pci,drive=root \
    -drive "file=$WORK/vdb.img,if=none,id=data,format=raw" -device virtio-blk-pci,drive=data
pid=$VMM_PID
wait_for_marker "$con" '^TERN-GUEST-INIT .*root=/dev/vda' 120 || rig_fault "QEMU's guest did not reach init from the ext4 root" "$con" "$WORK/qemu.out"
t_init=$(since_ms "$t0")
wait_exit "$pid" 240 || fail "disk job did not finish" "$con"
t_exit=$(since_ms "$t0")
[ "$EXIT_RC" = 0 ] || fail "QEMU exited with $EXIT_RC" "$con" "$WORK/qemu.out"
# QEMU's own guest stopping after init without a verdict (a guest reset ends QEMU
# under -no-reboot with status 0) is the rig's, like the other anchors' guests that
# stop answering; a verdict other than ok is a failure.
grep -q '^TERN-DISK verify ' "$con" || rig_fault "QEMU's guest stopped before its disk verdict" "$con" "$WORK/qemu.out"
grep -q '^TERN-DISK verify ok' "$con" || fail "guest disk verify did not pass" "$con"
wsum=$(sed -n 's/^TERN-DISK written sum=\([0-9a-f]*\).*/\1/p' "$con")
expect=$(tern-pattern disk $mb | md5sum | cut -d' ' -f1)
got=$(dd if="$WORK/vdb.img" bs=1M count=$mb 2>/dev/null | md5sum | cut -d' ' -f1)
[ "$wsum" = "$expect" ] || fail "guest wrote sum $wsum, expected pattern sum $expect" "$con"
[ "$got" = "$expect" ] || fail "backing file holds sum $got, expected $expect" "$con"
bench vmm=qemu time_to_init_ms=$t_init time_to_exit_ms=$t_exit disk_mb=$mb
pass
