//! How long a polled transmit ring waits for its next poll (see
//! `NetHandler::poll_tx`). The interval adapts so that a poll finds a batch:
//! a slow sender (a guest whose every exit is expensive, as in nested
//! virtualisation) gets the long interval, which lets its stack coalesce more data
//! per segment and spares it an exit per frame; a fast sender that fills the ring
//! between polls gets shorter ones, so its frames do not queue up behind the timer
//! and its TCP small-queue budget (about 1 ms of data) never runs dry.
//!
//! Measured in the nested rig (same L1, 128-byte TCP_STREAM, tern / QEMU
//! userspace, fixed intervals): 200 us 0.65, 500 us 1.34, 1000 us 1.6.

use std::time::Duration;

/// The longest wait: what a slow sender gets.
pub(crate) const LONGEST: Duration = Duration::from_micros(1000);
/// The shortest wait: what a sender that keeps filling the ring gets.
pub(crate) const SHORTEST: Duration = Duration::from_micros(50);
/// A poll finding at least this many frames halves the interval.
const LARGE_BATCH: usize = 64;
/// A poll finding at most this many frames doubles it.
const SMALL_BATCH: usize = 8;

/// See the module docs.
#[derive(Debug)]
pub(crate) struct TxPollInterval {
    current: Duration,
}

impl TxPollInterval {
    pub(crate) fn new() -> Self {
        Self { current: LONGEST }
    }

    /// How long to wait before the next poll.
    pub(crate) fn get(&self) -> Duration {
        self.current
    }

    /// A timer poll found `frames` frames waiting.
    pub(crate) fn after_poll(&mut self, frames: usize) {
        if frames >= LARGE_BATCH {
            self.current = (self.current / 2).max(SHORTEST);
        } else if frames <= SMALL_BATCH {
            self.current = (self.current * 2).min(LONGEST);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_senders_get_short_intervals_and_slow_ones_long_intervals() {
        let mut interval = TxPollInterval::new();
        assert_eq!(interval.get(), LONGEST);
        interval.after_poll(2);
        assert_eq!(interval.get(), LONGEST, "never longer than the longest");
        interval.after_poll(200);
        assert_eq!(interval.get(), LONGEST / 2);
        for _ in 0..20 {
            interval.after_poll(256);
        }
        assert_eq!(interval.get(), SHORTEST, "never shorter than the shortest");
        interval.after_poll(30);
        assert_eq!(interval.get(), SHORTEST, "a medium batch keeps the interval");
        interval.after_poll(1);
        assert_eq!(interval.get(), SHORTEST * 2);
    }
}
