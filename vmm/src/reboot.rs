//! Running a machine across guest reboots: what a reset request does
//! ([`OnReboot`]), and the loop that boots the machine again in the same process.
//!
//! Each boot's event loop runs on its own owner thread, which confines itself as the
//! main class (`Machine::wait_for_exit`) and, when the machine ends for good, tears it
//! down there. The thread that called [`run`] stays outside that filter: it builds
//! the next boot (KVM VM and vCPU creation, guest memory, the kernel loader's
//! threads, none of which the main class may do) and otherwise only waits for the
//! owner thread. With [`OnReboot::Exit`], or a machine that cannot boot again, the
//! calling thread is the owner, confined as before.

use std::time::{Duration, Instant};

use kvm_ioctls::Kvm;

use crate::machine::{Machine, MachineError, MachineExit};

/// What a guest's reset request (or triple fault) does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnReboot {
    /// Boot the machine again (a PC's behaviour).
    Restart,
    /// End: the run is over.
    Exit,
}

/// A reboot [`run`] carried out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rebooted {
    /// Why: the reset's source, or the triple fault with where the vCPU was.
    pub reason: String,
    /// The number of the boot that starts now (2 for the first reboot).
    pub boot: u32,
}

/// Whether `exit` is a guest reboot (a requested reset or a triple fault).
pub fn is_reboot(exit: &MachineExit) -> bool {
    matches!(exit, MachineExit::Reset { .. } | MachineExit::TripleFault { .. })
}

/// What a reboot's message says caused it.
pub fn reboot_reason(exit: &MachineExit) -> String {
    match exit {
        MachineExit::Reset { reason } => reason.clone(),
        MachineExit::TripleFault { reason, .. } => format!("triple fault: {reason}"),
        other => format!("{other:?}"),
    }
}

/// Starts `machine` (unless `already_running`) and runs it until it ends for good:
/// with [`OnReboot::Restart`] every reboot builds the machine again
/// ([`Machine::reboot`]) and calls `rebooted` before it starts; the machine's last
/// exit is returned (`None`: its event channel closed, or a boot outlived
/// `timeout`, which tests set). An error building a later boot ends the run with
/// that error.
pub fn run(
    kvm: &Kvm,
    machine: Machine,
    on_reboot: OnReboot,
    already_running: bool,
    timeout: Option<Duration>,
    mut rebooted: impl FnMut(&Rebooted),
) -> Result<Option<MachineExit>, MachineError> {
    let mut machine = machine;
    if !already_running {
        machine.start()?;
    }
    if on_reboot == OnReboot::Exit || !machine.can_reboot() {
        return Ok(machine.wait_for_exit(timeout));
    }
    loop {
        let owner = std::thread::Builder::new()
            .name("machine".into())
            .spawn(move || {
                let exit = machine.wait_for_exit(timeout);
                match exit {
                    Some(exit) if is_reboot(&exit) => (Some(machine), Some(exit)),
                    // The end: torn down here, under the main class's filter.
                    exit => {
                        drop(machine);
                        (None, exit)
                    }
                }
            })
            .map_err(MachineError::OwnerThread)?;
        let (kept, exit) = match owner.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        let (old, exit) = match (kept, exit) {
            (Some(old), Some(exit)) => (old, exit),
            (_, exit) => return Ok(exit),
        };
        let next = Rebooted { reason: reboot_reason(&exit), boot: old.boot_number().saturating_add(1) };
        let began = Instant::now();
        machine = old.reboot(kvm).map_err(|source| MachineError::Reboot { boot: next.boot, source: Box::new(source) })?;
        tracing::info!(elapsed_ms = began.elapsed().as_millis() as u64, boot = next.boot, "machine rebuilt for a reboot");
        rebooted(&next);
        machine.start()?;
    }
}
