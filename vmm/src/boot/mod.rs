//! Direct Linux boot: load the kernel (ELF vmlinux or bzImage), the initrd and the
//! command line into guest memory, write the boot-protocol structures, and say where
//! and how the boot vCPU starts.

pub mod acpi;
pub mod kernel;
pub mod parallel_reader;
pub mod pvh;
pub mod regs;
pub mod reset_vector;
pub mod zero_page;

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress};

use crate::layout::{CMDLINE_ADDR, CMDLINE_MAX_SIZE, HIGH_MEMORY_START};
use crate::memory::{low_ram_end, GuestMemoryMmap};

pub use kernel::{KernelFormat, LoadedKernel};

/// How the boot vCPU enters the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootProtocol {
    /// PVH: 32-bit protected mode, paging off, `rbx` = `hvm_start_info`.
    Pvh,
    /// Linux 64-bit boot protocol: long mode, identity-mapped, `rsi` = zero page.
    Linux64,
    /// Linux 32-bit boot protocol (a bzImage without `XLF_KERNEL_64`): protected mode,
    /// paging off, `__BOOT_CS` = 0x10 and `__BOOT_DS` = 0x18 flat, `esi` = zero page.
    Linux32,
}

/// Where the boot vCPU starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootEntry {
    pub protocol: BootProtocol,
    pub entry: GuestAddress,
}

/// One image to load: an open file (from a path, or a memfd another component
/// filled) and how errors name it.
#[derive(Debug)]
pub struct BootImage {
    /// What errors call the image (normally its path).
    pub label: String,
    /// The image, read from its start (any offset it is at is ignored).
    pub file: File,
}

impl BootImage {
    /// Opens `path` read-only; the label is the path.
    pub fn open(path: &std::path::Path) -> std::io::Result<Self> {
        Ok(Self { label: path.display().to_string(), file: File::open(path)? })
    }
}

/// What one boot loads.
#[derive(Debug)]
pub struct BootSource {
    pub kernel: BootImage,
    pub initrd: Option<BootImage>,
    pub cmdline: String,
}

/// Gives the [`BootSource`] for each boot of a machine: called when the machine is
/// built and again at every guest reboot, so what it returns then (a kernel replaced
/// on disk, a new boot entry) is what boots. An error is one line naming the cause;
/// at a reboot it ends tern.
pub type BootProvider = Arc<dyn Fn() -> Result<BootSource, String> + Send + Sync>;

/// Errors preparing the guest for boot.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("the boot source: {0}")]
    Provider(String),
    #[error("cannot read kernel {path}: {source}")]
    OpenKernel { path: String, source: std::io::Error },
    #[error("{path} is not a kernel tern can boot: {reason}")]
    NotAKernel { path: String, reason: String },
    #[error("cannot load kernel {path}: {source}")]
    LoadKernel { path: String, source: linux_loader::loader::Error },
    #[error("cannot read initrd {path}: {source}")]
    ReadInitrd { path: String, source: std::io::Error },
    #[error("initrd {path} ({size} bytes) does not fit in guest memory below {limit:#x} above the kernel")]
    InitrdTooLarge { path: String, size: u64, limit: u64 },
    #[error("kernel command line is {len} bytes; the limit is {max}")]
    CmdlineTooLong { len: usize, max: usize },
    #[error("kernel command line contains a NUL byte")]
    CmdlineNul,
    #[error("writing boot data into guest memory failed: {0}")]
    GuestMemory(#[from] vm_memory::GuestMemoryError),
    #[error("building ACPI tables failed: {0}")]
    Acpi(String),
}

/// Where the initrd landed.
#[derive(Clone, Copy, Debug)]
pub struct InitrdPlacement {
    pub addr: GuestAddress,
    pub size: u64,
}

/// Loads everything and writes the boot-protocol structures. `mem_size` is the total
/// guest RAM; `cpus` is used for the ACPI MADT.
pub fn load(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    source: BootSource,
    cpus: u8,
) -> Result<BootEntry, BootError> {
    let kernel = kernel::load_kernel(mem, source.kernel)?;
    let initrd = match source.initrd {
        Some(image) => Some(load_initrd(mem, mem_size, image, &kernel)?),
        None => None,
    };
    write_cmdline(mem, &source.cmdline)?;
    reset_vector::write(mem)?;
    let rsdp = acpi::write_tables(mem, cpus).map_err(|e| BootError::Acpi(e.to_string()))?;
    let cmdline_len = source.cmdline.len() as u32;
    match kernel.pvh_entry {
        Some(entry) => {
            pvh::write_start_info(mem, mem_size, cmdline_len, initrd, rsdp)?;
            Ok(BootEntry { protocol: BootProtocol::Pvh, entry })
        }
        None => {
            zero_page::write_zero_page(mem, mem_size, cmdline_len, initrd, kernel.setup_header)?;
            if kernel.linux_entry.protocol == BootProtocol::Linux64 {
                regs::write_page_tables(mem)?;
            }
            Ok(kernel.linux_entry)
        }
    }
}

fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &str) -> Result<(), BootError> {
    if cmdline.len() >= CMDLINE_MAX_SIZE {
        return Err(BootError::CmdlineTooLong { len: cmdline.len(), max: CMDLINE_MAX_SIZE - 1 });
    }
    if cmdline.contains('\0') {
        return Err(BootError::CmdlineNul);
    }
    let mut bytes = cmdline.as_bytes().to_vec();
    bytes.push(0);
    mem.write_slice(&bytes, GuestAddress(CMDLINE_ADDR))?;
    Ok(())
}

/// Places the initrd at the top of low RAM (page aligned, under the kernel's
/// `initrd_addr_max`), above the kernel image.
fn load_initrd(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    image: BootImage,
    kernel: &LoadedKernel,
) -> Result<InitrdPlacement, BootError> {
    let BootImage { label, mut file } = image;
    let read_err = |source| BootError::ReadInitrd { path: label.clone(), source };
    file.seek(SeekFrom::Start(0)).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(read_err(std::io::Error::other("not a regular file")));
    }
    let size = meta.len();
    let limit = low_ram_end(mem_size).min(kernel.initrd_addr_max.saturating_add(1));
    let lowest = kernel.end.max(HIGH_MEMORY_START);
    let addr = limit
        .checked_sub(size)
        .map(|a| a & !0xfff)
        .filter(|a| *a >= lowest && size > 0)
        .ok_or_else(|| BootError::InitrdTooLarge { path: label.clone(), size, limit })?;
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, size as usize)
        .map_err(|e| read_err(std::io::Error::other(e.to_string())))?;
    Ok(InitrdPlacement { addr: GuestAddress(addr), size })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::ZERO_PAGE_ADDR;
    use linux_loader::loader::bootparam::boot_params;

    /// A bzImage of one setup sector and `code` as its protected-mode kernel, with
    /// `xloadflags` and an `initrd_addr_max` of 0x37ffffff (as 32-bit kernels say).
    fn bzimage(xloadflags: u16, code: &[u8]) -> Vec<u8> {
        let mut image = vec![0u8; 1024];
        image[0x1f1] = 1; // setup_sects
        image[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        image[0x211] = 1; // LOADED_HIGH
        image[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes());
        image[0x22c..0x230].copy_from_slice(&0x37ff_ffffu32.to_le_bytes());
        image[0x236..0x238].copy_from_slice(&xloadflags.to_le_bytes());
        image.extend_from_slice(code);
        image
    }

    fn image(name: &str, bytes: &[u8]) -> BootImage {
        let path = std::env::temp_dir().join(format!("tern-boot-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        let image = BootImage::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        image
    }

    #[test]
    fn a_32_bit_bzimage_boots_through_the_32_bit_protocol_with_the_initrd_under_its_limit() {
        let mem_size = 2u64 << 30;
        let mem = crate::memory::create_guest_memory(mem_size).unwrap();
        let source = BootSource {
            kernel: image("k32", &bzimage(0, &[0xf4; 64])),
            initrd: Some(image("i32", &[7u8; 8192])),
            cmdline: "console=ttyS0".into(),
        };
        let entry = load(&mem, mem_size, source, 2).unwrap();
        assert_eq!(entry, BootEntry { protocol: BootProtocol::Linux32, entry: GuestAddress(0x10_0000) });
        let params: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_ADDR)).unwrap();
        let (image_at, size) = (u64::from(params.hdr.ramdisk_image), u64::from(params.hdr.ramdisk_size));
        assert_eq!(size, 8192);
        assert!(image_at + size <= 0x3800_0000, "initrd at {image_at:#x} is above initrd_addr_max");
        assert!(image_at >= 0x10_0000 + 64);
        assert_eq!(mem.read_obj::<u8>(GuestAddress(image_at)).unwrap(), 7);
        assert_eq!({ params.hdr.header }, 0x5372_6448);
        assert_eq!({ params.hdr.cmd_line_ptr }, CMDLINE_ADDR as u32);
        assert!(params.e820_entries >= 3);
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0x10_0000)).unwrap(), 0xf4, "code32_start holds the kernel");
    }

    #[test]
    fn a_64_bit_capable_bzimage_stays_on_the_64_bit_protocol() {
        let mem_size = 64u64 << 20;
        let mem = crate::memory::create_guest_memory(mem_size).unwrap();
        let source = BootSource { kernel: image("k64", &bzimage(0x3, &[0xf4; 1024])), initrd: None, cmdline: String::new() };
        let entry = load(&mem, mem_size, source, 1).unwrap();
        assert_eq!(entry, BootEntry { protocol: BootProtocol::Linux64, entry: GuestAddress(0x10_0200) });
    }
}
