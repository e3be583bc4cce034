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

/// Why a configuration space saved on a migration source does not fit this function.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigRestoreError {
    #[error("saved configuration space is {0} bytes, expected {CONFIG_SPACE_SIZE}")]
    Length(usize),
    #[error("saved configuration space declares {0} BAR sizes, expected 6")]
    BarCount(usize),
    #[error("BAR {index} size {saved:#x} != {own:#x}")]
    BarSize { index: usize, saved: u64, own: u64 },
    #[error("BAR {index} value {value:#010x} is not aligned to its size {size:#x}")]
    BarUnaligned { index: usize, value: u32, size: u64 },
    #[error("{field} {saved} != {own}")]
    ReadOnly { field: String, saved: String, own: String },
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

    /// Sizes of the six BARs (0 where absent), as a migration carries them.
    pub fn bar_sizes(&self) -> [u64; 6] {
        self.bars.map(|b| b.size)
    }

    /// Loads a configuration space saved on a migration source (untrusted bytes).
    /// Every read-only bit must equal this function's own (ids, class, capability
    /// list, BAR size and type bits), and the BAR sizes the source declares must be
    /// this function's; the writable bits are then applied through the write masks,
    /// exactly as a guest write of the whole space would. Nothing changes on refusal.
    pub fn restore(&mut self, saved: &[u8], saved_bar_sizes: &[u64]) -> Result<(), ConfigRestoreError> {
        if saved.len() != CONFIG_SPACE_SIZE {
            return Err(ConfigRestoreError::Length(saved.len()));
        }
        if saved_bar_sizes.len() != self.bars.len() {
            return Err(ConfigRestoreError::BarCount(saved_bar_sizes.len()));
        }
        for (index, (bar, &saved_size)) in self.bars.iter().zip(saved_bar_sizes).enumerate() {
            if bar.size != saved_size {
                return Err(ConfigRestoreError::BarSize { index, saved: saved_size, own: bar.size });
            }
        }
        for offset in 0..CONFIG_SPACE_SIZE {
            if (saved[offset] ^ self.bytes[offset]) & !self.writable[offset] != 0 {
                return Err(self.read_only_mismatch(saved, offset));
            }
        }
        self.write(0, saved);
        Ok(())
    }

    /// Names the register holding the read-only byte at `offset` that `saved` changes.
    fn read_only_mismatch(&self, saved: &[u8], offset: usize) -> ConfigRestoreError {
        let register = |start: usize, len: usize| {
            let value = |b: &[u8]| b[start..start + len].iter().rev().fold(0u32, |v, &x| (v << 8) | u32::from(x));
            (value(saved), value(&self.bytes))
        };
        let (field, start, len) = match offset {
            0x00..=0x03 => {
                let (s, o) = register(0, 4);
                return ConfigRestoreError::ReadOnly {
                    field: "vendor/device".into(),
                    saved: format!("{:04x}:{:04x}", s & 0xffff, s >> 16),
                    own: format!("{:04x}:{:04x}", o & 0xffff, o >> 16),
                };
            }
            0x04..=0x05 => ("command".to_string(), 0x04, 2),
            0x06..=0x07 => ("status".to_string(), 0x06, 2),
            0x08..=0x0b => ("class/revision".to_string(), 0x08, 4),
            0x0c..=0x0f => ("header type".to_string(), 0x0c, 4),
            0x10..=0x27 => {
                let index = (offset - offsets::BAR0) / 4;
                let start = offsets::BAR0 + index * 4;
                let (s, o) = register(start, 4);
                let size = self.bars[index].size;
                let writable = u32::from_le_bytes([self.writable[start], self.writable[start + 1], self.writable[start + 2], self.writable[start + 3]]);
                if self.bars[index].present && (s ^ o) & !writable & !0xf != 0 {
                    return ConfigRestoreError::BarUnaligned { index, value: s, size };
                }
                let field = if self.bars[index].present { format!("BAR {index} type bits") } else { format!("BAR {index} (absent)") };
                (field, start, 4)
            }
            0x28..=0x2b => ("CardBus CIS pointer".to_string(), 0x28, 4),
            0x2c..=0x2f => ("subsystem".to_string(), 0x2c, 4),
            0x30..=0x33 => ("expansion ROM".to_string(), 0x30, 4),
            offsets::CAPABILITIES_POINTER => ("capabilities pointer".to_string(), offset, 1),
            0x3c..=0x3f => ("interrupt pin".to_string(), 0x3c, 4),
            _ if offset >= FIRST_CAPABILITY => (format!("capability list byte {offset:#04x}:"), offset, 1),
            _ => (format!("reserved byte {offset:#04x}:"), offset, 1),
        };
        let (s, o) = register(start, len);
        let width = len * 2;
        ConfigRestoreError::ReadOnly { field, saved: format!("{s:#0w$x}", w = width + 2), own: format!("{o:#0w$x}", w = width + 2) }
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

    /// A virtio-like function: one 32 KiB BAR and a capability with writable bits.
    fn function(ids: PciIds, bar_size: u64) -> PciConfig {
        let mut c = PciConfig::new(ids);
        c.add_bar(0, BarKind::Memory32, 0xc000_0000, bar_size).unwrap();
        c.add_capability(&[0x09, 0, 4, 1], &[0; 4]).unwrap();
        c.add_capability(&[0x11, 0, 1, 0], &[0, 0, 0, 0xc0]).unwrap();
        c
    }

    #[test]
    fn restore_applies_writable_bits_and_a_moved_bar() {
        let mut source = function(ids(), 0x8000);
        source.write(0x10, &0xd000_8000u32.to_le_bytes()); // guest moved BAR 0
        source.write(4, &[0x06, 0x04]); // memory, bus master, INTx disable
        source.write(0x3c, &[0x0b]);
        source.write(0x4b, &[0xc0]); // MSI-X enable + function mask
        let mut dest = function(ids(), 0x8000);
        dest.restore(source.bytes(), &source.bar_sizes()).unwrap();
        assert_eq!(dest.bytes(), source.bytes());
        assert_eq!(dest.bar_address(0), 0xd000_8000);
        assert!(dest.memory_enabled());
        // Write masks are the destination's own: still only writable bits change later.
        dest.write(0, &[0, 0]);
        assert_eq!(dest.read_u16(0), 0x1af4);
    }

    #[test]
    fn restore_refuses_another_device_id() {
        let source = function(ids(), 0x8000);
        let mut dest = function(PciIds { device: 0x1041, ..ids() }, 0x8000);
        let before = *dest.bytes();
        let err = dest.restore(source.bytes(), &source.bar_sizes()).unwrap_err();
        assert_eq!(err.to_string(), "vendor/device 1af4:1042 != 1af4:1041");
        assert_eq!(*dest.bytes(), before, "nothing applied on refusal");
        let mut other_class = function(PciIds { class: 2, subclass: 0, ..ids() }, 0x8000);
        let err = other_class.restore(source.bytes(), &source.bar_sizes()).unwrap_err();
        assert_eq!(err.to_string(), "class/revision 0x01800001 != 0x02000001");
    }

    #[test]
    fn restore_refuses_tampered_read_only_bytes() {
        let source = function(ids(), 0x8000);
        let mut bytes = *source.bytes();
        bytes[0x43] = 7; // vendor capability body
        let mut dest = function(ids(), 0x8000);
        let err = dest.restore(&bytes, &source.bar_sizes()).unwrap_err();
        assert_eq!(err.to_string(), "capability list byte 0x43: 0x07 != 0x01");
        let mut bytes = *source.bytes();
        bytes[0x4a] = 0x05; // MSI-X table size (read-only)
        assert!(matches!(dest.restore(&bytes, &source.bar_sizes()), Err(ConfigRestoreError::ReadOnly { .. })));
        let mut bytes = *source.bytes();
        bytes[0x06] = 0; // status: capability list bit gone
        let err = dest.restore(&bytes, &source.bar_sizes()).unwrap_err();
        assert_eq!(err.to_string(), "status 0x0000 != 0x0010");
        let mut bytes = *source.bytes();
        bytes[0x34] = 0x44;
        assert_eq!(dest.restore(&bytes, &source.bar_sizes()).unwrap_err().to_string(), "capabilities pointer 0x44 != 0x40");
        assert_eq!(dest.restore(&bytes[..255], &source.bar_sizes()), Err(ConfigRestoreError::Length(255)));
    }

    #[test]
    fn restore_refuses_bar_size_mismatch_and_unaligned_bars() {
        let source = function(ids(), 0x8000);
        let mut dest = function(ids(), 0x1_0000);
        let err = dest.restore(source.bytes(), &source.bar_sizes()).unwrap_err();
        assert_eq!(err.to_string(), "BAR 0 size 0x8000 != 0x10000");
        assert_eq!(dest.restore(source.bytes(), &[0x8000]), Err(ConfigRestoreError::BarCount(1)));
        // A peer lying about sizes is still caught by the BAR's read-only bits.
        let mut bytes = *source.bytes();
        bytes[0x10..0x14].copy_from_slice(&0xd000_4000u32.to_le_bytes());
        let mut same = function(ids(), 0x8000);
        let err = same.restore(&bytes, &source.bar_sizes()).unwrap_err();
        assert_eq!(err.to_string(), "BAR 0 value 0xd0004000 is not aligned to its size 0x8000");
        bytes[0x10..0x14].copy_from_slice(&0xd000_0008u32.to_le_bytes()); // prefetchable bit
        assert_eq!(same.restore(&bytes, &source.bar_sizes()).unwrap_err().to_string(), "BAR 0 type bits 0xd0000008 != 0xc0000000");
        // An absent BAR holding a value is refused too.
        let mut bytes = *source.bytes();
        bytes[0x14] = 0x10;
        assert_eq!(same.restore(&bytes, &source.bar_sizes()).unwrap_err().to_string(), "BAR 1 (absent) 0x00000010 != 0x00000000");
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
