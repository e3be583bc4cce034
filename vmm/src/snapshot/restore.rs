//! Restoring a snapshot: the directory is opened and checked (manifest, then each
//! section's version, length and CRC32; the large sections' CRC32s only on request,
//! since reading them would cost what mapping saves), the description passes the
//! same admission checks as a migration's (`migrate::admission`), the machine is
//! built with its guest memory mapped from the memory file copy-on-write, the state
//! is restored as a migration destination restores it, and the guest runs.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use devices::sync::lock;
use migration::messages::{Message, VmDescription};
use migration::PROTOCOL_VERSION;

use super::files;
use super::format::{self, Manifest};
use super::SnapshotError;
use crate::machine::{Boot, Machine};
use crate::migrate::admission::{self, Expectations};
use crate::migrate::destination;
use crate::state::{self, MachineState, MAX_STATE_BYTES, STATE_VERSION};

/// Largest config section accepted (a description is a few KiB).
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// An opened, checked snapshot.
pub struct Snapshot {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub description: VmDescription,
    pub state: MachineState,
    /// The memory file, open read-only.
    pub memory: File,
    /// Each disk copy's path (`None`: recorded only, `--no-disks`).
    pub disk_copies: Vec<Option<PathBuf>>,
    /// Reading and checking it, ms.
    pub load_ms: f64,
}

/// Where a restore's time went.
#[derive(Clone, Copy, Debug, Default)]
pub struct RestoreTimes {
    /// Manifest, description and state read, checked and decoded.
    pub state_load_ms: f64,
    /// The machine built, guest memory mapped from the snapshot.
    pub memory_map_ms: f64,
    /// State loaded into KVM and the devices, backends taken, vCPUs started.
    pub device_activation_ms: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Opens the snapshot in `dir` and checks it; `verify` also reads the memory file
/// and disk copies in full to check their CRC32s.
pub fn open(dir: &Path, verify: bool) -> Result<Snapshot, SnapshotError> {
    let started = Instant::now();
    let manifest_path = dir.join(format::MANIFEST_FILE);
    let file = match File::open(&manifest_path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir.is_dir() => return Err(SnapshotError::NoManifest),
        Err(e) => return Err(std::fs::metadata(dir).err().map_or_else(|| SnapshotError::io("cannot open", &manifest_path, e), SnapshotError::Directory)),
    };
    let mut bytes = Vec::new();
    file.take(format::MAX_MANIFEST_BYTES + 1).read_to_end(&mut bytes).map_err(|e| SnapshotError::io("cannot read", &manifest_path, e))?;
    if bytes.len() as u64 > format::MAX_MANIFEST_BYTES {
        return Err(SnapshotError::Malformed(format!("the manifest is larger than {} bytes", format::MAX_MANIFEST_BYTES)));
    }
    let manifest = Manifest::decode(&bytes)?;

    let config = files::read_section(dir, manifest.section(format::CONFIG)?, PROTOCOL_VERSION, MAX_CONFIG_BYTES)?;
    let description = match Message::receive(&mut &config[..], &mut Vec::new()) {
        Ok(Message::Config(desc)) => desc,
        Ok(other) => return Err(SnapshotError::Malformed(format!("the config section holds a {} message", other.name()))),
        Err(e) => return Err(SnapshotError::Malformed(format!("the config section: {e}"))),
    };
    let state_bytes = files::read_section(dir, manifest.section(format::STATE)?, STATE_VERSION, MAX_STATE_BYTES as u64)?;
    let state = MachineState::decode(&state_bytes)?;

    let memory_section = manifest.section(format::MEMORY)?;
    if memory_section.length != description.memory_bytes {
        return Err(SnapshotError::Malformed(format!(
            "the memory section is {} bytes but the guest has {} bytes of memory",
            memory_section.length, description.memory_bytes
        )));
    }
    let memory_path = files::check_large_section(dir, memory_section, format::MEMORY_VERSION, verify)?;
    let memory = File::open(&memory_path).map_err(|e| SnapshotError::io("cannot open", &memory_path, e))?;
    let disk_count = description.devices.iter().filter(|d| d.starts_with("virtio-blk")).count();
    if disk_count != manifest.disks.len() {
        return Err(SnapshotError::Malformed(format!("the guest has {disk_count} disks, the manifest records {}", manifest.disks.len())));
    }
    let mut disk_copies = Vec::new();
    for disk in &manifest.disks {
        disk_copies.push(match &disk.copy {
            Some(name) => Some(files::check_large_section(dir, manifest.section(name)?, format::DISK_VERSION, verify)?),
            None => None,
        });
    }
    Ok(Snapshot { dir: dir.to_path_buf(), manifest, description, state, memory, disk_copies, load_ms: ms(started.elapsed()) })
}

/// How to restore.
#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// Limits from the flags (as `tern receive`'s).
    pub expect: Expectations,
    /// This side's device descriptions, in slot order (the snapshot's must match).
    pub local_devices: Vec<String>,
    /// A clone: each device keeps its own identity (a NIC its MAC) instead of the
    /// snapshot's, and the guest gets a new VM generation ID.
    pub clone: bool,
}

/// Checks the snapshot against the flags and the host, builds the machine with
/// `build` (given the description and the boot that maps guest memory from the
/// snapshot), restores the state and starts the guest.
pub fn run(
    snapshot: Snapshot,
    options: &RestoreOptions,
    build: impl FnOnce(&VmDescription, Boot) -> Result<Machine, String>,
) -> Result<(Machine, RestoreTimes), SnapshotError> {
    let mut times = RestoreTimes { state_load_ms: snapshot.load_ms, ..Default::default() };
    let Snapshot { description, mut state, memory, .. } = snapshot;
    admission::check_here(&description, &options.expect, &options.local_devices).map_err(SnapshotError::Refused)?;

    let t = Instant::now();
    let machine = build(&description, Boot::Snapshot(Arc::new(memory))).map_err(SnapshotError::Refused)?;
    times.memory_map_ms = ms(t.elapsed());

    let t = Instant::now();
    if options.clone {
        for (device, snap) in machine.parts().virtio.iter().zip(state.virtio.iter_mut()) {
            snap.device_state = lock(device).device_mut().save_state();
        }
    }
    state::restore(machine.parts(), &state)?;
    let vmgenid_error = |e: crate::vmgenid::GenerationIdError| SnapshotError::Device(e.to_string());
    if options.clone {
        // The guest's first instruction here already sees the new ID.
        machine.new_generation_id().map_err(vmgenid_error)?;
    }
    let mut machine = machine;
    destination::take_over(&mut machine).map_err(|e| SnapshotError::Device(e.to_string()))?;
    if options.clone {
        // Its vmgenid driver rereads the ID and reseeds the kernel's RNG.
        machine.announce_generation_id().map_err(vmgenid_error)?;
    }
    times.device_activation_ms = ms(t.elapsed());
    Ok((machine, times))
}
