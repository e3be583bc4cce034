//! Ethernet MAC addresses: the `AA:BB:CC:DD:EE:FF` syntax, the checks a guest
//! MAC must pass, and generating one when the user gives none.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

/// Prefix of generated addresses: locally administered (bit 1 of the first octet)
/// and unicast (bit 0 clear), the range QEMU and libvirt use for guests.
pub const GENERATED_MAC_PREFIX: [u8; 3] = [0x52, 0x54, 0x00];

/// Why a MAC address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MacError {
    /// Not six colon-separated pairs of hex digits.
    #[error("'{0}' is not a MAC address (expected six hex pairs like 52:54:00:12:34:56)")]
    Syntax(String),
    /// The group bit is set: a guest NIC cannot own a multicast address.
    #[error("{0} is a multicast address (lowest bit of the first octet set)")]
    Multicast(String),
    /// 00:00:00:00:00:00.
    #[error("00:00:00:00:00:00 is not a usable MAC address")]
    Zero,
}

/// Formats a MAC address as `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MacDisplay<'a>(pub &'a [u8; 6]);

impl fmt::Display for MacDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

/// Parses `AA:BB:CC:DD:EE:FF` (either case) and checks that a guest NIC may use it.
pub fn parse_mac(text: &str) -> Result<[u8; 6], MacError> {
    let syntax = || MacError::Syntax(text.to_string());
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next().ok_or_else(syntax)?;
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(syntax());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| syntax())?;
    }
    if parts.next().is_some() {
        return Err(syntax());
    }
    validate_mac(&mac)?;
    Ok(mac)
}

/// Checks that `mac` is a usable unicast address.
pub fn validate_mac(mac: &[u8; 6]) -> Result<(), MacError> {
    if mac.iter().all(|&b| b == 0) {
        return Err(MacError::Zero);
    }
    if mac[0] & 1 != 0 {
        return Err(MacError::Multicast(MacDisplay(mac).to_string()));
    }
    Ok(())
}

/// A fresh `52:54:00:xx:xx:xx` address. The low three octets hash the TAP name,
/// the process id and the time with a randomly keyed hasher, so two VMs on one
/// host (or one VM restarted) practically never collide.
pub(crate) fn generate_mac(tap: &str) -> [u8; 6] {
    let mut hasher = RandomState::new().build_hasher();
    tap.hash(&mut hasher);
    std::process::id().hash(&mut hasher);
    if let Ok(since_epoch) = SystemTime::now().duration_since(UNIX_EPOCH) {
        since_epoch.as_nanos().hash(&mut hasher);
    }
    let bits = hasher.finish().to_le_bytes();
    let [a, b, c] = GENERATED_MAC_PREFIX;
    [a, b, c, bits[0], bits[1], bits[2]]
}
