//! `tern console PATH`: attach this terminal to the console socket of a running tern
//! (`--serial socket=PATH`). The terminal is raw while attached (restored on every
//! way out); Ctrl-A x detaches and the guest keeps running; Ctrl-A Ctrl-A sends a
//! Ctrl-A. Without a terminal (stdin not a TTY) bytes are copied as they are, the
//! escape still works, and the end of stdin detaches.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc::{channel, Sender};

use anyhow::{Context, Result};
use clap::Args;

use crate::console::{self, EscapeParser};

/// Flags of `tern console`.
#[derive(Args, Debug)]
pub struct ConsoleArgs {
    /// Console socket of a running tern (started with --serial socket=PATH).
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
}

/// Why the session ended.
enum End {
    /// Ctrl-A x, or the end of stdin.
    Detached,
    /// tern closed the connection: it ended, or refused this client (its line says why).
    Closed,
}

/// Runs `tern console`.
pub fn attach(args: ConsoleArgs) -> Result<ExitCode> {
    let path = &args.path;
    let stream = UnixStream::connect(path).with_context(|| format!("cannot attach to console socket {}", path.display()))?;
    let to_guest = stream.try_clone().context("console socket")?;
    let control = stream.try_clone().context("console socket")?;
    eprintln!("tern: attached to {}; Ctrl-A x detaches", path.display());
    let raw_guard = if console::stdin_is_tty() {
        console::enter_raw_mode().context("cannot put the terminal in raw mode")?;
        Some(console::RawModeGuard)
    } else {
        None
    };
    let (ended, end) = channel();
    spawn_copier("console-out", ended.clone(), move || copy_output(stream))?;
    spawn_copier("console-in", ended, move || copy_input(to_guest))?;
    // The first side to finish ends the session; the other is blocked in a read and
    // ends with the process.
    let how = end.recv().unwrap_or(End::Closed);
    // Tell tern at once that this client left, so another may attach.
    let _ = control.shutdown(Shutdown::Both);
    drop(raw_guard);
    match how {
        End::Detached => eprintln!("tern: detached from {}; the guest keeps running", path.display()),
        End::Closed => eprintln!("tern: console {} closed by tern", path.display()),
    }
    Ok(ExitCode::SUCCESS)
}

fn spawn_copier(name: &str, ended: Sender<End>, copy: impl FnOnce() -> End + Send + 'static) -> Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let _ = ended.send(copy());
        })
        .with_context(|| format!("cannot start the {name} thread"))?;
    Ok(())
}

/// Guest output to stdout, unbuffered, until tern closes the connection.
fn copy_output(mut from: UnixStream) -> End {
    let mut buf = [0u8; 16 * 1024];
    let mut out = console::RawStdout;
    loop {
        match from.read(&mut buf) {
            Ok(0) => return End::Closed,
            Ok(n) => {
                if out.write_all(&buf[..n]).is_err() {
                    // Nowhere to show the console any more: leave.
                    return End::Detached;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return End::Closed,
        }
    }
}

/// Keystrokes to the guest until Ctrl-A x or the end of stdin.
fn copy_input(mut to: UnixStream) -> End {
    let mut parser = EscapeParser::default();
    let mut buf = [0u8; 1024];
    let mut stdin = io::stdin().lock();
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let (bytes, quit) = parser.feed(&buf[..n]);
        if !bytes.is_empty() && to.write_all(&bytes).is_err() {
            return End::Closed;
        }
        if quit {
            break;
        }
    }
    End::Detached
}
