//! One vCPU's architectural state: what KVM exposes, captured while the vCPU is parked
//! and restored into a fresh vCPU before it first runs.

use kvm_bindings::{
    kvm_cpuid_entry2, kvm_debugregs, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs, kvm_sregs,
    kvm_vcpu_events, kvm_xcrs, CpuId, Msrs, KVM_MAX_CPUID_ENTRIES, KVM_MAX_MSR_ENTRIES,
};
use kvm_ioctls::{Kvm, VcpuFd};
use serde::{Deserialize, Serialize};

use super::xsave::{self, XsaveIoctls};
use super::StateError;

/// Highest `kvm_mp_state` value KVM defines (KVM_MP_STATE_AP_RESET_HOLD).
const MAX_MP_STATE: u32 = 10;

/// Everything KVM keeps about a vCPU that a guest can observe. Decoding refuses KVM
/// structures of any other size than their own and lists longer than KVM takes.
#[derive(Serialize, Deserialize)]
pub struct VcpuState {
    #[serde(deserialize_with = "super::wire::exact_vec::<_, _, KVM_MAX_CPUID_ENTRIES>")]
    pub cpuid: Vec<kvm_cpuid_entry2>,
    #[serde(deserialize_with = "super::wire::exact")]
    pub regs: kvm_regs,
    #[serde(deserialize_with = "super::wire::exact")]
    pub sregs: kvm_sregs,
    /// The XSAVE area's bytes: 4 KiB, or the source KVM's KVM_CAP_XSAVE2 size.
    #[serde(deserialize_with = "devices::bounded::vec::<_, _, { xsave::MAX_SIZE }>")]
    pub xsave: Vec<u8>,
    #[serde(deserialize_with = "super::wire::exact")]
    pub xcrs: kvm_xcrs,
    #[serde(deserialize_with = "super::wire::exact")]
    pub lapic: kvm_lapic_state,
    #[serde(deserialize_with = "super::wire::exact_vec::<_, _, KVM_MAX_MSR_ENTRIES>")]
    pub msrs: Vec<kvm_msr_entry>,
    #[serde(deserialize_with = "super::wire::exact")]
    pub debugregs: kvm_debugregs,
    #[serde(deserialize_with = "super::wire::exact")]
    pub events: kvm_vcpu_events,
    #[serde(deserialize_with = "super::wire::exact")]
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
    pub fn save(fd: &VcpuFd, index: usize, msr_indices: &[u32], xsave: XsaveIoctls) -> Result<Self, StateError> {
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
            xsave: xsave.get(fd, index)?,
            xcrs: fd.get_xcrs().map_err(ioctl(index, "KVM_GET_XCRS"))?,
            lapic: fd.get_lapic().map_err(ioctl(index, "KVM_GET_LAPIC"))?,
            msrs: msrs.as_slice().to_vec(),
            debugregs: fd.get_debug_regs().map_err(ioctl(index, "KVM_GET_DEBUGREGS"))?,
            events: fd.get_vcpu_events().map_err(ioctl(index, "KVM_GET_VCPU_EVENTS"))?,
            mp_state: fd.get_mp_state().map_err(ioctl(index, "KVM_GET_MP_STATE"))?,
        })
    }

    /// Checks what KVM would not report clearly (or at all) about state received from
    /// a peer, before any of it is loaded into vCPU `index`.
    pub fn check(&self, index: usize, xsave: XsaveIoctls) -> Result<(), StateError> {
        let refuse = |reason: String| Err(StateError::VcpuRefused { vcpu: index, reason });
        if let Err(reason) = xsave.check(self.xsave.len()) {
            return refuse(reason);
        }
        if self.cpuid.is_empty() {
            return refuse("no CPUID entries".into());
        }
        let xcrs = self.xcrs.nr_xcrs as usize;
        if xcrs > self.xcrs.xcrs.len() {
            return refuse(format!("{xcrs} XCRs, at most {}", self.xcrs.xcrs.len()));
        }
        if self.mp_state.mp_state > MAX_MP_STATE {
            return refuse(format!("unknown MP state {}", self.mp_state.mp_state));
        }
        Ok(())
    }

    /// Loads the state into a vCPU that has not run. The LAPIC goes in before the MSRs
    /// (the TSC deadline MSR only sticks in TSC-deadline mode), events and MP state last.
    pub fn restore(&self, fd: &VcpuFd, index: usize, xsave: XsaveIoctls) -> Result<(), StateError> {
        self.check(index, xsave)?;
        let cpuid = CpuId::from_entries(&self.cpuid).map_err(|e| StateError::Other(format!("CPUID: {e:?}")))?;
        fd.set_cpuid2(&cpuid).map_err(ioctl(index, "KVM_SET_CPUID2"))?;
        fd.set_sregs(&self.sregs).map_err(ioctl(index, "KVM_SET_SREGS"))?;
        fd.set_regs(&self.regs).map_err(ioctl(index, "KVM_SET_REGS"))?;
        xsave.set(fd, index, &self.xsave)?;
        fd.set_xcrs(&self.xcrs).map_err(ioctl(index, "KVM_SET_XCRS"))?;
        fd.set_lapic(&self.lapic).map_err(ioctl(index, "KVM_SET_LAPIC"))?;
        let msrs = Msrs::from_entries(&self.msrs).map_err(|e| StateError::Other(format!("MSR list: {e:?}")))?;
        let written = fd.set_msrs(&msrs).map_err(ioctl(index, "KVM_SET_MSRS"))?;
        if written != self.msrs.len() {
            let failed = self.msrs.get(written).map(|m| m.index).unwrap_or(0);
            return Err(StateError::VcpuRefused { vcpu: index, reason: format!("KVM refused MSR {failed:#x} ({written} of {} set)", self.msrs.len()) });
        }
        fd.set_debug_regs(&self.debugregs).map_err(ioctl(index, "KVM_SET_DEBUGREGS"))?;
        fd.set_vcpu_events(&self.events).map_err(ioctl(index, "KVM_SET_VCPU_EVENTS"))?;
        fd.set_mp_state(self.mp_state).map_err(ioctl(index, "KVM_SET_MP_STATE"))?;
        Ok(())
    }
}
