//! Puts the legacy PC devices on the port bus and wires the UART's interrupt.

use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use devices::bus::{Bus, BusError};
use devices::interrupt::Interrupt;
use devices::legacy::{acpi_pm, cmos, debug_port, i8042, serial, AcpiPmControl, Cmos, DebugPort, I8042, Serial};
use devices::power::{PowerRequest, PowerRequestSink};

use crate::events::VmEvent;

/// Handles to the legacy devices the VMM talks to after setup.
pub struct LegacyDevices {
    pub serial: Arc<Mutex<Serial>>,
    pub serial_interrupt: Interrupt,
    pub debug_port: Arc<Mutex<DebugPort>>,
}

/// A power sink that turns guest power requests into machine events.
pub fn power_sink(events: Sender<VmEvent>) -> PowerRequestSink {
    let events = Mutex::new(events);
    Arc::new(move |request| {
        let event = match request {
            PowerRequest::PowerOff => VmEvent::PowerOff,
            PowerRequest::Reset => VmEvent::Reset { reason: "guest requested reset".into() },
        };
        let _ = devices::sync::lock(&events).send(event);
    })
}

/// Creates the devices and inserts them into `pio`.
pub fn add_legacy_devices(
    pio: &Bus,
    serial_output: serial::SerialOutput,
    events: Sender<VmEvent>,
    start: Instant,
) -> Result<LegacyDevices, LegacyError> {
    let serial_interrupt = Interrupt::new().map_err(LegacyError::EventFd)?;
    let serial = Arc::new(Mutex::new(Serial::new(serial_interrupt.clone(), serial_output)));
    pio.insert(serial.clone(), u64::from(serial::COM1_PORT), serial::UART_PORT_COUNT)?;

    let power = power_sink(events);
    pio.insert(Arc::new(Mutex::new(I8042::new(power.clone()))), u64::from(i8042::I8042_PORT), i8042::I8042_PORT_COUNT)?;
    pio.insert(Arc::new(Mutex::new(Cmos::new())), u64::from(cmos::CMOS_PORT), cmos::CMOS_PORT_COUNT)?;
    pio.insert(Arc::new(Mutex::new(AcpiPmControl::new(power))), u64::from(acpi_pm::ACPI_PM_PORT), acpi_pm::ACPI_PM_PORT_COUNT)?;
    let debug_port = Arc::new(Mutex::new(DebugPort::new(start)));
    pio.insert(debug_port.clone(), u64::from(debug_port::DEBUG_PORT), 1)?;
    Ok(LegacyDevices { serial, serial_interrupt, debug_port })
}

/// Errors creating legacy devices.
#[derive(Debug, thiserror::Error)]
pub enum LegacyError {
    #[error("creating an interrupt eventfd: {0}")]
    EventFd(std::io::Error),
    #[error("placing a legacy device on the port bus: {0}")]
    Bus(#[from] BusError),
}
