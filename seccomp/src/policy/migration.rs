//! The migration source: the connection to the destination (name resolution,
//! TCP, TLS), dirty logging, state capture, disk and TAP hand-over.

use seccompiler::BackendError;

use crate::ioctls::*;
use crate::rules::{arg_eq, Rules};

pub(crate) fn rules() -> Result<Rules, BackendError> {
    let mut r = Rules::new();
    // The connection: TCP to the destination; Unix and datagram sockets only as
    // glibc's resolver uses them for a host name (nscd, DNS).
    for domain in [libc::AF_INET, libc::AF_INET6, libc::AF_UNIX] {
        r.allow_when(libc::SYS_socket, vec![arg_eq(0, domain as u64)?])?;
    }
    r.allow(libc::SYS_connect);
    // connect_timeout: non-blocking connect, poll, SO_ERROR, back to blocking.
    r.allow(libc::SYS_poll);
    r.allow(libc::SYS_ppoll);
    r.allow(libc::SYS_getsockopt);
    r.allow_ioctls(&[libc::FIONBIO])?;
    r.allow_when(libc::SYS_fcntl, vec![arg_eq(1, libc::F_GETFL as u64)?])?;
    r.allow_when(libc::SYS_fcntl, vec![arg_eq(1, libc::F_SETFL as u64)?])?;
    // TCP_NODELAY and read timeouts.
    r.allow(libc::SYS_setsockopt);
    // The stream itself, and the resolver's queries.
    r.allow(libc::SYS_read);
    r.allow(libc::SYS_write);
    r.allow(libc::SYS_recvfrom);
    r.allow(libc::SYS_sendto);
    r.allow(libc::SYS_recvmsg);
    r.allow(libc::SYS_sendmsg);
    r.allow(libc::SYS_sendmmsg);
    r.allow(libc::SYS_shutdown);
    r.allow(libc::SYS_getsockname);
    r.allow(libc::SYS_getpeername);
    // The resolver reads /etc/hosts, /etc/resolv.conf, nsswitch.conf: read-only
    // opens (no write access, no create, no truncate) and stat.
    r.allow_read_only_open()?;
    r.allow(libc::SYS_fstat);
    r.allow(libc::SYS_newfstatat);
    r.allow(libc::SYS_statx);
    r.allow(libc::SYS_lseek);
    r.allow_ioctls(&[
        // Dirty logging: memslots re-registered with KVM_MEM_LOG_DIRTY_PAGES, then
        // the log read each round.
        KVM_SET_USER_MEMORY_REGION(),
        KVM_GET_DIRTY_LOG(),
    ])?;
    // State capture, vCPU kicks, workers parked and restarted.
    r.merge(super::state_capture::rules()?);
    // Disks: flushed before the hand-over; their locks released, or taken back
    // when the migration fails.
    r.allow(libc::SYS_fdatasync);
    r.allow(libc::SYS_fsync);
    r.allow(libc::SYS_flock);
    Ok(r)
}
