//! Boot-timer debug port: the guest writes a byte, tern logs the time since start.
//!
//! The default guest's init writes here (through /dev/port) when it reaches userspace,
//! so boot time is measured by the VMM itself, not by parsing console text.

use std::time::Instant;

use crate::bus::BusDevice;

/// The port the guest writes to (QEMU's debugcon port, unused otherwise).
pub const DEBUG_PORT: u16 = 0x402;

/// Records when the guest wrote each value.
pub struct DebugPort {
    start: Instant,
    marks: Vec<(u8, std::time::Duration)>,
}

impl DebugPort {
    /// A port measuring from `start` (the VMM's own start time).
    pub fn new(start: Instant) -> Self {
        Self { start, marks: Vec::new() }
    }

    /// Every value written so far with its time since start.
    pub fn marks(&self) -> &[(u8, std::time::Duration)] {
        &self.marks
    }
}

impl BusDevice for DebugPort {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        let elapsed = self.start.elapsed();
        // Keep a bounded history: a guest looping on the port must not grow memory.
        if self.marks.len() < 256 {
            self.marks.push((value, elapsed));
        }
        tracing::info!(target: "boot_timer", value, ms = elapsed.as_millis() as u64, "guest debug-port mark");
        eprintln!("tern: guest boot mark {value:#04x} at {} ms", elapsed.as_millis());
    }
}
