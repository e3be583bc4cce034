//! What tern does when any of its threads panics: end the whole process at once,
//! rather than leave a VM half alive (a dead vCPU or device worker with the rest
//! still running).
//!
//! The hook restores the terminal, prints one line naming the thread, where it
//! panicked and the panic message, and exits with [`PANIC_EXIT_STATUS`]. The release
//! profile also sets `panic = "abort"`, so nothing unwinds past the hook. Disk image
//! locks (`flock`) and the TAP need no cleanup here: the kernel releases them when the
//! process dies.

use std::any::Any;

/// Exit status after a panic in any thread: 70, sysexits' EX_SOFTWARE ("internal
/// software error"), distinct from 1 (an error reported normally) and from the
/// guest-crash status.
pub const PANIC_EXIT_STATUS: i32 = 70;

/// Installs the process-wide panic hook; call first thing in `main`.
pub fn install() {
    std::panic::set_hook(Box::new(|info| {
        crate::console::restore_terminal();
        let thread = std::thread::current();
        let location = info.location().map(|l| l.to_string());
        eprintln!("{}", fatal_message(thread.name(), location.as_deref(), info.payload()));
        // Not the Drop-based cleanup of an orderly exit: other threads may hold the
        // machine's locks. The kernel releases flocks and closes fds at exit.
        std::process::exit(PANIC_EXIT_STATUS);
    }));
}

/// The one-line report: `tern: fatal: thread 'NAME' panicked at FILE:LINE:COL: MESSAGE`.
pub fn fatal_message(thread: Option<&str>, location: Option<&str>, payload: &(dyn Any + Send)) -> String {
    let message = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    };
    // One line, whatever the message holds.
    let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
    format!(
        "tern: fatal: thread '{}' panicked at {}: {message}",
        thread.unwrap_or("<unnamed>"),
        location.unwrap_or("<unknown location>")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_names_thread_location_and_message() {
        let payload: Box<dyn Any + Send> = Box::new("index out of bounds");
        assert_eq!(
            fatal_message(Some("vcpu1"), Some("vmm/src/vcpu/mod.rs:120:9"), payload.as_ref()),
            "tern: fatal: thread 'vcpu1' panicked at vmm/src/vcpu/mod.rs:120:9: index out of bounds"
        );
    }

    #[test]
    fn formatted_messages_unnamed_threads_and_odd_payloads_still_make_one_line() {
        let payload: Box<dyn Any + Send> = Box::new(format!("queue {} broke\nbadly", 2));
        assert_eq!(
            fatal_message(None, Some("a.rs:1:1"), payload.as_ref()),
            "tern: fatal: thread '<unnamed>' panicked at a.rs:1:1: queue 2 broke badly"
        );
        let payload: Box<dyn Any + Send> = Box::new(42u32);
        assert_eq!(
            fatal_message(Some("api-conn"), None, payload.as_ref()),
            "tern: fatal: thread 'api-conn' panicked at <unknown location>: (no message)"
        );
    }

    /// Set for the child process of the end-to-end test below.
    const CHILD_ENV: &str = "TERN_PANIC_REPORT_TEST_CHILD";

    #[test]
    fn a_panic_in_any_thread_ends_the_process_with_the_status_and_one_line() {
        // Runs this test binary again with only the child test below, which installs
        // the hook for real and panics on a named thread.
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "panic_report::tests::child_panics_on_a_named_thread", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(PANIC_EXIT_STATUS), "{stderr}");
        let line = stderr.lines().find(|l| l.starts_with("tern: fatal:")).unwrap_or_else(|| panic!("no report in {stderr}"));
        assert!(line.starts_with("tern: fatal: thread 'vcpu7' panicked at cli/src/panic_report.rs:"), "{line}");
        assert!(line.ends_with(": guest exploded on port 0x64"), "{line}");
    }

    #[test]
    fn child_panics_on_a_named_thread() {
        // Only does something as the child of the test above.
        if std::env::var_os(CHILD_ENV).is_none() {
            return;
        }
        install();
        let port = 0x64;
        let thread = std::thread::Builder::new().name("vcpu7".into()).spawn(move || panic!("guest exploded on port {port:#x}")).unwrap();
        let _ = thread.join();
        // The hook exits the process first; reaching here means it did not.
        std::process::exit(0);
    }

    #[test]
    fn the_panic_status_is_distinct() {
        assert_ne!(PANIC_EXIT_STATUS, 0);
        assert_ne!(PANIC_EXIT_STATUS, 1);
        assert_ne!(PANIC_EXIT_STATUS, i32::from(crate::session::TRIPLE_FAULT_EXIT_STATUS));
    }
}
