//! `tern receive`: wait for one incoming live migration, then run the guest here.

use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use devices::virtio::block::BlockConfig;
use vmm::host_check::{host_kvm, HostKvm, EMULATED_KVM_MESSAGE};
use vmm::migrate::destination::{self, Expectations, ReceiveOptions};
use vmm::migrate::tls::TlsIdentity;
use vmm::{Boot, Machine, MachineConfig};

use crate::bridge_tap;
use crate::device_args;
use crate::guest_devices::{self, Locking};
use crate::next_boot::{NextBoot, NextBootArgs};
use crate::session::{self, SerialArg};
use crate::size::parse_size;

/// Flags of `tern receive`.
#[derive(Args, Debug)]
pub struct ReceiveArgs {
    /// Address to listen on for the source, e.g. 0.0.0.0:7000 (port 0 picks one). One
    /// source is accepted; the socket closes once it connected.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: String,
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
    /// The same disk images as the source (shared storage), in the same order:
    /// path=FILE[,readonly=on][,serial=ID]. Locked when the source hands them over.
    #[arg(long = "disk", value_name = "path=FILE[,readonly=on][,serial=ID]",
          value_parser = device_args::parse_disk)]
    pub disks: Vec<device_args::DiskArg>,
    /// Attach a virtio-net interface: tap=NAME (an existing TAP, or created) or
    /// bridge=BRIDGE (a new TAP on that bridge, removed at exit), [,mac=MAC] (repeatable).
    #[arg(long = "net", value_name = "tap=NAME|bridge=BR[,mac=MAC]", value_parser = device_args::parse_net)]
    pub nets: Vec<device_args::NetArg>,
    /// Serial console here: stdio, null, file=PATH, or socket=PATH (see `tern run`).
    #[arg(long, default_value = "stdio", value_name = "DEST")]
    pub serial: SerialArg,
    /// Refuse a source whose guest has more memory than SIZE (always refused: more than
    /// this host's RAM).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub memory: Option<u64>,
    /// Refuse a source with more vCPUs than N (always refused: more than KVM's limit).
    #[arg(long, value_name = "N")]
    pub cpus: Option<u8>,
    /// Serve the control API once the guest runs here.
    #[arg(long, value_name = "PATH")]
    pub api_socket: Option<PathBuf>,
    /// Run even where /dev/kvm is software-emulated (kvm_pvm).
    #[arg(long)]
    pub allow_emulated_kvm: bool,
    /// Syscall filters per thread: on (a call off its list kills tern), log (the
    /// kernel logs it instead), off.
    #[arg(long, default_value = "on", value_name = "on|log|off")]
    pub seccomp: tern_seccomp::Mode,
    #[command(flatten)]
    pub next_boot: NextBootArgs,
}

/// Runs `tern receive`.
pub fn receive(args: ReceiveArgs) -> Result<ExitCode> {
    let started = Instant::now();
    tern_seccomp::set_mode(args.seccomp)?;
    args.next_boot.validate()?;
    let disks: Vec<BlockConfig> = args.disks.iter().map(|d| d.config.clone()).collect();
    let disk_paths: Vec<_> = disks.iter().map(|d| d.path.clone()).collect();
    // Bridge TAPs are removed when tern ends, however it ends (bridge_tap.rs).
    let (nets, _bridge_taps) = bridge_tap::attach(&args.nets)?;
    let virtio_devices = guest_devices::open(&disks, &nets, Locking::AtHandOver)?;
    if host_kvm() == HostKvm::Emulated && !args.allow_emulated_kvm {
        bail!("{EMULATED_KVM_MESSAGE}");
    }
    let tls = tls_config(&args)?;
    let kvm = session::open_kvm()?;
    let serial = session::serial_output(&args.serial)?;
    let listener = destination::listen(&args.listen)?;
    let local = listener.local_addr().context("listening socket")?;
    let how = if tls.is_some() { "mutual TLS" } else { "plaintext" };
    eprintln!("tern: waiting for an incoming migration ({how}) on {local}");
    let options = ReceiveOptions {
        expect: Expectations { memory: args.memory, cpus: args.cpus },
        local_devices: virtio_devices.iter().map(|d| d.describe()).collect(),
        tls,
        timeout: Duration::from_secs(args.timeout),
    };
    let mut next: Option<NextBoot> = None;
    let machine = destination::receive(listener, &options, |desc| {
        let resolved = args.next_boot.resolve(desc.boot.as_ref(), &disk_paths);
        let (record, provider) = (resolved.record.clone(), resolved.provider.clone());
        next = Some(resolved);
        let config = MachineConfig {
            cpus: desc.cpus,
            memory: desc.memory_bytes,
            boot: Boot::Incoming,
            serial_output: serial.output,
            in_kernel_irqchip: true,
            track_dirty_pages: false,
            virtio_devices,
        };
        let mut machine = Machine::new(&kvm, config, started).map_err(|e| e.to_string())?;
        machine.set_boot_source(record, provider);
        Ok(machine)
    })
    .context("incoming migration failed")?;
    eprintln!("tern: guest received and running after {} ms", started.elapsed().as_millis());
    let reboots = next.map_or(session::Reboots::Do(vmm::OnReboot::Exit), NextBoot::reboots);
    session::serve(&kvm, machine, &args.serial, serial.socket, args.api_socket.as_deref(), started, true, reboots)
}

/// The TLS server configuration, or why plaintext is (or is not) acceptable here.
fn tls_config(args: &ReceiveArgs) -> Result<Option<std::sync::Arc<rustls::ServerConfig>>> {
    if let Some(dir) = &args.tls_dir {
        let config = TlsIdentity::load(dir).and_then(|id| id.server_config())?;
        return Ok(Some(config));
    }
    let addrs: Vec<_> = args.listen.to_socket_addrs().with_context(|| format!("--listen {}", args.listen))?.collect();
    let loopback = !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback());
    if !loopback {
        if !args.no_tls {
            bail!(
                "--listen {} is reachable from other hosts: give --tls-dir DIR (mutual TLS) or, to accept an \
                 unauthenticated plaintext migration from anyone who can reach it, --no-tls",
                args.listen
            );
        }
        eprintln!("tern: warning: --no-tls: accepting a plaintext, unauthenticated migration on {}", args.listen);
    }
    Ok(None)
}
