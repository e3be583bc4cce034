#!/bin/sh
# rig: timeout=900 needs=tern,cluster
# tern-cluster: tern under Pacemaker. Two hosts, node1 and node2, are namespaces of L1
# (tests/e2e/cluster/: mount, UTS, network, IPC and PID namespaces, each with its own
# root over the cluster root of resources/cluster/build.sh, its own Corosync, Pacemaker
# and `tern listen` on 10.0.2.1N, its own br0 joined to L1's br0 through a veth pair).
# Storage both see: $CL/shared as /shared. Fencing: the test fence agent fence_ternns
# and a switch in L1 that kills a host's namespaces and cuts its link.
# The VM (resource vm1, ocf:tern:tern with allow-migrate, definition /etc/tern/vm1.toml
# on both hosts, mutual TLS with each host's own certificate): the default guest booting
# its root from /shared/vm1.ext4 (root=/dev/vda), on the dirty job (128 MiB, 8 MiB
# working set, a counter every second), at 10.0.2.15 on br0.
#   1. The cluster forms (both online) and starts vm1 on node1 (its preferred node);
#      L1 pings it.
#   2. `crm_resource --move` to node2: Pacemaker live-migrates it (migrate_to on node1,
#      migrate_from on node2) while L1 pings it every 10 ms; the guest's counter goes on
#      on node2 from where it was; every ping but those of the pause is answered.
#   3. node2 dies (the switch kills every process in its namespaces and cuts its link):
#      node1's Pacemaker sees it gone, fences it through fence_ternns, and starts vm1 on
#      node1 from the shared disk: the guest boots again (root=/dev/vda) and answers.
# Figures: migration under Pacemaker (the move command to Pacemaker reporting vm1 on
# node2; tern's downtime from the agent's log; the largest ping gap); failover (host
# death to the fence, and to the guest answering on node1).
. "$E2E_DIR/lib.sh"
. "$E2E_DIR/cluster/lib.sh"
need_kvm
need_tern
ip=10.0.2.15

cluster_init 2
cp "$GUEST/rootfs.ext4" "$CL/shared/vm1.ext4" || fail "cannot copy the guest's root to the shared storage"
for k in 1 2; do
    mkdir -p "$CL/node$k/etc/tern/tls"
    cp "$TLS_CERTS/node$k/ca.pem" "$TLS_CERTS/node$k/cert.pem" "$TLS_CERTS/node$k/key.pem" "$CL/node$k/etc/tern/tls/" ||
        fail "TLS test certificates for node$k missing ($TLS_CERTS/node$k: tests/tls/make-test-certs.sh makes them)"
    cat >"$CL/node$k/etc/tern/vm1.toml" <<EOF
name = "vm1"
cpus = 1
memory = "128M"
serial = "file=/var/log/tern/vm1.console"

[boot]
kernel = "/payload/guest/vmlinux"
initrd = "/payload/guest/initramfs.cpio.gz"
cmdline = "console=ttyS0 quiet root=/dev/vda tern.job=dirty tern.dirty_mb=8 tern.dirty_report=1 tern.ip=$ip/24 tern.acpid=1 $GUEST_APPEND"

[[disk]]
path = "/shared/vm1.ext4"

[[net]]
bridge = "br0"
mac = "52:54:00:12:34:99"

[migration]
tls-dir = "/etc/tern/tls"
EOF
done
switch_start
host_start 1
host_start 2
host_wait 1
host_wait 2
i=0
until on_host 1 crm_mon -1 2>/dev/null | grep -q 'Online: \[ node1 node2 \]'; do
    i=$((i + 1))
    [ $i -lt 240 ] || fail "the cluster did not form (both nodes online)" "$CL/node1/var/log/corosync/corosync.log" \
        "$CL/node1/var/log/pacemaker/pacemaker.log"
    sleep 0.5
done
step "cluster formed: node1 and node2 online"

# 1. Fencing, then the VM (created stopped, so that its preference for node1 is in place
#    before Pacemaker places it).
{
    on_host 1 crm_attribute --type crm_config --name stonith-action --update off &&
        on_host 1 cibadmin --create -o resources --xml-text '<primitive id="fence" class="stonith" type="fence_ternns">
  <instance_attributes id="fence-ia"><nvpair id="fence-hosts" name="pcmk_host_list" value="node1 node2"/></instance_attributes>
  <operations><op id="fence-monitor" name="monitor" interval="30s"/></operations></primitive>' &&
        on_host 1 cibadmin --create -o resources --xml-text '<primitive id="vm1" class="ocf" provider="tern" type="tern">
  <instance_attributes id="vm1-ia">
    <nvpair id="vm1-config" name="config" value="/etc/tern/vm1.toml"/>
    <nvpair id="vm1-binary" name="binary" value="/payload/tern"/>
    <nvpair id="vm1-map" name="migration_host_map" value="node1=10.0.2.11 node2=10.0.2.12"/>
    <nvpair id="vm1-shutdown" name="shutdown_timeout" value="20"/>
  </instance_attributes>
  <meta_attributes id="vm1-meta">
    <nvpair id="vm1-allow-migrate" name="allow-migrate" value="true"/>
    <nvpair id="vm1-target-role" name="target-role" value="Stopped"/>
  </meta_attributes>
  <operations>
    <op id="vm1-monitor" name="monitor" interval="5s" timeout="30s"/>
    <op id="vm1-start" name="start" interval="0" timeout="180s"/>
    <op id="vm1-stop" name="stop" interval="0" timeout="60s"/>
    <op id="vm1-migrate-to" name="migrate_to" interval="0" timeout="300s"/>
    <op id="vm1-migrate-from" name="migrate_from" interval="0" timeout="120s"/>
  </operations></primitive>' &&
        on_host 1 cibadmin --create -o constraints --xml-text \
            '<rsc_location id="vm1-prefers-node1" rsc="vm1" node="node1" score="100"/>' &&
        on_host 1 crm_resource --resource vm1 --meta --set-parameter target-role --parameter-value Started
} >"$WORK/configure.out" 2>&1 || fail "configuring the cluster failed" "$WORK/configure.out"
n1con=$CL/node1/var/log/tern/vm1.console
n2con=$CL/node2/var/log/tern/vm1.console
t_cfg=$(now_ms)
i=0
until [ "$(resource_node vm1 1)" = node1 ]; do
    i=$((i + 1))
    [ $i -lt 360 ] || fail "Pacemaker did not start vm1 on node1" "$CL/node1/var/log/pacemaker/pacemaker.log" \
        "$CL/node1/var/log/tern/vm1.log"
    sleep 0.5
done
wait_for_marker "$n1con" '^TERN-DIRTY counter=' 240 ||
    no_init "vm1 on node1 is not counting" "$n1con" "$CL/node1/var/log/tern/vm1.log"
i=0
until ping -c 1 -W 1 $ip >/dev/null 2>&1; do
    i=$((i + 1))
    [ $i -lt 400 ] || fail "L1 cannot ping vm1 on node1" "$n1con"
done
step "Pacemaker started vm1 on node1; it counts and answers pings ($(since_ms $t_cfg) ms after configuring)"

# 2. Live migration under Pacemaker.
counter() { grep -a '^TERN-DIRTY counter=' "$1" 2>/dev/null | sed -n 's/.*counter=\([0-9]*\).*/\1/p' | tail -n 1; }
ping -i 0.01 $ip >"$WORK/ping-migrate.log" 2>&1 &
ping_pid=$!
_lib_pids="$_lib_pids $ping_pid"
sleep 2
c_before=$(counter "$n1con")
t_move=$(now_ms)
on_host 1 crm_resource --move --resource vm1 --node node2 >"$WORK/move.out" 2>&1 || fail "crm_resource --move failed" "$WORK/move.out"
until [ "$(resource_node vm1 1)" = node2 ]; do
    [ "$(since_ms $t_move)" -lt 300000 ] || fail "Pacemaker did not move vm1 to node2 in 300 s" \
        "$CL/node1/var/log/pacemaker/pacemaker.log" "$CL/node2/var/log/tern/listen.log"
    sleep 0.2
done
move_ms=$(since_ms $t_move)
wait_for_marker "$n2con" '^TERN-DIRTY counter=' 30 || fail "vm1 does not count on node2" "$n2con" "$CL/node2/var/log/tern/listen.log"
sleep 3
kill -INT $ping_pid 2>/dev/null
wait $ping_pid 2>/dev/null
c_after=$(counter "$n2con")
[ -n "$c_before" ] && [ -n "$c_after" ] && [ "$c_after" -gt "$c_before" ] ||
    fail "vm1's counter did not go on on node2 (node1 at $c_before, node2 at $c_after)" "$n2con"
grep -q "migrate_to" "$CL/node1/var/log/pacemaker/pacemaker.log" ||
    fail "Pacemaker did not live-migrate vm1 (no migrate_to)" "$CL/node1/var/log/pacemaker/pacemaker.log"
# The largest gap, and where it began: ms after the move command (pings every 10 ms
# from 2 s before it).
set -- $(ping_gap "$WORK/ping-migrate.log")
gap=$1 gap_at=$(($2 - 2000))
answered=$(grep -c 'seq=' "$WORK/ping-migrate.log")
# The agent logs tern migrate's JSON report; Pacemaker logs each operation's result.
report=$(grep -a 'migrated to node2: {' "$CL/node1/var/log/pacemaker/pacemaker.log" | tail -n 1)
field() { echo "$report" | grep -a -o "\"$1\":[0-9.]*" | head -n 1 | cut -d: -f2; }
downtime=$(field downtime_ms)
step "tern migrate: total $(field total_ms) ms, $(field rounds) rounds, max throttle $(field max_throttle_percent)%, downtime $downtime ms"
grep -a -h 'Result of .* operation for vm1\|Initiating .* operation vm1' "$CL"/node*/var/log/pacemaker/pacemaker.log |
    sed 's/^/  | /' | tail -n 12
step "Pacemaker live-migrated vm1 to node2 in $move_ms ms (tern downtime ${downtime:-?} ms; largest ping gap $gap ms from +$gap_at ms, $answered pings answered); counter $c_before -> $c_after"
bench vmm=tern pacemaker_move_ms=$move_ms downtime_ms=${downtime:-unknown} ping_gap_ms=$gap

# 3. node2 dies; node1 fences it and restarts vm1 from the shared disk.
# node1's tern ended with the migration; a new start there writes a new console file.
mv "$n1con" "$n1con.first"
t_death=$(now_ms)
host_kill 2
i=0
until [ "$(cat "$CL/fence/node2.state")" = off ] && grep -q 'off node2' "$CL/fence/switch.log" 2>/dev/null; do
    [ "$(since_ms $t_death)" -lt 120000 ] || fail "node1 did not fence node2 within 120 s" \
        "$CL/node1/var/log/pacemaker/pacemaker.log"
    sleep 0.2
done
fence_ms=$(($(sed -n 's/^\([0-9]*\) off node2.*/\1/p' "$CL/fence/switch.log" | head -n 1) - t_death))
until [ "$(resource_node vm1 1)" = node1 ]; do
    [ "$(since_ms $t_death)" -lt 300000 ] || fail "Pacemaker did not restart vm1 on node1 after the fence" \
        "$CL/node1/var/log/pacemaker/pacemaker.log" "$CL/node1/var/log/tern/vm1.log"
    sleep 0.2
done
until ping -c 1 -W 1 $ip >/dev/null 2>&1; do
    [ "$(since_ms $t_death)" -lt 400000 ] || fail "vm1 restarted on node1 does not answer pings" "$n1con" \
        "$CL/node1/var/log/tern/vm1.log"
done
failover_ms=$(since_ms $t_death)
grep -a -q '^TERN-GUEST-INIT .*root=/dev/vda' "$n1con" ||
    fail "vm1 on node1 did not boot again from the shared disk" "$n1con"
on_host 1 crm_mon -1 >"$WORK/crm_mon.out" 2>&1
grep -q 'OFFLINE: \[ node2 \]' "$WORK/crm_mon.out" || fail "crm_mon does not show node2 offline" "$WORK/crm_mon.out"
step "node2 died: fenced after $fence_ms ms; vm1 answers on node1 after $failover_ms ms (booted from /shared/vm1.ext4)"
bench vmm=tern failover_fence_ms=$fence_ms failover_ms=$failover_ms
pass
