//! Under [`Mode::On`](crate::Mode::On) a forbidden syscall traps (`SECCOMP_RET_TRAP`)
//! into this SIGSYS handler, which names the thread class and the syscall on stderr
//! and then ends the process by SIGSYS, as `SECCOMP_RET_KILL_PROCESS` would have, so
//! a user's bug report says which allow-list missed what.
//!
//! The handler runs on the offending thread, under that thread's filter. It only
//! formats into a stack buffer and calls `write(2, ...)` (every class may write to
//! stderr), then makes a syscall no filter allows: with SIGSYS blocked inside the
//! handler, the kernel resets SIGSYS to its default action and delivers it, which ends
//! the process. On a thread without a filter (a SIGSYS sent by `kill`) that call just
//! fails, and the handler restores the default action and raises SIGSYS itself.

use crate::classes::ThreadClass;

/// `si_code` of a SIGSYS raised by a seccomp filter (`SYS_SECCOMP` in the kernel).
const SYS_SECCOMP: libc::c_int = 1;

/// Offset of `_sigsys._syscall` in x86_64's `siginfo_t`: three ints, padding to 16,
/// then the `_sigsys` member of the union, whose first field is an 8-byte pointer.
const SIGSYS_SYSCALL_OFFSET: usize = 24;

/// A syscall number above every real one (x86_64 has fewer than 500): no filter's
/// list has it, and without a filter the kernel answers ENOSYS.
const NO_SUCH_SYSCALL: libc::c_long = 0x3fff;

/// Installs the handler for the whole process. Called by `set_mode(Mode::On)`.
pub(crate) fn install_sigsys_reporter() -> std::io::Result<()> {
    // SAFETY: a zeroed sigaction is a valid starting point (empty mask, no flags);
    // the handler is an `extern "C"` fn with the SA_SIGINFO signature, and it only
    // does async-signal-safe work (stack formatting, write, raw syscalls).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigsys as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

extern "C" fn on_sigsys(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t for an SA_SIGINFO handler; for a
    // seccomp SIGSYS its `_sigsys` member is filled, read at its fixed offset.
    let syscall = unsafe {
        if (*info).si_code == SYS_SECCOMP {
            Some(std::ptr::read_unaligned((info as *const u8).add(SIGSYS_SYSCALL_OFFSET) as *const libc::c_int))
        } else {
            None
        }
    };
    let mut message = StackText::default();
    let class = crate::confined_as();
    // SAFETY: for an SA_SIGINFO handler the kernel passes the interrupted thread's
    // ucontext_t; the path argument of a file syscall is a string the thread itself
    // handed to the kernel (read at most PATH_SHOWN bytes, up to its NUL).
    let path = unsafe { syscall.and_then(|nr| path_argument(nr, context as *const libc::ucontext_t)) };
    let _ = describe(&mut message, class, syscall, path.as_ref().map(|p| p.text()));
    // SAFETY: writes bytes of a live stack buffer to stderr; raw syscalls with no
    // pointers; restoring SIG_DFL and raising are async-signal-safe.
    unsafe {
        libc::write(libc::STDERR_FILENO, message.bytes().as_ptr().cast(), message.bytes().len());
        libc::syscall(NO_SUCH_SYSCALL);
        // Still alive: this thread has no filter. End the process the same way.
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
}

/// How much of a path argument the report shows.
const PATH_SHOWN: usize = 160;

/// A path argument copied out of the offending call, without allocating.
struct PathArg {
    bytes: [u8; PATH_SHOWN],
    len: usize,
}

impl PathArg {
    fn text(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or("(not UTF-8)")
    }
}

/// The path a file syscall was given: the first argument (rdi) of open-style calls,
/// the second (rsi) of the *at ones.
///
/// # Safety
/// `context` must be the ucontext_t the kernel passed to the SIGSYS handler.
unsafe fn path_argument(nr: libc::c_int, context: *const libc::ucontext_t) -> Option<PathArg> {
    let register = match libc::c_long::from(nr) {
        libc::SYS_open | libc::SYS_stat | libc::SYS_lstat | libc::SYS_access | libc::SYS_readlink | libc::SYS_unlink => libc::REG_RDI,
        libc::SYS_openat
        | libc::SYS_openat2
        | libc::SYS_newfstatat
        | libc::SYS_statx
        | libc::SYS_faccessat
        | libc::SYS_faccessat2
        | libc::SYS_readlinkat
        | libc::SYS_unlinkat => libc::REG_RSI,
        _ => return None,
    };
    if context.is_null() {
        return None;
    }
    let pointer = (*context).uc_mcontext.gregs[register as usize] as *const u8;
    if pointer.is_null() {
        return None;
    }
    let mut path = PathArg { bytes: [0; PATH_SHOWN], len: 0 };
    while path.len < PATH_SHOWN {
        let byte = std::ptr::read_volatile(pointer.add(path.len));
        if byte == 0 {
            break;
        }
        path.bytes[path.len] = byte;
        path.len += 1;
    }
    Some(path)
}

/// The one line printed before tern ends.
fn describe(out: &mut impl std::fmt::Write, class: Option<ThreadClass>, syscall: Option<libc::c_int>, path: Option<&str>) -> std::fmt::Result {
    let thread = class.map_or("an unconfined", ThreadClass::name);
    match syscall {
        Some(nr) => {
            write!(out, "tern: fatal: the {thread} thread made syscall {nr}")?;
            if let Some(name) = syscall_name(nr) {
                write!(out, " ({name})")?;
            }
            if let Some(path) = path {
                write!(out, " on {path:?}")?;
            }
            writeln!(out, ", which its seccomp filter forbids; ending tern (a tern bug: please report this line; --seccomp log lets it through)")
        }
        None => writeln!(out, "tern: fatal: the {thread} thread got SIGSYS; ending tern"),
    }
}

/// Text formatted without allocating; longer text is cut.
struct StackText {
    buf: [u8; 320],
    len: usize,
}

impl Default for StackText {
    fn default() -> Self {
        StackText { buf: [0; 320], len: 0 }
    }
}

impl StackText {
    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl std::fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let room = self.buf.len() - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Names of the syscalls a tern thread might plausibly reach for (the report prints
/// the number alone for others; /usr/include/asm/unistd_64.h has them all).
fn syscall_name(nr: libc::c_int) -> Option<&'static str> {
    macro_rules! names {
        ($($name:ident),* $(,)?) => {
            match libc::c_long::from(nr) {
                $(libc::$name => Some(&stringify!($name)[4..]),)*
                _ => None,
            }
        };
    }
    names!(
        SYS_read, SYS_write, SYS_open, SYS_close, SYS_stat, SYS_fstat, SYS_lstat, SYS_poll, SYS_lseek,
        SYS_mmap, SYS_mprotect, SYS_munmap, SYS_brk, SYS_rt_sigaction, SYS_rt_sigprocmask, SYS_ioctl,
        SYS_pread64, SYS_pwrite64, SYS_readv, SYS_writev, SYS_access, SYS_pipe, SYS_select,
        SYS_sched_yield, SYS_mremap, SYS_msync, SYS_madvise, SYS_dup, SYS_dup2, SYS_nanosleep,
        SYS_getpid, SYS_sendfile, SYS_socket, SYS_connect, SYS_accept, SYS_sendto, SYS_recvfrom,
        SYS_sendmsg, SYS_recvmsg, SYS_shutdown, SYS_bind, SYS_listen, SYS_getsockname,
        SYS_getpeername, SYS_socketpair, SYS_setsockopt, SYS_getsockopt, SYS_clone, SYS_fork,
        SYS_vfork, SYS_execve, SYS_exit, SYS_wait4, SYS_kill, SYS_uname, SYS_fcntl, SYS_flock,
        SYS_fsync, SYS_fdatasync, SYS_truncate, SYS_ftruncate, SYS_getcwd, SYS_chdir, SYS_rename,
        SYS_mkdir, SYS_rmdir, SYS_link, SYS_unlink, SYS_readlink, SYS_chmod, SYS_fchmod, SYS_chown,
        SYS_umask, SYS_getrlimit, SYS_getrusage, SYS_sysinfo, SYS_getuid, SYS_getgid, SYS_geteuid,
        SYS_getppid, SYS_sigaltstack, SYS_prctl, SYS_gettid, SYS_tkill, SYS_futex,
        SYS_sched_getaffinity, SYS_sched_setaffinity, SYS_epoll_create, SYS_getdents64,
        SYS_clock_gettime, SYS_clock_nanosleep, SYS_exit_group, SYS_epoll_wait, SYS_epoll_ctl,
        SYS_tgkill, SYS_openat, SYS_mkdirat, SYS_newfstatat, SYS_unlinkat, SYS_renameat,
        SYS_linkat, SYS_readlinkat, SYS_fchmodat, SYS_faccessat, SYS_ppoll, SYS_splice,
        SYS_fallocate, SYS_timerfd_create, SYS_eventfd, SYS_timerfd_settime, SYS_accept4,
        SYS_eventfd2, SYS_epoll_create1, SYS_dup3, SYS_pipe2, SYS_preadv, SYS_pwritev,
        SYS_recvmmsg, SYS_prlimit64, SYS_sendmmsg, SYS_getrandom, SYS_memfd_create,
        SYS_copy_file_range, SYS_preadv2, SYS_pwritev2, SYS_statx, SYS_rseq, SYS_io_uring_setup,
        SYS_io_uring_enter, SYS_clone3, SYS_close_range, SYS_openat2, SYS_faccessat2,
        SYS_epoll_pwait, SYS_epoll_pwait2, SYS_mlock, SYS_munlock, SYS_membarrier, SYS_seccomp,
        SYS_sched_getparam, SYS_set_robust_list, SYS_get_robust_list, SYS_restart_syscall,
    )
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;

    fn text(class: Option<ThreadClass>, syscall: Option<libc::c_int>) -> String {
        let mut out = StackText::default();
        describe(&mut out, class, syscall, None).unwrap();
        String::from_utf8(out.bytes().to_vec()).unwrap()
    }

    #[test]
    fn the_report_names_the_class_and_the_syscall() {
        let line = text(Some(ThreadClass::NetWorker), Some(libc::SYS_connect as i32));
        assert!(line.starts_with("tern: fatal: the net-worker thread made syscall 42 (connect), which its seccomp filter forbids"), "{line}");
        assert!(line.ends_with('\n'));
        let unnamed = text(Some(ThreadClass::Vcpu), Some(1000));
        assert!(unnamed.contains("syscall 1000, which"), "{unnamed}");
        assert!(text(None, None).contains("an unconfined thread got SIGSYS"));
        let mut out = StackText::default();
        describe(&mut out, Some(ThreadClass::MigrationIncoming), Some(libc::SYS_openat as i32), Some("/etc/x")).unwrap();
        let line = String::from_utf8(out.bytes().to_vec()).unwrap();
        assert!(line.starts_with("tern: fatal: the migration-in thread made syscall 257 (openat) on \"/etc/x\", which"), "{line}");
    }

    #[test]
    fn long_text_is_cut_not_overflowed() {
        let mut out = StackText::default();
        for _ in 0..100 {
            out.write_str("0123456789").unwrap();
        }
        assert_eq!(out.bytes().len(), 320);
    }
}
