#!/bin/sh
# rig: timeout=60
# rig-selftest: checks the scenario environment itself (the contract in
# tests/rig/README.md): variables, guest artifacts, network, devices, tools, helpers.
# Needs no VMM; a failure here is a rig problem, whatever VMM is under test.
. "$E2E_DIR/lib.sh"
problems=
bad() { problems="$problems; $*"; }

for v in TERN QEMU GUEST WORK BRIDGE_IP TAPS E2E_DIR SCENARIO RIG_MODE; do
    eval "[ -n \"\${$v}\" ]" || bad "$v unset"
done
[ -x "$QEMU" ] || bad "QEMU '$QEMU' not executable"
for f in vmlinux bzImage initramfs.cpio.gz rootfs.ext4; do
    [ -s "$GUEST/$f" ] || bad "missing $GUEST/$f"
done
[ -d "$WORK" ] && [ -z "$(ls -A "$WORK")" ] || bad "WORK '$WORK' not an empty directory"
touch "$WORK/probe" 2>/dev/null || bad "WORK not writable"
[ -c /dev/kvm ] || bad "no /dev/kvm"
[ -c /dev/net/tun ] || bad "no /dev/net/tun"
[ "$RIG_MODE" = nested ] && { [ -c /dev/vhost-net ] || bad "no /dev/vhost-net"; }
ip -4 addr show 2>/dev/null | grep -q "inet $BRIDGE_IP/24" || bad "$BRIDGE_IP/24 not configured"
for t in $TAPS; do
    [ -e "/sys/class/net/$t" ] || { bad "no tap $t"; continue; }
    [ -e "/sys/class/net/$t/master" ] || [ -e "/sys/class/net/$t/brport" ] || bad "$t not in a bridge"
done
for c in netperf netserver tern-pattern awk sed grep nc wget ping timeout md5sum ip; do
    command -v "$c" >/dev/null 2>&1 || bad "missing command $c"
done
# Test data must match what the guest computes: a fixed sum (1 MiB of the disk pattern).
sum=$(tern-pattern disk 1 | md5sum | cut -d' ' -f1)
[ "$sum" = 0f11fad13662f02c3b5973c1a4fa6edb ] || bad "tern-pattern disk 1 sum $sum unexpected"
t0=$(now_ms)
sleep 0.2
dt=$(since_ms "$t0")
[ "$dt" -ge 150 ] && [ "$dt" -lt 2000 ] || bad "now_ms: 0.2 s measured as $dt ms"
if [ -x "$TERN" ]; then tern=yes; else tern=no; fi
step "mode=$RIG_MODE tern=$tern kernel=$(uname -r) cpus=$(nproc)"
bench mode=$RIG_MODE tern_present=$tern sleep_200ms_measured_ms=$dt
[ -z "$problems" ] || fail "${problems#; }"
pass
