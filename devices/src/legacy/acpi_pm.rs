//! ACPI hardware-reduced power control: the FADT's sleep control register (S5 = power
//! off) and reset register point at these ports.

use crate::bus::BusDevice;
use crate::power::{PowerRequest, PowerRequestSink};

/// Base port of the block: +0 sleep control, +1 sleep status, +2 reset.
pub const ACPI_PM_PORT: u16 = 0x600;
/// Ports decoded.
pub const ACPI_PM_PORT_COUNT: u64 = 3;
/// Offset of the sleep control register.
pub const SLEEP_CONTROL_OFFSET: u64 = 0;
/// Offset of the sleep status register.
pub const SLEEP_STATUS_OFFSET: u64 = 1;
/// Offset of the reset register.
pub const RESET_OFFSET: u64 = 2;
/// Value the guest writes to the reset register.
pub const RESET_VALUE: u8 = 0x1;
/// SLP_TYP the DSDT's `_S5_` object advertises.
pub const S5_SLEEP_TYPE: u8 = 5;

const SLP_EN: u8 = 1 << 5;
const SLP_TYP_SHIFT: u8 = 2;
const SLP_TYP_MASK: u8 = 0x7;

/// The power-control register block.
pub struct AcpiPmControl {
    power: PowerRequestSink,
}

impl AcpiPmControl {
    /// A block reporting to `power`.
    pub fn new(power: PowerRequestSink) -> Self {
        Self { power }
    }
}

impl BusDevice for AcpiPmControl {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        match offset {
            SLEEP_CONTROL_OFFSET => {
                let sleep_type = (value >> SLP_TYP_SHIFT) & SLP_TYP_MASK;
                if value & SLP_EN != 0 && sleep_type == S5_SLEEP_TYPE {
                    (self.power)(PowerRequest::PowerOff);
                }
            }
            RESET_OFFSET if value == RESET_VALUE => (self.power)(PowerRequest::Reset),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn device() -> (AcpiPmControl, Arc<Mutex<Vec<PowerRequest>>>) {
        let seen = Arc::new(Mutex::new(vec![]));
        let s = seen.clone();
        (AcpiPmControl::new(Arc::new(move |r| s.lock().unwrap().push(r))), seen)
    }

    #[test]
    fn s5_with_slp_en_powers_off() {
        let (mut dev, seen) = device();
        dev.write(SLEEP_CONTROL_OFFSET, &[(S5_SLEEP_TYPE << 2) | SLP_EN]);
        assert_eq!(*seen.lock().unwrap(), vec![PowerRequest::PowerOff]);
    }

    #[test]
    fn other_sleep_states_and_values_are_ignored() {
        let (mut dev, seen) = device();
        dev.write(SLEEP_CONTROL_OFFSET, &[S5_SLEEP_TYPE << 2]); // no SLP_EN
        dev.write(SLEEP_CONTROL_OFFSET, &[(3 << 2) | SLP_EN]); // S3
        dev.write(RESET_OFFSET, &[0x2]);
        assert!(seen.lock().unwrap().is_empty());
        dev.write(RESET_OFFSET, &[RESET_VALUE]);
        assert_eq!(*seen.lock().unwrap(), vec![PowerRequest::Reset]);
    }
}
