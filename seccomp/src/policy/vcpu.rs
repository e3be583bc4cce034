//! vCPU threads: `KVM_RUN`, and the port/MMIO exits routed into the devices on the
//! same thread (UART output, virtio-pci configuration that moves BARs, routes MSI-X
//! vectors and activates or resets devices).

use seccompiler::BackendError;

use crate::ioctls::*;
use crate::rules::Rules;

pub(crate) fn rules() -> Result<Rules, BackendError> {
    let mut r = Rules::new();
    r.allow_ioctls(&[
        // The run loop.
        KVM_RUN(),
        // Registers for failure and triple-fault reports.
        KVM_GET_REGS(),
        KVM_GET_SREGS(),
        // On the VM: MSI-X unmask rewrites the GSI routing table; BAR moves
        // re-register the queue-notify ioeventfds; vector set-up registers irqfds.
        KVM_SET_GSI_ROUTING(),
        KVM_IOEVENTFD(),
        KVM_IRQFD(),
        // UART control writes switch console coalescing on and off.
        KVM_REGISTER_COALESCED_MMIO(),
        KVM_UNREGISTER_COALESCED_MMIO(),
        // Feature negotiation and reset set the TAP's offloads.
        TUNSETOFFLOAD(),
    ])?;
    // Interrupts (irqfd writes), worker stop eventfds, and the guest console's
    // output (stdout or a file).
    r.allow(libc::SYS_write);
    // Activating a device sets up its worker before starting the thread.
    r.merge(super::worker_setup::rules()?);
    Ok(r)
}
