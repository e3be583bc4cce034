#!/usr/bin/env bash
# Builds tern's 32-bit test guest artifacts into target/guest/i386/ from Debian i386
# packages only (apt-get download + dpkg-deb -x), for the Debian release of the default
# guest (the host's apt sources):
#   bzImage                the linux-image-686-pae kernel (a 32-bit bzImage: no
#                          XLF_KERNEL_64, entered through the 32-bit boot protocol)
#   initramfs.cpio.gz      an i386 userland (busybox-static:i386, netperf:i386 with
#                          libc6:i386), that kernel's virtio modules, /init (init.sh)
#   bzImage-686, initramfs-686.cpio.gz
#                          the same for linux-image-686 (no PAE: 2-level paging)
#   initramfs-k64.cpio.gz  the same i386 userland with the 64-bit default kernel's
#                          modules (kernel.env of target/guest): a 32-bit userland on
#                          the 64-bit kernel (IA32_EMULATION)
#   kernel.env             KERNEL_PACKAGE, KERNEL_RELEASE of the 686-pae kernel,
#                          KERNEL_PACKAGE_686, KERNEL_RELEASE_686
# tern-io (the iobench job's tool) is not included: building it needs a 32-bit libc
# for gcc -m32, which the host has no package for; every other job works.
# Needs the i386 architecture in dpkg: if missing, it is added (dpkg --add-architecture
# i386 + apt-get update, as root). Called by build.sh after its own build (or its
# "up to date" check), holding build.sh's lock; it reads target/guest/kernel.env.
# Cached: skipped when the stamp (these scripts + package versions) matches.
# Usage: resources/guest/build-i386.sh [--force]
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=$root/target/guest/i386
cache=$root/target/guest-cache/i386
k64env=$root/target/guest/kernel.env
epoch=1700000000 # fixed mtime for reproducible archives

die() { echo "guest/build-i386.sh: $*" >&2; exit 1; }
[ -s "$k64env" ] || die "no $k64env: run resources/guest/build.sh (it calls this script)"
. "$k64env"
k64_release=$KERNEL_RELEASE
k64_moddir=$MODULES_DIR
[ -d "$k64_moddir" ] || die "the 64-bit kernel's module tree $k64_moddir is missing: run resources/guest/build.sh --force"

if ! dpkg --print-foreign-architectures | grep -qx i386; then
    echo "guest/build-i386.sh: adding the i386 architecture to dpkg (dpkg --add-architecture i386; apt-get update)" >&2
    dpkg --add-architecture i386 || die "dpkg --add-architecture i386 failed (needs root)"
    apt-get update -qq || true
fi

# kernel_package META: the versioned kernel package an i386 metapackage depends on.
kernel_package() {
    apt-cache depends "$1:i386" 2>/dev/null |
        awk '/Depends: linux-image-/ { sub(/:i386$/, "", $2); print $2; exit }'
}
candidate() { apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ { print $2 }'; }
resolve() {
    kpkg=$(kernel_package linux-image-686-pae)
    kpkg686=$(kernel_package linux-image-686)
    [ -n "$kpkg" ] && [ -n "$kpkg686" ] || return 1
    # Order matters below: versions[0] the 686-pae kernel, [1..3] the userland, [4] 686.
    pkgs=("$kpkg" busybox-static netperf libc6 "$kpkg686")
    versions=()
    for p in "${pkgs[@]}"; do
        v=$(candidate "$p:i386")
        [ -n "$v" ] && [ "$v" != "(none)" ] || return 1
        versions+=("$p=$v")
    done
}
if ! resolve 2>/dev/null; then
    echo "guest/build-i386.sh: package lists incomplete, running apt-get update" >&2
    apt-get update -qq || true
    resolve || die "cannot resolve Debian i386 packages: linux-image-686-pae, linux-image-686, busybox-static, netperf (non-free), libc6"
fi

stamp=$({
    cat "$here/build-i386.sh" "$here/init.sh" "$here/tern-pattern" "$here/tern-dirty" "$here/tools.py"
    printf '%s\n' "${versions[@]}" "k64=$k64_release"
} | sha256sum | cut -d' ' -f1)
outputs=(bzImage initramfs.cpio.gz bzImage-686 initramfs-686.cpio.gz initramfs-k64.cpio.gz kernel.env)
if [ "${1:-}" != "--force" ] && [ "$(cat "$out/.stamp" 2>/dev/null)" = "$stamp" ]; then
    ok=1
    for f in "${outputs[@]}"; do [ -s "$out/$f" ] || ok=0; done
    if [ $ok = 1 ]; then
        echo "guest/build-i386.sh: up to date ($out)"
        exit 0
    fi
fi
echo "guest/build-i386.sh: building (${versions[*]})"
mkdir -p "$out" "$cache/debs" "$cache/x"

# --- download and unpack the i386 packages (each version once; own cache, so an
# amd64 .deb of the same name and version is never picked up)
declare -A dir
for pv in "${versions[@]}"; do
    p=${pv%%=*}; v=${pv#*=}
    d=$cache/x/${p}_${v//:/%3a}
    if [ ! -e "$d/.done" ]; then
        deb=$(ls "$cache/debs/${p}_${v//:/%3a}"_i386.deb 2>/dev/null | head -n1 || true)
        if [ -z "$deb" ]; then
            (cd "$cache/debs" && apt-get download -qq -o APT::Sandbox::User=root "$p:i386=$v") ||
                die "apt-get download $p:i386=$v failed"
            deb=$(ls "$cache/debs/${p}_${v//:/%3a}"_i386.deb | head -n1)
        fi
        rm -rf "$d"; mkdir -p "$d"
        dpkg-deb -x "$deb" "$d"
        touch "$d/.done"
    fi
    dir[$p]=$d
done
# take_kernel PACKAGE OUTPUT: copies the package's bzImage to OUTPUT; sets krel, moddir.
take_kernel() {
    local kdir=${dir[$1]} vmlinuz
    vmlinuz=$(ls "$kdir"/boot/vmlinuz-* | head -n1)
    krel=${vmlinuz##*/vmlinuz-}
    moddir=$kdir/lib/modules/$krel
    [ -f "$moddir/modules.builtin" ] || die "no module tree in $1"
    # The setup header's xloadflags (offset 0x236) must not say XLF_KERNEL_64.
    python3 -c 'import sys; d = open(sys.argv[1], "rb").read(0x240); sys.exit(d[0x202:0x206] != b"HdrS" or d[0x236] & 1)' "$vmlinuz" ||
        die "$vmlinuz is not a 32-bit bzImage (no HdrS, or XLF_KERNEL_64 set)"
    cp "$vmlinuz" "$2.tmp"
    mv "$2.tmp" "$2"
}
take_kernel "$kpkg686" "$out/bzImage-686"
krel686=$krel moddir686=$moddir
take_kernel "$kpkg" "$out/bzImage"

# --- i386 userland
stage=$cache/stage
rm -rf "$stage"
mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,lib/i386-linux-gnu,lib/modules/tern,etc,proc,sys,dev,tmp,run,root,mnt,newroot}
bb=${dir[busybox-static]}/bin/busybox
[ -x "$bb" ] || die "busybox-static:i386 has no /bin/busybox"
cp "$bb" "$stage/bin/busybox"
# The applet list: from the i386 busybox if this host runs 32-bit programs, else from
# the same busybox version built for amd64 (build.sh's), which lists the same applets.
bbv=${versions[1]#*=}
amd64_bb=$root/target/guest-cache/x/busybox-static_${bbv//:/%3a}/bin/busybox
applets=$("$bb" --list-full 2>/dev/null) || applets=$("$amd64_bb" --list-full 2>/dev/null) ||
    die "cannot list busybox's applets (this host runs no i386 programs and has no amd64 busybox $bbv)"
for a in $applets; do
    case "$a" in linuxrc | sbin/init | bin/busybox) continue ;; esac
    [ -e "$stage/$a" ] || ln -s /bin/busybox "$stage/$a"
done
npd=${dir[netperf]}
cp "$npd/usr/bin/netperf" "$npd/usr/bin/netserver" "$stage/usr/bin/"
libc=${dir[libc6]}
libdir=lib/i386-linux-gnu
[ -e "$libc/$libdir/ld-linux.so.2" ] || libdir=usr/lib/i386-linux-gnu
[ -e "$libc/$libdir/ld-linux.so.2" ] || die "libc6:i386 has no ld-linux.so.2"
cp -L "$libc/$libdir/ld-linux.so.2" "$stage/lib/i386-linux-gnu/"
ln -s /lib/i386-linux-gnu/ld-linux.so.2 "$stage/lib/ld-linux.so.2"
todo=$(python3 "$here/tools.py" needed "$stage/usr/bin/netperf" "$stage/usr/bin/netserver")
while [ -n "$todo" ]; do
    next=
    for l in $todo; do
        [ -e "$stage/lib/i386-linux-gnu/$l" ] && continue
        [ -e "$libc/$libdir/$l" ] || die "netperf:i386 needs $l, not in libc6:i386"
        cp -L "$libc/$libdir/$l" "$stage/lib/i386-linux-gnu/"
        next="$next $(python3 "$here/tools.py" needed "$stage/lib/i386-linux-gnu/$l")"
    done
    todo=$(echo $next)
done
if "$stage/lib/i386-linux-gnu/ld-linux.so.2" --library-path "$stage/lib/i386-linux-gnu" \
    "$stage/usr/bin/netperf" -V >/dev/null 2>&1; then
    :
elif "$stage/bin/busybox" true 2>/dev/null; then
    die "netperf:i386 does not run with the packaged libraries"
else
    echo "guest/build-i386.sh: this host runs no i386 programs: netperf not tried here" >&2
fi

install -m 755 "$here/init.sh" "$stage/init"
install -m 755 "$here/tern-pattern" "$stage/bin/tern-pattern"
install -m 755 "$here/tern-dirty" "$stage/bin/tern-dirty"
# root without a password (the test guest's getty login, tern.job=login).
printf 'root::0:0:root:/root:/bin/sh\n' >"$stage/etc/passwd"
printf 'root:x:0:\n' >"$stage/etc/group"
mknod -m 600 "$stage/dev/console" c 5 1 2>/dev/null || true
mknod -m 666 "$stage/dev/null" c 1 3 2>/dev/null || true

# --- one initramfs per kernel: the userland plus that kernel's virtio modules
mods="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net virtio_blk ext4"
pack() { # MODULE_TREE OUTPUT PACKAGE-LINES...
    local tree=$1 dest=$2
    shift 2
    rm -rf "$stage/lib/modules/tern"
    mkdir -p "$stage/lib/modules/tern"
    : >"$stage/lib/modules/tern/load-order"
    python3 "$here/tools.py" modules "$tree" $mods >"$cache/modules.list" || die "module list for $tree"
    while read -r name path; do
        python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); import tools; open(sys.argv[3], "wb").write(tools.read_module(sys.argv[2]))' \
            "$here" "$path" "$stage/lib/modules/tern/$name.ko"
        echo "$name" >>"$stage/lib/modules/tern/load-order"
    done <"$cache/modules.list"
    printf '%s\n' "$@" >"$stage/etc/tern-guest-packages"
    find "$stage" -exec touch -h -d "@$epoch" {} +
    (cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --reproducible --quiet) |
        gzip -9 -n >"$dest.tmp"
    mv "$dest.tmp" "$dest"
}
userland=("${versions[@]:1:3}")
pack "$moddir" "$out/initramfs.cpio.gz" "${versions[0]}:i386" "${userland[@]/%/:i386}"
pack "$moddir686" "$out/initramfs-686.cpio.gz" "${versions[4]}:i386" "${userland[@]/%/:i386}"
pack "$k64_moddir" "$out/initramfs-k64.cpio.gz" "${userland[@]/%/:i386}" "kernel=$k64_release (amd64)"

cat >"$out/kernel.env" <<EOF
KERNEL_PACKAGE=$kpkg
KERNEL_RELEASE=$krel
KERNEL_PACKAGE_686=$kpkg686
KERNEL_RELEASE_686=$krel686
EOF
printf '%s\n' "${versions[@]}" >"$out/packages.txt"
echo "$stamp" >"$out/.stamp"
echo "guest/build-i386.sh: done: $(cd "$out" && ls -s --block-size=K "${outputs[@]}" | tr '\n' ' ')"
