#!/bin/sh
# rig: timeout=600
# qemu-snapshot: the save/restore anchor for tern-snapshot. The same dirty-job guest
# (512 MiB, 64 MiB working set rewritten continuously) under QEMU is saved to a file with
# `migrate file:PATH` (QEMU's live save: iterative, then a final pause; the guest is left
# paused), then QEMU quits and a new QEMU restores it with `-incoming file:PATH` (on
# tap1); the restored guest's working set must verify and it must count on.
# Figures: save total and downtime (QEMU's own), file size, time from starting the
# restoring QEMU to the guest's first console line, and a cold boot to that line.
. "$E2E_DIR/lib.sh"
need_kvm
set -- $TAPS
tap_src=$1 tap_dst=$2
mem=512
ip=10.0.2.15
args="console=ttyS0 tern.job=dirty tern.ip=$ip/24 tern.dirty_mb=64 tern.dirty_report=2 $GUEST_APPEND"
counter() { sed -n 's/.*counter=\([0-9]*\).*/\1/p' | tail -n 1; }

t0=$(now_ms)
qemu_monitored src "$tap_src" 5560
src=$VMM_PID
wait_for_marker "$WORK/src.log" '^TERN-DIRTY counter=' 180 "$src" || rig_fault "QEMU's guest did not come up" "$WORK/src.log" "$WORK/src.out"
cold_ms=$(since_ms "$t0")
c0=$(echo "$MARKER_LINE" | counter)
sleep 4
t0=$(now_ms)
hmp 5560 "migrate -d file:$WORK/qemu.snap" >/dev/null
while :; do
    info=$(hmp 5560 "info migrate")
    status=$(echo "$info" | sed -n 's/.*Migration status: *\([a-z-]*\).*/\1/p' | head -n 1)
    case "$status" in completed | failed | cancelled) break ;; esac
    [ "$(since_ms "$t0")" -lt 180000 ] || fail "save still '$status' after 180 s" "$WORK/src.out"
    sleep 0.3
done
wall=$(since_ms "$t0")
echo "$info" | grep -E -i 'status|total time|downtime|transferred' | sed 's/^/  hmp| /'
[ "$status" = completed ] || fail "QEMU's save $status" "$WORK/src.out"
total=$(echo "$info" | sed -n 's/.*total time: *\([0-9]*\) ms.*/\1/p' | head -n 1)
down=$(echo "$info" | sed -n 's/.*downtime: *\([0-9]*\) ms.*/\1/p' | head -n 1)
size_kb=$(du -k "$WORK/qemu.snap" | cut -f1)
c_saved=$(grep -a '^TERN-DIRTY counter=' "$WORK/src.log" | counter)
hmp 5560 quit >/dev/null
wait_exit "$src" 10 || stop_pid "$src"
step "saved: total ${total} ms, downtime ${down} ms, $((size_kb / 1024)) MiB"

t0=$(now_ms)
qemu_monitored dst "$tap_dst" 5561 -incoming "file:$WORK/qemu.snap"
dst=$VMM_PID
wait_for_marker "$WORK/dst.log" '^TERN-DIRTY counter=' 120 "$dst" || fail "the restored guest does not count" "$WORK/dst.log" "$WORK/dst.out"
first_ms=$(since_ms "$t0")
c_r=$(echo "$MARKER_LINE" | counter)
[ "$c_r" -ge "$c0" ] || fail "the restored count $c_r is before the save ($c0)"
res=$(timeout 120 wget -q -O - "http://$ip/cgi-bin/verify")
echo "$res" | grep -q 'TERN-DIRTY verify ok' || fail "working set did not verify after the restore: $res" "$WORK/dst.log"
hmp 5561 quit >/dev/null
step "restored: first guest line after $first_ms ms (counter $c_r; saved at ~$c_saved), working set verifies"
bench vmm=qemu mem_mb=$mem snapshot_total_ms=$total snapshot_paused_ms=$down snapshot_wall_ms=$wall \
    snapshot_mib=$((size_kb / 1024)) restore_first_line_ms=$first_ms cold_boot_first_line_ms=$cold_ms
pass
