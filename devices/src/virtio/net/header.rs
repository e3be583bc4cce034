//! Sizes of what travels through the queues: the `virtio_net_hdr_v1` every frame
//! starts with, and the largest frame the device moves in either direction.

use std::mem::{offset_of, size_of};

use virtio_bindings::virtio_net::virtio_net_hdr_v1;

/// Bytes of `struct virtio_net_hdr_v1` (with `num_buffers`): the header of every
/// frame on a VERSION_1 device, and what the TAP is told to expect
/// (`TUNSETVNETHDRSZ`).
pub const HEADER_LEN: usize = 12;
/// Offset of `num_buffers` in the header: how many receive chains a frame used.
pub(crate) const NUM_BUFFERS_OFFSET: usize = 10;
/// An Ethernet header: the shortest frame worth sending.
pub(crate) const ETH_HLEN: usize = 14;
/// Largest frame after the header: a 64 KiB GSO packet plus Ethernet and VLAN
/// headers.
pub const MAX_FRAME_LEN: usize = 65_550;
/// Largest header plus frame the device reads from or writes to the TAP.
pub const MAX_BUFFER_LEN: usize = HEADER_LEN + MAX_FRAME_LEN;

const _: () = assert!(size_of::<virtio_net_hdr_v1>() == HEADER_LEN);
const _: () = assert!(offset_of!(virtio_net_hdr_v1, num_buffers) == NUM_BUFFERS_OFFSET);
