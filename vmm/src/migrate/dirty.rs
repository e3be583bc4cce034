//! Which guest pages changed: KVM's dirty log (the guest's own writes) ORed with the
//! vm-memory bitmap (writes devices made through vm-memory, and the ranges device
//! workers marked after raw I/O into guest memory).

use kvm_ioctls::VmFd;
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use crate::kvm_vm::{self, KvmVmError};
use crate::memory::GuestMemoryMmap;

const PAGE: u64 = 4096;

/// Dirty-page tracking for the duration of a migration.
pub struct DirtyTracker<'a> {
    vm: &'a VmFd,
    mem: &'a GuestMemoryMmap,
    active: bool,
}

impl<'a> DirtyTracker<'a> {
    /// Turns KVM's dirty logging on for every slot and clears the device bitmaps:
    /// from now on every write is seen.
    pub fn start(vm: &'a VmFd, mem: &'a GuestMemoryMmap) -> Result<Self, KvmVmError> {
        kvm_vm::register_memory(vm, mem, true)?;
        for region in mem.iter() {
            std::ops::Deref::deref(region).bitmap().reset();
        }
        Ok(Self { vm, mem, active: true })
    }

    /// Pages written since the last call (or since `start`), ascending; reading clears.
    pub fn take(&self) -> Result<Vec<u64>, KvmVmError> {
        let mut pages = Vec::new();
        for (slot, region) in self.mem.iter().enumerate() {
            let slot = slot as u32;
            let mut words = self
                .vm
                .get_dirty_log(slot, region.len() as usize)
                .map_err(|source| KvmVmError::DirtyLog { slot, source })?;
            let device_words = std::ops::Deref::deref(region).bitmap().get_and_reset();
            for (w, d) in words.iter_mut().zip(device_words.iter()) {
                *w |= *d;
            }
            let base = region.start_addr().0;
            for (word_index, word) in words.iter().enumerate() {
                let mut bits = *word;
                while bits != 0 {
                    let bit = u64::from(bits.trailing_zeros());
                    bits &= bits - 1;
                    pages.push(base + (word_index as u64 * 64 + bit) * PAGE);
                }
            }
        }
        Ok(pages)
    }

    /// Every page of guest memory (round 0).
    pub fn all_pages(&self) -> Vec<u64> {
        self.mem
            .iter()
            .flat_map(|r| {
                let base = r.start_addr().0;
                (0..r.len() / PAGE).map(move |i| base + i * PAGE)
            })
            .collect()
    }

    /// Turns dirty logging off again (the migration failed and the guest stays here).
    pub fn stop(mut self) {
        self.active = false;
        if let Err(e) = kvm_vm::register_memory(self.vm, self.mem, false) {
            tracing::warn!("turning dirty logging off: {e}");
        }
    }
}

impl Drop for DirtyTracker<'_> {
    fn drop(&mut self) {
        if self.active {
            let _ = kvm_vm::register_memory(self.vm, self.mem, false);
        }
    }
}
