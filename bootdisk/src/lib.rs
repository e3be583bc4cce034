//! tern-bootdisk: find what to boot on a raw disk image, read-only, before the guest
//! starts (in the spirit of pygrub). The image is untrusted: reads are bounded, sizes are
//! checked before anything is allocated, every failure is one line naming the disk.
//!
//! Partition table (`partitions`) -> filesystem by magic (`filesystem`) -> ext2/3/4 via
//! ext4-view (`volumes`) -> grub.cfg (`grub`), else BLS entries (`bls`), else Debian's
//! /vmlinuz links (`debian_links`) -> a `BootMenu` (`discover`); `load` reads the chosen
//! entry's kernel and initrds.

mod bls;
mod debian_links;
mod discover;
pub mod error;
mod filesystem;
pub mod grub;
mod grub_lexer;
mod grub_script;
mod image;
mod load;
pub mod partitions;
mod volumes;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use error::{BootDiskError, Problem};
pub use image::ReadAt;
pub use volumes::PartitionInfo;

/// Largest kernel read.
pub const MAX_KERNEL: u64 = 512 << 20;
/// Largest sum of all initrds of an entry.
pub const MAX_INITRDS: u64 = 2 << 30;
/// Largest configuration file (grub.cfg, grubenv, a BLS entry).
pub const MAX_CONFIG: u64 = 1 << 20;
/// Most boot entries in one configuration.
pub const MAX_ENTRIES: usize = 1000;

/// What a disk offers to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootMenu {
    pub disk: PathBuf,
    pub entries: Vec<BootEntry>,
    /// Index into `entries` of the entry booted without a choice.
    pub default: usize,
    pub source: ConfigSource,
}

/// Where the menu came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// grub.cfg at `path` on `partition`.
    Grub { path: String, partition: u32 },
    /// Boot Loader Specification entries on `partition`.
    Bls { partition: u32 },
    /// /vmlinuz and /initrd.img symlinks on `partition`.
    DebianLinks { partition: u32 },
}

/// One bootable entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootEntry {
    /// The title ("Submenu>Title" for grub entries inside a submenu).
    pub title: String,
    /// grub's `--id`, or the BLS entry's file name.
    pub id: Option<String>,
    pub kernel: FileRef,
    /// Concatenated in this order (microcode first, as grub lists it).
    pub initrds: Vec<FileRef>,
    pub cmdline: String,
}

/// A file on one of the disk's filesystems.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    /// Partition number as Linux numbers it; 0 for a whole-disk filesystem.
    pub partition: u32,
    /// Absolute path on that filesystem.
    pub path: String,
}

/// An entry's bytes, ready to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedBoot {
    pub kernel: Vec<u8>,
    /// All initrds concatenated; None if the entry has none.
    pub initrd: Option<Vec<u8>>,
    pub cmdline: String,
    pub title: String,
}

fn open(disk: &Path) -> Result<(Arc<dyn ReadAt>, u64), BootDiskError> {
    let name = disk.display().to_string();
    let fail = |e: std::io::Error| error::Fault::from(Problem::Open(e.to_string())).for_disk(&name);
    // Read-only: nothing here can write to the image.
    let mut file = std::fs::File::open(disk).map_err(fail)?;
    // Seeking to the end sizes block devices too (their metadata length is 0).
    let len = std::io::Seek::seek(&mut file, std::io::SeekFrom::End(0)).map_err(fail)?;
    Ok((Arc::new(file), len))
}

/// Find the boot menu of the disk image at `disk`, opened read-only.
pub fn inspect(disk: &Path) -> Result<BootMenu, BootDiskError> {
    let (image, len) = open(disk)?;
    let mut menu = inspect_reader(&disk.display().to_string(), image, len)?;
    menu.disk = disk.to_path_buf();
    Ok(menu)
}

/// Find the boot menu of an image given as a reader of `len` bytes; `name` is what errors call it.
pub fn inspect_reader(name: &str, image: Arc<dyn ReadAt>, len: u64) -> Result<BootMenu, BootDiskError> {
    let scan = volumes::scan(&image, len).map_err(|f| f.for_disk(name))?;
    discover::menu(name, &scan).map_err(|f| f.for_disk(name))
}

/// The partitions of the disk image at `disk` and what each holds.
pub fn partitions(disk: &Path) -> Result<Vec<PartitionInfo>, BootDiskError> {
    let (image, len) = open(disk)?;
    partitions_reader(&disk.display().to_string(), image, len)
}

/// The partitions of an image given as a reader, and what each holds.
pub fn partitions_reader(name: &str, image: Arc<dyn ReadAt>, len: u64) -> Result<Vec<PartitionInfo>, BootDiskError> {
    volumes::scan(&image, len).map(|s| s.infos).map_err(|f| f.for_disk(name))
}

impl BootMenu {
    /// The entry to boot: None for the default, else an index ("2"), an exact title or an id.
    pub fn select(&self, choice: Option<&str>) -> Result<&BootEntry, BootDiskError> {
        let found = match choice {
            None => self.entries.get(self.default),
            Some(c) => c
                .parse::<usize>()
                .ok()
                .and_then(|i| self.entries.get(i))
                .or_else(|| self.entries.iter().find(|e| e.title == c))
                .or_else(|| self.entries.iter().find(|e| e.id.as_deref() == Some(c))),
        };
        found.ok_or_else(|| {
            let choice = choice.unwrap_or("default").to_string();
            error::Fault::from(Problem::NoSuchEntry { choice, count: self.entries.len() }).for_disk(&self.disk.display().to_string())
        })
    }
}

/// Read `entry`'s kernel and initrds from the disk image the menu came from (read-only).
pub fn load(menu: &BootMenu, entry: &BootEntry) -> Result<LoadedBoot, BootDiskError> {
    let (image, len) = open(&menu.disk)?;
    load_reader(menu, entry, image, len)
}

/// `load` from an image given as a reader of `len` bytes.
pub fn load_reader(menu: &BootMenu, entry: &BootEntry, image: Arc<dyn ReadAt>, len: u64) -> Result<LoadedBoot, BootDiskError> {
    load::load(menu, entry, &image, len).map_err(|f| f.for_disk(&menu.disk.display().to_string()))
}
