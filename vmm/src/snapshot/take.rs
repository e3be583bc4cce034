//! Taking a snapshot, on the `snapshot` thread: the machine is described as a
//! migration's config message describes it, then paused as a migration's
//! stop-and-copy pauses it (vCPUs, then device workers at a request boundary, disks
//! flushed); guest memory, the machine state and the disks are written while it is
//! paused, so all three are of one instant (copied only: syncing the files and their
//! checksums wait until the guest runs again); then the guest resumes (or, with
//! `--stop`, stays stopped and the machine ends). Everything goes into a staging
//! directory that is renamed into place only once the manifest is written: a failure
//! at any point (a full filesystem included) removes it and the guest keeps running.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use devices::sync::lock;
use devices::virtio::block::BlockConfig;
use migration::messages::Message;
use migration::snapshot_report::{SnapshotProgress, SnapshotReport};
use migration::PROTOCOL_VERSION;

use super::disk_copy::{self, CopyMethod};
use super::files::{self, Staging};
use super::format::{self, DiskRecord, Manifest, Section};
use super::memory_file;
use super::SnapshotError;
use crate::events::VmEvent;
use crate::machine_parts::MachineParts;
use crate::migrate::source::describe;
use crate::state::{self, STATE_VERSION};

/// What `tern snapshot` asked for.
#[derive(Clone, Debug)]
pub struct Options {
    /// The snapshot directory to create (it must not exist).
    pub to: PathBuf,
    /// End the VM once the snapshot is written.
    pub stop: bool,
    /// Record each disk's path, size and identity instead of copying it.
    pub no_disks: bool,
}

/// What the snapshot thread reports: progress while it writes, then one final update.
#[derive(Clone, Debug, PartialEq)]
pub enum SnapshotUpdate {
    Progress(SnapshotProgress),
    /// The snapshot is committed.
    Done(SnapshotReport),
    /// No snapshot was written and the guest keeps running; says why.
    Failed(String),
}

/// Time between two progress updates.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);

/// Takes the snapshot on its own thread. Updates go to `updates`; the machine's owner
/// learns the end through `events` (with `stopped` when the machine must end).
pub fn spawn(parts: MachineParts, options: Options, updates: impl Fn(SnapshotUpdate) + Send + 'static, events: Sender<VmEvent>) {
    let owner = events.clone();
    let thread = std::thread::Builder::new().name("snapshot".into()).spawn(move || {
        if let Err(e) = tern_seccomp::confine(tern_seccomp::ThreadClass::Snapshot) {
            let _ = events.send(VmEvent::SnapshotEnded { stopped: false });
            updates(SnapshotUpdate::Failed(format!("snapshot not started, the guest keeps running: {e}")));
            return;
        }
        let mut last = Instant::now();
        let mut progress = |p: SnapshotProgress| {
            if last.elapsed() >= PROGRESS_INTERVAL {
                last = Instant::now();
                updates(SnapshotUpdate::Progress(p));
            }
        };
        match run(&parts, &options, &mut progress) {
            Ok(report) => {
                tracing::info!(?report, "snapshot written");
                if report.stopped {
                    // The owner ends the machine on this event: the answer goes first.
                    updates(SnapshotUpdate::Done(report));
                    let _ = events.send(VmEvent::SnapshotEnded { stopped: true });
                } else {
                    // The owner hears of the end first: a client that sends its next
                    // request as soon as it has the answer must not find this
                    // snapshot still in progress (its request queues behind the event).
                    let _ = events.send(VmEvent::SnapshotEnded { stopped: false });
                    updates(SnapshotUpdate::Done(report));
                }
            }
            Err(e) => {
                tracing::warn!("snapshot failed: {e}");
                // As above: the owner first.
                let _ = events.send(VmEvent::SnapshotEnded { stopped: false });
                updates(SnapshotUpdate::Failed(format!("snapshot to {} failed, the guest keeps running: {e}", options.to.display())));
            }
        }
    });
    if let Err(e) = thread {
        tracing::error!("cannot start the snapshot thread: {e}");
        let _ = owner.send(VmEvent::SnapshotEnded { stopped: false });
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// What was written while the guest was paused.
struct Captured {
    sections: Vec<Section>,
    /// The memory file and its length: synced and checksummed in `finish`.
    memory: (PathBuf, u64),
    disks: Vec<DiskRecord>,
    methods: Vec<CopyMethod>,
}

fn run(parts: &MachineParts, options: &Options, progress: &mut dyn FnMut(SnapshotProgress)) -> Result<SnapshotReport, SnapshotError> {
    let started = Instant::now();
    let staging = Staging::create(&options.to)?;
    let dir = staging.dir.clone();
    let mut config = Vec::new();
    Message::Config(describe(parts)).send(&mut config).map_err(|e| SnapshotError::Device(e.to_string()))?;
    let mut sections = vec![files::write_section(&dir, format::CONFIG, PROTOCOL_VERSION, &config)?];
    let disks: Vec<BlockConfig> = parts.virtio.iter().filter_map(|d| lock(d).device_mut().disk_image()).collect();
    let mut report = SnapshotReport { memory_bytes: parts.memory, stopped: options.stop, ..Default::default() };

    let paused_at = Instant::now();
    parts.vcpus.pause().map_err(|e| SnapshotError::Pause(e.to_string()))?;
    let captured = capture(parts, options, &dir, &disks, progress, &mut report);
    // With --stop the guest stays parked once everything is written; any failure
    // gives it back.
    let keep_stopped = options.stop && captured.is_ok();
    if !keep_stopped {
        let t = Instant::now();
        let resumed = parts.resume_devices_and_vcpus();
        report.resume_ms = ms(t.elapsed());
        report.downtime_ms = ms(paused_at.elapsed());
        if let Err(again) = resumed {
            let first = captured.err().map(|e| format!("{e}; then ")).unwrap_or_default();
            return Err(SnapshotError::Device(format!("{first}resuming the guest: {again}")));
        }
    } else {
        report.downtime_ms = ms(paused_at.elapsed());
    }
    let finished = captured.and_then(|captured| finish(&dir, captured, &mut sections, progress, &mut report)).and_then(|()| {
        report.total_ms = ms(started.elapsed());
        staging.commit()
    });
    match finished {
        Ok(committed) => {
            report.dir = committed.display().to_string();
            Ok(report)
        }
        Err(e) if keep_stopped => {
            // Written but not committed: the guest was meant to stop; it runs instead.
            parts.resume_devices_and_vcpus().map_err(|again| SnapshotError::Device(format!("{e}; then resuming the guest: {again}")))?;
            Err(e)
        }
        Err(e) => Err(e),
    }
}

/// Everything done while the guest is paused: devices parked and flushed, memory,
/// state and disks written.
fn capture(
    parts: &MachineParts,
    options: &Options,
    dir: &Path,
    disks: &[BlockConfig],
    progress: &mut dyn FnMut(SnapshotProgress),
    report: &mut SnapshotReport,
) -> Result<Captured, SnapshotError> {
    let t = Instant::now();
    parts.pause_devices().map_err(SnapshotError::Device)?;
    parts.flush_devices().map_err(SnapshotError::Device)?;
    report.pause_ms = ms(t.elapsed());

    let t = Instant::now();
    let mem_path = dir.join(format::section_file(format::MEMORY)?);
    let mem_file = files::create_new(&mem_path)?;
    let total = parts.memory;
    let written = memory_file::write(&parts.mem, &mem_file, &mem_path, |done| {
        progress(SnapshotProgress { phase: "memory".into(), done_bytes: done, total_bytes: total })
    })?;
    report.pages_written = written.pages_written;
    report.zero_pages = written.zero_pages;
    report.memory_ms = ms(t.elapsed());
    let memory = (mem_path, written.length);
    let mut sections = Vec::new();

    let t = Instant::now();
    let machine_state = state::capture(parts, &parts.msr_indices)?;
    sections.push(files::write_section(dir, format::STATE, STATE_VERSION, &machine_state.encode())?);
    report.state_ms = ms(t.elapsed());

    let t = Instant::now();
    let mut records = Vec::new();
    let mut methods = Vec::new();
    for (index, disk) in disks.iter().enumerate() {
        let path = std::fs::canonicalize(&disk.path).unwrap_or_else(|_| disk.path.clone());
        let identity = disk_copy::identity(&path)?;
        let (size, copy) = if options.no_disks {
            let file = File::open(&path).map_err(|e| SnapshotError::io("cannot open disk", &path, e))?;
            (disk_copy::image_size(&file, &path)?, None)
        } else {
            let name = format::disk_section(index);
            let dst = dir.join(format::section_file(&name)?);
            let phase = format!("disk {index}");
            let (method, size) = disk_copy::copy(&path, &dst, |done, total| {
                progress(SnapshotProgress { phase: phase.clone(), done_bytes: done, total_bytes: total })
            })?;
            methods.push(method);
            (size, Some(name))
        };
        records.push(DiskRecord { path, size_bytes: size, read_only: disk.read_only, serial: disk.serial.clone(), identity, copy });
    }
    report.disk_ms = ms(t.elapsed());
    Ok(Captured { sections, memory, disks: records, methods })
}

/// With the guest running again: the memory file synced, checksums of it and of the
/// disk copies, the manifest, the size on disk.
fn finish(
    dir: &Path,
    captured: Captured,
    sections: &mut Vec<Section>,
    progress: &mut dyn FnMut(SnapshotProgress),
    report: &mut SnapshotReport,
) -> Result<(), SnapshotError> {
    sections.extend(captured.sections);
    let (mem_path, mem_len) = &captured.memory;
    disk_copy::sync_file(mem_path)?;
    let file = File::open(mem_path).map_err(|e| SnapshotError::io("cannot open", mem_path, e))?;
    let crc32 = files::crc32_of(&file, mem_path, *mem_len, |done| {
        progress(SnapshotProgress { phase: "check memory".into(), done_bytes: done, total_bytes: *mem_len })
    })?;
    sections.push(Section { name: format::MEMORY.into(), version: format::MEMORY_VERSION, length: *mem_len, crc32 });
    for (index, disk) in captured.disks.iter().enumerate() {
        let Some(name) = &disk.copy else { continue };
        let path = dir.join(format::section_file(name)?);
        disk_copy::sync_file(&path)?;
        let file = File::open(&path).map_err(|e| SnapshotError::io("cannot open", &path, e))?;
        let phase = format!("check {index}");
        let crc32 = files::crc32_of(&file, &path, disk.size_bytes, |done| {
            progress(SnapshotProgress { phase: phase.clone(), done_bytes: done, total_bytes: disk.size_bytes })
        })?;
        sections.push(Section { name: name.clone(), version: format::DISK_VERSION, length: disk.size_bytes, crc32 });
    }
    report.disks_copied = captured.methods.len() as u32;
    report.disk_copy = match (captured.methods.first(), captured.methods.iter().all(|m| Some(m) == captured.methods.first())) {
        (None, _) => "none".into(),
        (Some(m), true) => m.name().into(),
        (Some(_), false) => "mixed".into(),
    };
    let manifest = Manifest {
        format: format::FORMAT_NAME.into(),
        version: format::FORMAT_VERSION,
        created_unix_s: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        sections: std::mem::take(sections),
        disks: captured.disks,
    };
    let path = dir.join(format::MANIFEST_FILE);
    let file = files::create_new(&path)?;
    std::os::unix::fs::FileExt::write_all_at(&file, &manifest.encode(), 0).map_err(|e| SnapshotError::io("cannot write", &path, e))?;
    file.sync_all().map_err(|e| SnapshotError::io("cannot sync", &path, e))?;
    report.bytes_on_disk = size_on_disk(dir);
    Ok(())
}

/// Allocated bytes of the files in `dir`.
fn size_on_disk(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.blocks() * 512).sum())
        .unwrap_or(0)
}
