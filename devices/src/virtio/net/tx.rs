//! Transmit: each available chain on the tx queue is one frame (vnet header
//! first), validated and written to the TAP with one `writev` straight from guest
//! memory.
//!
//! Everything in a chain is guest-controlled. A chain that is broken, has a
//! device-writable descriptor, points outside guest memory, is shorter than a
//! header plus an Ethernet header or longer than [`MAX_BUFFER_LEN`] is dropped
//! and counted; either way the chain goes back to the driver (used length 0).
//! When the TAP cannot take a frame now (EAGAIN) the chain is put back on the
//! ring untouched and the pass ends: the worker retries once the TAP is writable.

use std::ops::Deref;

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};

use super::backend::{classify, Failure, NetBackend};
use super::guest_iovecs::{BadBuffer, GuestIovecs, IOV_MAX};
use super::header::{ETH_HLEN, HEADER_LEN, MAX_BUFFER_LEN};
use super::queue_error::{QueueError, MAX_IDLE_PASSES};
use super::stats::Counters;
use crate::virtio::GuestMemoryMmap;

/// Why a transmit chain was dropped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TxChainError {
    #[error("descriptor chain is broken (loop, index out of range or unreadable descriptor)")]
    BrokenChain,
    #[error("transmit descriptor is device-writable")]
    Writable,
    #[error("frame of {0} bytes is shorter than a vnet header plus an Ethernet header")]
    TooShort(u64),
    #[error("frame is longer than {MAX_BUFFER_LEN} bytes (vnet header included)")]
    TooLong,
    #[error("frame is split into more than {IOV_MAX} buffers")]
    TooManyBuffers,
    #[error(transparent)]
    BadBuffer(#[from] BadBuffer),
}

/// Validates `chain` and resolves it to guest buffers, ready for `writev`.
pub(crate) fn tx_frame<'m, M>(
    chain: DescriptorChain<M>,
    mem: &'m GuestMemoryMmap,
) -> Result<GuestIovecs<'m>, TxChainError>
where
    M: Deref<Target = GuestMemoryMmap>,
{
    let mut frame = GuestIovecs::for_device_reads(mem);
    let mut total = 0u64;
    let mut last_has_next = true;
    for desc in chain {
        last_has_next = desc.has_next();
        if desc.is_write_only() {
            return Err(TxChainError::Writable);
        }
        total += u64::from(desc.len());
        // Checked per descriptor, so a hostile chain costs at most one frame's work.
        if total > MAX_BUFFER_LEN as u64 {
            return Err(TxChainError::TooLong);
        }
        if desc.len() > 0 {
            frame.push(desc.addr(), desc.len())?;
            if frame.count() > IOV_MAX {
                return Err(TxChainError::TooManyBuffers);
            }
        }
    }
    // The iterator stops early, without an error, on a loop, an out-of-range next
    // index, an unreadable descriptor or a bad indirect table: then the last
    // descriptor it yielded still says "next" (or it yielded none).
    if last_has_next {
        return Err(TxChainError::BrokenChain);
    }
    if total < (HEADER_LEN + ETH_HLEN) as u64 {
        return Err(TxChainError::TooShort(total));
    }
    Ok(frame)
}

/// How a transmit pass ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TxStop {
    /// The ring is empty and notifications are enabled again.
    Drained,
    /// The TAP refused a frame for now; it is back on the ring.
    Blocked,
    /// The budget ran out with chains possibly left.
    Budget,
    /// Chains were sent and the driver was not asked to kick again: the caller polls
    /// the ring once more a little later (it re-enables kicks when a poll finds it
    /// empty). A driver that keeps transmitting then publishes frames without an exit
    /// per frame.
    Polling,
}

/// What one transmit pass did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TxPass {
    /// Chains returned to the driver.
    pub completed: usize,
    /// The driver needs an interrupt.
    pub interrupt: bool,
    /// Why the pass ended.
    pub stop: TxStop,
    /// The backend failed for good during the pass (the link must go down).
    pub backend_gone: bool,
}

/// What became of one chain.
enum Sent {
    /// Sent, or dropped: either way the chain is done.
    Done,
    /// The backend would block: put the chain back.
    Blocked,
    /// The backend is gone; the chain is done (dropped).
    Gone,
}

/// Sends available frames, at most `budget` chains. `backend` is `None` once the
/// link is down: frames are then dropped (and counted) so the driver's queue
/// keeps moving. With `poll` true a pass that sent something ends in
/// [`TxStop::Polling`] instead of asking the driver for its next kick.
pub(crate) fn process_tx(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    mut backend: Option<&dyn NetBackend>,
    counters: &Counters,
    budget: usize,
    poll: bool,
) -> Result<TxPass, QueueError> {
    let mut completed = 0usize;
    let mut idle_passes = 0;
    let mut backend_gone = false;
    let stop = 'drain: loop {
        queue.disable_notification(mem)?;
        let mut progressed = false;
        while let Some(chain) = queue.iter(mem)?.next() {
            let head = chain.head_index();
            match send_chain(chain, mem, backend, counters) {
                Sent::Done => {}
                Sent::Blocked => {
                    queue.go_to_previous_position();
                    break 'drain TxStop::Blocked;
                }
                Sent::Gone => {
                    backend_gone = true;
                    backend = None;
                }
            }
            queue.add_used(mem, head, 0)?;
            progressed = true;
            completed += 1;
            if completed >= budget {
                break 'drain TxStop::Budget;
            }
        }
        if poll && completed > 0 {
            // Kicks stay off: with VIRTIO_F_EVENT_IDX the driver kicks only when it
            // crosses the avail event index, which stays where it was; without it
            // the NO_NOTIFY flag set above stays set.
            break TxStop::Polling;
        }
        if !queue.enable_notification(mem)? {
            break TxStop::Drained;
        }
        idle_passes = if progressed { 0 } else { idle_passes + 1 };
        if idle_passes > MAX_IDLE_PASSES {
            return Err(QueueError::Stalled);
        }
    };
    let interrupt = completed > 0 && queue.needs_notification(mem)?;
    Ok(TxPass { completed, interrupt, stop, backend_gone })
}

fn send_chain(
    chain: DescriptorChain<&GuestMemoryMmap>,
    mem: &GuestMemoryMmap,
    backend: Option<&dyn NetBackend>,
    counters: &Counters,
) -> Sent {
    let head = chain.head_index();
    let Some(backend) = backend else {
        Counters::add(&counters.dropped_tx, 1);
        return Sent::Done;
    };
    let frame = match tx_frame(chain, mem) {
        Ok(frame) => frame,
        Err(err) => {
            tracing::debug!(tap = backend.name(), head, "dropping transmit chain: {err}");
            Counters::add(&counters.dropped_tx, 1);
            return Sent::Done;
        }
    };
    loop {
        match backend.write_frame(&frame) {
            Ok(written) => {
                Counters::add(&counters.tx_frames, 1);
                Counters::add(&counters.tx_bytes, written.saturating_sub(HEADER_LEN) as u64);
                return Sent::Done;
            }
            Err(err) => match classify(&err) {
                Failure::Interrupted => continue,
                Failure::WouldBlock => return Sent::Blocked,
                Failure::Gone => {
                    tracing::warn!(tap = backend.name(), "TAP write failed: {err}");
                    Counters::add(&counters.dropped_tx, 1);
                    return Sent::Gone;
                }
                Failure::Frame => {
                    tracing::debug!(tap = backend.name(), head, "TAP refused a frame: {err}");
                    Counters::add(&counters.dropped_tx, 1);
                    return Sent::Done;
                }
            },
        }
    }
}
