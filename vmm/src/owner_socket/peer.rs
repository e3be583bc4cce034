//! Who is on the other end of a connection to one of tern's sockets (control API,
//! console): the peer's uid from the kernel (SO_PEERCRED, fixed when the peer
//! connected and not forgeable), and the rule for whom tern serves: its own user and
//! root.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

/// The effective uid of the process that connected `stream`.
pub fn peer_uid(stream: &UnixStream) -> std::io::Result<u32> {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes and `len` holds the size of
    // `cred`, which is what SO_PEERCRED fills; the fd is open for `stream`'s lifetime.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if len as usize != std::mem::size_of::<libc::ucred>() {
        return Err(std::io::Error::other(format!("SO_PEERCRED returned {len} bytes")));
    }
    Ok(cred.uid)
}

/// tern's own effective uid.
pub fn own_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Whether a peer with `peer_uid` may use the sockets of a tern running as `own_uid`:
/// the same user, or root.
pub fn peer_allowed(peer_uid: u32, own_uid: u32) -> bool {
    peer_uid == own_uid || peer_uid == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_user_and_root_are_allowed_others_are_not() {
        assert!(peer_allowed(1000, 1000));
        assert!(peer_allowed(0, 1000), "root may always connect");
        assert!(peer_allowed(0, 0));
        assert!(!peer_allowed(1001, 1000));
        assert!(!peer_allowed(1000, 0), "a tern run by root serves root only");
        assert!(!peer_allowed(65534, 1000));
    }

    #[test]
    fn the_kernel_reports_our_own_uid_for_a_local_pair() {
        let (a, _b) = UnixStream::pair().unwrap();
        assert_eq!(peer_uid(&a).unwrap(), own_uid());
    }
}
