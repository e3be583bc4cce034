//! Errors attaching a NIC. Each names the TAP and the errno, and says what to do
//! about the common ones, so the user knows which `--net` is at fault and why.

use std::io;

use super::mac::MacError;
use super::config::TapNameError;

/// Why a NIC could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The TAP name in the configuration is unusable.
    #[error("invalid configuration for TAP {tap}: {source}")]
    Config {
        /// TAP name as given.
        tap: String,
        /// What is wrong.
        source: TapNameError,
    },
    /// The configured MAC address cannot belong to a NIC.
    #[error("invalid MAC address for TAP {tap}: {source}")]
    Mac {
        /// TAP name.
        tap: String,
        /// What is wrong.
        source: MacError,
    },
    /// `/dev/net/tun` does not exist (no tun driver, or no device node).
    #[error(
        "cannot open /dev/net/tun for TAP {tap} ({errno}): the tun driver is missing \
         (modprobe tun) or the device node was not created"
    )]
    TunMissing {
        /// TAP name.
        tap: String,
        /// Symbolic errno.
        errno: &'static str,
        /// The failed open.
        source: io::Error,
    },
    /// `/dev/net/tun` exists but this process may not open it.
    #[error("no permission to open /dev/net/tun for TAP {tap} ({errno})")]
    TunAccess {
        /// TAP name.
        tap: String,
        /// Symbolic errno.
        errno: &'static str,
        /// The failed open.
        source: io::Error,
    },
    /// Any other failure opening `/dev/net/tun`.
    #[error("cannot open /dev/net/tun for TAP {tap} ({errno}): {source}")]
    TunOpen {
        /// TAP name.
        tap: String,
        /// Symbolic errno.
        errno: &'static str,
        /// The failed open.
        source: io::Error,
    },
    /// `TUNSETIFF` refused: creating a TAP needs CAP_NET_ADMIN, and attaching to a
    /// persistent TAP needs to be its owner (or group).
    #[error(
        "not permitted to create or attach TAP {tap} ({errno}): creating a TAP needs \
         CAP_NET_ADMIN; create it beforehand for this user \
         (ip tuntap add dev {tap} mode tap user USER)"
    )]
    PermissionDenied {
        /// TAP name.
        tap: String,
        /// Symbolic errno.
        errno: &'static str,
        /// The failed ioctl.
        source: io::Error,
    },
    /// The TAP is a single-queue TAP already attached by another process (or
    /// another NIC of this VM).
    #[error("TAP {tap} is busy ({errno}): another process already has it open")]
    Busy {
        /// TAP name.
        tap: String,
        /// Symbolic errno.
        errno: &'static str,
        /// The failed ioctl.
        source: io::Error,
    },
    /// An interface of that name exists but is not a single-queue TAP (a TUN, a
    /// multi-queue TAP, or another kind of interface).
    #[error(
        "interface {tap} exists but is not a single-queue TAP device ({errno}); \
         pick another name or recreate it with ip tuntap add dev {tap} mode tap"
    )]
    NotATap {
        /// TAP name.
        tap: String,
        /// Symbolic errno.
        errno: &'static str,
        /// The failed ioctl.
        source: io::Error,
    },
    /// Any other `TUNSETIFF` failure.
    #[error("cannot attach TAP {tap} ({errno}): {source}")]
    Attach {
        /// TAP name.
        tap: String,
        /// Symbolic errno.
        errno: &'static str,
        /// The failed ioctl.
        source: io::Error,
    },
    /// A setup ioctl after attaching failed (vnet header size, offloads).
    #[error("cannot configure TAP {tap}: {what} failed ({errno}): {source}")]
    Setup {
        /// TAP name.
        tap: String,
        /// Which ioctl.
        what: &'static str,
        /// Symbolic errno.
        errno: &'static str,
        /// The failed ioctl.
        source: io::Error,
    },
}

/// Maps a failed `open("/dev/net/tun")` to an error for `tap`.
pub(crate) fn open_error(tap: &str, source: io::Error) -> NetError {
    let tap = tap.to_string();
    let errno = errno_name(&source);
    match source.raw_os_error() {
        Some(libc::ENOENT | libc::ENODEV | libc::ENXIO) => {
            NetError::TunMissing { tap, errno, source }
        }
        Some(libc::EACCES | libc::EPERM) => NetError::TunAccess { tap, errno, source },
        _ => NetError::TunOpen { tap, errno, source },
    }
}

/// Maps a failed `TUNSETIFF` to an error for `tap`.
pub(crate) fn attach_error(tap: &str, source: io::Error) -> NetError {
    let tap = tap.to_string();
    let errno = errno_name(&source);
    match source.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => NetError::PermissionDenied { tap, errno, source },
        Some(libc::EBUSY) => NetError::Busy { tap, errno, source },
        Some(libc::EINVAL) => NetError::NotATap { tap, errno, source },
        _ => NetError::Attach { tap, errno, source },
    }
}

/// Maps a failed setup ioctl (`what`) to an error for `tap`.
pub(crate) fn setup_error(tap: &str, what: &'static str, source: io::Error) -> NetError {
    NetError::Setup { tap: tap.to_string(), what, errno: errno_name(&source), source }
}

/// The symbolic name of the errno in `err` ("EPERM"), or "errno ?" when it has none
/// or is not one a TAP open produces.
pub(crate) fn errno_name(err: &io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(libc::EPERM) => "EPERM",
        Some(libc::ENOENT) => "ENOENT",
        Some(libc::EIO) => "EIO",
        Some(libc::ENXIO) => "ENXIO",
        Some(libc::EBADF) => "EBADF",
        Some(libc::EAGAIN) => "EAGAIN",
        Some(libc::ENOMEM) => "ENOMEM",
        Some(libc::EACCES) => "EACCES",
        Some(libc::EFAULT) => "EFAULT",
        Some(libc::EBUSY) => "EBUSY",
        Some(libc::EEXIST) => "EEXIST",
        Some(libc::ENODEV) => "ENODEV",
        Some(libc::EINVAL) => "EINVAL",
        Some(libc::ENFILE) => "ENFILE",
        Some(libc::EMFILE) => "EMFILE",
        Some(libc::ENOTTY) => "ENOTTY",
        Some(libc::ENOSPC) => "ENOSPC",
        Some(libc::EROFS) => "EROFS",
        Some(libc::EBADFD) => "EBADFD",
        Some(libc::ENOBUFS) => "ENOBUFS",
        Some(libc::EOPNOTSUPP) => "EOPNOTSUPP",
        Some(_) => "errno",
        None => "no errno",
    }
}
