//! PVH boot: `hvm_start_info` with the memory map, command line, initrd module and RSDP.

use linux_loader::loader::elf::start_info::{hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info};
use vm_memory::{Bytes, GuestAddress};

use super::{BootError, InitrdPlacement};
use crate::layout::{CMDLINE_ADDR, PVH_INFO_ADDR, PVH_MEMMAP_ADDR};
use crate::memory::{e820_map, GuestMemoryMmap};

const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
/// Version 1 carries the memory map fields.
const START_INFO_VERSION: u32 = 1;

/// Writes `hvm_start_info`, its memory map and (when present) the initrd module entry.
pub fn write_start_info(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    _cmdline_len: u32,
    initrd: Option<InitrdPlacement>,
    rsdp: GuestAddress,
) -> Result<(), BootError> {
    let map = e820_map(mem_size);
    let entry_size = std::mem::size_of::<hvm_memmap_table_entry>() as u64;
    for (i, e) in map.iter().enumerate() {
        let entry = hvm_memmap_table_entry { addr: e.addr, size: e.size, type_: e.kind as u32, reserved: 0 };
        mem.write_obj(entry, GuestAddress(PVH_MEMMAP_ADDR + i as u64 * entry_size))?;
    }
    let mut info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: START_INFO_VERSION,
        cmdline_paddr: CMDLINE_ADDR,
        rsdp_paddr: rsdp.0,
        memmap_paddr: PVH_MEMMAP_ADDR,
        memmap_entries: map.len() as u32,
        ..Default::default()
    };
    if let Some(i) = initrd {
        let modlist_addr = PVH_MEMMAP_ADDR + map.len() as u64 * entry_size;
        let module = hvm_modlist_entry { paddr: i.addr.0, size: i.size, ..Default::default() };
        mem.write_obj(module, GuestAddress(modlist_addr))?;
        info.nr_modules = 1;
        info.modlist_paddr = modlist_addr;
    }
    mem.write_obj(info, GuestAddress(PVH_INFO_ADDR))?;
    Ok(())
}
