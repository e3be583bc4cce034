//! Hooks for the fuzz targets (cargo feature `fuzzing`, never enabled by tern
//! itself): the request path of a disk run synchronously on the caller's thread,
//! exactly as the worker runs it on a queue notification.

use virtio_queue::Queue;

use super::Block;
use crate::virtio::{GuestMemoryMmap, VirtioDevice};

/// What one [`process_queue`] call left behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pass {
    /// Completed requests need an interrupt to the driver.
    pub interrupt: bool,
    /// The budget ran out with requests possibly still available.
    pub pending: bool,
}

/// Serves at most `budget` available requests of `queue` for a driver that
/// acknowledged `acked_features` (masked with what `block` offers, as activation
/// does). `Err` is a queue-level failure: the worker would mark the device as
/// needing a reset.
pub fn process_queue(
    block: &Block,
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    acked_features: u64,
    budget: usize,
) -> Result<Pass, String> {
    let acked = acked_features & block.offered_features();
    block
        .request_handler(acked)
        .process_queue(queue, mem, budget)
        .map(|drained| Pass { interrupt: drained.interrupt, pending: drained.pending })
        .map_err(|e| e.to_string())
}
