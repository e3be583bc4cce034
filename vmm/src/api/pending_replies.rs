//! The requests handed to the machine whose last reply is not written to its client
//! yet. tern waits for them (a bounded while) before it exits, so a client whose
//! request ended the machine (`migrate`, `snapshot --stop`, `shutdown`) still reads the
//! answer the machine gave it just before the end.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use devices::sync::lock;

/// Counts the replies still to be written.
#[derive(Debug, Default)]
pub struct PendingReplies {
    count: Mutex<usize>,
    written: Condvar,
}

/// One request's place in the count, from before it is handed to the machine until
/// its last reply is written (or cannot be); dropping it takes the place back.
#[derive(Debug)]
pub struct PendingReply {
    of: Arc<PendingReplies>,
}

impl PendingReplies {
    /// Counts a request about to be handed to the machine.
    pub fn begin(self: &Arc<Self>) -> PendingReply {
        *lock(&self.count) += 1;
        PendingReply { of: self.clone() }
    }

    /// Waits until no reply is pending or `timeout` passed; whether none is.
    pub fn wait_written(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut count = lock(&self.count);
        while *count > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            count = self.written.wait_timeout(count, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        true
    }
}

impl Drop for PendingReply {
    fn drop(&mut self) {
        let mut count = lock(&self.of.count);
        *count = count.saturating_sub(1);
        self.of.written.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_ends_when_the_last_reply_is_written_or_at_the_timeout() {
        let pending = Arc::new(PendingReplies::default());
        assert!(pending.wait_written(Duration::ZERO), "nothing pending");
        let (a, b) = (pending.begin(), pending.begin());
        let started = Instant::now();
        assert!(!pending.wait_written(Duration::from_millis(50)));
        assert!(started.elapsed() >= Duration::from_millis(50));
        drop(a);
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(b);
        });
        let started = Instant::now();
        assert!(pending.wait_written(Duration::from_secs(10)));
        assert!(started.elapsed() < Duration::from_secs(5), "woken by the last reply, not the timeout");
        writer.join().unwrap();
    }
}
