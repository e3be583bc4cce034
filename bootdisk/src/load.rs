//! Reading a chosen entry's kernel and initrds off the image, within the limits.

use std::sync::Arc;

use crate::error::{Fault, Problem};
use crate::image::ReadAt;
use crate::volumes::{file_size, open_partition, read_into};
use crate::{BootEntry, BootMenu, ConfigSource, LoadedBoot, MAX_INITRDS, MAX_KERNEL};

/// How errors name the entry: "grub.cfg entry 'T'", "BLS entry 'T'", "link".
fn describe(menu: &BootMenu, entry: &BootEntry) -> String {
    match menu.source {
        ConfigSource::Grub { .. } => format!("grub.cfg entry '{}'", entry.title),
        ConfigSource::Bls { .. } => format!("BLS entry '{}'", entry.title),
        ConfigSource::DebianLinks { .. } => "the link".to_string(),
    }
}

/// Load the kernel and the concatenated initrds of `entry`.
pub(crate) fn load(menu: &BootMenu, entry: &BootEntry, image: &Arc<dyn ReadAt>, len: u64) -> Result<LoadedBoot, Fault> {
    let what = describe(menu, entry);
    let k = &entry.kernel;
    let (fs, part_len) = open_partition(image, len, k.partition)?;
    let size = file_size(&fs, part_len, &k.path, MAX_KERNEL, &what).map_err(|p| Fault::on(k.partition, p))?;
    let mut kernel = Vec::new();
    read_into(&fs, &k.path, size, &what, &mut kernel).map_err(|p| Fault::on(k.partition, p))?;

    // All sizes first: the sum is checked before any initrd byte is allocated.
    let mut sized = Vec::new();
    let mut total = 0u64;
    for r in &entry.initrds {
        let (fs, part_len) = open_partition(image, len, r.partition)?;
        let size = file_size(&fs, part_len, &r.path, MAX_INITRDS, &what).map_err(|p| Fault::on(r.partition, p))?;
        total += size;
        if total > MAX_INITRDS {
            let problem = Problem::TooLarge { what: format!("{what}: initrds up to"), path: r.path.clone(), size: total, limit: format!("the {} MiB limit", MAX_INITRDS >> 20) };
            return Err(Fault::on(r.partition, problem));
        }
        sized.push((fs, r, size));
    }
    let initrd = if sized.is_empty() {
        None
    } else {
        let mut out = Vec::with_capacity(total as usize);
        for (fs, r, size) in &sized {
            read_into(fs, &r.path, *size, &what, &mut out).map_err(|p| Fault::on(r.partition, p))?;
        }
        Some(out)
    };
    Ok(LoadedBoot { kernel, initrd, cmdline: entry.cmdline.clone(), title: entry.title.clone() })
}
