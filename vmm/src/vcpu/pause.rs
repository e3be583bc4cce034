//! Pause/resume of all vCPUs: kick each vCPU thread out of KVM_RUN with a signal and
//! park it until resumed. Migration and state capture build on this.
//!
//! A kick can race with a vCPU about to enter KVM_RUN (the signal lands before the
//! ioctl and is lost), so `pause` re-kicks every millisecond until every vCPU thread
//! reports parked. Parking happens only between KVM_RUN calls, so once `pause`
//! returns no vCPU is executing guest code.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use devices::sync::lock;

/// Shared pause state between the controller and the vCPU threads.
#[derive(Default)]
pub struct PauseControl {
    state: Mutex<PauseState>,
    changed: Condvar,
}

#[derive(Default)]
struct PauseState {
    pause_requested: bool,
    stop_requested: bool,
    /// vCPU threads currently parked.
    parked: usize,
    /// vCPU threads still running their loop.
    alive: usize,
}

/// What a vCPU thread should do after a check-in.
#[derive(Debug, PartialEq, Eq)]
pub enum CheckIn {
    /// Keep running guest code.
    Run,
    /// Leave the loop: the machine is stopping.
    Stop,
}

impl PauseControl {
    /// A controller with no vCPUs registered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Called by each vCPU thread when it starts.
    pub fn register_vcpu(&self) {
        lock(&self.state).alive += 1;
        self.changed.notify_all();
    }

    /// Called by each vCPU thread when its loop ends.
    pub fn unregister_vcpu(&self) {
        lock(&self.state).alive -= 1;
        self.changed.notify_all();
    }

    /// Called by vCPU threads between KVM_RUN calls: parks while a pause is requested.
    pub fn check_in(&self) -> CheckIn {
        let mut state = lock(&self.state);
        if state.pause_requested && !state.stop_requested {
            state.parked += 1;
            self.changed.notify_all();
            while state.pause_requested && !state.stop_requested {
                state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
            }
            state.parked -= 1;
            self.changed.notify_all();
        }
        if state.stop_requested { CheckIn::Stop } else { CheckIn::Run }
    }

    /// Whether the vCPU thread should leave KVM_RUN now (pause or stop pending).
    pub fn wants_exit(&self) -> bool {
        let state = lock(&self.state);
        state.pause_requested || state.stop_requested
    }

    /// Requests a pause and waits until every live vCPU is parked, calling `kick`
    /// (which signals the vCPU threads) until they are.
    pub fn pause(&self, mut kick: impl FnMut()) {
        let mut state = lock(&self.state);
        state.pause_requested = true;
        while state.parked < state.alive && !state.stop_requested {
            drop(state);
            kick();
            state = lock(&self.state);
            let (s, _) = self
                .changed
                .wait_timeout(state, Duration::from_millis(1))
                .unwrap_or_else(|p| p.into_inner());
            state = s;
        }
    }

    /// Lets parked vCPUs run again and waits until all have left the park.
    pub fn resume(&self) {
        let mut state = lock(&self.state);
        state.pause_requested = false;
        self.changed.notify_all();
        while state.parked > 0 {
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Whether a pause is in effect.
    pub fn is_paused(&self) -> bool {
        lock(&self.state).pause_requested
    }

    /// Asks every vCPU loop to end; the caller kicks and joins the threads.
    pub fn request_stop(&self) {
        lock(&self.state).stop_requested = true;
        self.changed.notify_all();
    }

    /// Number of vCPU threads still in their loop.
    pub fn alive(&self) -> usize {
        lock(&self.state).alive
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    #[test]
    fn pause_parks_all_threads_and_resume_releases_them() {
        let control = Arc::new(PauseControl::new());
        let counter = Arc::new(AtomicU64::new(0));
        let mut threads = vec![];
        for _ in 0..3 {
            control.register_vcpu();
            let (c, n) = (control.clone(), counter.clone());
            threads.push(std::thread::spawn(move || {
                while c.check_in() == CheckIn::Run {
                    n.fetch_add(1, Ordering::SeqCst);
                    std::thread::yield_now();
                }
                c.unregister_vcpu();
            }));
        }
        std::thread::sleep(Duration::from_millis(10));
        control.pause(|| {});
        let frozen = counter.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(counter.load(Ordering::SeqCst), frozen, "no progress while paused");
        control.resume();
        std::thread::sleep(Duration::from_millis(20));
        assert!(counter.load(Ordering::SeqCst) > frozen, "progress after resume");
        control.request_stop();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(control.alive(), 0);
    }
}
