#!/bin/sh
# rig: timeout=600 needs=tern
# boot-bench (benchmark, not a test of speed): time from starting the VMM to the guest's
# TERN-GUEST-INIT line, tern vs QEMU (-kernel vmlinux, same guest, same memory), five
# alternating rounds; and tern's own memory overhead: its RSS minus the guest memory it
# has touched (the RSS of the guest RAM mapping), sampled once the guest is up.
# Prints TERN-BENCH lines; fails only if a VMM does not boot the guest at all.
. "$E2E_DIR/lib.sh"
need_kvm
need_tern
[ -x "$QEMU" ] || fail "no QEMU at '$QEMU'"
mem_mb=512

time_boot() { # VMM ROUND -> sets T_INIT
    vmm=$1 round=$2
    con=$WORK/console-$vmm-$round.log
    t0=$(now_ms)
    start_boot_job "$vmm-$round" "$vmm" 1 "$con"
    if ! wait_for_marker "$con" '^TERN-GUEST-INIT ' 120 "$VMM_PID"; then
        # A guest crashing in early boot is the nested rig's (tests/rig/README.md).
        [ "$vmm" = qemu ] && rig_fault "QEMU round $round: its guest did not boot" "$con" "$WORK/$vmm-$round.out"
        no_init "$vmm round $round: no init marker" "$con" "$WORK/$vmm-$round.out"
    fi
    T_INIT=$(since_ms "$t0")
    wait_exit "$VMM_PID" 60 || fail "$vmm round $round: did not exit" "$con"
}

tern_all= qemu_all=
rounds=5
round=1
while [ $round -le $rounds ]; do
    for vmm in qemu tern; do
        time_boot $vmm $round
        bench vmm=$vmm round=$round time_to_init_ms=$T_INIT
        eval "${vmm}_all=\"\$${vmm}_all $T_INIT\""
    done
    round=$((round + 1))
done
median() { echo "$@" | tr ' ' '\n' | grep . | sort -n | sed -n "$(((rounds + 1) / 2))p"; }
tm=$(median $tern_all) qm=$(median $qemu_all)
ratio=$(awk -v t="$tm" -v q="$qm" 'BEGIN { printf "%.2f", t / q }')
bench summary=time_to_init tern_median_ms=$tm qemu_median_ms=$qm tern_over_qemu=$ratio target=0.5

# Memory overhead: keep a guest running (netserver job) and read tern's smaps.
con=$WORK/console-rss.log
start_vmm tern-rss "$TERN" run --kernel "$GUEST/vmlinux" --initrd "$GUEST/initramfs.cpio.gz" \
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
