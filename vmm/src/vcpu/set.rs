//! All vCPUs of a machine: their fds, threads and pause control, shareable between the
//! machine's owner thread and a migration thread.

use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use devices::bus::Bus;
use devices::sync::lock;
use kvm_ioctls::VcpuFd;

use super::coalesced_console::ConsoleLink;
use super::pause::{PauseControl, PauseError};
use super::{install_kick_handler, kick, spawn, VcpuContext};
use crate::events::VmEvent;

/// The vCPUs; see the module docs.
pub struct VcpuSet {
    fds: Vec<Arc<Mutex<VcpuFd>>>,
    console: Option<Arc<ConsoleLink>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    pause: Arc<PauseControl>,
}

/// Errors starting vCPU threads.
#[derive(Debug, thiserror::Error)]
pub enum VcpuStartError {
    #[error("the vCPUs were already started")]
    AlreadyStarted,
    #[error("starting vCPU thread: {0}")]
    Thread(std::io::Error),
    #[error("installing the vCPU kick signal handler: {0}")]
    Signal(vmm_sys_util::errno::Error),
}

impl VcpuSet {
    /// Wraps configured (not yet running) vCPU fds, index order, with the console's
    /// coalesced-write ring when there is one.
    pub fn new(fds: Vec<VcpuFd>, console: Option<ConsoleLink>) -> Self {
        Self {
            fds: fds.into_iter().map(|fd| Arc::new(Mutex::new(fd))).collect(),
            console: console.map(Arc::new),
            threads: Mutex::new(Vec::new()),
            pause: Arc::new(PauseControl::new()),
        }
    }

    /// Replays console writes KVM has queued but no vCPU exit has drained yet (a
    /// guest idling in HLT, or one that printed a panic and stopped, exits no more).
    pub fn drain_console(&self, pio: &Bus) {
        if let Some(console) = &self.console {
            console.drain(pio);
        }
    }

    /// Console writes that went through KVM's coalesced ring (0 without one).
    pub fn coalesced_console_writes(&self) -> u64 {
        self.console.as_ref().map_or(0, |c| c.ring.replayed())
    }

    /// Number of vCPUs.
    pub fn len(&self) -> usize {
        self.fds.len()
    }

    /// Whether there are no vCPUs.
    pub fn is_empty(&self) -> bool {
        self.fds.is_empty()
    }

    /// The vCPU fds (lock one only while the vCPUs are paused or not started).
    pub fn fds(&self) -> &[Arc<Mutex<VcpuFd>>] {
        &self.fds
    }

    /// Starts one thread per vCPU.
    pub fn start(&self, pio: &Arc<Bus>, mmio: &Arc<Bus>, events: &Sender<VmEvent>) -> Result<(), VcpuStartError> {
        let mut threads = lock(&self.threads);
        if !threads.is_empty() {
            return Err(VcpuStartError::AlreadyStarted);
        }
        install_kick_handler().map_err(VcpuStartError::Signal)?;
        for (index, fd) in self.fds.iter().enumerate() {
            let ctx = VcpuContext {
                index: index as u8,
                fd: fd.clone(),
                pio: pio.clone(),
                mmio: mmio.clone(),
                pause: self.pause.clone(),
                events: events.clone(),
                console: self.console.clone(),
            };
            threads.push(spawn(ctx).map_err(VcpuStartError::Thread)?);
        }
        Ok(())
    }

    /// Parks every vCPU between instructions; returns once all are parked, or fails
    /// (with the pause undone) naming the vCPUs that did not park within
    /// [`super::pause::PAUSE_DEADLINE`].
    pub fn pause(&self) -> Result<(), PauseError> {
        self.pause.pause(|| lock(&self.threads).iter().for_each(kick))
    }

    /// Resumes parked vCPUs.
    pub fn resume(&self) {
        self.pause.resume();
    }

    /// Whether a pause is in effect.
    pub fn is_paused(&self) -> bool {
        self.pause.is_paused()
    }

    /// Ends every vCPU thread and joins it.
    pub fn stop(&self) {
        self.pause.request_stop();
        let mut threads = lock(&self.threads);
        while threads.iter().any(|t| !t.is_finished()) {
            threads.iter().for_each(kick);
            std::thread::sleep(Duration::from_millis(1));
        }
        for t in threads.drain(..) {
            let _ = t.join();
        }
    }
}
