//! The handle on a machine that threads other than its owner share: the migration
//! source reads and pauses through it, state capture and restore work on it.

use std::sync::{Arc, Mutex};

use devices::bus::Bus;
use devices::legacy::Serial;
use devices::virtio::pci::VirtioPciDevice;
use kvm_ioctls::VmFd;

use crate::memory::GuestMemoryMmap;
use crate::vcpu::set::VcpuSet;

/// The parts of a machine that threads other than its owner (migration) work with.
#[derive(Clone)]
pub struct MachineParts {
    pub vm: Arc<VmFd>,
    pub mem: GuestMemoryMmap,
    pub vcpus: Arc<VcpuSet>,
    pub virtio: Vec<Arc<Mutex<VirtioPciDevice>>>,
    pub serial: Arc<Mutex<Serial>>,
    pub mmio: Arc<Bus>,
    pub cpus: u8,
    pub memory: u64,
    /// vCPU 0's CPUID as set at creation (what a migration destination must offer).
    pub cpuid: Arc<Vec<kvm_bindings::kvm_cpuid_entry2>>,
    /// MSRs this host lets us read and write, probed at creation (migration saves them).
    pub msr_indices: Arc<Vec<u32>>,
}
