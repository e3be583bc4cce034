//! Receive buffers: validating the chains the driver posts on the rx queue, and
//! holding the ones taken from the ring but not yet filled.
//!
//! A receive chain must be device-writable throughout, inside guest memory, not
//! broken, and hold at least a vnet header (virtio 1.x 5.1.6.3.1 asks that of
//! every buffer when MRG_RXBUF is negotiated, and a smaller one is useless
//! without it). Anything else is returned unused and counted.

use std::collections::VecDeque;
use std::ops::Deref;

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueState};
use vm_memory::{Bytes, GuestAddress};

use super::guest_iovecs::{BadBuffer, GuestIovecs};
use super::header::{HEADER_LEN, NUM_BUFFERS_OFFSET};
use crate::virtio::GuestMemoryMmap;

/// Most iovecs one receive chain may resolve to; with this bound, gathering can
/// always fit a whole chain under IOV_MAX.
pub(crate) const RX_CHAIN_MAX_IOVECS: usize = 64;

/// Why a receive chain cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RxChainError {
    #[error("descriptor chain is broken (loop, index out of range or unreadable descriptor)")]
    BrokenChain,
    #[error("receive descriptor is device-readable")]
    Readable,
    #[error("receive chain of {0} bytes cannot hold a vnet header")]
    TooShort(u64),
    #[error("receive chain is split into more than {RX_CHAIN_MAX_IOVECS} buffers")]
    TooManyBuffers,
    #[error(transparent)]
    BadBuffer(#[from] BadBuffer),
}

/// A validated receive chain, taken from the ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RxChain {
    /// Head descriptor index, for the used ring.
    pub head: u16,
    /// Bytes the chain holds (clamped to u32; a chain cannot exceed 4 GiB anyway).
    pub capacity: u32,
    /// Its buffers, to resolve again in a later pass and to find the header in.
    pub buffers: Vec<(GuestAddress, u32)>,
    /// How many iovecs the buffers resolved to.
    pub iovecs: usize,
}

impl RxChain {
    /// Writes `num_buffers` into the header at the start of the chain, through
    /// vm-memory (so the write is tracked as dirty).
    pub(crate) fn write_num_buffers(
        &self,
        mem: &GuestMemoryMmap,
        num_buffers: u16,
    ) -> Result<(), BadBuffer> {
        for (i, byte) in num_buffers.to_le_bytes().into_iter().enumerate() {
            let addr =
                self.address_of(NUM_BUFFERS_OFFSET + i).ok_or(BadBuffer { addr: 0, len: 0 })?;
            mem.write_obj(byte, addr).map_err(|_| BadBuffer { addr: addr.0, len: 1 })?;
        }
        Ok(())
    }

    /// Copies the first bytes the chain's buffers hold into `out`, at most
    /// `out.len()`; returns how many it copied, or `None` if a buffer is unreadable.
    pub(crate) fn read_front(&self, mem: &GuestMemoryMmap, out: &mut [u8]) -> Option<usize> {
        let mut got = 0;
        for &(addr, len) in &self.buffers {
            if got >= out.len() {
                break;
            }
            let n = (len as usize).min(out.len() - got);
            mem.read_slice(&mut out[got..got + n], addr).ok()?;
            got += n;
        }
        Some(got)
    }

    /// The guest address of byte `offset` of the chain's buffers.
    fn address_of(&self, offset: usize) -> Option<GuestAddress> {
        let mut skipped = 0usize;
        for &(addr, len) in &self.buffers {
            let len = len as usize;
            if offset < skipped + len {
                return addr.0.checked_add((offset - skipped) as u64).map(GuestAddress);
            }
            skipped += len;
        }
        None
    }
}

/// Validates `chain` and appends its buffers to `iov`. On failure `iov` is left
/// as it was.
pub(crate) fn take_rx_chain<M>(
    chain: DescriptorChain<M>,
    iov: &mut GuestIovecs<'_>,
) -> Result<RxChain, RxChainError>
where
    M: Deref<Target = GuestMemoryMmap>,
{
    let mark = iov.mark();
    let result = collect(chain, iov);
    if result.is_err() {
        iov.rollback(mark);
    }
    result
}

fn collect<M>(chain: DescriptorChain<M>, iov: &mut GuestIovecs<'_>) -> Result<RxChain, RxChainError>
where
    M: Deref<Target = GuestMemoryMmap>,
{
    let head = chain.head_index();
    let mut buffers = Vec::new();
    let mut capacity = 0u64;
    let mut iovecs = 0usize;
    let mut last_has_next = true;
    for desc in chain {
        last_has_next = desc.has_next();
        if !desc.is_write_only() {
            return Err(RxChainError::Readable);
        }
        if desc.len() == 0 {
            continue;
        }
        iovecs += iov.push(desc.addr(), desc.len())?;
        if iovecs > RX_CHAIN_MAX_IOVECS {
            return Err(RxChainError::TooManyBuffers);
        }
        capacity += u64::from(desc.len());
        buffers.push((desc.addr(), desc.len()));
    }
    // See tx::tx_frame: a cut-short iteration leaves "next" set on the last one.
    if last_has_next {
        return Err(RxChainError::BrokenChain);
    }
    if capacity < HEADER_LEN as u64 {
        return Err(RxChainError::TooShort(capacity));
    }
    Ok(RxChain { head, capacity: u32::try_from(capacity).unwrap_or(u32::MAX), buffers, iovecs })
}

/// The rx queue with the chains taken from it but not yet used.
pub(crate) struct RxQueue {
    /// The queue.
    pub queue: Queue,
    /// Chains popped from the available ring and kept for the next frame, oldest
    /// first. They are still the driver's: [`RxQueue::state`] reports the ring
    /// position as if they had not been taken.
    pub held: VecDeque<RxChain>,
    /// Notifications from the driver are enabled (we asked for a kick because the
    /// ring was empty).
    pub notifications: bool,
}

impl RxQueue {
    /// Wraps a queue fresh from activation (notifications enabled, as virtio
    /// starts out).
    pub(crate) fn new(queue: Queue) -> Self {
        Self { queue, held: VecDeque::new(), notifications: true }
    }

    /// The queue position with held chains given back: what a fresh device must
    /// resume from.
    pub(crate) fn state(&self) -> QueueState {
        let mut state = self.queue.state();
        // The queue holds at most 2^15 chains, so the count fits in u16.
        let held = u16::try_from(self.held.len()).unwrap_or(u16::MAX);
        state.next_avail = state.next_avail.wrapping_sub(held);
        state
    }

    /// Puts the held chains back on the ring (go_to_previous_position once each).
    pub(crate) fn release_held(&mut self) {
        for _ in 0..self.held.len() {
            self.queue.go_to_previous_position();
        }
        self.held.clear();
    }
}
