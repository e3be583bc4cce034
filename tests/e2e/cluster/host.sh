#!/bin/sh
# One "host" of the cluster e2e: PID 1 of its own mount, UTS, network, IPC and PID
# namespaces (tern-cluster.sh starts it with `unshare -m -u -n -i -p -f`), so killing
# this process ends every process of the host at once.
#   host.sh NAME IP ROOTFS STATE
# ROOTFS: the cluster root (resources/cluster/build.sh), read-only. STATE: this host's
# directory in L1: its writable directories (etc/corosync, etc/tern, var/lib/pacemaker,
# var/lib/corosync, var/log, run, tmp), prepared by tern-cluster.sh, which also moves
# the host's link, eth0 (a veth whose peer is on L1's br0), into the network namespace.
# Binds in: $CLUSTER_PAYLOAD as /payload (tern, the guest), $CLUSTER_SHARED as /shared, $CLUSTER_FENCE as /fence, the test
# fence agent and the tern OCF agent. Then: lo and br0 (eth0 in it, IP on it: the VMs'
# TAPs join br0, so they are on L1's segment), Corosync, Pacemaker, `tern listen`.
# Writes STATE/up once Pacemaker runs; then waits for ever.
set -u
: "${IP:=ip-full}"
name=$1 ip=$2 rootfs=$3 state=$4
r=$state/root
say() { echo "host $name: $*" >>"$state/host.log"; }
die() { say "error: $*"; echo "$*" >"$state/failed"; exit 1; }

hostname "$name" || die "hostname failed"
mount --make-rprivate / 2>/dev/null
mkdir -p "$r"
mount --bind "$rootfs" "$r" || die "cannot bind the cluster root $rootfs"
mount -t proc proc "$r/proc" || die "cannot mount proc"
mount -t sysfs sysfs "$r/sys" || die "cannot mount sysfs"
mount --rbind /dev "$r/dev" || die "cannot bind /dev"
mount -t tmpfs -o mode=1777 tmpfs "$r/dev/shm" || die "cannot mount the host's own /dev/shm"
for d in etc/corosync etc/tern var/lib/pacemaker var/lib/corosync var/log run tmp; do
    mkdir -p "$state/$d"
    mount --bind "$state/$d" "$r/$d" || die "cannot bind $state/$d"
done
mount --bind "$CLUSTER_PAYLOAD" "$r/payload" || die "cannot bind the payload $CLUSTER_PAYLOAD"
mount --bind "$CLUSTER_SHARED" "$r/shared" || die "cannot bind the shared storage"
mount --bind "$CLUSTER_FENCE" "$r/fence" || die "cannot bind the fence switch directory"
mount --bind "$CLUSTER_FENCE_AGENT" "$r/usr/sbin/fence_ternns" || die "cannot bind the fence agent"
mount --bind "$CLUSTER_OCF_AGENT" "$r/usr/lib/ocf/resource.d/tern/tern" || die "cannot bind the OCF agent"
in_root() { chroot "$r" "$@"; }
in_root sh -c 'chown -R hacluster:haclient /var/lib/pacemaker && mkdir -p /var/log/pacemaker /var/log/tern /run/crm &&
    chown hacluster:haclient /var/log/pacemaker /run/crm' || die "cannot prepare Pacemaker's directories"

# Network: eth0 arrives from L1.
i=0
while ! "$IP" link show eth0 >/dev/null 2>&1; do
    i=$((i + 1))
    [ $i -lt 100 ] || die "eth0 never arrived"
    sleep 0.1
done
"$IP" link set lo up
"$IP" link add br0 type bridge || die "cannot add br0"
echo 0 >"$r/sys/class/net/br0/bridge/stp_state"
echo 0 >"$r/sys/class/net/br0/bridge/forward_delay"
"$IP" link set eth0 master br0
"$IP" addr add "$ip/24" dev br0
"$IP" link set eth0 up
"$IP" link set br0 up
say "network up: $ip on br0"

in_root /usr/sbin/corosync -f >>"$state/var/log/corosync.out" 2>&1 &
i=0
until in_root corosync-cfgtool -s >/dev/null 2>&1; do
    i=$((i + 1))
    [ $i -lt 300 ] || die "corosync did not start (var/log/corosync.out)"
    sleep 0.2
done
say "corosync up"
in_root env PCMK_logfile=/var/log/pacemaker/pacemaker.log /usr/sbin/pacemakerd >>"$state/var/log/pacemakerd.out" 2>&1 &
in_root /payload/tern listen --listen "$ip:7000" --tls-dir /etc/tern/tls --defs /etc/tern \
    >>"$state/var/log/tern/listen.log" 2>&1 &
i=0
until in_root crm_mon -1 2>/dev/null | grep -q "Stack: corosync"; do
    i=$((i + 1))
    [ $i -lt 600 ] || die "pacemaker did not start (var/log/pacemakerd.out)"
    sleep 0.2
done
say "pacemaker up"
: >"$state/up"
# PID 1 of the namespace: reap and wait for ever (the switch kills it).
while :; do
    wait
    sleep 1
done
