#!/bin/sh
# rig: timeout=900 needs=tern
# tern-snapshot: a running guest is snapshotted and keeps running; later, with the source
# gone, the snapshot is restored and the guest goes on from the snapshot's instant.
# The guest runs the dirty job (64 MiB working set rewritten all the time, a counter)
# with a virtio-blk data disk and virtio-net; consoles are FIFOs (commands typed in).
#   1. The guest writes 8 MiB of known data to its disk; `tern snapshot --to DIR`
#      writes memory, state and a copy of the disk; the guest keeps counting.
#   2. The source runs on (its counter moves past the snapshot's), then powers off, and
#      L1 zeroes the data written to the source's disk image.
#   3. `tern restore --from DIR` (new disk copy, the other TAP): the guest's first count
#      is from the snapshot's instant (not the source's later one), its working set
#      verifies, the disk reads back the data of the snapshot instant (from the
#      snapshot's copy: the source's image was zeroed), and it answers pings.
#   4. The restored guest is snapshotted again with --stop: tern exits 0.
# Figures: snapshot total ms, guest paused ms, size on disk MiB (guest RAM 512 MiB), time
# from `tern restore` to running (tern's own line) and to the guest's first console
# line, and a cold boot of the same guest to its first dirty-job line for comparison.
. "$E2E_DIR/lib.sh"
need_kvm
need_tern
mem=512
ip=10.0.2.15
set -- $TAPS
tap_src=$1 tap_dst=$2
args="console=ttyS0 tern.job=dirty tern.ip=$ip/24 tern.dirty_mb=64 tern.dirty_report=2 $GUEST_APPEND"
truncate -s 64M "$WORK/data.img"
counter() { sed -n 's/.*counter=\([0-9]*\).*/\1/p' | tail -n 1; }

mkfifo "$WORK/src.in" "$WORK/dst.in"
t_cold=$(now_ms)
"$TERN" run --on-reboot exit --kernel "$GUEST/vmlinux" --initrd "$GUEST/initramfs.cpio.gz" --memory "${mem}M" \
    --cmdline "$args" --serial stdio --api-socket "$WORK/src.sock" \
    --disk "path=$WORK/data.img" --net "tap=$tap_src,mac=52:54:00:12:34:56" <"$WORK/src.in" >"$WORK/src.log" 2>"$WORK/src.out" &
src=$!
_lib_pids="$_lib_pids $src"
exec 5>"$WORK/src.in"
wait_for_marker "$WORK/src.log" '^TERN-DIRTY counter=' 180 || no_init "source guest not counting" "$WORK/src.log" "$WORK/src.out"
cold_ms=$(since_ms "$t_cold")
echo diskwrite >&5
wait_for_marker "$WORK/src.log" '^TERN-DISK ' 60 || fail "no answer to diskwrite" "$WORK/src.log"
echo "$MARKER_LINE" | grep -q 'written' || fail "guest could not write its disk: $MARKER_LINE" "$WORK/src.log"
echo status >&5
wait_for_marker "$WORK/src.log" '^TERN-DIRTY status counter=' 30 || fail "no status from the source guest" "$WORK/src.log"
c0=$(echo "$MARKER_LINE" | counter)

# 1. Snapshot while it runs.
t0=$(now_ms)
"$TERN" snapshot --api-socket "$WORK/src.sock" --to "$WORK/snap" >"$WORK/snapshot.out" 2>"$WORK/snapshot.err" ||
    fail "tern snapshot failed" "$WORK/snapshot.err" "$WORK/src.out"
snap_wall=$(since_ms "$t0")
step "$(cat "$WORK/snapshot.out" | tr '\n' ' ' | tr -s ' ')"
alive "$src" || fail "the source ended after the snapshot" "$WORK/src.out"
snap_total=$(sed -n 's/.*time *total \([0-9.]*\) ms.*/\1/p' "$WORK/snapshot.out")
snap_paused=$(sed -n 's/.*guest paused *\([0-9.]*\) ms.*/\1/p' "$WORK/snapshot.out")
snap_mib=$(sed -n 's/.*size on disk *\([0-9.]*\) MiB.*/\1/p' "$WORK/snapshot.out")
[ -n "$snap_total" ] && [ -n "$snap_mib" ] || fail "cannot read the snapshot summary" "$WORK/snapshot.out"
echo status >&5
wait_for_marker "$WORK/src.log" "^TERN-DIRTY status counter=" 30 || fail "no status after the snapshot" "$WORK/src.log"
c_snap=$(grep -a '^TERN-DIRTY status counter=' "$WORK/src.log" | counter)
# 2. The source counts on well past the snapshot, then goes away.
n=0
while :; do
    echo status >&5
    sleep 2
    c_src=$(grep -a '^TERN-DIRTY status counter=' "$WORK/src.log" | counter)
    [ "${c_src:-0}" -ge $((c_snap + 3)) ] && break
    n=$((n + 1))
    [ $n -lt 30 ] || fail "source guest not counting after the snapshot ($c_snap -> $c_src in 60 s)" "$WORK/src.log" "$WORK/src.out"
done
step "snapshot taken at counter ~$c_snap; the source counted on to $c_src"
echo poweroff >&5
wait_exit "$src" 60 || fail "source did not power off" "$WORK/src.log" "$WORK/src.out"
[ "$EXIT_RC" = 0 ] || fail "source exited with $EXIT_RC" "$WORK/src.out"
dd if=/dev/zero of="$WORK/data.img" bs=1M count=8 conv=notrunc 2>/dev/null || fail "cannot zero the source's disk"

# 3. Restore, the source gone.
t0=$(now_ms)
"$TERN" restore --from "$WORK/snap" --disk "path=$WORK/restored.img" --net "tap=$tap_dst" --serial stdio \
    --api-socket "$WORK/dst.sock" <"$WORK/dst.in" >"$WORK/dst.log" 2>"$WORK/dst.out" &
dst=$!
_lib_pids="$_lib_pids $dst"
exec 6>"$WORK/dst.in"
wait_for_marker "$WORK/dst.out" 'guest restored from' 60 "$dst" || fail "tern restore did not start the guest" "$WORK/dst.out"
restore_ms=$(echo "$MARKER_LINE" | sed -n 's/.*running after \([0-9]*\) ms.*/\1/p')
wait_for_marker "$WORK/dst.log" '^TERN-DIRTY counter=' 60 "$dst" || fail "the restored guest does not count" "$WORK/dst.log" "$WORK/dst.out"
first_line_ms=$(since_ms "$t0")
c_r=$(echo "$MARKER_LINE" | counter)
[ "$c_r" -ge "$c0" ] || fail "the restored guest's first count $c_r is before the snapshot ($c0)" "$WORK/dst.log"
[ "$c_r" -lt "$c_src" ] || fail "the restored guest's first count $c_r is the source's later state ($c_src), not the snapshot's" "$WORK/dst.log"
step "restored: running after $restore_ms ms (tern), first guest line after $first_line_ms ms, counter $c_r (snapshot ~$c_snap, source ended at $c_src)"
echo diskverify >&6
wait_for_marker "$WORK/dst.log" '^TERN-DISK verify' 60 "$dst" || fail "no diskverify answer" "$WORK/dst.log"
echo "$MARKER_LINE" | grep -q 'verify ok' || fail "the disk does not hold the snapshot instant's data: $MARKER_LINE" "$WORK/dst.log"
echo verify >&6
wait_for_marker "$WORK/dst.log" '^TERN-DIRTY verify ' 180 "$dst" || fail "no verify answer from the restored guest" "$WORK/dst.log" "$WORK/dst.out"
echo "$MARKER_LINE" | grep -q 'verify ok' || fail "working set did not verify after the restore: $MARKER_LINE" "$WORK/dst.log"
i=0
until ping -c 1 -W 1 $ip >"$WORK/ping.out" 2>&1; do
    i=$((i + 1))
    [ $i -lt 20 ] || fail "the restored guest does not answer pings" "$WORK/ping.out" "$WORK/dst.log"
done
step "restored guest: disk and working set verify, answers pings"

# 4. Snapshot the restored guest again, ending it.
"$TERN" snapshot --api-socket "$WORK/dst.sock" --to "$WORK/snap2" --stop >"$WORK/snapshot2.out" 2>"$WORK/snapshot2.err" ||
    fail "second snapshot (of the restored guest) failed" "$WORK/snapshot2.err" "$WORK/dst.out"
wait_exit "$dst" 30 || fail "tern restore did not end after snapshot --stop" "$WORK/dst.out"
[ "$EXIT_RC" = 0 ] || fail "the restored tern exited with $EXIT_RC after snapshot --stop" "$WORK/dst.out"
[ -f "$WORK/snap2/manifest" ] || fail "the second snapshot has no manifest" "$WORK/snapshot2.out"
bench vmm=tern mem_mb=$mem snapshot_total_ms=$snap_total snapshot_paused_ms=${snap_paused:-unknown} snapshot_wall_ms=$snap_wall \
    snapshot_mib=$snap_mib restore_running_ms=${restore_ms:-unknown} restore_first_line_ms=$first_line_ms cold_boot_first_line_ms=$cold_ms
pass
