//! What activating a virtio device needs before its worker thread starts: the
//! worker's eventfds, epoll set and timer, and copies of the queue-notify eventfds.
//! A vCPU does this when the driver activates a device; the migration thread when it
//! starts the workers again after a failed migration.

use seccompiler::BackendError;

use crate::rules::{arg_eq, Rules};

pub(crate) fn rules() -> Result<Rules, BackendError> {
    let mut r = Rules::new();
    r.allow(libc::SYS_eventfd2);
    r.allow(libc::SYS_epoll_create1);
    r.allow(libc::SYS_epoll_ctl);
    r.allow(libc::SYS_timerfd_create);
    // Copies of the queue-notify eventfds (EventFd::try_clone is File::try_clone:
    // F_DUPFD_CLOEXEC), and nothing else of fcntl.
    r.allow_when(libc::SYS_fcntl, vec![arg_eq(1, libc::F_DUPFD_CLOEXEC as u64)?])?;
    Ok(r)
}
