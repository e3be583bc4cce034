//! PCI: type-0 configuration space, the host bridge and configuration mechanism #1
//! (ports 0xCF8/0xCFC), and MSI-X.

pub mod config;
pub mod config_io;
pub mod msix;

pub use config::{BarKind, PciConfig, PciIds};
pub use config_io::{BarRemapper, PciBus, PciConfigIo, PciDevice};

/// Config-space offsets used by several modules.
pub mod offsets {
    pub const VENDOR_ID: usize = 0x00;
    pub const COMMAND: usize = 0x04;
    pub const STATUS: usize = 0x06;
    pub const CLASS_REVISION: usize = 0x08;
    pub const HEADER_TYPE: usize = 0x0e;
    pub const BAR0: usize = 0x10;
    pub const SUBSYSTEM: usize = 0x2c;
    pub const CAPABILITIES_POINTER: usize = 0x34;
    pub const INTERRUPT_LINE: usize = 0x3c;
}

/// Capability ids.
pub mod capability_id {
    pub const VENDOR_SPECIFIC: u8 = 0x09;
    pub const MSIX: u8 = 0x11;
}
