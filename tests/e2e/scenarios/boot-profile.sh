#!/bin/sh
# rig: timeout=600 needs=tern
# boot-profile (diagnostic, not in any suite): where the time to the init marker goes.
# For each VMM, one boot: wall time to TERN-GUEST-INIT, the guest's own uptime at that
# marker (so wall - uptime = VMM start-up, firmware and the kernel before its clock
# starts), the wall time to the first console byte, the console volume, the VMM's RSS
# and how much of it is transparent huge pages; for tern also its set-up phases and
# the exits that reached it (by port, with the time tern spent between KVM_RUN calls).
# With --l2-append boot_profile_full (a parameter the guest kernel ignores) the whole
# consoles are printed.
. "$E2E_DIR/lib.sh"
need_kvm
need_tern
# tern logs its set-up phases (QEMU ignores the variable).
export RUST_LOG=boot_timer=info,vmm::machine=debug,exit_profile=debug
# KVM's global exit counters (debugfs), to compare what each VMM's guest costs.
kvm_stats=/sys/kernel/debug/kvm
[ -d $kvm_stats ] || mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
stat_names="exits io_exits mmio_exits irq_exits halt_exits irq_injections insn_emulation pf_taken pf_fixed signal_exits irq_window_exits nmi_window_exits host_state_reload fpu_reload request_irq_exits"
kvm_counters() { for n in $stat_names; do cat $kvm_stats/$n 2>/dev/null || echo 0; done | tr '\n' ' '; }
for round in 1 2; do
for vmm in tern qemu; do
    con=$WORK/console-$vmm-$round.log
    rm -f "$con"; : >"$con"
    c0=$(kvm_counters)
    t0=$(now_ms)
    start_boot_job "$vmm" "$vmm" 1 "$con"
    # KVM's debugfs totals cover live VMs only, and the guest powers off right after
    # its marker: sample them while it runs and keep the last sample.
    samples=$WORK/kvm-$vmm-$round
    ( while alive "$VMM_PID"; do kvm_counters >"$samples.new" && mv "$samples.new" "$samples"; sleep 0.25; done ) &
    sampler=$!
    while [ ! -s "$con" ] && alive "$VMM_PID"; do sleep 0.02; done
    t_first=$(since_ms "$t0")
    wait_for_marker "$con" '^TERN-GUEST-INIT ' 120 "$VMM_PID" || fail "$vmm: no init marker" "$con"
    t_init=$(since_ms "$t0")
    # Guest RAM backed by transparent huge pages (the nested guest's page faults
    # then map 2 MiB at a time).
    thp_kb=$(awk '/^AnonHugePages:/ { print $2 }' /proc/"$VMM_PID"/smaps_rollup 2>/dev/null)
    rss_kb=$(awk '/^Rss:/ { print $2 }' /proc/"$VMM_PID"/smaps_rollup 2>/dev/null)
    up=$(echo "$MARKER_LINE" | sed -n 's/.*uptime=\([0-9.]*\).*/\1/p')
    wait_exit "$VMM_PID" 60
    wait "$sampler" 2>/dev/null
    c1=$(cat "$samples" 2>/dev/null)
    deltas=$(echo "$stat_names / $c0 / $c1" | awk -F' / ' '{ n = split($1, k, " "); split($2, a, " "); split($3, b, " ")
        for (i = 1; i <= n; i++) printf "%s%s=%d", (i > 1 ? " " : ""), k[i], b[i] - a[i] }')
    bench vmm=$vmm round=$round $deltas
    bytes=$(wc -c <"$con") lines=$(wc -l <"$con")
    setup=$(sed -n "s/.*vCPUs started.*ms=\([0-9]*\).*/\1/p" "$WORK/$vmm.out")
    bench vmm=$vmm round=$round setup_ms=${setup:-na} first_byte_ms=$t_first init_ms=$t_init guest_uptime_s=$up console_bytes=$bytes console_lines=$lines rss_kb=${rss_kb:-na} thp_kb=${thp_kb:-na}
    [ "$vmm" = tern ] && grep -a -E 'elapsed_us|vCPUs started|exits that reached' "$WORK/$vmm.out" | sed 's/^/  tern-setup| /'
    # The whole consoles with --l2-append boot_profile_full, else the milestones.
    case " $GUEST_APPEND " in
    *" boot_profile_full "*) sed "s/^/  $vmm| /" "$con" ;;
    *) grep -a -E 'Linux version|Calibrating|clocksource: Switched|Freeing unused kernel|Run /init|Trying to unpack|Freeing initrd' "$con" | sed "s/^/  $vmm| /" ;;
    esac
done
done
pass
