# tests/e2e/cluster/lib.sh: a Corosync + Pacemaker cluster of namespace "hosts" inside
# one machine (the rig's L1), for tern-cluster.sh. Source after tests/e2e/lib.sh.
#
#   cluster_init N            N hosts node1..nodeN at 10.0.2.1N on L1's br0; state in
#                             $CL (= $WORK/cluster): nodeK/ (the host's writable
#                             directories), shared/ (storage every host sees as /shared),
#                             fence/ (the test fence switch's directory)
#   host_start K              starts nodeK (tests/e2e/cluster/host.sh in new namespaces)
#                             and gives it its link; host_wait K waits until Pacemaker runs
#   on_host K CMD...          runs CMD inside nodeK (its namespaces and root)
#   host_kill K               what the switch does: kills every process of nodeK, cuts
#                             its link; prints nothing
#   switch_start              the test fence switch (see cluster/fence_ternns): turns a
#                             host off on request; each request is logged with its time
#                             (ms) in $CL/fence/switch.log
#   resource_node RSC K       the node RSC runs on (crm_resource --locate, asked on
#                             nodeK), "" if none
#
# Needs: /cluster (the cluster root, resources/cluster/build.sh; the rig mounts it for
# scenarios with needs=cluster), iproute2 as $IP, busybox or util-linux unshare/nsenter.
: "${IP:=ip-full}"
: "${CLUSTER_ROOT:=/cluster}"
CL=$WORK/cluster

cluster_init() {
    CL_HOSTS=$1
    [ -x "$CLUSTER_ROOT/usr/sbin/pacemakerd" ] ||
        fail "no cluster root at $CLUSTER_ROOT (resources/cluster/build.sh; the rig mounts it for needs=cluster)"
    mkdir -p "$CL/shared" "$CL/fence"
    export CLUSTER_SHARED=$CL/shared CLUSTER_FENCE=$CL/fence
    export CLUSTER_FENCE_AGENT=$E2E_DIR/cluster/fence_ternns
    export CLUSTER_PAYLOAD=${CLUSTER_PAYLOAD:-$(dirname "$TERN")}
    export CLUSTER_OCF_AGENT=${CLUSTER_OCF_AGENT:-$CLUSTER_PAYLOAD/ocf/tern} IP
    [ -f "$CLUSTER_OCF_AGENT" ] || fail "the tern OCF agent is missing ($CLUSTER_OCF_AGENT)"
    _nodes=
    _k=1
    while [ $_k -le "$CL_HOSTS" ]; do
        _nodes="$_nodes
    node {
        ring0_addr: 10.0.2.1$_k
        name: node$_k
        nodeid: $_k
    }"
        _k=$((_k + 1))
    done
    _two=0
    [ "$CL_HOSTS" = 2 ] && _two=1
    _k=1
    while [ $_k -le "$CL_HOSTS" ]; do
        _s=$CL/node$_k
        mkdir -p "$_s/etc/corosync" "$_s/etc/tern" "$_s/var/log/corosync"
        # A token of 5 s: the L1 is an emulated machine, busy with guests; a shorter one
        # would see hosts die that are only slow.
        cat >"$_s/etc/corosync/corosync.conf" <<EOF
totem {
    version: 2
    cluster_name: tern-e2e
    transport: knet
    token: 5000
    crypto_cipher: none
    crypto_hash: none
}
nodelist {$_nodes
}
quorum {
    provider: corosync_votequorum
    two_node: $_two
}
logging {
    to_logfile: yes
    logfile: /var/log/corosync/corosync.log
    to_stderr: no
    to_syslog: no
    timestamp: on
}
EOF
        echo on >"$CL/fence/node$_k.state"
        _k=$((_k + 1))
    done
}

host_start() {
    _s=$CL/node$1
    rm -f "$_s/up" "$_s/failed"
    unshare -m -u -n -i -p -f sh "$E2E_DIR/cluster/host.sh" "node$1" "10.0.2.1$1" "$CLUSTER_ROOT" "$_s" \
        >>"$_s/unshare.out" 2>&1 </dev/null &
    _u=$!
    _lib_pids="$_lib_pids $_u"
    echo "$_u" >"$_s/unshare.pid"
    # The host's PID 1 is unshare's child; the network namespace is already unshare's.
    _i=0
    until _init=$(cat "/proc/$_u/task/$_u/children" 2>/dev/null) && [ -n "$_init" ]; do
        _i=$((_i + 1))
        [ $_i -lt 100 ] || fail "node$1's namespaces did not start" "$_s/unshare.out"
        sleep 0.05
    done
    _init=$(echo "$_init" | tr -d ' ')
    echo "$_init" >"$_s/init.pid"
    # Killed when the scenario ends (SIGKILL: a namespace's PID 1 ignores SIGTERM).
    _lib_pids="$_lib_pids $_init"
    "$IP" link add "hveth$1" type veth peer name eth0 netns "$_u" ||
        fail "cannot give node$1 its link"
    "$IP" link set "hveth$1" master br0
    "$IP" link set "hveth$1" up
}

host_wait() {
    _s=$CL/node$1
    _deadline=$(($(now_ms) + ${2:-240} * 1000))
    until [ -e "$_s/up" ]; do
        [ -e "$_s/failed" ] && fail "node$1: $(cat "$_s/failed")" "$_s/host.log" "$_s/var/log/corosync.out" \
            "$_s/var/log/pacemakerd.out"
        [ "$(now_ms)" -ge "$_deadline" ] && fail "node$1 did not come up in ${2:-240} s" "$_s/host.log" \
            "$_s/var/log/pacemaker/pacemaker.log"
        sleep 0.5
    done
}

on_host() {
    _k=$1
    shift
    nsenter -t "$(cat "$CL/node$_k/init.pid")" -m -u -n -i -p chroot "$CL/node$_k/root" "$@"
}

host_kill() {
    _pid=$(cat "$CL/node$1/init.pid" 2>/dev/null)
    [ -n "$_pid" ] && kill -KILL "$_pid" 2>/dev/null
    "$IP" link del "hveth$1" 2>/dev/null
    return 0
}

switch_start() {
    (
        while :; do
            for _r in "$CL"/fence/*.request; do
                [ -f "$_r" ] || continue
                _n=${_r##*/}
                _n=${_n%.request}
                echo "$(now_ms) off $_n $(cat "$_r")" >>"$CL/fence/switch.log"
                host_kill "${_n#node}"
                echo off >"$CL/fence/$_n.state"
                rm -f "$_r"
            done
            sleep 0.1
        done
    ) &
    _lib_pids="$_lib_pids $!"
    : >"$CL/fence/switch.ready"
}

resource_node() {
    on_host "$2" crm_resource --locate --resource "$1" 2>/dev/null |
        sed -n 's/.*is running on: *\([A-Za-z0-9-]*\).*/\1/p' | head -n 1
}
