//! Optional tally of the exits that reach tern (by kind and port or MMIO page), logged
//! when the vCPU thread ends. Off unless `RUST_LOG` enables `exit_profile=debug`; used
//! by the rig's boot-profile scenario to see what a boot costs.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kvm_ioctls::VcpuExit;

/// How many of the most frequent exits the log line names.
const TOP: usize = 12;

/// Exit counts of one vCPU; a no-op when profiling is off.
pub struct ExitProfile {
    vcpu: u8,
    counts: Option<HashMap<(&'static str, u64), u64>>,
    /// When KVM_RUN last returned, and the time spent in tern between runs.
    returned_at: Option<Instant>,
    in_tern: Duration,
}

impl ExitProfile {
    pub fn new(vcpu: u8) -> Self {
        let enabled = tracing::enabled!(target: "exit_profile", tracing::Level::DEBUG);
        ExitProfile { vcpu, counts: enabled.then(HashMap::new), returned_at: None, in_tern: Duration::ZERO }
    }

    /// KVM_RUN is about to be called: closes the time spent in tern since it returned.
    pub fn entering(&mut self) {
        if let Some(at) = self.returned_at.take() {
            self.in_tern += at.elapsed();
        }
    }

    /// KVM_RUN returned.
    pub fn returned(&mut self) {
        if self.counts.is_some() {
            self.returned_at = Some(Instant::now());
        }
    }

    /// Counts one exit KVM returned.
    pub fn record(&mut self, exit: &VcpuExit) {
        let Some(counts) = &mut self.counts else { return };
        let key = match exit {
            VcpuExit::IoIn(port, _) => ("in", u64::from(*port)),
            VcpuExit::IoOut(port, _) => ("out", u64::from(*port)),
            VcpuExit::MmioRead(addr, _) => ("mmio-read", addr & !0xfff),
            VcpuExit::MmioWrite(addr, _) => ("mmio-write", addr & !0xfff),
            _ => ("other", 0),
        };
        *counts.entry(key).or_insert(0) += 1;
    }

    /// Counts a KVM_RUN that returned because of a signal (kick, timer).
    pub fn record_interrupted(&mut self) {
        if let Some(counts) = &mut self.counts {
            *counts.entry(("interrupted", 0)).or_insert(0) += 1;
        }
    }
}

impl Drop for ExitProfile {
    fn drop(&mut self) {
        let Some(counts) = &self.counts else { return };
        let total: u64 = counts.values().sum();
        let mut sorted: Vec<_> = counts.iter().collect();
        sorted.sort_by(|a, b| b.1.cmp(a.1));
        let top: Vec<String> =
            sorted.iter().take(TOP).map(|((kind, at), n)| format!("{kind}:{at:#x}={n}")).collect();
        let in_tern_us = self.in_tern.as_micros() as u64;
        tracing::debug!(target: "exit_profile", vcpu = self.vcpu, total, in_tern_us, top = %top.join(" "), "exits that reached tern");
    }
}
