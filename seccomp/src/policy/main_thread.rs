//! The machine's owner once it runs: the event loop (`Machine::wait_for_exit`),
//! API requests (pause, resume, info, shutdown, starting a migration), console
//! flushing, and tearing the machine down at the end.

use seccompiler::BackendError;

use crate::ioctls::{TERMINAL, TUNSETOFFLOAD};
use crate::rules::{arg_eq, Rules};

pub(crate) fn rules() -> Result<Rules, BackendError> {
    let mut r = Rules::new();
    // Console output (stdout or a file) flushed from the loop; stopping workers
    // (eventfd writes) at teardown.
    r.allow(libc::SYS_write);
    // Pause, resume and stop kick the vCPUs (pthread_kill: tgkill on getpid()).
    r.allow(libc::SYS_tgkill);
    r.allow(libc::SYS_getpid);
    // Putting the terminal back out of raw mode after the loop, on stdin only.
    for request in TERMINAL {
        r.allow_when(libc::SYS_ioctl, vec![arg_eq(0, libc::STDIN_FILENO as u64)?, arg_eq(1, request)?])?;
    }
    // A net device reset at teardown clears the TAP's offloads.
    r.allow_ioctls(&[TUNSETOFFLOAD()])?;
    // Removing the API and console socket files at exit, after checking (lstat:
    // statx or newfstatat) that each is still the one this tern created.
    r.allow(libc::SYS_unlink);
    r.allow(libc::SYS_unlinkat);
    r.allow(libc::SYS_statx);
    r.allow(libc::SYS_newfstatat);
    r.allow(libc::SYS_lstat);
    Ok(r)
}
