//! The device-specific state a migration carries from source to destination
//! ([`crate::virtio::VirtioDevice::save_state`]): the guest's MAC, so a
//! destination started without `mac=` keeps the address the guest already uses.
//! Queue positions travel with the transport; link status is the destination's
//! own (its TAP), and the destination announces after resuming anyway.
//!
//! Layout (little endian, versioned since the bytes are opaque to the protocol):
//! `version: u8 = 1`, `mac: [u8; 6]`.

use super::mac::{validate_mac, MacError};

/// Current layout version.
const VERSION: u8 = 1;
/// Encoded length of version 1.
const LEN_V1: usize = 7;

/// Why saved state could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum StateError {
    #[error("virtio-net state has version {0}, this build reads version {VERSION}")]
    Version(u8),
    #[error("virtio-net state is {0} bytes, expected {LEN_V1}")]
    Length(usize),
    #[error("virtio-net state carries an unusable MAC: {0}")]
    Mac(#[from] MacError),
}

/// Encodes the state of a NIC with `mac`.
pub(crate) fn encode(mac: &[u8; 6]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(LEN_V1);
    bytes.push(VERSION);
    bytes.extend_from_slice(mac);
    bytes
}

/// Decodes state saved by [`encode`]. Returns the MAC.
pub(crate) fn decode(bytes: &[u8]) -> Result<[u8; 6], StateError> {
    let Some((&version, rest)) = bytes.split_first() else {
        return Err(StateError::Length(0));
    };
    if version != VERSION {
        return Err(StateError::Version(version));
    }
    let mac: [u8; 6] = rest.try_into().map_err(|_| StateError::Length(bytes.len()))?;
    validate_mac(&mac)?;
    Ok(mac)
}
