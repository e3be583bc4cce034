//! Tiny "kernels" for CLI tests: ELF images with a Xen PVH note, entered in 32-bit
//! protected mode (so they run on kvm_pvm too), that mark their boot on COM1 and then
//! reset the machine or power it off.
#![allow(dead_code)]

/// Where the tiny kernels load and start.
pub const ENTRY: u32 = 0x10_0000;
/// An ELF64 image loading `code` at 1 MiB with a Xen PVH entry note pointing there.
pub fn pvh_elf(code: &[u8]) -> Vec<u8> {
    const EHDR: usize = 64;
    const PHDR: usize = 56;
    let note_at = EHDR + 2 * PHDR;
    let mut note = Vec::new();
    for field in [4u32, 4, 18] {
        // namesz ("Xen\0"), descsz (a 32-bit entry), XEN_ELFNOTE_PHYS32_ENTRY
        note.extend_from_slice(&field.to_le_bytes());
    }
    note.extend_from_slice(b"Xen\0");
    note.extend_from_slice(&ENTRY.to_le_bytes());
    let code_at = 0x1000usize;

    let mut elf = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&0x3eu16.to_le_bytes()); // x86-64
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&u64::from(ENTRY).to_le_bytes());
    elf.extend_from_slice(&(EHDR as u64).to_le_bytes()); // e_phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    for half in [EHDR as u16, PHDR as u16, 2, 0, 0, 0] {
        elf.extend_from_slice(&half.to_le_bytes());
    }
    let phdr = |kind: u32, offset: usize, addr: u64, size: usize| {
        let mut p = Vec::new();
        p.extend_from_slice(&kind.to_le_bytes());
        p.extend_from_slice(&5u32.to_le_bytes()); // R+X
        for field in [offset as u64, addr, addr, size as u64, size as u64, 4] {
            p.extend_from_slice(&field.to_le_bytes());
        }
        p
    };
    elf.extend(phdr(1, code_at, u64::from(ENTRY), code.len())); // PT_LOAD
    elf.extend(phdr(4, note_at, 0, note.len())); // PT_NOTE
    elf.extend(note);
    elf.resize(code_at, 0);
    elf.extend_from_slice(code);
    elf
}

/// `mov edx, port; mov al, mark; out dx, al`, then `tail`.
pub fn marking(mark: u8, tail: &[u8]) -> Vec<u8> {
    let mut code = vec![0xba, 0xf8, 0x03, 0, 0, 0xb0, mark, 0xee];
    code.extend_from_slice(tail);
    code
}

/// Reset through 0xCF9 (inside the PCI configuration ports: tern run has PCI), then spin.
pub const RESET_CF9: &[u8] = &[0xba, 0xf9, 0x0c, 0, 0, 0xb0, 0x02, 0xee, 0xb0, 0x06, 0xee, 0xeb, 0xfe];
/// lidt with an empty table, ud2: a triple fault.
pub const TRIPLE_FAULT: &[u8] = &[0x0f, 0x01, 0x1d, 0x00, 0x06, 0x00, 0x00, 0x0f, 0x0b];
/// ACPI S5 through the sleep control register, then spin.
pub const POWER_OFF: &[u8] = &[0xba, 0x00, 0x06, 0, 0, 0xb0, (5 << 2) | (1 << 5), 0xee, 0xeb, 0xfe];

