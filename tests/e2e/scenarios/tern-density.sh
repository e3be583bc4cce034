#!/bin/sh
# rig: timeout=2400 needs=tern
# tern-density (benchmark, on demand: not in the suite): how many idle 128 MiB guests
# this L1 holds, tern's memory overhead per VM, and the time to start them all.
#   1. Idle guests are started DENSITY_BATCH (2: L1's vCPUs) at a time, each a named VM
#      (`tern run --name densN`: its runtime directory and API socket, as a fleet's VMs
#      have) on the default guest (vmlinux + initramfs, 1 vCPU, --memory 128M, the
#      netserver job: it prints its ready marker and then sleeps), until starting
#      another batch would take L1's MemAvailable below DENSITY_MARGIN_MB (256), or
#      DENSITY_MAX guests run (64 on a host; 16 in the nested rig, whose L1 kernel
#      failed 4 times in about 90 L2 boots: tests/rig/README.md, "Density").
#      What a guest costs is measured as the guests come up (MemAvailable's drop per
#      running guest; before the first batch: its whole RAM and 16 MiB), so idle guests
#      that touch only part of their RAM are packed by what they touch. Each guest's
#      memory is printed as it comes up (a step line), so a run whose L1 dies keeps
#      its figures in the console log. A guest that crashes or freezes in early boot
#      (lib.sh's early_boot_fault, the nested rig's) is counted, stopped and replaced;
#      more than DENSITY_CRASHES (3) of those is a rig fault. A counted guest whose tern
#      ends (checked after every batch) and fewer than 2 guests are failures.
#   2. With all of them up: `tern list` shows every one running; per tern process its
#      RSS (VmRSS), PSS (smaps_rollup), anonymous RSS, and the RSS of its guest RAM
#      mapping (the one 128 MiB mapping in /proc/PID/smaps: the guest RAM it touched).
#      Overhead = RSS - guest RAM RSS (the issue's figure, goal <= 5 MiB); PSS and
#      anonymous RSS minus the guest's are what one more VM adds (the binary's shared
#      pages split among all, or left out).
#   3. `tern stop densN` for each: every tern exits 0.
#   4. QEMU anchor (DENSITY_QEMU=4 guests, 0: none): the same guest and memory under
#      QEMU, its RSS beyond its 128 MiB RAM mapping's; a QEMU guest that does not boot
#      only drops the anchor.
# Figures (bench vmm=tern): guests, time from the first start to the last ready marker,
# each guest's boot time (median, last), overhead median/max (KiB and MiB), guest RAM
# touched (median), MemAvailable before and after, its drop per guest, the guests that
# memory alone would hold at that drop (fit_by_memory: what a capped run stands for),
# and those that would fit if each guest's whole RAM were backed (no overcommit).
# DENSITY_* come from the environment: rig.py passes its own on in host mode; in the
# nested rig, change the defaults below.
. "$E2E_DIR/lib.sh"
need_kvm
need_tern
mem=${DENSITY_MEM_MB:-128}
max=${DENSITY_MAX:-64}
[ "$RIG_MODE" = nested ] && max=${DENSITY_MAX:-16}
margin=${DENSITY_MARGIN_MB:-256}
batch=${DENSITY_BATCH:-2}
max_crashes=${DENSITY_CRASHES:-3}
n_qemu=${DENSITY_QEMU:-4}
cmdline="console=ttyS0 tern.job=netserver $GUEST_APPEND"
ready='^TERN-JOB netserver ready'

avail_mib() { awk '/^MemAvailable:/ { print int($2 / 1024) }' /proc/meminfo; }
# median and max of the numbers on stdin, one a line: "MEDIAN MAX"
stats() { sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)], v[NR]; else print "na na" }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
# mapping PID: "RSS_KB COUNT" of the mappings exactly the guest RAM's size in PID's smaps
mapping() {
    awk -v want=$((mem * 1024)) '/^Size:/ { size = $2 } /^Rss:/ { if (size == want) { g += $2; n++ } }
        END { print g + 0, n + 0 }' "/proc/$1/smaps" 2>/dev/null
}

# memory_of PID: sets M_RSS M_ANON M_PSS (kB: VmRSS, RssAnon, smaps_rollup's Pss) and
# M_RAM (kB: the RSS of the guest RAM mapping), or fails.
memory_of() {
    M_RSS=$(awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null)
    M_ANON=$(awk '/^RssAnon:/ { print $2 }' "/proc/$1/status" 2>/dev/null)
    M_PSS=$(awk '/^Pss:/ { print $2; exit }' "/proc/$1/smaps_rollup" 2>/dev/null)
    set -- $(mapping "$1") "$1"
    M_RAM=$1
    [ -n "$M_RSS" ] && [ -n "$M_ANON" ] && [ -n "$M_PSS" ] || fail "cannot read the memory figures of process $3"
    [ "$2" = 1 ] || fail "process $3 has ${2:-no} mappings of ${mem} MiB, not the one guest RAM mapping"
    M_LINE="tern RSS $M_RSS kB (anon $M_ANON, PSS $M_PSS), guest RAM touched $M_RAM kB, overhead $((M_RSS - M_RAM)) kB"
}

# top_mappings PID: PID's 6 largest mappings by RSS besides the guest RAM, one a line:
# "RSS_KB SIZE_KB ANON_HUGE_KB NAME" (where an overhead goes).
top_mappings() {
    awk -v want=$((mem * 1024)) '
        function out() { if (rss != "" && size != want) print rss, size, thp, name }
        $1 ~ /^[0-9a-f]+-[0-9a-f]+$/ { out(); name = ($6 == "" ? "[anon]" : $6); rss = ""; thp = 0 }
        /^Size:/ { size = $2 } /^Rss:/ { rss = $2 } /^AnonHugePages:/ { thp = $2 }
        END { out() }' "/proc/$1/smaps" 2>/dev/null | sort -rn | awk 'NR <= 6'
}

# check_up: every guest counted so far still runs; one whose tern ended fails the run
# with its exit status, console and tern output (an idle guest must not end).
check_up() {
    for _i in $up; do
        eval "_pid=\$pid_$_i"
        alive "$_pid" && continue
        wait "$_pid"
        fail "guest $_i's tern ended (status $?) while its guest idled" "$WORK/g$_i.log" "$WORK/g$_i.out"
    done
}

avail0=$(avail_mib)
step "L1 MemAvailable ${avail0} MiB before any guest; batches of $batch, at most $max guests, margin $margin MiB"
cost=$((mem + 16))
[ $((avail0 - 2 * cost)) -ge "$margin" ] ||
    fail "L1 has MemAvailable ${avail0} MiB: not even 2 guests of ${mem} MiB fit above the ${margin} MiB margin"

# 1. Start guests until memory or the cap stops it.
started=0 up= crashes=0 stopped_by=
t0=$(now_ms)
: >"$WORK/boot_ms"
while :; do
    if [ "$started" -ge "$max" ]; then stopped_by="the cap of $max guests"; break; fi
    avail=$(avail_mib)
    if [ "$started" -gt 0 ]; then
        cost=$(((avail0 - avail + started - 1) / started))
        [ "$cost" -ge 16 ] || cost=16
    fi
    k=$(((avail - margin) / cost))
    [ "$k" -le "$batch" ] || k=$batch
    [ "$k" -le $((max - started)) ] || k=$((max - started))
    if [ "$k" -le 0 ]; then
        stopped_by="memory: MemAvailable ${avail} MiB, ${cost} MiB a guest, margin ${margin} MiB"
        break
    fi
    ids=
    j=0
    while [ $j -lt "$k" ]; do
        i=$((started + crashes + 1))
        eval "t_$i=\$(now_ms)"
        start_vmm "g$i" "$TERN" run --name "dens$i" --on-reboot exit --kernel "$GUEST/vmlinux" \
            --initrd "$GUEST/initramfs.cpio.gz" --memory "${mem}M" --cmdline "$cmdline" --serial "file=$WORK/g$i.log"
        eval "pid_$i=$VMM_PID"
        ids="$ids $i"
        started=$((started + 1))
        j=$((j + 1))
    done
    for i in $ids; do
        eval "pid=\$pid_$i t=\$t_$i"
        # A crash message ends the wait at once: a panicked guest's tern keeps running.
        if wait_for_marker "$WORK/g$i.log" "$ready|$CRASH_SIGNATURES" 300 "$pid" &&
            echo "$MARKER_LINE" | grep -q -E "$ready"; then
            ms=$(since_ms "$t")
            echo "$ms" >>"$WORK/boot_ms"
            up="$up $i"
            check_up
            memory_of "$pid"
            step "guest $i ready in $ms ms: $M_LINE"
            continue
        fi
        # A tern that ended with no crash to show for it failed on its own (a bad flag,
        # a refused name, an error): that is tern's, never the rig's.
        if ! alive "$pid" && ! grep -a -q -E "$CRASH_SIGNATURES" "$WORK/g$i.log" "$WORK/g$i.out" 2>/dev/null; then
            fail "guest $i's tern ended before its guest was ready" "$WORK/g$i.log" "$WORK/g$i.out"
        fi
        if early_boot_fault "$WORK/g$i.log" "$WORK/g$i.out"; then
            crashes=$((crashes + 1))
            step "guest $i: $EARLY_BOOT_FAULT (early-boot fault $crashes, stopped and not counted)"
            show_log "$WORK/g$i.log" 20
            show_log "$WORK/g$i.out" 10
            stop_pid "$pid"
            started=$((started - 1))
            [ "$crashes" -le "$max_crashes" ] ||
                no_init "guest $i is early-boot fault number $crashes (at most $max_crashes)" "$WORK/g$i.log" "$WORK/g$i.out"
            continue
        fi
        alive "$pid" && step "guest $i's tern threads (CPU ticks over 1 s): $(threads_cpu "$pid")"
        no_init "guest $i of $started (${mem} MiB) did not become ready in 300 s (L1 MemAvailable $(avail_mib) MiB)" \
            "$WORK/g$i.log" "$WORK/g$i.out"
    done
    t_last=$(now_ms)
    check_up
    step "$started guests ready, L1 MemAvailable $(avail_mib) MiB"
done
[ -n "$t_last" ] || fail "no guest started ($stopped_by)"
start_all_ms=$((t_last - t0))
[ "$started" -ge 2 ] || fail "only $started guest(s) of ${mem} MiB started ($stopped_by)"
step "stopped starting guests at $started: $stopped_by"

# 2. Measure, once every guest has settled.
sleep 5
check_up
"$TERN" list >"$WORK/list.out" 2>&1 || fail "tern list failed" "$WORK/list.out"
for i in $up; do
    grep -q -E "^dens$i +running " "$WORK/list.out" || fail "tern list does not show dens$i running" "$WORK/list.out"
done
avail1=$(avail_mib)
step "all $started idle: L1 MemAvailable ${avail1} MiB, load average $(cut -d' ' -f1-3 /proc/loadavg)"
: >"$WORK/over_rss" ; : >"$WORK/over_pss" ; : >"$WORK/over_anon" ; : >"$WORK/touched"
for i in $up; do
    eval "pid=\$pid_$i"
    memory_of "$pid"
    echo $((M_RSS - M_RAM)) >>"$WORK/over_rss"
    echo $((M_PSS - M_RAM)) >>"$WORK/over_pss"
    echo $((M_ANON - M_RAM)) >>"$WORK/over_anon"
    echo "$M_RAM" >>"$WORK/touched"
    step "guest $i idle: $M_LINE"
    if [ $((M_RSS - M_RAM)) -gt "${worst_kb:--1}" ]; then worst_kb=$((M_RSS - M_RAM)) worst=$i; fi
done
eval "pid=\$pid_$worst"
step "guest $worst has the largest overhead; its largest mappings besides guest RAM (RSS kB, size kB, anon huge kB, name):"
top_mappings "$pid" | sed 's/^/    /'
set -- $(stats <"$WORK/over_rss"); o_med=$1 o_max=$2
set -- $(stats <"$WORK/over_pss"); p_med=$1
set -- $(stats <"$WORK/over_anon"); a_med=$1
set -- $(stats <"$WORK/touched"); g_med=$1
set -- $(stats <"$WORK/boot_ms"); b_med=$1
b_last=$(tail -n 1 "$WORK/boot_ms")
drop=$(((avail0 - avail1) / started))
[ "$drop" -ge 1 ] || drop=1
# Guests that memory alone would hold at the measured cost, and those that would fit
# if each one's whole RAM were backed, plus tern's overhead.
by_mem=$(((avail0 - margin) / drop))
full=$(awk -v a="$avail0" -v m="$margin" -v g="$mem" -v o="$o_med" 'BEGIN { printf "%d", (a - m) / (g + o / 1024) }')
bench vmm=tern mem_mb=$mem guests=$started start_all_ms=$start_all_ms boot_median_ms=$b_med boot_last_ms=$b_last \
    overhead_median_kib=$o_med overhead_max_kib=$o_max overhead_median_mib=$(mib "$o_med") overhead_max_mib=$(mib "$o_max") \
    overhead_pss_median_kib=$p_med overhead_anon_median_kib=$a_med guest_touched_median_mib=$(mib "$g_med") \
    avail_before_mib=$avail0 avail_after_mib=$avail1 avail_drop_per_guest_mib=$drop fit_by_memory=$by_mem fit_fully_backed=$full \
    early_boot_faults=$crashes target_overhead_mib=5

# 3. Stop them all by name; every tern exits 0.
t_stop=$(now_ms)
for i in $up; do
    "$TERN" stop "dens$i" >"$WORK/stop$i.out" 2>&1 || fail "tern stop dens$i failed" "$WORK/stop$i.out" "$WORK/g$i.out"
done
for i in $up; do
    eval "pid=\$pid_$i"
    wait_exit "$pid" 30 || fail "guest $i's tern did not exit after tern stop" "$WORK/g$i.out"
    [ "$EXIT_RC" = 0 ] || fail "guest $i's tern exited with $EXIT_RC after tern stop" "$WORK/g$i.out"
done
step "all $started terns exited 0 after tern stop, in $(since_ms "$t_stop") ms; L1 MemAvailable $(avail_mib) MiB"

# 4. QEMU anchor: the same idle guests, QEMU's RSS beyond its guest RAM mapping's.
anchor() {
    [ "$n_qemu" -gt 0 ] || return 0
    [ -x "$QEMU" ] || { step "QEMU anchor skipped: no QEMU at '$QEMU'"; return 0; }
    qids=
    q=1
    while [ $q -le "$n_qemu" ]; do
        start_vmm "q$q" "$QEMU" -accel kvm -cpu host -m "${mem}M" -smp 1 -kernel "$GUEST/vmlinux" \
            -initrd "$GUEST/initramfs.cpio.gz" -append "$cmdline" \
            -display none -nodefaults -no-reboot -serial "file:$WORK/q$q.log"
        eval "qpid_$q=$VMM_PID"
        qids="$qids $q"
        # DENSITY_BATCH at a time, as the tern guests.
        if [ $((q % batch)) = 0 ] || [ $q = "$n_qemu" ]; then
            for b in $qids; do
                eval "pid=\$qpid_$b"
                { wait_for_marker "$WORK/q$b.log" "$ready|$CRASH_SIGNATURES" 300 "$pid" &&
                    echo "$MARKER_LINE" | grep -q -E "$ready"; } || {
                    step "QEMU anchor dropped: QEMU guest $b did not become ready"
                    show_log "$WORK/q$b.log" 20
                    return 0
                }
            done
            qids=
        fi
        q=$((q + 1))
    done
    sleep 5
    : >"$WORK/q_over"
    q=1
    while [ $q -le "$n_qemu" ]; do
        eval "pid=\$qpid_$q"
        rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
        set -- $(mapping "$pid")
        if [ "$2" != 1 ] || [ -z "$rss" ]; then
            step "QEMU anchor dropped: QEMU $pid has $2 mappings of ${mem} MiB"
            return 0
        fi
        echo $((rss - $1)) >>"$WORK/q_over"
        step "QEMU guest $q: RSS ${rss} kB, guest RAM touched $1 kB, overhead $((rss - $1)) kB"
        q=$((q + 1))
    done
    set -- $(stats <"$WORK/q_over")
    bench vmm=qemu mem_mb=$mem guests=$n_qemu overhead_median_kib=$1 overhead_max_kib=$2 \
        overhead_median_mib=$(mib "$1") overhead_max_mib=$(mib "$2")
}
anchor
q=1
while [ $q -le "$n_qemu" ]; do
    eval "pid=\${qpid_$q:-}"
    [ -n "$pid" ] && stop_pid "$pid"
    q=$((q + 1))
done
pass
