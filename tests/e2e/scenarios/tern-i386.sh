#!/bin/sh
# rig: timeout=500 needs=tern
# tern-i386: 32-bit guests (target/guest/i386, resources/guest/build-i386.sh). On demand,
# not in the suite: early-boot triple faults (see tests/rig/README.md, "32-bit guests in
# the rig") are still to be explained.
# The 32-bit kernel is Debian's linux-image-686 (no PAE) by default; I386_KERNEL=686-pae
# picks linux-image-686-pae, which does not boot in the nested rig under either VMM
# (tests/rig/README.md, "32-bit guests in the rig": with L1's NPT both QEMU and tern hang
# before the kernel prints anything; with kvm_amd npt=0 both panic at the same early
# fixmap access), so it is for hosts with hardware KVM.
# 1. The 32-bit kernel (a bzImage: tern enters it through the 32-bit boot
#    protocol) with the i386 userland, 2 vCPUs, a disk and a NIC: the guest reaches init
#    with 2 CPUs online and `uname -m` i686, L1 pings it, it runs netperf TCP_STREAM and
#    TCP_RR against L1 (positive figures) and powers off; tern exits 0.
# 2. The same, with the disk job: the guest writes a known pattern to the raw disk and
#    reads it back; L1 checks the image holds the pattern.
# 3. The 64-bit default kernel (bzImage) with the same i386 userland (its modules from
#    the 64-bit kernel: initramfs-k64): reaches init (x86_64), runs the disk job, exits 0.
. "$E2E_DIR/lib.sh"
need_kvm
need_tern
I386=$GUEST/i386
case "${I386_KERNEL:-686}" in
686) kernel=$I386/bzImage-686 initrd=$I386/initramfs-686.cpio.gz ;;
686-pae) kernel=$I386/bzImage initrd=$I386/initramfs.cpio.gz ;;
*) fail "I386_KERNEL is 686 or 686-pae, not $I386_KERNEL" ;;
esac
for f in "$kernel" "$initrd" "$I386/initramfs-k64.cpio.gz"; do
    [ -s "$f" ] || fail "missing $f (resources/guest/build-i386.sh, run by build.sh, failed?)"
done
command -v md5sum >/dev/null || fail "missing tool in L1: md5sum"
set -- $TAPS
tap=$1
mac=52:54:00:12:34:86
ip=10.0.2.15
tests=${NETPERF_TESTS:-TCP_STREAM:5:16384,TCP_RR:5:1}
truncate -s 64M "$WORK/disk.img"

# 1. 32-bit kernel, i386 userland, 2 vCPUs, disk + NIC: init, ping, netperf.
start_vmm netserver netserver -D -p 12865
con=$WORK/console-net.log
t0=$(now_ms)
start_vmm tern-net "$TERN" run --on-reboot exit --kernel "$kernel" --initrd "$initrd" \
    --cpus 2 --memory 512M \
    --cmdline "console=ttyS0 tern.job=netperf tern.ip=$ip/24 tern.peer=$BRIDGE_IP tern.netperf=$tests $GUEST_APPEND" \
    --disk "path=$WORK/disk.img" --net "tap=$tap,mac=$mac" --serial "file=$con"
pid=$VMM_PID
wait_for_marker "$con" '^TERN-GUEST-INIT ' 120 "$pid" || no_init "32-bit kernel: no TERN-GUEST-INIT within 120 s or tern ended" "$con" "$WORK/tern-net.out"
t_init=$(since_ms "$t0")
echo "$MARKER_LINE" | grep -q ' cpus=2 ' || fail "32-bit kernel: expected 2 CPUs online: $MARKER_LINE" "$con"
echo "$MARKER_LINE" | grep -q ' arch=i686' || fail "32-bit kernel: expected uname -m i686: $MARKER_LINE" "$con"
step "${I386_KERNEL:-686} kernel reached init: $MARKER_LINE"
wait_for_marker "$con" '^TERN-GUEST-NET ' 60 "$pid" || fail "32-bit kernel: guest network not configured" "$con" "$WORK/tern-net.out"
echo "$MARKER_LINE" | grep -q "mac=$mac" || fail "guest link has the wrong MAC: $MARKER_LINE" "$con"
i=0
until ping -c 1 -W 1 $ip >"$WORK/ping.out" 2>&1; do
    i=$((i + 1))
    [ $i -lt 20 ] || fail "L1 cannot ping the 32-bit guest at $ip" "$con" "$WORK/ping.out"
done
step "L1 pings the 32-bit guest"
wait_exit "$pid" 200 || fail "32-bit guest did not finish netperf and power off" "$con" "$WORK/tern-net.out"
[ "$EXIT_RC" = 0 ] || fail "tern (32-bit kernel, netperf) exited with $EXIT_RC" "$con" "$WORK/tern-net.out"
grep -q '^TERN-JOB error' "$con" && fail "guest job error: $(grep '^TERN-JOB error' "$con")" "$con"
grep -q '^TERN-NETPERF .*result=error' "$con" && fail "netperf error in the 32-bit guest" "$con"
figures=
for spec in $(echo "$tests" | tr ',' ' '); do
    t=${spec%%:*}
    r=$(grep -a "^TERN-NETPERF test=$t " "$con" | head -n 1 | sed -n 's/.* result=\([0-9.]*\) .*/\1/p')
    [ -n "$r" ] || net_guest_ended "no $t result from the 32-bit guest" "$con" "$WORK/tern-net.out"
    awk -v r="$r" 'BEGIN { exit !(r > 0) }' || fail "$t gave $r" "$con"
    figures="$figures $(echo "$t" | tr 'A-Z' 'a-z')=$r"
done
step "32-bit netperf:$figures"

# 2. 32-bit kernel, disk job on the raw disk (NIC attached too), checked from L1.
mb=32
con2=$WORK/console-disk.log
start_vmm tern-disk "$TERN" run --on-reboot exit --kernel "$kernel" --initrd "$initrd" \
    --cpus 2 --memory 512M \
    --cmdline "console=ttyS0 tern.job=disk tern.disk=/dev/vda tern.disk_mb=$mb $GUEST_APPEND" \
    --disk "path=$WORK/disk.img" --net "tap=$tap,mac=$mac" --serial "file=$con2"
wait_exit "$VMM_PID" 180 || fail "32-bit disk job did not finish" "$con2" "$WORK/tern-disk.out"
grep -a -q '^TERN-GUEST-INIT .*arch=i686' "$con2" || no_init "32-bit disk guest did not reach init" "$con2" "$WORK/tern-disk.out"
[ "$EXIT_RC" = 0 ] || fail "tern (32-bit kernel, disk) exited with $EXIT_RC" "$con2" "$WORK/tern-disk.out"
grep -q '^TERN-DISK verify ok' "$con2" || fail "32-bit guest disk verify did not pass" "$con2"
expect=$(tern-pattern disk $mb | md5sum | cut -d' ' -f1)
got=$(head -c $((mb * 1048576)) "$WORK/disk.img" | md5sum | cut -d' ' -f1)
[ "$got" = "$expect" ] || fail "the image holds sum $got, expected the pattern's $expect" "$con2"
step "32-bit guest wrote $mb MiB to /dev/vda, verified in the guest and in the image ($got)"

# 3. 64-bit kernel, i386 userland: reaches init and runs the disk job.
truncate -s 0 "$WORK/disk.img"
truncate -s 64M "$WORK/disk.img"
con3=$WORK/console-k64.log
start_vmm tern-k64 "$TERN" run --on-reboot exit --kernel "$GUEST/bzImage" --initrd "$I386/initramfs-k64.cpio.gz" \
    --cpus 2 --memory 512M \
    --cmdline "console=ttyS0 tern.job=disk tern.disk=/dev/vda tern.disk_mb=8 $GUEST_APPEND" \
    --disk "path=$WORK/disk.img" --serial "file=$con3"
wait_exit "$VMM_PID" 180 || fail "64-bit kernel with the i386 userland did not finish" "$con3" "$WORK/tern-k64.out"
grep -a -q '^TERN-GUEST-INIT .*cpus=2 .*arch=x86_64' "$con3" ||
    no_init "64-bit kernel with the i386 userland did not reach init (2 CPUs, x86_64)" "$con3" "$WORK/tern-k64.out"
[ "$EXIT_RC" = 0 ] || fail "tern (64-bit kernel, i386 userland) exited with $EXIT_RC" "$con3" "$WORK/tern-k64.out"
grep -q '^TERN-DISK verify ok' "$con3" || fail "i386 userland on the 64-bit kernel: disk verify did not pass" "$con3"
step "64-bit kernel ran the i386 userland (init, disk job)"
bench vmm=tern guest=i686 kernel=linux-${I386_KERNEL:-686} time_to_init_ms=$t_init$figures
pass
