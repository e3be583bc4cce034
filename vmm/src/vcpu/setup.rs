//! Architectural vCPU state before the first KVM_RUN: CPUID, MSRs, FPU, LAPIC LVTs.

use kvm_bindings::{kvm_fpu, kvm_lapic_state, kvm_msr_entry, CpuId, Msrs};
use kvm_ioctls::VcpuFd;

/// Errors initialising a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum VcpuSetupError {
    #[error("vCPU {vcpu}: `{step}` failed: {source}")]
    Ioctl { vcpu: u8, step: &'static str, source: kvm_ioctls::Error },
    #[error("vCPU {vcpu}: KVM accepted {set} of {wanted} boot MSRs")]
    PartialMsrs { vcpu: u8, set: usize, wanted: usize },
    #[error("vCPU {vcpu}: {reason}")]
    Other { vcpu: u8, reason: String },
}

const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MISC_ENABLE_FAST_STRING: u64 = 1;
/// MTRRs enabled, default memory type write-back.
const MTRR_ENABLE_WRITEBACK: u64 = (1 << 11) | 6;

/// The MSR values every vCPU starts with.
pub fn boot_msr_entries() -> Vec<kvm_msr_entry> {
    [
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WRITEBACK),
    ]
    .into_iter()
    .map(|(index, data)| kvm_msr_entry { index, data, ..Default::default() })
    .collect()
}

/// LAPIC register offsets and delivery modes.
const APIC_LVT_LINT0: usize = 0x350;
const APIC_LVT_LINT1: usize = 0x360;
const APIC_MODE_EXTINT: u32 = 0x7;
const APIC_MODE_NMI: u32 = 0x4;

fn lapic_reg(lapic: &kvm_lapic_state, offset: usize) -> u32 {
    let bytes: [u8; 4] = std::array::from_fn(|i| lapic.regs[offset + i] as u8);
    u32::from_le_bytes(bytes)
}

fn set_lapic_reg(lapic: &mut kvm_lapic_state, offset: usize, value: u32) {
    for (i, b) in value.to_le_bytes().iter().enumerate() {
        lapic.regs[offset + i] = *b as _;
    }
}

fn with_delivery_mode(reg: u32, mode: u32) -> u32 {
    (reg & !0x700) | (mode << 8)
}

/// LINT0 = ExtINT (the PIC), LINT1 = NMI, as a PC's BIOS leaves them.
pub fn configure_lint(lapic: &mut kvm_lapic_state) {
    let lint0 = lapic_reg(lapic, APIC_LVT_LINT0);
    set_lapic_reg(lapic, APIC_LVT_LINT0, with_delivery_mode(lint0, APIC_MODE_EXTINT));
    let lint1 = lapic_reg(lapic, APIC_LVT_LINT1);
    set_lapic_reg(lapic, APIC_LVT_LINT1, with_delivery_mode(lint1, APIC_MODE_NMI));
}

/// Applies CPUID, MSRs, FPU and (with an in-kernel irqchip) LAPIC LINT setup.
pub fn configure_vcpu(vcpu: &VcpuFd, index: u8, cpuid: &CpuId, in_kernel_irqchip: bool) -> Result<(), VcpuSetupError> {
    let ioctl = |step: &'static str| move |source| VcpuSetupError::Ioctl { vcpu: index, step, source };
    vcpu.set_cpuid2(cpuid).map_err(ioctl("KVM_SET_CPUID2"))?;
    let entries = boot_msr_entries();
    let msrs = Msrs::from_entries(&entries)
        .map_err(|e| VcpuSetupError::Other { vcpu: index, reason: format!("building MSR list: {e:?}") })?;
    let set = vcpu.set_msrs(&msrs).map_err(ioctl("KVM_SET_MSRS"))?;
    if set != entries.len() {
        return Err(VcpuSetupError::PartialMsrs { vcpu: index, set, wanted: entries.len() });
    }
    let fpu = kvm_fpu { fcw: 0x37f, mxcsr: 0x1f80, ..Default::default() };
    vcpu.set_fpu(&fpu).map_err(ioctl("KVM_SET_FPU"))?;
    if in_kernel_irqchip {
        let mut lapic = vcpu.get_lapic().map_err(ioctl("KVM_GET_LAPIC"))?;
        configure_lint(&mut lapic);
        vcpu.set_lapic(&lapic).map_err(ioctl("KVM_SET_LAPIC"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lint_delivery_modes() {
        let mut lapic = kvm_lapic_state::default();
        set_lapic_reg(&mut lapic, APIC_LVT_LINT0, 0x0001_0000); // masked, fixed
        configure_lint(&mut lapic);
        assert_eq!(lapic_reg(&lapic, APIC_LVT_LINT0), 0x0001_0700);
        assert_eq!(lapic_reg(&lapic, APIC_LVT_LINT1), 0x0000_0400);
    }
}
