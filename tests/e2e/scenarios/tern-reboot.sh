#!/bin/sh
# rig: timeout=900 needs=tern
# tern-reboot: a guest reboot boots the guest again in the same tern process. The
# default guest's reboot job counts its boots on a raw scratch disk (/dev/vda) and
# reboots with `reboot -f` until boot N+1 (N = TERN_REBOOTS, default 1), which powers off. For each of Linux's
# reboot methods (reboot=acpi, kbd, pci, triple) and the kernel's default choice
# (2 vCPUs: the other vCPU is stopped first), tern must print one "guest rebooted"
# line per reboot naming the device that asked (or the triple fault), keep the same
# disk (the count on it reaches N+1) and exit 0 when the last boot powers off. Then
# with --on-reboot exit the first reboot ends tern with status 0.
# Figures: time from starting tern to its exit over the N+1 boots, per method.
. "$E2E_DIR/lib.sh"
need_kvm
need_tern
N=${TERN_REBOOTS:-1}

disk_count() { # IMAGE
    dd if="$1" bs=512 count=1 2>/dev/null | tr -d '\000' | head -n 1
}

reboots() { # METHOD CPUS EXPECTED_REASON
    m=$1 cpus=$2 reason=$3
    con=$WORK/console-$m.log out=$WORK/tern-$m.out img=$WORK/count-$m.img
    rm -f "$img" && truncate -s 1M "$img" || fail "$m: cannot make the scratch disk"
    arg=
    [ "$m" = default ] || arg="reboot=$m"
    t0=$(now_ms)
    start_vmm "tern-$m" "$TERN" run --kernel "$GUEST/vmlinux" --initrd "$GUEST/initramfs.cpio.gz" --cpus "$cpus" \
        --memory 512M --cmdline "console=ttyS0 quiet tern.job=reboot tern.reboots=$N $arg $GUEST_APPEND" \
        --disk "path=$img" --serial "file=$con"
    pid=$VMM_PID
    wait_for_marker "$con" '^TERN-GUEST-INIT ' 120 "$pid" || no_init "$m: no TERN-GUEST-INIT within 120 s or tern ended" "$con" "$out"
    wait_exit "$pid" $((120 * (N + 1))) || fail "$m: tern still running after $((N + 1)) boots' time" "$con" "$out"
    t_exit=$(since_ms "$t0")
    [ "$EXIT_RC" = 0 ] || fail "$m: tern exited with $EXIT_RC" "$con" "$out"
    boots=$(grep -a -c '^TERN-GUEST-BOOT ' "$con")
    [ "$boots" = $((N + 1)) ] || fail "$m: the guest counted $boots boots, expected $((N + 1))" "$con" "$out"
    i=1
    for n in $(sed -n 's/^TERN-GUEST-BOOT n=\([0-9]*\).*/\1/p' "$con"); do
        [ "$n" = $i ] || fail "$m: boot $i read count $n from the disk (the disk did not survive the reboot)" "$con"
        i=$((i + 1))
    done
    [ "$(disk_count "$img")" = $((N + 1)) ] || fail "$m: the scratch disk holds count $(disk_count "$img")" "$con"
    grep -a -q '^TERN-GUEST-POWEROFF' "$con" || fail "$m: the last boot did not power off" "$con" "$out"
    grep -q 'guest powered off' "$out" || fail "$m: tern did not see the power-off" "$out"
    lines=$(grep -c '^tern: guest rebooted (' "$out")
    [ "$lines" = $N ] || fail "$m: tern reported $lines reboots, expected $N" "$out"
    b=2
    while [ $b -le $((N + 1)) ]; do
        grep -q "booting again (boot $b)\$" "$out" || fail "$m: no reboot line for boot $b" "$out"
        b=$((b + 1))
    done
    grep '^tern: guest rebooted (' "$out" | grep -v -q -F "$reason" &&
        fail "$m: a reboot was not caused by the expected $reason" "$out"
    step "$m: $((N + 1)) boots, $N reboots by the $reason, exit 0 after ${t_exit} ms"
    bench vmm=tern reboot=$m cpus=$cpus boots=$((N + 1)) time_to_exit_ms=$t_exit
}

reboots acpi 1 "ACPI reset register"
reboots kbd 1 "i8042 keyboard controller"
reboots pci 1 "reset control register (port 0xCF9)"
reboots triple 1 "triple fault"
# Linux's own choice on tern's hardware-reduced ACPI machine: the EFI method, which
# falls back to the BIOS one, whose jump to the reset vector runs tern's stub there,
# which writes the ACPI reset register.
reboots default 2 "ACPI reset register"

# --on-reboot exit: the first reboot ends tern, status 0, the guest booted once.
con=$WORK/console-exit.log out=$WORK/tern-exit.out img=$WORK/count-exit.img
rm -f "$img" && truncate -s 1M "$img" || fail "exit: cannot make the scratch disk"
start_vmm tern-exit "$TERN" run --kernel "$GUEST/vmlinux" --initrd "$GUEST/initramfs.cpio.gz" --memory 512M \
    --cmdline "console=ttyS0 quiet tern.job=reboot tern.reboots=$N reboot=pci $GUEST_APPEND" \
    --disk "path=$img" --serial "file=$con" --on-reboot exit
pid=$VMM_PID
wait_for_marker "$con" '^TERN-GUEST-INIT ' 120 "$pid" || no_init "exit: no TERN-GUEST-INIT within 120 s or tern ended" "$con" "$out"
wait_exit "$pid" 120 || fail "exit: tern still running after the guest's reboot" "$con" "$out"
[ "$EXIT_RC" = 0 ] || fail "exit: tern exited with $EXIT_RC after a requested reset" "$con" "$out"
grep -a -q '^TERN-GUEST-REBOOT n=1 ' "$con" || fail "exit: the guest did not reboot" "$con"
[ "$(grep -a -c '^TERN-GUEST-BOOT ' "$con")" = 1 ] || fail "exit: the guest booted more than once" "$con" "$out"
grep -q 'exiting (--on-reboot exit)' "$out" || fail "exit: tern did not say why it ended" "$out"
grep -q 'guest rebooted' "$out" && fail "exit: tern booted the guest again" "$out"
step "--on-reboot exit: the first reboot ended tern with status 0"
pass
