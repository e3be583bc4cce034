#!/bin/sh
# rig: timeout=900 needs=tern
# blk-bench (benchmark, never fails on a figure): inside the guest, tern-io measures
# sequential write and read (1 MiB direct I/O) and 4 KiB random-read IOPS (direct I/O,
# one in flight) on a raw 512 MiB image attached as virtio-blk: tern, then QEMU
# virtio-blk-pci on the same kind of image (host page cache like tern: cache=writeback,
# aio=threads; the image lives on L1's tmpfs, which has no O_DIRECT), alternating
# BLK_BENCH_ROUNDS times (default 2); tern also with --seccomp off (vmm=tern-seccomp-off),
# for what its confinement costs.
# Prints TERN-BENCH vmm= test= result= unit= per figure.
. "$E2E_DIR/lib.sh"
need_kvm
need_tern
[ -x "$QEMU" ] || fail "no QEMU at '$QEMU'"
mb=${BLK_BENCH_MB:-256}
secs=${BLK_BENCH_SECONDS:-10}
append="console=ttyS0 tern.job=iobench tern.disk=/dev/vda tern.io_mb=$mb tern.io_secs=$secs $GUEST_APPEND"
round=0
while [ $round -lt "${BLK_BENCH_ROUNDS:-2}" ]; do
    round=$((round + 1))
    for vmm in tern tern-seccomp-off qemu; do
        img=$WORK/bench-$vmm.img
        rm -f "$img"; truncate -s 512M "$img"
        con=$WORK/console-$vmm-$round.log
        if [ $vmm != qemu ]; then
            seccomp=on; [ $vmm = tern-seccomp-off ] && seccomp=off
            start_vmm $vmm "$TERN" run --on-reboot exit --kernel "$GUEST/vmlinux" --initrd "$GUEST/initramfs.cpio.gz" --memory 512M \
                --cmdline "$append" --disk "path=$img" --serial "file=$con" --seccomp $seccomp
        else
            start_vmm $vmm "$QEMU" -accel kvm -cpu host -m 512M -smp 1 -kernel "$GUEST/vmlinux" \
                -initrd "$GUEST/initramfs.cpio.gz" -append "$append" -display none -nodefaults -no-reboot \
                -serial "file:$con" -drive "file=$img,if=none,id=d0,format=raw,cache=writeback,aio=threads" \
                -device virtio-blk-pci,drive=d0
        fi
        if ! wait_exit "$VMM_PID" $((secs + 300)); then
            head -n 400 "$con" | grep -a -m 1 -B 30 -A 10 -E 'BUG|Oops|panic|general protection|double fault' >"$WORK/first-oops.log"
            fail "$vmm: iobench guest did not finish" "$WORK/first-oops.log" "$WORK/$vmm.out"
        fi
        [ "$EXIT_RC" = 0 ] || fail "$vmm exited with $EXIT_RC" "$WORK/$vmm.out" "$con"
        grep -q '^TERN-IO error' "$con" && fail "$vmm: $(grep '^TERN-IO error' "$con")" "$con"
        grep -q '^TERN-IO test=randread' "$con" || fail "$vmm: no figures from the guest" "$con" "$WORK/$vmm.out"
        grep -a '^TERN-IO test=' "$con" | while read -r _ t r u; do bench vmm=$vmm round=$round $t $r $u; done
        rm -f "$img"
    done
done
pass
