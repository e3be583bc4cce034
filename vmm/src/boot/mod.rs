//! Direct Linux boot: load the kernel (ELF vmlinux or bzImage), the initrd and the
//! command line into guest memory, write the boot-protocol structures, and say where
//! and how the boot vCPU starts.

pub mod acpi;
pub mod kernel;
pub mod parallel_reader;
pub mod pvh;
pub mod regs;
pub mod zero_page;

use std::fs::File;
use std::path::{Path, PathBuf};

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

/// What to boot.
#[derive(Clone, Debug)]
pub struct BootSource {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
}

/// Errors preparing the guest for boot.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot open kernel {path}: {source}")]
    OpenKernel { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a kernel tern can boot: {reason}")]
    NotAKernel { path: PathBuf, reason: String },
    #[error("cannot load kernel {path}: {source}")]
    LoadKernel { path: PathBuf, source: linux_loader::loader::Error },
    #[error("cannot read initrd {path}: {source}")]
    ReadInitrd { path: PathBuf, source: std::io::Error },
    #[error("initrd {path} ({size} bytes) does not fit in guest memory below {limit:#x} above the kernel")]
    InitrdTooLarge { path: PathBuf, size: u64, limit: u64 },
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
    source: &BootSource,
    cpus: u8,
) -> Result<BootEntry, BootError> {
    let kernel = kernel::load_kernel(mem, &source.kernel)?;
    let initrd = match &source.initrd {
        Some(path) => Some(load_initrd(mem, mem_size, path, &kernel)?),
        None => None,
    };
    write_cmdline(mem, &source.cmdline)?;
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
    path: &Path,
    kernel: &LoadedKernel,
) -> Result<InitrdPlacement, BootError> {
    let read_err = |source| BootError::ReadInitrd { path: path.to_path_buf(), source };
    let mut file = File::open(path).map_err(read_err)?;
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
        .ok_or(BootError::InitrdTooLarge { path: path.to_path_buf(), size, limit })?;
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, size as usize)
        .map_err(|e| read_err(std::io::Error::other(e.to_string())))?;
    Ok(InitrdPlacement { addr: GuestAddress(addr), size })
}
