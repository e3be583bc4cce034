//! The process-wide confinement mode, set once before any thread starts.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use crate::classes::ThreadClass;

/// What a filter does with a syscall that is not on the thread's list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// End the whole process by SIGSYS (`SECCOMP_RET_TRAP` into a handler that first
    /// prints the thread class and the syscall on stderr).
    On,
    /// Allow it and have the kernel log it (`SECCOMP_RET_LOG`: an audit line with
    /// `syscall=N` in the kernel log).
    Log,
    /// No filters at all.
    Off,
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "on" => Ok(Mode::On),
            "log" => Ok(Mode::Log),
            "off" => Ok(Mode::Off),
            _ => Err(format!("`{s}` is not a seccomp mode (on, log, off)")),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::On => "on",
            Mode::Log => "log",
            Mode::Off => "off",
        })
    }
}

/// Why the mode could not be set.
#[derive(Debug, thiserror::Error)]
pub enum ModeError {
    #[error("seccomp mode is already {set}, cannot change it to {wanted}")]
    AlreadySet { set: Mode, wanted: Mode },
    #[error("this kernel has no seccomp filter support (use --seccomp off): {0}")]
    Unsupported(std::io::Error),
    #[error("cannot install the SIGSYS handler that reports a forbidden syscall: {0}")]
    Reporter(std::io::Error),
    #[error(transparent)]
    Filter(#[from] crate::ConfineError),
}

static MODE: OnceLock<Mode> = OnceLock::new();

/// Sets the process's mode; call it from `main` before any thread is spawned.
/// Setting the same mode again is fine, another one is an error. For `On` and `Log`
/// every class's filter is compiled and the kernel checked now, so a problem is one
/// clear error at start-up rather than a thread failing later.
pub fn set_mode(wanted: Mode) -> Result<(), ModeError> {
    let set = *MODE.get_or_init(|| wanted);
    if set != wanted {
        return Err(ModeError::AlreadySet { set, wanted });
    }
    if wanted == Mode::Off {
        return Ok(());
    }
    // SAFETY: PR_GET_SECCOMP takes no pointers; it returns the calling thread's
    // seccomp mode, or fails with EINVAL where the kernel lacks seccomp.
    if unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) } < 0 {
        return Err(ModeError::Unsupported(std::io::Error::last_os_error()));
    }
    for class in ThreadClass::ALL {
        crate::compile(class, wanted)?;
    }
    settle_malloc();
    if wanted == Mode::On {
        crate::report::install_sigsys_reporter().map_err(ModeError::Reporter)?;
    }
    Ok(())
}

/// glibc's malloc opens files behind its caller's back, on whichever thread is
/// allocating, and a confined thread may not open files:
/// - it works out its arena limit the first time the process needs a ninth arena, by
///   reading /sys/devices/system/cpu/online (seen as SIGSYS on a fresh api-connection
///   thread once a guest reboot had started new vCPU threads);
/// - before it first shrinks a thread arena's heap it reads
///   /proc/sys/vm/overcommit_memory (seen as SIGSYS on migration-in in the rig, named
///   by the SIGSYS report).
///
/// Both are settled here, before any thread is confined: the arena limit at glibc's
/// own default (8 arenas per online CPU on 64-bit), and a trim threshold no heap
/// reaches, so thread heaps are never shrunk (whole heaps are still unmapped when
/// empty, and allocations over the mmap threshold, 128 KiB, still go back to the
/// kernel when freed).
fn settle_malloc() {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: sysconf only reads a system value; mallopt only sets malloc tunables
        // (M_ARENA_MAX takes a count, M_TRIM_THRESHOLD a byte count) and is safe to
        // call at any time.
        unsafe {
            let cpus = libc::sysconf(libc::_SC_NPROCESSORS_ONLN).max(1);
            let arenas = i32::try_from(cpus.saturating_mul(8)).unwrap_or(i32::MAX);
            libc::mallopt(libc::M_ARENA_MAX, arenas);
            libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        }
    }
}

/// The process's mode: what [`set_mode`] set, [`Mode::Off`] if nothing did (a
/// library user that never opts in is not confined).
pub fn mode() -> Mode {
    MODE.get().copied().unwrap_or(Mode::Off)
}
