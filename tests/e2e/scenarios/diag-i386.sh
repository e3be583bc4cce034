#!/bin/sh
# rig: timeout=900 needs=tern
# diagnostic (not committed): the non-PAE 686 kernel under QEMU and tern (npt=1).
. "$E2E_DIR/lib.sh"
need_kvm
I386=$GUEST/i386
con=$WORK/tern.con
start_vmm tern "$TERN" run --on-reboot exit --kernel "$I386/bzImage-686" --initrd "$I386/initramfs-686.cpio.gz" --cpus 2 \
    --cmdline "console=ttyS0 earlyprintk=serial,ttyS0 tern.job=none" --serial "file=$con"
wait_for_marker "$con" 'TERN-GUEST-INIT|Kernel panic' 200 "$VMM_PID"; step "tern 686: $MARKER_LINE"; show_log "$con" 30; show_log "$WORK/tern.out" 5
pass
