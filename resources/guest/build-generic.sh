#!/usr/bin/env bash
# Builds the default guest with Debian's generic kernel into target/guest/generic/, from
# Debian packages only: the cloud kernel of target/guest has no VM generation ID driver
# (CONFIG_VIRT_DRIVERS is off there), the generic linux-image-amd64 has it built in
# (CONFIG_VMGENID=y), so clone scenarios (tern-clones) boot this one.
#   bzImage            the generic kernel (64-bit bzImage)
#   initramfs.cpio.gz  target/guest's initramfs (same userland and init) with this
#                      kernel's modules in place of the cloud kernel's
#   kernel.env         KERNEL_PACKAGE, KERNEL_RELEASE
# Called by build.sh after its own build (holding its lock). Cached by a stamp (this
# script, build.sh's stamp, the package version).
# Usage: resources/guest/build-generic.sh [--force]
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
base=$root/target/guest
out=$base/generic
cache=$root/target/guest-cache/generic
epoch=1700000000

die() { echo "guest/build-generic.sh: $*" >&2; exit 1; }
[ -s "$base/initramfs.cpio.gz" ] && [ -s "$base/.stamp" ] || die "no $base/initramfs.cpio.gz: run resources/guest/build.sh"

kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/ { print $2; exit }')
[ -n "$kpkg" ] || die "cannot resolve linux-image-amd64's kernel package"
kver=$(apt-cache policy "$kpkg" 2>/dev/null | awk '/Candidate:/ { print $2 }')
[ -n "$kver" ] && [ "$kver" != "(none)" ] || die "no candidate version of $kpkg"

stamp=$({ cat "$here/build-generic.sh" "$base/.stamp"; echo "$kpkg=$kver"; } | sha256sum | cut -d' ' -f1)
if [ "${1:-}" != "--force" ] && [ "$(cat "$out/.stamp" 2>/dev/null)" = "$stamp" ] &&
    [ -s "$out/bzImage" ] && [ -s "$out/initramfs.cpio.gz" ]; then
    echo "guest/build-generic.sh: up to date ($out)"
    exit 0
fi
echo "guest/build-generic.sh: building ($kpkg=$kver)"
mkdir -p "$out" "$cache/debs"
kdir=$cache/x/${kpkg}_${kver//:/%3a}
if [ ! -e "$kdir/.done" ]; then
    deb=$(ls "$cache/debs/${kpkg}_${kver//:/%3a}"_*.deb 2>/dev/null | head -n1 || true)
    if [ -z "$deb" ]; then
        (cd "$cache/debs" && apt-get download -qq -o APT::Sandbox::User=root "$kpkg=$kver") ||
            die "apt-get download $kpkg=$kver failed"
        deb=$(ls "$cache/debs/${kpkg}_${kver//:/%3a}"_*.deb | head -n1)
    fi
    rm -rf "$kdir"; mkdir -p "$kdir"
    dpkg-deb -x "$deb" "$kdir"
    touch "$kdir/.done"
fi
vmlinuz=$(ls "$kdir"/boot/vmlinuz-* | head -n1)
krel=${vmlinuz##*/vmlinuz-}
moddir=$kdir/lib/modules/$krel
[ -f "$moddir/modules.builtin" ] || die "no module tree in $kpkg"
grep -q '^CONFIG_VMGENID=y' "$kdir/boot/config-$krel" || die "$kpkg does not have CONFIG_VMGENID=y"

# The default guest's initramfs, its modules replaced by this kernel's.
stage=$cache/stage
rm -rf "$stage"; mkdir -p "$stage"
(cd "$stage" && gzip -dc "$base/initramfs.cpio.gz" | cpio -i -d -m --quiet) || die "cannot unpack $base/initramfs.cpio.gz"
mods=$(cat "$stage/lib/modules/tern/load-order")
rm -rf "$stage/lib/modules/tern"; mkdir -p "$stage/lib/modules/tern"
: >"$stage/lib/modules/tern/load-order"
python3 "$here/tools.py" modules "$moddir" $mods | while read -r name path; do
    python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); import tools; open(sys.argv[3], "wb").write(tools.read_module(sys.argv[2]))' \
        "$here" "$path" "$stage/lib/modules/tern/$name.ko"
    echo "$name" >>"$stage/lib/modules/tern/load-order"
done
find "$stage" -exec touch -h -d "@$epoch" {} +
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --reproducible --quiet) |
    gzip -9 -n >"$out/initramfs.cpio.gz.tmp"
mv "$out/initramfs.cpio.gz.tmp" "$out/initramfs.cpio.gz"
cp "$vmlinuz" "$out/bzImage.tmp" && mv "$out/bzImage.tmp" "$out/bzImage"
printf 'KERNEL_PACKAGE=%s\nKERNEL_RELEASE=%s\n' "$kpkg" "$krel" >"$out/kernel.env"
echo "$stamp" >"$out/.stamp"
echo "guest/build-generic.sh: done: $(cd "$out" && ls -s --block-size=K bzImage initramfs.cpio.gz | tr '\n' ' ')"
