//! PCI bus 0 and configuration mechanism #1: the address register at 0xCF8 selects
//! bus/device/function/register, the data window 0xCFC..0xCFF reads or writes it.
//! Slot 0 is the host bridge.

use std::sync::{Arc, Mutex};

use super::config::{PciConfig, PciIds};
use crate::bus::{Bus, BusDevice};
use crate::sync::lock;

/// First config-mechanism port; the device decodes 8 ports from here.
pub const CONFIG_ADDRESS_PORT: u16 = 0xcf8;
/// Ports decoded: address (4) + data (4).
pub const CONFIG_IO_PORT_COUNT: u64 = 8;
const ENABLE_BIT: u32 = 1 << 31;
/// Devices per bus.
pub const SLOTS: usize = 32;

/// A BAR that the guest moved: the MMIO bus must follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarMove {
    pub old: u64,
    pub new: u64,
    pub len: u64,
}

/// A PCI function on bus 0.
pub trait PciDevice: Send {
    /// Reads configuration space.
    fn config_read(&mut self, offset: usize, data: &mut [u8]);
    /// Writes configuration space; returns the BARs this write moved (the device has
    /// already updated anything of its own, such as ioeventfds).
    fn config_write(&mut self, offset: usize, data: &[u8]) -> Vec<BarMove>;
}

/// Something that follows BAR moves (the MMIO bus, normally).
pub trait BarRemapper: Send + Sync {
    fn move_bar(&self, mv: BarMove);
}

impl BarRemapper for Bus {
    fn move_bar(&self, mv: BarMove) {
        if let Err(e) = self.relocate(mv.old, mv.new) {
            tracing::warn!("guest moved a BAR from {:#x} to {:#x} ({} bytes) but it cannot be mapped there: {e}", mv.old, mv.new, mv.len);
        }
    }
}

/// The host bridge at 00:00.0: identification only.
pub struct HostBridge {
    config: PciConfig,
}

impl Default for HostBridge {
    fn default() -> Self {
        // Red Hat's generic PCIe host bridge id; class 06/00 (host bridge).
        let ids = PciIds { vendor: 0x1b36, device: 0x0008, class: 0x06, subclass: 0x00, prog_if: 0, revision: 0, subsystem_vendor: 0, subsystem: 0 };
        Self { config: PciConfig::new(ids) }
    }
}

impl PciDevice for HostBridge {
    fn config_read(&mut self, offset: usize, data: &mut [u8]) {
        self.config.read(offset, data);
    }
    fn config_write(&mut self, offset: usize, data: &[u8]) -> Vec<BarMove> {
        self.config.write(offset, data);
        Vec::new()
    }
}

/// The devices on bus 0.
pub struct PciBus {
    slots: Vec<Option<Arc<Mutex<dyn PciDevice>>>>,
}

impl Default for PciBus {
    fn default() -> Self {
        Self::new()
    }
}

impl PciBus {
    /// A bus holding only the host bridge.
    pub fn new() -> Self {
        let mut slots: Vec<Option<Arc<Mutex<dyn PciDevice>>>> = vec![None; SLOTS];
        slots[0] = Some(Arc::new(Mutex::new(HostBridge::default())));
        Self { slots }
    }

    /// Puts `device` in the first free slot; returns the slot number.
    pub fn add(&mut self, device: Arc<Mutex<dyn PciDevice>>) -> Option<u8> {
        let slot = self.slots.iter().position(Option::is_none)?;
        self.slots[slot] = Some(device);
        Some(slot as u8)
    }

    /// The next slot `add` would use.
    pub fn next_free_slot(&self) -> Option<u8> {
        self.slots.iter().position(Option::is_none).map(|s| s as u8)
    }

    fn device(&self, slot: usize) -> Option<Arc<Mutex<dyn PciDevice>>> {
        self.slots.get(slot).and_then(Clone::clone)
    }
}

/// The 0xCF8/0xCFC port device.
pub struct PciConfigIo {
    address: u32,
    bus: PciBus,
    remapper: Arc<dyn BarRemapper>,
    /// The byte register at 0xCF9 (reset control), when the machine has one.
    byte_at_1: Option<Arc<Mutex<dyn BusDevice>>>,
}

impl PciConfigIo {
    /// Serves `bus`, moving BARs through `remapper`.
    pub fn new(bus: PciBus, remapper: Arc<dyn BarRemapper>) -> Self {
        Self { address: 0, bus, remapper, byte_at_1: None }
    }

    /// Routes byte accesses at 0xCF9 to `device` (the reset control register, which
    /// shares this range on a PC).
    pub fn with_byte_register_at_cf9(mut self, device: Arc<Mutex<dyn BusDevice>>) -> Self {
        self.byte_at_1 = Some(device);
        self
    }

    /// The 0xCF9 register when this access is a byte at offset 1.
    fn cf9(&self, offset: u64, len: usize) -> Option<&Arc<Mutex<dyn BusDevice>>> {
        self.byte_at_1.as_ref().filter(|_| offset == 1 && len == 1)
    }

    /// Decodes the address register: (slot, register offset) for bus 0 function 0.
    fn target(&self) -> Option<(usize, usize)> {
        if self.address & ENABLE_BIT == 0 {
            return None;
        }
        let bus = (self.address >> 16) & 0xff;
        let slot = (self.address >> 11) & 0x1f;
        let function = (self.address >> 8) & 0x7;
        if bus != 0 || function != 0 {
            return None;
        }
        Some((slot as usize, (self.address & 0xfc) as usize))
    }
}

impl BusDevice for PciConfigIo {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        if let Some(register) = self.cf9(offset, data.len()) {
            lock(register).read(0, data);
            return;
        }
        if offset < 4 {
            if offset == 0 && data.len() == 4 {
                data.copy_from_slice(&self.address.to_le_bytes());
            }
            return;
        }
        let Some((slot, reg)) = self.target() else { return };
        let Some(device) = self.bus.device(slot) else { return };
        let within = (offset - 4) as usize;
        if within + data.len() > 4 {
            return;
        }
        lock(&device).config_read(reg + within, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some(register) = self.cf9(offset, data.len()) {
            lock(register).write(0, data);
            return;
        }
        if offset < 4 {
            if offset == 0 && data.len() == 4 {
                self.address = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
            }
            return;
        }
        let Some((slot, reg)) = self.target() else { return };
        let Some(device) = self.bus.device(slot) else { return };
        let within = (offset - 4) as usize;
        if within + data.len() > 4 {
            return;
        }
        let moves = lock(&device).config_write(reg + within, data);
        for mv in moves {
            self.remapper.move_bar(mv);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoRemap;
    impl BarRemapper for NoRemap {
        fn move_bar(&self, _: BarMove) {}
    }

    fn select(io: &mut PciConfigIo, slot: u32, reg: u32) {
        io.write(0, &(ENABLE_BIT | (slot << 11) | reg).to_le_bytes());
    }

    #[test]
    fn a_byte_at_cf9_goes_to_the_reset_register_and_the_address_dword_does_not() {
        use crate::legacy::reset_control::{ResetControl, RST_CPU};
        use crate::power::PowerRequest;
        let seen = Arc::new(Mutex::new(vec![]));
        let s = seen.clone();
        let reset = Arc::new(Mutex::new(ResetControl::new(Arc::new(move |r| s.lock().unwrap().push(r)))));
        let mut io = PciConfigIo::new(PciBus::new(), Arc::new(NoRemap)).with_byte_register_at_cf9(reset);
        // A configuration address with bit 10 (byte 1, bit 2) set is not a reset.
        io.write(0, &(ENABLE_BIT | 0x0400).to_le_bytes());
        assert!(seen.lock().unwrap().is_empty());
        let mut d = [0u8; 4];
        io.read(0, &mut d);
        assert_eq!(u32::from_le_bytes(d), ENABLE_BIT | 0x0400);
        io.write(1, &[0x02]);
        io.write(1, &[0x02 | RST_CPU]);
        assert_eq!(*seen.lock().unwrap(), vec![PowerRequest::Reset]);
        let mut b = [0u8; 1];
        io.read(1, &mut b);
        assert_eq!(b[0], 0x02);
    }

    #[test]
    fn host_bridge_answers_and_empty_slots_read_ones() {
        let mut io = PciConfigIo::new(PciBus::new(), Arc::new(NoRemap));
        select(&mut io, 0, 0);
        let mut d = [0u8; 4];
        io.read(4, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x0008_1b36);
        select(&mut io, 0, 8);
        io.read(4, &mut d);
        assert_eq!(d[3], 0x06, "host bridge class");
        // Byte access inside the data window.
        let mut b = [0u8; 1];
        io.read(7, &mut b);
        assert_eq!(b[0], 0x06);
        select(&mut io, 5, 0);
        io.read(4, &mut d);
        assert_eq!(d, [0xff; 4]);
        // Address register reads back.
        io.read(0, &mut d);
        assert_eq!(u32::from_le_bytes(d), ENABLE_BIT | (5 << 11));
    }

    #[test]
    fn disabled_or_other_bus_reads_ones() {
        let mut io = PciConfigIo::new(PciBus::new(), Arc::new(NoRemap));
        io.write(0, &0u32.to_le_bytes());
        let mut d = [0u8; 4];
        io.read(4, &mut d);
        assert_eq!(d, [0xff; 4]);
        io.write(0, &(ENABLE_BIT | (1 << 16)).to_le_bytes());
        io.read(4, &mut d);
        assert_eq!(d, [0xff; 4]);
    }

    struct Mover {
        config: PciConfig,
        mapped: u64,
    }
    impl PciDevice for Mover {
        fn config_read(&mut self, offset: usize, data: &mut [u8]) {
            self.config.read(offset, data);
        }
        fn config_write(&mut self, offset: usize, data: &[u8]) -> Vec<BarMove> {
            self.config.write(offset, data);
            let now = self.config.bar_address(0);
            if self.config.memory_enabled() && now != self.mapped {
                let mv = BarMove { old: self.mapped, new: now, len: self.config.bar_size(0) };
                self.mapped = now;
                return vec![mv];
            }
            vec![]
        }
    }

    #[test]
    fn bar_moves_reach_the_remapper_only_with_decoding_on() {
        let mmio = Arc::new(Bus::new());
        struct Dummy;
        impl BusDevice for Dummy {
            fn read(&mut self, _: u64, d: &mut [u8]) {
                d.fill(0x42);
            }
            fn write(&mut self, _: u64, _: &[u8]) {}
        }
        mmio.insert(Arc::new(Mutex::new(Dummy)), 0xc000_0000, 0x1000).unwrap();
        let mut config = PciConfig::new(PciIds { vendor: 1, device: 2, class: 0, subclass: 0, prog_if: 0, revision: 0, subsystem_vendor: 0, subsystem: 0 });
        config.add_bar(0, super::super::BarKind::Memory32, 0xc000_0000, 0x1000).unwrap();
        let mut bus = PciBus::new();
        assert_eq!(bus.add(Arc::new(Mutex::new(Mover { config, mapped: 0xc000_0000 }))), Some(1));
        let mut io = PciConfigIo::new(bus, mmio.clone());
        // Sizing with decoding off moves nothing.
        select(&mut io, 1, 0x10);
        io.write(4, &0xffff_ffffu32.to_le_bytes());
        io.write(4, &0xd000_0000u32.to_le_bytes());
        let mut d = [0u8; 1];
        assert!(mmio.read(0xc000_0000, &mut d));
        // Enabling decoding at the new address moves the device.
        select(&mut io, 1, 0x04);
        io.write(4, &[0x02, 0]);
        assert!(!mmio.read(0xc000_0000, &mut d));
        assert!(mmio.read(0xd000_0000, &mut d));
        assert_eq!(d[0], 0x42);
    }
}
