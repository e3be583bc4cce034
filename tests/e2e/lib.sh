# tests/e2e/lib.sh: helpers for e2e scenarios (POSIX sh; busybox in the rig's L1).
# Source it first thing:   . "$E2E_DIR/lib.sh"
#
# Environment given to every scenario (see tests/rig/README.md):
#   TERN QEMU GUEST WORK BRIDGE_IP TAPS E2E_DIR SCENARIO RIG_MODE GUEST_APPEND
#
# Results (exactly one per scenario; pass and fail also exit the script):
#   pass                      -> TERN-SCENARIO name=$SCENARIO result=pass
#   fail "reason" [LOG...]    -> shows the last lines of each LOG, then
#                                TERN-SCENARIO name=$SCENARIO result=fail reason="reason"
#   bench key=value ...       -> TERN-BENCH name=$SCENARIO key=value ...
#
# Processes:
#   start_vmm LABEL CMD...    runs CMD in the background, stdout+stderr to $WORK/LABEL.out;
#                             sets VMM_PID; every started process is killed when the
#                             scenario exits (pass, fail, or error)
#   wait_for_marker FILE REGEX TIMEOUT_S [PID]
#                             polls FILE (e.g. a guest console) for an extended regex;
#                             0 and MARKER_LINE on a match, 1 on timeout (or as soon as
#                             PID, when given, has exited without the match)
#   wait_exit PID TIMEOUT_S   0 when PID exited in time (its exit code in EXIT_RC), else 1
#   alive PID                 0 while PID runs (zombies count as exited)
#   start_boot_job LABEL tern|qemu CPUS CONSOLE [EXTRA_CMDLINE]
#                             start_vmm for the default guest's boot job (512 MiB; QEMU
#                             with -kernel vmlinux), its console in the file CONSOLE;
#                             EXTRA_CMDLINE is appended to the guest's command line
#   qemu_monitored LABEL TAP MONITOR_PORT [EXTRA...]
#                             start_vmm for QEMU on the default guest (vmlinux + initramfs,
#                             ${mem}M, 1 vCPU, command line $args, console in
#                             $WORK/LABEL.log, virtio-net on TAP with MAC 52:54:00:12:34:56,
#                             HMP on 127.0.0.1:MONITOR_PORT); EXTRA goes to QEMU
#   hmp PORT COMMAND          one HMP command over TCP; prints the monitor's answer
#   stop_pid PID              TERM, then KILL after 3 s
#   show_log FILE [N]         last N (50) lines of FILE, each prefixed with "  | " so that
#                             guest kernel messages never look like the L1 kernel's own
#   need_tern / need_kvm      fail clearly when the tern binary or /dev/kvm is missing
#
# Pings (a `ping -i 0.01` log):
#   ping_gap LOG              prints the largest gap between answered pings in ms and
#                             where it began (ms after the first ping sent)
#
# Time (milliseconds, wall clock):
#   now_ms                    prints the current time in ms
#   since_ms T0               prints now_ms - T0
#   step "text"               prints "[SCENARIO +ms] text" (ms since the scenario started)

: "${SCENARIO:=$(basename "$0" .sh)}"
: "${WORK:=/tmp/tern-e2e/$SCENARIO}"
mkdir -p "$WORK"
_lib_pids=
_lib_done=

case "$(date +%s%3N 2>/dev/null)" in
*[!0-9]* | "") # busybox date has no %N: adjtimex reports the time in microseconds
    now_ms() { adjtimex | awk '/tv_sec/ { s = $2 } /tv_usec/ { u = $2 } END { printf "%d%03d\n", s, u / 1000 }'; } ;;
*) now_ms() { date +%s%3N; } ;;
esac
since_ms() { echo $(($(now_ms) - $1)); }
_lib_t0=$(now_ms)
step() { echo "[$SCENARIO +$(since_ms "$_lib_t0")ms] $*"; }

_lib_cleanup() {
    for _p in $_lib_pids; do
        kill -TERM "$_p" 2>/dev/null
    done
    for _p in $_lib_pids; do
        _i=0
        while alive "$_p" && [ $_i -lt 30 ]; do sleep 0.1; _i=$((_i + 1)); done
        kill -KILL "$_p" 2>/dev/null
    done
}
trap '_lib_cleanup' EXIT
trap 'fail "interrupted (signal)"' INT TERM HUP

show_log() {
    if [ -f "$1" ]; then
        echo "  --- last ${2:-50} lines of $1"
        tail -n "${2:-50}" "$1" | sed 's/^/  | /'
    else
        echo "  --- $1: no such file"
    fi
}

pass() {
    [ -n "$_lib_done" ] && return
    _lib_done=1
    echo "TERN-SCENARIO name=$SCENARIO result=pass"
    exit 0
}

# A guest console on a FIFO whose VMM has died must not kill the scenario with
# SIGPIPE: the write fails and the scenario reports what happened.
trap '' PIPE

# What a guest console (or a VMM's log) shows when the guest kernel crashed.
CRASH_SIGNATURES='Kernel panic|BUG: unable to handle|Oops|triple fault|double fault|general protection fault'

# early_boot_fault CONSOLE [LOGS...]: a guest has not printed its init marker. The
# nested rig crashes or freezes L2 guests of every VMM now and then in early boot (see
# tests/rig/README.md: QEMU's own guests triple-fault and hang there too). Returns 0,
# the reason in EARLY_BOOT_FAULT, when the guest went wrong in that way:
#   - the console (or a log) shows a crash (kernel panic, oops, double/triple fault);
#   - the kernel stopped before it started init ("Run /init" never printed).
# Returns 1 when the guest started init (it got stuck or failed after that).
early_boot_fault() {
    _con=$1
    shift
    EARLY_BOOT_FAULT=
    grep -a -q '^TERN-GUEST-INIT' "$_con" 2>/dev/null && return 1
    # Each file on its own: a console that stopped mid-line must not glue its last
    # bytes to the first line of the next log.
    _crash=$(grep -a -h -m 1 -E "$CRASH_SIGNATURES" "$_con" "$@" 2>/dev/null | head -n 1 | tr -d '\r')
    if [ -n "$_crash" ]; then
        EARLY_BOOT_FAULT="L2 guest crashed in early boot: $_crash"
        return 0
    fi
    if ! grep -a -q 'Run /init' "$_con" 2>/dev/null; then
        _last=$(tail -n 1 "$_con" 2>/dev/null | tr -d '\r' | cut -c1-100)
        EARLY_BOOT_FAULT="L2 guest stopped in early boot, before init; last console output: $_last"
        return 0
    fi
    return 1
}

# no_init REASON CONSOLE [LOGS...]: a guest did not reach its init marker. An early-boot
# fault (above) is a rig fault, retried on a fresh L1 (a deterministic boot bug fails
# every retry); a guest that started init and then got stuck or failed is a failure.
no_init() {
    _why=$1 _con=$2
    shift 2
    early_boot_fault "$_con" "$@" && rig_fault "$_why ($EARLY_BOOT_FAULT)" "$_con" "$@"
    fail "$_why" "$_con" "$@"
}

# threads_cpu PID [SECONDS]: prints, per thread of PID, its name and the CPU time (in
# clock ticks) it used over SECONDS (default 1): tells a spinning vCPU or worker from
# an idle one when a guest looks stuck.
threads_cpu() {
    _snap() { for _t in /proc/$1/task/*; do
        [ -r "$_t/stat" ] && echo "$(cat "$_t/comm" 2>/dev/null) $(awk '{ print $14 + $15 }' "$_t/stat")"
    done; }
    _snap "$1" >"$WORK/.cpu0"
    sleep "${2:-1}"
    _snap "$1" >"$WORK/.cpu1"
    awk 'NR == FNR { t[FNR] = $2; next } { printf "%s%s=%d", (FNR > 1 ? " " : ""), $1, $2 - t[FNR] } END { print "" }' \
        "$WORK/.cpu0" "$WORK/.cpu1"
}

# net_guest_ended REASON CONSOLE TERN_LOG: a tern guest under network load ended before
# its netperf figures. When tern reports a triple fault (KVM_EXIT_SHUTDOWN) and the
# guest's console shows no crash message at all, the CPU reset the guest silently:
# QEMU's own guests, with userspace virtio-net and with vhost-net alike, reset exactly
# so in the middle of netperf in the rig (tests/rig/README.md), so that is a rig fault,
# retried on a fresh L1. Anything else (a panic or oops, tern failing, a guest stuck)
# is a failure.
net_guest_ended() {
    _why=$1 _con=$2 _log=$3
    _reset=$(grep -a -m 1 'guest crashed: vCPU [0-9]* triple fault' "$_log" 2>/dev/null)
    if [ -n "$_reset" ] && ! grep -a -q -E "$CRASH_SIGNATURES" "$_con" 2>/dev/null; then
        rig_fault "$_why (L2 guest reset silently under network load: $_reset)" "$_con" "$_log"
    fi
    fail "$_why" "$_con" "$_log"
}

# rig_fault REASON [LOGS...]: the nested rig broke the scenario's L2 guest (QEMU anchors
# whose own guest did not boot; tern scenarios only through no_init and
# net_guest_ended). The rig retries
# the scenario on a fresh L1.
rig_fault() { _end rig-fault "$@"; }

fail() { _end fail "$@"; }

# _end RESULT REASON [LOGS...]: shows the logs and prints the one result marker.
_end() {
    [ -n "$_lib_done" ] && exit 1
    _lib_done=1
    _res=$1
    _r=$(printf '%s' "$2" | tr '"\n' "' ")
    shift 2
    for _f in "$@"; do show_log "$_f"; done
    echo "TERN-SCENARIO name=$SCENARIO result=$_res reason=\"$_r\""
    exit 1
}

bench() { echo "TERN-BENCH name=$SCENARIO $*"; }

ping_gap() {
    sed -n 's/.*seq=\([0-9]*\).*/\1/p' "$1" |
        awk 'NR > 1 { g = $1 - p; if (g > m) { m = g; at = p } } { p = $1 } END { print m * 10, at * 10 }'
}

need_kvm() { [ -c /dev/kvm ] || fail "no /dev/kvm here"; }
need_tern() {
    [ -n "$TERN" ] && [ -x "$TERN" ] || fail "tern binary missing ($TERN): build it with cargo build --release"
}
# Migration TLS certificates (tests/tls/make-test-certs.sh, made by rig.py): dest/,
# source/ (same CA) and rogue/ (another CA), each with ca.pem, cert.pem, key.pem.
TLS_CERTS=${TLS_CERTS:-$(dirname "${GUEST:-.}")/tls}
need_tls() {
    for _d in dest source rogue; do
        [ -f "$TLS_CERTS/$_d/key.pem" ] || fail "TLS test certificates missing ($TLS_CERTS/$_d): rig.py makes them with tests/tls/make-test-certs.sh"
    done
}

# need_generic_guest: the guest with Debian's generic kernel (VMGENID driver built in),
# target/guest/generic, made by resources/guest/build-generic.sh; sets G to it.
need_generic_guest() {
    G=$GUEST/generic
    for _f in bzImage initramfs.cpio.gz; do
        [ -s "$G/$_f" ] || fail "missing $G/$_f (resources/guest/build-generic.sh, run by build.sh, failed?)"
    done
}

alive() {
    [ -e "/proc/$1/stat" ] || return 1
    _st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)
    [ -n "$_st" ] && [ "$_st" != Z ] && [ "$_st" != X ]
}

start_vmm() {
    _label=$1
    shift
    "$@" >"$WORK/$_label.out" 2>&1 </dev/null &
    VMM_PID=$!
    _lib_pids="$_lib_pids $VMM_PID"
    echo "$VMM_PID" >"$WORK/$_label.pid"
}

# net_bench_guest: the netperf load of net-bench and net-soak: sets `append` (the
# guest's command line for 8 tests of NET_BENCH_SECONDS (default 5) each: TCP_STREAM
# at 128..2048 bytes with 8 KiB socket buffers, TCP_MAERTS, TCP_RR, UDP_RR) and
# starts netserver on the host side.
net_bench_guest() {
    secs=${NET_BENCH_SECONDS:-5}
    _tests=
    for _size in 128 256 512 1024 2048; do _tests="$_tests,TCP_STREAM:$secs:$_size"; done
    _tests="${_tests#,},TCP_MAERTS:$secs:16384,TCP_RR:$secs:1,UDP_RR:$secs:1"
    append="console=ttyS0 tern.job=netperf tern.ip=10.0.2.15/24 tern.peer=$BRIDGE_IP tern.netperf=$_tests tern.netperf_buf=8192 $GUEST_APPEND"
    start_vmm netserver netserver -D -p 12865
    sleep 0.5
}

start_boot_job() {
    _label=$1 _vmm=$2 _cpus=$3 _con=$4 _cmdline="console=ttyS0 tern.job=boot $GUEST_APPEND ${5:-}"
    if [ "$_vmm" = qemu ]; then
        start_vmm "$_label" "$QEMU" -accel kvm -cpu host -m 512M -smp "$_cpus" -kernel "$GUEST/vmlinux" \
            -initrd "$GUEST/initramfs.cpio.gz" -append "$_cmdline" \
            -display none -nodefaults -no-reboot -serial "file:$_con"
    else
        start_vmm "$_label" "$TERN" run --on-reboot exit --kernel "$GUEST/vmlinux" --initrd "$GUEST/initramfs.cpio.gz" \
            --cpus "$_cpus" --memory 512M --cmdline "$_cmdline" --serial "file=$_con"
    fi
}

qemu_monitored() {
    _l=$1 _tap=$2 _port=$3
    shift 3
    start_vmm "$_l" "$QEMU" -accel kvm -cpu host -m "${mem}M" -smp 1 \
        -kernel "$GUEST/vmlinux" -initrd "$GUEST/initramfs.cpio.gz" -append "$args" \
        -display none -nodefaults -no-reboot -serial "file:$WORK/$_l.log" \
        -netdev "tap,id=n0,ifname=$_tap,script=no,downscript=no" \
        -device virtio-net-pci,netdev=n0,romfile=,mac=52:54:00:12:34:56 \
        -monitor "tcp:127.0.0.1:$_port,server=on,wait=off" "$@"
}

hmp() {
    { echo "$2"; sleep 0.5; } | nc 127.0.0.1 "$1" 2>/dev/null | tr -d '\r'
}

stop_pid() {
    kill -TERM "$1" 2>/dev/null
    _i=0
    while alive "$1" && [ $_i -lt 30 ]; do sleep 0.1; _i=$((_i + 1)); done
    kill -KILL "$1" 2>/dev/null
    wait "$1" 2>/dev/null
}

wait_for_marker() {
    _f=$1 _re=$2 _deadline=$(($(now_ms) + $3 * 1000)) _pid=${4:-}
    MARKER_LINE=
    while :; do
        _gone=
        [ -n "$_pid" ] && ! alive "$_pid" && _gone=1
        if [ -f "$_f" ]; then
            MARKER_LINE=$(grep -a -E -m 1 "$_re" "$_f" 2>/dev/null)
            if [ -n "$MARKER_LINE" ]; then
                # The VMM may be in the middle of writing that line: wait (briefly)
                # until the file ends with a newline, then read the whole line.
                _n=0
                while [ "$(tail -c 1 "$_f" | od -An -c | tr -d ' ')" != '\n' ] && [ $_n -lt 40 ]; do
                    sleep 0.05; _n=$((_n + 1))
                done
                MARKER_LINE=$(grep -a -E -m 1 "$_re" "$_f" 2>/dev/null)
                return 0
            fi
            # A guest kernel that panicked prints nothing more (its VMM lives on):
            # the caller's classifier reads why, without waiting out the time limit.
            grep -q -a -F -- '---[ end Kernel panic' "$_f" 2>/dev/null && return 1
        fi
        # The process ended before this look at the file: nothing more will come.
        [ -n "$_gone" ] && return 1
        [ "$(now_ms)" -ge "$_deadline" ] && return 1
        sleep 0.05
    done
}

# clone_ended WHAT I: clone I's VMM ended. A restored guest that triple-faulted (tern
# says so; QEMU under -no-reboot ends silently) is the rig's: with 8 restores at once
# QEMU's clones (qemu-clones) die so at the same rate as tern's (tests/rig/README.md,
# "Snapshots, restores and clones"). Anything else is a failure.
clone_ended() {
    _o="$WORK/clone$2.out"
    if grep -a -q -E 'guest crashed: vCPU [0-9]+ triple fault' "$_o" 2>/dev/null ||
        { [ "$1" = "QEMU clone" ] && ! grep -a -q . "$_o" 2>/dev/null; }; then
        rig_fault "$1 $2 triple-faulted after its restore (8 restores at once)" "$WORK/clone$2.log" "$_o"
    fi
    fail "$1 $2 ended" "$WORK/clone$2.log" "$_o"
}

# last_counter: the counter of the last "counter=N" line on stdin.
last_counter() { sed -n 's/.*counter=\([0-9]*\).*/\1/p' | tail -n 1; }

# clones_counting WHAT SNAP_COUNTER PID...: the clone with the i-th PID (1, 2, ...)
# logs to $WORK/clone<i>.log; each must print a TERN-DIRTY counter at least the
# snapshot's within 300 s.
clones_counting() {
    _what=$1 _snap=$2
    shift 2
    _i=1
    for _pid in "$@"; do
        if ! wait_for_marker "$WORK/clone$_i.log" '^TERN-DIRTY counter=' 300 "$_pid"; then
            alive "$_pid" || clone_ended "$_what" "$_i"
            fail "$_what $_i does not count" "$WORK/clone$_i.log" "$WORK/clone$_i.out"
        fi
        _c=$(echo "$MARKER_LINE" | last_counter)
        [ "$_c" -ge "$_snap" ] || fail "$_what $_i counts from $_c, before the snapshot's $_snap" "$WORK/clone$_i.log"
        _i=$((_i + 1))
    done
}
# clones_advancing WHAT PID...: then each clone's counter must go past its first
# (within 120 s) and its VMM still run.
clones_advancing() {
    _what=$1
    shift
    _i=1
    for _pid in "$@"; do
        _first=$(grep -a -m 1 '^TERN-DIRTY counter=' "$WORK/clone$_i.log" | last_counter)
        _j=0
        while [ "$(grep -a '^TERN-DIRTY counter=' "$WORK/clone$_i.log" | last_counter)" -le "$_first" ]; do
            alive "$_pid" || clone_ended "$_what" "$_i"
            _j=$((_j + 1))
            [ $_j -lt 120 ] || fail "$_what $_i's counter stays at $_first" "$WORK/clone$_i.log" "$WORK/clone$_i.out"
            sleep 1
        done
        alive "$_pid" || clone_ended "$_what" "$_i"
        _i=$((_i + 1))
    done
}

wait_exit() {
    _deadline=$(($(now_ms) + $2 * 1000))
    while alive "$1"; do
        [ "$(now_ms)" -ge "$_deadline" ] && return 1
        sleep 0.05
    done
    wait "$1"
    EXIT_RC=$?
    return 0
}
