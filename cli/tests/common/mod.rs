//! A `tern receive` child process for the CLI tests: started on a free loopback port,
//! waited for, its stderr collected.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Receiver {
    pub child: Child,
    pub port: u16,
    stderr: BufReader<std::process::ChildStderr>,
}

/// Starts `tern receive` on 127.0.0.1 (port picked by the kernel) with `extra` flags,
/// and reads the port from its first line.
pub fn start_receiver(extra: &[&str]) -> Receiver {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["receive", "--listen", "127.0.0.1:0", "--serial", "null", "--allow-emulated-kvm"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tern receive");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("tern receive did not say where it listens: {line:?}"));
    Receiver { child, port, stderr }
}

impl Receiver {
    /// Waits for the exit; returns (exit code, rest of stderr).
    pub fn finish(mut self) -> (i32, String) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "tern receive did not exit");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut rest = String::new();
        for line in self.stderr.lines() {
            rest.push_str(&line.unwrap());
            rest.push('\n');
        }
        (status.code().unwrap_or(-1), rest)
    }
}

/// The receiver failed with one error line containing `expect`, and did not panic.
pub fn assert_clean_failure(code: i32, stderr: &str, expect: &str) {
    assert_ne!(code, 0, "tern receive succeeded: {stderr}");
    assert!(stderr.contains("tern: error: incoming migration failed"), "{stderr}");
    assert!(stderr.contains(expect), "expected `{expect}` in: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.lines().filter(|l| l.starts_with("tern: error")).count(), 1, "one error line: {stderr}");
}
