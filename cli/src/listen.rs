//! `tern listen`: the host's migration listener. It accepts incoming live migrations
//! for any VM defined on this host (`--defs DIR`, one `NAME.toml` per VM) and hands
//! each connection, as it is, to a `tern receive` process of its own (`--conn-fd`),
//! which does the mutual TLS handshake, learns from the source's hello which VM comes,
//! loads that VM's definition (its disks, NICs, serial console, name), refuses an
//! unknown name or one already running here with one line to the source, and then
//! runs the guest, in its own session, outliving the listener. The listener reads no
//! byte a peer sends, so no migration can crash it; it logs each connection's outcome
//! and serves on.

use std::fs::File;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};

use anyhow::{bail, Context, Result};
use clap::Args;
use vmm::migrate::destination::DEFAULT_TIMEOUT;
use vmm::migrate::tls::TlsIdentity;

use crate::receive::plaintext_allowed;
use crate::sd_notify;

/// A line in the listener's log (stderr). A log that cannot be written (its reader
/// went away) never ends the listener.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "tern listen: {}", format_args!($($arg)*));
    }};
}

/// Default `--defs`.
pub const DEFAULT_DEFS: &str = "/etc/tern";
/// How often the listener looks at its children when nothing else happens, ms.
const REAP_INTERVAL_MS: libc::c_int = 1000;
/// The descriptors a receive process finds its connection and status pipe at.
const CHILD_CONN_FD: RawFd = 3;
const CHILD_STATUS_FD: RawFd = 4;
/// The longest status line a receive process sends.
const MAX_STATUS: usize = 256;

/// Flags of `tern listen`.
#[derive(Args, Debug)]
pub struct ListenArgs {
    /// Address to accept migrations on, e.g. 0.0.0.0:7000 (port 0 picks one).
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: String,
    /// Mutual TLS 1.3 for every migration: DIR holds ca.pem, cert.pem, key.pem (as
    /// `tern receive --tls-dir`). Required on a non-loopback address unless --no-tls.
    #[arg(long, value_name = "DIR", conflicts_with = "no_tls")]
    pub tls_dir: Option<PathBuf>,
    /// Accept plaintext, unauthenticated migrations on a non-loopback address.
    #[arg(long)]
    pub no_tls: bool,
    /// The VM definitions of this host: a source sending VM NAME gets DIR/NAME.toml.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DEFS)]
    pub defs: PathBuf,
    /// Seconds a source may stay silent (handshake and every read), per migration.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
    /// Migrations received at once; a connection beyond that is closed at once.
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u64).range(1..=64))]
    pub max_pending: u64,
    /// Receive even where /dev/kvm is software-emulated (kvm_pvm).
    #[arg(long)]
    pub allow_emulated_kvm: bool,
    /// Syscall filters of the received VMs: on, log, off (a definition's own
    /// `seccomp` is not used: the mode is fixed before the hello names the VM).
    #[arg(long, default_value = "on", value_name = "on|log|off")]
    pub seccomp: tern_seccomp::Mode,
}

/// One connection's `tern receive`.
struct Incoming {
    child: Child,
    peer: SocketAddr,
    /// The status pipe's read end while the migration is in progress.
    status: Option<File>,
    /// The VM's name, once it runs here.
    name: Option<String>,
    received: Vec<u8>,
}

impl Incoming {
    fn who(&self) -> String {
        match &self.name {
            Some(name) => format!("VM {name} (from {}, pid {})", self.peer, self.child.id()),
            None => format!("migration from {} (pid {})", self.peer, self.child.id()),
        }
    }

    /// Reads what the status pipe has: `running NAME`, or its end.
    fn read_status(&mut self) {
        let Some(pipe) = &mut self.status else { return };
        let mut buf = [0u8; MAX_STATUS];
        match pipe.read(&mut buf) {
            Ok(0) | Err(_) => self.status = None,
            Ok(n) => {
                let room = MAX_STATUS.saturating_sub(self.received.len());
                self.received.extend_from_slice(&buf[..n.min(room)]);
                let text = String::from_utf8_lossy(&self.received).into_owned();
                if let Some(name) = text
                    .lines()
                    .next()
                    .and_then(|l| l.strip_prefix("running "))
                    .filter(|_| text.contains('\n'))
                {
                    self.name = Some(name.to_string());
                    say!("{} received; it runs here", self.who());
                    self.status = None;
                }
            }
        }
    }
}

/// A pipe whose ends close on exec.
fn pipe() -> std::io::Result<(File, OwnedFd)> {
    let mut fds: [libc::c_int; 2] = [-1; 2];
    // SAFETY: pipe2 writes two descriptors into the two-element array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 just made these two descriptors; each is owned once, here.
    Ok(unsafe { (File::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Runs `tern listen`.
pub fn listen(args: ListenArgs, verbose: u8) -> Result<ExitCode> {
    if !args.defs.is_dir() {
        bail!(
            "--defs {}: not a directory of VM definitions",
            args.defs.display()
        );
    }
    let defs = std::fs::canonicalize(&args.defs)
        .with_context(|| format!("--defs {}", args.defs.display()))?;
    let tls_dir = match &args.tls_dir {
        Some(dir) => {
            let dir = std::fs::canonicalize(dir)
                .with_context(|| format!("--tls-dir {}", dir.display()))?;
            // A bad TLS directory is refused now, not at the first migration.
            TlsIdentity::load(&dir).and_then(|id| id.server_config())?;
            Some(dir)
        }
        None => {
            plaintext_allowed(&args.listen, args.no_tls)?;
            None
        }
    };
    let exe = std::env::current_exe().context("cannot find the tern executable")?;
    let listener = TcpListener::bind(&args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener.local_addr().context("listening socket")?;
    let how = if tls_dir.is_some() {
        "mutual TLS"
    } else {
        "plaintext"
    };
    say!(
        "accepting migrations ({how}) on {local} for the VMs defined in {}",
        defs.display()
    );
    sd_notify::ready(&format!("accepting migrations on {local}"));

    let mut receive_args: Vec<String> = vec![
        "receive".into(),
        "--conn-fd".into(),
        CHILD_CONN_FD.to_string(),
        "--status-fd".into(),
        CHILD_STATUS_FD.to_string(),
        "--defs".into(),
        defs.display().to_string(),
        "--timeout".into(),
        args.timeout.to_string(),
        "--seccomp".into(),
        args.seccomp.to_string(),
    ];
    match &tls_dir {
        Some(dir) => receive_args.extend(["--tls-dir".into(), dir.display().to_string()]),
        None => receive_args.push("--no-tls".into()),
    }
    if args.allow_emulated_kvm {
        receive_args.push("--allow-emulated-kvm".into());
    }
    if verbose > 0 {
        receive_args.push(format!("-{}", "v".repeat(usize::from(verbose.min(3)))));
    }

    let mut incoming: Vec<Incoming> = Vec::new();
    loop {
        let mut fds = vec![libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        fds.extend(
            incoming
                .iter()
                .filter_map(|i| i.status.as_ref())
                .map(|s| libc::pollfd {
                    fd: s.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                }),
        );
        // SAFETY: `fds` is an array of fds.len() initialised pollfd structures, alive
        // for the whole call.
        let ready = unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                REAP_INTERVAL_MS,
            )
        };
        if ready < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                bail!("waiting for connections: {e}");
            }
        }
        let readable: Vec<RawFd> = fds[1..]
            .iter()
            .filter(|p| p.revents != 0)
            .map(|p| p.fd)
            .collect();
        for i in incoming.iter_mut() {
            if i.status
                .as_ref()
                .is_some_and(|s| readable.contains(&s.as_raw_fd()))
            {
                i.read_status();
            }
        }
        if fds[0].revents & libc::POLLIN != 0 {
            match listener.accept() {
                Ok((stream, peer)) => {
                    let pending = incoming.iter().filter(|i| i.status.is_some()).count() as u64;
                    if pending >= args.max_pending {
                        say!("refusing the connection from {peer}: {pending} migrations in progress (--max-pending)");
                        drop(stream);
                    } else {
                        match spawn(&exe, &receive_args, stream, peer) {
                            Ok(i) => {
                                say!("migration from {peer}: receiving (pid {})", i.child.id());
                                incoming.push(i);
                            }
                            Err(e) => {
                                say!("migration from {peer}: cannot start tern receive: {e:#}")
                            }
                        }
                    }
                }
                Err(e) => say!("accept: {e}"),
            }
        }
        reap(&mut incoming);
    }
}

/// Starts `tern receive` on one accepted connection, in a session of its own (a VM it
/// receives outlives the listener and its terminal).
fn spawn(
    exe: &PathBuf,
    receive_args: &[String],
    stream: TcpStream,
    peer: SocketAddr,
) -> Result<Incoming> {
    let (status_read, status_write) = pipe().context("status pipe")?;
    let conn_fd = stream.as_raw_fd();
    let status_fd = status_write.as_raw_fd();
    let mut command = Command::new(exe);
    command
        .args(receive_args)
        .stdin(Stdio::null())
        .env_remove("NOTIFY_SOCKET");
    // The closure runs in the forked child before exec. Each descriptor is first
    // copied above 10 (so dup2 never lands on the other's source or copies a
    // descriptor onto itself, which would keep close-on-exec), then put at 3 and 4
    // without close-on-exec.
    // SAFETY: only async-signal-safe calls (fcntl, dup2, setsid) on descriptors this
    // process owns.
    unsafe {
        command.pre_exec(move || {
            let conn = libc::fcntl(conn_fd, libc::F_DUPFD_CLOEXEC, 10);
            let status = libc::fcntl(status_fd, libc::F_DUPFD_CLOEXEC, 10);
            if conn < 0
                || status < 0
                || libc::dup2(conn, CHILD_CONN_FD) < 0
                || libc::dup2(status, CHILD_STATUS_FD) < 0
                || libc::setsid() < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn().context("fork/exec")?;
    // The child has its copies; the listener keeps only the status pipe's read end.
    drop(stream);
    drop(status_write);
    Ok(Incoming {
        child,
        peer,
        status: Some(status_read),
        name: None,
        received: Vec::new(),
    })
}

/// Collects the receive processes that ended, saying how.
fn reap(incoming: &mut Vec<Incoming>) {
    incoming.retain_mut(|i| match i.child.try_wait() {
        Ok(None) => true,
        Ok(Some(status)) => {
            // A status line still in the pipe tells what it received.
            while i.status.is_some() {
                i.read_status();
            }
            let how = match (status.code(), &i.name) {
                (Some(0), Some(_)) => "ended (status 0)".to_string(),
                (Some(code), Some(_)) => format!("ended with status {code}"),
                (Some(code), None) => format!("failed (status {code}; its error line is above)"),
                (None, _) => format!("was killed ({status})"),
            };
            say!("{} {how}", i.who());
            false
        }
        Err(e) => {
            say!("{}: cannot wait for it: {e}", i.who());
            true
        }
    });
}
