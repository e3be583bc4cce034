//! What the user asks for when attaching a NIC, and the `--net` option syntax:
//! `tap=NAME[,mac=AA:BB:CC:DD:EE:FF]`.

use std::fmt;
use std::str::FromStr;

use super::mac::{parse_mac, MacDisplay, MacError};

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const MAX_TAP_NAME_LEN: usize = libc::IFNAMSIZ - 1;

/// How to attach one NIC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// TAP interface to open, or to create when it does not exist.
    pub tap: String,
    /// Guest MAC address; `None` generates a locally administered one.
    pub mac: Option<[u8; 6]>,
}

impl NetConfig {
    /// A NIC on `tap` with a generated MAC.
    pub fn new(tap: impl Into<String>) -> Self {
        Self { tap: tap.into(), mac: None }
    }
}

/// Errors in a `--net` option value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetConfigParseError {
    /// No `tap=` item.
    #[error("net option needs tap=NAME")]
    MissingTap,
    /// An item without `=`.
    #[error("net option item '{0}' is not key=value")]
    NotKeyValue(String),
    /// A key that is not `tap` or `mac`.
    #[error("unknown net option '{0}' (expected tap, mac)")]
    UnknownKey(String),
    /// The same key twice.
    #[error("net option '{0}' given twice")]
    DuplicateKey(String),
    /// `key=` with nothing after it.
    #[error("net option '{0}' has an empty value")]
    EmptyValue(String),
    /// A MAC that does not parse or cannot belong to a NIC.
    #[error("net option mac: {0}")]
    BadMac(#[from] MacError),
    /// A TAP name the kernel would refuse for being too long.
    #[error("TAP name '{name}' is {len} bytes, at most {max} allowed", max = MAX_TAP_NAME_LEN)]
    TapNameTooLong {
        /// The name given.
        name: String,
        /// Its length in bytes.
        len: usize,
    },
    /// A TAP name with characters the kernel refuses in interface names.
    #[error("TAP name '{name}' is not a valid interface name: {reason}")]
    BadTapName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl FromStr for NetConfig {
    type Err = NetConfigParseError;

    /// Parses `tap=NAME[,mac=AA:BB:CC:DD:EE:FF]`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut tap: Option<String> = None;
        let mut mac: Option<[u8; 6]> = None;

        for item in s.split(',') {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| NetConfigParseError::NotKeyValue(item.to_string()))?;
            if value.is_empty() {
                return Err(NetConfigParseError::EmptyValue(key.to_string()));
            }
            let duplicate = match key {
                "tap" => {
                    validate_tap_name(value)?;
                    tap.replace(value.to_string()).is_some()
                }
                "mac" => mac.replace(parse_mac(value)?).is_some(),
                _ => return Err(NetConfigParseError::UnknownKey(key.to_string())),
            };
            if duplicate {
                return Err(NetConfigParseError::DuplicateKey(key.to_string()));
            }
        }

        Ok(NetConfig { tap: tap.ok_or(NetConfigParseError::MissingTap)?, mac })
    }
}

impl fmt::Display for NetConfig {
    /// Formats in the `--net` syntax, so a config round-trips through `FromStr`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tap={}", self.tap)?;
        if let Some(mac) = &self.mac {
            write!(f, ",mac={}", MacDisplay(mac))?;
        }
        Ok(())
    }
}

/// Checks `name` against the kernel's rules for interface names (`dev_valid_name`):
/// 1 to 15 bytes, not `.` or `..`, no `/`, `:`, whitespace or NUL. Commas are
/// refused too: they could not be written back in the option syntax.
pub fn validate_tap_name(name: &str) -> Result<(), NetConfigParseError> {
    let bad = |reason| NetConfigParseError::BadTapName { name: name.to_string(), reason };
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if name.len() > MAX_TAP_NAME_LEN {
        return Err(NetConfigParseError::TapNameTooLong {
            name: name.to_string(),
            len: name.len(),
        });
    }
    if name == "." || name == ".." {
        return Err(bad("'.' and '..' are reserved"));
    }
    if name.chars().any(|c| c == '/' || c == ':' || c == ',' || c == '\0' || c.is_whitespace()) {
        return Err(bad("it contains '/', ':', ',', NUL or whitespace"));
    }
    Ok(())
}
