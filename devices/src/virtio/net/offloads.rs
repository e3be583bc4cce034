//! Which offloads the TAP may use in frames it hands the guest, derived from what
//! the driver acknowledged (`TUNSETOFFLOAD` flags, `<linux/if_tun.h>`).
//!
//! Only the receive direction needs this: frames from the guest carry their own
//! offload requests in the vnet header, which a TAP opened with IFF_VNET_HDR
//! always honours.

use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6,
};

/// Frames may carry a partial checksum (NEEDS_CSUM).
pub(crate) const TUN_F_CSUM: u32 = 0x01;
/// TCPv4 segmentation offload.
pub(crate) const TUN_F_TSO4: u32 = 0x02;
/// TCPv6 segmentation offload.
pub(crate) const TUN_F_TSO6: u32 = 0x04;
/// TSO frames may have the ECN (CWR) bit set.
pub(crate) const TUN_F_TSO_ECN: u32 = 0x08;

/// The `TUNSETOFFLOAD` flags for a driver that acknowledged `acked`.
///
/// Segmentation needs checksum offload (the kernel ignores TSO flags without
/// TUN_F_CSUM, and the virtio spec makes GUEST_TSO depend on GUEST_CSUM); ECN
/// only means something with TSO.
pub(crate) fn tun_offloads(acked: u64) -> u32 {
    let has = |bit: u32| acked & (1u64 << bit) != 0;
    if !has(VIRTIO_NET_F_GUEST_CSUM) {
        return 0;
    }
    let mut flags = TUN_F_CSUM;
    if has(VIRTIO_NET_F_GUEST_TSO4) {
        flags |= TUN_F_TSO4;
    }
    if has(VIRTIO_NET_F_GUEST_TSO6) {
        flags |= TUN_F_TSO6;
    }
    if has(VIRTIO_NET_F_GUEST_ECN) && flags & (TUN_F_TSO4 | TUN_F_TSO6) != 0 {
        flags |= TUN_F_TSO_ECN;
    }
    flags
}
