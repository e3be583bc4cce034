//! What every confined thread needs from the Rust standard library, glibc and
//! tracing, whatever its job.

use seccompiler::BackendError;

use crate::rules::{arg_clear, arg_eq, Rules};

pub(crate) fn rules() -> Result<Rules, BackendError> {
    let mut r = Rules::new();
    // Mutexes, condition variables, channels, thread joins.
    r.allow(libc::SYS_futex);
    // Instant/SystemTime (a syscall where the vDSO cannot read the clocksource, e.g.
    // HPET in the nested rig); gettimeofday for the same through older paths.
    r.allow(libc::SYS_clock_gettime);
    r.allow(libc::SYS_gettimeofday);
    // thread::sleep (glibc's nanosleep is clock_nanosleep).
    r.allow(libc::SYS_clock_nanosleep);
    r.allow(libc::SYS_nanosleep);
    // Spin-then-yield loops (pause check-in, std's once/lock paths).
    r.allow(libc::SYS_sched_yield);
    // The allocator: malloc arenas, large buffers, trimming.
    r.allow(libc::SYS_brk);
    r.allow(libc::SYS_munmap);
    r.allow(libc::SYS_mremap);
    r.allow(libc::SYS_madvise);
    // ... and never executable memory (arg 2 is the protection).
    r.allow_when(libc::SYS_mmap, vec![arg_clear(2, libc::PROT_EXEC as u64)?])?;
    r.allow_when(libc::SYS_mprotect, vec![arg_clear(2, libc::PROT_EXEC as u64)?])?;
    // Returning from a signal handler (the vCPU kick), and glibc's signal masking
    // around thread exit and abort.
    r.allow(libc::SYS_rt_sigreturn);
    r.allow(libc::SYS_rt_sigprocmask);
    // std tears down a thread's alternate signal stack when the thread ends.
    r.allow(libc::SYS_sigaltstack);
    // Thread and process exit.
    r.allow(libc::SYS_exit);
    r.allow(libc::SYS_exit_group);
    // std asks for the OS thread id (thread handles, panic messages); glibc's raise.
    r.allow(libc::SYS_gettid);
    // HashMap seeds (and rustls keys on the migration thread).
    r.allow(libc::SYS_getrandom);
    // Dropping descriptors (eventfds, epoll sets, a stopped worker's files). A debug
    // build's std first checks that the descriptor is open (fcntl F_GETFD); reading
    // a descriptor's flags is all that allows.
    r.allow(libc::SYS_close);
    r.allow_when(libc::SYS_fcntl, vec![arg_eq(1, libc::F_GETFD as u64)?])?;
    // The kernel restarts an interrupted sleep through this.
    r.allow(libc::SYS_restart_syscall);
    // Logging (tracing, eprintln) goes to stderr only.
    r.allow_when(libc::SYS_write, vec![arg_eq(0, libc::STDERR_FILENO as u64)?])?;
    Ok(r)
}
