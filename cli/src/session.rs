//! Serving a running machine from the command line: the serial console (terminal in
//! raw mode, a file, a socket to attach to, or nothing), the control socket, and the
//! exit status.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use kvm_ioctls::Kvm;
use vmm::reboot::{self, Rebooted};
use vmm::{Machine, MachineExit, OnReboot};

use crate::console;
use crate::console_socket::ConsoleSocket;

/// Exit status when the guest crashed by triple-faulting (a vCPU shut down): not 0,
/// as a requested reboot or power-off is, and not 1, as a tern error is.
pub const TRIPLE_FAULT_EXIT_STATUS: u8 = 3;

/// Where the guest's serial console goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SerialArg {
    /// The terminal (raw mode when stdin is a TTY).
    Stdio,
    /// Discarded.
    Null,
    /// Written to a file (truncated).
    File(PathBuf),
    /// Served on a Unix socket that `tern console PATH` attaches to (recent output
    /// kept for whoever attaches next).
    Socket(PathBuf),
}

impl FromStr for SerialArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "stdio" => Ok(SerialArg::Stdio),
            "null" => Ok(SerialArg::Null),
            _ => match (s.strip_prefix("file="), s.strip_prefix("socket=")) {
                (Some(p), _) if !p.is_empty() => Ok(SerialArg::File(PathBuf::from(p))),
                (_, Some(p)) if !p.is_empty() => Ok(SerialArg::Socket(PathBuf::from(p))),
                _ => Err(format!("`{s}` is not a serial destination (stdio, null, file=PATH, socket=PATH)")),
            },
        }
    }
}

/// Where guest console output goes: the UART's writer, and the console socket to
/// serve once the machine exists (`--serial socket=PATH`).
pub struct SerialSink {
    pub output: Box<dyn std::io::Write + Send>,
    pub socket: Option<ConsoleSocket>,
}

/// Opens the destination of guest console output (a file is created, a socket
/// starts listening), so a bad path fails before the machine is built.
pub fn serial_output(arg: &SerialArg) -> Result<SerialSink> {
    let output: Box<dyn std::io::Write + Send> = match arg {
        SerialArg::Stdio => Box::new(console::RawStdout),
        SerialArg::Null => Box::new(std::io::sink()),
        SerialArg::File(path) => Box::new(
            File::create(path).with_context(|| format!("cannot create serial output file {}", path.display()))?,
        ),
        SerialArg::Socket(path) => {
            let (socket, output) = ConsoleSocket::create(path)?;
            return Ok(SerialSink { output: Box::new(output), socket: Some(socket) });
        }
    };
    Ok(SerialSink { output, socket: None })
}

/// Opens /dev/kvm with a hint for the common failures.
pub fn open_kvm() -> Result<Kvm> {
    Kvm::new().map_err(|e| {
        let hint = match e.errno() {
            libc::ENOENT => " (no /dev/kvm: is the kvm module loaded?)",
            libc::EACCES | libc::EPERM => " (permission denied: add yourself to the kvm group or run as root)",
            _ => "",
        };
        anyhow::anyhow!("cannot open /dev/kvm: {e}{hint}")
    })
}

/// What a guest reset does under [`serve`].
pub enum Reboots {
    /// As `--on-reboot` says.
    Do(OnReboot),
    /// Nothing to boot (a received or restored guest, see next_boot.rs): a reset ends
    /// tern, whose last line gives this reason.
    NotBootedAgain(String),
}

/// Console and API around a built machine, kept across guest reboots (which
/// `on_reboot` decides). With `already_running` the vCPUs were started elsewhere (an
/// incoming migration). Returns tern's exit status: 0 when the guest powered off,
/// asked for a reset with `--on-reboot exit`, or was quit or migrated away;
/// [`TRIPLE_FAULT_EXIT_STATUS`] when it triple-faulted (`--on-reboot exit`); an error
/// (status 1) when a vCPU failed.
pub fn serve(
    kvm: &Kvm,
    machine: Machine,
    serial: &SerialArg,
    console_socket: Option<ConsoleSocket>,
    api_socket: Option<&Path>,
    started: Instant,
    already_running: bool,
    reboots: Reboots,
) -> Result<ExitCode> {
    let on_reboot = match reboots {
        Reboots::Do(on_reboot) => on_reboot,
        Reboots::NotBootedAgain(_) => OnReboot::Exit,
    };
    let interactive = *serial == SerialArg::Stdio && console::stdin_is_tty();
    let raw_guard = if interactive {
        console::enter_raw_mode().context("cannot put the terminal in raw mode")?;
        Some(console::RawModeGuard)
    } else {
        None
    };
    if *serial == SerialArg::Stdio {
        console::spawn_stdin_forwarder(machine.serial(), machine.event_sender(), interactive)
            .context("cannot start the console input thread")?;
    }
    // Removed at exit (if still ours), like the API socket.
    let console_socket = match console_socket {
        Some(socket) => Some(socket.serve(machine.serial())?),
        None => None,
    };
    let _api = match api_socket {
        Some(path) => Some(vmm::api::serve(path, machine.event_sender())?),
        None => None,
    };
    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "starting the vCPUs");
    crate::sd_notify::ready(if already_running { "guest received, running" } else { "guest starting" });
    let exit = reboot::run(kvm, machine, on_reboot, already_running, None, |next| {
        // A raw terminal needs the carriage return spelled out.
        let end = if interactive { "\r\n" } else { "\n" };
        eprint!("{}{end}", reboot_message(next));
    });
    drop(raw_guard);
    if let Some(console) = &console_socket {
        console.finish_output(CONSOLE_FINISH_LIMIT);
    }
    let exit = exit?;
    let mut result = outcome(exit, started.elapsed().as_millis());
    if let Reboots::NotBootedAgain(why) = &reboots {
        // A received or restored guest with nothing to boot: a reset ends tern, saying why.
        result = result.map(|(message, status)| (message.replace("(--on-reboot exit)", &format!("(not booted again: {why})")), status));
    }
    let (message, status) = result?;
    eprintln!("{message}");
    Ok(ExitCode::from(status))
}

/// Longest wait at exit for an attached console client to take the guest's last output.
const CONSOLE_FINISH_LIMIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The line tern prints at a guest reboot.
fn reboot_message(next: &Rebooted) -> String {
    format!("tern: guest rebooted ({}); booting again (boot {})", next.reason, next.boot)
}

/// What tern says and its exit status for how the machine ended; a vCPU failure (or
/// no reason at all) is an error, reported by `main` with status 1.
fn outcome(exit: Option<MachineExit>, elapsed_ms: u128) -> Result<(String, u8)> {
    Ok(match exit {
        Some(MachineExit::PowerOff) => (format!("tern: guest powered off after {elapsed_ms} ms"), 0),
        Some(MachineExit::Reset { reason }) => (format!("tern: guest reset ({reason}); exiting (--on-reboot exit)"), 0),
        Some(MachineExit::TripleFault { vcpu: _, reason }) => (format!("tern: guest crashed: {reason}"), TRIPLE_FAULT_EXIT_STATUS),
        Some(MachineExit::UserQuit) => ("tern: quit".into(), 0),
        Some(MachineExit::AllHalted) => ("tern: all vCPUs halted".into(), 0),
        Some(MachineExit::MigratedAway) => ("tern: guest migrated to the destination; exiting".into(), 0),
        Some(MachineExit::Snapshotted) => ("tern: snapshot written; the guest is stopped (--stop)".into(), 0),
        Some(MachineExit::VcpuFailed { vcpu, reason }) => bail!("vCPU {vcpu} stopped: {reason}"),
        Some(MachineExit::ConfinementFailed { reason }) => bail!("{reason}"),
        None => bail!("the machine ended without a reason (event channel closed)"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_triple_fault_has_its_own_status_and_requested_ends_are_zero() {
        let reason = "vCPU 1 triple fault (KVM_EXIT_SHUTDOWN) [rip=0x1000]".to_string();
        let (message, status) = outcome(Some(MachineExit::TripleFault { vcpu: 1, reason: reason.clone() }), 5).unwrap();
        assert_eq!(status, TRIPLE_FAULT_EXIT_STATUS);
        assert_ne!(status, 0);
        assert_eq!(message, format!("tern: guest crashed: {reason}"));
        assert_eq!(outcome(Some(MachineExit::PowerOff), 5).unwrap().1, 0);
        assert_eq!(outcome(Some(MachineExit::Reset { reason: "guest requested reset".into() }), 5).unwrap().1, 0);
        assert_eq!(outcome(Some(MachineExit::UserQuit), 5).unwrap().1, 0);
        assert!(outcome(Some(MachineExit::VcpuFailed { vcpu: 0, reason: "x".into() }), 5).is_err());
    }

    #[test]
    fn a_reboot_is_one_line_with_its_reason_and_boot_number() {
        let line = reboot_message(&Rebooted { reason: "reset through the i8042 keyboard controller".into(), boot: 2 });
        assert_eq!(line, "tern: guest rebooted (reset through the i8042 keyboard controller); booting again (boot 2)");
    }

    #[test]
    fn serial_args() {
        assert_eq!("stdio".parse(), Ok(SerialArg::Stdio));
        assert_eq!("null".parse(), Ok(SerialArg::Null));
        assert_eq!("file=/tmp/x".parse(), Ok(SerialArg::File("/tmp/x".into())));
        assert!("file=".parse::<SerialArg>().is_err());
        assert_eq!("socket=/run/vm.console".parse(), Ok(SerialArg::Socket("/run/vm.console".into())));
        assert!("socket=".parse::<SerialArg>().is_err());
        assert!("tty".parse::<SerialArg>().is_err());
    }
}
