//! What the user asks for when attaching a NIC, and the checks the kernel imposes
//! on the TAP name.

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

/// Why a TAP name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TapNameError {
    /// A name the kernel would refuse for being too long.
    #[error("TAP name '{name}' is {len} bytes, at most {max} allowed", max = MAX_TAP_NAME_LEN)]
    TooLong {
        /// The name given.
        name: String,
        /// Its length in bytes.
        len: usize,
    },
    /// A name with characters the kernel refuses in interface names.
    #[error("TAP name '{name}' is not a valid interface name: {reason}")]
    Invalid {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Checks `name` against the kernel's rules for interface names (`dev_valid_name`):
/// 1 to 15 bytes, not `.` or `..`, no `/`, `:`, whitespace or NUL. Commas are
/// refused too, so a name can always be written in a comma-separated list.
pub fn validate_tap_name(name: &str) -> Result<(), TapNameError> {
    let bad = |reason| TapNameError::Invalid { name: name.to_string(), reason };
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if name.len() > MAX_TAP_NAME_LEN {
        return Err(TapNameError::TooLong { name: name.to_string(), len: name.len() });
    }
    if name == "." || name == ".." {
        return Err(bad("'.' and '..' are reserved"));
    }
    if name.chars().any(|c| c == '/' || c == ':' || c == ',' || c == '\0' || c.is_whitespace()) {
        return Err(bad("it contains '/', ':', ',', NUL or whitespace"));
    }
    Ok(())
}
