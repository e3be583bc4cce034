#!/usr/bin/env bash
# Installs the host packages tern's tests and rig need (openssl: the migration TLS tests'
# certificates; resource-agents and libxml2-utils: ocf-tester and the shell functions
# for the OCF agent's test; systemd: systemd-analyze verify of the units), from
# Debian's registries only.
# Adds Debian's non-free component (netperf) and bookworm-backports (the newest QEMU
# Debian ships, the comparison anchor) as apt sources when missing. Idempotent.
set -euo pipefail

want_qemu_major=10
packages=(busybox-static cpio lz4 e2fsprogs netperf python3 openssl iproute2 resource-agents libxml2-utils systemd)

have_all() {
    command -v qemu-system-x86_64 >/dev/null &&
        qemu-system-x86_64 --version | grep -q "version ${want_qemu_major}\." &&
        [ -x /bin/busybox ] && command -v cpio >/dev/null && command -v lz4 >/dev/null &&
        command -v mkfs.ext4 >/dev/null && command -v debugfs >/dev/null &&
        command -v netperf >/dev/null && command -v python3 >/dev/null &&
        command -v openssl >/dev/null && [ -x /usr/sbin/ip ] && /usr/sbin/ip -V 2>/dev/null | grep -q iproute2 &&
        [ -x /usr/sbin/ocf-tester ] && [ -f /usr/lib/ocf/lib/heartbeat/ocf-shellfuncs ] &&
        command -v xmllint >/dev/null && command -v systemd-analyze >/dev/null
}

if have_all; then
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    echo "install-host-packages: not root; install these yourself: qemu-system-x86 (bookworm-backports) ${packages[*]}" >&2
    exit 1
fi

src=/etc/apt/sources.list.d/tern-extra.sources
if [ ! -f "$src" ]; then
    cat > "$src" <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: non-free
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi

export DEBIAN_FRONTEND=noninteractive
for attempt in 1 2 3; do
    if apt-get update -qq && \
       apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null && \
       apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86 >/dev/null; then
        break
    fi
    echo "install-host-packages: apt attempt $attempt failed, retrying" >&2
    sleep 5
done
[ -x /bin/busybox ] || ln -sf "$(command -v busybox)" /bin/busybox
have_all || { echo "install-host-packages: packages still missing after install" >&2; exit 1; }
