//! The whole machine's state for live migration: vCPUs, VM (irqchips, PIT, clock),
//! the UART, and every virtio-pci function. Captured only while every vCPU and
//! device worker is parked; restored into a freshly built, not yet started machine.

pub mod vcpu;
pub mod vm;

use serde::{Deserialize, Serialize};

use devices::legacy::serial::SerialSnapshot;
use devices::pci::config_io::BarRemapper;
use devices::sync::lock;
use devices::virtio::pci::VirtioPciSnapshot;

use crate::machine::MachineParts;
use vcpu::VcpuState;
use vm::VmState;

/// Version of [`MachineState`]'s encoding.
pub const STATE_VERSION: u32 = 1;

/// Errors capturing or restoring state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("vCPU {vcpu}: `{step}` failed: {source}")]
    Vcpu { vcpu: usize, step: &'static str, source: kvm_ioctls::Error },
    #[error("VM: `{step}` failed: {source}")]
    Vm { step: &'static str, source: kvm_ioctls::Error },
    #[error("machine state: {0}")]
    Other(String),
}

/// Everything but memory.
#[derive(Serialize, Deserialize)]
pub struct MachineState {
    pub version: u32,
    pub vcpus: Vec<VcpuState>,
    pub vm: VmState,
    pub serial: SerialSnapshot,
    pub virtio: Vec<VirtioPciSnapshot>,
}

impl MachineState {
    /// Encodes for the wire.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes and checks the version.
    pub fn decode(bytes: &[u8]) -> Result<Self, StateError> {
        // The version is the first field: check it before trusting the layout.
        let (version, _): (u32, _) =
            postcard::take_from_bytes(bytes).map_err(|e| StateError::Other(format!("undecodable state: {e}")))?;
        if version != STATE_VERSION {
            return Err(StateError::Other(format!("state version {version}, this tern reads {STATE_VERSION}")));
        }
        let (state, rest): (MachineState, _) =
            postcard::take_from_bytes(bytes).map_err(|e| StateError::Other(format!("undecodable state: {e}")))?;
        if !rest.is_empty() {
            return Err(StateError::Other(format!("{} trailing bytes after the state", rest.len())));
        }
        Ok(state)
    }
}

/// Captures the machine (vCPUs and device workers must be parked).
pub fn capture(parts: &MachineParts, msr_indices: &[u32]) -> Result<MachineState, StateError> {
    let mut vcpus = Vec::with_capacity(parts.vcpus.len());
    for (index, fd) in parts.vcpus.fds().iter().enumerate() {
        vcpus.push(VcpuState::save(&lock(fd), index, msr_indices)?);
    }
    Ok(MachineState {
        version: STATE_VERSION,
        vcpus,
        vm: VmState::save(&parts.vm)?,
        serial: lock(&parts.serial).snapshot(),
        virtio: parts.virtio.iter().map(|d| lock(d).snapshot()).collect(),
    })
}

/// Restores `state` into a machine built for it (same vCPU count and devices), not yet
/// started. Device workers start here (activated at the source's queue positions);
/// vCPUs start when the caller starts the machine.
pub fn restore(parts: &MachineParts, state: &MachineState) -> Result<(), StateError> {
    if state.vcpus.len() != parts.vcpus.len() {
        return Err(StateError::Other(format!("state has {} vCPUs, machine has {}", state.vcpus.len(), parts.vcpus.len())));
    }
    if state.virtio.len() != parts.virtio.len() {
        return Err(StateError::Other(format!("state has {} virtio devices, machine has {}", state.virtio.len(), parts.virtio.len())));
    }
    state.vm.restore_devices(&parts.vm)?;
    for (index, (fd, vcpu)) in parts.vcpus.fds().iter().zip(state.vcpus.iter()).enumerate() {
        vcpu.restore(&lock(fd), index)?;
    }
    lock(&parts.serial).restore(&state.serial).map_err(|e| StateError::Other(e.to_string()))?;
    for (index, (device, snap)) in parts.virtio.iter().zip(state.virtio.iter()).enumerate() {
        let moved = lock(device).restore(snap).map_err(|e| StateError::Other(format!("virtio device {index}: {e}")))?;
        if let Some(mv) = moved {
            parts.mmio.move_bar(mv);
        }
    }
    state.vm.restore_clock(&parts.vm)?;
    Ok(())
}
