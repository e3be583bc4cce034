//! Errors attaching a disk: each names the image so the user knows which `--disk`
//! is at fault.

use std::io;
use std::path::PathBuf;

/// Why a disk could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The image path does not exist.
    #[error("disk image {} does not exist", path.display())]
    NotFound {
        /// Image path.
        path: PathBuf,
    },
    /// The image path is a directory.
    #[error("disk image {} is a directory, not a file", path.display())]
    IsDirectory {
        /// Image path.
        path: PathBuf,
    },
    /// A writable disk was requested but the image cannot be opened for writing.
    #[error(
        "disk image {} cannot be opened for writing ({source}); attach it with readonly=on",
        path.display()
    )]
    ReadOnlyImage {
        /// Image path.
        path: PathBuf,
        /// The failed open.
        source: io::Error,
    },
    /// Any other failure opening the image.
    #[error("cannot open disk image {}: {source}", path.display())]
    Open {
        /// Image path.
        path: PathBuf,
        /// The failed open.
        source: io::Error,
    },
    /// The image size could not be determined.
    #[error("cannot determine the size of disk image {}: {source}", path.display())]
    Size {
        /// Image path.
        path: PathBuf,
        /// The failed seek.
        source: io::Error,
    },
    /// The image size is not a whole number of 512-byte sectors.
    #[error("disk image {} is {size} bytes, not a multiple of 512", path.display())]
    UnalignedSize {
        /// Image path.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
    },
    /// Another process (or another disk of this VM) holds a conflicting lock.
    #[error("disk image {} is locked by another process", path.display())]
    Locked {
        /// Image path.
        path: PathBuf,
    },
    /// flock failed for a reason other than contention.
    #[error("cannot lock disk image {}: {source}", path.display())]
    Lock {
        /// Image path.
        path: PathBuf,
        /// The failed flock.
        source: io::Error,
    },
    /// The configured serial does not fit in the 20-byte GET_ID answer.
    #[error("serial '{serial}' of disk {} is longer than 20 bytes", path.display())]
    SerialTooLong {
        /// Image path.
        path: PathBuf,
        /// The serial given.
        serial: String,
    },
}
