//! Kernel image detection and loading through linux-loader.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::{bzimage::BzImage, KernelLoader};
use vm_memory::GuestAddress;

use super::parallel_reader::ParallelFileReader;
use super::{BootEntry, BootError, BootImage, BootProtocol};
use crate::layout::HIGH_MEMORY_START;
use crate::memory::GuestMemoryMmap;

/// Kernel image formats tern boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFormat {
    /// Uncompressed ELF `vmlinux`.
    Elf,
    /// Compressed `bzImage` with a setup header.
    BzImage,
}

/// Where a kernel landed and how it can be entered.
#[derive(Clone, Copy)]
pub struct LoadedKernel {
    pub format: KernelFormat,
    /// PVH entry point when the ELF carries the Xen PVH note.
    pub pvh_entry: Option<GuestAddress>,
    /// How the kernel is entered without PVH: the 64-bit boot protocol (an ELF
    /// vmlinux, a bzImage with `XLF_KERNEL_64`) or the 32-bit one (a bzImage without).
    pub linux_entry: BootEntry,
    /// First byte after the kernel image.
    pub end: u64,
    /// Highest address the kernel accepts for the initrd.
    pub initrd_addr_max: u64,
    /// bzImage setup header, to copy into the zero page.
    pub setup_header: Option<setup_header>,
}

/// `XLF_KERNEL_64`: the bzImage has a 64-bit entry point at load address + 0x200.
const XLF_KERNEL_64: u16 = 1 << 0;
/// Offset of the 64-bit entry point from the protected-mode kernel's start.
const BZIMAGE_ENTRY_64_OFFSET: u64 = 0x200;
/// How a bzImage loaded at `load` (its `code32_start`) is entered. A bzImage with
/// `XLF_KERNEL_64` is entered through the 64-bit boot protocol at `load` + 0x200, even
/// if it could also start in 32-bit mode (every x86_64 bzImage can): long mode is set
/// up by tern and the kernel skips its own switch. A bzImage without it (a 32-bit
/// kernel) is entered through the 32-bit boot protocol at `load` itself.
pub fn bzimage_entry(xloadflags: u16, load: GuestAddress) -> BootEntry {
    if xloadflags & XLF_KERNEL_64 != 0 {
        BootEntry { protocol: BootProtocol::Linux64, entry: GuestAddress(load.0 + BZIMAGE_ENTRY_64_OFFSET) }
    } else {
        BootEntry { protocol: BootProtocol::Linux32, entry: load }
    }
}

/// Default initrd limit for kernels that do not state one.
const DEFAULT_INITRD_ADDR_MAX: u64 = 0x37ff_ffff;

/// Detects the image format from its magic numbers.
/// `label` names the image in errors.
pub fn detect_format(file: &mut File, label: &str) -> Result<KernelFormat, BootError> {
    let not_kernel = |reason: &str| BootError::NotAKernel { path: label.to_string(), reason: reason.into() };
    let mut head = [0u8; 0x210];
    let open_err = |source| BootError::OpenKernel { path: label.to_string(), source };
    file.seek(SeekFrom::Start(0)).map_err(open_err)?;
    let mut read = 0;
    while read < head.len() {
        match file.read(&mut head[read..]).map_err(open_err)? {
            0 => break,
            n => read += n,
        }
    }
    file.seek(SeekFrom::Start(0)).map_err(open_err)?;
    if read >= 4 && head[..4] == *b"\x7fELF" {
        return Ok(KernelFormat::Elf);
    }
    if read >= 0x206 && head[0x202..0x206] == *b"HdrS" {
        return Ok(KernelFormat::BzImage);
    }
    Err(not_kernel("neither an ELF vmlinux nor a bzImage (no ELF magic, no HdrS setup header)"))
}

/// Loads the kernel `image` into `mem`.
pub fn load_kernel(mem: &GuestMemoryMmap, image: BootImage) -> Result<LoadedKernel, BootError> {
    let BootImage { label, mut file } = image;
    let path = label.as_str();
    if !file.metadata().map(|m| m.is_file()).unwrap_or(false) {
        return Err(BootError::NotAKernel { path: label.clone(), reason: "not a regular file".into() });
    }
    let load_err = |source| BootError::LoadKernel { path: label.clone(), source };
    let format = detect_format(&mut file, path)?;
    // The image's segments are read into guest memory by every CPU at once.
    let mut file = ParallelFileReader::new(file);
    match format {
        KernelFormat::Elf => {
            let res = Elf::load(mem, None, &mut file, Some(GuestAddress(HIGH_MEMORY_START))).map_err(load_err)?;
            let pvh_entry = match res.pvh_boot_cap {
                PvhBootCapability::PvhEntryPresent(addr) => Some(addr),
                _ => None,
            };
            Ok(LoadedKernel {
                format: KernelFormat::Elf,
                pvh_entry,
                linux_entry: BootEntry { protocol: BootProtocol::Linux64, entry: res.kernel_load },
                end: res.kernel_end,
                initrd_addr_max: DEFAULT_INITRD_ADDR_MAX,
                setup_header: None,
            })
        }
        KernelFormat::BzImage => {
            let res = BzImage::load(mem, None, &mut file, Some(GuestAddress(HIGH_MEMORY_START))).map_err(load_err)?;
            let header = res.setup_header.ok_or_else(|| BootError::NotAKernel {
                path: label.clone(),
                reason: "bzImage without a setup header".into(),
            })?;
            let initrd_max = header.initrd_addr_max;
            Ok(LoadedKernel {
                format: KernelFormat::BzImage,
                pvh_entry: None,
                linux_entry: bzimage_entry(header.xloadflags, res.kernel_load),
                end: res.kernel_end,
                initrd_addr_max: if initrd_max == 0 { DEFAULT_INITRD_ADDR_MAX } else { u64::from(initrd_max) },
                setup_header: Some(header),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bzimage_with_xlf_kernel_64_is_entered_in_long_mode_at_load_plus_0x200() {
        // XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G, as every x86_64 Debian kernel says.
        let e = bzimage_entry(0x3, GuestAddress(0x10_0000));
        assert_eq!(e, BootEntry { protocol: BootProtocol::Linux64, entry: GuestAddress(0x10_0200) });
    }

    #[test]
    fn a_bzimage_without_xlf_kernel_64_is_entered_in_protected_mode_at_code32_start() {
        for flags in [0, 1 << 2] {
            let e = bzimage_entry(flags, GuestAddress(0x10_0000));
            assert_eq!(e, BootEntry { protocol: BootProtocol::Linux32, entry: GuestAddress(0x10_0000) });
        }
    }
}
