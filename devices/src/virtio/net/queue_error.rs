//! Queue-level failures: the ring itself is unusable and the device needs a reset
//! (as opposed to one bad chain, which is dropped and counted).

/// Why a queue cannot be served any more.
#[derive(Debug, thiserror::Error)]
pub(crate) enum QueueError {
    /// virtio-queue refused the ring (e.g. the available index jumped by more than
    /// the queue size, or a used-ring write failed).
    #[error("virtio queue: {0}")]
    Queue(#[from] virtio_queue::Error),
    /// The available index says there is work but no chain can be read.
    #[error("available ring announces chains that cannot be read")]
    Stalled,
}

/// Consecutive passes without progress tolerated while the ring says work is
/// pending (a benign race with the driver publishing a chain looks like one).
pub(crate) const MAX_IDLE_PASSES: u32 = 4;
