//! Pause/resume of all vCPUs: kick each vCPU thread out of KVM_RUN with a signal and
//! park it until resumed. Migration and state capture build on this.
//!
//! A kick can race with a vCPU about to enter KVM_RUN (the signal lands before the
//! ioctl and is lost), so `pause` re-kicks every millisecond until every vCPU thread
//! reports parked. Parking happens only between KVM_RUN calls, so once `pause`
//! returns no vCPU is executing guest code.
//!
//! A vCPU that never parks (stuck in a device handler, say) must not hang the caller:
//! `pause` gives up after [`PAUSE_DEADLINE`], lets the parked vCPUs run again and
//! names the ones that did not park. Each vCPU thread holds a [`VcpuRegistration`]
//! for as long as it runs; dropping it (the loop ended, or the thread unwound) takes
//! the vCPU out of the set a pause waits for.

use std::collections::BTreeSet;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use devices::sync::lock;

/// How long `pause` waits for every vCPU to park before it gives up. A healthy vCPU
/// parks within microseconds of its kick (at most one guest exit's handling later);
/// five seconds only runs out when a vCPU thread is stuck.
pub const PAUSE_DEADLINE: Duration = Duration::from_secs(5);

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
    /// Indexes of the vCPU threads currently parked.
    parked: BTreeSet<u8>,
    /// Indexes of the vCPU threads still running their loop.
    alive: BTreeSet<u8>,
}

impl PauseState {
    /// Live vCPUs not parked yet, in index order.
    fn not_parked(&self) -> Vec<u8> {
        self.alive.difference(&self.parked).copied().collect()
    }
}

/// What a vCPU thread should do after a check-in.
#[derive(Debug, PartialEq, Eq)]
pub enum CheckIn {
    /// Keep running guest code.
    Run,
    /// Leave the loop: the machine is stopping.
    Stop,
}

/// A pause that ran out of time; the vCPUs that did park were let run again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} did not park within {}", vcpu_list(.vcpus), duration_text(*.deadline))]
pub struct PauseError {
    /// The vCPUs that never parked, in index order.
    pub vcpus: Vec<u8>,
    /// How long the pause waited.
    pub deadline: Duration,
}

fn vcpu_list(vcpus: &[u8]) -> String {
    let list = vcpus.iter().map(u8::to_string).collect::<Vec<_>>().join(", ");
    if vcpus.len() == 1 { format!("vCPU {list}") } else { format!("vCPUs {list}") }
}

fn duration_text(d: Duration) -> String {
    if d.subsec_nanos() == 0 { format!("{} s", d.as_secs()) } else { format!("{} ms", d.as_millis()) }
}

/// A vCPU's membership in the pause set; dropping it unregisters the vCPU, so a vCPU
/// thread that ends for any reason (including a panic unwinding) is not waited for.
pub struct VcpuRegistration {
    control: Arc<PauseControl>,
    index: u8,
}

impl VcpuRegistration {
    /// The vCPU this registration is for.
    pub fn index(&self) -> u8 {
        self.index
    }

    /// Checks in for this vCPU; see [`PauseControl::check_in`].
    pub fn check_in(&self) -> CheckIn {
        self.control.check_in(self.index)
    }
}

impl Drop for VcpuRegistration {
    fn drop(&mut self) {
        let mut state = lock(&self.control.state);
        state.alive.remove(&self.index);
        state.parked.remove(&self.index);
        drop(state);
        self.control.changed.notify_all();
    }
}

impl PauseControl {
    /// A controller with no vCPUs registered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers vCPU `index` (before its thread starts); the vCPU counts until the
    /// returned registration is dropped.
    pub fn register_vcpu(self: &Arc<Self>, index: u8) -> VcpuRegistration {
        lock(&self.state).alive.insert(index);
        self.changed.notify_all();
        VcpuRegistration { control: self.clone(), index }
    }

    /// Called by vCPU thread `index` between KVM_RUN calls: parks while a pause is
    /// requested.
    fn check_in(&self, index: u8) -> CheckIn {
        let mut state = lock(&self.state);
        if state.pause_requested && !state.stop_requested {
            state.parked.insert(index);
            self.changed.notify_all();
            while state.pause_requested && !state.stop_requested {
                state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
            }
            state.parked.remove(&index);
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
    /// (which signals the vCPU threads) until they are, for at most [`PAUSE_DEADLINE`].
    pub fn pause(&self, kick: impl FnMut()) -> Result<(), PauseError> {
        self.pause_within(PAUSE_DEADLINE, kick)
    }

    /// [`PauseControl::pause`] with a given deadline. On time-out the pause is undone
    /// (parked vCPUs run again) and the error names the vCPUs that did not park.
    pub fn pause_within(&self, deadline: Duration, mut kick: impl FnMut()) -> Result<(), PauseError> {
        let give_up_at = Instant::now() + deadline;
        let mut state = lock(&self.state);
        state.pause_requested = true;
        while !state.stop_requested && !state.alive.is_subset(&state.parked) {
            if Instant::now() >= give_up_at {
                let vcpus = state.not_parked();
                drop(state);
                self.resume();
                return Err(PauseError { vcpus, deadline });
            }
            drop(state);
            kick();
            state = lock(&self.state);
            let (s, _) = self
                .changed
                .wait_timeout(state, Duration::from_millis(1))
                .unwrap_or_else(|p| p.into_inner());
            state = s;
        }
        Ok(())
    }

    /// Lets parked vCPUs run again and waits until all have left the park.
    pub fn resume(&self) {
        let mut state = lock(&self.state);
        state.pause_requested = false;
        self.changed.notify_all();
        while !state.parked.is_empty() {
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
        lock(&self.state).alive.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::thread::JoinHandle;

    /// A fake vCPU thread: checks in and counts until told to stop.
    fn fake_vcpu(control: &Arc<PauseControl>, index: u8, counter: &Arc<AtomicU64>) -> JoinHandle<()> {
        let registration = control.register_vcpu(index);
        let n = counter.clone();
        std::thread::spawn(move || {
            while registration.check_in() == CheckIn::Run {
                n.fetch_add(1, Ordering::SeqCst);
                std::thread::yield_now();
            }
        })
    }

    #[test]
    fn pause_parks_all_threads_and_resume_releases_them() {
        let control = Arc::new(PauseControl::new());
        let counter = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..3).map(|i| fake_vcpu(&control, i, &counter)).collect();
        std::thread::sleep(Duration::from_millis(10));
        control.pause(|| {}).unwrap();
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

    #[test]
    fn a_vcpu_that_never_checks_in_fails_the_pause_by_name_and_the_others_run_on() {
        let control = Arc::new(PauseControl::new());
        let counter = Arc::new(AtomicU64::new(0));
        let runner = fake_vcpu(&control, 0, &counter);
        // vCPU 1 is registered but its "thread" never checks in (stuck in a handler).
        let stuck = control.register_vcpu(1);
        let started = Instant::now();
        let err = control.pause_within(Duration::from_millis(100), || {}).unwrap_err();
        let took = started.elapsed();
        assert_eq!(err.vcpus, vec![1]);
        assert_eq!(err.to_string(), "vCPU 1 did not park within 100 ms");
        assert!(took >= Duration::from_millis(100) && took < Duration::from_secs(2), "gave up after {took:?}");
        // The failed pause was undone: vCPU 0 runs again.
        assert!(!control.is_paused());
        let before = counter.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(20));
        assert!(counter.load(Ordering::SeqCst) > before, "vCPU 0 still parked after a failed pause");
        drop(stuck);
        control.request_stop();
        runner.join().unwrap();
    }

    #[test]
    fn the_error_names_every_missing_vcpu_with_the_default_deadline() {
        let one = PauseError { vcpus: vec![1], deadline: PAUSE_DEADLINE };
        assert_eq!(one.to_string(), "vCPU 1 did not park within 5 s");
        let two = PauseError { vcpus: vec![0, 3], deadline: PAUSE_DEADLINE };
        assert_eq!(two.to_string(), "vCPUs 0, 3 did not park within 5 s");
    }

    #[test]
    fn a_vcpu_thread_that_unwinds_unregisters_itself() {
        let control = Arc::new(PauseControl::new());
        let registration = control.register_vcpu(0);
        let dying = std::thread::spawn(move || {
            let _registration = registration;
            panic!("fake vCPU failure");
        });
        assert!(dying.join().is_err(), "the fake vCPU thread must have panicked");
        assert_eq!(control.alive(), 0);
        // Nothing left to wait for: the pause succeeds at once.
        let started = Instant::now();
        control.pause_within(Duration::from_secs(5), || {}).unwrap();
        assert!(started.elapsed() < Duration::from_secs(1));
        control.resume();
    }
}
