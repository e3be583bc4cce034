#!/bin/sh
# rig: timeout=420
# qemu-migrate: the live-migration anchor. A guest running the dirty job (64 MiB working
# set rewritten continuously, netserver, HTTP verify endpoint) is migrated between two
# QEMU processes in the same L1 over TCP on loopback; the source NIC is on tap0 and the
# destination's on tap1 (both in br0). L1 pings the guest every 10 ms throughout.
# After the migration the guest must still answer and its working set must verify
# (recomputed from its counter, inside the guest, on the destination).
# Figures: QEMU-reported total time and downtime, largest ping gap, migration wall time.
. "$E2E_DIR/lib.sh"
need_kvm
set -- $TAPS
tap_src=$1 tap_dst=$2
mem=${MIGRATE_MEM_MB:-512}
ip=10.0.2.15
args="console=ttyS0 tern.job=dirty tern.ip=$ip/24 tern.dirty_mb=64 tern.dirty_report=2 $GUEST_APPEND"

qemu_monitored src "$tap_src" 5550
src=$VMM_PID
qemu_monitored dst "$tap_dst" 5551 -incoming tcp:127.0.0.1:4444
dst=$VMM_PID
wait_for_marker "$WORK/src.log" '^TERN-JOB dirty ready' 180 || rig_fault "QEMU's source guest did not come up" "$WORK/src.log" "$WORK/src.out"
wait_for_marker "$WORK/src.log" '^TERN-DIRTY counter=' 60 || fail "dirty workload not reporting" "$WORK/src.log"
i=0
until ping -c 1 -W 1 $ip >/dev/null 2>&1; do
    i=$((i + 1))
    [ $i -lt 30 ] || fail "guest $ip unreachable from L1" "$WORK/src.log"
done
before=$(timeout 60 wget -q -O - "http://$ip/cgi-bin/status")
echo "$before" | grep -q 'TERN-DIRTY status counter=' || fail "HTTP status from the guest failed: $before" "$WORK/src.log"
c0=$(echo "$before" | sed -n 's/.*counter=\([0-9]*\).*/\1/p')

ping -i 0.01 $ip >"$WORK/ping.log" 2>&1 &
ping_pid=$!
_lib_pids="$_lib_pids $ping_pid"
sleep 1
hmp 5550 "migrate_set_parameter downtime-limit 300" >/dev/null
t0=$(now_ms)
hmp 5550 "migrate -d tcp:127.0.0.1:4444" >/dev/null
status=
while :; do
    info=$(hmp 5550 "info migrate")
    status=$(echo "$info" | sed -n 's/.*Migration status: *\([a-z-]*\).*/\1/p' | head -n 1)
    case "$status" in completed | failed | cancelled) break ;; esac
    [ "$(since_ms "$t0")" -lt 180000 ] || fail "migration still '$status' after 180 s" "$WORK/src.out" "$WORK/dst.out"
    sleep 0.5
done
wall=$(since_ms "$t0")
echo "$info" | grep -E -i 'status|total time|downtime|transferred|throughput|dirty sync|setup' | sed 's/^/  hmp| /'
[ "$status" = completed ] || fail "migration $status" "$WORK/src.out" "$WORK/dst.out"
total=$(echo "$info" | sed -n 's/.*total time: *\([0-9]*\) ms.*/\1/p' | head -n 1)
down=$(echo "$info" | sed -n 's/^downtime: *\([0-9]*\) ms.*/\1/p' | head -n 1)
[ -n "$down" ] || down=$(echo "$info" | sed -n 's/.*downtime: *\([0-9]*\) ms.*/\1/p' | head -n 1)
sleep 2
kill -INT $ping_pid 2>/dev/null
sleep 0.5
gap=$(ping_gap "$WORK/ping.log" | cut -d' ' -f1)
answered=$(grep -c 'seq=' "$WORK/ping.log")

st=$(hmp 5551 "info status")
echo "$st" | grep -q 'VM status: running' || rig_fault "QEMU's destination is not running: $st" "$WORK/dst.out"
hmp 5550 quit >/dev/null
wait_exit "$src" 10 || stop_pid "$src"
res=$(timeout 120 wget -q -O - "http://$ip/cgi-bin/verify")
echo "$res" | grep -q 'TERN-DIRTY verify ok' || fail "working set did not verify after migration: $res" "$WORK/dst.log"
c1=$(echo "$res" | sed -n 's/.*counter=\([0-9]*\).*/\1/p')
[ "$c1" -gt "$c0" ] || fail "counter did not advance across migration ($c0 -> $c1)"
grep -q '^TERN-DIRTY counter=' "$WORK/dst.log" || fail "no workload output on the destination console" "$WORK/dst.log"
step "migrated: total ${total} ms, downtime ${down} ms, ping gap ${gap} ms, counter $c0 -> $c1"
xfer_kb=$(echo "$info" | sed -n 's/.*transferred ram: *\([0-9]*\) kbytes.*/\1/p' | head -n 1)
bench vmm=qemu mem_mb=$mem total_ms=$total downtime_ms=$down ping_max_gap_ms=$gap pings=$answered wall_ms=$wall bytes_sent=$((${xfer_kb:-0} * 1024))
pass
