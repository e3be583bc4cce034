#!/bin/sh
# rig: timeout=7200 needs=tern,distro
# tern-distro-boot (on demand, not in the CI suite: building the images takes ~12 min
# and each boots twice per VMM): tern boots real Debian disk images
# (resources/distro/build.sh) from the disk alone: no --kernel, tern reads the image's
# grub.cfg and loads its kernel and initrd. In the rig the images are on L1's /distro
# (rig.py attaches them writable over a throwaway overlay; TERN_DISTRO_IMAGES on the host
# picks which); on a host, in target/distro (each booted from a fresh sparse copy).
# For each image:
#   tern run --disk path=IMG --memory 1G --cpus 2 --net tap=TAP --serial file=CON
#            --cmdline-append 'tern.reboots=1 tern.hold=15'
# systemd must report TERN-DISTRO-BOOT n=1 with failed_units=0 (the image's boot counter
# writes it after `systemctl is-system-running --wait`), L1 pings the guest at 10.0.2.15
# while it holds (tern.hold=15 s), the guest reboots itself (tern.reboots=1), reports n=2
# and powers off; tern exits 0.
# First, for comparison, QEMU boots the same image with the kernel and initrd read out of
# it (debugfs at the partition offset, IMG.txt) by direct kernel boot, same markers, with
# -snapshot (the image stays as built for tern).
# Figures (bench, per image and VMM): ms from start to n=1, to n=2, to exit (tern also:
# boot_read_ms, the time to read the boot configuration, kernel and initrd); the times to
# n=2 and to exit include the two 15 s holds (the same for both VMMs); reboot_ms is a
# reboot's time: from n=1 to n=2 less the hold (shutdown, the reset, the second boot).
# A Debian systemd boot under the nested rig's TCG takes minutes (a loaded machine: more
# than 250 s to reach userspace), so each marker gets 15 minutes.
# Then the first image boots once more under a name and is shut down gracefully by
# `tern shutdown` (the ACPI power button; systemd-logind powers off): the console must
# show systemd stopping units and reaching the power-off target, and tern exit 0.
# Env: DISTRO_DIR (default /distro, else $GUEST/../distro), DISTRO_IMAGES (names without
# .img; default every *.img there), DISTRO_QEMU=0 to skip the QEMU comparison.
. "$E2E_DIR/lib.sh"
need_kvm
need_tern
for t in debugfs ping; do command -v $t >/dev/null || fail "missing tool in L1: $t"; done
dir=${DISTRO_DIR:-/distro}
[ -d "$dir" ] || dir=$GUEST/../distro
[ -d "$dir" ] || fail "no distro images in $dir: build them with resources/distro/build.sh (and ship target/distro in rig.py's payload)"
set -- $TAPS
tap=$1
ip=10.0.2.15
hold=15
images=${DISTRO_IMAGES:-$(cd "$dir" && ls *.img 2>/dev/null | sed 's/\.img$//')}
[ -n "$images" ] || fail "no *.img in $dir"

# fresh_copy NAME: sets IMG to a writable image as built (the guest writes its boot
# count): in the rig /distro's own (an overlay thrown away with L1), else a private
# sparse copy.
fresh_copy() {
    if [ "$RIG_MODE" = nested ]; then
        IMG=$dir/$1.img
        return
    fi
    IMG=$WORK/$1.img
    rm -f "$WORK/$1.img"
    if ! cp --sparse=always "$dir/$1.img" "$WORK/$1.img" 2>/dev/null; then
        dd if="$dir/$1.img" of="$WORK/$1.img" bs=1M conv=sparse 2>/dev/null ||
            cp "$dir/$1.img" "$WORK/$1.img" || fail "cannot copy $1.img to WORK"
    fi
}

# boot_markers VMM LABEL CON PID T0: n=1 (failed_units=0), ping, n=2, exit 0; sets
# t1 t2 t_exit (ms since T0).
boot_markers() {
    _vmm=$1 _label=$2 _con=$3 _pid=$4 _t0=$5 _out=$WORK/$2.out
    wait_for_marker "$_con" 'TERN-DISTRO-BOOT n=1 ' 900 "$_pid" || fail "$_label: no TERN-DISTRO-BOOT n=1" "$_con" "$_out"
    t1=$(since_ms "$_t0")
    echo "$MARKER_LINE" | grep -q ' failed_units=0' || fail "$_label: units failed on the first boot: $MARKER_LINE" "$_con"
    # The guest holds $hold s after n=1 before it reboots: ping within that window.
    _until=$(($(now_ms) + (hold - 3) * 1000))
    until ping -c 1 -W 1 $ip >"$WORK/$_label-ping.out" 2>&1; do
        sleep 0.3
        [ "$(now_ms)" -lt $_until ] || fail "$_label: L1 cannot ping the guest at $ip" "$_con" "$WORK/$_label-ping.out"
    done
    step "$_label: n=1 after ${t1} ms, answers ping"
    wait_for_marker "$_con" 'TERN-DISTRO-BOOT n=2 ' 900 "$_pid" || fail "$_label: no TERN-DISTRO-BOOT n=2 after the reboot" "$_con" "$_out"
    t2=$(since_ms "$_t0")
    echo "$MARKER_LINE" | grep -q ' failed_units=0' || fail "$_label: units failed after the reboot: $MARKER_LINE" "$_con"
    wait_exit "$_pid" 120 || fail "$_label: $_vmm did not exit after the guest's poweroff" "$_con" "$_out"
    t_exit=$(since_ms "$_t0")
    [ "$EXIT_RC" = 0 ] || fail "$_label: $_vmm exited with $EXIT_RC" "$_con" "$_out"
    step "$_label: n=2 after ${t2} ms, exit 0 after ${t_exit} ms"
}

for name in $images; do
    [ -f "$dir/$name.img" ] || fail "no image $dir/$name.img"
    [ -f "$dir/$name.img.txt" ] || fail "no $name.img.txt beside the image (build.sh writes it)"
    release=${name%%-*}

    # 1. QEMU: direct kernel boot of the kernel and initrd read out of the same image.
    if [ "${DISTRO_QEMU:-1}" = 1 ]; then
    [ -n "$QEMU" ] || fail "QEMU not set"
    eval "$(grep -E '^(KERNEL_RELEASE|ROOT_UUID|BOOT_OFFSET|BOOT_PREFIX)=' "$dir/$name.img.txt")"
    for f in vmlinuz initrd.img; do
        rm -f "$WORK/$name.$f"
        debugfs -R "dump $BOOT_PREFIX/$f-$KERNEL_RELEASE $WORK/$name.$f" "$dir/$name.img?offset=$BOOT_OFFSET" >"$WORK/$name-debugfs.out" 2>&1
        [ -s "$WORK/$name.$f" ] || fail "$name: cannot read $BOOT_PREFIX/$f-$KERNEL_RELEASE out of the image" "$WORK/$name-debugfs.out"
    done
    con=$WORK/$name-qemu.console
    t0=$(now_ms)
    # No -no-reboot: the guest's own reboot must restart it (-kernel again), like tern.
    # -snapshot keeps its overlay in TMPDIR: WORK, not a directory L1 may lack.
    start_vmm "$name-qemu" env TMPDIR="$WORK" "$QEMU" -accel kvm -cpu host -m 1G -smp 2 \
        -kernel "$WORK/$name.vmlinuz" -initrd "$WORK/$name.initrd.img" \
        -append "root=UUID=$ROOT_UUID ro quiet console=ttyS0 tern.reboots=1 tern.hold=$hold $GUEST_APPEND" \
        -display none -nodefaults -serial "file:$con" \
        -drive "file=$dir/$name.img,if=none,id=root,format=raw,snapshot=on" -device virtio-blk-pci,drive=root \
        -netdev "tap,id=n0,ifname=$tap,script=no,downscript=no" -device virtio-net-pci,netdev=n0,romfile=
    boot_markers qemu "$name-qemu" "$con" "$VMM_PID" "$t0"
    bench vmm=qemu image=$name time_to_boot1_ms=$t1 time_to_boot2_ms=$t2 time_to_exit_ms=$t_exit reboot_ms=$((t2 - t1 - hold * 1000))
    rm -f "$WORK/$name.vmlinuz" "$WORK/$name.initrd.img"
    fi

    # 2. tern: disk boot through the image's grub.cfg.
    fresh_copy "$name"
    con=$WORK/$name-tern.console
    t0=$(now_ms)
    start_vmm "$name-tern" "$TERN" -v run --disk "path=$IMG" --memory 1G --cpus 2 \
        --net "tap=$tap" --serial "file=$con" --cmdline-append "tern.reboots=1 tern.hold=$hold $GUEST_APPEND"
    boot_markers tern "$name-tern" "$con" "$VMM_PID" "$t0"
    grep -a -q "TERN-DISTRO-BOOT n=1 release=$release " "$con" || fail "$name: the guest says another release" "$con"
    # -v logs what each boot read out of the image and how long that took.
    read_ms=$(sed -n 's/.*booting from the disk.s boot configuration.* read_ms=\([0-9]*\).*/\1/p; s/.* read_ms=\([0-9]*\) .*booting from the disk.*/\1/p' "$WORK/$name-tern.out" | head -n 1)
    bench vmm=tern image=$name time_to_boot1_ms=$t1 time_to_boot2_ms=$t2 time_to_exit_ms=$t_exit reboot_ms=$((t2 - t1 - hold * 1000)) boot_read_ms=${read_ms:-unknown}

    [ "$RIG_MODE" = nested ] || rm -f "$IMG"
done

# 3. A graceful shutdown of the first image through the ACPI power button: `tern
#    shutdown` presses it, systemd-logind sees the key and powers the system off,
#    systemd stopping its units (systemd.show_status=1: they show on the console).
name=${images%% *}
fresh_copy "$name"
con=$WORK/$name-button.console
start_vmm "$name-button" "$TERN" run --name distro-button --disk "path=$IMG" --memory 1G --cpus 2 \
    --serial "file=$con" --cmdline-append "systemd.show_status=1 $GUEST_APPEND"
pid=$VMM_PID
wait_for_marker "$con" 'TERN-DISTRO-BOOT n=[0-9]+ ' 900 "$pid" || fail "$name: no TERN-DISTRO-BOOT for the power-button boot" "$con" "$WORK/$name-button.out"
sleep 5
t0=$(now_ms)
"$TERN" shutdown distro-button --timeout 300 >"$WORK/button.out" 2>&1 ||
    fail "$name: tern shutdown (the power button) did not power the systemd guest off" "$WORK/button.out" "$con"
shutdown_ms=$(since_ms "$t0")
wait_exit "$pid" 60 || fail "$name: tern still runs after the guest powered off" "$WORK/$name-button.out"
[ "$EXIT_RC" = 0 ] || fail "$name: tern exited with $EXIT_RC after the power button" "$WORK/$name-button.out"
grep -a -q 'System Power Off' "$con" || fail "$name: the console shows no systemd power-off" "$con"
stopped=$(grep -a -c 'Stopped ' "$con")
[ "$stopped" -gt 0 ] || fail "$name: systemd stopped no unit on the way down" "$con"
step "$name: power button -> systemd power-off in $shutdown_ms ms ($stopped units stopped), tern exit 0"
bench vmm=tern image=$name button_shutdown_ms=$shutdown_ms units_stopped=$stopped
pass
