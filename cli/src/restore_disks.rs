//! Which images a restored guest runs on. A restore never writes into the snapshot:
//! a disk the snapshot holds a copy of is copied again (a reflink where the
//! filesystem can) to the path `--disk` names, which must not exist yet, or without
//! `--disk` to `SNAPSHOT.restore-PID-diskN.img` beside the snapshot directory; a disk
//! recorded without a copy (`--no-disks`) needs `--disk` naming the image to run on,
//! of exactly the recorded size.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use devices::virtio::block::BlockConfig;
use vmm::snapshot::disk_copy;
use vmm::snapshot::restore::Snapshot;

use crate::device_args::DiskArg;

/// The disks to attach, and the copies made for them (removed if the restore fails).
pub struct Disks {
    pub configs: Vec<BlockConfig>,
    pub created: Vec<PathBuf>,
}

impl Disks {
    /// Removes the copies this restore made (it failed).
    pub fn remove_copies(&self) {
        for path in &self.created {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Where disk `index` goes when no `--disk` names it.
fn default_copy_path(snapshot_dir: &Path, index: usize) -> PathBuf {
    let name = snapshot_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "snapshot".into());
    snapshot_dir.with_file_name(format!("{name}.restore-{}-disk{index}.img", std::process::id()))
}

/// Prepares the images for every disk of `snapshot` (see the module docs).
pub fn prepare(snapshot: &Snapshot, given: &[DiskArg]) -> Result<Disks> {
    let records = &snapshot.manifest.disks;
    if !given.is_empty() && given.len() != records.len() {
        bail!("the snapshot's guest has {} disks but {} --disk flags were given: give one for each, in order, or none", records.len(), given.len());
    }
    let mut disks = Disks { configs: Vec::new(), created: Vec::new() };
    let result = (|| {
        for (index, (record, copy)) in records.iter().zip(&snapshot.disk_copies).enumerate() {
            let arg = given.get(index).map(|d| &d.config);
            let serial = arg.and_then(|c| c.serial.clone()).or_else(|| record.serial.clone());
            let read_only = record.read_only || arg.is_some_and(|c| c.read_only);
            let path = match (copy, arg) {
                (Some(source), target) => {
                    let target = target.map(|c| c.path.clone()).unwrap_or_else(|| default_copy_path(&snapshot.dir, index));
                    if target.symlink_metadata().is_ok() {
                        bail!(
                            "--disk {} exists: a restore puts a new copy of the snapshot's disk {index} there and never writes over an image (name a new file)",
                            target.display()
                        );
                    }
                    let (method, _) = disk_copy::copy(source, &target, |_, _| {}).with_context(|| format!("copying the snapshot's disk {index}"))?;
                    disk_copy::sync_file(&target).with_context(|| format!("copying the snapshot's disk {index}"))?;
                    disks.created.push(target.clone());
                    eprintln!("tern: disk {index} runs on {} ({} of the snapshot's)", target.display(), method.name());
                    target
                }
                (None, Some(config)) => {
                    let file = File::open(&config.path).with_context(|| format!("--disk {}", config.path.display()))?;
                    let size = disk_copy::image_size(&file, &config.path)?;
                    if size < record.size_bytes {
                        bail!(
                            "--disk {} is {size} bytes, smaller than the snapshot's disk {index} ({} bytes, {})",
                            config.path.display(),
                            record.size_bytes,
                            record.path.display()
                        );
                    }
                    if size > record.size_bytes {
                        bail!(
                            "--disk {} is {size} bytes, larger than the snapshot's disk {index} ({} bytes): the guest's disk would change size under it",
                            config.path.display(),
                            record.size_bytes
                        );
                    }
                    config.path.clone()
                }
                (None, None) => bail!(
                    "the snapshot recorded disk {index} ({}) without a copy (--no-disks): give --disk path=IMAGE for each disk",
                    record.path.display()
                ),
            };
            disks.configs.push(BlockConfig { path, read_only, serial });
        }
        Ok(())
    })();
    if let Err(e) = result {
        disks.remove_copies();
        return Err(e);
    }
    Ok(disks)
}
