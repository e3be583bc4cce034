//! The virtio-pci (modern, virtio 1.x) transport: a PCI function whose BAR 0 holds the
//! common configuration, ISR, device configuration, queue notification area and the
//! MSI-X table and PBA, described to the driver by vendor capabilities.
//!
//! Queue notifications are ioeventfds registered with KVM at the notification
//! addresses, so a notify wakes the device worker without exiting to a vCPU thread's
//! handler. When the guest moves BAR 0, the ioeventfds move with it.

pub mod common_config;
mod detached;
pub mod interrupt;
pub mod snapshot;

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::bus::BusDevice;
use crate::interrupt::MsiRouter;
use crate::pci::config_io::{BarMove, PciDevice};
use crate::pci::msix::{self, Msix};
use crate::pci::{capability_id, BarKind, PciConfig, PciIds};
use crate::virtio::{features, status, ActivateContext, ActiveQueue, GuestMemoryMmap, MigrationError, VirtioDevice};
use common_config::{CommonConfig, StatusChange};
use interrupt::PciInterrupt;
pub use snapshot::{RestoreError, VirtioPciSnapshot};

/// BAR 0 layout.
pub mod bar_layout {
    pub const COMMON: u64 = 0x0000;
    pub const COMMON_LEN: u64 = 0x38;
    pub const ISR: u64 = 0x1000;
    pub const DEVICE: u64 = 0x2000;
    pub const DEVICE_LEN: u64 = 0x1000;
    pub const NOTIFY: u64 = 0x3000;
    /// Bytes between queue notification addresses.
    pub const NOTIFY_MULTIPLIER: u64 = 4;
    pub const MSIX_TABLE: u64 = 0x4000;
    pub const MSIX_PBA: u64 = 0x5000;
    pub const SIZE: u64 = 0x8000;
}

const VIRTIO_PCI_VENDOR: u16 = 0x1af4;
const VIRTIO_PCI_MODERN_DEVICE_BASE: u16 = 0x1040;
const CAP_COMMON: u8 = 1;
const CAP_NOTIFY: u8 = 2;
const CAP_ISR: u8 = 3;
const CAP_DEVICE: u8 = 4;

/// Registers queue-notify eventfds with the hypervisor.
pub trait IoEventRegistrar: Send + Sync {
    /// Makes guest writes to MMIO `addr` signal `fd`.
    fn register(&self, fd: &EventFd, addr: u64) -> io::Result<()>;
    /// Undoes [`IoEventRegistrar::register`].
    fn unregister(&self, fd: &EventFd, addr: u64) -> io::Result<()>;
}

/// Errors creating a virtio-pci function.
#[derive(Debug, thiserror::Error)]
pub enum VirtioPciError {
    #[error("virtio-pci setup: {0}")]
    Io(#[from] io::Error),
    #[error("virtio-pci config space: {0}")]
    Config(#[from] crate::pci::config::ConfigError),
}

/// PCI class codes for the device types tern serves.
fn class_of(device_type: u32) -> (u8, u8) {
    match device_type {
        crate::virtio::device_type::NET => (0x02, 0x00),
        crate::virtio::device_type::BLOCK => (0x01, 0x80),
        _ => (0xff, 0x00),
    }
}

fn virtio_cap(cfg_type: u8, offset: u64, length: u64, extra: Option<u32>) -> Vec<u8> {
    let len = if extra.is_some() { 20 } else { 16 };
    let mut cap = vec![capability_id::VENDOR_SPECIFIC, 0, len, cfg_type, 0, 0, 0, 0];
    cap.extend_from_slice(&(offset as u32).to_le_bytes());
    cap.extend_from_slice(&(length as u32).to_le_bytes());
    if let Some(x) = extra {
        cap.extend_from_slice(&x.to_le_bytes());
    }
    cap
}

/// A virtio device behind a PCI function.
pub struct VirtioPciDevice {
    config: PciConfig,
    msix_cap_offset: usize,
    device: Box<dyn VirtioDevice>,
    common: CommonConfig,
    interrupt: Arc<PciInterrupt>,
    notify_fds: Vec<EventFd>,
    mapped_bar: u64,
    registrar: Arc<dyn IoEventRegistrar>,
    mem: GuestMemoryMmap,
    active: bool,
}

impl VirtioPciDevice {
    /// Wraps `device` with BAR 0 at `bar_addr` (aligned to [`bar_layout::SIZE`]),
    /// registering its notify eventfds.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        bar_addr: u64,
        mem: GuestMemoryMmap,
        router: Arc<dyn MsiRouter>,
        registrar: Arc<dyn IoEventRegistrar>,
    ) -> Result<Self, VirtioPciError> {
        let device_type = device.device_type();
        let (class, subclass) = class_of(device_type);
        let ids = PciIds {
            vendor: VIRTIO_PCI_VENDOR,
            device: VIRTIO_PCI_MODERN_DEVICE_BASE + device_type as u16,
            class,
            subclass,
            prog_if: 0,
            revision: 1,
            subsystem_vendor: VIRTIO_PCI_VENDOR,
            subsystem: 0x40,
        };
        let mut config = PciConfig::new(ids);
        config.add_bar(0, BarKind::Memory32, bar_addr, bar_layout::SIZE)?;
        let queue_sizes = device.queue_max_sizes();
        let queues = queue_sizes.len();
        use bar_layout::*;
        for cap in [
            virtio_cap(CAP_COMMON, COMMON, COMMON_LEN, None),
            virtio_cap(CAP_ISR, ISR, 1, None),
            virtio_cap(CAP_DEVICE, DEVICE, DEVICE_LEN, None),
            virtio_cap(CAP_NOTIFY, NOTIFY, NOTIFY_MULTIPLIER * queues as u64, Some(NOTIFY_MULTIPLIER as u32)),
        ] {
            config.add_capability(&cap, &vec![0; cap.len()])?;
        }
        // One vector per queue plus one for configuration changes.
        let vectors = queues as u16 + 1;
        let (body, writable) = Msix::capability(vectors, 0, MSIX_TABLE as u32, MSIX_PBA as u32);
        let msix_cap_offset = config.add_capability(&body, &writable)?;
        let msix = Arc::new(Msix::new(vectors, router)?);

        let mut notify_fds = Vec::with_capacity(queues);
        for q in 0..queues {
            let fd = EventFd::new(EFD_NONBLOCK)?;
            registrar.register(&fd, bar_addr + NOTIFY + q as u64 * NOTIFY_MULTIPLIER)?;
            notify_fds.push(fd);
        }
        let offered = device.offered_features() | features::VERSION_1;
        Ok(Self {
            config,
            msix_cap_offset,
            common: CommonConfig::new(offered, &queue_sizes),
            interrupt: Arc::new(PciInterrupt::new(msix, queues)),
            device,
            notify_fds,
            mapped_bar: bar_addr,
            registrar,
            mem,
            active: false,
        })
    }

    /// Where BAR 0 is mapped now.
    pub fn bar_address(&self) -> u64 {
        self.mapped_bar
    }

    /// The transport's negotiated state (for inspection and migration).
    pub fn common_config(&self) -> &CommonConfig {
        &self.common
    }

    fn status(&self) -> u8 {
        let mut s = self.common.status;
        if self.interrupt.needs_reset.load(Ordering::SeqCst) {
            s |= status::DEVICE_NEEDS_RESET;
        }
        s
    }

    fn reset(&mut self) {
        if self.active && !self.device.reset() {
            tracing::warn!("virtio device refused to reset");
        }
        self.active = false;
        self.common.reset();
        self.interrupt.isr.store(0, Ordering::SeqCst);
        self.interrupt.needs_reset.store(false, Ordering::SeqCst);
        for v in self.interrupt.queue_vectors.iter() {
            v.store(common_config::NO_VECTOR, Ordering::SeqCst);
        }
        self.interrupt.config_vector.store(common_config::NO_VECTOR, Ordering::SeqCst);
    }

    fn build_queue(&self, index: usize) -> Option<Queue> {
        let setup = self.common.queues.get(index)?;
        let mut queue = Queue::new(setup.max_size).ok()?;
        queue.set_size(setup.size);
        queue.set_desc_table_address(Some(setup.desc as u32), Some((setup.desc >> 32) as u32));
        queue.set_avail_ring_address(Some(setup.driver as u32), Some((setup.driver >> 32) as u32));
        queue.set_used_ring_address(Some(setup.device as u32), Some((setup.device >> 32) as u32));
        queue.set_event_idx(self.common.driver_features & features::RING_EVENT_IDX != 0);
        queue.set_ready(true);
        // The setters silently ignore misaligned addresses; catch that here.
        let as_set = (queue.desc_table(), queue.avail_ring(), queue.used_ring()) == (setup.desc, setup.driver, setup.device);
        (as_set && queue.size() == setup.size && queue.is_valid(&self.mem)).then_some(queue)
    }

    /// The enabled queues, ready for the device; positioned at `progress` when
    /// restoring a migrated device.
    fn activation_queues(&self, progress: Option<&[(u16, u16)]>) -> Result<Vec<ActiveQueue>, String> {
        let mut queues = Vec::new();
        let mut positions = progress.map(|p| p.iter());
        for (index, setup) in self.common.queues.iter().enumerate() {
            if !setup.enabled {
                continue;
            }
            let mut queue = self.build_queue(index).ok_or_else(|| format!("queue {index} is invalid"))?;
            if let Some(positions) = positions.as_mut() {
                let &(next_avail, next_used) = positions.next().ok_or("missing queue progress")?;
                queue.set_next_avail(next_avail);
                queue.set_next_used(next_used);
            }
            let notify = self.notify_fds[index].try_clone().map_err(|e| e.to_string())?;
            queues.push(ActiveQueue { queue, notify });
        }
        Ok(queues)
    }

    /// Hands the queues to the device.
    fn start_device(&mut self, queues: Vec<ActiveQueue>) -> Result<(), crate::virtio::ActivateError> {
        let ctx = ActivateContext {
            mem: self.mem.clone(),
            acked_features: self.common.driver_features,
            queues,
            interrupt: self.interrupt.clone(),
        };
        self.device.activate(ctx)?;
        self.active = true;
        Ok(())
    }

    fn activate(&mut self) {
        let result = self.activation_queues(None).and_then(|queues| self.start_device(queues).map_err(|e| e.to_string()));
        if let Err(e) = result {
            tracing::warn!("virtio device activation failed ({e}); device needs reset");
            self.interrupt.needs_reset.store(true, Ordering::SeqCst);
        }
    }

    fn move_notifiers(&mut self, new_bar: u64) {
        use bar_layout::{NOTIFY, NOTIFY_MULTIPLIER};
        for (q, fd) in self.notify_fds.iter().enumerate() {
            let off = NOTIFY + q as u64 * NOTIFY_MULTIPLIER;
            if let Err(e) = self.registrar.unregister(fd, self.mapped_bar + off) {
                tracing::warn!("unregistering queue {q} notifier: {e}");
            }
            if let Err(e) = self.registrar.register(fd, new_bar + off) {
                tracing::warn!("registering queue {q} notifier at {:#x}: {e}", new_bar + off);
            }
        }
    }
}

impl PciDevice for VirtioPciDevice {
    fn config_read(&mut self, offset: usize, data: &mut [u8]) {
        self.config.read(offset, data);
    }

    fn config_write(&mut self, offset: usize, data: &[u8]) -> Vec<BarMove> {
        self.config.write(offset, data);
        let control_at = self.msix_cap_offset + 2;
        if offset <= control_at + 1 && offset + data.len() > control_at {
            self.interrupt.msix.set_control(self.config.read_u16(control_at));
        }
        let bar = self.config.bar_address(0);
        if self.config.memory_enabled() && bar != self.mapped_bar && bar != 0 {
            self.move_notifiers(bar);
            let mv = BarMove { old: self.mapped_bar, new: bar, len: bar_layout::SIZE };
            self.mapped_bar = bar;
            return vec![mv];
        }
        Vec::new()
    }
}

impl BusDevice for VirtioPciDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        use bar_layout::*;
        match offset {
            o if o < COMMON + COMMON_LEN => {
                self.common.read(o - COMMON, data);
                if o == 0x14 && !data.is_empty() {
                    data[0] = self.status();
                }
            }
            o if (ISR..ISR + 4).contains(&o) => {
                data.fill(0);
                if o == ISR && !data.is_empty() {
                    // Reading the ISR clears it.
                    data[0] = self.interrupt.isr.swap(0, Ordering::SeqCst);
                }
            }
            o if (DEVICE..DEVICE + DEVICE_LEN).contains(&o) => self.device.read_config(o - DEVICE, data),
            o if (MSIX_TABLE..MSIX_PBA).contains(&o) => self.interrupt.msix.table_read(o - MSIX_TABLE, data),
            o if (MSIX_PBA..SIZE).contains(&o) => self.interrupt.msix.pba_read(o - MSIX_PBA, data),
            _ => data.fill(0),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        use bar_layout::*;
        match offset {
            o if o < COMMON + COMMON_LEN => {
                let change = self.common.write(o - COMMON, data);
                self.refuse_unknown_vectors();
                self.sync_vectors();
                match change {
                    StatusChange::Reset => self.reset(),
                    StatusChange::Activate => self.activate(),
                    StatusChange::None => {}
                }
            }
            o if (DEVICE..DEVICE + DEVICE_LEN).contains(&o) => self.device.write_config(o - DEVICE, data),
            o if (NOTIFY..MSIX_TABLE).contains(&o) => {
                // Normally handled in-kernel by the ioeventfd; this is the fallback.
                let q = ((o - NOTIFY) / NOTIFY_MULTIPLIER) as usize;
                if let Some(fd) = self.notify_fds.get(q) {
                    let _ = fd.write(1);
                }
            }
            o if (MSIX_TABLE..MSIX_PBA).contains(&o) => self.interrupt.msix.table_write(o - MSIX_TABLE, data),
            _ => {}
        }
    }
}

impl VirtioPciDevice {
    /// The device model.
    pub fn device_mut(&mut self) -> &mut dyn VirtioDevice {
        self.device.as_mut()
    }

    /// Takes the device model out for the machine's next boot (a guest reboot): the
    /// function is reset first as a driver reset does (worker stopped and joined,
    /// queues dropped), so the model comes out in its power-on state with its host
    /// backend (disk image and its lock, TAP) kept. This function keeps an inert
    /// stand-in until it is dropped.
    pub fn detach_device(&mut self) -> Box<dyn VirtioDevice> {
        self.reset();
        let stand_in = Box::new(detached::Detached::like(self.device.as_ref()));
        std::mem::replace(&mut self.device, stand_in)
    }

    /// Parks the device's worker (migration).
    pub fn pause_device(&mut self) -> Result<(), MigrationError> {
        if self.active { self.device.pause() } else { Ok(()) }
    }

    /// Restarts a worker parked by [`VirtioPciDevice::pause_device`].
    pub fn resume_device(&mut self) -> Result<(), MigrationError> {
        if self.active { self.device.resume() } else { Ok(()) }
    }

    /// Captures the function (the device must be paused for queue progress to hold).
    pub fn snapshot(&self) -> VirtioPciSnapshot {
        VirtioPciSnapshot {
            device: self.device.describe(),
            config_space: self.config.bytes().to_vec(),
            bar_sizes: self.config.bar_sizes().to_vec(),
            common: self.common.clone(),
            msix: self.interrupt.msix.snapshot(),
            isr: self.interrupt.isr.load(Ordering::SeqCst),
            needs_reset: self.interrupt.needs_reset.load(Ordering::SeqCst),
            active: self.active,
            queue_progress: if self.active { self.device.queue_progress() } else { Vec::new() },
            device_state: self.device.save_state(),
        }
    }

    /// Loads a source's snapshot into this (fresh, identical) function and, if the
    /// device was active there, activates it here at the same queue positions. The
    /// snapshot is untrusted: it is checked against this function (ids, read-only
    /// config bits, BAR sizes, queue limits, ring addresses, vectors, features) before
    /// anything is applied; the configuration space goes in through its write masks.
    /// Returns the BAR move to apply when the guest had moved BAR 0.
    pub fn restore(&mut self, snap: &VirtioPciSnapshot) -> Result<Option<BarMove>, RestoreError> {
        let own_description = self.device.describe();
        if snap.device != own_description {
            return Err(RestoreError::Device { saved: snap.device.clone(), own: own_description });
        }
        let own = snapshot::Own { common: &self.common, msix_vectors: self.interrupt.msix.count(), mem: &self.mem };
        snapshot::check(snap, &own)?;
        let mut config = self.config.clone();
        config.restore(&snap.config_space, &snap.bar_sizes)?;
        let control = config.read_u16(self.msix_cap_offset + 2);
        for (what, bit, in_table) in [("enable", msix::CONTROL_ENABLE, snap.msix.enabled), ("function mask", msix::CONTROL_FUNCTION_MASK, snap.msix.function_masked)] {
            let in_config = control & bit != 0;
            if in_config != in_table {
                return Err(RestoreError::MsixControl { what, in_config, in_table });
            }
        }
        self.device.load_state(&snap.device_state)?;

        // Everything checked: apply.
        self.config = config;
        let offered = self.common.offered_features;
        self.common = snap.common.clone();
        self.common.offered_features = offered;
        self.interrupt.msix.restore(&snap.msix)?;
        self.interrupt.isr.store(snap.isr, Ordering::SeqCst);
        self.interrupt.needs_reset.store(snap.needs_reset, Ordering::SeqCst);
        self.sync_vectors();
        let bar = self.config.bar_address(0);
        let moved = (bar != self.mapped_bar && bar != 0).then(|| {
            self.move_notifiers(bar);
            let mv = BarMove { old: self.mapped_bar, new: bar, len: bar_layout::SIZE };
            self.mapped_bar = bar;
            mv
        });
        if snap.active {
            self.activate_at(&snap.queue_progress)?;
        }
        Ok(moved)
    }

    /// Activates with queues positioned at `progress` (migration restore).
    fn activate_at(&mut self, progress: &[(u16, u16)]) -> Result<(), MigrationError> {
        let queues = self.activation_queues(Some(progress)).map_err(MigrationError::Failed)?;
        self.start_device(queues).map_err(|e| MigrationError::Failed(format!("activating restored device: {e}")))
    }

    /// A vector beyond the MSI-X table reads back as NO_VECTOR, telling the driver the
    /// choice was refused (virtio 1.x 4.1.5.1.2).
    fn refuse_unknown_vectors(&mut self) {
        let count = self.interrupt.msix.count();
        let fix = |v: &mut u16| {
            if *v != common_config::NO_VECTOR && *v >= count {
                *v = common_config::NO_VECTOR;
            }
        };
        fix(&mut self.common.msix_config);
        for q in self.common.queues.iter_mut() {
            fix(&mut q.msix_vector);
        }
    }

    /// Copies the driver's vector choices into the interrupt state the worker reads.
    fn sync_vectors(&self) {
        self.interrupt.config_vector.store(self.common.msix_config, Ordering::Release);
        for (setup, slot) in self.common.queues.iter().zip(self.interrupt.queue_vectors.iter()) {
            slot.store(setup.msix_vector, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interrupt::MsiMessage;
    use crate::virtio::ActivateError;
    use std::sync::Mutex;
    use vm_memory::GuestAddress;

    #[derive(Default)]
    struct Log {
        activations: Vec<(u64, usize)>,
        resets: usize,
        positions: Vec<(u16, u16)>,
        loaded: Vec<u8>,
    }

    struct FakeDevice(Arc<Mutex<Log>>);
    impl VirtioDevice for FakeDevice {
        fn device_type(&self) -> u32 {
            crate::virtio::device_type::BLOCK
        }
        fn queue_max_sizes(&self) -> Vec<u16> {
            vec![16]
        }
        fn offered_features(&self) -> u64 {
            features::VERSION_1 | features::RING_EVENT_IDX
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            crate::virtio::read_config_bytes(&[0xaa, 0xbb], offset, data);
        }
        fn write_config(&mut self, _: u64, _: &[u8]) {}
        fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
            let mut log = self.0.lock().unwrap();
            log.activations.push((ctx.acked_features, ctx.queues.len()));
            log.positions = ctx.queues.iter().map(|q| (q.queue.next_avail(), q.queue.next_used())).collect();
            Ok(())
        }
        fn queue_progress(&self) -> Vec<(u16, u16)> {
            vec![(3, 2)]
        }
        fn save_state(&self) -> Vec<u8> {
            vec![42]
        }
        fn load_state(&mut self, state: &[u8]) -> Result<(), crate::virtio::MigrationError> {
            self.0.lock().unwrap().loaded = state.to_vec();
            Ok(())
        }
        fn reset(&mut self) -> bool {
            self.0.lock().unwrap().resets += 1;
            true
        }
    }

    struct NullRouter;
    impl MsiRouter for NullRouter {
        fn allocate(&self) -> io::Result<(u32, EventFd)> {
            Ok((24, EventFd::new(EFD_NONBLOCK)?))
        }
        fn set_route(&self, _: u32, _: Option<MsiMessage>) -> io::Result<()> {
            Ok(())
        }
    }

    #[derive(Default)]
    struct Registrations(Mutex<Vec<u64>>);
    impl IoEventRegistrar for Registrations {
        fn register(&self, _: &EventFd, addr: u64) -> io::Result<()> {
            self.0.lock().unwrap().push(addr);
            Ok(())
        }
        fn unregister(&self, _: &EventFd, addr: u64) -> io::Result<()> {
            self.0.lock().unwrap().retain(|a| *a != addr);
            Ok(())
        }
    }

    fn device() -> (VirtioPciDevice, Arc<Mutex<Log>>, Arc<Registrations>) {
        let log = Arc::new(Mutex::new(Log::default()));
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let regs = Arc::new(Registrations::default());
        let dev = VirtioPciDevice::new(Box::new(FakeDevice(log.clone())), 0xc000_0000, mem, Arc::new(NullRouter), regs.clone()).unwrap();
        (dev, log, regs)
    }

    fn w32(d: &mut VirtioPciDevice, off: u64, v: u32) {
        BusDevice::write(d, off, &v.to_le_bytes());
    }
    fn w16(d: &mut VirtioPciDevice, off: u64, v: u16) {
        BusDevice::write(d, off, &v.to_le_bytes());
    }

    #[test]
    fn capabilities_describe_the_bar() {
        let (mut d, _, regs) = device();
        let mut found = vec![];
        let mut ptr = [0u8; 1];
        d.config_read(0x34, &mut ptr);
        let mut at = ptr[0] as usize;
        while at != 0 {
            let mut cap = [0u8; 16];
            d.config_read(at, &mut cap);
            found.push((cap[0], cap[3]));
            at = cap[1] as usize;
        }
        assert_eq!(found, vec![(9, CAP_COMMON), (9, CAP_ISR), (9, CAP_DEVICE), (9, CAP_NOTIFY), (capability_id::MSIX, 0)]);
        assert_eq!(*regs.0.lock().unwrap(), vec![0xc000_0000 + bar_layout::NOTIFY]);
    }

    #[test]
    fn driver_init_activates_and_reset_resets() {
        let (mut d, log, _) = device();
        BusDevice::write(&mut d, 0x14, &[status::ACKNOWLEDGE | status::DRIVER]);
        w32(&mut d, 0x08, 1);
        w32(&mut d, 0x0c, 1); // VERSION_1
        BusDevice::write(&mut d, 0x14, &[status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK]);
        let mut s = [0u8];
        BusDevice::read(&mut d, 0x14, &mut s);
        assert_ne!(s[0] & status::FEATURES_OK, 0);
        w16(&mut d, 0x16, 0);
        w32(&mut d, 0x20, 0x1000);
        w32(&mut d, 0x28, 0x2000);
        w32(&mut d, 0x30, 0x3000);
        w16(&mut d, 0x1a, 7); // beyond the 2-vector table: refused
        let mut v = [0u8; 2];
        BusDevice::read(&mut d, 0x1a, &mut v);
        assert_eq!(u16::from_le_bytes(v), common_config::NO_VECTOR);
        w16(&mut d, 0x1a, 1);
        w16(&mut d, 0x1c, 1);
        BusDevice::write(&mut d, 0x14, &[0x0f]);
        assert_eq!(log.lock().unwrap().activations, vec![(features::VERSION_1, 1)]);
        let mut cfg = [0u8; 2];
        BusDevice::read(&mut d, bar_layout::DEVICE, &mut cfg);
        assert_eq!(cfg, [0xaa, 0xbb]);
        BusDevice::write(&mut d, 0x14, &[0]);
        assert_eq!(log.lock().unwrap().resets, 1);
        BusDevice::read(&mut d, 0x14, &mut s);
        assert_eq!(s[0], 0);
    }

    #[test]
    fn detaching_resets_an_active_device_and_leaves_an_inert_function() {
        let (mut d, log, _) = device();
        drive_queue_0_to_driver_ok(&mut d);
        assert_eq!(log.lock().unwrap().activations.len(), 1);
        let model = d.detach_device();
        assert_eq!(log.lock().unwrap().resets, 1, "the worker was stopped before the model left");
        assert_eq!(model.device_type(), crate::virtio::device_type::BLOCK);
        let mut s = [0xffu8];
        BusDevice::read(&mut d, 0x14, &mut s);
        assert_eq!(s[0], 0, "the old function is reset");
        // A new transport around the same model starts from power-on state.
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let mut again = VirtioPciDevice::new(model, 0xc000_0000, mem, Arc::new(NullRouter), Arc::new(Registrations::default())).unwrap();
        drive_queue_0_to_driver_ok(&mut again);
        assert_eq!(log.lock().unwrap().activations.len(), 2, "the model activates again in the new machine");
    }

    /// Driver init, queue 0 at fixed ring addresses and enabled, then DRIVER_OK.
    fn drive_queue_0_to_driver_ok(d: &mut VirtioPciDevice) {
        init_driver(d);
        w16(d, 0x16, 0);
        w32(d, 0x20, 0x1000);
        w32(d, 0x28, 0x2000);
        w32(d, 0x30, 0x3000);
        w16(d, 0x1c, 1);
        BusDevice::write(d, 0x14, &[0x0f]);
    }

    fn init_driver(d: &mut VirtioPciDevice) {
        w32(d, 0x08, 1);
        w32(d, 0x0c, 1);
        BusDevice::write(d, 0x14, &[status::FEATURES_OK]);
        w32(d, 0x20, 0x1000);
        w32(d, 0x28, 0x2000);
        w32(d, 0x30, 0x3000);
        w16(d, 0x1a, 1);
        w16(d, 0x1c, 1);
        BusDevice::write(d, 0x14, &[0x0f]);
    }

    #[test]
    fn snapshot_restore_activates_at_the_same_queue_positions() {
        let (mut a, _, _) = device();
        init_driver(&mut a);
        d_config_move(&mut a);
        let snap = a.snapshot();
        assert!(snap.active);
        let (mut b, log_b, regs_b) = device();
        let moved = b.restore(&snap).unwrap();
        assert_eq!(moved, Some(BarMove { old: 0xc000_0000, new: 0xd000_0000, len: bar_layout::SIZE }));
        assert_eq!(*regs_b.0.lock().unwrap(), vec![0xd000_0000 + bar_layout::NOTIFY]);
        let log = log_b.lock().unwrap();
        assert_eq!(log.activations, vec![(features::VERSION_1, 1)]);
        assert_eq!(log.positions, vec![(3, 2)]);
        assert_eq!(log.loaded, vec![42]);
        drop(log);
        assert_eq!(b.common_config(), a.common_config());
        let mut s = [0u8];
        BusDevice::read(&mut b, 0x14, &mut s);
        assert_eq!(s[0], 0x0f);
    }

    /// A snapshot of an active, driven device whose guest moved BAR 0.
    fn active_snapshot() -> VirtioPciSnapshot {
        let (mut a, _, _) = device();
        init_driver(&mut a);
        d_config_move(&mut a);
        a.snapshot()
    }

    #[test]
    fn corrupt_snapshots_are_refused_with_the_reason_and_nothing_applied() {
        type Tamper = fn(&mut VirtioPciSnapshot);
        let cases: Vec<(Tamper, &str)> = vec![
            (|s| s.device = "virtio-net".into(), "source device is `virtio-net`, destination device is `virtio device type 2`"),
            (|s| s.config_space[2] = 0x41, "PCI config: vendor/device 1af4:1041 != 1af4:1042"),
            (|s| s.config_space[0x40] = 0x05, "PCI config: capability list byte 0x40: 0x05 != 0x09"),
            (|s| s.bar_sizes[0] = 0x1_0000, "PCI config: BAR 0 size 0x10000 != 0x8000"),
            (|s| s.config_space[0x11] = 0x40, "PCI config: BAR 0 value 0xd0004000 is not aligned to its size 0x8000"),
            (|s| s.config_space.truncate(200), "PCI config: saved configuration space is 200 bytes, expected 256"),
            (|s| { s.msix.vectors.pop(); }, "MSI-X table has 2 vectors, snapshot has 1"),
            (|s| s.msix.enabled = true, "MSI-X enable is false in config space but true in the table state"),
            (|s| s.common.queues.push(s.common.queues[0]), "snapshot has 2 queues, device has 1"),
            (|s| s.common.queues[0].max_size = 32, "queue 0: maximum size 32 != 16"),
            (|s| s.common.queues[0].size = 12, "queue 0: size 12 is not a power of two of at most 16"),
            (|s| s.common.queues[0].size = 32, "queue 0: size 32 is not a power of two of at most 16"),
            (|s| s.common.queues[0].desc = 0x1008, "queue 0: descriptor table at 0x1008 is not 16-byte aligned"),
            (|s| s.common.queues[0].device = 0xf_fff0, "queue 0: used ring at 0xffff0 (134 bytes) is outside guest memory"),
            (|s| s.common.queues[0].driver = u64::MAX - 1, "queue 0: available ring at 0xfffffffffffffffe (38 bytes) is outside guest memory"),
            (|s| s.queue_progress = vec![(40, 2)], "queue 0: 38 buffers in flight (next_avail 40, next_used 2) exceed its size 16"),
            (|s| s.queue_progress.clear(), "0 queue positions for 1 enabled queues of an active device"),
            (|s| s.common.queues[0].msix_vector = 9, "queue 0 MSI-X vector 9 is beyond the 2-vector table"),
            (|s| s.common.msix_config = 2, "configuration MSI-X vector 2 is beyond the 2-vector table"),
            (|s| s.common.driver_features |= 1 << 40, "driver features 0x10000000000 were not offered by this device"),
            (|s| s.common.queue_select = 5, "queue select 5 is beyond the 1 queues"),
            (|s| s.common.device_feature_select = 4, "device feature select 4 is beyond the 4 feature words"),
            (|s| s.common.status = status::FEATURES_OK, "device is active but status 0x08 lacks FEATURES_OK or DRIVER_OK"),
            (|s| s.isr = 0x80, "ISR 0x80 has bits other than queue and configuration interrupts"),
        ];
        for (tamper, reason) in cases {
            let mut snap = active_snapshot();
            tamper(&mut snap);
            let (mut b, log_b, regs_b) = device();
            let fresh = b.common_config().clone();
            let err = b.restore(&snap).expect_err(reason);
            assert_eq!(err.to_string(), reason);
            assert!(log_b.lock().unwrap().activations.is_empty(), "{reason}: activated anyway");
            assert_eq!(*b.common_config(), fresh, "{reason}: common config applied");
            assert_eq!(*regs_b.0.lock().unwrap(), vec![0xc000_0000 + bar_layout::NOTIFY], "{reason}: notifiers moved");
            assert_eq!(b.config.read_u32(0x10), 0xc000_0000, "{reason}: config space applied");
        }
    }

    #[test]
    fn inactive_snapshot_with_queue_positions_is_refused() {
        let (a, _, _) = device();
        let mut snap = a.snapshot();
        snap.queue_progress = vec![(0, 0)];
        let (mut b, _, _) = device();
        assert_eq!(b.restore(&snap).unwrap_err().to_string(), "1 queue positions for 0 enabled queues of an inactive device");
        snap.queue_progress.clear();
        assert_eq!(b.restore(&snap).unwrap(), None);
    }

    #[test]
    fn snapshot_decoding_is_bounded() {
        let snap = active_snapshot();
        let bytes = postcard::to_allocvec(&snap).unwrap();
        assert_eq!(postcard::from_bytes::<VirtioPciSnapshot>(&bytes).unwrap(), snap);
        for long in [
            VirtioPciSnapshot { device_state: vec![0; snapshot::MAX_DEVICE_STATE + 1], ..snap.clone() },
            VirtioPciSnapshot { config_space: vec![0; 257], ..snap.clone() },
            VirtioPciSnapshot { bar_sizes: vec![0; 7], ..snap.clone() },
        ] {
            let bytes = postcard::to_allocvec(&long).unwrap();
            assert!(postcard::from_bytes::<VirtioPciSnapshot>(&bytes).is_err());
        }
        for cut in [1, bytes.len() / 2, bytes.len() - 1] {
            assert!(postcard::from_bytes::<VirtioPciSnapshot>(&bytes[..cut]).is_err(), "truncated at {cut}");
        }
    }

    fn d_config_move(d: &mut VirtioPciDevice) {
        d.config_write(0x10, &0xd000_0000u32.to_le_bytes());
        d.config_write(0x04, &[0x02, 0]);
    }

    #[test]
    fn invalid_queue_sets_needs_reset_instead_of_activating() {
        let (mut d, log, _) = device();
        w32(&mut d, 0x08, 1);
        w32(&mut d, 0x0c, 1);
        BusDevice::write(&mut d, 0x14, &[status::FEATURES_OK]);
        w32(&mut d, 0x20, 0x1001); // misaligned descriptor table
        w32(&mut d, 0x24, 0x10); // and far outside guest memory
        w16(&mut d, 0x1c, 1);
        BusDevice::write(&mut d, 0x14, &[status::FEATURES_OK | status::DRIVER_OK]);
        assert!(log.lock().unwrap().activations.is_empty());
        let mut s = [0u8];
        BusDevice::read(&mut d, 0x14, &mut s);
        assert_ne!(s[0] & status::DEVICE_NEEDS_RESET, 0);
    }

    #[test]
    fn bar_move_moves_notifiers() {
        let (mut d, _, regs) = device();
        d.config_write(0x10, &0xd000_0000u32.to_le_bytes());
        assert!(d.config_write(0x04, &[0x02, 0]).len() == 1);
        assert_eq!(*regs.0.lock().unwrap(), vec![0xd000_0000 + bar_layout::NOTIFY]);
        assert_eq!(d.bar_address(), 0xd000_0000);
    }
}
