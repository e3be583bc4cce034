//! The `status` field of the configuration space, shared between the device (which
//! the driver reads through, and which announces after migration) and the worker
//! (which takes the link down when the TAP dies and clears ANNOUNCE on the
//! driver's acknowledgement).

use std::sync::atomic::{AtomicU16, Ordering};

use virtio_bindings::virtio_net::{VIRTIO_NET_S_ANNOUNCE, VIRTIO_NET_S_LINK_UP};

/// VIRTIO_NET_S_LINK_UP (fits in the 16-bit field).
pub const STATUS_LINK_UP: u16 = VIRTIO_NET_S_LINK_UP as u16;
/// VIRTIO_NET_S_ANNOUNCE.
pub const STATUS_ANNOUNCE: u16 = VIRTIO_NET_S_ANNOUNCE as u16;

/// The status bits.
#[derive(Debug)]
pub(crate) struct LinkStatus(AtomicU16);

impl LinkStatus {
    /// Link up, nothing to announce.
    pub(crate) fn new() -> Self {
        Self(AtomicU16::new(STATUS_LINK_UP))
    }

    /// The status field as the driver reads it.
    pub(crate) fn get(&self) -> u16 {
        self.0.load(Ordering::SeqCst)
    }

    /// Whether the backend is still usable.
    pub(crate) fn is_up(&self) -> bool {
        self.get() & STATUS_LINK_UP != 0
    }

    /// Takes the link down for good. Returns whether it was up.
    pub(crate) fn set_down(&self) -> bool {
        self.0.fetch_and(!STATUS_LINK_UP, Ordering::SeqCst) & STATUS_LINK_UP != 0
    }

    /// Brings the link up (a TAP attached again). Returns whether it was down.
    pub(crate) fn set_up(&self) -> bool {
        self.0.fetch_or(STATUS_LINK_UP, Ordering::SeqCst) & STATUS_LINK_UP == 0
    }

    /// Asks the driver to announce the NIC (gratuitous ARP / unsolicited NA).
    pub(crate) fn request_announce(&self) {
        self.0.fetch_or(STATUS_ANNOUNCE, Ordering::SeqCst);
    }

    /// The driver acknowledged the announcement.
    pub(crate) fn ack_announce(&self) {
        self.0.fetch_and(!STATUS_ANNOUNCE, Ordering::SeqCst);
    }

    /// Forgets a pending announcement (device reset).
    pub(crate) fn clear_announce(&self) {
        self.ack_announce();
    }
}
