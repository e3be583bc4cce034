//! `tern receive`: wait for one incoming live migration, then run the guest here.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use devices::virtio::block::BlockConfig;
use devices::virtio::net::NetConfig;
use vmm::host_check::{host_kvm, HostKvm, EMULATED_KVM_MESSAGE};
use vmm::migrate::destination::{self, Expectations};
use vmm::{Boot, Machine, MachineConfig};

use crate::guest_devices::{self, Locking};
use crate::session::{self, SerialArg};
use crate::size::parse_size;

/// Flags of `tern receive`.
#[derive(Args, Debug)]
pub struct ReceiveArgs {
    /// Address to listen on for the source, e.g. 0.0.0.0:7000 (port 0 picks one).
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: String,
    /// The same disk images as the source (shared storage), in the same order:
    /// path=FILE[,readonly=on][,serial=ID]. Locked when the source hands them over.
    #[arg(long = "disk", value_name = "path=FILE[,readonly=on][,serial=ID]")]
    pub disks: Vec<BlockConfig>,
    /// Attach a virtio-net interface on a TAP: tap=NAME[,mac=AA:BB:CC:DD:EE:FF]
    /// (repeatable; an existing TAP is used, a missing one created when permitted).
    #[arg(long = "net", value_name = "tap=NAME[,mac=MAC]")]
    pub nets: Vec<NetConfig>,
    /// Serial console here: stdio, null, or file=PATH.
    #[arg(long, default_value = "stdio", value_name = "DEST")]
    pub serial: SerialArg,
    /// Refuse a source whose guest memory size differs.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub memory: Option<u64>,
    /// Refuse a source with a different vCPU count.
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
}

/// Runs `tern receive`.
pub fn receive(args: ReceiveArgs) -> Result<ExitCode> {
    let started = Instant::now();
    tern_seccomp::set_mode(args.seccomp)?;
    let virtio_devices = guest_devices::open(&args.disks, &args.nets, Locking::AtHandOver)?;
    if host_kvm() == HostKvm::Emulated && !args.allow_emulated_kvm {
        bail!("{EMULATED_KVM_MESSAGE}");
    }
    let kvm = session::open_kvm()?;
    let serial_output = session::serial_output(&args.serial)?;
    let listener = destination::listen(&args.listen)?;
    let local = listener.local_addr().context("listening socket")?;
    eprintln!("tern: waiting for an incoming migration on {local}");
    let expect = Expectations { memory: args.memory, cpus: args.cpus };
    let machine = destination::receive(&listener, &expect, |desc| {
        let config = MachineConfig {
            cpus: desc.cpus,
            memory: desc.memory_bytes,
            boot: Boot::Incoming,
            serial_output,
            in_kernel_irqchip: true,
            track_dirty_pages: false,
            virtio_devices,
        };
        Machine::new(&kvm, config, started).map_err(|e| e.to_string())
    })
    .context("incoming migration failed")?;
    eprintln!("tern: guest received and running after {} ms", started.elapsed().as_millis());
    session::serve(machine, &args.serial, args.api_socket.as_deref(), started, true)
}
