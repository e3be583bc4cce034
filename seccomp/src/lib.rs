//! tern's seccomp confinement: every thread that handles guest, peer or user input
//! installs a syscall allow-list for its class before it does so.
//!
//! The process-wide [`Mode`] is set once by `main` ([`set_mode`]) before any thread
//! starts; [`confine`] then builds the calling thread's filter and installs it.
//! Filters stack: a thread started by a confined thread runs under its parent's
//! filter as well as its own. A class's filter therefore also allows what the
//! classes it starts need ([`ThreadClass::spawns`]); each child then narrows itself
//! to its own list (see ARCHITECTURE.md, "Confinement").

mod classes;
mod ioctls;
mod mode;
mod policy;
mod report;
mod rules;

use std::cell::Cell;
use std::sync::OnceLock;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

pub use classes::ThreadClass;
pub use mode::{mode, set_mode, Mode, ModeError};

/// Why a thread could not be confined.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    #[error("seccomp filter for the {class} thread class does not compile: {source}")]
    Compile { class: ThreadClass, source: seccompiler::BackendError },
    #[error("cannot install the seccomp filter of the {class} thread class: {source}")]
    Install { class: ThreadClass, source: seccompiler::Error },
}

thread_local! {
    /// The class this thread confined itself as (a repeated call is a no-op).
    static CONFINED: Cell<Option<ThreadClass>> = const { Cell::new(None) };
}

/// Confines the calling thread to `class`'s allow-list under the process mode
/// ([`Mode::Off`]: does nothing). Calling it again with the same class does nothing.
pub fn confine(class: ThreadClass) -> Result<(), ConfineError> {
    let mode = mode();
    if mode == Mode::Off || CONFINED.with(Cell::get) == Some(class) {
        return Ok(());
    }
    let program = cached_program(class, mode)?;
    seccompiler::apply_filter(program).map_err(|source| ConfineError::Install { class, source })?;
    CONFINED.with(|c| c.set(Some(class)));
    Ok(())
}

/// The class the calling thread confined itself as, if any.
pub fn confined_as() -> Option<ThreadClass> {
    CONFINED.with(Cell::get)
}

/// Compiles `class`'s filter for `mode` (x86_64). `Ok(None)` for [`Mode::Off`].
pub fn compile(class: ThreadClass, mode: Mode) -> Result<Option<BpfProgram>, ConfineError> {
    let mismatch = match mode {
        Mode::Off => return Ok(None),
        Mode::On => SeccompAction::Trap,
        Mode::Log => SeccompAction::Log,
    };
    let compile_err = |source| ConfineError::Compile { class, source };
    let rules = policy::effective_rules(class).map_err(compile_err)?;
    let filter = SeccompFilter::new(rules.into_map(), mismatch, SeccompAction::Allow, TargetArch::x86_64)
        .map_err(compile_err)?;
    BpfProgram::try_from(filter).map(Some).map_err(compile_err)
}

/// Syscalls `class`'s filter allows (with or without argument conditions): its own
/// and, with `inherited`, those of the classes it starts.
pub fn allowed_syscalls(class: ThreadClass, inherited: bool) -> Result<Vec<i64>, seccompiler::BackendError> {
    let rules = if inherited { policy::effective_rules(class)? } else { policy::own_rules(class)? };
    Ok(rules.syscalls())
}

/// Filters compiled once per process (the mode never changes once set).
fn cached_program(class: ThreadClass, mode: Mode) -> Result<&'static BpfProgram, ConfineError> {
    static CACHE: [OnceLock<BpfProgram>; ThreadClass::ALL.len()] = [const { OnceLock::new() }; ThreadClass::ALL.len()];
    let slot = &CACHE[class.index()];
    if let Some(program) = slot.get() {
        return Ok(program);
    }
    // Mode is not Off here, so a program comes back.
    let program = compile(class, mode)?.unwrap_or_default();
    Ok(slot.get_or_init(|| program))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_compiles_for_x86_64_in_both_enforcing_modes() {
        for class in ThreadClass::ALL {
            for mode in [Mode::On, Mode::Log] {
                let program = compile(class, mode).unwrap().expect("a program");
                // The kernel refuses programs over BPF_MAXINSNS instructions.
                assert!(!program.is_empty() && program.len() <= 4096, "{class} {mode}: {} instructions", program.len());
            }
            assert!(compile(class, Mode::Off).unwrap().is_none());
        }
    }

    #[test]
    fn a_class_allows_what_the_classes_it_starts_need() {
        for class in ThreadClass::ALL {
            let mine = allowed_syscalls(class, true).unwrap();
            for &child in class.spawns() {
                for syscall in allowed_syscalls(child, true).unwrap() {
                    assert!(mine.contains(&syscall), "{class} starts {child} but forbids syscall {syscall}");
                }
            }
        }
    }

    #[test]
    fn workers_cannot_open_files_or_sockets_or_exec() {
        for class in [ThreadClass::BlockWorker, ThreadClass::NetWorker, ThreadClass::Vcpu, ThreadClass::Console, ThreadClass::MigrationIncoming] {
            let allowed = allowed_syscalls(class, true).unwrap();
            for forbidden in [libc::SYS_openat, libc::SYS_open, libc::SYS_socket, libc::SYS_execve, libc::SYS_connect] {
                assert!(!allowed.contains(&forbidden), "{class} allows {forbidden}");
            }
        }
    }

    #[test]
    fn the_console_socket_serves_clients_but_cannot_open_or_connect_or_unlink() {
        let allowed = allowed_syscalls(ThreadClass::ConsoleSocket, true).unwrap();
        for needed in [libc::SYS_accept4, libc::SYS_getsockopt, libc::SYS_recvfrom, libc::SYS_sendto, libc::SYS_read, libc::SYS_write, libc::SYS_poll] {
            assert!(allowed.contains(&needed), "console-socket forbids {needed}");
        }
        for forbidden in [libc::SYS_openat, libc::SYS_socket, libc::SYS_connect, libc::SYS_execve, libc::SYS_unlink, libc::SYS_bind, libc::SYS_clone3, libc::SYS_ioctl] {
            assert!(!allowed.contains(&forbidden), "console-socket allows {forbidden}");
        }
    }

    #[test]
    fn modes_parse() {
        assert_eq!("on".parse(), Ok(Mode::On));
        assert_eq!("log".parse(), Ok(Mode::Log));
        assert_eq!("off".parse(), Ok(Mode::Off));
        assert!("yes".parse::<Mode>().unwrap_err().contains("on, log, off"));
    }
}
