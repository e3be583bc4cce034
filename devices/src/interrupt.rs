//! Interrupt lines as eventfds: a device writes the eventfd, KVM (through an irqfd)
//! injects the interrupt, without a trip through any vCPU thread.

use std::io;
use std::sync::Arc;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// An edge-triggered interrupt line backed by an eventfd. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Interrupt {
    event: Arc<EventFd>,
}

impl Interrupt {
    /// A new, unwired line. The VMM registers [`Interrupt::event`] as an irqfd.
    pub fn new() -> io::Result<Self> {
        Ok(Self { event: Arc::new(EventFd::new(EFD_NONBLOCK)?) })
    }

    /// The eventfd to register with KVM.
    pub fn event(&self) -> &EventFd {
        &self.event
    }

    /// Raises the interrupt.
    pub fn trigger(&self) -> io::Result<()> {
        self.event.write(1)
    }
}

impl vm_superio::Trigger for Interrupt {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        Interrupt::trigger(self)
    }
}

/// An MSI message: what the device writes, and where, to interrupt a CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsiMessage {
    pub address: u64,
    pub data: u32,
}

/// Routes MSI vectors to the guest. The VMM implements it with KVM GSI routing and
/// irqfds; devices only see GSIs and eventfds.
pub trait MsiRouter: Send + Sync {
    /// Allocates a GSI and returns it with an eventfd registered as its irqfd.
    fn allocate(&self) -> io::Result<(u32, EventFd)>;
    /// Points `gsi` at `message` (or removes its route with `None`).
    fn set_route(&self, gsi: u32, message: Option<MsiMessage>) -> io::Result<()>;
}
