//! vCPU threads: one per vCPU, each looping on KVM_RUN and routing exits to the buses.

pub mod coalesced_console;
mod exit_profile;
pub mod pause;
pub mod set;
pub mod setup;

use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, Once};
use std::thread::JoinHandle;

use devices::bus::Bus;
use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use crate::events::VmEvent;
use coalesced_console::ConsoleLink;
use pause::{CheckIn, PauseControl, VcpuRegistration};

/// The signal used to kick vCPU threads out of KVM_RUN.
pub fn kick_signal() -> i32 {
    SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the (empty) kick-signal handler once per process: its only job is to make
/// KVM_RUN return EINTR.
pub fn install_kick_handler() -> Result<(), vmm_sys_util::errno::Error> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| result = register_signal_handler(kick_signal(), on_kick));
    result
}

/// Everything a vCPU thread needs.
pub struct VcpuContext {
    pub index: u8,
    /// Locked by the vCPU thread around each KVM_RUN; free while the vCPU is parked,
    /// which is when state capture and restore use it.
    pub fd: Arc<Mutex<VcpuFd>>,
    pub pio: Arc<Bus>,
    pub mmio: Arc<Bus>,
    pub pause: Arc<PauseControl>,
    pub events: Sender<VmEvent>,
    /// Coalesced console writes to drain on every exit (when KVM supports them).
    pub console: Option<Arc<coalesced_console::ConsoleLink>>,
}

/// UART registers whose writes can switch console coalescing (IER, LCR).
const UART_CONTROL_PORTS: [u16; 2] = [0x3f9, 0x3fb];

/// Starts the vCPU thread. The vCPU is registered with the pause control before the
/// thread starts (a pause right after `spawn` waits for it); the registration moves
/// into the thread and is dropped when the thread ends however it ends (loop exit,
/// unwinding, or a failed spawn dropping the closure), so no pause waits for a dead
/// vCPU.
pub fn spawn(ctx: VcpuContext) -> std::io::Result<JoinHandle<()>> {
    let registration = ctx.pause.register_vcpu(ctx.index);
    std::thread::Builder::new().name(format!("vcpu{}", ctx.index)).spawn(move || {
        // Before the first KVM_RUN: everything after it is the guest's doing.
        match tern_seccomp::confine(tern_seccomp::ThreadClass::Vcpu) {
            Ok(()) => run_loop(ctx, registration),
            Err(e) => {
                let _ = ctx.events.send(VmEvent::VcpuFailed { vcpu: ctx.index, reason: e.to_string() });
            }
        }
    })
}

/// Sends the kick signal to a vCPU thread.
pub fn kick(thread: &JoinHandle<()>) {
    if !thread.is_finished() {
        // An error means the thread already exited, which is what a kick wants anyway.
        let _ = thread.kill(kick_signal());
    }
}

fn run_loop(ctx: VcpuContext, registration: VcpuRegistration) {
    let span = tracing::debug_span!("vcpu", index = ctx.index);
    let _enter = span.enter();
    let mut profile = exit_profile::ExitProfile::new(ctx.index);
    while registration.check_in() == CheckIn::Run {
        let mut fd = devices::sync::lock(&ctx.fd);
        profile.entering();
        let result = fd.run();
        profile.returned();
        // Writes KVM queued happened before this exit: replay them first.
        if let Some(console) = &ctx.console {
            console.drain(&ctx.pio);
        }
        let outcome = match result {
            Ok(exit) => {
                profile.record(&exit);
                let control_write = matches!(&exit, VcpuExit::IoOut(port, _) if UART_CONTROL_PORTS.contains(port));
                let outcome = match (exit, &ctx.console) {
                    (VcpuExit::IoIn(port, data), Some(console)) if ConsoleLink::owns_port(port) => {
                        console.read_port(port, data);
                        Outcome::Continue
                    }
                    (exit, _) => handle_exit(exit, &ctx.pio, &ctx.mmio, ctx.index),
                };
                if control_write {
                    if let Some(console) = &ctx.console {
                        console.update();
                    }
                }
                outcome
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                profile.record_interrupted();
                fd.set_kvm_immediate_exit(0);
                Outcome::Continue
            }
            Err(e) => Outcome::End(VmEvent::VcpuFailed { vcpu: ctx.index, reason: format!("KVM_RUN failed: {e}") }),
        };
        let event = match outcome {
            Outcome::Continue => continue,
            Outcome::End(event) => with_registers(event, &fd),
            Outcome::TripleFault => VmEvent::TripleFault {
                vcpu: ctx.index,
                reason: format!("vCPU {} triple fault (KVM_EXIT_SHUTDOWN) [{}]", ctx.index, shutdown_registers(&fd)),
            },
        };
        let _ = ctx.events.send(event);
        return;
    }
}

enum Outcome {
    Continue,
    End(VmEvent),
    /// The guest triple-faulted: a crash, reported with where the vCPU was.
    TripleFault,
}

fn handle_exit(exit: VcpuExit, pio: &Bus, mmio: &Bus, vcpu: u8) -> Outcome {
    match exit {
        VcpuExit::IoIn(port, data) => {
            pio.read(u64::from(port), data);
        }
        VcpuExit::IoOut(port, data) => {
            pio.write(u64::from(port), data);
        }
        VcpuExit::MmioRead(addr, data) => {
            if !mmio.read(addr, data) {
                tracing::trace!(addr, "unhandled MMIO read");
            }
        }
        VcpuExit::MmioWrite(addr, data) => {
            if !mmio.write(addr, data) {
                tracing::trace!(addr, "unhandled MMIO write");
            }
        }
        VcpuExit::Hlt => return Outcome::End(VmEvent::Halted { vcpu }),
        VcpuExit::Shutdown => return Outcome::TripleFault,
        VcpuExit::SystemEvent(kind, _) => {
            return Outcome::End(match kind {
                kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => VmEvent::PowerOff,
                kvm_bindings::KVM_SYSTEM_EVENT_RESET => VmEvent::Reset { reason: "KVM reset system event".into() },
                other => VmEvent::VcpuFailed { vcpu, reason: format!("system event {other} (guest crash)") },
            })
        }
        VcpuExit::FailEntry(reason, cpu) => {
            return Outcome::End(VmEvent::VcpuFailed {
                vcpu,
                reason: format!("KVM_EXIT_FAIL_ENTRY: hardware entry failure reason {reason:#x} on host cpu {cpu}"),
            })
        }
        VcpuExit::InternalError => {
            return Outcome::End(VmEvent::VcpuFailed { vcpu, reason: "KVM_EXIT_INTERNAL_ERROR".into() })
        }
        VcpuExit::Intr | VcpuExit::IrqWindowOpen => {}
        other => {
            return Outcome::End(VmEvent::VcpuFailed { vcpu, reason: format!("unexpected exit {other:?}") });
        }
    }
    Outcome::Continue
}

/// Appends the vCPU's registers to a failure, so the error says where the guest was.
fn with_registers(event: VmEvent, fd: &VcpuFd) -> VmEvent {
    match event {
        VmEvent::VcpuFailed { vcpu, reason } => {
            VmEvent::VcpuFailed { vcpu, reason: format!("{reason} [{}]", register_summary(fd)) }
        }
        other => other,
    }
}

/// The registers after a triple fault. AMD's KVM re-initialises the vCPU when it
/// reports a shutdown (the VMCB is undefined then), so there they only show the reset
/// state; say so rather than print them as if they were the guest's.
fn shutdown_registers(fd: &VcpuFd) -> String {
    match fd.get_sregs() {
        Ok(s) if s.cs.selector == 0xf000 && fd.get_regs().is_ok_and(|r| r.rip == 0xfff0) => {
            "registers lost: KVM re-initialised the vCPU at the shutdown".into()
        }
        _ => register_summary(fd),
    }
}

/// Where the vCPU was: instruction and stack pointers, the last page-fault address,
/// and the control state that decides how it takes exceptions.
fn register_summary(fd: &VcpuFd) -> String {
    match (fd.get_regs(), fd.get_sregs()) {
        (Ok(r), Ok(s)) => format!(
            "rip={:#x} rsp={:#x} rax={:#x} rflags={:#x} cs={:#x} cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x} idt={:#x}/{:#x}",
            r.rip, r.rsp, r.rax, r.rflags, s.cs.selector, s.cr0, s.cr2, s.cr3, s.cr4, s.efer, s.idt.base, s.idt.limit
        ),
        _ => "registers unavailable".into(),
    }
}
