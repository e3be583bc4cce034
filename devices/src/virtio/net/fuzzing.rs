//! Hooks for the fuzz targets (cargo feature `fuzzing`, never enabled by tern
//! itself): the NIC's data path on a socket pair instead of a TAP, driven on the
//! caller's thread by the same events the worker reacts to.

use std::sync::Arc;

use virtio_queue::{Queue, QueueState};

use super::handler::{HandlerContext, NetHandler, NetQueues};
use super::link::LinkStatus;
use super::stats::{Counters, NetStats};
use crate::virtio::{GuestMemoryMmap, VirtioInterrupt};

/// The socket pair the unit tests use in place of the TAP (the same source file).
#[path = "tests/backend.rs"]
pub mod socket_backend;

use socket_backend::{socket_pair, Peer, SocketBackend};

/// What the worker reacts to, one call of [`SocketNic::handle`] each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The driver notified the receive queue.
    RxKick,
    /// The driver notified the transmit queue.
    TxKick,
    /// The driver notified the control queue.
    CtrlKick,
    /// The backend became readable.
    BackendReadable,
    /// The backend became writable.
    BackendWritable,
    /// The backend reported a hang-up.
    BackendHungUp,
    /// The worker's "work left over" continuation.
    Pending,
    /// Transmit polling turned on.
    PollTx,
    /// The transmit poll timer fired.
    TxTimer,
}

/// An activated NIC's data path on a socket pair, served synchronously.
pub struct SocketNic {
    handler: NetHandler,
    queues: Arc<NetQueues>,
    backend: Arc<SocketBackend>,
    peer: Peer,
    link: Arc<LinkStatus>,
    counters: Arc<Counters>,
}

impl SocketNic {
    /// A NIC serving `rx`, `tx` and (when negotiated) `ctrl` on `mem`; `mergeable`
    /// says whether the driver acknowledged VIRTIO_NET_F_MRG_RXBUF.
    pub fn new(
        mem: GuestMemoryMmap,
        rx: Queue,
        tx: Queue,
        ctrl: Option<Queue>,
        mergeable: bool,
        interrupt: Arc<dyn VirtioInterrupt>,
    ) -> Self {
        let queues = Arc::new(NetQueues::new(rx, tx, ctrl));
        let (backend, peer) = socket_pair("fuzz");
        let link = Arc::new(LinkStatus::new());
        let counters = Arc::new(Counters::default());
        let handler = NetHandler::new(HandlerContext {
            mem,
            queues: queues.clone(),
            backend: backend.clone(),
            interrupt,
            link: link.clone(),
            counters: counters.clone(),
            mergeable,
        });
        Self { handler, queues, backend, peer, link, counters }
    }

    /// Serves whatever is already queued, as the worker does when it starts.
    pub fn start(&mut self) {
        self.handler.start();
    }

    /// Reacts to `event` as the worker would.
    pub fn handle(&mut self, event: Event) {
        match event {
            Event::RxKick => self.handler.rx_kicked(),
            Event::TxKick => self.handler.tx_kicked(),
            Event::CtrlKick => self.handler.process_ctrl(),
            Event::BackendReadable => self.handler.backend_readable(),
            Event::BackendWritable => self.handler.backend_writable(),
            Event::BackendHungUp => self.handler.backend_hung_up(),
            Event::Pending => {
                if self.handler.has_pending() {
                    self.handler.process_pending();
                }
            }
            Event::PollTx => self.handler.poll_tx(),
            Event::TxTimer => self.handler.tx_timer_expired(),
        }
    }

    /// Gives held receive chains back, as a stopping worker does.
    pub fn finish(&mut self) {
        self.handler.finish();
    }

    /// The device's end of the socket pair (to inject errors).
    pub fn backend(&self) -> &SocketBackend {
        &self.backend
    }

    /// The network's end of the socket pair.
    pub fn peer(&mut self) -> &mut Peer {
        &mut self.peer
    }

    /// Queue positions (rx, tx, then ctrl), held receive chains given back.
    pub fn queue_states(&self) -> Vec<QueueState> {
        self.queues.states()
    }

    /// Whether the link is still up.
    pub fn link_up(&self) -> bool {
        self.link.is_up()
    }

    /// Traffic counters.
    pub fn stats(&self) -> NetStats {
        self.counters.snapshot()
    }
}
