//! Initial register state of the boot vCPU for each boot protocol: GDT, segments,
//! control registers, boot page tables.

use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};
use vm_memory::{Bytes, GuestAddress};

use super::{BootEntry, BootError, BootProtocol};
use crate::layout::{
    BOOT_GDT_ADDR, BOOT_IDT_ADDR, BOOT_STACK_POINTER, PDPT_ADDR, PD_ADDR, PML4_ADDR, PVH_INFO_ADDR,
    ZERO_PAGE_ADDR,
};
use crate::memory::GuestMemoryMmap;

const CR0_PE: u64 = 1 << 0;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const RFLAGS_RESERVED: u64 = 1 << 1;

const CODE_SELECTOR: u16 = 0x08;
const DATA_SELECTOR: u16 = 0x10;
const TSS_SELECTOR: u16 = 0x18;

/// Descriptor flag words (access byte + granularity nibble) for the boot GDT.
const FLAGS_CODE64: u16 = 0xa09b;
const FLAGS_CODE32: u16 = 0xc09b;
const FLAGS_DATA: u16 = 0xc093;
const FLAGS_TSS: u16 = 0x808b;

/// Encodes a GDT descriptor from flags, base and 20-bit limit.
pub fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let base = u64::from(base);
    let limit = u64::from(limit);
    let flags = u64::from(flags);
    ((base & 0xff00_0000) << 32)
        | ((flags & 0xf0ff) << 40)
        | ((limit & 0x000f_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0xffff)
}

/// Decodes a GDT descriptor into the segment KVM expects.
pub fn segment_from_gdt(entry: u64, table_index: u16) -> kvm_segment {
    let granular = (entry >> 55) & 1 == 1;
    let raw_limit = ((entry >> 32) & 0x000f_0000) | (entry & 0xffff);
    let limit = if granular { (raw_limit << 12) | 0xfff } else { raw_limit };
    kvm_segment {
        base: ((entry >> 32) & 0xff00_0000) | ((entry >> 16) & 0x00ff_ffff),
        limit: limit as u32,
        selector: table_index * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g: granular as u8,
        avl: ((entry >> 52) & 1) as u8,
        unusable: u8::from((entry >> 47) & 1 == 0),
        padding: 0,
    }
}

fn boot_gdt(protocol: BootProtocol) -> [u64; 4] {
    let code = match protocol {
        BootProtocol::Pvh => FLAGS_CODE32,
        BootProtocol::Linux64 => FLAGS_CODE64,
    };
    [0, gdt_entry(code, 0, 0xfffff), gdt_entry(FLAGS_DATA, 0, 0xfffff), gdt_entry(FLAGS_TSS, 0, 0xfffff)]
}

/// Writes the boot GDT and an empty IDT, and fills `sregs` for `protocol`.
pub fn setup_sregs(mem: &GuestMemoryMmap, protocol: BootProtocol, sregs: &mut kvm_sregs) -> Result<(), BootError> {
    let gdt = boot_gdt(protocol);
    for (i, entry) in gdt.iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(BOOT_GDT_ADDR + i as u64 * 8))?;
    }
    mem.write_obj(0u64, GuestAddress(BOOT_IDT_ADDR))?;
    sregs.gdt.base = BOOT_GDT_ADDR;
    sregs.gdt.limit = (gdt.len() * 8 - 1) as u16;
    sregs.idt.base = BOOT_IDT_ADDR;
    sregs.idt.limit = 7;

    let code = segment_from_gdt(gdt[1], CODE_SELECTOR / 8);
    let data = segment_from_gdt(gdt[2], DATA_SELECTOR / 8);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment_from_gdt(gdt[3], TSS_SELECTOR / 8);

    match protocol {
        BootProtocol::Pvh => {
            sregs.cr0 = CR0_PE | CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
        BootProtocol::Linux64 => {
            sregs.cr3 = PML4_ADDR;
            sregs.cr4 = CR4_PAE;
            sregs.cr0 = CR0_PE | CR0_ET | CR0_PG;
            sregs.efer = EFER_LME | EFER_LMA;
        }
    }
    Ok(())
}

/// General registers at the kernel entry point.
pub fn boot_regs(entry: BootEntry) -> kvm_regs {
    let mut regs = kvm_regs { rflags: RFLAGS_RESERVED, rip: entry.entry.0, ..Default::default() };
    match entry.protocol {
        BootProtocol::Pvh => regs.rbx = PVH_INFO_ADDR,
        BootProtocol::Linux64 => {
            regs.rsp = BOOT_STACK_POINTER;
            regs.rbp = BOOT_STACK_POINTER;
            regs.rsi = ZERO_PAGE_ADDR;
        }
    }
    regs
}

/// Identity-maps the first 1 GiB with 2 MiB pages for the 64-bit boot protocol.
pub fn write_page_tables(mem: &GuestMemoryMmap) -> Result<(), BootError> {
    const PRESENT_WRITABLE: u64 = 0x3;
    const HUGE_PAGE: u64 = 0x80;
    mem.write_obj(PDPT_ADDR | PRESENT_WRITABLE, GuestAddress(PML4_ADDR))?;
    mem.write_obj(PD_ADDR | PRESENT_WRITABLE, GuestAddress(PDPT_ADDR))?;
    for i in 0..512u64 {
        mem.write_obj((i << 21) | PRESENT_WRITABLE | HUGE_PAGE, GuestAddress(PD_ADDR + i * 8))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_entries_round_trip_to_segments() {
        let code = segment_from_gdt(gdt_entry(FLAGS_CODE64, 0, 0xfffff), 1);
        assert_eq!((code.type_, code.l, code.db, code.g, code.present, code.s), (0xb, 1, 0, 1, 1, 1));
        assert_eq!(code.limit, 0xffff_ffff);
        assert_eq!(code.selector, 8);
        let data = segment_from_gdt(gdt_entry(FLAGS_DATA, 0x1234_5678, 0xabcde), 2);
        assert_eq!(data.base, 0x1234_5678);
        assert_eq!((data.type_, data.db, data.l), (3, 1, 0));
        let code32 = segment_from_gdt(gdt_entry(FLAGS_CODE32, 0, 0xfffff), 1);
        assert_eq!((code32.l, code32.db), (0, 1));
        assert_eq!(segment_from_gdt(0, 0).unusable, 1);
    }

    #[test]
    fn boot_regs_per_protocol() {
        let pvh = boot_regs(BootEntry { protocol: BootProtocol::Pvh, entry: GuestAddress(0x100_0000) });
        assert_eq!((pvh.rip, pvh.rbx), (0x100_0000, PVH_INFO_ADDR));
        let l64 = boot_regs(BootEntry { protocol: BootProtocol::Linux64, entry: GuestAddress(0x100_200) });
        assert_eq!((l64.rsi, l64.rsp), (ZERO_PAGE_ADDR, BOOT_STACK_POINTER));
    }
}
