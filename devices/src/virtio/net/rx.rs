//! Receive: frames from the TAP are read with one `readv` straight into the
//! buffers the driver posted on the rx queue.
//!
//! With VIRTIO_NET_F_MRG_RXBUF the device gathers chains until they can hold the
//! largest frame (or the ring runs dry), reads one frame across them, writes
//! `num_buffers` into its header and returns each chain it filled with the bytes
//! it got. Chains left over are held for the next frame rather than pushed back
//! and popped again (see [`RxQueue`]). Without MRG_RXBUF a frame must fit in a
//! single chain, which the driver then makes big enough.
//!
//! A frame larger than the buffers (or shorter than a header) is dropped and
//! counted; the buffers are kept for the next frame. When the driver has posted
//! nothing, the pass ends asking for a kick: the worker stops reading the TAP
//! until the driver adds buffers.

use std::collections::VecDeque;
use std::io;

use virtio_queue::{QueueOwnedT, QueueT};

use super::backend::{classify, Failure, NetBackend};
use super::guest_iovecs::{GuestIovecs, IOV_MAX};
use super::header::{HEADER_LEN, MAX_BUFFER_LEN};
use super::pure_ack::{is_pure_tcp_ack, PEEK_LEN};
use super::queue_error::{QueueError, MAX_IDLE_PASSES};
use super::rx_chains::{take_rx_chain, RxChain, RxQueue, RX_CHAIN_MAX_IOVECS};
use super::stats::Counters;
use crate::virtio::GuestMemoryMmap;

/// How a receive pass ended.
#[derive(Debug)]
pub(crate) enum RxStop {
    /// No frame waits in the TAP.
    BackendEmpty,
    /// The driver has posted no buffers; notifications are enabled so it kicks
    /// when it does.
    NoBuffers,
    /// The budget ran out with frames possibly left.
    Budget,
    /// The backend is gone for good (the link must go down).
    Gone(io::Error),
    /// A read failed in a way that may be temporary.
    Failed(io::Error),
}

/// What one receive pass did.
#[derive(Debug)]
pub(crate) struct RxPass {
    /// Frames delivered to the guest.
    pub delivered: usize,
    /// The driver needs an interrupt.
    pub interrupt: bool,
    /// Why the pass ended.
    pub stop: RxStop,
    /// A delivered frame may call for an answer from the guest (it is not a bare
    /// TCP ACK; see [`super::pure_ack`]).
    pub may_need_answer: bool,
}

/// Moves frames from `backend` into the guest, at most `budget` frames read.
/// `mergeable` says whether the driver acknowledged VIRTIO_NET_F_MRG_RXBUF.
pub(crate) fn process_rx(
    rxq: &mut RxQueue,
    mem: &GuestMemoryMmap,
    backend: &dyn NetBackend,
    counters: &Counters,
    mergeable: bool,
    budget: usize,
) -> Result<RxPass, QueueError> {
    let mut iov = GuestIovecs::for_device_writes(mem);
    let mut used = 0usize;
    let mut chains = reresolve_held(rxq, mem, &mut iov, counters, &mut used)?;
    let mut frames = 0usize;
    let mut delivered = 0usize;
    let mut may_need_answer = false;
    let mut idle_passes = 0;

    let stop = loop {
        if frames >= budget {
            break RxStop::Budget;
        }
        let popped = top_up(rxq, mem, &mut iov, &mut chains, counters, &mut used, mergeable)?;
        if chains.is_empty() {
            // Out of buffers: ask for a kick, unless the driver just added some.
            rxq.notifications = true;
            if !rxq.queue.enable_notification(mem)? {
                break RxStop::NoBuffers;
            }
            idle_passes = if popped { 0 } else { idle_passes + 1 };
            if idle_passes > MAX_IDLE_PASSES {
                return Err(QueueError::Stalled);
            }
            continue;
        }
        idle_passes = 0;
        if rxq.notifications {
            rxq.queue.disable_notification(mem)?;
            rxq.notifications = false;
        }

        let frame_len = match backend.read_frame(&mut iov) {
            Ok(0) => {
                break RxStop::Gone(io::Error::new(io::ErrorKind::UnexpectedEof, "backend closed"))
            }
            Ok(len) => len,
            Err(err) => match classify(&err) {
                Failure::Interrupted => continue,
                Failure::WouldBlock => break RxStop::BackendEmpty,
                Failure::Gone => break RxStop::Gone(err),
                Failure::Frame => break RxStop::Failed(err),
            },
        };
        frames += 1;
        if frame_len < HEADER_LEN || frame_len > iov.len() {
            tracing::debug!(
                tap = backend.name(),
                frame_len,
                buffers = iov.len(),
                "dropping received frame that does not fit the guest's buffers"
            );
            Counters::add(&counters.dropped_rx, 1);
            continue;
        }
        if !may_need_answer {
            may_need_answer = chains.front().is_none_or(|first| !delivers_pure_ack(mem, first, frame_len));
        }
        used += deliver(rxq, mem, &mut iov, &mut chains, frame_len, counters)?;
        delivered += 1;
    };
    rxq.held = chains;
    let interrupt = used > 0 && rxq.queue.needs_notification(mem)?;
    Ok(RxPass { delivered, interrupt, stop, may_need_answer })
}

/// Whether the frame of `frame_len` bytes (vnet header included) just read into
/// `first` and the chains after it is a bare TCP ACK. Looks at the first chain's
/// buffers only (the driver's buffers hold far more than the headers).
fn delivers_pure_ack(mem: &GuestMemoryMmap, first: &RxChain, frame_len: usize) -> bool {
    let mut bytes = [0u8; HEADER_LEN + PEEK_LEN];
    let want = frame_len.min(bytes.len());
    let Some(got) = first.read_front(mem, &mut bytes[..want]) else { return false };
    got > HEADER_LEN && is_pure_tcp_ack(&bytes[HEADER_LEN..got])
}

/// Resolves the chains held from the previous pass into `iov` again. A chain that
/// no longer resolves (cannot happen with fixed guest memory) is returned unused.
fn reresolve_held(
    rxq: &mut RxQueue,
    mem: &GuestMemoryMmap,
    iov: &mut GuestIovecs<'_>,
    counters: &Counters,
    used: &mut usize,
) -> Result<VecDeque<RxChain>, QueueError> {
    let mut chains = std::mem::take(&mut rxq.held);
    let mut kept = VecDeque::with_capacity(chains.len());
    for mut chain in chains.drain(..) {
        let mark = iov.mark();
        let mut iovecs = 0;
        let mut ok = true;
        for &(addr, len) in &chain.buffers {
            match iov.push(addr, len) {
                Ok(n) => iovecs += n,
                Err(_) => {
                    ok = false;
                    break;
                }
            }
        }
        if ok {
            chain.iovecs = iovecs;
            kept.push_back(chain);
        } else {
            iov.rollback(mark);
            Counters::add(&counters.bad_rx_chains, 1);
            rxq.queue.add_used(mem, chain.head, 0)?;
            *used += 1;
        }
    }
    Ok(kept)
}

/// Takes chains from the ring until the buffers can hold the largest frame (one
/// chain without mergeable buffers) or the ring is empty. Bad chains are returned
/// unused and counted. Returns whether any chain was popped.
fn top_up(
    rxq: &mut RxQueue,
    mem: &GuestMemoryMmap,
    iov: &mut GuestIovecs<'_>,
    chains: &mut VecDeque<RxChain>,
    counters: &Counters,
    used: &mut usize,
    mergeable: bool,
) -> Result<bool, QueueError> {
    let mut popped = false;
    loop {
        let enough = if mergeable {
            iov.len() >= MAX_BUFFER_LEN || iov.count() + RX_CHAIN_MAX_IOVECS >= IOV_MAX
        } else {
            !chains.is_empty()
        };
        if enough {
            return Ok(popped);
        }
        let Some(chain) = rxq.queue.iter(mem)?.next() else {
            return Ok(popped);
        };
        popped = true;
        let head = chain.head_index();
        match take_rx_chain(chain, iov) {
            Ok(chain) => chains.push_back(chain),
            Err(err) => {
                tracing::debug!(head, "returning unusable receive chain: {err}");
                Counters::add(&counters.bad_rx_chains, 1);
                rxq.queue.add_used(mem, head, 0)?;
                *used += 1;
            }
        }
    }
}

/// Completes a frame of `frame_len` bytes (header included) that `readv` put at
/// the front of `iov`: writes `num_buffers`, returns the chains it filled to the
/// driver and drops them from `iov`. Returns how many chains it used.
fn deliver(
    rxq: &mut RxQueue,
    mem: &GuestMemoryMmap,
    iov: &mut GuestIovecs<'_>,
    chains: &mut VecDeque<RxChain>,
    frame_len: usize,
    counters: &Counters,
) -> Result<usize, QueueError> {
    // The frame fits in `iov`, so the chains cover it.
    let mut covered = 0usize;
    let mut count = 0usize;
    for chain in chains.iter() {
        if covered >= frame_len {
            break;
        }
        covered += chain.capacity as usize;
        count += 1;
    }
    let num_buffers = u16::try_from(count).unwrap_or(u16::MAX);
    let header_ok =
        chains.front().is_some_and(|first| first.write_num_buffers(mem, num_buffers).is_ok());
    let mut remaining = frame_len;
    let mut iovecs = 0usize;
    for chain in chains.drain(..count) {
        let len = remaining.min(chain.capacity as usize);
        remaining -= len;
        iovecs += chain.iovecs;
        // A frame never exceeds MAX_BUFFER_LEN bytes of buffers... unless a single
        // chain is larger; `len` is at most the chain's u32 capacity either way.
        let used_len = if header_ok { u32::try_from(len).unwrap_or(u32::MAX) } else { 0 };
        rxq.queue.add_used(mem, chain.head, used_len)?;
    }
    iov.consume_front(iovecs);
    if header_ok {
        Counters::add(&counters.rx_frames, 1);
        Counters::add(&counters.rx_bytes, (frame_len - HEADER_LEN) as u64);
    } else {
        Counters::add(&counters.dropped_rx, 1);
    }
    Ok(count)
}
