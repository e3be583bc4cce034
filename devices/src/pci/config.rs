//! A type-0 PCI configuration space (256 bytes) with per-bit write masks, BARs that
//! answer size probes, and a capability list.

use super::offsets;

/// Size of the legacy configuration space.
pub const CONFIG_SPACE_SIZE: usize = 256;
const STATUS_CAPABILITIES_LIST: u16 = 1 << 4;
/// Command register bits the guest may change: I/O, memory, bus master, INTx disable.
const COMMAND_WRITABLE: u16 = 0x0007 | (1 << 10);
/// Command register: memory space decoding enabled.
pub const COMMAND_MEMORY: u16 = 1 << 1;
const FIRST_CAPABILITY: usize = 0x40;

/// Identification of a function.
#[derive(Clone, Copy, Debug)]
pub struct PciIds {
    pub vendor: u16,
    pub device: u16,
    pub class: u8,
    pub subclass: u8,
    pub prog_if: u8,
    pub revision: u8,
    pub subsystem_vendor: u16,
    pub subsystem: u16,
}

/// What a BAR decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    /// 32-bit memory BAR.
    Memory32,
}

#[derive(Clone, Copy, Debug, Default)]
struct Bar {
    size: u64,
    present: bool,
}

/// The configuration space of one function.
#[derive(Clone)]
pub struct PciConfig {
    bytes: [u8; CONFIG_SPACE_SIZE],
    writable: [u8; CONFIG_SPACE_SIZE],
    bars: [Bar; 6],
    next_capability: usize,
    last_capability: Option<usize>,
}

/// Errors building a configuration space (programming errors in the VMM, reported).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("BAR {0} does not exist or is already used")]
    BadBar(usize),
    #[error("BAR size {0:#x} is not a power of two of at least 16 bytes")]
    BadBarSize(u64),
    #[error("capability of {0} bytes does not fit in configuration space")]
    CapabilityTooLarge(usize),
}

impl PciConfig {
    /// A type-0 header with `ids`.
    pub fn new(ids: PciIds) -> Self {
        let mut c = Self {
            bytes: [0; CONFIG_SPACE_SIZE],
            writable: [0; CONFIG_SPACE_SIZE],
            bars: [Bar::default(); 6],
            next_capability: FIRST_CAPABILITY,
            last_capability: None,
        };
        c.set_u16(offsets::VENDOR_ID, ids.vendor);
        c.set_u16(offsets::VENDOR_ID + 2, ids.device);
        c.bytes[offsets::CLASS_REVISION] = ids.revision;
        c.bytes[offsets::CLASS_REVISION + 1] = ids.prog_if;
        c.bytes[offsets::CLASS_REVISION + 2] = ids.subclass;
        c.bytes[offsets::CLASS_REVISION + 3] = ids.class;
        c.set_u16(offsets::SUBSYSTEM, ids.subsystem_vendor);
        c.set_u16(offsets::SUBSYSTEM + 2, ids.subsystem);
        c.writable[offsets::COMMAND..offsets::COMMAND + 2].copy_from_slice(&COMMAND_WRITABLE.to_le_bytes());
        // Interrupt line is scratch space for the OS.
        c.writable[offsets::INTERRUPT_LINE] = 0xff;
        c
    }

    fn set_u16(&mut self, offset: usize, v: u16) {
        self.bytes[offset..offset + 2].copy_from_slice(&v.to_le_bytes());
    }

    fn set_u32(&mut self, offset: usize, v: u32) {
        self.bytes[offset..offset + 4].copy_from_slice(&v.to_le_bytes());
    }

    /// Reads a little-endian u16 at `offset`.
    pub fn read_u16(&self, offset: usize) -> u16 {
        u16::from_le_bytes([self.bytes[offset], self.bytes[offset + 1]])
    }

    /// Reads a little-endian u32 at `offset`.
    pub fn read_u32(&self, offset: usize) -> u32 {
        u32::from_le_bytes(self.bytes[offset..offset + 4].try_into().unwrap_or([0; 4]))
    }

    /// Declares BAR `index` of `size` bytes at `addr`.
    pub fn add_bar(&mut self, index: usize, kind: BarKind, addr: u64, size: u64) -> Result<(), ConfigError> {
        if index >= 6 || self.bars[index].present {
            return Err(ConfigError::BadBar(index));
        }
        if size < 16 || !size.is_power_of_two() || size > 1 << 31 {
            return Err(ConfigError::BadBarSize(size));
        }
        let BarKind::Memory32 = kind;
        self.bars[index] = Bar { size, present: true };
        let offset = offsets::BAR0 + index * 4;
        self.set_u32(offset, (addr as u32) & !(size as u32 - 1));
        let mask = !(size as u32 - 1) & !0xf;
        self.writable[offset..offset + 4].copy_from_slice(&mask.to_le_bytes());
        Ok(())
    }

    /// The address BAR `index` currently decodes (0 if absent).
    pub fn bar_address(&self, index: usize) -> u64 {
        if index >= 6 || !self.bars[index].present {
            return 0;
        }
        u64::from(self.read_u32(offsets::BAR0 + index * 4) & !0xf)
    }

    /// Size of BAR `index` (0 if absent).
    pub fn bar_size(&self, index: usize) -> u64 {
        self.bars.get(index).map(|b| b.size).unwrap_or(0)
    }

    /// Whether memory decoding is on.
    pub fn memory_enabled(&self) -> bool {
        self.read_u16(offsets::COMMAND) & COMMAND_MEMORY != 0
    }

    /// Appends a capability. `body` starts with the capability id; its "next" byte is
    /// filled in here. `writable` gives the guest-writable bits (same length as body).
    /// Returns the capability's offset.
    pub fn add_capability(&mut self, body: &[u8], writable: &[u8]) -> Result<usize, ConfigError> {
        let offset = self.next_capability;
        let len = body.len().max(2);
        if offset + len > CONFIG_SPACE_SIZE {
            return Err(ConfigError::CapabilityTooLarge(body.len()));
        }
        self.bytes[offset..offset + body.len()].copy_from_slice(body);
        self.bytes[offset + 1] = 0;
        for (i, w) in writable.iter().enumerate().take(body.len()) {
            self.writable[offset + i] = *w;
        }
        match self.last_capability {
            None => self.bytes[offsets::CAPABILITIES_POINTER] = offset as u8,
            Some(last) => self.bytes[last + 1] = offset as u8,
        }
        self.last_capability = Some(offset);
        let status = self.read_u16(offsets::STATUS) | STATUS_CAPABILITIES_LIST;
        self.set_u16(offsets::STATUS, status);
        self.next_capability = (offset + len + 3) & !3;
        Ok(offset)
    }

    /// Raw bytes (for capability state the owner interprets).
    pub fn bytes(&self) -> &[u8; CONFIG_SPACE_SIZE] {
        &self.bytes
    }

    /// Loads raw configuration bytes saved on a migration source (same device model,
    /// so the write masks and BAR sizes already match).
    pub fn restore_bytes(&mut self, bytes: &[u8]) -> Result<(), ConfigError> {
        if bytes.len() != CONFIG_SPACE_SIZE {
            return Err(ConfigError::CapabilityTooLarge(bytes.len()));
        }
        self.bytes.copy_from_slice(bytes);
        Ok(())
    }

    /// Guest read of `data.len()` bytes at `offset`; out of range reads as ones.
    pub fn read(&self, offset: usize, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = self.bytes.get(offset + i).copied().unwrap_or(0xff);
        }
    }

    /// Guest write: only writable bits change.
    pub fn write(&mut self, offset: usize, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            let at = offset + i;
            if at >= CONFIG_SPACE_SIZE {
                return;
            }
            let mask = self.writable[at];
            self.bytes[at] = (self.bytes[at] & !mask) | (b & mask);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> PciIds {
        PciIds { vendor: 0x1af4, device: 0x1042, class: 1, subclass: 0x80, prog_if: 0, revision: 1, subsystem_vendor: 0x1af4, subsystem: 0x40 }
    }

    #[test]
    fn ids_are_read_only() {
        let mut c = PciConfig::new(ids());
        c.write(0, &[0, 0, 0, 0]);
        assert_eq!(c.read_u32(0), 0x1042_1af4);
        assert_eq!(c.read_u32(8) >> 8, 0x01_80_00);
    }

    #[test]
    fn bar_size_probe_and_reprogram() {
        let mut c = PciConfig::new(ids());
        c.add_bar(0, BarKind::Memory32, 0xc000_0000, 0x8000).unwrap();
        c.write(0x10, &0xffff_ffffu32.to_le_bytes());
        assert_eq!(c.read_u32(0x10), 0xffff_8000, "size probe returns the size mask");
        c.write(0x10, &0xd000_0000u32.to_le_bytes());
        assert_eq!(c.bar_address(0), 0xd000_0000);
        // Absent BARs read as zero and ignore writes.
        c.write(0x14, &0xffff_ffffu32.to_le_bytes());
        assert_eq!(c.read_u32(0x14), 0);
        assert_eq!(c.add_bar(0, BarKind::Memory32, 0, 0x1000), Err(ConfigError::BadBar(0)));
        assert_eq!(c.add_bar(1, BarKind::Memory32, 0, 0x1001), Err(ConfigError::BadBarSize(0x1001)));
    }

    #[test]
    fn command_register_mask() {
        let mut c = PciConfig::new(ids());
        c.write(4, &[0xff, 0xff]);
        assert_eq!(c.read_u16(4), COMMAND_WRITABLE);
        assert!(c.memory_enabled());
    }

    #[test]
    fn capability_list_is_chained() {
        let mut c = PciConfig::new(ids());
        let a = c.add_capability(&[0x09, 0, 4, 1], &[0; 4]).unwrap();
        let b = c.add_capability(&[0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[0, 0, 0, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap();
        assert_eq!(c.bytes()[0x34] as usize, a);
        assert_eq!(c.bytes()[a + 1] as usize, b);
        assert_eq!(c.bytes()[b + 1], 0);
        assert_ne!(c.read_u16(6) & STATUS_CAPABILITIES_LIST, 0);
        c.write(b + 3, &[0xff]);
        assert_eq!(c.bytes()[b + 3], 0xc0, "only writable bits change");
    }

    #[test]
    fn out_of_range_access_is_harmless() {
        let mut c = PciConfig::new(ids());
        let mut d = [0u8; 4];
        c.read(254, &mut d);
        assert_eq!(d[2..], [0xff, 0xff]);
        c.write(255, &[1, 2, 3, 4]);
    }
}
