//! KVM GSI routing for MSI vectors, plus irqfds.
//!
//! KVM_SET_GSI_ROUTING replaces the whole table, so the table kept here always holds
//! the default PIC/IOAPIC routes for the legacy GSIs alongside the MSI routes.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};

use devices::interrupt::{MsiMessage, MsiRouter};
use devices::sync::lock;
use kvm_bindings::{
    kvm_irq_routing_entry, KvmIrqRouting, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
    KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI,
};
use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// GSIs below this are the IOAPIC's pins.
pub const IOAPIC_PINS: u32 = 24;

/// Allocates GSIs for MSI vectors and keeps KVM's routing table.
pub struct KvmMsiRouter {
    vm: Arc<VmFd>,
    state: Mutex<RouterState>,
}

struct RouterState {
    next_gsi: u32,
    msi_routes: BTreeMap<u32, MsiMessage>,
}

fn irqchip_entry(gsi: u32, chip: u32, pin: u32) -> kvm_irq_routing_entry {
    let mut e = kvm_irq_routing_entry { gsi, type_: KVM_IRQ_ROUTING_IRQCHIP, ..Default::default() };
    e.u.irqchip.irqchip = chip;
    e.u.irqchip.pin = pin;
    e
}

fn msi_entry(gsi: u32, m: MsiMessage) -> kvm_irq_routing_entry {
    let mut e = kvm_irq_routing_entry { gsi, type_: KVM_IRQ_ROUTING_MSI, ..Default::default() };
    e.u.msi.address_lo = m.address as u32;
    e.u.msi.address_hi = (m.address >> 32) as u32;
    e.u.msi.data = m.data;
    e
}

/// The routes KVM installs by default with an in-kernel irqchip.
fn default_routes() -> Vec<kvm_irq_routing_entry> {
    let mut entries = Vec::new();
    for gsi in 0..16 {
        let (chip, pin) = if gsi < 8 { (KVM_IRQCHIP_PIC_MASTER, gsi) } else { (KVM_IRQCHIP_PIC_SLAVE, gsi - 8) };
        entries.push(irqchip_entry(gsi, chip, pin));
    }
    for gsi in 0..IOAPIC_PINS {
        entries.push(irqchip_entry(gsi, KVM_IRQCHIP_IOAPIC, gsi));
    }
    entries
}

impl KvmMsiRouter {
    /// A router for `vm` (which has an in-kernel irqchip).
    pub fn new(vm: Arc<VmFd>) -> Self {
        Self { vm, state: Mutex::new(RouterState { next_gsi: IOAPIC_PINS, msi_routes: BTreeMap::new() }) }
    }

    fn apply(&self, state: &RouterState) -> io::Result<()> {
        let mut entries = default_routes();
        entries.extend(state.msi_routes.iter().map(|(gsi, m)| msi_entry(*gsi, *m)));
        let routing = KvmIrqRouting::from_entries(&entries).map_err(|e| io::Error::other(format!("routing table: {e:?}")))?;
        self.vm.set_gsi_routing(&routing).map_err(|e| io::Error::from_raw_os_error(e.errno()))
    }
}

impl MsiRouter for KvmMsiRouter {
    fn allocate(&self) -> io::Result<(u32, EventFd)> {
        let gsi = {
            let mut state = lock(&self.state);
            let gsi = state.next_gsi;
            state.next_gsi += 1;
            gsi
        };
        let fd = EventFd::new(EFD_NONBLOCK)?;
        self.vm.register_irqfd(&fd, gsi).map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
        Ok((gsi, fd))
    }

    fn set_route(&self, gsi: u32, message: Option<MsiMessage>) -> io::Result<()> {
        let mut state = lock(&self.state);
        match message {
            Some(m) => state.msi_routes.insert(gsi, m),
            None => state.msi_routes.remove(&gsi),
        };
        self.apply(&state)
    }
}

/// Registers virtio notify addresses as KVM ioeventfds.
pub struct KvmIoEvents {
    vm: Arc<VmFd>,
}

impl KvmIoEvents {
    /// Registrar for `vm`.
    pub fn new(vm: Arc<VmFd>) -> Self {
        Self { vm }
    }
}

impl devices::virtio::pci::IoEventRegistrar for KvmIoEvents {
    fn register(&self, fd: &EventFd, addr: u64) -> io::Result<()> {
        self.vm
            .register_ioevent(fd, &kvm_ioctls::IoEventAddress::Mmio(addr), kvm_ioctls::NoDatamatch)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))
    }

    fn unregister(&self, fd: &EventFd, addr: u64) -> io::Result<()> {
        self.vm
            .unregister_ioevent(fd, &kvm_ioctls::IoEventAddress::Mmio(addr), kvm_ioctls::NoDatamatch)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))
    }
}
