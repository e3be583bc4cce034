#!/bin/sh
# tern test guest: /init (PID 1) of initramfs.cpio.gz and rootfs.ext4.
#
# Kernel command line (all optional):
#   tern.job=boot|shell|login|netserver|netperf|dirty|disk|iobench|reboot   (default boot)
#                             login: a getty on ttyS0 (hostname tern-guest; root has no
#                             password: a test guest); the guest powers off when that
#                             login session ends
#   tern.ip=A.B.C.D/NN        address for eth0 (the VMM sets the MAC)
#   tern.peer=A.B.C.D         netperf server (job netperf)
#   tern.netperf=T:S:B,...    netperf tests: TEST:SECONDS:SIZE (job netperf)
#   tern.netperf_buf=BYTES    socket buffer size for every netperf test (job netperf)
#                             default TCP_STREAM:10:16384,TCP_RR:10:1
#   tern.disk=/dev/vdX|file:/PATH   disk job target (default /dev/vdb)
#   tern.disk_mb=N            disk job size in MiB (default 64)
#   tern.dirty_mb=N           dirty job working set in MiB (default 64)
#   tern.dirty_report=S       dirty job report interval in seconds (default 5)
#   tern.acpid=1              power off on the ACPI power button (busybox acpid): prints
#                             TERN-GUEST-POWER-BUTTON, then powers off as every job ends
#   tern.reboots=N            reboot job: reboot until boot N+1, then power off (default 1);
#                             the boot counter is a decimal number at the start of
#                             tern.disk (default /dev/vda, a raw scratch image, zeroes at
#                             first); the method is the kernel's reboot= parameter
#   root=/dev/vdX [init=/init]  with the initramfs: mount that ext4 root and
#                             switch_root into it (virtio_blk is a module in the
#                             Debian cloud kernel, so the initramfs is needed)
#
# Console markers, one per line, machine-readable:
#   TERN-GUEST-INIT cpus=N uptime=S root=initramfs|DEV arch=UNAME_M (x86_64, i686)
#   TERN-GUEST-NET dev=eth0 ip=A/NN mac=MAC | TERN-GUEST-NET error ...
#   TERN-JOB netserver ready | TERN-JOB dirty ready mb=N | TERN-JOB error ...
#   TERN-NETPERF test=T size=B seconds=S result=NUM unit=U [mean_latency_us=.. p99_latency_us=..]
#                segs_in=N segs_out=N retrans=N   (the guest's TCP segments during the test)
#   TERN-NETPERF test=T size=B seconds=S result=error rc=N
#   TERN-DIRTY counter=N sum=MD5 | TERN-DIRTY verify ok|fail counter=N sum=MD5 [expected=MD5]
#   TERN-DISK written sum=MD5 bytes=N target=T | TERN-DISK verify ok|fail sum=MD5
#   TERN-GUEST-BOOT n=N (reboot job: this is boot N) | TERN-GUEST-REBOOT n=N reboot=METHOD
#   TERN-GUEST-POWEROFF
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
umask 022

mounted() { grep -q " $1 " /proc/mounts 2>/dev/null; }

[ -d /proc/self ] || mount -t proc proc /proc
mounted /sys || mount -t sysfs sysfs /sys
mounted /dev || mount -t devtmpfs devtmpfs /dev
# The kernel opens /dev/console for PID 1 only if it exists in the root file system.
[ -c /dev/console ] && exec </dev/console >/dev/console 2>&1
mkdir -p /dev/pts /dev/shm
mounted /dev/pts || mount -t devpts devpts /dev/pts
mounted /tmp || mount -t tmpfs -o mode=1777 tmpfs /tmp
mounted /run || mount -t tmpfs -o mode=755 tmpfs /run

# Modules, in dependency order (written by resources/guest/build.sh).
for m in $(cat /lib/modules/tern/load-order); do
    [ -d /sys/module/$m ] || insmod /lib/modules/tern/$m.ko || echo "TERN-GUEST-WARN insmod $m failed"
done

# tern.foo=bar -> T_foo=bar; root= and init= as ROOTDEV, NEWINIT.
ROOTDEV= NEWINIT=/init
for w in $(cat /proc/cmdline); do
    case "$w" in
    tern.*=*)
        k=${w%%=*}; k=${k#tern.}; v=${w#*=}
        case "$k" in *[!a-z0-9_]*) continue ;; esac
        eval "T_$k=\$v" ;;
    root=/dev/*) ROOTDEV=${w#root=} ;;
    init=/*) NEWINIT=${w#init=} ;;
    esac
done

if [ ! -e /etc/tern-rootfs ] && [ -n "$ROOTDEV" ]; then
    i=0
    while [ ! -b "$ROOTDEV" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    mkdir -p /newroot
    if mount -t ext4 "$ROOTDEV" /newroot || mount -t ext4 -o ro "$ROOTDEV" /newroot; then
        echo "TERN-GUEST-STAGE switch_root $ROOTDEV $NEWINIT"
        umount /run /tmp /dev/pts 2>/dev/null
        mkdir -p /newroot/dev && mount --move /dev /newroot/dev
        umount /sys /proc
        exec switch_root /newroot "$NEWINIT"
    fi
    echo "TERN-GUEST-STAGE error cannot mount $ROOTDEV, staying in the initramfs"
fi
ROOTNAME=initramfs
if [ -e /etc/tern-rootfs ]; then
    ROOTNAME=$(awk '$2 == "/" && $1 != "rootfs" { d = $1 } END { print d }' /proc/mounts)
    mount -o remount,rw / 2>/dev/null
fi

read up _ </proc/uptime
echo "TERN-GUEST-INIT cpus=$(nproc) uptime=$up root=${ROOTNAME:-unknown} arch=$(uname -m)"

guest_poweroff() {
    sync
    echo "TERN-GUEST-POWEROFF"
    poweroff -f
    sleep 5
    echo "TERN-GUEST-WARN poweroff -f returned; trying reboot -f"
    reboot -f
}

# The power button (tern shutdown, QEMU system_powerdown): acpid runs
# /etc/acpi/PWRF/00000080 on the button's input event.
if [ "${T_acpid:-0}" = 1 ]; then
    mkdir -p /etc/acpi/PWRF
    printf '#!/bin/sh\necho TERN-GUEST-POWER-BUTTON >/dev/console\nsync\necho TERN-GUEST-POWEROFF >/dev/console\npoweroff -f\n' >/etc/acpi/PWRF/00000080
    chmod 755 /etc/acpi/PWRF/00000080
    acpid -c /etc/acpi -l /tmp/acpid.log || echo "TERN-GUEST-WARN acpid failed"
fi

ip link set lo up
if [ -n "$T_ip" ]; then
    i=0
    while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    if ip addr add "$T_ip" dev eth0 && ip link set eth0 up; then
        echo "TERN-GUEST-NET dev=eth0 ip=$T_ip mac=$(cat /sys/class/net/eth0/address)"
    else
        echo "TERN-GUEST-NET error cannot configure eth0 with $T_ip"
    fi
fi

wait_peer() { # IP SECONDS
    i=0
    while [ $i -lt "$2" ]; do
        ping -c 1 -W 1 "$1" >/dev/null 2>&1 && return 0
        i=$((i + 1))
    done
    return 1
}

# The guest's TCP segment counters: "IN OUT RETRANS" (so a test's line can say how
# finely its bytes were cut into segments, and whether timers had to resend any).
tcp_segs() {
    awk '$1 == "Tcp:" && $2 ~ /^[0-9]+$/ { print $11, $12, $13 }' /proc/net/snmp
}

job_netperf() {
    if [ -z "$T_peer" ]; then
        echo "TERN-JOB error netperf needs tern.peer=IP"; return
    fi
    if ! wait_peer "$T_peer" 30; then
        echo "TERN-JOB error peer $T_peer unreachable"; return
    fi
    for spec in $(echo "${T_netperf:-TCP_STREAM:10:16384,TCP_RR:10:1}" | tr ',' ' '); do
        test=${spec%%:*}; rest=${spec#*:}; secs=${rest%%:*}; size=${rest#*:}
        case "$test" in
        *_RR | *_CRR) opts="-r $size,$size -o THROUGHPUT,THROUGHPUT_UNITS,MEAN_LATENCY,P99_LATENCY" ;;
        TCP_MAERTS) opts="-m $size -M $size -o THROUGHPUT,THROUGHPUT_UNITS" ;;
        *) opts="-m $size -o THROUGHPUT,THROUGHPUT_UNITS" ;;
        esac
        # tern.netperf_buf=BYTES: local and remote socket buffer sizes.
        [ -n "$T_netperf_buf" ] && opts="$opts -s $T_netperf_buf -S $T_netperf_buf"
        # netserver may still be starting: retry the control connection a few times.
        segs0=$(tcp_segs)
        n=0
        while :; do
            out=$(netperf -H "$T_peer" -t "$test" -l "$secs" -P 0 -- $opts 2>&1); rc=$?
            [ $rc -eq 0 ] || [ $n -ge 3 ] && break
            n=$((n + 1)); sleep 1
        done
        line=$(echo "$out" | grep -E '^[0-9.]+,' | tail -n 1)
        if [ $rc -ne 0 ] || [ -z "$line" ]; then
            echo "TERN-NETPERF test=$test size=$size seconds=$secs result=error rc=$rc"
            echo "$out" | sed 's/^/netperf| /'
            continue
        fi
        segs=$(echo "$segs0 $(tcp_segs)" | awk '{ printf "segs_in=%d segs_out=%d retrans=%d", $4 - $1, $5 - $2, $6 - $3 }')
        echo "$line" | awk -F, -v t="$test" -v s="$size" -v l="$secs" -v g="$segs" '{
            u = $2; if (u == "10^6bits/s") u = "Mbit/s"; else if (u == "Trans/s") u = "trans/s"
            x = ""; if (NF >= 4) x = " mean_latency_us=" $3 " p99_latency_us=" $4
            printf "TERN-NETPERF test=%s size=%s seconds=%s result=%s unit=%s%s %s\n", t, s, l, $1, u, x, g
        }'
    done
}

job_dirty() {
    D=/tmp/dirty; mb=${T_dirty_mb:-64}; every=${T_dirty_report:-5}
    mkdir -p $D /tmp/www/cgi-bin
    echo "$mb" >$D/mb
    netserver >/dev/null 2>&1
    tern-pattern dirty-all 0 "$mb" >$D/blob
    echo 0 >$D/counter
    # verify over HTTP: wget -q -O - http://GUEST/cgi-bin/verify (or /cgi-bin/status)
    for c in verify status; do
        printf '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\n"\nexec tern-dirty %s\n' $c >/tmp/www/cgi-bin/$c
        chmod +x /tmp/www/cgi-bin/$c
    done
    httpd -p 80 -h /tmp/www
    (
        i=0; read up _ </proc/uptime; last=${up%.*}
        while :; do
            if [ -e $D/stop ]; then
                : >$D/stopped
                while [ -e $D/stop ]; do sleep 0.1; done
                rm -f $D/stopped
            fi
            i=$((i + 1)); s=$(((i - 1) % mb))
            tern-pattern dirty-slot $s $i | dd of=$D/blob bs=4096 seek=$((s * 256)) conv=notrunc iflag=fullblock 2>/dev/null
            echo $i >$D/counter.new && mv $D/counter.new $D/counter
            read up _ </proc/uptime; now=${up%.*}
            if [ $((now - last)) -ge "$every" ]; then
                sum=$(md5sum <$D/blob); echo "TERN-DIRTY counter=$i sum=${sum%% *}"; last=$now
            fi
        done
    ) &
    echo "TERN-JOB dirty ready mb=$mb"
    # Console commands: verify, status, diskwrite, diskverify, poweroff.
    # diskwrite/diskverify: 8 MiB of known data on tern.disk (default /dev/vda), written
    # and synced, later read back uncached and compared.
    while read -r cmd; do
        case "$cmd" in
        verify | status) tern-dirty "$cmd" ;;
        diskwrite)
            tern-pattern disk 8 >/tmp/disk8
            sum=$(md5sum </tmp/disk8); echo "${sum%% *}" >/tmp/disk8.sum
            if dd if=/tmp/disk8 of="${T_disk:-/dev/vda}" bs=1M conv=fsync 2>/dev/null; then
                echo "TERN-DISK written sum=${sum%% *}"
            else
                echo "TERN-DISK error write to ${T_disk:-/dev/vda} failed"
            fi
            rm -f /tmp/disk8 ;;
        diskverify)
            echo 3 >/proc/sys/vm/drop_caches
            got=$(dd if="${T_disk:-/dev/vda}" bs=1M count=8 2>/dev/null | md5sum); got=${got%% *}
            if [ "$got" = "$(cat /tmp/disk8.sum 2>/dev/null)" ]; then echo "TERN-DISK verify ok sum=$got"; else echo "TERN-DISK verify fail sum=$got"; fi ;;
        poweroff) return ;;
        "") ;;
        *) echo "TERN-DIRTY error unknown command $cmd (verify, status, diskwrite, diskverify, poweroff)" ;;
        esac
    done
    while :; do sleep 3600; done # console input closed: keep running
}

job_disk() {
    mb=${T_disk_mb:-64}; target=${T_disk:-/dev/vdb}
    case "$target" in
    file:*)
        target=${target#file:}
        mkdir -p "$(dirname "$target")" ;;
    *)
        i=0
        while [ ! -b "$target" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
        if [ ! -b "$target" ]; then
            echo "TERN-DISK error no block device $target"; echo "TERN-DISK verify fail sum=none"; return
        fi ;;
    esac
    tern-pattern disk "$mb" >/tmp/disk-pattern
    sum=$(md5sum </tmp/disk-pattern); sum=${sum%% *}
    if ! dd if=/tmp/disk-pattern of="$target" bs=1M conv=fsync 2>/dev/null; then
        echo "TERN-DISK error write to $target failed"; echo "TERN-DISK verify fail sum=none"; return
    fi
    rm -f /tmp/disk-pattern
    sync
    echo "TERN-DISK written sum=$sum bytes=$((mb * 1048576)) target=$target"
    [ -b "$target" ] && blockdev --flushbufs "$target"
    echo 3 >/proc/sys/vm/drop_caches
    got=$(dd if="$target" bs=1M count="$mb" 2>/dev/null | md5sum); got=${got%% *}
    if [ "$got" = "$sum" ]; then
        echo "TERN-DISK verify ok sum=$got"
    else
        echo "TERN-DISK verify fail sum=$got expected=$sum"
    fi
}

# Counts this boot on the scratch disk, then reboots (reboot -f: the kernel's reboot=
# method, no init scripts) until the count passes tern.reboots, then returns to power
# off. A count that cannot be read or written is an error and powers off.
job_reboot() {
    dev=${T_disk:-/dev/vda}
    i=0; while [ ! -b "$dev" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    if [ ! -b "$dev" ]; then
        echo "TERN-JOB error no block device $dev"; return
    fi
    n=$(dd if="$dev" bs=512 count=1 2>/dev/null | tr -d '\000' | head -n 1)
    case "$n" in
    "") n=0 ;;
    *[!0-9]*) echo "TERN-JOB error $dev does not start with a boot count: $n"; return ;;
    esac
    n=$((n + 1))
    # One 512-byte block: the count, a newline, zero padding (conv=sync).
    if ! printf '%s\n' "$n" | dd of="$dev" bs=512 count=1 conv=sync,fsync,notrunc 2>/dev/null; then
        echo "TERN-JOB error cannot write the boot count to $dev"; return
    fi
    sync
    echo "TERN-GUEST-BOOT n=$n"
    [ "$n" -gt "${T_reboots:-1}" ] && return
    method=$(tr ' ' '\n' </proc/cmdline | sed -n 's/^reboot=//p')
    echo "TERN-GUEST-REBOOT n=$n reboot=${method:-default}"
    reboot -f
    sleep 10
    echo "TERN-JOB error reboot -f returned"
}

case "${T_job:-boot}" in
boot) ;;
shell)
    echo "TERN-JOB shell (exit the shell to power off)"
    setsid cttyhack sh -l ;;
login)
    hostname tern-guest
    echo "TERN-JOB login (getty on ttyS0)"
    # One session: getty prompts, login starts root's shell; when the shell exits,
    # getty returns and the guest powers off.
    setsid getty -L 0 ttyS0 vt100 ;;
netserver)
    netserver >/dev/null 2>&1
    echo "TERN-JOB netserver ready"
    while :; do sleep 3600; done ;;
netperf) job_netperf ;;
dirty) job_dirty ;;
disk) job_disk ;;
iobench)
    # tern.disk=DEV (default /dev/vda), tern.io_mb=N (default 256), tern.io_secs=S (10).
    dev=${T_disk:-/dev/vda}
    i=0; while [ ! -b "$dev" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    tern-io seqwrite "$dev" "${T_io_mb:-256}"
    tern-io seqread "$dev" "${T_io_mb:-256}"
    tern-io randread "$dev" "${T_io_secs:-10}" ;;
reboot) job_reboot ;;
*) echo "TERN-JOB error unknown job $T_job" ;;
esac
guest_poweroff
