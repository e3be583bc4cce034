#!/bin/sh
# /init of the rig's L1 (a Debian cloud kernel under QEMU TCG with an emulated AMD-SVM CPU).
# Loads KVM, mounts the payload disk (guest artifacts, tern, tests/e2e), sets up br0 with
# tap0/tap1, then runs the scenarios named on the kernel command line in order:
#   tern.rig.plan=NAME:TIMEOUT,NAME:TIMEOUT   tern.rig.hb=SECONDS (heartbeat interval)
#   tern.rig.l2=WORD,WORD                     extra L2 kernel parameters (GUEST_APPEND)
#   tern.rig.disks=NAME,NAME                  the drives after the payload (vdb, vdc, ...):
#                                             distro (Debian disk images, writable through
#                                             a throwaway overlay) -> /distro, cluster (the
#                                             cluster e2e's host root, read-only) -> /cluster
# Markers on the console (the host side of the rig reads them):
#   TERN-RIG-L1-UP uptime=S kvm=yes|no cpus=N mem_kb=N
#   TERN-RIG-HEARTBEAT uptime=S load=L
#   TERN-RIG-SCENARIO-BEGIN name=N uptime=S
#   TERN-RIG-SCENARIO-TIMEOUT name=N seconds=S
#   TERN-RIG-SCENARIO-END name=N rc=RC uptime=S
#   TERN-RIG-DONE
#   TERN-RIG-ERROR msg
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mkdir -p /dev/pts /dev/shm /payload
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs tmpfs /dev/shm

for m in $(cat /lib/modules/tern/load-order); do
    insmod /lib/modules/tern/$m.ko || echo "TERN-RIG-ERROR insmod $m failed"
done

plan= hb=15 l2= disks=
for w in $(cat /proc/cmdline); do
    case "$w" in
    tern.rig.plan=*) plan=${w#*=} ;;
    tern.rig.hb=*) hb=${w#*=} ;;
    tern.rig.l2=*) l2=$(echo "${w#*=}" | tr ',' ' ') ;;
    tern.rig.disks=*) disks=$(echo "${w#*=}" | tr ',' ' ') ;;
    esac
done

i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
mount -t ext4 -o ro /dev/vda /payload || echo "TERN-RIG-ERROR cannot mount the payload disk /dev/vda"
# The extra drives rig.py attaches for scenarios with needs=distro or needs=cluster.
dev=b
for d in $disks; do
    opt=rw
    [ "$d" = cluster ] && opt=ro
    mkdir -p "/$d"
    mount -t ext4 -o $opt "/dev/vd$dev" "/$d" || echo "TERN-RIG-ERROR cannot mount the $d disk /dev/vd$dev"
    dev=$(echo $dev | tr 'b-y' 'c-z')
done
# Shared libraries the tern binary needs beyond those already here.
if [ -d /payload/lib ]; then
    for f in /payload/lib/*; do
        [ -e "/lib/x86_64-linux-gnu/${f##*/}" ] || ln -s "$f" "/lib/x86_64-linux-gnu/${f##*/}"
    done
fi

ip link set lo up
brctl addbr br0
# No STP, no forwarding delay: ports forward as soon as they are up.
echo 0 >/sys/class/net/br0/bridge/stp_state
echo 0 >/sys/class/net/br0/bridge/forward_delay
ip addr add 10.0.2.1/24 dev br0
ip link set br0 up
for t in tap0 tap1; do
    tunctl -t $t >/dev/null
    brctl addif br0 $t
    ip link set $t up
done

read up _ </proc/uptime
kvm=no; [ -c /dev/kvm ] && kvm=yes
echo "TERN-RIG-L1-UP uptime=$up kvm=$kvm cpus=$(nproc) mem_kb=$(awk '/MemTotal/ { print $2 }' /proc/meminfo)"

(
    while :; do
        sleep "$hb"
        read up _ </proc/uptime
        read l1 l5 _ </proc/loadavg
        echo "TERN-RIG-HEARTBEAT uptime=$up load=$l1"
    done
) &
hbpid=$!

for item in $(echo "$plan" | tr ',' ' '); do
    name=${item%%:*}; to=${item#*:}
    [ "$to" = "$item" ] && to=300
    work=/tmp/work/$name
    rm -rf "$work"; mkdir -p "$work"
    read up _ </proc/uptime
    echo "TERN-RIG-SCENARIO-BEGIN name=$name uptime=$up"
    script=/payload/e2e/scenarios/$name.sh
    if [ ! -f "$script" ]; then
        echo "TERN-SCENARIO name=$name result=fail reason=\"no scenario script $script\""
        echo "TERN-RIG-SCENARIO-END name=$name rc=127 uptime=$up"
        continue
    fi
    # The scenario runs in its own session so that a timeout ends it and everything it
    # started (VMMs in the background) at once.
    TERN=/payload/tern QEMU=/usr/bin/qemu-system-x86_64 GUEST=/payload/guest WORK=$work \
        BRIDGE_IP=10.0.2.1 TAPS="tap0 tap1" E2E_DIR=/payload/e2e SCENARIO=$name RIG_MODE=nested \
        GUEST_APPEND="$l2" setsid sh "$script" </dev/null &
    spid=$!
    setsid sh -c "sleep $to; echo \"TERN-RIG-SCENARIO-TIMEOUT name=$name seconds=$to\"; kill -TERM -$spid; sleep 3; kill -KILL -$spid" &
    wpid=$!
    wait $spid
    rc=$?
    kill -KILL -$wpid 2>/dev/null
    kill -KILL -$spid 2>/dev/null
    wait $wpid 2>/dev/null
    read up _ </proc/uptime
    echo "TERN-RIG-SCENARIO-END name=$name rc=$rc uptime=$up"
    rm -rf "$work"
done
kill $hbpid 2>/dev/null
echo "TERN-RIG-DONE"
sync
poweroff -f
