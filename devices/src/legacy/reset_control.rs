//! The PC reset control register at port 0xCF9 (`reboot=pci` in Linux): bit 1 picks a
//! hard reset, bit 3 a full (power-cycle) reset, and setting bit 2 resets the machine.
//! Here every reset is the same restart, so bit 2 alone decides.

use crate::bus::BusDevice;
use crate::power::{PowerRequest, PowerRequestSink};

/// The register's port. It sits inside the PCI configuration-mechanism range
/// (0xCF8..0xCFF): a byte access at 0xCF9 is this register, a dword at 0xCF8 the
/// configuration address, as on a PC chipset.
pub const RESET_CONTROL_PORT: u16 = 0xcf9;
/// Bit 1: system reset (hard rather than soft), kept for read-back.
const SYS_RST: u8 = 1 << 1;
/// Bit 2: reset the CPU now.
pub const RST_CPU: u8 = 1 << 2;
/// Bit 3: full reset (power cycle), kept for read-back.
const FULL_RST: u8 = 1 << 3;

/// The reset control register.
pub struct ResetControl {
    /// SYS_RST and FULL_RST as last written (RST_CPU reads back 0: it acts and clears).
    value: u8,
    power: PowerRequestSink,
}

impl ResetControl {
    /// A register reporting resets to `power`.
    pub fn new(power: PowerRequestSink) -> Self {
        Self { value: 0, power }
    }
}

impl BusDevice for ResetControl {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset == 0 && data.len() == 1 {
            data[0] = self.value;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let (0, &[value]) = (offset, data) else { return };
        self.value = value & (SYS_RST | FULL_RST);
        if value & RST_CPU != 0 {
            (self.power)(PowerRequest::Reset);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn device() -> (ResetControl, Arc<Mutex<Vec<PowerRequest>>>) {
        let seen = Arc::new(Mutex::new(vec![]));
        let s = seen.clone();
        (ResetControl::new(Arc::new(move |r| s.lock().unwrap().push(r))), seen)
    }

    #[test]
    fn linux_reboot_pci_sequence_resets_once_at_the_second_write() {
        let (mut dev, seen) = device();
        let mut b = [0xffu8];
        dev.read(0, &mut b);
        assert_eq!(b[0], 0);
        // arch/x86/kernel/reboot.c: cf9|2 (select hard reset), then cf9|6 (reset).
        dev.write(0, &[SYS_RST]);
        assert!(seen.lock().unwrap().is_empty());
        dev.read(0, &mut b);
        assert_eq!(b[0], SYS_RST);
        dev.write(0, &[SYS_RST | RST_CPU]);
        assert_eq!(*seen.lock().unwrap(), vec![PowerRequest::Reset]);
        // The cold variant (0x0E) resets too.
        dev.write(0, &[SYS_RST | RST_CPU | FULL_RST]);
        assert_eq!(seen.lock().unwrap().len(), 2);
        dev.read(0, &mut b);
        assert_eq!(b[0], SYS_RST | FULL_RST, "RST_CPU reads back clear");
    }

    #[test]
    fn writes_without_rst_cpu_or_of_the_wrong_size_do_nothing() {
        let (mut dev, seen) = device();
        dev.write(0, &[SYS_RST | FULL_RST]);
        dev.write(0, &[RST_CPU, 0]);
        dev.write(1, &[RST_CPU]);
        assert!(seen.lock().unwrap().is_empty());
        dev.write(0, &[RST_CPU]);
        assert_eq!(*seen.lock().unwrap(), vec![PowerRequest::Reset]);
    }
}
