//! Puts the PCI bus on the machine: the config-mechanism ports, and each virtio device
//! as a virtio-pci function with BAR 0 allocated in the 32-bit MMIO hole.

use std::sync::{Arc, Mutex};

use devices::bus::Bus;
use devices::pci::config_io::{PciConfigIo, CONFIG_ADDRESS_PORT, CONFIG_IO_PORT_COUNT};
use devices::pci::PciBus;
use devices::virtio::pci::{bar_layout, VirtioPciDevice, VirtioPciError};
use devices::virtio::VirtioDevice;
use kvm_ioctls::VmFd;

use crate::layout::{MMIO_HOLE_START, PCI_MMIO_END};
use crate::memory::GuestMemoryMmap;
use crate::msi_routing::{KvmIoEvents, KvmMsiRouter};

/// Errors building the PCI bus.
#[derive(Debug, thiserror::Error)]
pub enum PciSetupError {
    #[error("no free PCI slot for device {0}")]
    NoSlot(usize),
    #[error("no room for device {0}'s BAR in the MMIO window")]
    NoBarSpace(usize),
    #[error("virtio-pci device {index}: {source}")]
    Virtio { index: usize, source: VirtioPciError },
    #[error("placing PCI device on a bus: {0}")]
    Bus(#[from] devices::bus::BusError),
}

/// Hands out naturally aligned BAR addresses from the MMIO window.
struct BarAllocator {
    next: u64,
}

impl BarAllocator {
    fn allocate(&mut self, size: u64) -> Option<u64> {
        let addr = self.next.checked_add(size - 1)? & !(size - 1);
        let end = addr.checked_add(size)?;
        (end <= PCI_MMIO_END).then(|| {
            self.next = end;
            addr
        })
    }
}

/// Creates the bus with `virtio` devices in slots 1.. and wires everything; byte
/// accesses at 0xCF9, inside the configuration ports, go to `reset_control`.
pub fn add_pci_devices(
    vm: &Arc<VmFd>,
    mem: &GuestMemoryMmap,
    pio: &Bus,
    mmio: &Arc<Bus>,
    virtio: Vec<Box<dyn VirtioDevice>>,
    reset_control: Arc<Mutex<dyn devices::bus::BusDevice>>,
) -> Result<Vec<Arc<Mutex<VirtioPciDevice>>>, PciSetupError> {
    let router = Arc::new(KvmMsiRouter::new(vm.clone()));
    let ioevents = Arc::new(KvmIoEvents::new(vm.clone()));
    let mut bars = BarAllocator { next: MMIO_HOLE_START };
    let mut bus = PciBus::new();
    let mut functions = Vec::new();
    for (index, device) in virtio.into_iter().enumerate() {
        let bar = bars.allocate(bar_layout::SIZE).ok_or(PciSetupError::NoBarSpace(index))?;
        let pci = VirtioPciDevice::new(device, bar, mem.clone(), router.clone(), ioevents.clone())
            .map_err(|source| PciSetupError::Virtio { index, source })?;
        let pci = Arc::new(Mutex::new(pci));
        bus.add(pci.clone()).ok_or(PciSetupError::NoSlot(index))?;
        mmio.insert(pci.clone(), bar, bar_layout::SIZE)?;
        functions.push(pci);
    }
    let config_io = PciConfigIo::new(bus, mmio.clone()).with_byte_register_at_cf9(reset_control);
    pio.insert(Arc::new(Mutex::new(config_io)), u64::from(CONFIG_ADDRESS_PORT), CONFIG_IO_PORT_COUNT)?;
    Ok(functions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_are_aligned_and_bounded() {
        let mut a = BarAllocator { next: MMIO_HOLE_START + 0x10 };
        assert_eq!(a.allocate(0x8000), Some(MMIO_HOLE_START + 0x8000));
        assert_eq!(a.allocate(0x8000), Some(MMIO_HOLE_START + 0x10000));
        let mut full = BarAllocator { next: PCI_MMIO_END - 0x4000 };
        assert_eq!(full.allocate(0x8000), None);
    }
}
