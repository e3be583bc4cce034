//! What the user asks for when attaching a disk, and the `--disk` option syntax:
//! `path=FILE[,readonly=on|off][,serial=ID]`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

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

/// Errors in a `--disk` option value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockConfigParseError {
    /// No `path=` item.
    #[error("disk option needs path=FILE")]
    MissingPath,
    /// An item without `=`.
    #[error("disk option item '{0}' is not key=value")]
    NotKeyValue(String),
    /// A key that is not `path`, `readonly` or `serial`.
    #[error("unknown disk option '{0}' (expected path, readonly, serial)")]
    UnknownKey(String),
    /// The same key twice.
    #[error("disk option '{0}' given twice")]
    DuplicateKey(String),
    /// `key=` with nothing after it.
    #[error("disk option '{0}' has an empty value")]
    EmptyValue(String),
    /// `readonly=` with something other than on/off.
    #[error("disk option readonly='{0}' must be on or off")]
    BadReadOnly(String),
    /// A serial longer than the 20 bytes GET_ID can return.
    #[error("disk serial '{serial}' is {len} bytes, at most {max} allowed", max = SERIAL_LEN)]
    SerialTooLong {
        /// The serial given.
        serial: String,
        /// Its length in bytes.
        len: usize,
    },
}

impl FromStr for BlockConfig {
    type Err = BlockConfigParseError;

    /// Parses `path=FILE[,readonly=on|off][,serial=ID]`. Paths containing commas
    /// cannot be expressed in this syntax.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut path: Option<PathBuf> = None;
        let mut read_only: Option<bool> = None;
        let mut serial: Option<String> = None;

        for item in s.split(',') {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| BlockConfigParseError::NotKeyValue(item.to_string()))?;
            if value.is_empty() {
                return Err(BlockConfigParseError::EmptyValue(key.to_string()));
            }
            let duplicate = match key {
                "path" => path.replace(PathBuf::from(value)).is_some(),
                "readonly" => read_only.replace(parse_on_off(value)?).is_some(),
                "serial" => serial.replace(validate_serial(value)?).is_some(),
                _ => return Err(BlockConfigParseError::UnknownKey(key.to_string())),
            };
            if duplicate {
                return Err(BlockConfigParseError::DuplicateKey(key.to_string()));
            }
        }

        Ok(BlockConfig {
            path: path.ok_or(BlockConfigParseError::MissingPath)?,
            read_only: read_only.unwrap_or(false),
            serial,
        })
    }
}

impl fmt::Display for BlockConfig {
    /// Formats in the `--disk` syntax, so a config round-trips through `FromStr`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "path={}", self.path.display())?;
        if self.read_only {
            write!(f, ",readonly=on")?;
        }
        if let Some(serial) = &self.serial {
            write!(f, ",serial={serial}")?;
        }
        Ok(())
    }
}

fn parse_on_off(value: &str) -> Result<bool, BlockConfigParseError> {
    match value {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(BlockConfigParseError::BadReadOnly(value.to_string())),
    }
}

/// Checks that `serial` fits in the GET_ID buffer.
pub(crate) fn validate_serial(serial: &str) -> Result<String, BlockConfigParseError> {
    if serial.len() > SERIAL_LEN {
        return Err(BlockConfigParseError::SerialTooLong {
            serial: serial.to_string(),
            len: serial.len(),
        });
    }
    Ok(serial.to_string())
}
