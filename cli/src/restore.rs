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
use crate::definition::Loaded;
use crate::guest_devices::{self, Locking};
use crate::next_boot::{NextBoot, NextBootArgs};
use crate::receive_spec::{LocalArgs, ReceiveSpec};
use crate::restore_disks::{self, DiskTargets, Disks};
use crate::session::{self, SerialArg};

/// Flags of `tern restore`.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The snapshot directory (`tern snapshot --to DIR`). Never written.
    #[arg(long, value_name = "DIR")]
    pub from: PathBuf,
    #[command(flatten)]
    pub local: LocalArgs,
    /// With disk copies in the snapshot: a copy may replace an existing image (the
    /// definition's disk, or an existing --disk path) instead of being refused; the old
    /// image is put back if the restore fails.
    #[arg(long)]
    pub overwrite_disks: bool,
    /// A clone: each NIC gets a fresh MAC (or the one its mac= gives) instead of the
    /// snapshot's, so clones of one snapshot can share a network.
    #[arg(long)]
    pub clone: bool,
    /// Also check the CRC32 of guest memory and the disk copies (reads them in full;
    /// the manifest, description and state are always checked).
    #[arg(long)]
    pub verify: bool,
    #[command(flatten)]
    pub next_boot: NextBootArgs,
}

/// Runs `tern restore`.
pub fn restore(args: RestoreArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let file = args.local.config.as_deref().map(Loaded::load).transpose()?;
    let mut spec = ReceiveSpec::resolve(&args.local, file.as_ref())?;
    tern_seccomp::set_mode(spec.seccomp.unwrap_or(tern_seccomp::Mode::On))?;
    args.next_boot.validate()?;
    if host_kvm() == HostKvm::Emulated && !spec.allow_emulated_kvm {
        bail!("{EMULATED_KVM_MESSAGE}");
    }
    // A named VM claims its runtime directory before anything is copied: one that
    // runs here is refused. The claim lives until the guest ends.
    let _vm_dir = spec.claim_name()?;
    let snapshot = restore::open(&args.from, args.verify)
        .with_context(|| format!("snapshot {}", args.from.display()))?;
    let targets = DiskTargets {
        given: &spec.disks,
        from_definition: spec.disks_from_definition,
        overwrite: args.overwrite_disks,
    };
    let mut disks = restore_disks::prepare(&snapshot, &targets)?;
    let result = run(&args, &spec, snapshot, &mut disks, started);
    // Undoes nothing once the guest ran (`run` kept the disks then).
    if result.is_err() {
        disks.undo();
    }
    result
}

fn run(
    args: &RestoreArgs,
    spec: &ReceiveSpec,
    snapshot: restore::Snapshot,
    disks: &mut Disks,
    started: Instant,
) -> Result<ExitCode> {
    // Bridge TAPs are removed when tern ends, however it ends (bridge_tap.rs).
    let (nets, _bridge_taps) = bridge_tap::attach(&spec.nets)?;
    let virtio_devices = guest_devices::open(&disks.configs, &nets, Locking::AtHandOver)?;
    let kvm = session::open_kvm()?;
    let serial_arg = spec.serial.clone().unwrap_or(SerialArg::Stdio);
    let serial = session::serial_output(&serial_arg)?;
    let options = RestoreOptions {
        expect: Expectations {
            memory: spec.memory,
            cpus: spec.cpus,
        },
        local_devices: virtio_devices.iter().map(|d| d.describe()).collect(),
        clone: args.clone,
    };
    let dir = args.from.display().to_string();
    let disk_paths: Vec<_> = disks.configs.iter().map(|d| d.path.clone()).collect();
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
    disks.keep();
    eprintln!(
        "tern: guest restored from {dir} and running after {} ms (state load {:.1} ms, memory map {:.1} ms, device activation {:.1} ms)",
        started.elapsed().as_millis(),
        times.state_load_ms,
        times.memory_map_ms,
        times.device_activation_ms
    );
    let reboots = next.map_or(session::Reboots::Do(vmm::OnReboot::Exit), NextBoot::reboots);
    session::serve(
        &kvm,
        machine,
        &serial_arg,
        serial.socket,
        spec.api_socket.as_deref(),
        started,
        true,
        reboots,
    )
}
