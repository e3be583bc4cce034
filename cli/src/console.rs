//! The serial console on the user's terminal: raw mode (restored on every exit path),
//! stdin forwarded to the guest UART, and the Ctrl-A x escape to quit.

use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use devices::legacy::Serial;
use vmm::events::VmEvent;

/// Escape prefix (Ctrl-A) and the key that quits after it.
const ESCAPE: u8 = 0x01;
const QUIT_KEY: u8 = b'x';

static SAVED_TERMIOS: OnceLock<libc::termios> = OnceLock::new();

/// Puts stdin's terminal in raw mode, remembering how to restore it. Also installs
/// handlers so SIGTERM/SIGHUP/SIGINT restore the terminal before the process ends.
pub fn enter_raw_mode() -> io::Result<()> {
    let fd = io::stdin().as_raw_fd();
    // SAFETY: termios is plain data; tcgetattr fills it and we check the result.
    let mut original: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd is stdin, `original` is a valid termios to write into.
    if unsafe { libc::tcgetattr(fd, &mut original) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let _ = SAVED_TERMIOS.set(original);
    let mut raw = original;
    // SAFETY: cfmakeraw only edits the struct it is given.
    unsafe { libc::cfmakeraw(&mut raw) };
    // SAFETY: fd is stdin; `raw` is a fully initialised termios.
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
        return Err(io::Error::last_os_error());
    }
    for signal in [libc::SIGTERM, libc::SIGHUP, libc::SIGINT] {
        // SAFETY: the handler only calls async-signal-safe functions (tcsetattr, _exit).
        unsafe { libc::signal(signal, restore_and_exit as *const () as libc::sighandler_t) };
    }
    Ok(())
}

extern "C" fn restore_and_exit(signal: libc::c_int) {
    restore_terminal();
    // SAFETY: _exit is async-signal-safe and ends the process immediately.
    unsafe { libc::_exit(128 + signal) };
}

/// Restores the terminal if raw mode was entered. Safe to call more than once.
pub fn restore_terminal() {
    if let Some(original) = SAVED_TERMIOS.get() {
        // SAFETY: restoring the attributes saved from this same fd.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, original) };
    }
}

/// Restores the terminal when dropped.
pub struct RawModeGuard;

impl Drop for RawModeGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// Whether stdin is a terminal.
pub fn stdin_is_tty() -> bool {
    // SAFETY: isatty only inspects the fd.
    unsafe { libc::isatty(libc::STDIN_FILENO) == 1 }
}

/// Unbuffered stdout: every guest byte is visible at once (prompts have no newline).
pub struct RawStdout;

impl Write for RawStdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: writes from a valid buffer of buf.len() bytes to fd 1.
        let n = unsafe { libc::write(libc::STDOUT_FILENO, buf.as_ptr().cast(), buf.len()) };
        if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Splits terminal input into bytes for the guest and a quit request.
#[derive(Default)]
pub struct EscapeParser {
    after_escape: bool,
}

impl EscapeParser {
    /// Feeds input; returns bytes to forward and whether the user asked to quit.
    pub fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len());
        for &b in input {
            if self.after_escape {
                self.after_escape = false;
                match b {
                    QUIT_KEY => return (out, true),
                    ESCAPE => out.push(ESCAPE),
                    other => out.extend_from_slice(&[ESCAPE, other]),
                }
            } else if b == ESCAPE {
                self.after_escape = true;
            } else {
                out.push(b);
            }
        }
        (out, false)
    }
}

/// Forwards stdin to the guest UART on a thread until EOF or the quit escape.
pub fn spawn_stdin_forwarder(serial: Arc<Mutex<Serial>>, events: Sender<VmEvent>, escape: bool) -> io::Result<()> {
    std::thread::Builder::new().name("console-in".into()).spawn(move || {
        // Before the first keystroke.
        if let Err(e) = tern_seccomp::confine(tern_seccomp::ThreadClass::Console) {
            tracing::error!("console input not forwarded: {e}");
            return;
        }
        let mut parser = EscapeParser::default();
        let mut buf = [0u8; 256];
        loop {
            // SAFETY: reads into a valid buffer of buf.len() bytes from fd 0.
            let n = unsafe { libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return; // EOF or error: stop forwarding, the guest keeps running.
            }
            let input = &buf[..n as usize];
            let (bytes, quit) = if escape { parser.feed(input) } else { (input.to_vec(), false) };
            let mut pending = &bytes[..];
            while !pending.is_empty() {
                let taken = devices::sync::lock(&serial).enqueue_input(pending).unwrap_or(0);
                pending = &pending[taken..];
                if taken == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            if quit {
                let _ = events.send(VmEvent::UserQuit);
                return;
            }
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences() {
        let mut p = EscapeParser::default();
        assert_eq!(p.feed(b"ls\r"), (b"ls\r".to_vec(), false));
        assert_eq!(p.feed(&[ESCAPE, ESCAPE]), (vec![ESCAPE], false));
        assert_eq!(p.feed(&[ESCAPE, b'c']), (vec![ESCAPE, b'c'], false));
        assert_eq!(p.feed(&[b'a', ESCAPE]), (vec![b'a'], false));
        assert_eq!(p.feed(b"x"), (vec![], true), "escape split across reads");
    }
}
