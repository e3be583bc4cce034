//! Draining the request queue: pop chains, run them, return them to the driver,
//! and decide whether the driver needs an interrupt. The worker thread calls this
//! on every queue notification; tests call it directly.

use std::sync::Arc;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress};

use super::execute::execute;
use super::image::DiskImage;
use super::request::{parse, Limits, Parsed};
use super::SERIAL_LEN;
use crate::virtio::GuestMemoryMmap;

/// Queue-level failures: the ring itself is unusable and the device needs a reset.
#[derive(Debug, thiserror::Error)]
pub(crate) enum QueueError {
    /// virtio-queue refused the ring (e.g. the available index jumped by more than
    /// the queue size, or a used-ring write failed).
    #[error("virtio queue: {0}")]
    Queue(#[from] virtio_queue::Error),
    /// The available index says there is work but no chain can be read.
    #[error("available ring announces requests that cannot be read")]
    Stalled,
}

/// What one [`RequestHandler::process_queue`] call left behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Drained {
    /// Completed requests need an interrupt to the driver.
    pub interrupt: bool,
    /// The budget ran out with requests possibly still available.
    pub pending: bool,
}

/// Serves requests of one disk.
pub(crate) struct RequestHandler {
    disk: Arc<DiskImage>,
    serial: [u8; SERIAL_LEN],
    limits: Limits,
}

impl RequestHandler {
    /// A handler for `disk` under the features the driver acknowledged.
    pub(crate) fn new(disk: Arc<DiskImage>, serial: [u8; SERIAL_LEN], limits: Limits) -> Self {
        Self { disk, serial, limits }
    }

    /// Processes available requests, at most `budget` of them. Notifications are
    /// suppressed while draining; once the ring is empty they are re-enabled and
    /// the ring re-checked, so no request slips through. When the budget runs out
    /// first, notifications stay suppressed and [`Drained::pending`] tells the
    /// caller to come back (after checking whether it should stop).
    pub(crate) fn process_queue(
        &self,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
        budget: usize,
    ) -> Result<Drained, QueueError> {
        let mut completed = 0usize;
        let mut idle_passes = 0;
        let pending = 'drain: loop {
            queue.disable_notification(mem)?;
            let mut progressed = false;
            while let Some(chain) = queue.iter(mem)?.next() {
                let head = chain.head_index();
                let used_len = self.process_chain(chain, mem);
                queue.add_used(mem, head, used_len)?;
                progressed = true;
                completed += 1;
                if completed >= budget {
                    break 'drain true;
                }
            }
            if !queue.enable_notification(mem)? {
                break false;
            }
            // More work arrived. A pass that found nothing can be a benign race
            // (the driver published a chain just after we looked); several in a row
            // mean the index moved but the ring entry cannot be read.
            idle_passes = if progressed { 0 } else { idle_passes + 1 };
            if idle_passes > MAX_IDLE_PASSES {
                return Err(QueueError::Stalled);
            }
        };
        let interrupt = completed > 0 && queue.needs_notification(mem)?;
        Ok(Drained { interrupt, pending })
    }

    /// Runs one chain and writes its status. Returns the used length: bytes written
    /// into the driver's buffers, status byte included; 0 when no status could be
    /// written.
    fn process_chain(
        &self,
        chain: virtio_queue::DescriptorChain<&GuestMemoryMmap>,
        mem: &GuestMemoryMmap,
    ) -> u32 {
        let head = chain.head_index();
        let (status_addr, request) = match parse(chain, mem, &self.limits) {
            Parsed::Unanswerable(err) => {
                tracing::warn!(disk = %self.disk.path().display(), head, "dropping request: {err}");
                return 0;
            }
            Parsed::Answerable { status, request } => (status, request),
        };
        let (status, data_len) = match request
            .and_then(|req| execute(&req, mem, &self.disk, &self.serial))
        {
            Ok(len) => (STATUS_OK, len),
            Err(err) => {
                tracing::debug!(disk = %self.disk.path().display(), head, "request failed: {err}");
                (err.status(), 0)
            }
        };
        write_status(mem, status_addr, status).map_or(0, |()| data_len.saturating_add(1))
    }
}

/// Consecutive passes without progress tolerated while the ring says work is pending.
const MAX_IDLE_PASSES: u32 = 4;

/// VIRTIO_BLK_S_OK.
const STATUS_OK: u8 = virtio_bindings::virtio_blk::VIRTIO_BLK_S_OK as u8;

fn write_status(mem: &GuestMemoryMmap, addr: GuestAddress, status: u8) -> Result<(), ()> {
    mem.write_obj(status, addr).map_err(|_| {
        tracing::warn!("status byte at {:#x} is outside guest memory", addr.0);
    })
}
