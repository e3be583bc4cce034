//! What a thread needs to start another thread: the parent's part of
//! `pthread_create` and std's `Builder::spawn`, and the child's start-up (which runs
//! under the parent's filter until the child confines itself).

use seccompiler::BackendError;

use crate::rules::{arg_eq, Rules};

pub(crate) fn rules() -> Result<Rules, BackendError> {
    let mut r = Rules::new();
    // pthread_create (clone3 on current glibc, clone where clone3 is missing). The
    // flags of clone3 live in memory a filter cannot read, so neither is narrowed.
    r.allow(libc::SYS_clone3);
    r.allow(libc::SYS_clone);
    // glibc registers the new thread's robust futex list and rseq area.
    r.allow(libc::SYS_set_robust_list);
    r.allow(libc::SYS_rseq);
    // glibc's pthread_getattr_np (std's stack-guard lookup) asks for the affinity.
    r.allow(libc::SYS_sched_getaffinity);
    // std names the thread; the child then confines itself (no_new_privs, then its
    // own filter, which can only narrow what this one allows).
    r.allow_when(libc::SYS_prctl, vec![arg_eq(0, libc::PR_SET_NAME as u64)?])?;
    r.allow_when(libc::SYS_prctl, vec![arg_eq(0, libc::PR_SET_NO_NEW_PRIVS as u64)?])?;
    r.allow_when(libc::SYS_seccomp, vec![arg_eq(0, u64::from(libc::SECCOMP_SET_MODE_FILTER))?])?;
    Ok(r)
}
