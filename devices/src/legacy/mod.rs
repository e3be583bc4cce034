//! Legacy PC devices at their well-known I/O ports.

pub mod acpi_pm;
pub mod cmos;
pub mod debug_port;
pub mod i8042;
pub mod reset_control;
pub mod serial;
pub mod serial_output;

pub use acpi_pm::AcpiPmControl;
pub use cmos::Cmos;
pub use debug_port::DebugPort;
pub use i8042::I8042;
pub use reset_control::ResetControl;
pub use serial::Serial;
