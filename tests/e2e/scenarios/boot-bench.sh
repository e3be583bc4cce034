#!/bin/sh
# rig: timeout=600 needs=tern
# boot-bench (benchmark, not a test of speed): time from starting the VMM to the guest's
# TERN-GUEST-INIT line, tern vs QEMU (-kernel vmlinux, same guest, same memory), five
# alternating rounds; and tern's own memory overhead: its RSS minus the guest memory it
# has touched (the RSS of the guest RAM mapping), sampled once the guest is up.
# Then the same with `quiet` on the guest command line (three rounds), which splits a
# boot into its console part and the rest: with the kernel's messages on, the guest's
# 8250 console costs two exits per character under either VMM, and in the nested rig
# that is a large share of the boot (see ARCHITECTURE.md, "Console cost").
# Prints TERN-BENCH lines; fails only if a VMM does not boot the guest at all.
. "$E2E_DIR/lib.sh"
need_kvm
need_tern
[ -x "$QEMU" ] || fail "no QEMU at '$QEMU'"
mem_mb=512

time_boot() { # VMM ROUND [EXTRA_CMDLINE] -> sets T_INIT, CON_BYTES (and vmm, round, con)
    vmm=$1 round=$2
    con=$WORK/console-$vmm-$round.log
    t0=$(now_ms)
    start_boot_job "$vmm-$round" "$vmm" 1 "$con" "${3:-}"
    if ! wait_for_marker "$con" '^TERN-GUEST-INIT ' 120 "$VMM_PID"; then
        # A guest crashing in early boot is the nested rig's (tests/rig/README.md).
        [ "$vmm" = qemu ] && rig_fault "QEMU round $round: its guest did not boot" "$con" "$WORK/$vmm-$round.out"
        no_init "$vmm round $round: no init marker" "$con" "$WORK/$vmm-$round.out"
    fi
    T_INIT=$(since_ms "$t0")
    # Console bytes up to the marker line: what the guest wrote while being timed.
    CON_BYTES=$(awk '/^TERN-GUEST-INIT / { exit } { n += length($0) + 1 } END { print n + 0 }' "$con")
    wait_exit "$VMM_PID" 60 || fail "$vmm round $round: did not exit" "$con"
}

median() { echo "$@" | tr ' ' '\n' | grep . | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# time_rounds ROUNDS CONSOLE_LABEL [EXTRA_CMDLINE]: alternating rounds; sets the
# medians TM QM (ms) and TB QB (console bytes) for tern and QEMU.
time_rounds() {
    n=$1 label=$2 extra=${3:-}
    tern_all= qemu_all= tern_bytes= qemu_bytes=
    r=1
    while [ $r -le "$n" ]; do
        for v in qemu tern; do
            time_boot $v "$label-$r" "$extra"
            bench vmm=$v round=$r console=$label time_to_init_ms=$T_INIT console_bytes=$CON_BYTES
            eval "${v}_all=\"\$${v}_all $T_INIT\" ${v}_bytes=\"\$${v}_bytes $CON_BYTES\""
        done
        r=$((r + 1))
    done
    TM=$(median $tern_all) QM=$(median $qemu_all) TB=$(median $tern_bytes) QB=$(median $qemu_bytes)
}
ratio() { awk -v t="$1" -v q="$2" 'BEGIN { printf "%.2f", t / q }'; }

time_rounds 5 verbose
bench summary=time_to_init tern_median_ms=$TM qemu_median_ms=$QM tern_over_qemu=$(ratio $TM $QM) target=0.5
tv=$TM qv=$QM tvb=$TB qvb=$QB
time_rounds 3 quiet quiet
bench summary=time_to_init_quiet tern_median_ms=$TM qemu_median_ms=$QM tern_over_qemu=$(ratio $TM $QM)
# What the kernel's console messages cost each VMM: the boot time they add, per byte.
per_byte() { awk -v dt="$1" -v db="$2" 'BEGIN { if (db > 0) printf "%.0f", dt * 1000 / db; else print "na" }'; }
bench summary=console_cost tern_ms=$((tv - TM)) qemu_ms=$((qv - QM)) \
    tern_us_per_byte=$(per_byte $((tv - TM)) $((tvb - TB))) qemu_us_per_byte=$(per_byte $((qv - QM)) $((qvb - QB)))

# Memory overhead: keep a guest running (netserver job) and read tern's smaps.
con=$WORK/console-rss.log
start_vmm tern-rss "$TERN" run --on-reboot exit --kernel "$GUEST/vmlinux" --initrd "$GUEST/initramfs.cpio.gz" \
    --memory ${mem_mb}M --cmdline "console=ttyS0 tern.job=netserver $GUEST_APPEND" --serial "file=$con"
wait_for_marker "$con" '^TERN-JOB netserver ready' 120 || fail "rss guest did not come up" "$con"
sleep 2
pid=$VMM_PID
total_kb=$(awk '/^VmRSS:/ { print $2 }' /proc/$pid/status)
# The guest RAM mapping is the one whose size is exactly the guest memory size.
guest_kb=$(awk -v want=$((mem_mb * 1024)) '
    /^Size:/ { size = $2 } /^Rss:/ { if (size == want) g += $2 } END { print g + 0 }' /proc/$pid/smaps)
overhead_kb=$((total_kb - guest_kb))
bench summary=memory tern_rss_kb=$total_kb guest_touched_kb=$guest_kb overhead_kb=$overhead_kb overhead_mib=$(awk -v k=$overhead_kb 'BEGIN { printf "%.1f", k / 1024 }') target_mib=10
kill "$pid"
pass
