//! One run of the virtio-net data path for the `virtio_net_tx` and `virtio_net_rx`
//! targets: the queues written into guarded guest memory, a [`SocketNic`] over
//! them, the input's operations applied in order, then the checks both targets
//! share.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use devices::virtio::net::fuzzing::{Event, SocketNic};
use devices::virtio::net::{NetStats, HEADER_LEN, MAX_BUFFER_LEN};
use devices::virtio::VirtioInterrupt;

use crate::guarded_memory::{GuardedMemory, GuestMemoryMmap};
use crate::inputs::{NetInput, NetOp, ERRNOS};
use crate::virtqueue::{avail_idx, check_returned, used_entries, QueueImage, Rings};

/// Where each queue's rings are.
pub const RX_RINGS: Rings = Rings { base: 0 };
pub const TX_RINGS: Rings = Rings { base: 0x3000 };
pub const CTRL_RINGS: Rings = Rings { base: 0x6000 };

/// The frames the network may send in one run, in total (kept well under the
/// socket's buffer, so sending never blocks).
const MAX_SENT_BYTES: usize = 150_000;
const MAX_SENT_FRAMES: usize = 32;

/// The worker events, in the order of `inputs::event`.
const EVENTS: [Event; 9] = [
    Event::RxKick,
    Event::TxKick,
    Event::CtrlKick,
    Event::BackendReadable,
    Event::BackendWritable,
    Event::BackendHungUp,
    Event::Pending,
    Event::PollTx,
    Event::TxTimer,
];

/// Counts interrupts; a queue index the device does not have is a bug.
#[derive(Default)]
struct Interrupts {
    needs_reset: AtomicUsize,
}

impl VirtioInterrupt for Interrupts {
    fn signal_queue(&self, queue: u16) -> io::Result<()> {
        assert!(queue < 3, "interrupt for queue {queue}");
        Ok(())
    }
    fn signal_config(&self) -> io::Result<()> {
        Ok(())
    }
    fn set_needs_reset(&self) {
        self.needs_reset.fetch_add(1, Ordering::SeqCst);
    }
}

/// Which queue the input's `queue` describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Under {
    Tx,
    Rx,
}

/// What a run left, for the target's own checks.
pub struct Outcome {
    pub mem: &'static GuestMemoryMmap,
    pub stats: NetStats,
    /// Frames the network sent / received.
    pub sent: Vec<Vec<u8>>,
    pub received: Vec<Vec<u8>>,
    /// The network end was closed (frames in flight were lost).
    pub peer_closed: bool,
    /// The used ring entries of the queue under test (as guest memory holds them
    /// now: the device's receive buffers may have overwritten them).
    pub used: Vec<(u32, u32)>,
}

/// Runs `input` with its queue as the `under` queue.
pub fn run(input: &NetInput, under: Under) -> Outcome {
    let memory = GuardedMemory::fresh();
    let mem = memory.mem();
    let empty = QueueImage::new(Vec::new(), Vec::new(), Vec::new());
    let (rx_image, tx_image) = match under {
        Under::Rx => (&input.queue, &empty),
        Under::Tx => (&empty, &input.queue),
    };
    rx_image.write(mem, RX_RINGS);
    tx_image.write(mem, TX_RINGS);
    if let Some(ctrl) = &input.ctrl {
        ctrl.write(mem, CTRL_RINGS);
    }
    // The queue images may overwrite each other's rings; every queue is built
    // after all of them are written, as a driver's final memory.
    let event_idx = input.event_idx();
    let rx = rx_image.queue(mem, RX_RINGS, event_idx);
    let tx = tx_image.queue(mem, TX_RINGS, event_idx);
    let ctrl = input.ctrl.as_ref().map(|c| c.queue(mem, CTRL_RINGS, event_idx));
    // What each queue offers in that final memory (another image's writes may have
    // changed a ring's index after its own image wrote it).
    let available = [avail_idx(mem, RX_RINGS), avail_idx(mem, TX_RINGS), avail_idx(mem, CTRL_RINGS)];
    let interrupts = Arc::new(Interrupts::default());
    let mut nic = SocketNic::new(mem.clone(), rx, tx, ctrl, input.mergeable(), interrupts.clone());
    nic.start();

    let mut sent = Vec::new();
    let mut sent_bytes = 0usize;
    let mut received = Vec::new();
    let mut peer_closed = false;
    for op in &input.ops.0 {
        match op {
            NetOp::Event(e) => nic.handle(EVENTS[usize::from(*e) % EVENTS.len()]),
            NetOp::FailNextWrite(e) => nic.backend().fail_next_write(ERRNOS[usize::from(*e) % ERRNOS.len()]),
            NetOp::FailNextRead(e) => nic.backend().fail_next_read(ERRNOS[usize::from(*e) % ERRNOS.len()]),
            NetOp::ShrinkSendBuffer => nic.backend().shrink_send_buffer(),
            NetOp::Send(spec) => {
                let frame = spec.bytes();
                if peer_closed || sent.len() >= MAX_SENT_FRAMES || sent_bytes + frame.len() > MAX_SENT_BYTES {
                    continue;
                }
                sent_bytes += frame.len();
                nic.peer().send(&frame);
                sent.push(frame);
            }
            NetOp::Drain => {
                if !peer_closed {
                    while let Some(frame) = nic.peer().try_recv() {
                        received.push(frame);
                    }
                }
            }
            NetOp::ClosePeer => {
                nic.peer().close();
                peer_closed = true;
            }
        }
    }
    if !peer_closed {
        while let Some(frame) = nic.peer().try_recv() {
            received.push(frame);
        }
    }
    nic.finish();

    let under_rings = match under {
        Under::Rx => RX_RINGS,
        Under::Tx => TX_RINGS,
    };
    let states = nic.queue_states();
    let index = if under == Under::Rx { 0 } else { 1 };
    // Received frames and control acknowledgements go into guest buffers, which may
    // point at any ring's index: after one, only the queue size bounds what a device
    // may take.
    let wrote_guest_buffers = states[0].next_used != 0 || states.get(2).is_some_and(|s| s.next_used != 0);
    let bound = |i: usize| (!wrote_guest_buffers).then_some(available[i]);
    check_returned(states[index].next_used, bound(index), input.queue.size());
    if let (Some(image), Some(state)) = (&input.ctrl, states.get(2)) {
        check_returned(state.next_used, bound(2), image.size());
    }
    let used = used_entries(mem, under_rings, &input.queue, states[index].next_used);
    let stats = nic.stats();
    for frame in &received {
        assert!(
            (HEADER_LEN + 14..=MAX_BUFFER_LEN).contains(&frame.len()),
            "a {}-byte frame reached the network",
            frame.len()
        );
    }
    Outcome { mem, stats, sent, received, peer_closed, used }
}
