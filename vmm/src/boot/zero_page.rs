//! The Linux zero page (`boot_params`) for the 64-bit boot protocol.

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use vm_memory::{Bytes, GuestAddress};

use super::{BootError, InitrdPlacement};
use crate::layout::{CMDLINE_ADDR, ZERO_PAGE_ADDR};
use crate::memory::{e820_map, GuestMemoryMmap};

const BOOT_FLAG_MAGIC: u16 = 0xaa55;
const HEADER_MAGIC: u32 = 0x5372_6448; // "HdrS"
const LOADER_TYPE_UNDEFINED: u8 = 0xff;
const KERNEL_ALIGNMENT: u32 = 0x0100_0000;

/// Builds the zero page. For a bzImage the kernel's own setup header is kept and the
/// loader fields are filled in; for an ELF kernel a minimal header is made.
pub fn build_zero_page(
    mem_size: u64,
    cmdline_len: u32,
    initrd: Option<InitrdPlacement>,
    header: Option<setup_header>,
) -> boot_params {
    let mut params = boot_params::default();
    if let Some(h) = header {
        params.hdr = h;
    } else {
        params.hdr.boot_flag = BOOT_FLAG_MAGIC;
        params.hdr.header = HEADER_MAGIC;
        params.hdr.kernel_alignment = KERNEL_ALIGNMENT;
    }
    params.hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    params.hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
    params.hdr.cmdline_size = cmdline_len + 1;
    if let Some(i) = initrd {
        params.hdr.ramdisk_image = i.addr.0 as u32;
        params.hdr.ramdisk_size = i.size as u32;
    }
    let map = e820_map(mem_size);
    for (slot, entry) in params.e820_table.iter_mut().zip(map.iter()) {
        *slot = boot_e820_entry { addr: entry.addr, size: entry.size, r#type: entry.kind as u32 };
    }
    params.e820_entries = map.len().min(params.e820_table.len()) as u8;
    params
}

/// Writes the zero page at [`ZERO_PAGE_ADDR`].
pub fn write_zero_page(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    cmdline_len: u32,
    initrd: Option<InitrdPlacement>,
    header: Option<setup_header>,
) -> Result<(), BootError> {
    let params = build_zero_page(mem_size, cmdline_len, initrd, header);
    mem.write_obj(params, GuestAddress(ZERO_PAGE_ADDR))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf_zero_page_has_header_cmdline_initrd_and_e820() {
        let initrd = InitrdPlacement { addr: GuestAddress(0x1000_0000), size: 0x1234 };
        let p = build_zero_page(512 << 20, 20, Some(initrd), None);
        assert_eq!({ p.hdr.header }, HEADER_MAGIC);
        assert_eq!({ p.hdr.boot_flag }, BOOT_FLAG_MAGIC);
        assert_eq!({ p.hdr.cmd_line_ptr }, CMDLINE_ADDR as u32);
        assert_eq!({ p.hdr.ramdisk_image }, 0x1000_0000);
        assert_eq!({ p.hdr.ramdisk_size }, 0x1234);
        assert_eq!(p.e820_entries, 3);
        let last = p.e820_table[2];
        assert_eq!({ last.addr } + { last.size }, 512 << 20);
    }
}
