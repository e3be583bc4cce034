//! Which images a restored guest runs on. A restore never writes into the snapshot.
//! A disk the snapshot holds a copy of is copied again (a reflink where the filesystem
//! can) to the path `--disk` names, which must not exist yet, or without `--disk` to
//! `SNAPSHOT.restore-PID-diskN.img` beside the snapshot directory. A definition's disk
//! (`--config` without `--disk`) is the VM's own image, so a copy goes over it only
//! with `--overwrite-disks` (which also lets a `--disk` path exist): the copy is made
//! beside the image and renamed over it, the old image kept aside until the guest runs
//! and put back if the restore fails; an image another tern holds locked is refused.
//! A disk recorded without a copy (`--no-disks`) runs on the image `--disk` or the
//! definition names, of exactly the recorded size.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use devices::virtio::block::BlockConfig;
use vmm::snapshot::disk_copy;
use vmm::snapshot::restore::Snapshot;

use crate::device_args::DiskArg;

/// Where the images for a restore come from.
pub struct DiskTargets<'a> {
    /// One per snapshot disk, or none.
    pub given: &'a [DiskArg],
    /// `given` is a definition's disk list (no `--disk` flag).
    pub from_definition: bool,
    /// `--overwrite-disks`: a copied disk may replace an existing image.
    pub overwrite: bool,
}

/// The disks to attach, and what was done for them (undone if the restore fails).
pub struct Disks {
    pub configs: Vec<BlockConfig>,
    /// New copies made for this restore.
    created: Vec<PathBuf>,
    /// Images replaced by a copy: (the image's path, where the old image was put).
    replaced: Vec<(PathBuf, PathBuf)>,
}

impl Disks {
    /// The restore failed: removes the copies it made and puts replaced images back.
    pub fn undo(&mut self) {
        for path in self.created.drain(..) {
            let _ = std::fs::remove_file(path);
        }
        for (image, old) in self.replaced.drain(..) {
            if let Err(e) = std::fs::rename(&old, &image) {
                eprintln!(
                    "tern: warning: could not put {} back from {}: {e}",
                    image.display(),
                    old.display()
                );
            }
        }
    }

    /// The guest runs: the copies stay, and the images they replaced are removed.
    pub fn keep(&mut self) {
        self.created.clear();
        for (_, old) in self.replaced.drain(..) {
            if let Err(e) = std::fs::remove_file(&old) {
                eprintln!(
                    "tern: warning: could not remove the replaced image {}: {e}",
                    old.display()
                );
            }
        }
    }
}

/// Where disk `index` goes when no `--disk` names it.
fn default_copy_path(snapshot_dir: &Path, index: usize) -> PathBuf {
    let name = snapshot_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "snapshot".into());
    snapshot_dir.with_file_name(format!(
        "{name}.restore-{}-disk{index}.img",
        std::process::id()
    ))
}

/// A hidden name beside `image` for `what` ("copy", "old") of this restore.
fn beside(image: &Path, what: &str) -> PathBuf {
    let name = image
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    image.with_file_name(format!(
        ".{name}.tern-restore-{}-{what}",
        std::process::id()
    ))
}

/// Refuses an image a running tern holds locked (it runs a guest on it).
fn refuse_if_in_use(image: &Path) -> Result<()> {
    let file = File::open(image).with_context(|| format!("disk image {}", image.display()))?;
    // SAFETY: flock on a descriptor we own; no memory is passed. The shared lock
    // is dropped with `file` at the end of this function.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } < 0 {
        bail!(
            "disk image {} is in use (another tern holds it locked); not replacing it",
            image.display()
        );
    }
    Ok(())
}

/// Copies the snapshot's disk `index` from `source` to `target`, replacing an
/// existing image only when `overwrite`; `named_by` says where `target` came from.
fn copy_disk(
    disks: &mut Disks,
    source: &Path,
    target: &Path,
    index: usize,
    overwrite: bool,
    named_by: &str,
) -> Result<()> {
    let exists = target.symlink_metadata().is_ok();
    let copy_to = match (exists, overwrite) {
        (false, _) => target.to_path_buf(),
        (true, true) => {
            refuse_if_in_use(target)?;
            beside(target, "copy")
        }
        (true, false) if named_by == "--disk" => bail!(
            "--disk {} exists: a restore puts a new copy of the snapshot's disk {index} there and never writes over an image (name a new file, or give --overwrite-disks to replace it)",
            target.display()
        ),
        (true, false) => bail!(
            "the snapshot holds a copy of disk {index} and the definition's disk {index} is {}: a restore never writes over a VM's image unless told to (give --overwrite-disks to replace it with the snapshot's copy, or --disk path=NEW for a new file)",
            target.display()
        ),
    };
    let existed = copy_to.symlink_metadata().is_ok();
    let copied = disk_copy::copy(source, &copy_to, |_, _| {})
        .and_then(|(method, _)| disk_copy::sync_file(&copy_to).map(|()| method));
    let method = match copied {
        Ok(method) => method,
        Err(e) => {
            // A partial copy is not left behind (a file that was there is not ours).
            if !existed {
                let _ = std::fs::remove_file(&copy_to);
            }
            return Err(e).with_context(|| format!("copying the snapshot's disk {index}"));
        }
    };
    if copy_to == target {
        disks.created.push(copy_to);
        eprintln!(
            "tern: disk {index} runs on {} ({} of the snapshot's)",
            target.display(),
            method.name()
        );
        return Ok(());
    }
    // The old image's mode stays the image's; then the swap, the old image kept aside.
    let old = beside(target, "old");
    let swapped = std::fs::metadata(target)
        .and_then(|m| std::fs::set_permissions(&copy_to, m.permissions()))
        .and_then(|()| std::fs::rename(target, &old))
        .and_then(|()| {
            std::fs::rename(&copy_to, target).inspect_err(|_| {
                let _ = std::fs::rename(&old, target);
            })
        });
    if let Err(e) = swapped {
        let _ = std::fs::remove_file(&copy_to);
        return Err(e).with_context(|| {
            format!(
                "replacing {} with the snapshot's disk {index}",
                target.display()
            )
        });
    }
    disks.replaced.push((target.to_path_buf(), old));
    eprintln!(
        "tern: disk {index} runs on {}, replaced by the snapshot's ({})",
        target.display(),
        method.name()
    );
    Ok(())
}

/// Prepares the images for every disk of `snapshot` (see the module docs).
pub fn prepare(snapshot: &Snapshot, targets: &DiskTargets) -> Result<Disks> {
    let records = &snapshot.manifest.disks;
    let (given, named_by) = (
        targets.given,
        if targets.from_definition {
            "the definition's disk"
        } else {
            "--disk"
        },
    );
    if !given.is_empty() && given.len() != records.len() {
        let (n, m) = (records.len(), given.len());
        if targets.from_definition {
            bail!("the snapshot's guest has {n} disks but the definition gives {m}: give --disk for each, in order");
        }
        bail!("the snapshot's guest has {n} disks but {m} --disk flags were given: give one for each, in order, or none");
    }
    let mut disks = Disks {
        configs: Vec::new(),
        created: Vec::new(),
        replaced: Vec::new(),
    };
    let result = (|| {
        for (index, (record, copy)) in records.iter().zip(&snapshot.disk_copies).enumerate() {
            let arg = given.get(index).map(|d| &d.config);
            let serial = arg
                .and_then(|c| c.serial.clone())
                .or_else(|| record.serial.clone());
            let read_only = record.read_only || arg.is_some_and(|c| c.read_only);
            let path = match (copy, arg) {
                (Some(source), target) => {
                    let target = target.map(|c| c.path.clone()).unwrap_or_else(|| default_copy_path(&snapshot.dir, index));
                    copy_disk(&mut disks, source, &target, index, targets.overwrite, named_by)?;
                    target
                }
                (None, Some(config)) => {
                    let file = File::open(&config.path).with_context(|| format!("{named_by} {}", config.path.display()))?;
                    let size = disk_copy::image_size(&file, &config.path)?;
                    if size < record.size_bytes {
                        bail!(
                            "{named_by} {} is {size} bytes, smaller than the snapshot's disk {index} ({} bytes, {})",
                            config.path.display(),
                            record.size_bytes,
                            record.path.display()
                        );
                    }
                    if size > record.size_bytes {
                        bail!(
                            "{named_by} {} is {size} bytes, larger than the snapshot's disk {index} ({} bytes): the guest's disk would change size under it",
                            config.path.display(),
                            record.size_bytes
                        );
                    }
                    config.path.clone()
                }
                (None, None) => bail!(
                    "the snapshot recorded disk {index} ({}) without a copy (--no-disks): give --disk path=IMAGE for each disk (or a definition with them)",
                    record.path.display()
                ),
            };
            disks.configs.push(BlockConfig {
                path,
                read_only,
                serial,
            });
        }
        Ok(())
    })();
    if let Err(e) = result {
        disks.undo();
        return Err(e);
    }
    Ok(disks)
}
