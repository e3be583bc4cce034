//! Guest power requests (power off, reset) and how devices report them to the VMM.

use std::sync::Arc;

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
