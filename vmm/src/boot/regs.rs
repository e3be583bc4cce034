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
/// `__BOOT_CS` and `__BOOT_DS` of the Linux 32-bit boot protocol.
const LINUX32_BOOT_CS: u16 = 0x10;
const LINUX32_BOOT_DS: u16 = 0x18;
const LINUX32_TSS: u16 = 0x20;

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

/// The boot GDT of one protocol and the selectors loaded from it.
struct BootGdt {
    entries: [u64; 5],
    code: u16,
    data: u16,
    tss: u16,
}

/// PVH and the 64-bit protocol: code 0x08, data 0x10, TSS 0x18. The 32-bit Linux boot
/// protocol asks for `__BOOT_CS` = 0x10 and `__BOOT_DS` = 0x18 (its TSS goes at 0x20).
fn boot_gdt(protocol: BootProtocol) -> BootGdt {
    let tss = gdt_entry(FLAGS_TSS, 0, 0xfffff);
    let data = gdt_entry(FLAGS_DATA, 0, 0xfffff);
    match protocol {
        BootProtocol::Pvh | BootProtocol::Linux64 => {
            let code = if protocol == BootProtocol::Pvh { FLAGS_CODE32 } else { FLAGS_CODE64 };
            BootGdt {
                entries: [0, gdt_entry(code, 0, 0xfffff), data, tss, 0],
                code: CODE_SELECTOR,
                data: DATA_SELECTOR,
                tss: TSS_SELECTOR,
            }
        }
        BootProtocol::Linux32 => BootGdt {
            entries: [0, 0, gdt_entry(FLAGS_CODE32, 0, 0xfffff), data, tss],
            code: LINUX32_BOOT_CS,
            data: LINUX32_BOOT_DS,
            tss: LINUX32_TSS,
        },
    }
}

/// Writes the boot GDT and an empty IDT, and fills `sregs` for `protocol`.
pub fn setup_sregs(mem: &GuestMemoryMmap, protocol: BootProtocol, sregs: &mut kvm_sregs) -> Result<(), BootError> {
    let gdt = boot_gdt(protocol);
    for (i, entry) in gdt.entries.iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(BOOT_GDT_ADDR + i as u64 * 8))?;
    }
    mem.write_obj(0u64, GuestAddress(BOOT_IDT_ADDR))?;
    sregs.gdt.base = BOOT_GDT_ADDR;
    sregs.gdt.limit = (gdt.entries.len() * 8 - 1) as u16;
    sregs.idt.base = BOOT_IDT_ADDR;
    sregs.idt.limit = 7;

    let segment = |selector: u16| segment_from_gdt(gdt.entries[usize::from(selector / 8)], selector / 8);
    let data = segment(gdt.data);
    sregs.cs = segment(gdt.code);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment(gdt.tss);

    match protocol {
        BootProtocol::Pvh | BootProtocol::Linux32 => {
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
        BootProtocol::Linux32 => {
            // esi = zero page; ebp, edi, ebx = 0 (the protocol's words); interrupts off.
            regs.rsi = ZERO_PAGE_ADDR;
            regs.rsp = BOOT_STACK_POINTER;
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
        let l32 = boot_regs(BootEntry { protocol: BootProtocol::Linux32, entry: GuestAddress(0x10_0000) });
        assert_eq!((l32.rip, l32.rsi), (0x10_0000, ZERO_PAGE_ADDR));
        assert_eq!((l32.rbp, l32.rdi, l32.rbx), (0, 0, 0));
        assert_eq!(l32.rflags & (1 << 9), 0, "interrupts off");
    }

    #[test]
    fn the_32_bit_linux_protocol_loads_boot_cs_0x10_and_boot_ds_0x18_flat_without_paging() {
        let mem = crate::memory::create_guest_memory(64 << 20).unwrap();
        let mut sregs = kvm_sregs::default();
        setup_sregs(&mem, BootProtocol::Linux32, &mut sregs).unwrap();
        assert_eq!((sregs.cs.selector, sregs.ds.selector, sregs.es.selector, sregs.ss.selector), (0x10, 0x18, 0x18, 0x18));
        assert_eq!((sregs.cs.base, sregs.cs.limit, sregs.cs.type_, sregs.cs.db, sregs.cs.l), (0, 0xffff_ffff, 0xb, 1, 0));
        assert_eq!((sregs.ds.base, sregs.ds.limit, sregs.ds.type_, sregs.ds.db), (0, 0xffff_ffff, 3, 1));
        assert_eq!(sregs.cr0 & (CR0_PE | CR0_PG), CR0_PE);
        assert_eq!((sregs.cr4, sregs.efer), (0, 0));
        // The descriptors the selectors name are in the GDT in guest memory.
        let cs: u64 = mem.read_obj(GuestAddress(BOOT_GDT_ADDR + 0x10)).unwrap();
        let ds: u64 = mem.read_obj(GuestAddress(BOOT_GDT_ADDR + 0x18)).unwrap();
        assert_eq!((cs, ds), (gdt_entry(FLAGS_CODE32, 0, 0xfffff), gdt_entry(FLAGS_DATA, 0, 0xfffff)));
        assert!(usize::from(sregs.gdt.limit) >= 0x1f);
    }

    #[test]
    fn the_64_bit_protocol_keeps_its_selectors() {
        let mem = crate::memory::create_guest_memory(64 << 20).unwrap();
        let mut sregs = kvm_sregs::default();
        setup_sregs(&mem, BootProtocol::Linux64, &mut sregs).unwrap();
        assert_eq!((sregs.cs.selector, sregs.ds.selector, sregs.tr.selector, sregs.cs.l), (0x08, 0x10, 0x18, 1));
        assert_ne!(sregs.cr0 & CR0_PG, 0);
    }
}
