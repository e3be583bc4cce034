//! What capturing the machine state needs, shared by the threads that do it (the
//! migration source and the snapshot thread): vCPUs kicked into their pause, the VM's
//! and each parked vCPU's state read, and the device workers parked and started
//! again.

use seccompiler::BackendError;

use crate::ioctls::*;
use crate::rules::Rules;

pub(crate) fn rules() -> Result<Rules, BackendError> {
    let mut r = Rules::new();
    r.allow_ioctls(&[
        // The XSAVE area's size (KVM_CAP_XSAVE2), asked of the VM at each capture.
        KVM_CHECK_EXTENSION(),
        // Machine state: PIC/IOAPIC, PIT, kvmclock ...
        KVM_GET_IRQCHIP(),
        KVM_GET_PIT2(),
        KVM_GET_CLOCK(),
        // ... and each parked vCPU's.
        KVM_GET_REGS(),
        KVM_GET_SREGS(),
        KVM_GET_XSAVE(),
        KVM_GET_XSAVE2(),
        KVM_GET_XCRS(),
        KVM_GET_LAPIC(),
        KVM_GET_MSRS(),
        KVM_GET_DEBUGREGS(),
        KVM_GET_VCPU_EVENTS(),
        KVM_GET_MP_STATE(),
        KVM_GET_CPUID2(),
        // Workers parked and started again change the TAP's offloads.
        TUNSETOFFLOAD(),
    ])?;
    // Pausing kicks the vCPUs (pthread_kill: tgkill on getpid()).
    r.allow(libc::SYS_tgkill);
    r.allow(libc::SYS_getpid);
    // Device workers started again after the capture (or a failed migration).
    r.merge(super::worker_setup::rules()?);
    Ok(r)
}
