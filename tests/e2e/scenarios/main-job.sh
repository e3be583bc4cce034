#!/bin/sh
# rig: timeout=400 needs=tern
# main-job: what the README's first command shows. tern boots the default guest (2 vCPUs,
# 512 MiB, root on virtio-blk) and the guest runs its disk job (64 MiB written, synced,
# read back and checked), then powers off; the guest console is shown.
. "$E2E_DIR/lib.sh"
need_kvm
need_tern
cp "$GUEST/rootfs.ext4" "$WORK/rootfs.ext4" || fail "cannot copy rootfs.ext4 to WORK"
con=$WORK/console.log
t0=$(now_ms)
step "tern run --kernel vmlinux --initrd initramfs.cpio.gz --cpus 2 --memory 512M --disk path=rootfs.ext4"
start_vmm tern "$TERN" run --kernel "$GUEST/vmlinux" --initrd "$GUEST/initramfs.cpio.gz" --cpus 2 --memory 512M \
    --cmdline "console=ttyS0 root=/dev/vda init=/init tern.job=disk tern.disk=file:/data/pattern.bin $GUEST_APPEND" \
    --disk "path=$WORK/rootfs.ext4" --serial "file=$con"
wait_for_marker "$con" '^TERN-GUEST-INIT ' 120 || fail "the guest did not reach init" "$con" "$WORK/tern.out"
step "guest init after $(since_ms "$t0") ms: $MARKER_LINE"
wait_exit "$VMM_PID" 240 || fail "the guest job did not finish" "$con" "$WORK/tern.out"
[ "$EXIT_RC" = 0 ] || fail "tern exited with $EXIT_RC" "$con" "$WORK/tern.out"
step "guest console (markers):"
grep '^TERN-' "$con" | sed 's/^/    /'
grep -q '^TERN-DISK verify ok' "$con" || fail "guest disk job failed" "$con"
step "tern exited 0 after $(since_ms "$t0") ms"
pass
