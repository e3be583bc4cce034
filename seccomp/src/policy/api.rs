//! The control socket: the listener thread and one thread per connection.

use seccompiler::BackendError;

use crate::rules::{arg_eq, Rules};

/// The listener accepts, checks who connected, refuses with one reply line, and starts
/// a connection thread for each client it admits.
pub(crate) fn listener_rules() -> Result<Rules, BackendError> {
    let mut r = Rules::new();
    // UnixListener::incoming (accept4 with SOCK_CLOEXEC).
    r.allow(libc::SYS_accept4);
    r.allow(libc::SYS_accept);
    // SO_PEERCRED: the connecting process's uid, checked before anything is read.
    r.allow_when(libc::SYS_getsockopt, vec![arg_eq(1, libc::SOL_SOCKET as u64)?, arg_eq(2, libc::SO_PEERCRED as u64)?])?;
    // A refused client gets one error line, with a send timeout (SO_SNDTIMEO) so a
    // client that does not read cannot stall the loop.
    r.allow_when(libc::SYS_setsockopt, vec![arg_eq(1, libc::SOL_SOCKET as u64)?, arg_eq(2, libc::SO_SNDTIMEO as u64)?])?;
    r.allow(libc::SYS_write);
    r.allow(libc::SYS_sendto);
    Ok(r)
}

/// A connection reads request lines and writes replies.
pub(crate) fn connection_rules() -> Result<Rules, BackendError> {
    let mut r = Rules::new();
    // Request lines and replies on the Unix stream.
    r.allow(libc::SYS_read);
    r.allow(libc::SYS_recvfrom);
    r.allow(libc::SYS_write);
    r.allow(libc::SYS_sendto);
    // UnixStream::try_clone (F_DUPFD_CLOEXEC), and nothing else of fcntl.
    r.allow_when(libc::SYS_fcntl, vec![arg_eq(1, libc::F_DUPFD_CLOEXEC as u64)?])?;
    // SO_PEERCRED: who is asking.
    r.allow_when(libc::SYS_getsockopt, vec![arg_eq(1, libc::SOL_SOCKET as u64)?, arg_eq(2, libc::SO_PEERCRED as u64)?])?;
    Ok(r)
}
