#!/usr/bin/env bash
# Builds tern's test guest artifacts into target/guest/ from Debian packages only
# (apt-get download + dpkg-deb -x; no root mounts, no other downloads):
#   vmlinux            uncompressed ELF kernel with a PVH note (from the bzImage)
#   bzImage            the Debian vmlinuz itself
#   initramfs.cpio.gz  busybox, netperf/netserver, virtio modules, /init (init.sh)
#   rootfs.ext4        the same userland as an ext4 image (boot: initramfs + root=/dev/vda)
#   kernel.env         KERNEL_RELEASE, KERNEL_PACKAGE, MODULES_DIR (the kernel's module
#                      tree, kept under target/guest-cache/ for the rig's L1 initramfs)
#   i386/              32-bit guests (build-i386.sh, run after this build or its
#                      up-to-date check): the 686-pae bzImage and i386 initramfs images
# Cached: skipped when the stamp (hash of these scripts + package versions) matches.
# Usage: resources/guest/build.sh [--force]
# Env: TERN_GUEST_KERNEL_PKG (default: what linux-image-cloud-amd64 depends on)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=$root/target/guest
cache=$root/target/guest-cache
epoch=1700000000 # fixed mtime for reproducible archives
rootfs_mb=192

die() { echo "guest/build.sh: $*" >&2; exit 1; }
"$root/resources/install-host-packages.sh" || echo "guest/build.sh: install-host-packages.sh failed" >&2
for t in apt-get apt-cache dpkg-deb cpio gzip mkfs.ext4 debugfs python3 sha256sum lz4 truncate; do
    command -v "$t" >/dev/null || die "missing tool: $t (run resources/install-host-packages.sh)"
done

# One build at a time (concurrent rig runs share target/guest).
mkdir -p "$cache"
exec 9>"$cache/.lock"
command -v flock >/dev/null && flock 9

candidate() { apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ { print $2 }'; }
resolve() {
    kpkg=${TERN_GUEST_KERNEL_PKG:-$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
        awk '/Depends: linux-image-/ { print $2; exit }')}
    pkgs=("$kpkg" busybox-static netperf libc6)
    versions=()
    for p in "${pkgs[@]}"; do
        v=$(candidate "$p")
        [ -n "$v" ] && [ "$v" != "(none)" ] || return 1
        versions+=("$p=$v")
    done
}
if ! resolve 2>/dev/null; then
    echo "guest/build.sh: package lists incomplete, running apt-get update" >&2
    apt-get update -qq || true
    resolve || die "cannot resolve Debian packages: linux-image-cloud-amd64, busybox-static, netperf (non-free), libc6"
fi

# The 32-bit artifacts (target/guest/i386) and the generic-kernel guest (target/guest/
# generic) after these: their failure (e.g. no i386 package lists reachable) only warns,
# so the default guest stays usable.
build_i386() {
    "$here/build-i386.sh" "$@" ||
        echo "guest/build.sh: warning: build-i386.sh failed: no target/guest/i386 (the tern-i386 scenario will fail)" >&2
    "$here/build-generic.sh" "$@" ||
        echo "guest/build.sh: warning: build-generic.sh failed: no target/guest/generic (the tern-clones scenario will fail)" >&2
}

stamp=$({
    cat "$here/build.sh" "$here/init.sh" "$here/tern-pattern" "$here/tern-dirty" "$here/tools.py" "$here/tern-io.c"
    printf '%s\n' "${versions[@]}" "rootfs_mb=$rootfs_mb"
} | sha256sum | cut -d' ' -f1)
outputs=(vmlinux bzImage initramfs.cpio.gz rootfs.ext4 kernel.env)
if [ "${1:-}" != "--force" ] && [ "$(cat "$out/.stamp" 2>/dev/null)" = "$stamp" ]; then
    ok=1
    for f in "${outputs[@]}"; do [ -s "$out/$f" ] || ok=0; done
    if [ $ok = 1 ]; then
        . "$out/kernel.env"
        if [ -d "$MODULES_DIR" ]; then
            echo "guest/build.sh: up to date ($out)"
            build_i386 "$@"
            exit 0
        fi
    fi
fi
echo "guest/build.sh: building (${versions[*]})"
mkdir -p "$out" "$cache/debs" "$cache/x"

# --- download and unpack the packages (each version once)
declare -A dir
for pv in "${versions[@]}"; do
    p=${pv%%=*}; v=${pv#*=}
    d=$cache/x/${p}_${v//:/%3a}
    if [ ! -e "$d/.done" ]; then
        deb=$(ls "$cache/debs/${p}_${v//:/%3a}"_*.deb 2>/dev/null | head -n1 || true)
        if [ -z "$deb" ]; then
            (cd "$cache/debs" && apt-get download -qq -o APT::Sandbox::User=root "$p=$v") ||
                die "apt-get download $p=$v failed"
            deb=$(ls "$cache/debs/${p}_${v//:/%3a}"_*.deb | head -n1)
        fi
        rm -rf "$d"; mkdir -p "$d"
        dpkg-deb -x "$deb" "$d"
        touch "$d/.done"
    fi
    dir[$p]=$d
done
kdir=${dir[$kpkg]}
vmlinuz=$(ls "$kdir"/boot/vmlinuz-* | head -n1)
krel=${vmlinuz##*/vmlinuz-}
moddir=$kdir/lib/modules/$krel
[ -f "$moddir/modules.builtin" ] || die "no module tree in $kpkg"

# --- kernel
python3 "$here/tools.py" vmlinux "$vmlinuz" "$out/vmlinux"
cp "$vmlinuz" "$out/bzImage"

# --- guest userland
stage=$cache/stage
rm -rf "$stage"
mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,lib/x86_64-linux-gnu,lib64,lib/modules/tern,etc,proc,sys,dev,tmp,run,root,mnt,newroot}
bb=${dir[busybox-static]}/bin/busybox
[ -x "$bb" ] || die "busybox-static package has no /bin/busybox"
cp "$bb" "$stage/bin/busybox"
for a in $("$bb" --list-full); do
    case "$a" in linuxrc | sbin/init | bin/busybox) continue ;; esac
    [ -e "$stage/$a" ] || ln -s /bin/busybox "$stage/$a"
done
npd=${dir[netperf]}
cp "$npd/usr/bin/netperf" "$npd/usr/bin/netserver" "$stage/usr/bin/"
libc=${dir[libc6]}
ld=$libc/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
cp -L "$ld" "$stage/lib/x86_64-linux-gnu/"
ln -s /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$stage/lib64/ld-linux-x86-64.so.2"
todo=$(python3 "$here/tools.py" needed "$stage/usr/bin/netperf" "$stage/usr/bin/netserver")
while [ -n "$todo" ]; do
    next=
    for l in $todo; do
        [ -e "$stage/lib/x86_64-linux-gnu/$l" ] && continue
        [ -e "$libc/lib/x86_64-linux-gnu/$l" ] || die "netperf needs $l, not in libc6"
        cp -L "$libc/lib/x86_64-linux-gnu/$l" "$stage/lib/x86_64-linux-gnu/"
        next="$next $(python3 "$here/tools.py" needed "$stage/lib/x86_64-linux-gnu/$l")"
    done
    todo=$(echo $next)
done
"$stage/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" --library-path "$stage/lib/x86_64-linux-gnu" \
    "$stage/usr/bin/netperf" -V >/dev/null || die "netperf does not run with the packaged libraries"

# button + evdev: the ACPI power button as an input device (busybox acpid, tern.acpid=1).
mods="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net virtio_blk ext4 evdev button"
: >"$stage/lib/modules/tern/load-order"
python3 "$here/tools.py" modules "$moddir" $mods | while read -r name path; do
    python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); import tools; open(sys.argv[3], "wb").write(tools.read_module(sys.argv[2]))' \
        "$here" "$path" "$stage/lib/modules/tern/$name.ko"
    echo "$name" >>"$stage/lib/modules/tern/load-order"
done

install -m 755 "$here/init.sh" "$stage/init"
install -m 755 "$here/tern-pattern" "$stage/bin/tern-pattern"
install -m 755 "$here/tern-dirty" "$stage/bin/tern-dirty"
# tern-io (block benchmark), written here, built static so it needs no guest libraries.
command -v gcc >/dev/null || die "missing tool: gcc (to build resources/guest/tern-io.c)"
gcc -O2 -static -o "$stage/bin/tern-io" "$here/tern-io.c" || die "cannot build tern-io"
# root without a password (the test guest's getty login, tern.job=login).
printf 'root::0:0:root:/root:/bin/sh\n' >"$stage/etc/passwd"
printf 'root:x:0:\n' >"$stage/etc/group"
printf '%s\n' "${versions[@]}" >"$stage/etc/tern-guest-packages"
mknod -m 600 "$stage/dev/console" c 5 1 2>/dev/null || true
mknod -m 666 "$stage/dev/null" c 1 3 2>/dev/null || true

# --- initramfs (sorted names, fixed mtimes, owner root: reproducible)
find "$stage" -exec touch -h -d "@$epoch" {} +
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --reproducible --quiet) |
    gzip -9 -n >"$out/initramfs.cpio.gz.tmp"
mv "$out/initramfs.cpio.gz.tmp" "$out/initramfs.cpio.gz"

# --- rootfs.ext4: same tree plus /etc/tern-rootfs and /sbin/init -> /init
touch -d "@$epoch" "$stage/etc/tern-rootfs"
ln -s /init "$stage/sbin/init"
touch -h -d "@$epoch" "$stage/sbin/init" "$stage/sbin" "$stage/etc"
rm -f "$out/rootfs.ext4.tmp"
truncate -s ${rootfs_mb}M "$out/rootfs.ext4.tmp"
E2FSPROGS_FAKE_TIME=$epoch mkfs.ext4 -q -F -L tern-root -U 6e1a6f2c-7465-726e-2d72-6f6f74667321 \
    -E hash_seed=7465726e-2d72-6f6f-7466-732d68617368,root_owner=0:0 -d "$stage" "$out/rootfs.ext4.tmp" ||
    die "mkfs.ext4 -d failed"
# mkfs -d copies each file's atime and ctime, which vary: pin them for reproducibility.
(cd "$stage" && find . | LC_ALL=C sort | sed 's|^\.||; s|^$|/|' |
    awk -v t="@$epoch" '{ printf "sif \"%s\" ctime %s\nsif \"%s\" atime %s\n", $0, t, $0, t }') >"$cache/debugfs.cmds"
E2FSPROGS_FAKE_TIME=$epoch debugfs -w -f "$cache/debugfs.cmds" "$out/rootfs.ext4.tmp" >/dev/null 2>"$cache/debugfs.err" ||
    die "debugfs (pinning inode times) failed: $(tail -n 3 "$cache/debugfs.err")"
mv "$out/rootfs.ext4.tmp" "$out/rootfs.ext4"

cat >"$out/kernel.env" <<EOF
KERNEL_PACKAGE=$kpkg
KERNEL_RELEASE=$krel
MODULES_DIR=$moddir
EOF
printf '%s\n' "${versions[@]}" >"$out/packages.txt"
echo "$stamp" >"$out/.stamp"
echo "guest/build.sh: done: $(cd "$out" && ls -s --block-size=K "${outputs[@]}" | tr '\n' ' ')"
build_i386 "$@"
