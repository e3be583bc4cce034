//! The handle on a machine that threads other than its owner share: the migration
//! source reads and pauses through it, state capture and restore work on it.

use std::sync::{Arc, Mutex};

use devices::sync::lock;

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
    /// What the guest boots at its next reset, described for a migration destination
    /// or a snapshot (`None`: nothing, or nothing tern can describe).
    pub boot_record: Option<migration::messages::BootRecord>,
}

impl MachineParts {
    /// Parks every device worker at a request boundary (the vCPUs must be parked
    /// already): what migration's stop-and-copy and a snapshot capture need.
    pub fn pause_devices(&self) -> Result<(), String> {
        for device in &self.virtio {
            lock(device).pause_device().map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Makes every completed guest write to a disk durable.
    pub fn flush_devices(&self) -> Result<(), String> {
        for device in &self.virtio {
            lock(device).device_mut().flush().map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Restarts the device workers, then the vCPUs: the guest runs again.
    pub fn resume_devices_and_vcpus(&self) -> Result<(), String> {
        for device in &self.virtio {
            lock(device).resume_device().map_err(|e| e.to_string())?;
        }
        self.vcpus.resume();
        Ok(())
    }
}
