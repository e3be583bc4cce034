//! What the user asks for when attaching a disk, and the checks on it that the
//! device itself imposes (the serial must fit in the GET_ID answer).

use std::path::PathBuf;

use super::SERIAL_LEN;

/// How to attach one disk image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockConfig {
    /// Raw image file (or block device) backing the disk.
    pub path: PathBuf,
    /// Attach read-only: the guest sees VIRTIO_BLK_F_RO and every write fails.
    pub read_only: bool,
    /// Serial the guest reads with GET_ID (at most 20 bytes).
    pub serial: Option<String>,
}

impl BlockConfig {
    /// A writable disk without a serial.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), read_only: false, serial: None }
    }
}

/// A serial longer than the 20 bytes GET_ID can return.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("disk serial '{serial}' is {len} bytes, at most {max} allowed", max = SERIAL_LEN)]
pub struct SerialTooLong {
    /// The serial given.
    pub serial: String,
    /// Its length in bytes.
    pub len: usize,
}

/// Checks that `serial` fits in the GET_ID answer (length counted in bytes).
pub fn validate_serial(serial: &str) -> Result<(), SerialTooLong> {
    if serial.len() > SERIAL_LEN {
        return Err(SerialTooLong { serial: serial.to_string(), len: serial.len() });
    }
    Ok(())
}
