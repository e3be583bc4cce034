//! The console socket's thread (`--serial socket=PATH`): accepts clients, refuses all
//! but one of tern's user (or root), copies the guest's output to the attached client
//! and the client's keystrokes into the UART's receive FIFO.

use seccompiler::BackendError;

use crate::rules::{arg_eq, Rules};

pub(crate) fn rules() -> Result<Rules, BackendError> {
    let mut r = Rules::new();
    // One wait on the listener, the attached client and the output eventfd (glibc's
    // poll is ppoll on newer versions).
    r.allow(libc::SYS_poll);
    r.allow(libc::SYS_ppoll);
    // New clients, non-blocking from the start (accept4 with SOCK_NONBLOCK).
    r.allow(libc::SYS_accept4);
    // SO_PEERCRED: the connecting process's uid, checked before anything is read.
    r.allow_when(libc::SYS_getsockopt, vec![arg_eq(1, libc::SOL_SOCKET as u64)?, arg_eq(2, libc::SO_PEERCRED as u64)?])?;
    // The client's keystrokes (std reads a socket with recv: recvfrom), and draining
    // the output eventfd (read).
    r.allow(libc::SYS_recvfrom);
    r.allow(libc::SYS_read);
    // Guest output and refusal lines to clients (std writes a socket with send:
    // sendto, MSG_NOSIGNAL); the UART's interrupt (irqfd write) when input arrives.
    r.allow(libc::SYS_sendto);
    r.allow(libc::SYS_write);
    Ok(r)
}
