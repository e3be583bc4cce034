//! Guest power requests (power off, reset) and how devices report them to the VMM.

use std::sync::Arc;

use crate::interrupt::Interrupt;

/// What the guest asked the machine to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerRequest {
    /// ACPI S5 or equivalent: the guest is done.
    PowerOff,
    /// Keyboard-controller reset, ACPI reset register, or the 0xCF9 reset control.
    Reset,
}

/// Where devices send power requests. The VMM decides what a request means.
pub type PowerRequestSink = Arc<dyn Fn(PowerRequest) + Send + Sync>;

/// The GSI of the ACPI power button's Generic Event Device (ACPI0013, described in
/// the DSDT): unused by anything else on this machine.
pub const POWER_BUTTON_GSI: u32 = 9;

/// The power button of a hardware-reduced ACPI machine: a press raises the Generic
/// Event Device's interrupt, whose `_EVT` method notifies the power-button device
/// (PNP0C0C) with 0x80; the guest's ACPI button driver then reports KEY_POWER and its
/// init powers off (writing S5 to the sleep control register, as any power-off).
#[derive(Clone, Debug)]
pub struct PowerButton {
    interrupt: Interrupt,
}

impl PowerButton {
    /// A button raising `interrupt` (wired by the VMM to [`POWER_BUTTON_GSI`]).
    pub fn new(interrupt: Interrupt) -> Self {
        Self { interrupt }
    }

    /// Presses the button.
    pub fn press(&self) -> std::io::Result<()> {
        self.interrupt.trigger()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_press_raises_the_interrupt_once_per_press() {
        let interrupt = Interrupt::new().unwrap();
        let button = PowerButton::new(interrupt.clone());
        assert!(interrupt.event().read().is_err(), "nothing pending before a press");
        button.press().unwrap();
        assert_eq!(interrupt.event().read().unwrap(), 1);
        button.press().unwrap();
        button.press().unwrap();
        assert_eq!(interrupt.event().read().unwrap(), 2);
    }
}
