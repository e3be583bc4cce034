#!/bin/sh
# rig: timeout=900 needs=tern
# tern-clones (on demand, not in the suite: see tests/rig/README.md, "Snapshots,
# restores and clones"): 8 clones of one snapshot run at once. The guest is the default guest with
# Debian's generic kernel (target/guest/generic: it has the VM generation ID driver) on
# the dirty job (256 MiB RAM, 8 MiB working set); it is snapshotted with --stop. Then 8
# `tern restore --clone` run together, each with its own new TAP on br0
# (`--net bridge=br0`: a fresh MAC per clone):
#   - every clone's guest counts on from the snapshot (a TERN-DIRTY line with a counter
#     at least the snapshot's) and its counter advances;
#   - every clone's kernel reports the VM generation change ("crng reseeded due to
#     virtual machine fork": the vmgenid driver saw a new ID and reseeded the RNG);
#   - every clone's control API answers.
# Figures: time from the first restore to all 8 counting; the 8 tern processes' PSS
# (proportional set size: pages shared between clones are split among them) against
# 8 x guest RAM.
. "$E2E_DIR/lib.sh"
need_kvm
need_tern
need_generic_guest
n=${CLONES:-8}
# tern-clones-plain sets CLONES_PLAIN=1: plain restores (no --clone), no generation change.
clone_arg=--clone
[ "${CLONES_PLAIN:-0}" = 1 ] && clone_arg=
mem=256
counter() { sed -n 's/.*counter=\([0-9]*\).*/\1/p' | tail -n 1; }

mkfifo "$WORK/src.in"
"$TERN" run --on-reboot exit --kernel "$G/bzImage" --initrd "$G/initramfs.cpio.gz" --memory "${mem}M" \
    --cmdline "console=ttyS0 tern.job=dirty tern.dirty_mb=8 tern.dirty_report=2 $GUEST_APPEND" \
    --serial stdio --api-socket "$WORK/src.sock" --net bridge=br0 <"$WORK/src.in" >"$WORK/src.log" 2>"$WORK/src.out" &
src=$!
_lib_pids="$_lib_pids $src"
exec 5>"$WORK/src.in"
wait_for_marker "$WORK/src.log" '^TERN-DIRTY counter=' 180 "$src" || no_init "the generic-kernel guest is not counting" "$WORK/src.log" "$WORK/src.out"
grep -a -q 'vmgenid\|VMGENID\|VM_Gen' "$WORK/src.log" && step "source console mentions vmgenid: $(grep -a -i vmgenid "$WORK/src.log" | head -n 1)"
"$TERN" snapshot --api-socket "$WORK/src.sock" --to "$WORK/snap" --stop >"$WORK/snapshot.out" 2>&1 ||
    fail "tern snapshot --stop failed" "$WORK/snapshot.out" "$WORK/src.out"
wait_exit "$src" 30 || fail "the source did not end after snapshot --stop" "$WORK/src.out"
c_snap=$(grep -a '^TERN-DIRTY counter=' "$WORK/src.log" | counter)
step "snapshot: $(grep 'size on disk' "$WORK/snapshot.out" | tr -s ' ')"

t0=$(now_ms)
i=1
pids=
while [ $i -le $n ]; do
    start_vmm "clone$i" "$TERN" restore --from "$WORK/snap" $clone_arg --net bridge=br0 --serial "file=$WORK/clone$i.log" \
        --api-socket "$WORK/clone$i.sock"
    pids="$pids $VMM_PID"
    i=$((i + 1))
done
clones_counting clone "$c_snap" $pids
all_ms=$(since_ms "$t0")
step "all $n clones counting after $all_ms ms"
# PSS of the clones (kB), while all run.
pss=0
i=1
for pid in $pids; do
    p=$(awk '/^Pss:/ { print $2; exit }' "/proc/$pid/smaps_rollup" 2>/dev/null)
    if [ -z "$p" ]; then
        alive "$pid" || clone_ended clone "$i"
        fail "cannot read the PSS of tern $pid"
    fi
    pss=$((pss + p))
    i=$((i + 1))
done
clones_advancing clone $pids
for i in $(seq 1 "$n"); do
    if [ -n "$clone_arg" ]; then
        grep -a -q 'crng reseeded due to virtual machine fork' "$WORK/clone$i.log" ||
            fail "clone $i's kernel did not report the VM generation change" "$WORK/clone$i.log" "$WORK/clone$i.out"
    else
        grep -a -q 'crng reseeded due to virtual machine fork' "$WORK/clone$i.log" &&
            fail "plain restore $i's kernel saw a VM generation change" "$WORK/clone$i.log"
    fi
done
step "every clone's counter advances and its kernel reseeded its RNG on the new VM generation ID"
for i in $(seq 1 $n); do
    "$TERN" info --api-socket "$WORK/clone$i.sock" >"$WORK/info$i.out" 2>&1 || fail "clone $i's API does not answer" "$WORK/info$i.out"
done
step "PSS of the $n clones: $((pss / 1024)) MiB against $((n * mem)) MiB of guest RAM"
bench vmm=tern clones=$n mem_mb=$mem all_running_ms=$all_ms pss_total_mib=$((pss / 1024)) guest_ram_total_mib=$((n * mem))
pass
