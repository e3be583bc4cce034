#!/bin/sh
# rig: timeout=900
# qemu-clones (on demand): the QEMU anchor for tern-clones' rare crash of a restore
# when 8 restore at once. The same guest (Debian's generic kernel, dirty job, 256 MiB,
# 8 MiB working set, one NIC on br0) runs under QEMU and is saved with
# `migrate file:PATH` (the guest is left paused); QEMU quits; then 8 QEMUs restore it at
# once with `-incoming file:PATH`, each on its own TAP on br0. Every
# restored guest must count on from the save and its counter must advance, as in
# tern-clones; a crash fails the run, so the tally of repeated runs gives QEMU's rate
# under the same concurrency (tests/rig/README.md, "Snapshots, restores and clones").
# Figures: time from the first restore to all 8 counting.
. "$E2E_DIR/lib.sh"
need_kvm
need_generic_guest
n=${CLONES:-8}
mem=256

# One TAP per QEMU (the source's is reused by clone 1), all on br0, removed at exit.
taps=
# (iproute2's tuntap on a host, busybox's tunctl in the rig's L1.)
cleanup_taps() { for t in $taps; do ip link del "$t" 2>/dev/null || tunctl -d "$t" >/dev/null 2>&1; done; }
trap cleanup_taps EXIT
for i in $(seq 0 "$n"); do
    t=qcl$i
    ip tuntap add dev "$t" mode tap 2>/dev/null || tunctl -t "$t" >/dev/null 2>&1 || fail "cannot create TAP $t"
    ip link set "$t" master br0 up || fail "cannot put $t on br0"
    taps="$taps $t"
done

# qemu_clone NAME TAP MAC PORT [ARGS...]: the generic-kernel guest under QEMU.
qemu_clone() {
    _l=$1 _tap=$2 _mac=$3 _port=$4
    shift 4
    start_vmm "$_l" "$QEMU" -accel kvm -cpu host -m "${mem}M" -smp 1 \
        -kernel "$G/bzImage" -initrd "$G/initramfs.cpio.gz" \
        -append "console=ttyS0 tern.job=dirty tern.dirty_mb=8 tern.dirty_report=2 $GUEST_APPEND" \
        -display none -nodefaults -no-reboot -serial "file:$WORK/$_l.log" \
        -netdev "tap,id=n0,ifname=$_tap,script=no,downscript=no" \
        -device "virtio-net-pci,netdev=n0,romfile=,mac=$_mac" \
        -monitor "tcp:127.0.0.1:$_port,server=on,wait=off" "$@"
}

qemu_clone src qcl0 52:54:00:12:40:00 5570
src=$VMM_PID
wait_for_marker "$WORK/src.log" '^TERN-DIRTY counter=' 180 "$src" || no_init "QEMU's generic-kernel guest is not counting" "$WORK/src.log" "$WORK/src.out"
sleep 2
t0=$(now_ms)
hmp 5570 "migrate -d file:$WORK/qemu.snap" >/dev/null
while :; do
    status=$(hmp 5570 "info migrate" | sed -n 's/.*Migration status: *\([a-z-]*\).*/\1/p' | head -n 1)
    case "$status" in completed | failed | cancelled) break ;; esac
    [ "$(since_ms "$t0")" -lt 180000 ] || fail "save still '$status' after 180 s" "$WORK/src.out"
    sleep 0.3
done
[ "$status" = completed ] || fail "QEMU's save $status" "$WORK/src.out"
c_snap=$(grep -a '^TERN-DIRTY counter=' "$WORK/src.log" | last_counter)
hmp 5570 quit >/dev/null
wait_exit "$src" 10 || stop_pid "$src"
step "saved: $(($(du -k "$WORK/qemu.snap" | cut -f1) / 1024)) MiB at counter ~$c_snap"

# The restores differ only in their TAP (the guest's MAC comes back from the saved state).
t0=$(now_ms)
pids=
for i in $(seq 1 "$n"); do
    qemu_clone "clone$i" "qcl$i" "52:54:00:12:40:$(printf %02x "$i")" $((5570 + i)) -incoming "file:$WORK/qemu.snap"
    pids="$pids $VMM_PID"
done
clones_counting "QEMU clone" "$c_snap" $pids
all_ms=$(since_ms "$t0")
step "all $n QEMU clones counting after $all_ms ms"
clones_advancing "QEMU clone" $pids
step "every QEMU clone's counter advances"
bench vmm=qemu clones=$n mem_mb=$mem all_running_ms=$all_ms
pass
