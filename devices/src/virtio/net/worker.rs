//! The NIC's worker thread: epoll over the queue notification eventfds, the TAP
//! and a stop eventfd, running handler passes as events arrive and keeping the
//! TAP's poll interest in step with what the handler can use.
//!
//! A worker can be parked (migration, or a device activated before its TAP is
//! attached): the thread stops at a pass boundary and hands back everything but
//! the backend, from which an identical worker starts again later.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::thread::JoinHandle;

use virtio_queue::QueueState;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::timerfd::TimerFd;

use super::backend::NetBackend;
use super::handler::{HandlerContext, NetHandler, NetQueues};
use super::link::LinkStatus;
use super::stats::Counters;
use crate::virtio::{GuestMemoryMmap, VirtioInterrupt};

const RX_TOKEN: u64 = 0;
const TX_TOKEN: u64 = 1;
const CTRL_TOKEN: u64 = 2;
const BACKEND_TOKEN: u64 = 3;
const STOP_TOKEN: u64 = 4;
const TX_TIMER_TOKEN: u64 = 5;

/// What a worker serves, apart from the backend: kept while it is parked.
pub(crate) struct WorkerParts {
    pub queues: Arc<NetQueues>,
    /// Notification eventfds of the rx, tx and (if negotiated) ctrl queues.
    pub rx_notify: EventFd,
    pub tx_notify: EventFd,
    pub ctrl_notify: Option<EventFd>,
    pub mem: GuestMemoryMmap,
    pub interrupt: Arc<dyn VirtioInterrupt>,
    /// The driver acknowledged VIRTIO_NET_F_MRG_RXBUF.
    pub mergeable: bool,
}

/// Shared device state a worker reports into.
pub(crate) struct WorkerShared {
    pub backend: Arc<dyn NetBackend>,
    pub link: Arc<LinkStatus>,
    pub counters: Arc<Counters>,
}

/// A running worker thread.
pub(crate) struct Worker {
    stop: EventFd,
    thread: Option<JoinHandle<WorkerThread>>,
    queues: Arc<NetQueues>,
}

impl Worker {
    /// Starts a thread named `name` serving `parts` over `shared.backend`. Fails
    /// when the eventfds or the epoll set cannot be created, or the thread cannot
    /// be spawned; the parts are lost then (the device needs a reset).
    pub(crate) fn spawn(
        name: String,
        parts: WorkerParts,
        shared: WorkerShared,
    ) -> io::Result<Self> {
        let stop = EventFd::new(EFD_NONBLOCK)?;
        let epoll = Epoll::new()?;
        let add = |fd: i32, token: u64| {
            epoll.ctl(ControlOperation::Add, fd, EpollEvent::new(EventSet::IN, token))
        };
        add(parts.rx_notify.as_raw_fd(), RX_TOKEN)?;
        add(parts.tx_notify.as_raw_fd(), TX_TOKEN)?;
        if let Some(ctrl) = &parts.ctrl_notify {
            add(ctrl.as_raw_fd(), CTRL_TOKEN)?;
        }
        add(stop.as_raw_fd(), STOP_TOKEN)?;
        let tx_timer = TimerFd::new().map_err(io::Error::from)?;
        add(tx_timer.as_raw_fd(), TX_TIMER_TOKEN)?;
        let queues = parts.queues.clone();
        let mut handler = NetHandler::new(HandlerContext {
            mem: parts.mem,
            queues: parts.queues,
            backend: shared.backend,
            interrupt: parts.interrupt,
            link: shared.link,
            counters: shared.counters,
            mergeable: parts.mergeable,
        });
        handler.poll_tx();
        let mut thread = WorkerThread {
            epoll,
            handler,
            tx_timer,
            tx_timer_armed: false,
            rx_notify: parts.rx_notify,
            tx_notify: parts.tx_notify,
            ctrl_notify: parts.ctrl_notify,
            registered: None,
        };
        let handle = std::thread::Builder::new().name(name).spawn(move || {
            // Before the first frame or descriptor: both are the guest's or the network's.
            match tern_seccomp::confine(tern_seccomp::ThreadClass::NetWorker) {
                Ok(()) => thread.run(),
                Err(e) => tracing::error!("virtio-net worker not started: {e}"),
            }
            thread
        })?;
        Ok(Self { stop, thread: Some(handle), queues })
    }

    /// Queue positions (meaningful while the device is quiescent).
    pub(crate) fn queue_states(&self) -> Vec<QueueState> {
        self.queues.states()
    }

    /// Stops the thread after the pass it is running and hands back what it
    /// served. `None` if the thread could not be stopped or had panicked.
    pub(crate) fn park(mut self) -> Option<WorkerParts> {
        let thread = self.join()?;
        let WorkerThread { handler, rx_notify, tx_notify, ctrl_notify, .. } = thread;
        let ctx = handler.into_context();
        Some(WorkerParts {
            queues: ctx.queues,
            rx_notify,
            tx_notify,
            ctrl_notify,
            mem: ctx.mem,
            interrupt: ctx.interrupt,
            mergeable: ctx.mergeable,
        })
    }

    /// Stops the thread for good and returns the queues' final positions.
    pub(crate) fn stop(mut self) -> Vec<QueueState> {
        let _ = self.join();
        self.queues.states()
    }

    fn join(&mut self) -> Option<WorkerThread> {
        let handle = self.thread.take()?;
        if let Err(e) = self.stop.write(1) {
            // Cannot happen with a valid eventfd short of a counter overflow; the
            // join below would hang, so leave the thread detached instead.
            tracing::error!("cannot stop virtio-net worker: {e}");
            return None;
        }
        match handle.join() {
            Ok(thread) => Some(thread),
            Err(_) => {
                tracing::error!("virtio-net worker panicked");
                None
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.join();
    }
}

struct WorkerThread {
    epoll: Epoll,
    handler: NetHandler,
    /// Fires when a polled transmit ring is due (the handler's poll interval).
    tx_timer: TimerFd,
    tx_timer_armed: bool,
    rx_notify: EventFd,
    tx_notify: EventFd,
    ctrl_notify: Option<EventFd>,
    /// The backend's current registration in the epoll set.
    registered: Option<EventSet>,
}

impl WorkerThread {
    fn run(&mut self) {
        let span = tracing::info_span!("virtio-net", tap = %self.handler.backend_name());
        let _entered = span.enter();
        self.serve();
        self.handler.finish();
    }

    fn serve(&mut self) {
        self.handler.start();
        let mut events = [EpollEvent::default(); 8];
        loop {
            if let Err(e) = self.update_backend_interest() {
                tracing::error!("cannot poll the TAP: {e}; link down");
                self.handler.backend_hung_up();
                let _ = self.update_backend_interest();
            }
            // Before sleeping: a pass (including the first, at start) may have left
            // the transmit ring to be polled.
            self.arm_tx_timer();
            // With work left over, only poll: a stop request must not wait behind a
            // driver that keeps the queue full.
            let timeout = if self.handler.has_pending() { 0 } else { -1 };
            let count = match self.epoll.wait(timeout, &mut events) {
                Ok(count) => count,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!("virtio-net worker: epoll_wait failed: {e}");
                    return;
                }
            };
            let ready = &events[..count];
            if ready.iter().any(|e| e.data() == STOP_TOKEN) {
                return;
            }
            for event in ready {
                self.dispatch(event.data(), event.event_set());
            }
            if count == 0 {
                self.handler.process_pending();
            }
        }
    }

    fn dispatch(&mut self, token: u64, set: EventSet) {
        match token {
            RX_TOKEN => {
                // Clears the counter; EAGAIN (already cleared) is harmless.
                let _ = self.rx_notify.read();
                self.handler.rx_kicked();
            }
            TX_TOKEN => {
                let _ = self.tx_notify.read();
                self.handler.tx_kicked();
            }
            TX_TIMER_TOKEN => {
                // Clears the expiry count; the timer is one-shot.
                let _ = self.tx_timer.wait();
                self.tx_timer_armed = false;
                self.handler.tx_timer_expired();
            }
            CTRL_TOKEN => {
                if let Some(fd) = &self.ctrl_notify {
                    let _ = fd.read();
                }
                self.handler.process_ctrl();
            }
            BACKEND_TOKEN => {
                if set.intersects(EventSet::ERROR | EventSet::HANG_UP) {
                    self.handler.backend_hung_up();
                    return;
                }
                if set.contains(EventSet::OUT) {
                    self.handler.backend_writable();
                }
                if set.contains(EventSet::IN) {
                    self.handler.backend_readable();
                }
            }
            _ => {}
        }
    }

    /// Starts the transmit timer when a pass left the ring to be polled. Should the
    /// timer fail, the ring is polled at once instead (and kicks come back on once
    /// it is empty).
    fn arm_tx_timer(&mut self) {
        if self.tx_timer_armed || !self.handler.tx_timer_wanted() {
            return;
        }
        match self.tx_timer.reset(self.handler.tx_poll_interval(), None) {
            Ok(()) => self.tx_timer_armed = true,
            Err(e) => {
                tracing::warn!("virtio-net transmit timer: {e}");
                self.handler.tx_timer_expired();
            }
        }
    }

    /// Registers, modifies or removes the backend in the epoll set to match what
    /// the handler can use now.
    fn update_backend_interest(&mut self) -> io::Result<()> {
        let wanted = self.handler.backend_interest();
        if wanted == self.registered {
            return Ok(());
        }
        let fd = self.handler.backend().fd().as_raw_fd();
        match (self.registered, wanted) {
            (None, Some(events)) => {
                self.epoll.ctl(ControlOperation::Add, fd, EpollEvent::new(events, BACKEND_TOKEN))?
            }
            (Some(_), Some(events)) => self.epoll.ctl(
                ControlOperation::Modify,
                fd,
                EpollEvent::new(events, BACKEND_TOKEN),
            )?,
            (Some(_), None) => {
                // Whatever happens, stop trying: the fd is not to be polled again.
                self.registered = None;
                self.epoll.ctl(ControlOperation::Delete, fd, EpollEvent::default())?
            }
            (None, None) => {}
        }
        self.registered = wanted;
        Ok(())
    }
}
