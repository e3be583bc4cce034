//! A whole machine: KVM VM, guest memory, vCPU threads, legacy devices, and the event
//! channel that says when it ends. Built stopped; `start` runs the vCPUs.

use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use devices::bus::Bus;
use devices::legacy::serial::{SerialOutput, COM1_IRQ};
use devices::legacy::{DebugPort, Serial};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress};

use crate::api::{ApiCommand, ApiReply, ApiRequest};
use crate::boot::{self, regs, BootEntry, BootError, BootSource};
use crate::cpuid::{self, CpuidError};
use crate::kvm_vm::{self, KvmVmError, VmOptions};
use crate::legacy_devices::{add_legacy_devices, LegacyError};
use crate::pci_devices::{add_pci_devices, PciSetupError};
use crate::memory::{create_guest_memory, GuestMemoryMmap, MemoryError};
use crate::vcpu::pause::PauseControl;
use crate::vcpu::setup::{configure_vcpu, VcpuSetupError};
use crate::vcpu::{self, VcpuContext, VmEvent};

/// How the boot vCPU starts.
pub enum Boot {
    /// Direct Linux boot.
    Linux(BootSource),
    /// Code copied to `load_addr` and entered there in 32-bit protected mode with flat
    /// 4 GiB segments and paging off (tiny test guests).
    Flat32 { code: Vec<u8>, load_addr: u64 },
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
    Reset { reason: String },
    /// Every vCPU halted (test guests without an irqchip).
    AllHalted,
    VcpuFailed { vcpu: u8, reason: String },
    UserQuit,
}

impl MachineExit {
    /// Whether the guest ended the way a guest is meant to (power off or reboot).
    pub fn is_clean(&self) -> bool {
        matches!(self, MachineExit::PowerOff | MachineExit::Reset { .. } | MachineExit::AllHalted | MachineExit::UserQuit)
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
    #[error("vCPU {vcpu}: `{step}` failed: {source}")]
    VcpuIoctl { vcpu: u8, step: &'static str, source: kvm_ioctls::Error },
    #[error("registering irqfd for GSI {gsi}: {source}")]
    Irqfd { gsi: u32, source: kvm_ioctls::Error },
    #[error("starting vCPU thread: {0}")]
    Thread(std::io::Error),
    #[error("installing the vCPU kick signal handler: {0}")]
    Signal(vmm_sys_util::errno::Error),
    #[error(transparent)]
    Pci(#[from] PciSetupError),
    #[error("virtio devices need the in-kernel irqchip (MSI routing)")]
    VirtioNeedsIrqchip,
    #[error("the machine was already started")]
    AlreadyStarted,
}

/// A machine; see the module docs.
pub struct Machine {
    // Field order matters for drop: threads are joined in Drop before anything else.
    threads: Vec<JoinHandle<()>>,
    pending_vcpus: Vec<VcpuFd>,
    pause: Arc<PauseControl>,
    events_tx: Sender<VmEvent>,
    events_rx: Receiver<VmEvent>,
    halted: usize,
    cpus: u8,
    memory: u64,
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    serial: Arc<Mutex<Serial>>,
    debug_port: Arc<Mutex<DebugPort>>,
    vm: Arc<VmFd>,
    mem: GuestMemoryMmap,
    started_at: Instant,
}

impl Machine {
    /// Builds the machine (stopped). `started_at` is when the user asked for it, for
    /// boot timing.
    pub fn new(kvm: &Kvm, config: MachineConfig, started_at: Instant) -> Result<Self, MachineError> {
        let max = kvm.get_max_vcpus().min(254);
        if config.cpus == 0 || usize::from(config.cpus) > max {
            return Err(MachineError::CpuCount { requested: config.cpus, max });
        }
        let mem = create_guest_memory(config.memory)?;
        let options = VmOptions { in_kernel_irqchip: config.in_kernel_irqchip, track_dirty_pages: config.track_dirty_pages };
        let vm = Arc::new(kvm_vm::create_vm(kvm, &mem, options)?);

        let entry = match &config.boot {
            Boot::Linux(source) => Some(boot::load(&mem, config.memory, source, config.cpus)?),
            Boot::Flat32 { code, load_addr } => {
                mem.write_slice(code, GuestAddress(*load_addr)).map_err(BootError::GuestMemory)?;
                None
            }
        };

        let (events_tx, events_rx) = channel();
        let pio = Arc::new(Bus::new());
        let legacy = add_legacy_devices(&pio, config.serial_output, events_tx.clone(), started_at)?;
        if config.in_kernel_irqchip {
            vm.register_irqfd(legacy.serial_interrupt.event(), COM1_IRQ)
                .map_err(|source| MachineError::Irqfd { gsi: COM1_IRQ, source })?;
        }

        let mmio = Arc::new(Bus::new());
        if config.in_kernel_irqchip {
            add_pci_devices(&vm, &mem, &pio, &mmio, config.virtio_devices)?;
        } else if !config.virtio_devices.is_empty() {
            return Err(MachineError::VirtioNeedsIrqchip);
        }

        let base_cpuid = cpuid::supported_cpuid(kvm)?;
        let mut pending_vcpus = Vec::new();
        for index in 0..config.cpus {
            let ioctl = |step| move |source| MachineError::VcpuIoctl { vcpu: index, step, source };
            let fd = vm.create_vcpu(u64::from(index)).map_err(ioctl("KVM_CREATE_VCPU"))?;
            configure_vcpu(&fd, index, &cpuid::vcpu_cpuid(&base_cpuid, index, config.cpus), config.in_kernel_irqchip)?;
            if index == 0 {
                set_boot_registers(&fd, &mem, entry, &config.boot).map_err(|e| match e {
                    BootRegsError::Ioctl(step, source) => MachineError::VcpuIoctl { vcpu: 0, step, source },
                    BootRegsError::Boot(b) => MachineError::Boot(b),
                })?;
            }
            pending_vcpus.push(fd);
        }

        Ok(Self {
            threads: Vec::new(),
            pending_vcpus,
            pause: Arc::new(PauseControl::new()),
            events_tx,
            events_rx,
            halted: 0,
            cpus: config.cpus,
            memory: config.memory,
            pio,
            mmio,
            serial: legacy.serial,
            debug_port: legacy.debug_port,
            vm,
            mem,
            started_at,
        })
    }

    /// The port I/O bus.
    pub fn pio_bus(&self) -> &Arc<Bus> {
        &self.pio
    }

    /// The MMIO bus.
    pub fn mmio_bus(&self) -> &Arc<Bus> {
        &self.mmio
    }

    /// Guest memory.
    pub fn guest_memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// The COM1 UART (to queue console input).
    pub fn serial(&self) -> Arc<Mutex<Serial>> {
        self.serial.clone()
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
        if self.pending_vcpus.is_empty() {
            return Err(MachineError::AlreadyStarted);
        }
        vcpu::install_kick_handler().map_err(MachineError::Signal)?;
        let pio = self.pio.clone();
        let mmio = self.mmio.clone();
        for (index, fd) in self.pending_vcpus.drain(..).enumerate() {
            let ctx = VcpuContext {
                index: index as u8,
                fd,
                pio: pio.clone(),
                mmio: mmio.clone(),
                pause: self.pause.clone(),
                events: self.events_tx.clone(),
            };
            self.threads.push(vcpu::spawn(ctx).map_err(MachineError::Thread)?);
        }
        Ok(())
    }

    /// Stops every vCPU between instructions and returns once all are parked.
    pub fn pause(&self) {
        let threads = &self.threads;
        self.pause.pause(|| threads.iter().for_each(vcpu::kick));
    }

    /// Resumes vCPUs parked by [`Machine::pause`].
    pub fn resume(&self) {
        self.pause.resume();
    }

    /// Whether the vCPUs are paused.
    pub fn is_paused(&self) -> bool {
        self.pause.is_paused()
    }

    /// Pages the guest wrote since the last call (needs `track_dirty_pages`).
    pub fn take_dirty_pages(&self) -> Result<Vec<u64>, KvmVmError> {
        kvm_vm::take_dirty_pages(&self.vm, &self.mem)
    }

    /// Waits until the machine ends (or `timeout` passes: `None` then).
    pub fn wait_for_exit(&mut self, timeout: Option<Duration>) -> Option<MachineExit> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let event = match deadline {
                None => self.events_rx.recv().ok()?,
                Some(d) => match self.events_rx.recv_timeout(d.saturating_duration_since(Instant::now())) {
                    Ok(e) => e,
                    Err(RecvTimeoutError::Timeout) => return None,
                    Err(RecvTimeoutError::Disconnected) => return None,
                },
            };
            let exit = match event {
                VmEvent::PowerOff => MachineExit::PowerOff,
                VmEvent::Reset { reason } => MachineExit::Reset { reason },
                VmEvent::UserQuit => MachineExit::UserQuit,
                VmEvent::VcpuFailed { vcpu, reason } => MachineExit::VcpuFailed { vcpu, reason },
                VmEvent::Api(request) => {
                    match self.handle_api(request) {
                        Some(exit) => exit,
                        None => continue,
                    }
                }
                VmEvent::Halted { .. } => {
                    self.halted += 1;
                    if self.halted < usize::from(self.cpus) {
                        continue;
                    }
                    MachineExit::AllHalted
                }
            };
            self.stop_vcpus();
            if let Err(e) = devices::sync::lock(&self.serial).flush_output() {
                tracing::warn!("flushing serial output: {e}");
            }
            return Some(exit);
        }
    }

    /// Executes a control-API request; returns an exit when the request ends the VM.
    fn handle_api(&mut self, request: ApiRequest) -> Option<MachineExit> {
        let (reply, exit) = match request.command {
            ApiCommand::Info => (
                ApiReply {
                    state: Some(if self.is_paused() { "paused" } else { "running" }.into()),
                    cpus: Some(self.cpus),
                    memory_bytes: Some(self.memory),
                    ..ApiReply::ok()
                },
                None,
            ),
            ApiCommand::Pause => {
                self.pause();
                (ApiReply::ok(), None)
            }
            ApiCommand::Resume => {
                self.resume();
                (ApiReply::ok(), None)
            }
            ApiCommand::Shutdown => (ApiReply::ok(), Some(MachineExit::UserQuit)),
        };
        let _ = request.reply.send(reply);
        exit
    }

    /// Ends every vCPU thread and joins it.
    pub fn stop_vcpus(&mut self) {
        self.pause.request_stop();
        while self.threads.iter().any(|t| !t.is_finished()) {
            self.threads.iter().for_each(vcpu::kick);
            std::thread::sleep(Duration::from_millis(1));
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.stop_vcpus();
    }
}

enum BootRegsError {
    Ioctl(&'static str, kvm_ioctls::Error),
    Boot(BootError),
}

fn set_boot_registers(fd: &VcpuFd, mem: &GuestMemoryMmap, entry: Option<BootEntry>, boot: &Boot) -> Result<(), BootRegsError> {
    let mut sregs = fd.get_sregs().map_err(|e| BootRegsError::Ioctl("KVM_GET_SREGS", e))?;
    let regs = match (entry, boot) {
        (Some(entry), _) => {
            regs::setup_sregs(mem, entry.protocol, &mut sregs).map_err(BootRegsError::Boot)?;
            regs::boot_regs(entry)
        }
        (None, Boot::Flat32 { load_addr, .. }) => {
            regs::setup_sregs(mem, boot::BootProtocol::Pvh, &mut sregs).map_err(BootRegsError::Boot)?;
            kvm_bindings::kvm_regs { rip: *load_addr, rflags: 2, ..Default::default() }
        }
        (None, Boot::Linux(_)) => unreachable!("Linux boot always yields an entry"),
    };
    fd.set_sregs(&sregs).map_err(|e| BootRegsError::Ioctl("KVM_SET_SREGS", e))?;
    fd.set_regs(&regs).map_err(|e| BootRegsError::Ioctl("KVM_SET_REGS", e))?;
    Ok(())
}
