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
            regs::write_page_tables(mem)?;
            Ok(BootEntry { protocol: BootProtocol::Linux64, entry: kernel.entry_64 })
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
