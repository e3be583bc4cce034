//! vCPU threads: `KVM_RUN`, and the port/MMIO exits routed into the devices on the
//! same thread (UART output, virtio-pci configuration that moves BARs, routes MSI-X
//! vectors and activates or resets devices).

use seccompiler::BackendError;

use crate::ioctls::*;
use crate::rules::{arg_eq, Rules};

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
    // Activating a device creates its worker's eventfds, epoll set and timer
    // before starting the thread.
    r.allow(libc::SYS_eventfd2);
    r.allow(libc::SYS_epoll_create1);
    r.allow(libc::SYS_epoll_ctl);
    r.allow(libc::SYS_timerfd_create);
    // ... and hands it copies of the queue-notify eventfds (EventFd::try_clone is
    // File::try_clone: F_DUPFD_CLOEXEC), and nothing else of fcntl.
    r.allow_when(libc::SYS_fcntl, vec![arg_eq(1, libc::F_DUPFD_CLOEXEC as u64)?])?;
    Ok(r)
}
