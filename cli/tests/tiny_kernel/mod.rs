//! Tiny "kernels" for CLI tests: ELF images with a Xen PVH note, entered in 32-bit
//! protected mode (so they run on kvm_pvm too), that mark their boot on COM1 and then
//! reset the machine or power it off; and a guest that counts ticks in its memory.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A fresh directory `tern-PREFIX-PID-NAME` in the temporary directory holding
/// `guest.elf`: the PVH ELF of `code`.
pub fn guest_dir(prefix: &str, name: &str, code: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tern-{prefix}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("guest.elf"), pvh_elf(code)).unwrap();
    dir
}

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


/// A bzImage for a 32-bit kernel: a one-sector setup header ("HdrS", protocol 2.15,
/// LOADED_HIGH, `code32_start` = 1 MiB, no `XLF_KERNEL_64`) and `code` as its
/// protected-mode kernel, which tern enters through the 32-bit boot protocol.
pub fn bzimage32(code: &[u8]) -> Vec<u8> {
    let mut image = vec![0u8; 1024];
    image[0x1f1] = 1; // setup_sects
    image[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
    image[0x202..0x206].copy_from_slice(b"HdrS");
    image[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    image[0x211] = 1; // loadflags: LOADED_HIGH
    image[0x214..0x218].copy_from_slice(&ENTRY.to_le_bytes()); // code32_start
    image[0x22c..0x230].copy_from_slice(&0x37ff_ffffu32.to_le_bytes()); // initrd_addr_max
    image[0x236..0x238].copy_from_slice(&0u16.to_le_bytes()); // xloadflags: 32-bit only
    image.extend_from_slice(code);
    image
}

/// Protected-mode code that checks the 32-bit boot protocol's entry state and writes
/// the first two bytes of the command line (found through the zero page in %esi) to
/// COM1, then powers off. A failed check writes its letter instead and powers off:
/// `r` ebp/edi/ebx not 0, `c` CS not 0x10, `d`/`e`/`s` DS/ES/SS not 0x18, `p` paging
/// on, `h` no "HdrS" in the zero page's setup header.
pub fn linux32_entry_check() -> Vec<u8> {
    let mut code = vec![0xba, 0xf8, 0x03, 0, 0]; // mov edx, 0x3f8
    let mut check = |test: &[u8], letter: u8| {
        code.extend_from_slice(test);
        let mut fail = vec![0xb0, letter, 0xee]; // mov al, letter; out dx, al
        fail.extend_from_slice(POWER_OFF);
        code.extend_from_slice(&[0x74, fail.len() as u8]); // je over the failure
        code.extend(fail);
    };
    check(&[0x89, 0xe8, 0x09, 0xf8, 0x09, 0xd8], b'r'); // mov eax, ebp; or eax, edi; or eax, ebx
    check(&[0x8c, 0xc8, 0x66, 0x83, 0xf8, 0x10], b'c'); // mov eax, cs; cmp ax, 0x10
    check(&[0x8c, 0xd8, 0x66, 0x83, 0xf8, 0x18], b'd'); // mov eax, ds; cmp ax, 0x18
    check(&[0x8c, 0xc0, 0x66, 0x83, 0xf8, 0x18], b'e'); // mov eax, es; cmp ax, 0x18
    check(&[0x8c, 0xd0, 0x66, 0x83, 0xf8, 0x18], b's'); // mov eax, ss; cmp ax, 0x18
    check(&[0x0f, 0x20, 0xc0, 0xa9, 0, 0, 0, 0x80], b'p'); // mov eax, cr0; test eax, CR0.PG
    // cmp dword [esi + 0x202], "HdrS"
    check(&[0x81, 0xbe, 0x02, 0x02, 0, 0, b'H', b'd', b'r', b'S'], b'h');
    code.extend_from_slice(&[0x8b, 0x9e, 0x28, 0x02, 0, 0]); // mov ebx, [esi + 0x228] (cmd_line_ptr)
    code.extend_from_slice(&[0x8a, 0x03, 0xee, 0x8a, 0x43, 0x01, 0xee]); // out [ebx], out [ebx + 1]
    code.extend_from_slice(POWER_OFF);
    code
}

/// Where the guest keeps its tick counter (an offset in the memory file too).
pub const COUNTER: u64 = 0x1_0000;
/// Forever: inc dword [0x10000]; print it as 8 hex digits and a newline on COM1;
/// spin a while. 32-bit code (the same bytes run in 64-bit mode).
pub const COUNTING_GUEST: &[u8] = &[
    0xbf, 0x00, 0x00, 0x01, 0x00, // mov edi, 0x10000
    0xff, 0x07, // top: inc dword [edi]
    0x8b, 0x07, // mov eax, [edi]
    0xb9, 0x08, 0x00, 0x00, 0x00, // mov ecx, 8
    0xc1, 0xc0, 0x04, // digit: rol eax, 4
    0x89, 0xc3, // mov ebx, eax
    0x83, 0xe3, 0x0f, // and ebx, 0xf
    0x83, 0xc3, 0x30, // add ebx, '0'
    0x83, 0xfb, 0x39, // cmp ebx, '9'
    0x76, 0x03, // jbe emit
    0x83, 0xc3, 0x07, // add ebx, 'A' - '9' - 1
    0xba, 0xf8, 0x03, 0x00, 0x00, // emit: mov edx, 0x3f8
    0x93, 0xee, 0x93, // xchg eax, ebx; out dx, al; xchg eax, ebx
    0xff, 0xc9, // dec ecx
    0x75, 0xe1, // jnz digit
    0xb0, 0x0a, 0xee, // mov al, 10; out dx, al
    0xbe, 0x00, 0x40, 0x00, 0x00, // mov esi, 0x4000
    0xff, 0xce, // delay: dec esi
    0x75, 0xfc, // jnz delay
    0xeb, 0xca, // jmp top
];

/// How long `wait_for_tick` waits.
pub const TICK_DEADLINE: Duration = Duration::from_secs(30);

/// The lines a guest finished printing to the console file `serial` so far (the
/// one it is in the middle of is left out).
pub fn whole_lines(serial: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(serial).unwrap_or_default();
    let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    lines.pop(); // the line being printed
    lines
}

/// The complete tick lines printed so far.
pub fn ticks(serial: &Path) -> Vec<u32> {
    whole_lines(serial)
        .iter()
        .filter(|l| l.len() == 8)
        .filter_map(|l| u32::from_str_radix(l, 16).ok())
        .collect()
}

/// Waits until the guest printed a tick of at least `value`; returns the ticks.
pub fn wait_for_tick(serial: &Path, value: u32) -> Vec<u32> {
    let t = Instant::now();
    loop {
        let ticks = ticks(serial);
        if ticks.last().is_some_and(|&last| last >= value) {
            return ticks;
        }
        assert!(
            t.elapsed() < TICK_DEADLINE,
            "{} stuck at {:?}",
            serial.display(),
            ticks.last()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A VM definition of `name` booting `kernel` (64M, kvm_pvm allowed), its console in
/// the file `serial`, `disk` its one disk (paths relative to the definition's
/// directory, or absolute).
pub fn definition(name: &str, kernel: &str, serial: &Path, disk: &str) -> String {
    format!(
        "name = \"{name}\"\nmemory = \"64M\"\nallow-emulated-kvm = true\nserial = \"file={}\"\n\
         [boot]\nkernel = \"{kernel}\"\n[[disk]]\npath = \"{disk}\"\n",
        serial.display()
    )
}
