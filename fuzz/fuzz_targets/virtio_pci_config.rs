//! virtio-pci transport registers: a sequence of guest accesses (1, 2, 4 or 8
//! bytes, read or write) to the PCI configuration ports 0xCF8/0xCFC (bus 0, the
//! function in slot 0 and an empty slot 1) and to BAR 0 of a VirtioPciDevice: its
//! common configuration, ISR, device configuration, notification area, MSI-X table
//! and PBA. The device behind it is a recording stand-in with two queues, so
//! activation and reset are deterministic and need no worker thread.
//!
//! Asserts: no panic; the transport activates the device only with queues that
//! are valid in guest memory, and the number of queues it hands over matches
//! the queues the device has; a BAR moves only to an address aligned to its
//! size, never to 0, and to a different address.
#![no_main]

use std::io;
use std::sync::{Arc, Mutex};

use devices::bus::BusDevice;
use devices::interrupt::{MsiMessage, MsiRouter};
use devices::pci::config_io::{BarMove, BarRemapper};
use devices::pci::{PciBus, PciConfigIo, PciDevice};
use devices::virtio::pci::{bar_layout, IoEventRegistrar, VirtioPciDevice};
use devices::virtio::{ActivateContext, ActivateError, VirtioDevice};
use libfuzzer_sys::fuzz_target;
use tern_fuzz::encoding::decode;
use tern_fuzz::guarded_memory::{GuardedMemory, GuestMemoryMmap};
use tern_fuzz::inputs::{PciInput, PciOp};
use virtio_queue::QueueT;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Where BAR 0 starts.
const BAR: u64 = 0xc000_0000;
const QUEUES: [u16; 2] = [16, 256];

/// A virtio device that checks what the transport hands it.
struct Recorder {
    mem: GuestMemoryMmap,
    active: bool,
    config: [u8; 8],
}

impl VirtioDevice for Recorder {
    fn device_type(&self) -> u32 {
        devices::virtio::device_type::BLOCK
    }
    fn queue_max_sizes(&self) -> Vec<u16> {
        QUEUES.to_vec()
    }
    fn offered_features(&self) -> u64 {
        1 << 32 | 1 << 29 | 1 << 28 | 1 << 9
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        devices::virtio::read_config_bytes(&self.config, offset, data);
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            if let Some(slot) = usize::try_from(offset).ok().and_then(|o| o.checked_add(i)).and_then(|o| self.config.get_mut(o)) {
                *slot = *b;
            }
        }
    }
    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        assert!(!self.active, "activated twice without a reset");
        assert!(ctx.queues.len() <= QUEUES.len(), "{} queues handed over", ctx.queues.len());
        for q in &ctx.queues {
            assert!(q.queue.ready() && q.queue.is_valid(&self.mem), "activated with an invalid queue");
            assert!(q.queue.size() <= 256 && q.queue.size().is_power_of_two(), "queue size {}", q.queue.size());
        }
        if ctx.queues.len() != QUEUES.len() {
            return Err(ActivateError::QueueCount { expected: QUEUES.len(), got: ctx.queues.len() });
        }
        self.active = true;
        Ok(())
    }
    fn reset(&mut self) -> bool {
        self.active = false;
        true
    }
}

struct Router;
impl MsiRouter for Router {
    fn allocate(&self) -> io::Result<(u32, EventFd)> {
        Ok((24, EventFd::new(EFD_NONBLOCK)?))
    }
    fn set_route(&self, _gsi: u32, message: Option<MsiMessage>) -> io::Result<()> {
        let _ = message;
        Ok(())
    }
}

struct Registrar;
impl IoEventRegistrar for Registrar {
    fn register(&self, _fd: &EventFd, addr: u64) -> io::Result<()> {
        assert!(addr % bar_layout::NOTIFY_MULTIPLIER == 0, "notifier at {addr:#x}");
        Ok(())
    }
    fn unregister(&self, _fd: &EventFd, _addr: u64) -> io::Result<()> {
        Ok(())
    }
}

/// Checks every BAR move and remembers where BAR 0 is.
struct Remapper(Mutex<u64>);
impl BarRemapper for Remapper {
    fn move_bar(&self, mv: BarMove) {
        let mut at = self.0.lock().unwrap();
        assert_eq!(mv.old, *at, "BAR moved from where it was not");
        assert!(mv.new != 0 && mv.new != mv.old, "BAR move {:#x} -> {:#x}", mv.old, mv.new);
        assert_eq!(mv.new % bar_layout::SIZE, 0, "BAR moved to a misaligned {:#x}", mv.new);
        assert_eq!(mv.len, bar_layout::SIZE);
        *at = mv.new;
    }
}

/// Start and length of each BAR 0 area `PciOp::region` selects.
const AREAS: [(u64, u64); 7] = [
    (bar_layout::COMMON, 0x40),
    (bar_layout::ISR, 8),
    (bar_layout::DEVICE, 0x20),
    (bar_layout::NOTIFY, 0x20),
    (bar_layout::MSIX_TABLE, 0x40),
    (bar_layout::MSIX_PBA, 0x10),
    (0, bar_layout::SIZE),
];

fuzz_target!(|data: &[u8]| {
    let Some(input) = decode::<PciInput>(data) else { return };
    let mem = GuardedMemory::fresh().mem().clone();
    let recorder = Recorder { mem: mem.clone(), active: false, config: [0x5a; 8] };
    let device = VirtioPciDevice::new(Box::new(recorder), BAR, mem, Arc::new(Router), Arc::new(Registrar))
        .expect("virtio-pci device");
    let device = Arc::new(Mutex::new(device));
    let mut bus = PciBus::new();
    bus.add(device.clone() as Arc<Mutex<dyn PciDevice>>).expect("slot");
    let remapper = Arc::new(Remapper(Mutex::new(BAR)));
    let mut ports = PciConfigIo::new(bus, remapper.clone());

    for op in &input.ops.0 {
        apply(op, &mut ports, &device);
    }
});

fn apply(op: &PciOp, ports: &mut PciConfigIo, device: &Mutex<VirtioPciDevice>) {
    let size = [1usize, 2, 4, 8][usize::from(op.size % 4)];
    let value = op.value.to_le_bytes();
    match op.kind % 3 {
        0 => {
            let offset = u64::from(op.offset % 8);
            access(ports, offset, &value[..size], op.write);
        }
        1 => {
            let (start, len) = AREAS[usize::from(op.region) % AREAS.len()];
            let offset = start + u64::from(op.offset) % len;
            let mut dev = device.lock().unwrap();
            access(&mut *dev, offset, &value[..size], op.write);
        }
        _ => {
            let slot = u32::from(op.offset >> 8) & 1;
            let address = 0x8000_0000 | slot << 11 | u32::from(op.offset & 0xfc);
            ports.write(0, &address.to_le_bytes());
        }
    }
}

fn access(device: &mut dyn BusDevice, offset: u64, value: &[u8], write: bool) {
    if write {
        device.write(offset, value);
    } else {
        let mut data = vec![0xa5u8; value.len()];
        device.read(offset, &mut data);
    }
}
