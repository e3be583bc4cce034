#!/usr/bin/env bash
# Builds distro disk images, like those a user brings from QEMU/libvirt or a Debian cloud
# image, into target/distro/, from Debian packages only (mmdebstrap from deb.debian.org;
# filesystems made with mkfs.ext4 -d / mkfs.vfat on files, partition tables with sfdisk on
# the image file: no loop devices, no mounts of the images):
#   bookworm-gpt-cloud.img   GPT: p14 BIOS boot (1 MiB), p15 EFI system (vfat, 32 MiB),
#                            p1 ext4 root holding /boot (the Debian cloud image layout)
#   bookworm-gpt-boot.img    GPT: p1 ext4 /boot (256 MiB), p2 ext4 root
#   bookworm-mbr.img         MBR: p1 ext4 root (bootable flag) holding /boot
#   bullseye-gpt-cloud.img   as bookworm-gpt-cloud.img, Debian 11
#   trixie-gpt-cloud.img     as bookworm-gpt-cloud.img, Debian 13
#   *.img.txt                sfdisk -d, filesystem UUIDs, kernel release, grub.cfg entry
# Each image is 2 GiB, sparse: about 0.68 GiB used for bookworm (linux 6.1), 0.52 GiB for
# bullseye (5.10), 0.35 GiB for trixie (6.12, xz-compressed modules); the initrd is ~36 MiB.
# Packages come from the release's own suite only (no -updates / -security). Each holds
# minbase + systemd, udev, dbus, linux-image-amd64 + initramfs-tools (MODULES=most, Debian's default), grub's
# /boot/grub/grub.cfg and grubenv written by the image's own grub-mkconfig (see
# run_grub_mkconfig: grub-probe and grub-mkrelpath are wrapped while it runs, because
# there is no block device to probe), systemd-networkd with 10.0.2.15/24 gw 10.0.2.1 on
# the first en*/eth* NIC, hostname tern-<release>, /etc/fstab by UUID, a fixed
# machine-id (no first-boot), serial-getty@ttyS0 enabled, and ROOT WITHOUT A PASSWORD
# (test images only: anyone on the serial console is root).
# The grub entry's command line is "root=UUID=<root> ro quiet": no console= (tern adds
# console=ttyS0 when the entry names none; for QEMU add console=ttyS0 yourself).
#
# Boot counter (tern-boot-counter.service, multi-user): after `systemctl is-system-running
# --wait` it appends a line to /var/lib/tern-boots and writes
#   TERN-DISTRO-BOOT n=<boots so far> release=<codename> failed_units=<n> state=<running|...>
# to /dev/ttyS0 (Type=simple, not oneshot: a oneshot start job would keep the boot from
# ever finishing while it waits for the boot to finish). With tern.reboots=N on the kernel command line it then runs
# `systemctl reboot` while n <= N and `systemctl poweroff` once n > N (N reboots, N+1
# boots), after tern.hold=S seconds if given (the e2e pings the guest meanwhile); without
# tern.reboots the guest stays up. Boot from a fresh copy of the image
# to start counting at 1.
#
# Downloaded .debs are kept in target/distro-cache/<release>/debs; the bootstrapped tree
# in target/distro-cache/<release>/tree (reused while the mmdebstrap command is the same).
# An image is skipped when its stamp (hash of this script + release + layout) matches.
# Usage: resources/distro/build.sh [--force] [RELEASE...]   (default: bookworm bullseye trixie)
# Needs root (mmdebstrap in root mode, chroot for grub-mkconfig).
set -euo pipefail
# The whole script is one block: bash reads it all before running, so editing it during a
# (long) build cannot change what the running build does.
{

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=$root/target/distro
cache=$root/target/distro-cache
mirror=http://deb.debian.org/debian
disk_mib=2048

die() { echo "distro/build.sh: $*" >&2; exit 1; }
say() { echo "distro/build.sh: $*" >&2; }

force=0
releases=()
for a in "$@"; do
    case "$a" in
    --force) force=1 ;;
    bookworm | bullseye | trixie) releases+=("$a") ;;
    *) die "unknown argument: $a (usage: build.sh [--force] [bookworm|bullseye|trixie]...)" ;;
    esac
done
[ ${#releases[@]} -gt 0 ] || releases=(bookworm bullseye trixie)
[ "$(id -u)" = 0 ] || die "needs root (mmdebstrap root mode, chroot)"

# --- host tools (Debian packages, installed only when missing)
need=()
for pt in mmdebstrap:mmdebstrap fdisk:sfdisk dosfstools:mkfs.vfat e2fsprogs:mkfs.ext4 e2fsprogs:debugfs \
    util-linux:blkid coreutils:sha256sum util-linux:flock; do
    command -v "${pt#*:}" >/dev/null || need+=("${pt%%:*}")
done
if [ ${#need[@]} -gt 0 ]; then
    say "installing host packages: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null ||
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; } ||
        die "apt-get install ${need[*]} failed"
fi

# One build at a time (concurrent builds share target/distro-cache).
mkdir -p "$out" "$cache"
exec 9>"$cache/.lock"
flock 9

# --- deterministic identifiers (same image from the same script)
hexof() { printf '%s' "$*" | sha256sum | cut -c1-32; }
uuid_of() { local h; h=$(hexof "$@"); echo "${h:0:8}-${h:8:4}-4${h:13:3}-a${h:17:3}-${h:20:12}"; }
vfat_id_of() { local h; h=$(hexof "$@"); echo "${h:0:8}" | tr a-f A-F; }

packages_for() {
    local p=(systemd systemd-sysv udev dbus kmod iproute2 e2fsprogs linux-image-amd64 initramfs-tools
        grub-pc-bin grub2-common)
    local IFS=,
    echo "${p[*]}"
}

# rm -rf on a tree that still has /proc or /dev mounted would reach the host: refuse.
no_mounts_under() {
    if awk -v d="$1/" 'index($2 "/", d) == 1 { found = 1 } END { exit !found }' /proc/mounts; then
        die "something is still mounted under $1 (a killed mmdebstrap?): unmount it first"
    fi
}

# --- stage 1: mmdebstrap a tree per release (cached)
bootstrap() {
    local rel=$1 dir=$cache/$rel
    local incl; incl=$(packages_for "$rel")
    local args=(--variant=minbase --components=main --include="$incl"
        --aptopt='APT::Install-Recommends "false"'
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*'
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
        --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias'
        --dpkgopt='path-exclude=/usr/share/lintian/*'
        --skip=download/empty --skip=essential/unlink
        --setup-hook='mkdir -p "$1"/var/cache/apt/archives/'
        --setup-hook="sync-in $dir/debs /var/cache/apt/archives/"
        --customize-hook="sync-out /var/cache/apt/archives $dir/debs"
        --customize-hook='rm -f "$1"/var/cache/apt/archives/*.deb'
        "$rel" "$dir/tree.new" "$mirror")
    local key; key=$(printf '%s\n' "${args[@]}" | sha256sum | cut -d' ' -f1)
    if [ -f "$dir/tree/.tern-tree" ] && [ "$(cat "$dir/tree/.tern-tree")" = "$key" ]; then
        say "$rel: bootstrapped tree up to date"
        return
    fi
    mkdir -p "$dir/debs"
    no_mounts_under "$dir"
    rm -rf "$dir/tree.new"
    say "$rel: mmdebstrap (log: $dir/mmdebstrap.log)"
    local t0=$SECONDS
    nice -n 19 mmdebstrap --mode=root "${args[@]}" >"$dir/mmdebstrap.log" 2>&1 ||
        die "mmdebstrap $rel failed: $(tail -n 5 "$dir/mmdebstrap.log")"
    echo "$key" >"$dir/tree.new/.tern-tree"
    rm -rf "$dir/tree"
    mv "$dir/tree.new" "$dir/tree"
    say "$rel: bootstrapped in $((SECONDS - t0)) s ($(du -sm "$dir/tree" | cut -f1) MiB)"
}

for rel in "${releases[@]}"; do
    bootstrap "$rel"
done

# --- stage 2: per layout, configure a copy of the tree and build the disk image
# Layout table: NAME TABLE PARTS, PARTS = num:role:start_mib:size_mib (size 0 = to the end).
layout_parts() {
    case "$1" in
    gpt-cloud) echo "gpt 14:bios:1:1 15:esp:2:32 1:root:34:0" ;;
    gpt-boot) echo "gpt 1:boot:1:256 2:root:257:0" ;;
    mbr) echo "dos 1:root:1:0" ;;
    esac
}
layouts_for() {
    case "$1" in
    bookworm) echo "gpt-cloud gpt-boot mbr" ;;
    *) echo "gpt-cloud" ;;
    esac
}

# Writes the image's own configuration into TREE (not layout-specific except fstab).
configure_tree() {
    local rel=$1 t=$2 layout=$3 root_uuid=$4 boot_uuid=$5 esp_id=$6
    echo "tern-$rel" >"$t/etc/hostname"
    printf '127.0.0.1\tlocalhost\n127.0.1.1\ttern-%s\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' "$rel" >"$t/etc/hosts"
    # A fixed machine-id: no first-boot units (systemd-firstboot would prompt on the console).
    hexof machine-id "$rel" "$layout" >"$t/etc/machine-id"
    {
        echo "# /etc/fstab: written by tern's resources/distro/build.sh ($layout)"
        echo "UUID=$root_uuid / ext4 rw,discard,errors=remount-ro 0 1"
        [ -n "$boot_uuid" ] && echo "UUID=$boot_uuid /boot ext4 rw,defaults 0 2"
        [ -n "$esp_id" ] && echo "UUID=${esp_id:0:4}-${esp_id:4:4} /boot/efi vfat umask=0077 0 1"
    } >"$t/etc/fstab"
    [ -n "$esp_id" ] && mkdir -p "$t/boot/efi"
    mkdir -p "$t/etc/systemd/network"
    cat >"$t/etc/systemd/network/10-tern.network" <<'EOF'
# tern test network: static address on the first ethernet NIC (QEMU user-net numbering).
[Match]
Name=en* eth*

[Network]
Address=10.0.2.15/24
Gateway=10.0.2.1
DNS=10.0.2.3
EOF
    install -m 755 /dev/stdin "$t/usr/local/sbin/tern-boot-counter" <<'EOF'
#!/bin/sh
# tern boot counter (resources/distro/build.sh): waits for the boot to finish, counts it in
# /var/lib/tern-boots and reports on /dev/ttyS0. tern.reboots=N on the kernel command line:
# reboot while the count is <= N, then power off (N reboots, N + 1 boots); tern.hold=S
# first waits S seconds.
state=$(systemctl is-system-running --wait 2>/dev/null)
. /etc/os-release
echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) state=$state" >>/var/lib/tern-boots
sync
n=$(wc -l </var/lib/tern-boots)
failed=$(systemctl list-units --state=failed --no-legend --plain | wc -l)
line="TERN-DISTRO-BOOT n=$n release=$VERSION_CODENAME failed_units=$failed state=$state"
echo "$line" >/dev/ttyS0
echo "$line"
[ "$failed" = 0 ] || systemctl list-units --state=failed --no-legend --plain >/dev/ttyS0
param() { tr ' ' '\n' </proc/cmdline | sed -n "s/^tern\\.$1=\\([0-9][0-9]*\\)\$/\\1/p" | tail -n 1; }
reboots=$(param reboots)
[ -n "$reboots" ] || exit 0
# tern.hold=S: stay up S seconds before the reboot or poweroff (time for a host to ping).
hold=$(param hold)
[ -z "$hold" ] || sleep "$hold"
if [ "$n" -le "$reboots" ]; then
    echo "TERN-DISTRO-REBOOT n=$n of $reboots" >/dev/ttyS0
    systemctl reboot
else
    echo "TERN-DISTRO-POWEROFF n=$n" >/dev/ttyS0
    systemctl poweroff
fi
EOF
    # Type=simple, not oneshot: a oneshot's start job would keep the boot from finishing,
    # and `is-system-running --wait` inside it would then wait for itself forever.
    cat >"$t/etc/systemd/system/tern-boot-counter.service" <<'EOF'
[Unit]
Description=tern boot counter (TERN-DISTRO-BOOT on ttyS0; tern.reboots=N)
After=multi-user.target

[Service]
Type=simple
ExecStart=/usr/local/sbin/tern-boot-counter
StandardOutput=journal

[Install]
WantedBy=multi-user.target
EOF
    mkdir -p "$t/etc/systemd/system/multi-user.target.wants" "$t/etc/systemd/system/getty.target.wants"
    ln -sfn /etc/systemd/system/tern-boot-counter.service "$t/etc/systemd/system/multi-user.target.wants/"
    ln -sfn /lib/systemd/system/serial-getty@.service "$t/etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service"
    chroot "$t" systemctl enable systemd-networkd.service >/dev/null 2>&1 ||
        die "$rel: systemctl enable systemd-networkd failed"
    # Test image: root logs in on the serial console without a password.
    chroot "$t" passwd -d root >/dev/null
    [ -f "$t/etc/default/grub" ] || cp "$t/usr/share/grub/default/grub" "$t/etc/default/grub"
}

# Runs the image's own grub-mkconfig in a chroot (no /proc, /sys or /dev mounted). It
# needs a block device behind / and /boot; there is none, so for the duration of the run:
#  - /usr/sbin/grub-probe is a script answering device, fs, fs_uuid, partuuid, partmap,
#    abstraction, compatibility_hint, hints_string and drive for the filesystems this image
#    will hold (values in /run/tern-grub-probe.env);
#  - /usr/bin/grub-mkrelpath strips /boot when /boot is its own filesystem (and, like the
#    real one, trailing slashes: a filesystem's root directory is "");
#  - /dev/vdaN are empty files and /dev/disk/by-uuid/<root uuid> a link to the root one
#    (10_linux writes root=UUID=... only when that link exists).
# grub-mkconfig then writes /boot/grub/grub.cfg as on an installed Debian system (with
# /etc/default/grub as Debian ships it: GRUB_CMDLINE_LINUX_DEFAULT="quiet"), and
# grub-editenv creates /boot/grub/grubenv as grub-install does.
run_grub_mkconfig() {
    local t=$1 table=$2 root_num=$3 root_uuid=$4 boot_num=$5 boot_uuid=$6
    local pm=gpt; [ "$table" = dos ] && pm=msdos
    cat >"$t/run/tern-grub-probe.env" <<EOF
PARTMAP=$pm
ROOT_DEV=/dev/vda$root_num
ROOT_UUID=$root_uuid
ROOT_PART=$root_num
BOOT_DEV=/dev/vda${boot_num:-$root_num}
BOOT_UUID=${boot_uuid:-$root_uuid}
BOOT_PART=${boot_num:-$root_num}
EOF
    mv "$t/usr/sbin/grub-probe" "$t/usr/sbin/grub-probe.tern-real"
    mv "$t/usr/bin/grub-mkrelpath" "$t/usr/bin/grub-mkrelpath.tern-real"
    install -m 755 /dev/stdin "$t/usr/sbin/grub-probe" <<'EOF'
#!/bin/sh
# tern build-time stand-in for grub-probe (see resources/distro/build.sh).
. /run/tern-grub-probe.env
target=device; isdev=0; arg=
while [ $# -gt 0 ]; do
    case "$1" in
    --target=*) target=${1#--target=} ;;
    -t) shift; target=$1 ;;
    --device | -d) isdev=1 ;;
    -*) ;;
    *) arg=$1 ;;
    esac
    shift
done
role=root
if [ $isdev = 1 ]; then
    [ "$arg" = "$BOOT_DEV" ] && role=boot
else
    case "$arg" in /boot | /boot/*) role=boot ;; esac
fi
if [ $role = boot ]; then dev=$BOOT_DEV uuid=$BOOT_UUID part=$BOOT_PART; else dev=$ROOT_DEV uuid=$ROOT_UUID part=$ROOT_PART; fi
case "$target" in
device) echo "$dev" ;;
fs) echo ext2 ;;
fs_uuid) echo "$uuid" ;;
partmap) echo "$PARTMAP" ;;
abstraction | cryptodisk_uuid) echo ;;
compatibility_hint) echo "hd0,$PARTMAP$part" ;;
hints_string) echo "--hint-bios=hd0,$PARTMAP$part --hint-efi=hd0,$PARTMAP$part --hint-baremetal=ahci0,$PARTMAP$part " ;;
drive) echo "(hd0)" ;;
disk) echo /dev/vda ;;
*) echo "grub-probe (tern build stand-in): target $target not answered" >&2; exit 1 ;;
esac
EOF
    install -m 755 /dev/stdin "$t/usr/bin/grub-mkrelpath" <<'EOF'
#!/bin/sh
# tern build-time stand-in for grub-mkrelpath (see resources/distro/build.sh).
. /run/tern-grub-probe.env
p=$1
if [ "$BOOT_DEV" != "$ROOT_DEV" ]; then
    case "$p" in /boot | /boot/*) p=${p#/boot} ;; esac
fi
# Like grub's own: no trailing slash, so a filesystem's root directory is "".
while [ "${p%/}" != "$p" ]; do p=${p%/}; done
echo "$p"
EOF
    local made=()
    for n in $root_num $boot_num; do
        [ -e "$t/dev/vda$n" ] || { : >"$t/dev/vda$n"; made+=("$t/dev/vda$n"); }
    done
    mkdir -p "$t/dev/disk/by-uuid" "$t/boot/grub"
    ln -sfn "../../vda$root_num" "$t/dev/disk/by-uuid/$root_uuid"
    [ -e "$t/dev/null" ] || die "no /dev/null in the tree"
    local rc=0
    chroot "$t" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
        grub-mkconfig -o /boot/grub/grub.cfg >"$t/run/grub-mkconfig.log" 2>&1 || rc=$?
    cat "$t/run/grub-mkconfig.log" >&2
    chroot "$t" grub-editenv /boot/grub/grubenv create || rc=1
    rm -rf "$t/dev/disk" "${made[@]}" "$t/run/tern-grub-probe.env" "$t/run/grub-mkconfig.log"
    mv "$t/usr/sbin/grub-probe.tern-real" "$t/usr/sbin/grub-probe"
    mv "$t/usr/bin/grub-mkrelpath.tern-real" "$t/usr/bin/grub-mkrelpath"
    [ $rc = 0 ] || die "grub-mkconfig in the chroot failed"
}

# parts_of IMG: "number start size type" per partition (sectors), from sfdisk -d.
parts_of() {
    sfdisk -d "$1" | sed -n 's|^.*[^0-9]\([0-9][0-9]*\) : start= *\([0-9]*\), size= *\([0-9]*\), type=\([^,]*\).*|\1 \2 \3 \4|p'
}

build_image() {
    local rel=$1 layout=$2
    local img=$out/$rel-$layout.img
    local stamp; stamp=$(cat "$here/build.sh" <(echo "$rel $layout $(cat "$cache/$rel/tree/.tern-tree")") | sha256sum | cut -d' ' -f1)
    if [ $force = 0 ] && [ -s "$img" ] && [ "$(cat "$img.stamp" 2>/dev/null)" = "$stamp" ]; then
        say "$rel-$layout: up to date ($img)"
        return
    fi
    local t0=$SECONDS
    local spec table; spec=$(layout_parts "$layout"); table=${spec%% *}
    local root_uuid boot_uuid= esp_id= root_num boot_num=
    root_uuid=$(uuid_of "$rel" "$layout" root)
    for p in ${spec#* }; do
        IFS=: read -r num role _ _ <<<"$p"
        case "$role" in
        root) root_num=$num ;;
        boot) boot_num=$num; boot_uuid=$(uuid_of "$rel" "$layout" boot) ;;
        esp) esp_id=$(vfat_id_of "$rel" "$layout" esp) ;;
        esac
    done
    local work=$cache/$rel/work-$layout
    no_mounts_under "$work" 2>/dev/null || true
    rm -rf "$work"
    mkdir -p "$work"
    local t=$work/tree
    cp -a "$cache/$rel/tree" "$t"
    rm -f "$t/.tern-tree"
    configure_tree "$rel" "$t" "$layout" "$root_uuid" "$boot_uuid" "$esp_id"
    run_grub_mkconfig "$t" "$table" "$root_num" "$root_uuid" "$boot_num" "$boot_uuid"
    if [ -n "$boot_num" ]; then
        mv "$t/boot" "$work/boot"
        mkdir "$t/boot"
    fi
    # Leave no build-time state in the image.
    rm -rf "$t/var/cache/apt/archives/partial" "$t/var/lib/apt/lists/"*_Packages "$t/run/"* "$t/tmp/"*
    local sf=$work/sfdisk.in
    rm -f "$img.tmp"
    truncate -s "${disk_mib}M" "$img.tmp"
    {
        echo "label: $table"
        [ "$table" = gpt ] && echo "label-id: $(uuid_of "$rel" "$layout" disk | tr a-f A-F)"
        [ "$table" = dos ] && echo "label-id: 0x$(hexof "$rel" "$layout" disk | cut -c1-8)"
        echo "unit: sectors"
        for p in ${spec#* }; do
            IFS=: read -r num role start size <<<"$p"
            local line="$img.tmp$num : start=$((start * 2048))"
            [ "$size" != 0 ] && line+=", size=$((size * 2048))"
            case "$table:$role" in
            gpt:bios) line+=", type=21686148-6449-6E6F-744E-656564454649" ;;
            gpt:esp) line+=", type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B" ;;
            gpt:*) line+=", type=0FC63DAF-8483-4772-8E79-3D69D8477DE4" ;;
            dos:root) line+=", type=83, bootable" ;;
            esac
            [ "$table" = gpt ] && line+=", uuid=$(uuid_of "$rel" "$layout" part "$num" | tr a-f A-F)"
            echo "$line"
        done
    } >"$sf"
    sfdisk -q --no-reread --no-tell-kernel "$img.tmp" <"$sf" >/dev/null || die "sfdisk on $img.tmp failed"
    # Each filesystem goes where sfdisk put its partition (start/size read back from it).
    local dump; dump=$(parts_of "$img.tmp")
    for p in ${spec#* }; do
        IFS=: read -r num role _ _ <<<"$p"
        local pstart psize
        read -r _ pstart psize _ < <(awk -v n="$num" '$1 == n' <<<"$dump")
        [ -n "$pstart" ] && [ -n "$psize" ] || die "no partition $num in $img.tmp"
        case "$role" in
        root | boot)
            local src=$t uuid=$root_uuid label=root
            [ "$role" = boot ] && { src=$work/boot; uuid=$boot_uuid; label=boot; }
            nice -n 19 mkfs.ext4 -q -F -L "$label" -U "$uuid" -E "offset=$((pstart * 512)),root_owner=0:0" \
                -d "$src" "$img.tmp" "$((psize / 2))k" || die "mkfs.ext4 -d for $role failed"
            ;;
        esp)
            rm -f "$work/esp.vfat"
            mkfs.vfat -C -n EFI -i "$esp_id" "$work/esp.vfat" "$((psize / 2))" >/dev/null || die "mkfs.vfat failed"
            dd if="$work/esp.vfat" of="$img.tmp" bs=512 seek="$pstart" conv=notrunc,sparse status=none
            ;;
        bios) ;;
        esac
    done
    mv "$img.tmp" "$img"
    verify_image "$rel" "$layout" "$img" "$root_uuid" "$boot_uuid" "$esp_id" >"$img.txt" ||
        { cat "$img.txt" >&2; die "$img: verification failed"; }
    rm -rf "$work"
    echo "$stamp" >"$img.stamp"
    say "$rel-$layout: built in $((SECONDS - t0)) s: $img ($(du -m "$img" | cut -f1) MiB used of ${disk_mib} MiB)"
}

# Checks without booting: partition table, fsck-clean filesystems at their offsets, kernel
# and initrd in /boot, grub.cfg's search and root= UUIDs equal to the filesystems'.
verify_image() {
    local rel=$1 layout=$2 img=$3 root_uuid=$4 boot_uuid=$5 esp_id=$6
    local ok=0 dump; dump=$(sfdisk -d "$img")
    echo "== $rel-$layout: sfdisk -d"
    echo "$dump"
    local boot_off= root_off= num start size type
    while read -r num start size type; do
        local off=$((start * 512)) sz=$((size * 512))
        local info; info=$(blkid -p -O "$off" -S "$sz" -o export "$img" 2>/dev/null | grep -E '^(TYPE|UUID|LABEL)=' | tr '\n' ' ')
        echo "== partition $num at $off ($((sz >> 20)) MiB, type $type): $info"
        case "$info" in
        *"UUID=$root_uuid "*) root_off=$off ;;
        *"UUID=$boot_uuid "*) [ -n "$boot_uuid" ] && boot_off=$off ;;
        *"TYPE=vfat"*) [[ -n "$esp_id" && "$info" == *"UUID=${esp_id:0:4}-${esp_id:4:4} "* ]] || { echo "ESP UUID mismatch"; ok=1; } ;;
        esac
    done < <(parts_of "$img")
    [ -n "$root_off" ] || { echo "no root filesystem with UUID $root_uuid"; return 1; }
    [ -z "$boot_uuid" ] || [ -n "$boot_off" ] || { echo "no /boot filesystem with UUID $boot_uuid"; return 1; }
    local part
    for part in "$root_off" $boot_off; do
        # e2fsck has no offset option: check a sparse copy of the partition.
        local pf=$cache/$rel/fsck.part sectors
        sectors=$(awk -v o="$part" '$2 * 512 == o { print $3 }' < <(parts_of "$img"))
        dd if="$img" of="$pf" bs=512 skip=$((part / 512)) count="$sectors" conv=sparse status=none
        if e2fsck -fn "$pf" >"$pf.log" 2>&1; then echo "== e2fsck -fn at $part: clean"; else cat "$pf.log"; ok=1; fi
        rm -f "$pf" "$pf.log"
    done
    local bdev="$img?offset=${boot_off:-$root_off}" bdir=/boot
    [ -n "$boot_off" ] && bdir=
    local ls; ls=$(debugfs -R "ls -l $bdir/" "$img?offset=${boot_off:-$root_off}" 2>/dev/null)
    local krel; krel=$(grep -o 'vmlinuz-[^ ]*' <<<"$ls" | head -n1 | sed 's/vmlinuz-//')
    [ -n "$krel" ] && grep -q "initrd.img-$krel" <<<"$ls" || { echo "no vmlinuz/initrd.img in $bdir/"; return 1; }
    echo "== kernel $krel, /boot (bytes): $(awk '$NF ~ /^(vmlinuz|initrd.img)-/ { printf "%s=%s ", $NF, $6 }' <<<"$ls")"
    local cfg; cfg=$(debugfs -R "cat $bdir/grub/grub.cfg" "$bdev" 2>/dev/null)
    debugfs -R "stat $bdir/grub/grubenv" "$bdev" 2>/dev/null | grep -q 'Size: 1024' || { echo "no 1 KiB grubenv"; ok=1; }
    local kre; kre=$(sed 's/[].+[]/\\&/g' <<<"$krel") # as an extended regex (trixie: 6.12.x+deb13)
    local search; search=$(sed -n "/^menuentry 'Debian GNU/,/^}/p" <<<"$cfg")
    echo "== first menuentry"
    echo "$search"
    grep -q "search --no-floppy --fs-uuid --set=root ${boot_uuid:-$root_uuid}\$" <<<"$search" || { echo "grub.cfg searches another UUID"; ok=1; }
    grep -Eq "^[[:space:]]*linux[[:space:]]+${bdir}/vmlinuz-$kre root=UUID=$root_uuid ro +quiet\$" <<<"$search" || { echo "grub.cfg linux line is not as expected"; ok=1; }
    grep -Eq "^[[:space:]]*initrd[[:space:]]+${bdir}/initrd.img-$kre\$" <<<"$search" || { echo "grub.cfg initrd line is not as expected"; ok=1; }
    grep -q 'console=' <<<"$cfg" && { echo "grub.cfg names a console"; ok=1; }
    echo "KERNEL_RELEASE=$krel"
    echo "ROOT_UUID=$root_uuid"
    echo "ROOT_OFFSET=$root_off"
    echo "BOOT_OFFSET=${boot_off:-$root_off}"
    echo "BOOT_PREFIX=$bdir"
    return $ok
}

for rel in "${releases[@]}"; do
    for layout in $(layouts_for "$rel"); do
        build_image "$rel" "$layout"
    done
done
say "done: $(cd "$out" && ls -s --block-size=M ./*.img | tr '\n' ' ')"
exit 0
}
