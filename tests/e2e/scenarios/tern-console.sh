#!/bin/sh
# rig: timeout=600 needs=tern
# tern-console: a console people can come back to. The default guest runs a getty on
# ttyS0 (tern.job=login; root has no password in the test guest) under
#   tern run --serial socket=PATH
# and `tern console PATH` (stdin from a FIFO, as a script types) attaches to it:
#   1. attach: the login prompt appears (printed before or after the attach: the
#      socket's ring replays what nobody saw), log in as root, a command runs;
#   2. a background command in the guest prints 3 s later; Ctrl-A x detaches: `tern
#      console` exits 0 saying so, and tern and the guest keep running;
#   3. reattach: the line printed while nobody was attached is shown (from the ring),
#      a second command runs in the same shell session;
#   4. `exit` ends the login session, the guest powers off, tern exits 0 and the
#      attached console is told tern closed it.
# Figures: time from starting tern to the login prompt, and to the first command's output.
. "$E2E_DIR/lib.sh"
need_kvm
need_tern
command -v mkfifo >/dev/null || fail "missing tool in L1: mkfifo"
sock=$WORK/console.sock
rm -f "$sock"
t0=$(now_ms)
start_vmm tern "$TERN" run --on-reboot exit --kernel "$GUEST/vmlinux" --initrd "$GUEST/initramfs.cpio.gz" \
    --memory 512M --cmdline "console=ttyS0 quiet tern.job=login $GUEST_APPEND" --serial "socket=$sock"
tern_pid=$VMM_PID
i=0
until [ -S "$sock" ]; do
    i=$((i + 1))
    [ $i -lt 100 ] && alive $tern_pid || fail "tern did not create the console socket $sock" "$WORK/tern.out"
    sleep 0.1
done

# attach N FD: `tern console` in the background, its stdin the FIFO opened on FD here
# (the shell types by writing to FD), its output in $WORK/console-N.out.
attach() {
    fifo=$WORK/in-$1
    rm -f "$fifo" && mkfifo "$fifo" || fail "cannot make $fifo"
    start_vmm "console-$1" sh -c 'exec "$0" console "$1" <"$2"' "$TERN" "$sock" "$fifo"
    CONSOLE_PID=$VMM_PID
    eval "exec $2>\"\$fifo\""
}
# type FD TEXT: the text, then a carriage return (the Enter key).
type_line() { printf '%s\r' "$2" >&"$1"; }

# 1. Attach, log in, run a command.
attach 1 3
out=$WORK/console-1.out
wait_for_marker "$out" 'tern-guest login:' 120 "$CONSOLE_PID" ||
    no_init "no login prompt on the attached console within 120 s" "$out" "$WORK/tern.out"
t_prompt=$(since_ms "$t0")
step "attached; login prompt after $t_prompt ms"
type_line 3 root
wait_for_marker "$out" 'built-in shell' 30 "$CONSOLE_PID" || fail "root's login did not start a shell" "$out"
type_line 3 'echo TERN-CONSOLE-$((6 * 7))'
wait_for_marker "$out" 'TERN-CONSOLE-42' 30 "$CONSOLE_PID" || fail "the first command's output did not come back" "$out"
t_cmd=$(since_ms "$t0")
step "logged in; a command ran after $t_cmd ms"

# 2. Something prints while nobody is attached; Ctrl-A x detaches.
type_line 3 '(sleep 3; echo TERN-LATER-$((2 * 5))) &'
sleep 0.5
printf '\001x' >&3
wait_exit "$CONSOLE_PID" 10 || fail "Ctrl-A x did not detach tern console" "$out"
[ "$EXIT_RC" = 0 ] || fail "tern console exited with $EXIT_RC after Ctrl-A x" "$out"
grep -q 'detached from' "$out" || fail "tern console did not say it detached" "$out"
exec 3>&-
grep -q 'TERN-LATER-10' "$out" && fail "the delayed line came before the detach: the test proves nothing" "$out"
sleep 5
alive $tern_pid || fail "tern ended after the console detached" "$WORK/tern.out"
step "detached; tern and the guest keep running"

# 3. Reattach: the ring shows the line printed meanwhile; the same shell runs a command.
attach 2 4
out=$WORK/console-2.out
wait_for_marker "$out" 'TERN-LATER-10' 20 "$CONSOLE_PID" ||
    fail "the line printed while detached was not shown on reattach" "$out" "$WORK/tern.out"
type_line 4 'echo TERN-AGAIN-$((1 + 2))'
wait_for_marker "$out" 'TERN-AGAIN-3' 30 "$CONSOLE_PID" || fail "no command output after the reattach" "$out"
step "reattached: the missed line was replayed, the same session goes on"

# 4. Log out: the guest powers off, tern exits 0, the console is closed by tern.
type_line 4 exit
wait_exit $tern_pid 60 || fail "tern did not exit after the login session ended" "$out" "$WORK/tern.out"
[ "$EXIT_RC" = 0 ] || fail "tern exited with $EXIT_RC" "$WORK/tern.out"
wait_exit "$CONSOLE_PID" 10 || fail "tern console kept running after tern exited" "$out"
grep -q 'closed by tern' "$out" || fail "tern console did not report tern closing it" "$out"
exec 4>&-
bench vmm=tern time_to_login_prompt_ms=$t_prompt time_to_first_command_ms=$t_cmd
pass
