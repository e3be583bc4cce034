#!/bin/sh
# rig: timeout=600 needs=tern
# tern-migrate: live migration of a Linux guest between two tern processes in L1 over
# loopback TCP. The guest runs the dirty job (64 MiB working set rewritten all the
# time, a counter) with its root-less initramfs; consoles are on FIFOs so commands can
# be typed into the guest. After `tern migrate`:
#   - the source exits 0, the destination runs the guest, which keeps counting;
#   - the guest verifies its working set (recomputed from the counter) on the
#     destination: memory arrived intact;
# Then a second migration whose destination is killed mid-way must fail and leave the
# guest running (and counting) on the source.
# Figures: tern's report (total, downtime, rounds, bytes, zero pages).
. "$E2E_DIR/lib.sh"
need_kvm
need_tern
mem=${MIGRATE_MEM_MB:-512}
args="console=ttyS0 tern.job=dirty tern.dirty_mb=64 tern.dirty_report=2 $GUEST_APPEND"

# Consoles on FIFOs: fd 5 types into the source, fd 6 into the destination.
mkfifo "$WORK/src.in" "$WORK/dst.in" "$WORK/dst2.in"
"$TERN" run --kernel "$GUEST/vmlinux" --initrd "$GUEST/initramfs.cpio.gz" --memory "${mem}M" \
    --cmdline "$args" --serial stdio --api-socket "$WORK/src.sock" <"$WORK/src.in" >"$WORK/src.log" 2>"$WORK/src.out" &
src=$!
_lib_pids="$_lib_pids $src"
exec 5>"$WORK/src.in"
wait_for_marker "$WORK/src.log" '^TERN-JOB dirty ready' 180 || fail "source guest not ready" "$WORK/src.log" "$WORK/src.out"
wait_for_marker "$WORK/src.log" '^TERN-DIRTY counter=' 60 || fail "dirty workload not reporting" "$WORK/src.log"
echo status >&5
wait_for_marker "$WORK/src.log" '^TERN-DIRTY status counter=' 30 || fail "no status from the source guest" "$WORK/src.log"
c0=$(echo "$MARKER_LINE" | sed -n 's/.*counter=\([0-9]*\).*/\1/p')

# 1. A destination that is killed mid-way: the source must keep the guest.
"$TERN" receive --listen 127.0.0.1:4445 --memory "${mem}M" --serial stdio <"$WORK/dst2.in" >"$WORK/dst2.log" 2>"$WORK/dst2.out" &
dst2=$!
_lib_pids="$_lib_pids $dst2"
exec 7>"$WORK/dst2.in"
sleep 1
"$TERN" migrate --api-socket "$WORK/src.sock" --to 127.0.0.1:4445 >"$WORK/migrate-fail.out" 2>&1 &
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
echo status >&5
sleep 2
c_after=$(grep '^TERN-DIRTY status counter=' "$WORK/src.log" | tail -n 1 | sed -n 's/.*counter=\([0-9]*\).*/\1/p')
[ "${c_after:-0}" -gt "$c0" ] || fail "source guest not counting after the failed migration ($c0 -> $c_after)" "$WORK/src.log"
step "killed destination: migration failed cleanly ($(tail -n 1 "$WORK/migrate-fail.out")), source guest still counting ($c0 -> $c_after)"

# 2. The real migration.
"$TERN" receive --listen 127.0.0.1:4444 --memory "${mem}M" --serial stdio <"$WORK/dst.in" >"$WORK/dst.log" 2>"$WORK/dst.out" &
dst=$!
_lib_pids="$_lib_pids $dst"
exec 6>"$WORK/dst.in"
sleep 1
t0=$(now_ms)
"$TERN" migrate --api-socket "$WORK/src.sock" --to 127.0.0.1:4444 --json >"$WORK/report.json" 2>"$WORK/migrate.err" ||
    fail "tern migrate failed" "$WORK/migrate.err" "$WORK/src.out" "$WORK/dst.out"
wall=$(since_ms "$t0")
wait_exit "$src" 20 || fail "source still running after the migration" "$WORK/src.out"
[ "$EXIT_RC" = 0 ] || fail "source exited with $EXIT_RC" "$WORK/src.out"
alive "$dst" || fail "destination is not running" "$WORK/dst.out"
step "report: $(cat "$WORK/report.json")"
echo verify >&6
wait_for_marker "$WORK/dst.log" '^TERN-DIRTY verify ' 180 || fail "no verify answer from the guest on the destination" "$WORK/dst.log" "$WORK/dst.out"
echo "$MARKER_LINE" | grep -q 'verify ok' || fail "working set did not verify after migration: $MARKER_LINE" "$WORK/dst.log"
c1=$(echo "$MARKER_LINE" | sed -n 's/.*counter=\([0-9]*\).*/\1/p')
[ "$c1" -gt "$c_after" ] || fail "counter did not advance across the migration ($c_after -> $c1)"
echo poweroff >&6
wait_exit "$dst" 60 || fail "destination guest did not power off" "$WORK/dst.log" "$WORK/dst.out"
[ "$EXIT_RC" = 0 ] || fail "destination exited with $EXIT_RC" "$WORK/dst.out"
num() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p" "$WORK/report.json"; }
step "migrated: verify ok on the destination, counter $c_after -> $c1"
bench vmm=tern mem_mb=$mem total_ms=$(num total_ms) downtime_ms=$(num downtime_ms) rounds=$(num rounds) bytes_sent=$(num bytes_sent) zero_pages=$(num zero_pages) max_throttle=$(num max_throttle_percent) wall_ms=$wall
pass
