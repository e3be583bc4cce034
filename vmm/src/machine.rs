//! A whole machine: KVM VM, guest memory, vCPU threads, devices, and the event loop
//! that says when it ends. Built stopped; `start` runs the vCPUs.
//!
//! A guest reboot ([`Machine::reboot`]) builds the machine again from the same
//! blueprint: new VM, vCPUs, guest memory and device models' transports, the boot
//! source asked again; what outlives the boot is the event channel (the console and
//! API threads hold senders), the UART (reset to power-on state, same output) and
//! the virtio device models with their host backends (reset as a driver reset does).

use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use devices::bus::Bus;
use devices::legacy::serial::{SerialOutput, COM1_IRQ};
use devices::power::{PowerButton, POWER_BUTTON_GSI};
use devices::interrupt::Interrupt;
use devices::legacy::{DebugPort, Serial};
use devices::sync::lock;
use devices::virtio::VirtioDevice;
use kvm_ioctls::{Kvm, VcpuFd};
use vm_memory::{Bytes, GuestAddress};

use crate::events::{ApiCommand, ApiReply, ApiRequest};
use migration::messages::BootRecord;
use crate::boot::{self, regs, BootEntry, BootError, BootProvider};
use crate::cpuid::{self, CpuidError};
use crate::kvm_vm::{self, KvmVmError, VmOptions};
use crate::legacy_devices::{add_legacy_devices, new_serial, place_reset_control, LegacyError};
use crate::machine_parts::MachineParts;
use crate::memory::{create_guest_memory, map_guest_memory_file, GuestMemoryMmap, MemoryError};
use crate::migrate;
use crate::migrate::source::MigrationUpdate;
use crate::snapshot::take::SnapshotUpdate;
use crate::pci_devices::{add_pci_devices, PciSetupError};
use crate::vcpu::coalesced_console::{CoalescedConsole, ConsoleLink};
use crate::vcpu::set::{VcpuSet, VcpuStartError};
use crate::vcpu::setup::{configure_vcpu, VcpuSetupError};
use crate::vmgenid::{GenerationId, GenerationIdError, VMGENID_GSI};
use crate::events::VmEvent;

/// How often console output without a newline is pushed out.
pub const CONSOLE_FLUSH_INTERVAL: Duration = Duration::from_millis(50);

/// How the boot vCPU starts.
#[derive(Clone)]
pub enum Boot {
    /// Direct Linux boot of what the provider gives, asked again at every boot.
    Linux(BootProvider),
    /// Code copied to `load_addr` and entered there in 32-bit protected mode with flat
    /// 4 GiB segments and paging off (tiny test guests).
    Flat32 { code: Vec<u8>, load_addr: u64 },
    /// Nothing: memory and vCPU state arrive from a migration source.
    Incoming,
    /// Nothing: guest memory is mapped copy-on-write from a snapshot's memory file
    /// (`memory::map_guest_memory_file`) and the state is restored from it.
    Snapshot(Arc<std::fs::File>),
}

impl Boot {
    /// Whether a machine booted so can boot again by itself (a received guest has
    /// nothing to boot from).
    pub fn can_boot_again(&self) -> bool {
        !matches!(self, Boot::Incoming | Boot::Snapshot(_))
    }
}

/// What every boot of a machine is built from.
#[derive(Clone)]
struct Blueprint {
    cpus: u8,
    memory: u64,
    boot: Boot,
    in_kernel_irqchip: bool,
    track_dirty_pages: bool,
    /// The VM generation ID written at every boot that makes guest memory afresh:
    /// `None` draws a random one (a cold boot); a reboot carries the ID the guest had.
    generation_id: Option<GenerationId>,
    /// What a machine that arrived without a boot of its own (received, restored)
    /// boots at the guest's first reset; later boots use it as `boot`.
    next_boot: Option<BootProvider>,
    /// The boot source as a migration or snapshot records it.
    boot_record: Option<BootRecord>,
}

/// What outlives one boot of the machine.
struct Carried {
    events_tx: Sender<VmEvent>,
    events_rx: Receiver<VmEvent>,
    serial: Arc<Mutex<Serial>>,
    serial_interrupt: Interrupt,
    virtio_devices: Vec<Box<dyn VirtioDevice>>,
}

/// Machine configuration.
pub struct MachineConfig {
    pub cpus: u8,
    pub memory: u64,
    pub boot: Boot,
    pub serial_output: SerialOutput,
    pub in_kernel_irqchip: bool,
    pub track_dirty_pages: bool,
    /// Virtio devices, each put on PCI bus 0 (needs the in-kernel irqchip for MSI).
    pub virtio_devices: Vec<Box<dyn devices::virtio::VirtioDevice>>,
}

/// Why the machine stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MachineExit {
    PowerOff,
    /// The guest asked for a reset (reboot).
    Reset { reason: String },
    /// A vCPU triple-faulted: the guest crashed (not a requested reset).
    TripleFault { vcpu: u8, reason: String },
    /// Every vCPU halted (test guests without an irqchip).
    AllHalted,
    VcpuFailed { vcpu: u8, reason: String },
    UserQuit,
    /// The guest was live-migrated to another host.
    MigratedAway,
    /// A snapshot was written with `--stop`: the guest ends here.
    Snapshotted,
    /// The owner thread could not confine itself (seccomp); the machine was stopped.
    ConfinementFailed { reason: String },
}

impl MachineExit {
    /// Whether the machine ended the way machines are meant to end.
    pub fn is_clean(&self) -> bool {
        !matches!(self, MachineExit::VcpuFailed { .. } | MachineExit::TripleFault { .. } | MachineExit::ConfinementFailed { .. })
    }
}

/// Errors building or running a machine.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    #[error("--cpus {requested} is out of range: this host's KVM allows 1 to {max}")]
    CpuCount { requested: u8, max: usize },
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    Kvm(#[from] KvmVmError),
    #[error(transparent)]
    Cpuid(#[from] CpuidError),
    #[error(transparent)]
    Boot(#[from] BootError),
    #[error(transparent)]
    VcpuSetup(#[from] VcpuSetupError),
    #[error(transparent)]
    Legacy(#[from] LegacyError),
    #[error(transparent)]
    Pci(#[from] PciSetupError),
    #[error(transparent)]
    Start(#[from] VcpuStartError),
    #[error("vCPU {vcpu}: `{step}` failed: {source}")]
    VcpuIoctl { vcpu: u8, step: &'static str, source: kvm_ioctls::Error },
    #[error("registering irqfd for GSI {gsi}: {source}")]
    Irqfd { gsi: u32, source: kvm_ioctls::Error },
    #[error("virtio devices need the in-kernel irqchip (MSI routing)")]
    VirtioNeedsIrqchip,
    #[error("starting the machine's owner thread: {0}")]
    OwnerThread(std::io::Error),
    #[error(transparent)]
    GenerationId(#[from] GenerationIdError),
    #[error("booting the guest again after its reboot (boot {boot}): {source}")]
    Reboot { boot: u32, source: Box<MachineError> },
}

/// A machine; see the module docs.
pub struct Machine {
    parts: MachineParts,
    blueprint: Blueprint,
    events_tx: Sender<VmEvent>,
    events_rx: Receiver<VmEvent>,
    serial_interrupt: Interrupt,
    /// The ACPI power button (a machine with the in-kernel irqchip).
    power_button: Option<PowerButton>,
    /// The Generic Event Device's "VM generation ID changed" line (in-kernel irqchip).
    vmgenid_changed: Option<Interrupt>,
    halted: usize,
    pio: Arc<Bus>,
    debug_port: Arc<Mutex<DebugPort>>,
    started_at: Instant,
    migrating: bool,
    /// A snapshot thread works on the machine (resets are held as for a migration).
    snapshotting: bool,
    /// A reset or triple fault that came while a migration ran: acted on when the
    /// migration fails (if it succeeds, the guest runs on the destination).
    deferred_reset: Option<MachineExit>,
    /// 1 for the first boot, one more at every reboot.
    boot_number: u32,
}

impl Machine {
    /// Builds the machine (stopped). `started_at` is when the user asked for it, for
    /// boot timing.
    pub fn new(kvm: &Kvm, config: MachineConfig, started_at: Instant) -> Result<Self, MachineError> {
        let (serial, serial_interrupt) = new_serial(config.serial_output)?;
        let (events_tx, events_rx) = channel();
        let carried = Carried { events_tx, events_rx, serial, serial_interrupt, virtio_devices: config.virtio_devices };
        let blueprint = Blueprint {
            cpus: config.cpus,
            memory: config.memory,
            boot: config.boot,
            in_kernel_irqchip: config.in_kernel_irqchip,
            track_dirty_pages: config.track_dirty_pages,
            generation_id: None,
            next_boot: None,
            boot_record: None,
        };
        first_start(started_at);
        Self::build(kvm, blueprint, carried, started_at, 1)
    }

    /// Builds one boot of the machine.
    fn build(kvm: &Kvm, config: Blueprint, carried: Carried, started_at: Instant, boot_number: u32) -> Result<Self, MachineError> {
        let Carried { events_tx, events_rx, serial, serial_interrupt, virtio_devices } = carried;
        let max = kvm.get_max_vcpus().min(254);
        if config.cpus == 0 || usize::from(config.cpus) > max {
            return Err(MachineError::CpuCount { requested: config.cpus, max });
        }
        let phase = |what: &str| tracing::debug!(elapsed_us = started_at.elapsed().as_micros() as u64, "{what}");
        let mem = match &config.boot {
            Boot::Snapshot(file) => map_guest_memory_file(config.memory, file)?,
            _ => create_guest_memory(config.memory)?,
        };
        phase("guest memory mapped");
        let options = VmOptions { in_kernel_irqchip: config.in_kernel_irqchip, track_dirty_pages: config.track_dirty_pages };
        let vm = Arc::new(kvm_vm::create_vm(kvm, &mem, options)?);

        phase("KVM VM created");
        let entry = match &config.boot {
            Boot::Linux(provider) => {
                let source = provider().map_err(BootError::Provider)?;
                Some(boot::load(&mem, config.memory, source, config.cpus)?)
            }
            Boot::Flat32 { code, load_addr } => {
                mem.write_slice(code, GuestAddress(*load_addr)).map_err(BootError::GuestMemory)?;
                None
            }
            Boot::Incoming | Boot::Snapshot(_) => None,
        };
        if !matches!(config.boot, Boot::Incoming | Boot::Snapshot(_)) {
            config.generation_id.map_or_else(GenerationId::random, Ok)?.write(&mem)?;
        }

        phase("boot image loaded");
        let pio = Arc::new(Bus::new());
        let legacy = add_legacy_devices(&pio, &serial, events_tx.clone(), started_at)?;
        if config.in_kernel_irqchip {
            vm.register_irqfd(serial_interrupt.event(), COM1_IRQ)
                .map_err(|source| MachineError::Irqfd { gsi: COM1_IRQ, source })?;
        }
        let power_button = if config.in_kernel_irqchip {
            let line = Interrupt::new().map_err(LegacyError::EventFd)?;
            vm.register_irqfd(line.event(), POWER_BUTTON_GSI)
                .map_err(|source| MachineError::Irqfd { gsi: POWER_BUTTON_GSI, source })?;
            Some(PowerButton::new(line))
        } else {
            None
        };
        let vmgenid_changed = if config.in_kernel_irqchip {
            let line = Interrupt::new().map_err(LegacyError::EventFd)?;
            vm.register_irqfd(line.event(), VMGENID_GSI).map_err(|source| MachineError::Irqfd { gsi: VMGENID_GSI, source })?;
            Some(line)
        } else {
            None
        };
        let mmio = Arc::new(Bus::new());
        let virtio = if config.in_kernel_irqchip {
            add_pci_devices(&vm, &mem, &pio, &mmio, virtio_devices, legacy.reset_control)?
        } else if virtio_devices.is_empty() {
            place_reset_control(&pio, legacy.reset_control)?;
            Vec::new()
        } else {
            return Err(MachineError::VirtioNeedsIrqchip);
        };

        phase("devices created");
        let base_cpuid = cpuid::supported_cpuid(kvm)?;
        let mut fds = Vec::new();
        let mut cpuid0 = Vec::new();
        let mut msr_indices = Vec::new();
        for index in 0..config.cpus {
            let ioctl = |step| move |source| MachineError::VcpuIoctl { vcpu: index, step, source };
            let fd = vm.create_vcpu(u64::from(index)).map_err(ioctl("KVM_CREATE_VCPU"))?;
            let vcpu_cpuid = cpuid::vcpu_cpuid(&base_cpuid, index, config.cpus);
            configure_vcpu(&fd, index, &vcpu_cpuid, config.in_kernel_irqchip)?;
            if index == 0 {
                set_boot_registers(&fd, &mem, entry, &config.boot)?;
                cpuid0 = vcpu_cpuid.as_slice().to_vec();
                msr_indices = crate::state::vcpu::migratable_msrs(kvm, &fd).unwrap_or_else(|e| {
                    tracing::warn!("probing MSRs for migration: {e}");
                    Vec::new()
                });
            }
            fds.push(fd);
        }

        phase("vCPUs configured");
        // Console coalescing needs the in-kernel irqchip (the kernel console it helps).
        let console = match (config.in_kernel_irqchip, fds.first()) {
            (true, Some(fd)) => CoalescedConsole::new(&vm, fd).map(|ring| ConsoleLink { ring, vm: vm.clone(), serial: serial.clone() }),
            _ => None,
        };
        Ok(Self {
            parts: MachineParts {
                vm,
                mem,
                vcpus: Arc::new(VcpuSet::new(fds, console)),
                virtio,
                serial,
                mmio,
                cpus: config.cpus,
                memory: config.memory,
                cpuid: Arc::new(cpuid0),
                msr_indices: Arc::new(msr_indices),
                boot_record: config.boot_record.clone(),
            },
            blueprint: config,
            events_tx,
            events_rx,
            serial_interrupt,
            power_button,
            vmgenid_changed,
            halted: 0,
            pio,
            debug_port: legacy.debug_port,
            started_at,
            migrating: false,
            snapshotting: false,
            deferred_reset: None,
            boot_number,
        })
    }

    /// Whether [`Machine::reboot`] can boot this machine again (a received or restored
    /// guest only with [`Machine::set_boot_source`]'s `next_boot`).
    pub fn can_reboot(&self) -> bool {
        self.blueprint.boot.can_boot_again() || self.blueprint.next_boot.is_some()
    }

    /// Sets what the guest boots: `record` describes it to a migration destination or
    /// a snapshot; `next_boot` is what a received or restored guest boots at its next
    /// reset (a machine that booted by itself boots the same again and needs none).
    /// Call it before [`Machine::start`].
    pub fn set_boot_source(&mut self, record: Option<BootRecord>, next_boot: Option<BootProvider>) {
        self.parts.boot_record = record.clone();
        self.blueprint.boot_record = record;
        self.blueprint.next_boot = next_boot;
    }

    /// Which boot this is: 1, then one more at every reboot.
    pub fn boot_number(&self) -> u32 {
        self.boot_number
    }

    /// Stops this boot and builds the machine again in power-on state (see the module
    /// docs), stopped: `start` runs it. The old VM, vCPUs and guest memory are gone
    /// before the new ones are made. Events of the old boot still queued (a guest
    /// that tried several reset methods, halts) are dropped; API requests and a
    /// console quit stay queued for the new boot. Call it on a thread that is not
    /// confined as the main class: it needs KVM's VM-building calls.
    pub fn reboot(mut self, kvm: &Kvm) -> Result<Machine, MachineError> {
        self.stop_vcpus();
        let virtio_devices: Vec<_> = self.parts.virtio.iter().map(|function| lock(function).detach_device()).collect();
        if let Err(e) = lock(&self.parts.serial).reset() {
            tracing::warn!("writing console output at the reboot: {e}");
        }
        let events_rx = std::mem::replace(&mut self.events_rx, channel().1);
        let mut kept = Vec::new();
        while let Ok(event) = events_rx.try_recv() {
            match event {
                VmEvent::Api(_) | VmEvent::UserQuit => kept.push(event),
                stale => tracing::debug!("dropping an event of the previous boot: {stale:?}"),
            }
        }
        for event in kept {
            let _ = self.events_tx.send(event);
        }
        let carried = Carried {
            events_tx: self.events_tx.clone(),
            events_rx,
            serial: self.parts.serial.clone(),
            serial_interrupt: self.serial_interrupt.clone(),
            virtio_devices,
        };
        let mut blueprint = self.blueprint.clone();
        // A reboot keeps the generation ID the guest has (a restored or received guest's
        // too, which arrived in its memory).
        match GenerationId::read(&self.parts.mem) {
            Ok(id) => blueprint.generation_id = Some(id),
            Err(e) => tracing::warn!("{e}; the next boot gets a new one"),
        }
        if !blueprint.boot.can_boot_again() {
            if let Some(next) = blueprint.next_boot.clone() {
                blueprint.boot = Boot::Linux(next);
            }
        }
        let boot_number = self.boot_number.saturating_add(1);
        // The old VM and its memory go first: two guests' RAM need not fit at once.
        drop(self);
        Self::build(kvm, blueprint, carried, Instant::now(), boot_number)
    }

    /// Gives the guest a new VM generation ID (a clone), written into guest memory;
    /// call it before the vCPUs run, then [`Machine::announce_generation_id`] once
    /// they do. Returns the new ID.
    pub fn new_generation_id(&self) -> Result<GenerationId, GenerationIdError> {
        let id = GenerationId::random()?;
        id.write(&self.parts.mem)?;
        tracing::debug!(id = id.hex(), "new VM generation ID");
        Ok(id)
    }

    /// Tells the guest its generation ID changed: the Generic Event Device's interrupt
    /// (machines with the in-kernel irqchip; others have no ACPI to hear it).
    pub fn announce_generation_id(&self) -> Result<(), GenerationIdError> {
        match &self.vmgenid_changed {
            Some(line) => line.trigger().map_err(GenerationIdError::Notify),
            None => Ok(()),
        }
    }

    /// The parts other threads may share.
    pub fn parts(&self) -> &MachineParts {
        &self.parts
    }

    /// The port I/O bus.
    pub fn pio_bus(&self) -> &Arc<Bus> {
        &self.pio
    }

    /// The MMIO bus.
    pub fn mmio_bus(&self) -> &Arc<Bus> {
        &self.parts.mmio
    }

    /// Guest memory.
    pub fn guest_memory(&self) -> &GuestMemoryMmap {
        &self.parts.mem
    }

    /// Console writes that reached the UART through KVM's coalesced ring.
    pub fn coalesced_console_writes(&self) -> u64 {
        self.parts.vcpus.coalesced_console_writes()
    }

    /// The COM1 UART (to queue console input).
    pub fn serial(&self) -> Arc<Mutex<Serial>> {
        self.parts.serial.clone()
    }

    /// The boot-timer port (to read the guest's marks).
    pub fn debug_port(&self) -> Arc<Mutex<DebugPort>> {
        self.debug_port.clone()
    }

    /// A sender for events from outside the machine (console escape, API).
    pub fn event_sender(&self) -> Sender<VmEvent> {
        self.events_tx.clone()
    }

    /// When the machine's clock started.
    pub fn started_at(&self) -> Instant {
        self.started_at
    }

    /// Starts one thread per vCPU.
    pub fn start(&mut self) -> Result<(), MachineError> {
        self.parts.vcpus.start(&self.pio, &self.parts.mmio, &self.events_tx)?;
        let ms = self.started_at.elapsed().as_millis() as u64;
        tracing::info!(target: "boot_timer", ms, "vCPUs started (VMM set-up time)");
        Ok(())
    }

    /// Stops every vCPU between instructions and returns once all are parked, or fails
    /// (the guest keeps running) naming the vCPUs that did not park in time.
    pub fn pause(&self) -> Result<(), crate::vcpu::pause::PauseError> {
        self.parts.vcpus.pause()
    }

    /// Resumes vCPUs parked by [`Machine::pause`].
    pub fn resume(&self) {
        self.parts.vcpus.resume();
    }

    /// Whether the vCPUs are paused.
    pub fn is_paused(&self) -> bool {
        self.parts.vcpus.is_paused()
    }

    /// Pages the guest wrote since the last call (needs `track_dirty_pages`).
    pub fn take_dirty_pages(&self) -> Result<Vec<u64>, KvmVmError> {
        kvm_vm::take_dirty_pages(&self.parts.vm, &self.parts.mem)
    }

    /// Waits until the machine ends (or `timeout` passes: `None` then), serving
    /// control-API requests meanwhile, and pushing out console output that has no
    /// newline yet every [`CONSOLE_FLUSH_INTERVAL`].
    /// The calling thread confines itself as the main thread class first.
    pub fn wait_for_exit(&mut self, timeout: Option<Duration>) -> Option<MachineExit> {
        if let Err(e) = tern_seccomp::confine(tern_seccomp::ThreadClass::Main) {
            self.stop_vcpus();
            return Some(MachineExit::ConfinementFailed { reason: e.to_string() });
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let mut wait = CONSOLE_FLUSH_INTERVAL;
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return None;
                }
                wait = wait.min(left);
            }
            let event = match self.events_rx.recv_timeout(wait) {
                Ok(e) => e,
                Err(RecvTimeoutError::Timeout) => {
                    self.parts.vcpus.drain_console(&self.pio);
                    if let Err(e) = lock(&self.parts.serial).flush_output_if_idle(CONSOLE_FLUSH_INTERVAL) {
                        tracing::warn!("writing console output: {e}");
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return None,
            };
            let exit = match event {
                VmEvent::PowerOff => MachineExit::PowerOff,
                VmEvent::Reset { reason } if self.busy() => {
                    self.defer_reset(MachineExit::Reset { reason });
                    continue;
                }
                VmEvent::TripleFault { vcpu, reason } if self.busy() => {
                    self.defer_reset(MachineExit::TripleFault { vcpu, reason });
                    continue;
                }
                VmEvent::Reset { reason } => MachineExit::Reset { reason },
                VmEvent::TripleFault { vcpu, reason } => MachineExit::TripleFault { vcpu, reason },
                VmEvent::UserQuit => MachineExit::UserQuit,
                VmEvent::VcpuFailed { vcpu, reason } => MachineExit::VcpuFailed { vcpu, reason },
                VmEvent::MigratedAway => MachineExit::MigratedAway,
                VmEvent::MigrationFailed => {
                    self.migrating = false;
                    match self.deferred_reset.take() {
                        Some(exit) => exit,
                        None => continue,
                    }
                }
                VmEvent::SnapshotEnded { stopped } => {
                    self.snapshotting = false;
                    match (stopped, self.deferred_reset.take()) {
                        (true, _) => MachineExit::Snapshotted,
                        (false, Some(exit)) => exit,
                        (false, None) => continue,
                    }
                }
                VmEvent::Api(request) => match self.handle_api(request) {
                    Some(exit) => exit,
                    None => continue,
                },
                VmEvent::Halted { .. } => {
                    self.halted += 1;
                    if self.halted < usize::from(self.parts.cpus) {
                        continue;
                    }
                    MachineExit::AllHalted
                }
            };
            self.stop_vcpus();
            self.parts.vcpus.drain_console(&self.pio);
            if let Err(e) = lock(&self.parts.serial).flush_output() {
                tracing::warn!("flushing serial output: {e}");
            }
            return Some(exit);
        }
    }

    /// Whether a migration or a snapshot works on the machine.
    fn busy(&self) -> bool {
        self.migrating || self.snapshotting
    }

    /// Holds a reset that came during a migration (the first one: a guest tries
    /// several methods in a row) until the migration ends.
    fn defer_reset(&mut self, exit: MachineExit) {
        if self.deferred_reset.is_none() {
            tracing::info!("the guest asked for a reset during a migration: held until the migration ends ({exit:?})");
            self.deferred_reset = Some(exit);
        }
    }

    /// Executes a control-API request; returns an exit when the request ends the VM.
    fn handle_api(&mut self, request: ApiRequest) -> Option<MachineExit> {
        let busy = if self.snapshotting { "a snapshot is in progress" } else { "a migration is in progress" };
        let busy = || ApiReply::error(busy);
        let (reply, exit) = match request.command {
            ApiCommand::Info => (
                ApiReply {
                    state: Some(if self.migrating { "migrating" } else if self.snapshotting { "snapshotting" } else if self.is_paused() { "paused" } else { "running" }.into()),
                    cpus: Some(self.parts.cpus),
                    memory_bytes: Some(self.parts.memory),
                    boot: Some(self.boot_number),
                    pid: Some(std::process::id()),
                    uptime_ms: Some(first_start(self.started_at).elapsed().as_millis() as u64),
                    ..ApiReply::ok()
                },
                None,
            ),
            ApiCommand::Pause if self.busy() => (busy(), None),
            ApiCommand::Resume if self.busy() => (busy(), None),
            ApiCommand::Pause => match self.pause() {
                Ok(()) => (ApiReply::ok(), None),
                Err(e) => {
                    tracing::warn!("pause failed: {e}");
                    (ApiReply::error(format!("pause failed: {e}")), None)
                }
            },
            ApiCommand::Resume => {
                self.resume();
                (ApiReply::ok(), None)
            }
            ApiCommand::Shutdown => (ApiReply::ok(), Some(MachineExit::UserQuit)),
            ApiCommand::PowerButton => (self.press_power_button(), None),
            ApiCommand::Migrate { to, max_downtime_ms, max_bandwidth_mib_s, tls_dir, vm_name } => {
                if self.busy() {
                    (busy(), None)
                } else if self.is_paused() {
                    (ApiReply::error("resume the guest before migrating it"), None)
                } else {
                    self.migrating = true;
                    let options = migrate::source::Options {
                        to,
                        max_downtime: Duration::from_millis(max_downtime_ms),
                        max_bandwidth: (max_bandwidth_mib_s > 0).then_some(max_bandwidth_mib_s << 20),
                        tls_dir,
                        vm_name,
                    };
                    // The migration thread answers on the request's channel itself.
                    let reply = request.reply;
                    let updates = move |update| {
                        let _ = reply.send(migration_reply(update));
                    };
                    migrate::source::spawn(self.parts.clone(), options, updates, self.events_tx.clone());
                    return None;
                }
            }
            ApiCommand::Snapshot { to, stop, no_disks } => {
                if self.busy() {
                    (busy(), None)
                } else if self.is_paused() {
                    (ApiReply::error("resume the guest before snapshotting it"), None)
                } else {
                    self.snapshotting = true;
                    let reply = request.reply;
                    let updates = move |update| {
                        let _ = reply.send(snapshot_reply(update));
                    };
                    let options = crate::snapshot::take::Options { to, stop, no_disks };
                    crate::snapshot::take::spawn(self.parts.clone(), options, updates, self.events_tx.clone());
                    return None;
                }
            }
        };
        let _ = request.reply.send(reply);
        exit
    }

    /// The power button's press, as an API reply.
    fn press_power_button(&self) -> ApiReply {
        match &self.power_button {
            Some(button) => match button.press() {
                Ok(()) => ApiReply::ok(),
                Err(e) => ApiReply::error(format!("pressing the power button: {e}")),
            },
            None => ApiReply::error("this machine has no power button (no in-kernel irqchip)"),
        }
    }

    /// Ends every vCPU thread and joins it.
    pub fn stop_vcpus(&mut self) {
        self.parts.vcpus.stop();
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.stop_vcpus();
    }
}

/// When this process's first machine was started (`info`'s uptime): set by the
/// first call, so reboots (a new `started_at` each) do not reset it.
fn first_start(started_at: Instant) -> Instant {
    static FIRST: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *FIRST.get_or_init(|| started_at)
}

/// The reply a migration update becomes: progress replies say more follow
/// (`done: false`); the report or the error ends the request.
fn migration_reply(update: MigrationUpdate) -> ApiReply {
    match update {
        MigrationUpdate::Progress(progress) => ApiReply { progress: Some(progress), done: false, ..ApiReply::ok() },
        MigrationUpdate::Done(report) => ApiReply { report: Some(report), ..ApiReply::ok() },
        MigrationUpdate::Failed(reason) => ApiReply::error(reason),
    }
}

/// The reply a snapshot update becomes (as [`migration_reply`]).
fn snapshot_reply(update: SnapshotUpdate) -> ApiReply {
    match update {
        SnapshotUpdate::Progress(p) => ApiReply { snapshot_progress: Some(p), done: false, ..ApiReply::ok() },
        SnapshotUpdate::Done(report) => ApiReply { snapshot: Some(report), ..ApiReply::ok() },
        SnapshotUpdate::Failed(reason) => ApiReply::error(reason),
    }
}

fn set_boot_registers(fd: &VcpuFd, mem: &GuestMemoryMmap, entry: Option<BootEntry>, boot: &Boot) -> Result<(), MachineError> {
    let ioctl = |step| move |source| MachineError::VcpuIoctl { vcpu: 0, step, source };
    let mut sregs = fd.get_sregs().map_err(ioctl("KVM_GET_SREGS"))?;
    let regs = match (entry, boot) {
        (Some(entry), _) => {
            regs::setup_sregs(mem, entry.protocol, &mut sregs)?;
            regs::boot_regs(entry)
        }
        (None, Boot::Flat32 { load_addr, .. }) => {
            regs::setup_sregs(mem, boot::BootProtocol::Pvh, &mut sregs)?;
            kvm_bindings::kvm_regs { rip: *load_addr, rflags: 2, ..Default::default() }
        }
        // Registers come from the migration stream.
        (None, _) => return Ok(()),
    };
    fd.set_sregs(&sregs).map_err(ioctl("KVM_SET_SREGS"))?;
    fd.set_regs(&regs).map_err(ioctl("KVM_SET_REGS"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use migration::report::{Progress, Report};

    fn line(update: MigrationUpdate) -> String {
        serde_json::to_string(&migration_reply(update)).unwrap()
    }

    #[test]
    fn migration_updates_become_the_replies_clients_read() {
        let progress = Progress { round: 2, pages_left: 7, ..Default::default() };
        let text = line(MigrationUpdate::Progress(progress.clone()));
        let expected = format!("{{\"ok\":true,\"progress\":{},\"done\":false}}", serde_json::to_string(&progress).unwrap());
        assert_eq!(text, expected);
        let report = Report { rounds: 3, ..Default::default() };
        let text = line(MigrationUpdate::Done(report.clone()));
        assert_eq!(text, format!("{{\"ok\":true,\"report\":{}}}", serde_json::to_string(&report).unwrap()));
        assert_eq!(line(MigrationUpdate::Failed("migration failed: no".into())), r#"{"ok":false,"error":"migration failed: no"}"#);
    }
}
