//! The disk's worker thread: waits on the queue notification eventfd and a kill
//! eventfd, drains the queue on every notification and interrupts the driver when
//! virtio's suppression rules ask for it.

use std::io;
use std::os::unix::io::AsRawFd;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use virtio_queue::{Queue, QueueState, QueueT};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::handler::RequestHandler;
use super::QUEUE_MAX_SIZE;
use crate::sync::lock;
use crate::virtio::{GuestMemoryMmap, VirtioInterrupt};

const NOTIFY_TOKEN: u64 = 0;
const KILL_TOKEN: u64 = 1;
/// Requests served between two looks at the kill eventfd.
const REQUEST_BUDGET: usize = QUEUE_MAX_SIZE as usize;

/// What the worker thread needs.
pub(crate) struct WorkerContext {
    /// Thread name (`virtio-blk-<n>`).
    pub name: String,
    pub handler: RequestHandler,
    pub mem: GuestMemoryMmap,
    pub queue: Queue,
    pub notify: EventFd,
    pub interrupt: Arc<dyn VirtioInterrupt>,
}

/// A running worker thread and the queue it serves.
pub(crate) struct Worker {
    kill: EventFd,
    thread: Option<JoinHandle<WorkerThread>>,
    queue: Arc<Mutex<Queue>>,
}

/// What a parked worker leaves behind, enough to start it again unchanged.
pub(crate) struct ParkedWorker {
    pub queue: Queue,
    pub notify: EventFd,
    pub mem: GuestMemoryMmap,
    pub interrupt: Arc<dyn VirtioInterrupt>,
}

impl Worker {
    /// Starts the thread. Fails (without starting anything) when the eventfds or
    /// the epoll set cannot be created, or the thread cannot be spawned.
    pub(crate) fn spawn(ctx: WorkerContext) -> io::Result<Self> {
        let kill = EventFd::new(EFD_NONBLOCK)?;
        let epoll = Epoll::new()?;
        epoll.ctl(
            ControlOperation::Add,
            ctx.notify.as_raw_fd(),
            EpollEvent::new(EventSet::IN, NOTIFY_TOKEN),
        )?;
        epoll.ctl(
            ControlOperation::Add,
            kill.as_raw_fd(),
            EpollEvent::new(EventSet::IN, KILL_TOKEN),
        )?;
        let queue = Arc::new(Mutex::new(ctx.queue));
        let mut thread = WorkerThread {
            epoll,
            handler: ctx.handler,
            mem: ctx.mem,
            queue: queue.clone(),
            notify: ctx.notify,
            interrupt: ctx.interrupt,
            broken: false,
        };
        let handle = std::thread::Builder::new().name(ctx.name).spawn(move || {
            // Before the first request: requests are the guest's.
            match tern_seccomp::confine(tern_seccomp::ThreadClass::BlockWorker) {
                Ok(()) => thread.run(),
                Err(e) => tracing::error!("virtio-blk worker not started: {e}"),
            }
            thread
        })?;
        Ok(Self { kill, thread: Some(handle), queue })
    }

    /// A snapshot of the queue position (meaningful while the device is quiescent).
    pub(crate) fn queue_state(&self) -> QueueState {
        lock(&self.queue).state()
    }

    /// Stops the thread after the request it is serving, joins it and returns the
    /// queue's final state.
    pub(crate) fn stop(mut self) -> QueueState {
        self.shutdown();
        lock(&self.queue).state()
    }

    /// Stops the thread after the request it is serving and hands back everything
    /// needed to start it again (migration parks workers this way).
    pub(crate) fn park(mut self) -> Option<ParkedWorker> {
        let thread = self.join()?;
        let queue = std::mem::replace(&mut *lock(&self.queue), Queue::new(QUEUE_MAX_SIZE).ok()?);
        Some(ParkedWorker { queue, notify: thread.notify, mem: thread.mem, interrupt: thread.interrupt })
    }

    fn join(&mut self) -> Option<WorkerThread> {
        let handle = self.thread.take()?;
        if let Err(e) = self.kill.write(1) {
            // Cannot happen with a valid eventfd short of a counter overflow; the
            // join below would hang, so leave the thread detached instead.
            tracing::error!("cannot stop virtio-blk worker: {e}");
            return None;
        }
        match handle.join() {
            Ok(thread) => Some(thread),
            Err(_) => {
                tracing::error!("virtio-blk worker panicked");
                None
            }
        }
    }

    fn shutdown(&mut self) {
        let _ = self.join();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct WorkerThread {
    epoll: Epoll,
    handler: RequestHandler,
    mem: GuestMemoryMmap,
    queue: Arc<Mutex<Queue>>,
    notify: EventFd,
    interrupt: Arc<dyn VirtioInterrupt>,
    /// The queue was found corrupt; ignore it until the driver resets the device.
    broken: bool,
}

impl WorkerThread {
    fn run(&mut self) {
        // Requests queued before activation would otherwise wait for the next kick.
        let mut pending = self.process();
        let mut events = [EpollEvent::default(); 2];
        loop {
            // With work left over, only poll: a stop request must not wait behind a
            // driver that keeps the queue full.
            let timeout = if pending { 0 } else { -1 };
            let count = match self.epoll.wait(timeout, &mut events) {
                Ok(count) => count,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!("virtio-blk worker: epoll_wait failed: {e}");
                    return;
                }
            };
            if events[..count].iter().any(|e| e.data() == KILL_TOKEN) {
                return;
            }
            if events[..count].iter().any(|e| e.data() == NOTIFY_TOKEN) {
                // Clears the counter; EAGAIN (already cleared) is harmless.
                let _ = self.notify.read();
                pending = self.process();
            } else if pending {
                pending = self.process();
            }
        }
    }

    /// Serves the queue once. Returns whether requests may be left over.
    fn process(&mut self) -> bool {
        if self.broken {
            return false;
        }
        let result = {
            let mut queue = lock(&self.queue);
            self.handler.process_queue(&mut queue, &self.mem, REQUEST_BUDGET)
        };
        match result {
            Ok(drained) => {
                if drained.interrupt {
                    if let Err(e) = self.interrupt.signal_queue(0) {
                        tracing::warn!("virtio-blk: cannot interrupt the driver: {e}");
                    }
                }
                drained.pending
            }
            Err(e) => {
                tracing::error!("virtio-blk: request queue unusable ({e}); device needs reset");
                self.broken = true;
                self.interrupt.set_needs_reset();
                false
            }
        }
    }
}
