//! Auto-converge: slows a guest that dirties memory faster than the link drains it, by
//! parking its vCPUs for a share of every period.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::vcpu::set::VcpuSet;

/// Length of one throttle period.
const PERIOD: Duration = Duration::from_millis(20);

/// A running throttle; dropping it (or `stop`) lets the vCPUs run freely.
pub struct Throttle {
    percent: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Throttle {
    /// Starts the throttle thread at 0%.
    pub fn start(vcpus: Arc<VcpuSet>) -> Self {
        let percent = Arc::new(AtomicU8::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (percent.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("migration-throttle".into())
            .spawn(move || {
                if let Err(e) = tern_seccomp::confine(tern_seccomp::ThreadClass::MigrationThrottle) {
                    tracing::warn!("migration throttle not started: {e}");
                    return;
                }
                while !s.load(Ordering::SeqCst) {
                    let share = u32::from(p.load(Ordering::SeqCst).min(99));
                    if share == 0 {
                        std::thread::sleep(PERIOD);
                        continue;
                    }
                    if let Err(e) = vcpus.pause() {
                        // The pause undid itself. A vCPU that cannot park would make every
                        // period cost the whole deadline: stop throttling (the final pause
                        // fails the migration if the vCPU is still stuck then).
                        tracing::warn!("migration throttle: pause failed: {e}");
                        break;
                    }
                    std::thread::sleep(PERIOD * share / 100);
                    vcpus.resume();
                    std::thread::sleep(PERIOD * (100 - share) / 100);
                }
            })
            .ok();
        Self { percent, stop, thread }
    }

    /// Sets the share of vCPU time taken away, in percent.
    pub fn set(&self, percent: u8) {
        self.percent.store(percent, Ordering::SeqCst);
    }

    /// Stops throttling; returns once the vCPUs run unthrottled.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        self.shutdown();
    }
}
