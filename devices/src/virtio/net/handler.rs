//! The device's data path, one pass at a time: receive, transmit and control
//! passes over the queues and the backend, link-down handling, and what the
//! worker should poll the backend for. The worker thread calls this on events;
//! tests call it directly.

use std::sync::{Arc, Mutex};

use virtio_queue::{Queue, QueueState};
use vmm_sys_util::epoll::EventSet;

use super::backend::NetBackend;
use super::ctrl::process_ctrl;
use super::link::LinkStatus;
use super::queue_error::QueueError;
use super::rx::{process_rx, RxStop};
use super::rx_chains::RxQueue;
use super::stats::Counters;
use super::tx::{process_tx, TxStop};
use super::tx_poll_interval::TxPollInterval;
use crate::sync::lock;
use crate::virtio::{GuestMemoryMmap, VirtioInterrupt};

/// Queue indices.
pub(crate) const RX_QUEUE: u16 = 0;
pub(crate) const TX_QUEUE: u16 = 1;
pub(crate) const CTRL_QUEUE: u16 = 2;

/// Frames read per receive pass, and chains sent per transmit pass, before the
/// worker looks at its other events.
pub(crate) const PASS_BUDGET: usize = 256;
/// Consecutive failed reads (of a kind that may be temporary) after which the
/// backend is treated as gone rather than polled forever.
const MAX_READ_FAILURES: u32 = 64;

/// The device's queues, shared between the worker (which serves them) and the
/// device (which reports their state).
pub(crate) struct NetQueues {
    pub rx: Mutex<RxQueue>,
    pub tx: Mutex<Queue>,
    /// Present when the driver negotiated VIRTIO_NET_F_CTRL_VQ.
    pub ctrl: Option<Mutex<Queue>>,
}

impl NetQueues {
    /// Queues fresh from activation.
    pub(crate) fn new(rx: Queue, tx: Queue, ctrl: Option<Queue>) -> Self {
        Self { rx: Mutex::new(RxQueue::new(rx)), tx: Mutex::new(tx), ctrl: ctrl.map(Mutex::new) }
    }

    /// Queue positions in index order (rx, tx, then ctrl if present), with held
    /// receive chains given back.
    pub(crate) fn states(&self) -> Vec<QueueState> {
        let mut states = vec![lock(&self.rx).state(), lock(&self.tx).state()];
        if let Some(ctrl) = &self.ctrl {
            states.push(lock(ctrl).state());
        }
        states
    }
}

/// Everything a handler works with.
pub(crate) struct HandlerContext {
    pub mem: GuestMemoryMmap,
    pub queues: Arc<NetQueues>,
    pub backend: Arc<dyn NetBackend>,
    pub interrupt: Arc<dyn VirtioInterrupt>,
    pub link: Arc<LinkStatus>,
    pub counters: Arc<Counters>,
    /// The driver acknowledged VIRTIO_NET_F_MRG_RXBUF.
    pub mergeable: bool,
}

/// The data path of one activated device.
pub(crate) struct NetHandler {
    ctx: HandlerContext,
    /// The driver has posted no receive buffers: the TAP is not read until it
    /// kicks the rx queue.
    rx_waiting: bool,
    /// The TAP may hold frames not read yet. The TAP is polled edge-triggered
    /// (so that it stays registered for input, and its removal is noticed, even
    /// while nothing can be read), so this remembers what an edge announced.
    rx_backlog: bool,
    /// The TAP refused a frame: poll it for output, then transmit again.
    tx_blocked: bool,
    /// The transmit budget ran out with chains possibly left.
    tx_pending: bool,
    /// Consecutive reads that failed in a way that may be temporary.
    read_failures: u32,
    /// A queue was found corrupt: serve nothing until the driver resets.
    broken: bool,
    /// Transmit polling is on: a ring that had frames is polled again after
    /// [`Self::tx_poll_interval`] instead of kicked.
    poll_tx: bool,
    /// How long a polled ring waits for its next poll.
    tx_interval: TxPollInterval,
    /// The last frames the guest received may be answered (not bare TCP ACKs):
    /// it is answering what it receives, so its frames are not polled for.
    tx_answering: bool,
    /// The driver was not asked for its next transmit kick: poll the ring.
    tx_polling: bool,
}

impl NetHandler {
    pub(crate) fn new(ctx: HandlerContext) -> Self {
        Self {
            ctx,
            rx_waiting: false,
            rx_backlog: true,
            tx_blocked: false,
            tx_pending: false,
            read_failures: 0,
            broken: false,
            poll_tx: false,
            tx_polling: false,
            tx_interval: TxPollInterval::new(),
            tx_answering: false,
        }
    }

    /// Polls a busy transmit ring instead of taking a kick per frame, as a VMM's
    /// transmit timer does: after a pass that sent frames the driver is not asked
    /// for its next kick; the ring is polled again after [`Self::tx_poll_interval`],
    /// and kicks are turned back on when a poll finds it empty, or at once when the
    /// guest receives a frame it may answer (anything but a bare TCP ACK, see
    /// [`super::pure_ack`]); while what it receives may be answered, its frames are
    /// not polled for at all. A driver sending a frame now and then still kicks for
    /// each (and its frame goes out at once), and so does one answering what it
    /// receives (request/response, the receiving end of a stream); one sending a
    /// stream (receiving only ACKs) publishes frames without an exit per frame, and
    /// its stack coalesces more data per segment meanwhile.
    ///
    /// The caller must call [`Self::tx_timer_expired`] [`Self::tx_poll_interval`]
    /// after any pass that leaves [`Self::tx_timer_wanted`] true.
    pub(crate) fn poll_tx(&mut self) {
        self.poll_tx = true;
    }

    /// The ring waits to be polled by [`Self::tx_timer_expired`]. (Never while the
    /// TAP is full: a pass that blocks ends polling, and the TAP becoming writable
    /// restarts transmission.)
    pub(crate) fn tx_timer_wanted(&self) -> bool {
        self.tx_polling
    }

    /// How long the ring waits for its next poll (adapts to the sender; see
    /// [`TxPollInterval`]).
    pub(crate) fn tx_poll_interval(&self) -> std::time::Duration {
        self.tx_interval.get()
    }

    /// The transmit timer fired: poll the ring (kicks are off).
    pub(crate) fn tx_timer_expired(&mut self) {
        if self.tx_timer_wanted() {
            let frames = self.process_tx();
            self.tx_interval.after_poll(frames);
        }
    }

    /// Gives back what the handler was built from (the worker parks this way).
    pub(crate) fn into_context(self) -> HandlerContext {
        self.ctx
    }

    /// The backend's name (for logs).
    pub(crate) fn backend_name(&self) -> &str {
        self.ctx.backend.name()
    }

    /// The backend, for the worker to poll.
    pub(crate) fn backend(&self) -> &Arc<dyn NetBackend> {
        &self.ctx.backend
    }

    /// Serves whatever is already there: runs after activation, when the driver
    /// may have queued frames and buffers before setting DRIVER_OK.
    pub(crate) fn start(&mut self) {
        self.process_tx();
        self.process_ctrl();
        self.process_rx();
    }

    /// The worker is stopping: receive chains taken but not filled go back to the
    /// ring, so the queue's own position is right for whoever looks next.
    pub(crate) fn finish(&mut self) {
        lock(&self.ctx.queues.rx).release_held();
    }

    /// The driver kicked the rx queue: it posted buffers.
    pub(crate) fn rx_kicked(&mut self) {
        if self.rx_waiting {
            self.process_rx();
        }
    }

    /// The driver kicked the tx queue.
    pub(crate) fn tx_kicked(&mut self) {
        // While blocked, the TAP becoming writable restarts transmission.
        if !self.tx_blocked {
            self.process_tx();
        }
    }

    /// The TAP has (new) frames.
    pub(crate) fn backend_readable(&mut self) {
        self.rx_backlog = true;
        if !self.rx_waiting {
            self.process_rx();
        }
    }

    /// Whether frames are read from the TAP now (false while waiting for the
    /// driver to post receive buffers).
    #[cfg(test)]
    pub(crate) fn reading_backend(&self) -> bool {
        !self.rx_waiting
    }

    /// The TAP became writable.
    pub(crate) fn backend_writable(&mut self) {
        if self.tx_blocked {
            self.tx_blocked = false;
            self.process_tx();
        }
    }

    /// Work remains that no new event will announce: a pass ran out of budget
    /// (or a read failed) with frames or chains left.
    pub(crate) fn has_pending(&self) -> bool {
        !self.broken && (self.tx_pending || self.rx_pending())
    }

    fn rx_pending(&self) -> bool {
        self.rx_backlog && !self.rx_waiting && self.ctx.link.is_up()
    }

    /// Continues pending work.
    pub(crate) fn process_pending(&mut self) {
        if self.tx_pending {
            self.process_tx();
        }
        if self.rx_pending() {
            self.process_rx();
        }
    }

    /// What the worker should poll the backend for, edge-triggered: `None` once
    /// the backend must not be touched (link down, device broken). Input interest
    /// stays on even while there is nowhere to put frames, so the removal of the
    /// TAP (which the kernel announces as an input wake-up) is noticed.
    pub(crate) fn backend_interest(&self) -> Option<EventSet> {
        if self.broken || !self.ctx.link.is_up() {
            return None;
        }
        let mut events = EventSet::IN | EventSet::EDGE_TRIGGERED;
        if self.tx_blocked {
            events |= EventSet::OUT;
        }
        Some(events)
    }

    /// Moves frames from the TAP to the guest.
    pub(crate) fn process_rx(&mut self) {
        if self.broken || !self.ctx.link.is_up() {
            return;
        }
        let result = {
            let mut rxq = lock(&self.ctx.queues.rx);
            process_rx(
                &mut rxq,
                &self.ctx.mem,
                self.ctx.backend.as_ref(),
                &self.ctx.counters,
                self.ctx.mergeable,
                PASS_BUDGET,
            )
        };
        let pass = match result {
            Ok(pass) => pass,
            Err(e) => return self.queue_broken(RX_QUEUE, e),
        };
        tracing::trace!(delivered = pass.delivered, stop = ?pass.stop, "receive pass");
        if pass.interrupt {
            self.signal(RX_QUEUE);
        }
        if pass.delivered > 0 {
            self.tx_answering = pass.may_need_answer;
        }
        if pass.may_need_answer && self.tx_polling {
            // The guest may answer what it just received: serve the ring now and ask
            // for kicks again (no polling while answering), so the answer does not
            // wait for the transmit timer.
            self.process_tx();
        }
        self.rx_waiting = matches!(pass.stop, RxStop::NoBuffers);
        // Only an empty TAP clears the backlog; every other stop leaves frames
        // possibly unread.
        self.rx_backlog = !matches!(pass.stop, RxStop::BackendEmpty);
        match pass.stop {
            RxStop::Gone(err) => self.link_down(&format!("read failed: {err}")),
            RxStop::Failed(err) => {
                self.read_failures += 1;
                tracing::debug!(tap = self.backend_name(), "TAP read failed: {err}");
                if self.read_failures >= MAX_READ_FAILURES {
                    self.link_down(&format!(
                        "{MAX_READ_FAILURES} reads failed in a row, last: {err}"
                    ));
                }
            }
            _ => self.read_failures = 0,
        }
    }

    /// Moves frames from the guest to the TAP (or drops them while the link is
    /// down). Returns how many chains went back to the driver.
    pub(crate) fn process_tx(&mut self) -> usize {
        if self.broken {
            return 0;
        }
        let backend = self.ctx.link.is_up().then_some(self.ctx.backend.as_ref());
        let result = {
            let mut queue = lock(&self.ctx.queues.tx);
            let poll = self.poll_tx && !self.tx_answering;
            process_tx(&mut queue, &self.ctx.mem, backend, &self.ctx.counters, PASS_BUDGET, poll)
        };
        let pass = match result {
            Ok(pass) => pass,
            Err(e) => {
                self.queue_broken(TX_QUEUE, e);
                return 0;
            }
        };
        if pass.interrupt {
            self.signal(TX_QUEUE);
        }
        self.tx_blocked = pass.stop == TxStop::Blocked;
        self.tx_pending = pass.stop == TxStop::Budget;
        self.tx_polling = pass.stop == TxStop::Polling;
        if pass.backend_gone {
            self.link_down("write failed");
        }
        pass.completed
    }

    /// Answers control commands.
    pub(crate) fn process_ctrl(&mut self) {
        if self.broken {
            return;
        }
        let Some(ctrl) = &self.ctx.queues.ctrl else {
            return;
        };
        let result = {
            let mut queue = lock(ctrl);
            process_ctrl(&mut queue, &self.ctx.mem, &self.ctx.link, &self.ctx.counters)
        };
        match result {
            Ok(pass) if pass.interrupt => self.signal(CTRL_QUEUE),
            Ok(_) => {}
            Err(e) => self.queue_broken(CTRL_QUEUE, e),
        }
    }

    /// The backend reported a hang-up or an error condition.
    pub(crate) fn backend_hung_up(&mut self) {
        self.link_down("the TAP reported a hang-up or error");
    }

    /// Takes the link down for good: clears LINK_UP, tells the driver, and stops
    /// touching the backend. Transmit keeps draining (dropping) frames.
    fn link_down(&mut self, why: &str) {
        self.tx_blocked = false;
        if self.ctx.link.set_down() {
            tracing::error!(tap = self.backend_name(), "TAP is gone ({why}); link down");
            if let Err(e) = self.ctx.interrupt.signal_config() {
                tracing::warn!(tap = self.backend_name(), "cannot signal the link change: {e}");
            }
            // Frames the driver queued while we waited on the TAP.
            self.process_tx();
        }
    }

    fn queue_broken(&mut self, index: u16, err: QueueError) {
        tracing::error!(
            tap = self.backend_name(),
            queue = index,
            "virtio-net queue unusable ({err}); device needs reset"
        );
        self.broken = true;
        self.ctx.interrupt.set_needs_reset();
    }

    fn signal(&self, queue: u16) {
        if let Err(e) = self.ctx.interrupt.signal_queue(queue) {
            tracing::warn!(tap = self.backend_name(), queue, "cannot interrupt the driver: {e}");
        }
    }
}
