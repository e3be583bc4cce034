#!/usr/bin/env bash
# Builds the root file system the cluster e2e's "hosts" run in (tests/e2e/scenarios/
# tern-cluster.sh): Debian bookworm minbase with Corosync, Pacemaker (and its command-line
# tools), Debian's resource-agents (the OCF shell functions the tern agent uses),
# iproute2, procps and ping, from Debian's packages only (mmdebstrap). No systemd: the
# hosts are namespaces inside the rig's L1, whose /init starts Corosync and Pacemaker
# directly (tests/e2e/cluster/host.sh).
#
# Output: target/cluster/rootfs.ext4 (ext4 of the tree, ~260 MiB used), mounted read-only
# by every host; each host binds its own writable directories over it (/etc/corosync,
# /etc/tern, /var/lib/pacemaker, /var/lib/corosync, /var/log, /run, /tmp). Empty mount
# points are made for what the e2e binds in at run time: /payload (tern, guest
# artifacts), /shared (the hosts' shared storage), /fence (the test fence switch),
# /usr/sbin/fence_ternns (the test fence agent) and /usr/lib/ocf/resource.d/tern/tern
# (resources/ocf/tern).
# Rebuilt when this script changes (a stamp beside the image).
# Usage: resources/cluster/build.sh [--force]      Needs root (mmdebstrap root mode).
set -euo pipefail
{
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=$root/target/cluster
cache=$root/target/cluster-cache
mirror=http://deb.debian.org/debian
packages=pacemaker,corosync,pacemaker-cli-utils,resource-agents,iproute2,procps,iputils-ping

die() { echo "cluster/build.sh: $*" >&2; exit 1; }
say() { echo "cluster/build.sh: $*" >&2; }

force=0
[ "${1:-}" = --force ] && force=1
[ "$(id -u)" = 0 ] || die "needs root (mmdebstrap in root mode)"
for pt in mmdebstrap:mmdebstrap e2fsprogs:mkfs.ext4; do
    command -v "${pt#*:}" >/dev/null && continue
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pt%%:*}" >/dev/null ||
        die "cannot install ${pt%%:*}"
done

stamp=$( (cat "$0"; echo "$packages") | sha256sum | cut -c1-16)
if [ $force = 0 ] && [ -s "$out/rootfs.ext4" ] && [ "$(cat "$out/rootfs.ext4.stamp" 2>/dev/null)" = "$stamp" ]; then
    exit 0
fi
mkdir -p "$out" "$cache"
tree=$cache/tree
rm -rf "$tree"
say "bootstrapping bookworm with $packages"
for attempt in 1 2 3; do
    if mmdebstrap --quiet --variant=minbase --mode=root \
        --aptopt='APT::Install-Recommends "false"' \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --include="$packages" bookworm "$tree" "$mirror" >"$cache/mmdebstrap.log" 2>&1; then
        break
    fi
    [ $attempt = 3 ] && die "mmdebstrap failed three times (see $cache/mmdebstrap.log)"
    say "mmdebstrap attempt $attempt failed, retrying"
    rm -rf "$tree"
    sleep 5
done
# Mount points for what the e2e binds in.
mkdir -p "$tree/payload" "$tree/shared" "$tree/fence" "$tree/usr/lib/ocf/resource.d/tern" "$tree/etc/tern"
: >"$tree/usr/sbin/fence_ternns"
: >"$tree/usr/lib/ocf/resource.d/tern/tern"
chmod 755 "$tree/usr/sbin/fence_ternns" "$tree/usr/lib/ocf/resource.d/tern/tern"
used=$(du -sm "$tree" | cut -f1)
tmp=$out/rootfs.ext4.tmp$$
rm -f "$tmp"
truncate -s $((used + 128))M "$tmp"
mkfs.ext4 -q -F -L tern-cluster -E root_owner=0:0 -d "$tree" "$tmp" || die "mkfs.ext4 -d failed"
mv "$tmp" "$out/rootfs.ext4"
echo "$stamp" >"$out/rootfs.ext4.stamp"
rm -rf "$tree"
say "built $out/rootfs.ext4 (${used} MiB used)"
exit 0
}
