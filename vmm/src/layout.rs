//! The guest-physical address map tern builds. One place, so boot code, ACPI tables
//! and the E820 map agree.

/// GDT written for the boot vCPU state.
pub const BOOT_GDT_ADDR: u64 = 0x500;
/// Empty IDT (interrupts stay off until the kernel installs its own).
pub const BOOT_IDT_ADDR: u64 = 0x520;
/// PVH `hvm_start_info`, followed by its memory map.
pub const PVH_INFO_ADDR: u64 = 0x6000;
/// PVH memory map entries (right after `hvm_start_info`).
pub const PVH_MEMMAP_ADDR: u64 = 0x6040;
/// Linux zero page (`boot_params`) for the 64-bit boot protocol.
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// Initial stack pointer for the 64-bit boot protocol.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Boot page tables: PML4, PDPT, PD (identity map of the first 1 GiB, 2 MiB pages).
pub const PML4_ADDR: u64 = 0x9000;
/// See [`PML4_ADDR`].
pub const PDPT_ADDR: u64 = 0xa000;
/// See [`PML4_ADDR`].
pub const PD_ADDR: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_ADDR: u64 = 0x20000;
/// Largest command line tern passes (Linux's x86 COMMAND_LINE_SIZE).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// End of conventional low memory (start of the EBDA / VGA hole).
pub const EBDA_START: u64 = 0x9fc00;
/// Start of the BIOS area where ACPI tables live; Linux scans it for the RSDP.
pub const ACPI_TABLES_START: u64 = 0xe0000;
/// The VM generation ID (16 bytes, `vmgenid.rs`): its own page of the reserved BIOS
/// area, above the ACPI tables and below the reset vector's page. Guest RAM, so
/// snapshots and migrations carry it; E820-reserved, so the guest never allocates it.
pub const VMGENID_ADDR: u64 = 0xfe000;
/// End of the BIOS area (1 MiB): the kernel's high memory starts here.
pub const HIGH_MEMORY_START: u64 = 0x100000;
/// Start of the 32-bit MMIO hole (PCI BARs, IOAPIC, LAPIC).
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
/// End of the 32-bit hole: RAM above the hole resumes here.
pub const MMIO_HOLE_END: u64 = 0x1_0000_0000;
/// KVM's TSS (three pages) sits in the MMIO hole, below the LAPIC/IOAPIC/BIOS range.
pub const KVM_TSS_ADDR: u64 = 0xfffb_d000;
/// KVM's identity-map page (Intel real-mode emulation) just below the TSS.
pub const KVM_IDENTITY_MAP_ADDR: u64 = 0xfffb_c000;
/// IOAPIC MMIO base.
pub const IOAPIC_ADDR: u64 = 0xfec0_0000;
/// Local APIC MMIO base.
pub const LAPIC_ADDR: u64 = 0xfee0_0000;
/// End (exclusive) of the window PCI BARs are allocated from, below the IOAPIC.
pub const PCI_MMIO_END: u64 = IOAPIC_ADDR;
