//! Traffic counters, updated by the worker and read by anyone.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a NIC's counters. Bytes count frames without their vnet header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Frames delivered to the guest.
    pub rx_frames: u64,
    /// Bytes delivered to the guest.
    pub rx_bytes: u64,
    /// Frames read from the TAP but not delivered (larger than the guest's
    /// buffers, shorter than a header).
    pub dropped_rx: u64,
    /// Receive chains the guest posted that the device could not use (device-
    /// readable descriptors, outside guest memory, broken, too short); returned
    /// unused.
    pub bad_rx_chains: u64,
    /// Frames sent to the TAP.
    pub tx_frames: u64,
    /// Bytes sent to the TAP.
    pub tx_bytes: u64,
    /// Transmit chains not sent: malformed, oversized, refused by the TAP, or sent
    /// while the link was down.
    pub dropped_tx: u64,
    /// Control commands answered VIRTIO_NET_ERR or not answerable at all.
    pub ctrl_errors: u64,
}

/// The live counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub rx_frames: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub dropped_rx: AtomicU64,
    pub bad_rx_chains: AtomicU64,
    pub tx_frames: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub dropped_tx: AtomicU64,
    pub ctrl_errors: AtomicU64,
}

impl Counters {
    /// Adds `n` to `counter`.
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The current values.
    pub(crate) fn snapshot(&self) -> NetStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        NetStats {
            rx_frames: get(&self.rx_frames),
            rx_bytes: get(&self.rx_bytes),
            dropped_rx: get(&self.dropped_rx),
            bad_rx_chains: get(&self.bad_rx_chains),
            tx_frames: get(&self.tx_frames),
            tx_bytes: get(&self.tx_bytes),
            dropped_tx: get(&self.dropped_tx),
            ctrl_errors: get(&self.ctrl_errors),
        }
    }
}
