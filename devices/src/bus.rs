//! Address-routed bus: maps ranges of port or MMIO space to device register handlers.
//!
//! A vCPU exit carries an address and data; the bus finds the device whose range
//! covers the address and calls its handler with the offset inside that range.
//! Handlers are short and never block (the design rule for register handlers).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

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
#[derive(Clone, Default)]
pub struct Bus {
    ranges: BTreeMap<u64, Entry>,
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `[base, base + len)` with `device`.
    pub fn insert(
        &mut self,
        device: Arc<Mutex<dyn BusDevice>>,
        base: u64,
        len: u64,
    ) -> Result<(), BusError> {
        let end = base
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(BusError::InvalidRange { base, len })?;
        if let Some((prev_base, prev)) = self.ranges.range(..end).next_back() {
            if prev_base + prev.len > base {
                return Err(BusError::Overlap { base, len });
            }
        }
        self.ranges.insert(base, Entry { len, device });
        Ok(())
    }

    fn resolve(&self, addr: u64, access_len: usize) -> Option<(u64, &Entry)> {
        let (base, entry) = self.ranges.range(..=addr).next_back()?;
        let offset = addr - base;
        // The whole access must fit inside the device's range.
        if offset.checked_add(access_len as u64)? <= entry.len {
            Some((offset, entry))
        } else {
            None
        }
    }

    /// Routes a read. Returns false (and fills `data` with ones) when no device serves
    /// the address.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.resolve(addr, data.len()) {
            Some((offset, entry)) => {
                lock(&entry.device).read(offset, data);
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
            Some((offset, entry)) => {
                lock(&entry.device).write(offset, data);
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
        let mut bus = Bus::new();
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
        let mut bus = Bus::new();
        bus.insert(recorder(), 0x60, 1).unwrap();
        let mut b = [0u8; 2];
        assert!(!bus.read(0x60, &mut b));
    }

    #[test]
    fn overlaps_and_bad_ranges_are_errors() {
        let mut bus = Bus::new();
        bus.insert(recorder(), 0x100, 0x10).unwrap();
        assert!(matches!(bus.insert(recorder(), 0x10f, 1), Err(BusError::Overlap { .. })));
        assert!(matches!(bus.insert(recorder(), 0xf8, 0x9), Err(BusError::Overlap { .. })));
        assert!(bus.insert(recorder(), 0x110, 1).is_ok());
        assert!(bus.insert(recorder(), 0xf0, 0x10).is_ok());
        assert!(matches!(bus.insert(recorder(), 0x200, 0), Err(BusError::InvalidRange { .. })));
        assert!(matches!(bus.insert(recorder(), u64::MAX, 2), Err(BusError::InvalidRange { .. })));
    }
}
