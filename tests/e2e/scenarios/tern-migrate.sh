#!/bin/sh
# rig: timeout=600 needs=tern
# tern-migrate: live migration of a Linux guest between two tern processes in L1 over
# loopback TCP with mutual TLS (tests/tls/make-test-certs.sh's certificates). The guest
# runs the dirty job (64 MiB working set rewritten all the time, a counter, netserver)
# with virtio-net (source on tap0, destination on tap1, both in br0) and a virtio-blk data disk (shared image); consoles are on FIFOs so
# commands can be typed into the guest. Before migrating, the guest writes 8 MiB of
# known data to its disk. First, a migration whose destination is killed mid-way must
# fail and leave the guest running (and counting) on the source. Then, while L1 pings
# the guest every 10 ms, `tern migrate` moves it:
#   - the source exits 0, the destination runs the guest, which keeps counting and
#     answers pings (its gratuitous ARP moved it to tap1 in the bridge);
#   - the guest verifies its working set on the destination (memory intact) and reads
#     back the disk data written before the migration.
# Figures: tern's report (total, downtime and where it went, rounds, bytes, zero pages),
# largest ping gap.
. "$E2E_DIR/lib.sh"
need_kvm
need_tern
# MIGRATE_TLS=off (tern-migrate-plain, a benchmark) migrates in plaintext instead.
tls=${MIGRATE_TLS:-on}
if [ "$tls" = on ]; then
    need_tls
    tls_dest="--tls-dir $TLS_CERTS/dest" tls_source="--tls-dir $TLS_CERTS/source"
else
    tls_dest="" tls_source=""
fi
mem=${MIGRATE_MEM_MB:-512}
ip=10.0.2.15
set -- $TAPS
tap_src=$1 tap_dst=$2
args="console=ttyS0 tern.job=dirty tern.ip=$ip/24 tern.dirty_mb=64 tern.dirty_report=2 $GUEST_APPEND"
truncate -s 64M "$WORK/data.img"

# Consoles on FIFOs: fd 5 types into the source, fd 6 into the destination.
mkfifo "$WORK/src.in" "$WORK/dst.in" "$WORK/dst2.in"
"$TERN" run --on-reboot exit --kernel "$GUEST/vmlinux" --initrd "$GUEST/initramfs.cpio.gz" --memory "${mem}M" \
    --cmdline "$args" --serial stdio --api-socket "$WORK/src.sock" \
    --disk "path=$WORK/data.img" --net "tap=$tap_src,mac=52:54:00:12:34:56" <"$WORK/src.in" >"$WORK/src.log" 2>"$WORK/src.out" &
src=$!
_lib_pids="$_lib_pids $src"
exec 5>"$WORK/src.in"
wait_for_marker "$WORK/src.log" '^TERN-JOB dirty ready' 180 || no_init "source guest not ready" "$WORK/src.log" "$WORK/src.out"
wait_for_marker "$WORK/src.log" '^TERN-DIRTY counter=' 60 || fail "dirty workload not reporting" "$WORK/src.log"
echo status >&5
wait_for_marker "$WORK/src.log" '^TERN-DIRTY status counter=' 30 || fail "no status from the source guest" "$WORK/src.log"
c0=$(echo "$MARKER_LINE" | sed -n 's/.*counter=\([0-9]*\).*/\1/p')
echo diskwrite >&5
wait_for_marker "$WORK/src.log" '^TERN-DISK ' 60 || fail "no answer to diskwrite" "$WORK/src.log"
echo "$MARKER_LINE" | grep -q 'written' || fail "guest could not write its disk: $MARKER_LINE" "$WORK/src.log"
i=0
until ping -c 1 -W 1 $ip >/dev/null 2>&1; do
    i=$((i + 1))
    [ $i -lt 30 ] || fail "guest $ip unreachable from L1" "$WORK/src.log"
done

# 1. A destination that is killed mid-way: the source must keep the guest.
"$TERN" receive --listen 127.0.0.1:4445 --memory "${mem}M" --serial stdio $tls_dest \
    --disk "path=$WORK/data.img" --net "tap=$tap_dst" <"$WORK/dst2.in" >"$WORK/dst2.log" 2>"$WORK/dst2.out" &
dst2=$!
_lib_pids="$_lib_pids $dst2"
exec 7>"$WORK/dst2.in"
sleep 1
"$TERN" migrate --api-socket "$WORK/src.sock" --to 127.0.0.1:4445 $tls_source >"$WORK/migrate-fail.out" 2>&1 &
mig=$!
# Kill the destination once memory is flowing: when it holds 40 MiB of guest pages
# (resident set), well inside the first round (the guest has ~130 MiB in use).
i=0 rss=0
while [ $i -lt 20000 ]; do
    read -r _size rss _rest <"/proc/$dst2/statm" 2>/dev/null || break
    [ "$rss" -gt 10240 ] && break
    i=$((i + 1))
done
kill -9 "$dst2" 2>/dev/null
step "destination killed with $((rss * 4 / 1024)) MiB resident"
wait "$mig"
mig_rc=$?
[ "$mig_rc" != 0 ] || fail "tern migrate succeeded although the destination was killed" "$WORK/migrate-fail.out"
grep -q 'keeps running here' "$WORK/migrate-fail.out" || fail "tern migrate did not report the failure clearly" "$WORK/migrate-fail.out"
alive "$src" || fail "the source exited after a failed migration" "$WORK/src.out"
# The guest's counting loop also sums its 64 MiB working set every report, which in
# the nested rig can take many seconds (longer while a migration competes for L1's
# CPUs): ask a few times, for up to 40 s, whether it moved on.
n=0
while :; do
    echo status >&5
    sleep 2
    c_after=$(grep '^TERN-DIRTY status counter=' "$WORK/src.log" | tail -n 1 | sed -n 's/.*counter=\([0-9]*\).*/\1/p')
    [ "${c_after:-0}" -gt "$c0" ] && break
    n=$((n + 1))
    [ $n -lt 20 ] || fail "source guest not counting after the failed migration ($c0 -> $c_after in 40 s)" "$WORK/src.log" "$WORK/src.out"
done
step "killed destination: migration failed cleanly ($(tail -n 1 "$WORK/migrate-fail.out")), source guest still counting ($c0 -> $c_after)"

# 2. The real migration.
"$TERN" receive --listen 127.0.0.1:4444 --memory "${mem}M" --serial stdio $tls_dest \
    --disk "path=$WORK/data.img" --net "tap=$tap_dst" <"$WORK/dst.in" >"$WORK/dst.log" 2>"$WORK/dst.out" &
dst=$!
_lib_pids="$_lib_pids $dst"
exec 6>"$WORK/dst.in"
sleep 1
ping -i 0.01 $ip >"$WORK/ping.log" 2>&1 &
ping_pid=$!
_lib_pids="$_lib_pids $ping_pid"
sleep 1
t0=$(now_ms)
"$TERN" migrate --api-socket "$WORK/src.sock" --to 127.0.0.1:4444 $tls_source --json >"$WORK/report.json" 2>"$WORK/migrate.err" ||
    fail "tern migrate failed" "$WORK/migrate.err" "$WORK/src.out" "$WORK/dst.out"
wall=$(since_ms "$t0")
wait_exit "$src" 20 || fail "source still running after the migration" "$WORK/src.out"
[ "$EXIT_RC" = 0 ] || fail "source exited with $EXIT_RC" "$WORK/src.out"
alive "$dst" || fail "destination is not running" "$WORK/dst.out"
step "report: $(cat "$WORK/report.json")"
sleep 2
kill -INT $ping_pid 2>/dev/null
sleep 0.5
gap=$(ping_gap "$WORK/ping.log" | cut -d' ' -f1)
answered=$(grep -c 'seq=' "$WORK/ping.log")
last_seq=$(sed -n 's/.*seq=\([0-9]*\).*/\1/p' "$WORK/ping.log" | tail -n 1)
ping -c 3 -W 2 $ip >/dev/null 2>&1 || fail "the guest does not answer pings on the destination" "$WORK/ping.log" "$WORK/dst.log"
step "pings: $answered answered, largest gap ${gap} ms"
echo diskverify >&6
wait_for_marker "$WORK/dst.log" '^TERN-DISK verify' 60 || fail "no diskverify answer on the destination" "$WORK/dst.log"
echo "$MARKER_LINE" | grep -q 'verify ok' || fail "disk data written before the migration did not read back: $MARKER_LINE" "$WORK/dst.log"
echo verify >&6
wait_for_marker "$WORK/dst.log" '^TERN-DIRTY verify ' 180 || fail "no verify answer from the guest on the destination" "$WORK/dst.log" "$WORK/dst.out"
echo "$MARKER_LINE" | grep -q 'verify ok' || fail "working set did not verify after migration: $MARKER_LINE" "$WORK/dst.log"
c1=$(echo "$MARKER_LINE" | sed -n 's/.*counter=\([0-9]*\).*/\1/p')
[ "$c1" -gt "$c_after" ] || fail "counter did not advance across the migration ($c_after -> $c1)"
echo poweroff >&6
wait_exit "$dst" 60 || fail "destination guest did not power off" "$WORK/dst.log" "$WORK/dst.out"
[ "$EXIT_RC" = 0 ] || fail "destination exited with $EXIT_RC" "$WORK/dst.out"
num() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p" "$WORK/report.json"; }
step "migrated: working set and disk verified on the destination, counter $c_after -> $c1"
bench vmm=tern tls=$tls mem_mb=$mem total_ms=$(num total_ms) downtime_ms=$(num downtime_ms) downtime_last_pages_ms=$(num last_pages_ms) downtime_state_ms=$(num state_ms) downtime_capture_ms=$(num state_capture_ms) downtime_release_ms=$(num release_ms) downtime_take_over_ms=$(num take_over_ms) downtime_pause_ms=$(num pause_ms) downtime_restore_ms=$(num restore_ms) downtime_decode_ms=$(num decode_ms) downtime_handoff_ms=$(num handoff_ms) downtime_transfer_ms=$(num transfer_ms) downtime_dest_last_pages_ms=$(num dest_last_pages_ms) ping_max_gap_ms=$gap rounds=$(num rounds) bytes_sent=$(num bytes_sent) zero_pages=$(num zero_pages) max_throttle=$(num max_throttle_percent) wall_ms=$wall
pass
