//! The KVM VM: creation, interrupt controllers and timers, guest memory slots and
//! the dirty-page log.

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_MEM_LOG_DIRTY_PAGES, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use crate::layout::{KVM_IDENTITY_MAP_ADDR, KVM_TSS_ADDR};
use crate::memory::GuestMemoryMmap;

/// Errors creating or driving the KVM VM.
#[derive(Debug, thiserror::Error)]
pub enum KvmVmError {
    #[error("cannot create the KVM VM: {0}")]
    CreateVm(kvm_ioctls::Error),
    #[error("KVM setup step `{step}` failed: {source}")]
    Setup { step: &'static str, source: kvm_ioctls::Error },
    #[error("cannot register guest memory slot {slot} at {addr:#x} ({size} bytes): {source}")]
    MemorySlot { slot: u32, addr: u64, size: u64, source: kvm_ioctls::Error },
    #[error("reading the dirty log of slot {slot}: {source}")]
    DirtyLog { slot: u32, source: kvm_ioctls::Error },
}

/// Options for [`create_vm`].
#[derive(Clone, Copy, Debug)]
pub struct VmOptions {
    /// In-kernel PIC + IOAPIC + LAPICs and PIT (always on for Linux guests; tiny test
    /// guests may run without, so their HLT reaches userspace).
    pub in_kernel_irqchip: bool,
    /// Register memory slots with KVM's dirty-page logging on.
    pub track_dirty_pages: bool,
}

/// Creates the VM, its irqchip and PIT (when asked) and registers guest memory.
pub fn create_vm(kvm: &Kvm, mem: &GuestMemoryMmap, options: VmOptions) -> Result<VmFd, KvmVmError> {
    let vm = kvm.create_vm().map_err(KvmVmError::CreateVm)?;
    let step = |step: &'static str| move |source| KvmVmError::Setup { step, source };
    vm.set_tss_address(KVM_TSS_ADDR as usize).map_err(step("KVM_SET_TSS_ADDR"))?;
    vm.set_identity_map_address(KVM_IDENTITY_MAP_ADDR).map_err(step("KVM_SET_IDENTITY_MAP_ADDR"))?;
    if options.in_kernel_irqchip {
        vm.create_irq_chip().map_err(step("KVM_CREATE_IRQCHIP"))?;
        let pit = kvm_pit_config { flags: KVM_PIT_SPEAKER_DUMMY, ..Default::default() };
        vm.create_pit2(pit).map_err(step("KVM_CREATE_PIT2"))?;
    }
    register_memory(&vm, mem, options.track_dirty_pages)?;
    Ok(vm)
}

/// Registers every guest memory region as a KVM memory slot (slot = region index).
pub fn register_memory(vm: &VmFd, mem: &GuestMemoryMmap, track_dirty_pages: bool) -> Result<(), KvmVmError> {
    for (slot, region) in mem.iter().enumerate() {
        let slot = slot as u32;
        let addr = region.start_addr().0;
        let size = region.len();
        let desc = kvm_userspace_memory_region {
            slot,
            guest_phys_addr: addr,
            memory_size: size,
            userspace_addr: region.as_ptr() as u64,
            flags: if track_dirty_pages { KVM_MEM_LOG_DIRTY_PAGES } else { 0 },
        };
        // SAFETY: the region is a live mmap owned by `mem`, which outlives the VM (the
        // machine holds both and drops the VM first); its address and size are the
        // mapping's own, so KVM maps exactly guest memory and nothing else.
        unsafe { vm.set_user_memory_region(desc) }
            .map_err(|source| KvmVmError::MemorySlot { slot, addr, size, source })?;
    }
    Ok(())
}

/// Guest-physical addresses of the pages KVM logged as written since the last call,
/// for every slot. Reading the log clears it.
pub fn take_dirty_pages(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<Vec<u64>, KvmVmError> {
    const PAGE: u64 = 4096;
    let mut pages = Vec::new();
    for (slot, region) in mem.iter().enumerate() {
        let slot = slot as u32;
        let bitmap = vm
            .get_dirty_log(slot, region.len() as usize)
            .map_err(|source| KvmVmError::DirtyLog { slot, source })?;
        for (word_index, word) in bitmap.iter().enumerate() {
            let mut bits = *word;
            while bits != 0 {
                let bit = u64::from(bits.trailing_zeros());
                bits &= bits - 1;
                pages.push(region.start_addr().0 + (word_index as u64 * 64 + bit) * PAGE);
            }
        }
    }
    Ok(pages)
}
