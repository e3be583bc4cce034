//! One vCPU's architectural state: what KVM exposes, captured while the vCPU is parked
//! and restored into a fresh vCPU before it first runs.

use kvm_bindings::{
    kvm_cpuid_entry2, kvm_debugregs, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs, kvm_sregs,
    kvm_vcpu_events, kvm_xcrs, kvm_xsave, CpuId, Msrs, KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::{Kvm, VcpuFd};
use serde::{Deserialize, Serialize};

use super::StateError;

/// Everything KVM keeps about a vCPU that a guest can observe.
#[derive(Serialize, Deserialize)]
pub struct VcpuState {
    pub cpuid: Vec<kvm_cpuid_entry2>,
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    pub xsave: kvm_xsave,
    pub xcrs: kvm_xcrs,
    pub lapic: kvm_lapic_state,
    pub msrs: Vec<kvm_msr_entry>,
    pub debugregs: kvm_debugregs,
    pub events: kvm_vcpu_events,
    pub mp_state: kvm_mp_state,
}

fn ioctl(vcpu: usize, step: &'static str) -> impl Fn(kvm_ioctls::Error) -> StateError {
    move |source| StateError::Vcpu { vcpu, step, source }
}

/// The MSRs worth migrating: every index KVM lists that this vCPU can actually read.
pub fn migratable_msrs(kvm: &Kvm, fd: &VcpuFd) -> Result<Vec<u32>, StateError> {
    let list = kvm.get_msr_index_list().map_err(|source| StateError::Vcpu { vcpu: 0, step: "KVM_GET_MSR_INDEX_LIST", source })?;
    let mut usable = Vec::new();
    for &index in list.as_slice() {
        let Ok(mut one) = Msrs::from_entries(&[kvm_msr_entry { index, ..Default::default() }]) else { continue };
        if fd.get_msrs(&mut one).is_ok_and(|n| n == 1) {
            usable.push(index);
        }
    }
    Ok(usable)
}

impl VcpuState {
    /// Captures vCPU `index` (parked) including the MSRs in `msr_indices`.
    pub fn save(fd: &VcpuFd, index: usize, msr_indices: &[u32]) -> Result<Self, StateError> {
        let cpuid = fd.get_cpuid2(KVM_MAX_CPUID_ENTRIES).map_err(ioctl(index, "KVM_GET_CPUID2"))?;
        let entries: Vec<kvm_msr_entry> = msr_indices.iter().map(|&i| kvm_msr_entry { index: i, ..Default::default() }).collect();
        let mut msrs = Msrs::from_entries(&entries).map_err(|e| StateError::Other(format!("MSR list: {e:?}")))?;
        let read = fd.get_msrs(&mut msrs).map_err(ioctl(index, "KVM_GET_MSRS"))?;
        if read != entries.len() {
            return Err(StateError::Other(format!("vCPU {index}: KVM read {read} of {} MSRs", entries.len())));
        }
        Ok(Self {
            cpuid: cpuid.as_slice().to_vec(),
            regs: fd.get_regs().map_err(ioctl(index, "KVM_GET_REGS"))?,
            sregs: fd.get_sregs().map_err(ioctl(index, "KVM_GET_SREGS"))?,
            xsave: fd.get_xsave().map_err(ioctl(index, "KVM_GET_XSAVE"))?,
            xcrs: fd.get_xcrs().map_err(ioctl(index, "KVM_GET_XCRS"))?,
            lapic: fd.get_lapic().map_err(ioctl(index, "KVM_GET_LAPIC"))?,
            msrs: msrs.as_slice().to_vec(),
            debugregs: fd.get_debug_regs().map_err(ioctl(index, "KVM_GET_DEBUGREGS"))?,
            events: fd.get_vcpu_events().map_err(ioctl(index, "KVM_GET_VCPU_EVENTS"))?,
            mp_state: fd.get_mp_state().map_err(ioctl(index, "KVM_GET_MP_STATE"))?,
        })
    }

    /// Loads the state into a vCPU that has not run. The LAPIC goes in before the MSRs
    /// (the TSC deadline MSR only sticks in TSC-deadline mode), events and MP state last.
    pub fn restore(&self, fd: &VcpuFd, index: usize) -> Result<(), StateError> {
        let cpuid = CpuId::from_entries(&self.cpuid).map_err(|e| StateError::Other(format!("CPUID: {e:?}")))?;
        fd.set_cpuid2(&cpuid).map_err(ioctl(index, "KVM_SET_CPUID2"))?;
        fd.set_sregs(&self.sregs).map_err(ioctl(index, "KVM_SET_SREGS"))?;
        fd.set_regs(&self.regs).map_err(ioctl(index, "KVM_SET_REGS"))?;
        // SAFETY: the buffer came from KVM_GET_XSAVE of the same size (kvm_xsave is the
        // fixed 4 KiB legacy layout), so KVM reads only initialised bytes.
        unsafe { fd.set_xsave(&self.xsave) }.map_err(ioctl(index, "KVM_SET_XSAVE"))?;
        fd.set_xcrs(&self.xcrs).map_err(ioctl(index, "KVM_SET_XCRS"))?;
        fd.set_lapic(&self.lapic).map_err(ioctl(index, "KVM_SET_LAPIC"))?;
        let msrs = Msrs::from_entries(&self.msrs).map_err(|e| StateError::Other(format!("MSR list: {e:?}")))?;
        let written = fd.set_msrs(&msrs).map_err(ioctl(index, "KVM_SET_MSRS"))?;
        if written != self.msrs.len() {
            let failed = self.msrs.get(written).map(|m| m.index).unwrap_or(0);
            return Err(StateError::Other(format!("vCPU {index}: KVM refused MSR {failed:#x} ({written} of {} set)", self.msrs.len())));
        }
        fd.set_debug_regs(&self.debugregs).map_err(ioctl(index, "KVM_SET_DEBUGREGS"))?;
        fd.set_vcpu_events(&self.events).map_err(ioctl(index, "KVM_SET_VCPU_EVENTS"))?;
        fd.set_mp_state(self.mp_state).map_err(ioctl(index, "KVM_SET_MP_STATE"))?;
        Ok(())
    }
}
