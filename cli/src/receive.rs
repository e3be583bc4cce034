//! `tern receive`: wait for one incoming live migration, then run the guest here. The
//! VM here is described by flags, a definition (`--config`), or, as `tern listen` runs
//! it for each connection, by the definition the source's hello names (`--defs DIR`,
//! on a connection the listener accepted: `--conn-fd`).

use std::fs::File;
use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{FromRawFd, RawFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use devices::virtio::block::BlockConfig;
use devices::virtio::VirtioDevice;
use vmm::host_check::{host_kvm, HostKvm, EMULATED_KVM_MESSAGE};
use vmm::migrate::destination::{self, Expectations, Prepared};
use vmm::migrate::tls::TlsIdentity;
use vmm::{Boot, Machine, MachineConfig};

use crate::bridge_tap;
use crate::definition::Loaded;
use crate::guest_devices::{self, Locking};
use crate::next_boot::{NextBoot, NextBootArgs};
use crate::receive_spec::{self, LocalArgs, ReceiveSpec};
use crate::session::{self, SerialArg};

/// Flags of `tern receive`.
#[derive(Args, Debug)]
pub struct ReceiveArgs {
    /// Address to listen on for the source, e.g. 0.0.0.0:7000 (port 0 picks one). One
    /// source is accepted; the socket closes once it connected.
    #[arg(
        long,
        value_name = "ADDR:PORT",
        required_unless_present = "conn_fd",
        conflicts_with = "conn_fd"
    )]
    pub listen: Option<String>,
    #[command(flatten)]
    pub local: LocalArgs,
    /// Mutual TLS 1.3: DIR holds ca.pem (the CA both hosts trust), cert.pem (this host's
    /// certificate chain) and key.pem (its key). Only a source whose client certificate
    /// is signed by the CA is accepted. Required on a non-loopback address unless
    /// --no-tls is given.
    #[arg(long, value_name = "DIR", conflicts_with = "no_tls")]
    pub tls_dir: Option<PathBuf>,
    /// Accept a plaintext, unauthenticated migration on a non-loopback address (anyone
    /// who can reach the port can send a guest). Loopback addresses never need it.
    #[arg(long)]
    pub no_tls: bool,
    /// Seconds the source may stay silent (the TLS handshake and every read) before the
    /// migration is abandoned as stalled.
    #[arg(long, value_name = "SECS", default_value_t = destination::DEFAULT_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
    /// `tern listen`: the definitions directory; the VM is the one the source's hello
    /// names (DIR/NAME.toml).
    #[arg(
        long,
        value_name = "DIR",
        hide = true,
        requires = "conn_fd",
        conflicts_with = "config"
    )]
    pub defs: Option<PathBuf>,
    /// `tern listen`: the accepted connection, as this descriptor.
    #[arg(long, value_name = "FD", hide = true)]
    pub conn_fd: Option<RawFd>,
    /// `tern listen`: a pipe told `running NAME` once the guest runs here, then closed.
    #[arg(long, value_name = "FD", hide = true, requires = "conn_fd")]
    pub status_fd: Option<RawFd>,
    #[command(flatten)]
    pub next_boot: NextBootArgs,
}

/// A descriptor handed over by `tern listen`, checked to be open.
fn inherited_fd(fd: RawFd, what: &str) -> Result<RawFd> {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    let open = fd > 2 && unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0;
    // SAFETY: F_SETFD sets close-on-exec on a descriptor this process was handed
    // (nothing it starts later needs it); no memory is passed.
    let ok = open && unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } >= 0;
    if !ok {
        bail!("{what} descriptor {fd} is not open");
    }
    Ok(fd)
}

/// Runs `tern receive`.
pub fn receive(args: ReceiveArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let file = args.local.config.as_deref().map(Loaded::load).transpose()?;
    // The connection first (a listener's child owns it from its start).
    let accepted = match args.conn_fd {
        // SAFETY: the listener passed this descriptor, the accepted TCP connection, to
        // this process alone; nothing else here owns or closes it.
        Some(fd) => Some(unsafe { TcpStream::from_raw_fd(inherited_fd(fd, "--conn-fd")?) }),
        None => None,
    };
    let status = match args.status_fd {
        // SAFETY: the listener passed this descriptor, its status pipe's write end, to
        // this process alone.
        Some(fd) => Some(unsafe { File::from_raw_fd(inherited_fd(fd, "--status-fd")?) }),
        None => None,
    };
    let peer = accepted.as_ref().and_then(|s| s.peer_addr().ok());
    let from = peer.map(|p| format!(" from {p}")).unwrap_or_default();
    if let (Some(_), None) = (&accepted, &peer) {
        bail!("--conn-fd is not a connected socket");
    }
    let spec = ReceiveSpec::resolve(&args.local, file.as_ref())?;
    // The filter mode is fixed before any thread starts: a VM picked by its hello runs
    // under the listener's.
    tern_seccomp::set_mode(spec.seccomp.unwrap_or(tern_seccomp::Mode::On))?;
    args.next_boot.validate()?;
    if host_kvm() == HostKvm::Emulated && !spec.allow_emulated_kvm {
        bail!("{EMULATED_KVM_MESSAGE}");
    }
    let tls_dir = args.tls_dir.clone().or_else(|| spec.tls_dir.clone());
    let tls = tls_config(&args, tls_dir.as_ref())?;
    let kvm = session::open_kvm()?;
    let how = if tls.is_some() {
        "mutual TLS"
    } else {
        "plaintext"
    };

    // Set by the machine's build: what a guest reset boots here.
    let next: std::cell::RefCell<Option<NextBoot>> = std::cell::RefCell::new(None);
    // Without --defs the VM here is known now: its devices are opened before waiting.
    let mut local = match &args.defs {
        Some(_) => None,
        None => Some(Local::open(spec.clone())?),
    };
    let defs = args.defs.clone();
    let mut prepare = |hello: &destination::Hello| -> Result<_, String> {
        let mut here = match (local.take(), &defs) {
            (Some(here), _) => {
                if let (Some(theirs), Some(ours)) = (&hello.vm_name, &here.spec.name) {
                    if theirs != ours {
                        return Err(format!(
                            "the source sends VM {theirs}; this receive is for VM {ours}"
                        ));
                    }
                }
                here
            }
            (None, Some(defs)) => {
                let name = hello.vm_name.as_deref().ok_or_else(|| {
                    "the source did not name its VM: migrate it by name (tern migrate NAME --to HOST:PORT)".to_string()
                })?;
                tracing::info!(name, "incoming migration{from} names its VM");
                let loaded = receive_spec::load_named(defs, name).map_err(|e| format!("{e:#}"))?;
                let mut spec = ReceiveSpec::resolve(&args.local, Some(&loaded))
                    .map_err(|e| format!("{e:#}"))?;
                spec.name = Some(name.to_string());
                Local::open(spec).map_err(|e| format!("{e:#}"))?
            }
            (None, None) => return Err("nothing to receive with".into()),
        };
        let serial_output = here
            .serial
            .take()
            .map(|s| s.output)
            .ok_or("the serial console was taken twice")?;
        let virtio_devices = std::mem::take(&mut here.virtio_devices);
        let expect = Expectations {
            memory: here.spec.memory,
            cpus: here.spec.cpus,
        };
        let local_devices = virtio_devices.iter().map(|d| d.describe()).collect();
        let kvm = &kvm;
        let disk_paths: Vec<PathBuf> = here
            .spec
            .disks
            .iter()
            .map(|d| d.config.path.clone())
            .collect();
        let next_boot = &args.next_boot;
        let next_slot = &next;
        let build = move |desc: &destination::VmDescription| {
            let config = MachineConfig {
                cpus: desc.cpus,
                memory: desc.memory_bytes,
                boot: Boot::Incoming,
                serial_output,
                in_kernel_irqchip: true,
                track_dirty_pages: false,
                virtio_devices,
            };
            // What a reset of the received guest boots (flags here, else the source's record).
            let resolved = next_boot.resolve(desc.boot.as_ref(), &disk_paths);
            let (record, provider) = (resolved.record.clone(), resolved.provider.clone());
            *next_slot.borrow_mut() = Some(resolved);
            let mut machine = Machine::new(kvm, config, started).map_err(|e| e.to_string())?;
            machine.set_boot_source(record, provider);
            Ok(machine)
        };
        Ok((
            Prepared {
                expect,
                local_devices,
                build,
            },
            here,
        ))
    };

    // The VM here, once the hello is accepted (kept out of the closure's result).
    let mut chosen: Option<Local> = None;
    let prepare_and_keep = |hello: &destination::Hello| {
        let (prepared, here) = prepare(hello)?;
        chosen = Some(here);
        Ok(prepared)
    };
    let timeout = Duration::from_secs(args.timeout);
    let received = match accepted {
        Some(stream) => destination::receive_connection(stream, tls, timeout, prepare_and_keep),
        None => {
            let listen = args
                .listen
                .as_deref()
                .ok_or_else(|| anyhow!("give --listen ADDR:PORT"))?;
            let listener = destination::listen(listen)?;
            let local_addr = listener.local_addr().context("listening socket")?;
            eprintln!("tern: waiting for an incoming migration ({how}) on {local_addr}");
            match listener.accept() {
                Ok((stream, _)) => {
                    drop(listener);
                    destination::receive_connection(stream, tls, timeout, prepare_and_keep)
                }
                Err(e) => Err(e.into()),
            }
        }
    };
    let machine = received.with_context(|| format!("incoming migration{from} failed"))?;
    let mut here = chosen.ok_or_else(|| anyhow!("the received VM has no local set-up"))?;
    let name = here.spec.name.clone().unwrap_or_default();
    eprintln!(
        "tern: guest{}{} received{from} and running after {} ms",
        if name.is_empty() { "" } else { " " },
        name,
        started.elapsed().as_millis()
    );
    if let Some(mut status) = status {
        // The listener may be gone; the guest runs regardless.
        let _ = writeln!(status, "running {name}");
    }
    let serial_arg = here.spec.serial.clone().unwrap_or(SerialArg::Stdio);
    let console_socket = here.console_socket.take();
    let reboots = next
        .into_inner()
        .map_or(session::Reboots::Do(vmm::OnReboot::Exit), NextBoot::reboots);
    // `here` (the name's claim, the bridge TAPs) lives until the guest ends.
    session::serve(
        &kvm,
        machine,
        &serial_arg,
        console_socket,
        here.spec.api_socket.as_deref(),
        started,
        true,
        reboots,
    )
}

/// The VM on this side: its name claimed, devices opened (locked only at the
/// hand-over), serial console ready.
struct Local {
    spec: ReceiveSpec,
    virtio_devices: Vec<Box<dyn VirtioDevice>>,
    serial: Option<session::SerialSink>,
    console_socket: Option<crate::console_socket::ConsoleSocket>,
    _vm_dir: Option<crate::runtime_dir::VmDir>,
    _bridge_taps: bridge_tap::BridgeTaps,
}

impl Local {
    fn open(mut spec: ReceiveSpec) -> Result<Self> {
        // A named VM claims its runtime directory first: one that runs here is refused.
        let vm_dir = spec.claim_name()?;
        let disks: Vec<BlockConfig> = spec.disks.iter().map(|d| d.config.clone()).collect();
        // Bridge TAPs are removed when tern ends, however it ends (bridge_tap.rs).
        let (nets, bridge_taps) = bridge_tap::attach(&spec.nets)?;
        let virtio_devices = guest_devices::open(&disks, &nets, Locking::AtHandOver)?;
        let mut serial = session::serial_output(spec.serial.as_ref().unwrap_or(&SerialArg::Stdio))?;
        let console_socket = serial.socket.take();
        Ok(Self {
            spec,
            virtio_devices,
            serial: Some(serial),
            console_socket,
            _vm_dir: vm_dir,
            _bridge_taps: bridge_taps,
        })
    }
}

/// The TLS server configuration, or why plaintext is (or is not) acceptable here.
fn tls_config(
    args: &ReceiveArgs,
    tls_dir: Option<&PathBuf>,
) -> Result<Option<Arc<rustls::ServerConfig>>> {
    if let Some(dir) = tls_dir {
        let config = TlsIdentity::load(dir).and_then(|id| id.server_config())?;
        return Ok(Some(config));
    }
    match &args.listen {
        Some(listen) => plaintext_allowed(listen, args.no_tls)?,
        // The listener checked its own address; it says --no-tls when it means it.
        None if !args.no_tls => bail!("--conn-fd needs --tls-dir DIR or --no-tls"),
        None => {}
    }
    Ok(None)
}

/// Whether a plaintext migration may be accepted on `listen`: always on loopback,
/// elsewhere only with `--no-tls` (with a warning).
pub fn plaintext_allowed(listen: &str, no_tls: bool) -> Result<()> {
    let addrs: Vec<_> = listen
        .to_socket_addrs()
        .with_context(|| format!("--listen {listen}"))?
        .collect();
    let loopback = !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback());
    if !loopback {
        if !no_tls {
            bail!(
                "--listen {listen} is reachable from other hosts: give --tls-dir DIR (mutual TLS) or, to accept an \
                 unauthenticated plaintext migration from anyone who can reach it, --no-tls"
            );
        }
        eprintln!(
            "tern: warning: --no-tls: accepting a plaintext, unauthenticated migration on {listen}"
        );
    }
    Ok(())
}
