//! Address-routed bus: maps ranges of port or MMIO space to device register handlers.
//!
//! A vCPU exit carries an address and data; the bus finds the device whose range
//! covers the address and calls its handler with the offset inside that range.
//! Handlers are short and never block (the design rule for register handlers).
//!
//! The map can change while vCPUs run (a guest moving a PCI BAR), so it sits behind
//! a read-write lock; the lock is released before a handler runs, so a handler may
//! itself change the bus.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use crate::sync::lock;

/// A device reachable through a bus. `offset` is relative to the start of the range
/// the device was inserted at.
pub trait BusDevice: Send {
    /// Guest reads `data.len()` bytes at `offset`. Unhandled bytes should be set to a
    /// value the guest can recognise as "nothing here" (usually all ones).
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Guest writes `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// Errors building a bus.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// The new range overlaps a range already on the bus.
    #[error("bus range {base:#x}+{len:#x} overlaps an existing device")]
    Overlap { base: u64, len: u64 },
    /// A zero-length range or one that wraps around the address space.
    #[error("invalid bus range {base:#x}+{len:#x}")]
    InvalidRange { base: u64, len: u64 },
}

#[derive(Clone)]
struct Entry {
    len: u64,
    device: Arc<Mutex<dyn BusDevice>>,
}

/// A set of non-overlapping address ranges, each served by one device.
#[derive(Default)]
pub struct Bus {
    ranges: RwLock<BTreeMap<u64, Entry>>,
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `[base, base + len)` with `device`.
    pub fn insert(&self, device: Arc<Mutex<dyn BusDevice>>, base: u64, len: u64) -> Result<(), BusError> {
        let end = base
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(BusError::InvalidRange { base, len })?;
        let mut ranges = self.ranges.write().unwrap_or_else(|p| p.into_inner());
        if let Some((prev_base, prev)) = ranges.range(..end).next_back() {
            if prev_base + prev.len > base {
                return Err(BusError::Overlap { base, len });
            }
        }
        ranges.insert(base, Entry { len, device });
        Ok(())
    }

    /// Removes the range starting at `base`; returns whether one was there.
    pub fn remove(&self, base: u64) -> bool {
        self.ranges.write().unwrap_or_else(|p| p.into_inner()).remove(&base).is_some()
    }

    /// Moves the range at `old_base` to `new_base` (same device and length).
    pub fn relocate(&self, old_base: u64, new_base: u64) -> Result<(), BusError> {
        let entry = {
            let mut ranges = self.ranges.write().unwrap_or_else(|p| p.into_inner());
            ranges.remove(&old_base).ok_or(BusError::InvalidRange { base: old_base, len: 0 })?
        };
        let len = entry.len;
        self.insert(entry.device.clone(), new_base, len).inspect_err(|_| {
            // Put it back where it was rather than lose the device.
            let _ = self.insert(entry.device, old_base, len);
        })
    }

    fn resolve(&self, addr: u64, access_len: usize) -> Option<(u64, Arc<Mutex<dyn BusDevice>>)> {
        let ranges = self.ranges.read().unwrap_or_else(|p| p.into_inner());
        let (base, entry) = ranges.range(..=addr).next_back()?;
        let offset = addr - base;
        // The whole access must fit inside the device's range.
        if offset.checked_add(access_len as u64)? <= entry.len {
            Some((offset, entry.device.clone()))
        } else {
            None
        }
    }

    /// Routes a read. Returns false (and fills `data` with ones) when no device serves
    /// the address.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.resolve(addr, data.len()) {
            Some((offset, device)) => {
                lock(&device).read(offset, data);
                true
            }
            None => {
                data.fill(0xff);
                false
            }
        }
    }

    /// Routes a write. Returns false when no device serves the address.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.resolve(addr, data.len()) {
            Some((offset, device)) => {
                lock(&device).write(offset, data);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Recorder {
        last_write: Vec<(u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.last_write.push((offset, data.to_vec()));
        }
    }

    fn recorder() -> Arc<Mutex<Recorder>> {
        Arc::new(Mutex::new(Recorder { last_write: vec![] }))
    }

    #[test]
    fn routes_by_offset_inside_range() {
        let bus = Bus::new();
        let dev = recorder();
        bus.insert(dev.clone(), 0x3f8, 8).unwrap();
        let mut b = [0u8; 1];
        assert!(bus.read(0x3fd, &mut b));
        assert_eq!(b, [5]);
        assert!(bus.write(0x3f8, &[0x41]));
        assert_eq!(dev.lock().unwrap().last_write, vec![(0, vec![0x41])]);
    }

    #[test]
    fn unmapped_reads_all_ones() {
        let bus = Bus::new();
        let mut b = [0u8; 2];
        assert!(!bus.read(0x80, &mut b));
        assert_eq!(b, [0xff, 0xff]);
        assert!(!bus.write(0x80, &[1]));
    }

    #[test]
    fn access_straddling_the_end_is_rejected() {
        let bus = Bus::new();
        bus.insert(recorder(), 0x60, 1).unwrap();
        let mut b = [0u8; 2];
        assert!(!bus.read(0x60, &mut b));
    }

    #[test]
    fn relocation_moves_the_device() {
        let bus = Bus::new();
        let dev = recorder();
        bus.insert(dev.clone(), 0x1000, 0x100).unwrap();
        bus.insert(recorder(), 0x3000, 0x100).unwrap();
        bus.relocate(0x1000, 0x2000).unwrap();
        assert!(!bus.write(0x1000, &[1]));
        assert!(bus.write(0x2004, &[1]));
        assert_eq!(dev.lock().unwrap().last_write, vec![(4, vec![1])]);
        // Relocating onto another device fails and leaves the device where it was.
        assert!(bus.relocate(0x2000, 0x3080).is_err());
        assert!(bus.write(0x2000, &[2]));
        assert!(bus.remove(0x2000));
        assert!(!bus.remove(0x2000));
    }

    #[test]
    fn overlaps_and_bad_ranges_are_errors() {
        let bus = Bus::new();
        bus.insert(recorder(), 0x100, 0x10).unwrap();
        assert!(matches!(bus.insert(recorder(), 0x10f, 1), Err(BusError::Overlap { .. })));
        assert!(matches!(bus.insert(recorder(), 0xf8, 0x9), Err(BusError::Overlap { .. })));
        assert!(bus.insert(recorder(), 0x110, 1).is_ok());
        assert!(bus.insert(recorder(), 0xf0, 0x10).is_ok());
        assert!(matches!(bus.insert(recorder(), 0x200, 0), Err(BusError::InvalidRange { .. })));
        assert!(matches!(bus.insert(recorder(), u64::MAX, 2), Err(BusError::InvalidRange { .. })));
    }
}
