#!/bin/sh
# rig: timeout=600 needs=tern
# tern-fleet: a VM from a definition file on a bridge, controlled by name.
#   1. /tmp/.../fleet1.toml: the default guest (netserver job, busybox acpid handling
#      the power button: tern.acpid=1), 2 vCPUs, a NIC on br0 (`bridge = "br0"`: tern
#      makes the TAP), console to a file; `tern run --config FILE` with --memory on the
#      command line over the file's value.
#   2. `tern list` shows it running with its vCPUs and the overridden memory; L1 pings the
#      guest through the bridge TAP; `tern pause` stops its clock (info says paused, pings
#      stop being answered), `tern resume` brings it back.
#   3. `tern shutdown fleet1`: the guest's acpid sees the power button and powers off
#      (TERN-GUEST-POWER-BUTTON on its console), tern exits 0, the TAP is gone.
#   4. A second VM whose guest ignores the button (no acpid): `tern shutdown --timeout 5`
#      stops it after the timeout with one line and status 1; tern ends.
#   5. A definition with an unknown key, and a second VM with a running VM's name: one
#      line each, non-zero, and the running VM is untouched.
# Figures: time from `tern shutdown` to tern's exit (graceful), and to the hard stop.
. "$E2E_DIR/lib.sh"
need_kvm
need_tern
ip=10.0.2.15
def=$WORK/fleet1.toml
cat >"$def" <<EOT
name = "fleet1"
cpus = 2
memory = "256M"
on-reboot = "exit"
serial = "file=$WORK/fleet1.console"

[boot]
kernel = "$GUEST/vmlinux"
initrd = "$GUEST/initramfs.cpio.gz"
cmdline = "console=ttyS0 quiet tern.job=netserver tern.acpid=1 tern.ip=$ip/24 $GUEST_APPEND"

[[net]]
bridge = "br0"
mac = "52:54:00:12:34:77"
EOT
start_vmm fleet1 "$TERN" run --config "$def" --memory 384M
pid1=$VMM_PID
wait_for_marker "$WORK/fleet1.console" '^TERN-JOB netserver ready' 120 "$pid1" ||
    no_init "fleet1 did not come up" "$WORK/fleet1.console" "$WORK/fleet1.out"

# 2. list, ping, pause, resume.
"$TERN" list >"$WORK/list.out" 2>&1 || fail "tern list failed" "$WORK/list.out"
grep -E '^fleet1 +running +2 ' "$WORK/list.out" >/dev/null || fail "tern list does not show fleet1 running with 2 vCPUs" "$WORK/list.out"
grep '^fleet1 ' "$WORK/list.out" | grep -q '384' || fail "tern list does not show the command line's 384M over the file's 256M" "$WORK/list.out"
tap=$(ls /sys/class/net/br0/brif/ | grep '^ternbr' | head -n 1)
[ -n "$tap" ] || fail "no ternbrN TAP on br0" "$WORK/fleet1.out"
i=0
until ping -c 1 -W 1 $ip >"$WORK/ping.out" 2>&1; do
    i=$((i + 1))
    [ $i -lt 20 ] || fail "L1 cannot ping fleet1 through the bridge TAP $tap" "$WORK/ping.out" "$WORK/fleet1.console"
done
step "fleet1 runs from its definition on $tap: $(grep '^fleet1 ' "$WORK/list.out")"
"$TERN" pause fleet1 >"$WORK/pause.out" 2>&1 || fail "tern pause failed" "$WORK/pause.out"
"$TERN" info fleet1 >"$WORK/info.out" 2>&1 || fail "tern info failed" "$WORK/info.out"
grep -q -i 'paused' "$WORK/info.out" || fail "tern info does not say paused" "$WORK/info.out"
ping -c 2 -W 1 $ip >/dev/null 2>&1 && fail "the paused guest answers pings"
"$TERN" resume fleet1 >"$WORK/resume.out" 2>&1 || fail "tern resume failed" "$WORK/resume.out"
ping -c 3 -W 2 $ip >/dev/null 2>&1 || fail "the resumed guest does not answer pings" "$WORK/fleet1.console"
step "paused (no pings answered) and resumed"

# 5. Bad input while fleet1 runs.
printf 'name = "fleet9"\ncpus = 1\nflavour = "big"\n' >"$WORK/bad.toml"
"$TERN" run --config "$WORK/bad.toml" >"$WORK/bad.out" 2>&1 && fail "a definition with an unknown key was accepted" "$WORK/bad.out"
[ "$(wc -l <"$WORK/bad.out")" = 1 ] && grep -q 'bad.toml:3.*flavour' "$WORK/bad.out" ||
    fail "the unknown key is not one line naming file, line and key" "$WORK/bad.out"
"$TERN" run --config "$def" --serial null >"$WORK/dup.out" 2>&1 && fail "a second VM named fleet1 started" "$WORK/dup.out"
grep -q 'fleet1' "$WORK/dup.out" || fail "the duplicate name's error does not name it" "$WORK/dup.out"
alive $pid1 || fail "fleet1 ended after the refused duplicate" "$WORK/fleet1.out"
step "refused: $(cat "$WORK/bad.out") / $(head -n 1 "$WORK/dup.out")"

# 3. Graceful shutdown through the power button.
t0=$(now_ms)
"$TERN" shutdown fleet1 --timeout 60 >"$WORK/shutdown.out" 2>&1 || fail "tern shutdown fleet1 failed" "$WORK/shutdown.out" "$WORK/fleet1.console"
wait_exit $pid1 30 || fail "fleet1's tern still runs after shutdown returned" "$WORK/fleet1.out"
graceful_ms=$(since_ms "$t0")
[ "$EXIT_RC" = 0 ] || fail "fleet1's tern exited with $EXIT_RC" "$WORK/fleet1.out"
grep -a -q '^TERN-GUEST-POWER-BUTTON' "$WORK/fleet1.console" || fail "the guest did not see the power button" "$WORK/fleet1.console"
grep -a -q '^TERN-GUEST-POWEROFF' "$WORK/fleet1.console" || fail "the guest did not power itself off" "$WORK/fleet1.console"
# tern's TAP cleaner (a child that outlives it) deletes the TAP once tern is gone.
i=0
while [ -e "/sys/class/net/$tap" ]; do
    i=$((i + 1))
    [ $i -lt 50 ] || fail "the bridge TAP $tap is still there 5 s after tern exited"
    sleep 0.1
done
"$TERN" list >"$WORK/list2.out" 2>&1
grep -q '^fleet1 ' "$WORK/list2.out" && fail "tern list still shows fleet1" "$WORK/list2.out"
step "graceful shutdown in $graceful_ms ms: the guest's own power-off ran; $tap removed"

# 4. A guest that ignores the button: stopped after the timeout.
sed -e 's/fleet1/fleet2/g' -e 's/ tern.acpid=1//' -e 's/12:34:77/12:34:78/' "$def" >"$WORK/fleet2.toml"
start_vmm fleet2 "$TERN" run --config "$WORK/fleet2.toml"
pid2=$VMM_PID
wait_for_marker "$WORK/fleet2.console" '^TERN-JOB netserver ready' 120 "$pid2" ||
    no_init "fleet2 did not come up" "$WORK/fleet2.console" "$WORK/fleet2.out"
t0=$(now_ms)
"$TERN" shutdown fleet2 --timeout 5 >"$WORK/shutdown2.out" 2>&1 && fail "shutdown of a guest ignoring the button reported success" "$WORK/shutdown2.out"
hard_ms=$(since_ms "$t0")
[ "$(wc -l <"$WORK/shutdown2.out")" = 1 ] || fail "the forced stop is not one line" "$WORK/shutdown2.out"
wait_exit $pid2 20 || fail "fleet2 still runs after the forced stop" "$WORK/fleet2.out"
grep -a -q '^TERN-GUEST-POWEROFF' "$WORK/fleet2.console" && fail "fleet2's guest powered off by itself: the test proves nothing" "$WORK/fleet2.console"
[ "$hard_ms" -ge 5000 ] || fail "fleet2 was stopped after $hard_ms ms, before its 5 s timeout"
step "ignored button: stopped after $hard_ms ms ($(cat "$WORK/shutdown2.out"))"
bench vmm=tern graceful_shutdown_ms=$graceful_ms forced_stop_ms=$hard_ms
pass
