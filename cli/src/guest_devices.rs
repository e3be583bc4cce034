//! Opens the devices given on the command line (`--disk`, `--net`), with clear errors
//! naming each one. Order is the PCI slot order, and a migration destination must list
//! the same devices in the same order: disks first, then network interfaces.

use anyhow::{bail, Result};
use devices::virtio::block::{Block, BlockConfig};
use devices::virtio::net::{Net, NetConfig};
use devices::virtio::VirtioDevice;

/// When disk images are locked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Locking {
    /// At once (`tern run`).
    Now,
    /// At the migration hand-over (`tern receive`: the source still holds the locks).
    AtHandOver,
}

/// Opens every disk (the first is /dev/vda), then every TAP.
pub fn open(disks: &[BlockConfig], nets: &[NetConfig], locking: Locking) -> Result<Vec<Box<dyn VirtioDevice>>> {
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
    let mut taps = Vec::new();
    for config in nets {
        if taps.contains(&config.tap) {
            bail!("TAP {} is given more than once", config.tap);
        }
        taps.push(config.tap.clone());
        let net = match locking {
            Locking::Now => Net::new(config.clone())?,
            // A free TAP opens now; the source's own at the hand-over.
            Locking::AtHandOver => Net::new_at_hand_over(config.clone())?,
        };
        devices.push(Box::new(net));
    }
    Ok(devices)
}
