//! Puts the legacy PC devices on the port bus and wires the UART's interrupt.

use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use devices::bus::{Bus, BusError};
use devices::interrupt::Interrupt;
use devices::legacy::{acpi_pm, cmos, debug_port, i8042, reset_control, serial, AcpiPmControl, Cmos, DebugPort, I8042, ResetControl, Serial};
use devices::power::{PowerRequest, PowerRequestSink};

use crate::events::VmEvent;

/// Handles to the legacy devices the VMM talks to after setup.
pub struct LegacyDevices {
    pub debug_port: Arc<Mutex<DebugPort>>,
    /// The 0xCF9 register: not on the bus yet, as it shares the PCI configuration
    /// ports when the machine has PCI ([`place_reset_control`] otherwise).
    pub reset_control: Arc<Mutex<ResetControl>>,
}

/// A power sink that turns guest power requests into machine events; `source` names
/// the device in the reset's reason.
pub fn power_sink(events: Sender<VmEvent>, source: &'static str) -> PowerRequestSink {
    let events = Mutex::new(events);
    Arc::new(move |request| {
        let event = match request {
            PowerRequest::PowerOff => VmEvent::PowerOff,
            PowerRequest::Reset => VmEvent::Reset { reason: format!("reset through the {source}") },
        };
        let _ = devices::sync::lock(&events).send(event);
    })
}

/// The COM1 UART and its interrupt. Made once per tern: the UART (reset to power-on
/// state at a reboot) outlives the machine's boots, as the console threads hold it.
pub fn new_serial(output: serial::SerialOutput) -> Result<(Arc<Mutex<Serial>>, Interrupt), LegacyError> {
    let interrupt = Interrupt::new().map_err(LegacyError::EventFd)?;
    Ok((Arc::new(Mutex::new(Serial::new(interrupt.clone(), output))), interrupt))
}

/// Creates the devices (power-on state) and inserts them, and `serial`, into `pio`.
pub fn add_legacy_devices(
    pio: &Bus,
    serial: &Arc<Mutex<Serial>>,
    events: Sender<VmEvent>,
    start: Instant,
) -> Result<LegacyDevices, LegacyError> {
    pio.insert(serial.clone(), u64::from(serial::COM1_PORT), serial::UART_PORT_COUNT)?;
    let keyboard = power_sink(events.clone(), "i8042 keyboard controller");
    pio.insert(Arc::new(Mutex::new(I8042::new(keyboard))), u64::from(i8042::I8042_PORT), i8042::I8042_PORT_COUNT)?;
    pio.insert(Arc::new(Mutex::new(Cmos::new())), u64::from(cmos::CMOS_PORT), cmos::CMOS_PORT_COUNT)?;
    let acpi = power_sink(events.clone(), "ACPI reset register");
    pio.insert(Arc::new(Mutex::new(AcpiPmControl::new(acpi))), u64::from(acpi_pm::ACPI_PM_PORT), acpi_pm::ACPI_PM_PORT_COUNT)?;
    let debug_port = Arc::new(Mutex::new(DebugPort::new(start)));
    pio.insert(debug_port.clone(), u64::from(debug_port::DEBUG_PORT), 1)?;
    let reset_control = Arc::new(Mutex::new(ResetControl::new(power_sink(events, "reset control register (port 0xCF9)"))));
    Ok(LegacyDevices { debug_port, reset_control })
}

/// Puts the 0xCF9 register on the port bus by itself (a machine without PCI).
pub fn place_reset_control(pio: &Bus, reset_control: Arc<Mutex<ResetControl>>) -> Result<(), LegacyError> {
    pio.insert(reset_control, u64::from(reset_control::RESET_CONTROL_PORT), 1)?;
    Ok(())
}

/// Errors creating legacy devices.
#[derive(Debug, thiserror::Error)]
pub enum LegacyError {
    #[error("creating an interrupt eventfd: {0}")]
    EventFd(std::io::Error),
    #[error("placing a legacy device on the port bus: {0}")]
    Bus(#[from] BusError),
}
