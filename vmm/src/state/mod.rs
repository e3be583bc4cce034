//! The whole machine's state for live migration: vCPUs, VM (irqchips, PIT, clock),
//! the UART, and every virtio-pci function. Captured only while every vCPU and
//! device worker is parked; restored into a freshly built, not yet started machine.
//!
//! The state comes from the migration peer, so it is untrusted: decoding bounds every
//! list and refuses KVM structures of the wrong size ([`wire`]), and [`restore`]
//! checks the whole state against the machine ([`MachineState::check`], then each
//! device's own checks) before it loads anything into KVM.

#[cfg(test)]
mod tests;
pub mod vcpu;
pub mod vm;
pub mod wire;
pub mod xsave;

use serde::{Deserialize, Serialize};

use devices::legacy::serial::SerialSnapshot;
use devices::pci::config_io::BarRemapper;
use devices::sync::lock;
use devices::virtio::pci::{RestoreError, VirtioPciSnapshot};

use crate::machine_parts::MachineParts;
use vcpu::VcpuState;
use vm::VmState;
use xsave::XsaveIoctls;

/// Version of [`MachineState`]'s encoding (2: XSAVE area as bytes of the host's size,
/// BAR sizes with each PCI function).
pub const STATE_VERSION: u32 = 2;
/// Largest encoded state accepted.
pub const MAX_STATE_BYTES: usize = 16 << 20;
/// Most vCPUs a state may carry.
pub const MAX_VCPUS: usize = 256;
/// Most virtio-pci functions a state may carry (slots 1..31 of bus 0).
pub const MAX_VIRTIO: usize = 31;

/// Errors capturing or restoring state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("vCPU {vcpu}: `{step}` failed: {source}")]
    Vcpu { vcpu: usize, step: &'static str, source: kvm_ioctls::Error },
    #[error("VM: `{step}` failed: {source}")]
    Vm { step: &'static str, source: kvm_ioctls::Error },
    #[error("machine state: {0}")]
    Other(String),
    #[error("state version {found}, this tern reads version {STATE_VERSION}")]
    Version { found: u32 },
    #[error("state of {0} bytes is larger than the {MAX_STATE_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("undecodable state: {0}")]
    Undecodable(String),
    #[error("state has {saved} vCPUs, machine has {own}")]
    VcpuCount { saved: usize, own: usize },
    #[error("state has {saved} virtio devices, machine has {own}")]
    VirtioCount { saved: usize, own: usize },
    #[error("vCPU {vcpu} state: {reason}")]
    VcpuRefused { vcpu: usize, reason: String },
    #[error("machine state refused: {0}")]
    Refused(String),
    #[error("virtio-pci 00:{slot:02x}.0: {source}")]
    Virtio { slot: usize, source: RestoreError },
}

/// Everything but memory.
#[derive(Serialize, Deserialize)]
pub struct MachineState {
    pub version: u32,
    #[serde(deserialize_with = "devices::bounded::vec::<_, _, MAX_VCPUS>")]
    pub vcpus: Vec<VcpuState>,
    pub vm: VmState,
    pub serial: SerialSnapshot,
    #[serde(deserialize_with = "devices::bounded::vec::<_, _, MAX_VIRTIO>")]
    pub virtio: Vec<VirtioPciSnapshot>,
}

impl MachineState {
    /// Encodes for the wire.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes and checks the version and every bound decoding can check (list
    /// lengths, KVM structure sizes); [`MachineState::check`] does the rest.
    pub fn decode(bytes: &[u8]) -> Result<Self, StateError> {
        if bytes.len() > MAX_STATE_BYTES {
            return Err(StateError::TooLarge(bytes.len()));
        }
        // The version is the first field: check it before trusting the layout.
        let (found, _): (u32, _) = postcard::take_from_bytes(bytes).map_err(|e| StateError::Undecodable(e.to_string()))?;
        if found != STATE_VERSION {
            return Err(StateError::Version { found });
        }
        let _ = devices::bounded::take_refusal();
        let (state, rest): (MachineState, _) = postcard::take_from_bytes(bytes)
            .map_err(|e| StateError::Undecodable(devices::bounded::take_refusal().unwrap_or_else(|| e.to_string())))?;
        if !rest.is_empty() {
            return Err(StateError::Undecodable(format!("{} trailing bytes after the state", rest.len())));
        }
        Ok(state)
    }

    /// Checks the state against a machine with `vcpus` vCPUs and `virtio` virtio-pci
    /// functions whose KVM moves XSAVE areas with `xsave`: counts, and each vCPU's and
    /// the VM's own checks. Devices check their snapshots as they restore.
    pub fn check(&self, vcpus: usize, virtio: usize, xsave: XsaveIoctls) -> Result<(), StateError> {
        if self.vcpus.len() != vcpus {
            return Err(StateError::VcpuCount { saved: self.vcpus.len(), own: vcpus });
        }
        if self.virtio.len() != virtio {
            return Err(StateError::VirtioCount { saved: self.virtio.len(), own: virtio });
        }
        self.vm.check()?;
        for (index, vcpu) in self.vcpus.iter().enumerate() {
            vcpu.check(index, xsave)?;
        }
        Ok(())
    }
}

/// The PCI slot of virtio device `index` (`pci_devices::add_pci_devices` puts them in
/// slots 1.. in order, after the host bridge).
fn slot_of(index: usize) -> usize {
    index + 1
}

/// Captures the machine (vCPUs and device workers must be parked).
pub fn capture(parts: &MachineParts, msr_indices: &[u32]) -> Result<MachineState, StateError> {
    let xsave = XsaveIoctls::probe(&parts.vm);
    let mut vcpus = Vec::with_capacity(parts.vcpus.len());
    for (index, fd) in parts.vcpus.fds().iter().enumerate() {
        vcpus.push(VcpuState::save(&lock(fd), index, msr_indices, xsave)?);
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
/// started, after checking it ([`MachineState::check`]). Device workers start here
/// (activated at the source's queue positions); vCPUs start when the caller starts
/// the machine.
pub fn restore(parts: &MachineParts, state: &MachineState) -> Result<(), StateError> {
    let xsave = XsaveIoctls::probe(&parts.vm);
    state.check(parts.vcpus.len(), parts.virtio.len(), xsave)?;
    state.vm.restore_devices(&parts.vm)?;
    for (index, (fd, vcpu)) in parts.vcpus.fds().iter().zip(state.vcpus.iter()).enumerate() {
        vcpu.restore(&lock(fd), index, xsave)?;
    }
    lock(&parts.serial).restore(&state.serial).map_err(|e| StateError::Refused(format!("UART: {e}")))?;
    for (index, (device, snap)) in parts.virtio.iter().zip(state.virtio.iter()).enumerate() {
        let moved = lock(device).restore(snap).map_err(|source| StateError::Virtio { slot: slot_of(index), source })?;
        if let Some(mv) = moved {
            parts.mmio.move_bar(mv);
        }
    }
    state.vm.restore_clock(&parts.vm)?;
    Ok(())
}
