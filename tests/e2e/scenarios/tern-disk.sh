#!/bin/sh
# rig: timeout=400 needs=tern
# tern-disk: tern boots the test guest with its root on virtio-blk (rootfs.ext4 as
# /dev/vda, root=/dev/vda). The guest writes 64 MiB of known data to a file on that ext4
# root, syncs, reads it back and checks the sum, and powers off. After tern exits, L1
# replays the journal on the image copy and reads the file out with debugfs: its sum
# must match. Then a second boot attaches a disk with readonly=on and the guest's write
# to it must fail, leaving the image untouched.
. "$E2E_DIR/lib.sh"
need_kvm
need_tern
for t in debugfs e2fsck md5sum; do command -v $t >/dev/null || fail "missing tool in L1: $t"; done
mb=64
cp "$GUEST/rootfs.ext4" "$WORK/rootfs.ext4" || fail "cannot copy rootfs.ext4 to WORK"

# 1. root on virtio-blk, 64 MiB file written, verified in the guest and from the image.
con=$WORK/console.log
t0=$(now_ms)
start_vmm tern "$TERN" run --on-reboot exit --kernel "$GUEST/vmlinux" --initrd "$GUEST/initramfs.cpio.gz" --memory 512M \
    --cmdline "console=ttyS0 root=/dev/vda init=/init tern.job=disk tern.disk=file:/data/pattern.bin tern.disk_mb=$mb $GUEST_APPEND" \
    --disk "path=$WORK/rootfs.ext4,serial=tern-root" --serial "file=$con"
pid=$VMM_PID
wait_for_marker "$con" '^TERN-GUEST-INIT .*root=/dev/vda' 120 "$VMM_PID" || no_init "no TERN-GUEST-INIT from the ext4 root on /dev/vda" "$con" "$WORK/tern.out"
t_init=$(since_ms "$t0")
wait_exit "$pid" 240 || fail "disk job did not finish" "$con" "$WORK/tern.out"
t_exit=$(since_ms "$t0")
[ "$EXIT_RC" = 0 ] || fail "tern exited with $EXIT_RC" "$con" "$WORK/tern.out"
grep -q '^TERN-DISK verify ok' "$con" || fail "guest disk verify did not pass" "$con"
wsum=$(sed -n 's/^TERN-DISK written sum=\([0-9a-f]*\).*/\1/p' "$con")
expect=$(tern-pattern disk $mb | md5sum | cut -d' ' -f1)
[ "$wsum" = "$expect" ] || fail "guest wrote sum $wsum, expected pattern sum $expect" "$con"
# The guest powered off without unmounting: replay the journal, then read the file.
e2fsck -fy "$WORK/rootfs.ext4" >"$WORK/fsck.out" 2>&1
fsck_rc=$?
[ $fsck_rc -le 1 ] || fail "e2fsck found errors in the image (rc $fsck_rc)" "$WORK/fsck.out"
debugfs -R "dump /data/pattern.bin $WORK/pattern.out" "$WORK/rootfs.ext4" >"$WORK/debugfs.out" 2>&1
got=$(md5sum <"$WORK/pattern.out" | cut -d' ' -f1)
[ "$got" = "$expect" ] || fail "file read out of the image has sum $got, expected $expect" "$WORK/debugfs.out"
step "64 MiB file verified in the guest and in the image ($got)"

# 2. a read-only disk refuses the guest's writes and stays unchanged.
truncate -s 128M "$WORK/ro.img"
before=$(md5sum <"$WORK/ro.img" | cut -d' ' -f1)
con2=$WORK/console-ro.log
start_vmm tern-ro "$TERN" run --on-reboot exit --kernel "$GUEST/vmlinux" --initrd "$GUEST/initramfs.cpio.gz" --memory 512M \
    --cmdline "console=ttyS0 tern.job=disk tern.disk=/dev/vda tern.disk_mb=8 $GUEST_APPEND" \
    --disk "path=$WORK/ro.img,readonly=on" --serial "file=$con2"
wait_exit "$VMM_PID" 180 || fail "read-only disk job did not finish" "$con2" "$WORK/tern-ro.out"
grep -a -q '^TERN-GUEST-INIT' "$con2" || no_init "read-only disk guest did not reach init" "$con2" "$WORK/tern-ro.out"
[ "$EXIT_RC" = 0 ] || fail "tern (read-only disk) exited with $EXIT_RC" "$con2" "$WORK/tern-ro.out"
grep -q '^TERN-DISK error write to /dev/vda failed' "$con2" || fail "the guest's write to the read-only disk did not fail" "$con2"
after=$(md5sum <"$WORK/ro.img" | cut -d' ' -f1)
[ "$before" = "$after" ] || fail "read-only image changed"
step "read-only disk refused the write"
bench vmm=tern time_to_init_ms=$t_init time_to_exit_ms=$t_exit disk_mb=$mb
pass
