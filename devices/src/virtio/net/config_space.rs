//! The virtio-net device configuration space (virtio 1.x section 5.1.4), laid out
//! byte by byte in little endian: `mac`, `status`, `max_virtqueue_pairs`, `mtu`.
//! Fields past `mtu` (speed, duplex, RSS) belong to features we do not offer.

/// Field offsets of `struct virtio_net_config`.
pub(crate) mod offset {
    pub const MAC: usize = 0;
    pub const STATUS: usize = 6;
    pub const MAX_VIRTQUEUE_PAIRS: usize = 8;
    pub const MTU: usize = 10;
}

/// Bytes of configuration space we expose (up to and including `mtu`).
pub(crate) const CONFIG_SPACE_SIZE: usize = 12;

/// The configuration space for `mac` with the current `status`. One queue pair;
/// `mtu` is 0 (VIRTIO_NET_F_MTU is not offered).
pub(crate) fn config_bytes(mac: &[u8; 6], status: u16) -> [u8; CONFIG_SPACE_SIZE] {
    let mut bytes = [0u8; CONFIG_SPACE_SIZE];
    bytes[offset::MAC..offset::MAC + 6].copy_from_slice(mac);
    bytes[offset::STATUS..offset::STATUS + 2].copy_from_slice(&status.to_le_bytes());
    bytes[offset::MAX_VIRTQUEUE_PAIRS..offset::MAX_VIRTQUEUE_PAIRS + 2]
        .copy_from_slice(&1u16.to_le_bytes());
    bytes[offset::MTU..offset::MTU + 2].copy_from_slice(&0u16.to_le_bytes());
    bytes
}
