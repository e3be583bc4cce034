//! A cap on concurrent control-API connections: each connection holds a slot for as
//! long as it is served; the slot is released when the slot value is dropped, on
//! every path out of the connection (end of input, write error, unwinding).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Counts the connections being served, up to a maximum.
#[derive(Clone, Debug)]
pub struct ConnectionLimit {
    in_use: Arc<AtomicUsize>,
    max: usize,
}

/// One connection's place under the limit; dropping it frees the place.
#[derive(Debug)]
pub struct ConnectionSlot {
    in_use: Arc<AtomicUsize>,
}

impl ConnectionLimit {
    /// A limit of `max` concurrent connections.
    pub fn new(max: usize) -> Self {
        Self { in_use: Arc::new(AtomicUsize::new(0)), max }
    }

    /// The most connections served at once.
    pub fn max(&self) -> usize {
        self.max
    }

    /// A slot, or `None` when `max` connections are already being served.
    pub fn try_acquire(&self) -> Option<ConnectionSlot> {
        self.in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1))
            .ok()
            .map(|_| ConnectionSlot { in_use: self.in_use.clone() })
    }

    /// Connections being served now.
    #[cfg(test)]
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Acquire)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.in_use.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_run_out_at_the_limit_and_come_back_when_dropped() {
        let limit = ConnectionLimit::new(2);
        let a = limit.try_acquire().unwrap();
        let b = limit.try_acquire().unwrap();
        assert!(limit.try_acquire().is_none(), "a third slot beyond a limit of 2");
        assert_eq!(limit.in_use(), 2);
        drop(a);
        let c = limit.try_acquire().expect("a freed slot is available again");
        drop((b, c));
        assert_eq!(limit.in_use(), 0);
    }

    #[test]
    fn a_slot_held_by_a_thread_that_unwinds_is_released() {
        let limit = ConnectionLimit::new(1);
        let slot = limit.try_acquire().unwrap();
        let t = std::thread::spawn(move || {
            let _slot = slot;
            panic!("connection handler failure");
        });
        assert!(t.join().is_err());
        assert_eq!(limit.in_use(), 0);
        assert!(limit.try_acquire().is_some());
    }
}
