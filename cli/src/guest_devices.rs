//! Opens the devices given on the command line (`--disk`), with clear errors naming
//! each one.

use anyhow::{bail, Result};
use devices::virtio::block::{Block, BlockConfig};
use devices::virtio::VirtioDevice;

/// When disk images are locked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Locking {
    /// At once (`tern run`).
    Now,
    /// At the migration hand-over (`tern receive`: the source still holds the locks).
    AtHandOver,
}

/// Opens every disk, in order (the first is /dev/vda).
pub fn open(disks: &[BlockConfig], locking: Locking) -> Result<Vec<Box<dyn VirtioDevice>>> {
    let mut seen = Vec::new();
    let mut devices: Vec<Box<dyn VirtioDevice>> = Vec::new();
    for config in disks {
        let canonical = std::fs::canonicalize(&config.path).unwrap_or_else(|_| config.path.clone());
        if seen.contains(&canonical) {
            bail!("disk {} is given more than once", config.path.display());
        }
        seen.push(canonical);
        let block = match locking {
            Locking::Now => Block::new(config.clone())?,
            Locking::AtHandOver => Block::new_unlocked(config.clone())?,
        };
        devices.push(Box::new(block));
    }
    Ok(devices)
}
