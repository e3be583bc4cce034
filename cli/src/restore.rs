//! `tern restore`: run a guest from a snapshot directory, from the instant it was
//! taken: checked as `tern receive` checks a source, built as a migration
//! destination, guest memory mapped from the snapshot copy-on-write.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use vmm::host_check::{host_kvm, HostKvm, EMULATED_KVM_MESSAGE};
use vmm::migrate::admission::Expectations;
use vmm::snapshot::restore::{self, RestoreOptions};
use vmm::{Machine, MachineConfig};

use crate::bridge_tap;
use crate::device_args;
use crate::guest_devices::{self, Locking};
use crate::next_boot::{NextBoot, NextBootArgs};
use crate::restore_disks;
use crate::session::{self, SerialArg};
use crate::size::parse_size;

/// Flags of `tern restore`.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The snapshot directory (`tern snapshot --to DIR`). Never written.
    #[arg(long, value_name = "DIR")]
    pub from: PathBuf,
    /// The image for each of the snapshot's disks, in order: for a disk the snapshot
    /// copied, a new file that becomes a copy of it (default: DIR.restore-PID-diskN.img
    /// beside DIR); for a disk recorded with --no-disks, the image to run on, of the
    /// recorded size. path=FILE[,readonly=on][,serial=ID]
    #[arg(long = "disk", value_name = "path=FILE[,readonly=on][,serial=ID]", value_parser = device_args::parse_disk)]
    pub disks: Vec<device_args::DiskArg>,
    /// A virtio-net interface for each of the snapshot's NICs, in order, on a TAP or on a
    /// new TAP on a bridge (removed at exit):
    /// tap=NAME[,mac=MAC] (the snapshot's MAC unless --clone).
    #[arg(long = "net", value_name = "tap=NAME|bridge=BR[,mac=MAC]", value_parser = device_args::parse_net)]
    pub nets: Vec<device_args::NetArg>,
    /// Serial console: stdio, null, file=PATH, or socket=PATH (see `tern run`).
    #[arg(long, default_value = "stdio", value_name = "DEST")]
    pub serial: SerialArg,
    /// Serve the control API (the restored guest can be snapshotted and migrated).
    #[arg(long, value_name = "PATH")]
    pub api_socket: Option<PathBuf>,
    /// A clone: each NIC gets a fresh MAC (or the one its mac= gives) instead of the
    /// snapshot's, so clones of one snapshot can share a network.
    #[arg(long)]
    pub clone: bool,
    /// Also check the CRC32 of guest memory and the disk copies (reads them in full;
    /// the manifest, description and state are always checked).
    #[arg(long)]
    pub verify: bool,
    /// Refuse a snapshot whose guest has more memory than SIZE.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub memory: Option<u64>,
    /// Refuse a snapshot with more vCPUs than N.
    #[arg(long, value_name = "N")]
    pub cpus: Option<u8>,
    /// Run even where /dev/kvm is software-emulated (kvm_pvm).
    #[arg(long)]
    pub allow_emulated_kvm: bool,
    /// Syscall filters per thread: on, log, off (see `tern run`).
    #[arg(long, default_value = "on", value_name = "on|log|off")]
    pub seccomp: tern_seccomp::Mode,
    #[command(flatten)]
    pub next_boot: NextBootArgs,
}

/// Runs `tern restore`.
pub fn restore(args: RestoreArgs) -> Result<ExitCode> {
    let started = Instant::now();
    tern_seccomp::set_mode(args.seccomp)?;
    args.next_boot.validate()?;
    if host_kvm() == HostKvm::Emulated && !args.allow_emulated_kvm {
        bail!("{EMULATED_KVM_MESSAGE}");
    }
    let snapshot = restore::open(&args.from, args.verify).with_context(|| format!("snapshot {}", args.from.display()))?;
    let disks = restore_disks::prepare(&snapshot, &args.disks)?;
    let result = run(&args, snapshot, &disks.configs, started);
    if result.is_err() {
        disks.remove_copies();
    }
    result
}

fn run(args: &RestoreArgs, snapshot: restore::Snapshot, disks: &[devices::virtio::block::BlockConfig], started: Instant) -> Result<ExitCode> {
    // Bridge TAPs are removed when tern ends, however it ends (bridge_tap.rs).
    let (nets, _bridge_taps) = bridge_tap::attach(&args.nets)?;
    let virtio_devices = guest_devices::open(disks, &nets, Locking::AtHandOver)?;
    let kvm = session::open_kvm()?;
    let serial = session::serial_output(&args.serial)?;
    let options = RestoreOptions {
        expect: Expectations { memory: args.memory, cpus: args.cpus },
        local_devices: virtio_devices.iter().map(|d| d.describe()).collect(),
        clone: args.clone,
    };
    let dir = args.from.display().to_string();
    let disk_paths: Vec<_> = disks.iter().map(|d| d.path.clone()).collect();
    let mut next: Option<NextBoot> = None;
    let (machine, times) = restore::run(snapshot, &options, |desc, boot| {
        let resolved = args.next_boot.resolve(desc.boot.as_ref(), &disk_paths);
        let (record, provider) = (resolved.record.clone(), resolved.provider.clone());
        next = Some(resolved);
        let config = MachineConfig {
            cpus: desc.cpus,
            memory: desc.memory_bytes,
            boot,
            serial_output: serial.output,
            in_kernel_irqchip: true,
            track_dirty_pages: false,
            virtio_devices,
        };
        let mut machine = Machine::new(&kvm, config, started).map_err(|e| e.to_string())?;
        machine.set_boot_source(record, provider);
        Ok(machine)
    })
    .with_context(|| format!("restoring {dir}"))?;
    eprintln!(
        "tern: guest restored from {dir} and running after {} ms (state load {:.1} ms, memory map {:.1} ms, device activation {:.1} ms)",
        started.elapsed().as_millis(),
        times.state_load_ms,
        times.memory_map_ms,
        times.device_activation_ms
    );
    let reboots = next.map_or(session::Reboots::Do(vmm::OnReboot::Exit), NextBoot::reboots);
    session::serve(&kvm, machine, &args.serial, serial.socket, args.api_socket.as_deref(), started, true, reboots)
}
