//! A reset vector for Linux's "BIOS" reboot method.
//!
//! A guest kernel that finds ACPI hardware-reduced and no quirk for the machine picks
//! the EFI reboot method (arch/x86/kernel/reboot.c: `reboot_init`, through
//! `efi_reboot_required`) even when it did not boot through EFI. Without EFI runtime
//! services that method returns at once and the kernel falls through to the BIOS
//! method: real mode, then a far jump to the reset vector f000:fff0 (physical
//! 0xffff0), where a PC's firmware would reset the machine. tern has no firmware, so
//! that RAM held zeroes: the vCPU ran `add [bx+si], al` around the segment forever,
//! the 100% spin after "reboot: machine restart". This stub sits there instead and
//! does what the firmware's reset does in effect: it writes the FADT's reset register
//! (again and again, until the machine stops the vCPU).
//! The E820 map keeps 0x9fc00..1 MiB out of the guest's RAM, so the kernel never
//! overwrites it.

use vm_memory::{Bytes, GuestAddress};

use super::BootError;
use crate::memory::GuestMemoryMmap;
use devices::legacy::acpi_pm::{ACPI_PM_PORT, RESET_OFFSET, RESET_VALUE};

/// Physical address of the x86 reset vector (f000:fff0).
pub const RESET_VECTOR_ADDR: u64 = 0xffff0;

/// The stub, 16-bit real-mode code. It writes the register again until the vCPU is
/// stopped: a reset held back (during a migration) and carried to a destination is
/// asked for again there.
pub fn stub() -> [u8; 11] {
    let [port_low, port_high] = (ACPI_PM_PORT + RESET_OFFSET as u16).to_le_bytes();
    [
        0xfa, // cli
        0xba, port_low, port_high, // mov dx, reset register
        0xb0, RESET_VALUE, // mov al, reset value
        0xee, // again: out dx, al
        0xf3, 0x90, // pause
        0xeb, 0xfb, // jmp again
    ]
}

/// Writes the stub at the reset vector.
pub fn write(mem: &GuestMemoryMmap) -> Result<(), BootError> {
    mem.write_slice(&stub(), GuestAddress(RESET_VECTOR_ADDR))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{EBDA_START, HIGH_MEMORY_START};
    use crate::memory::{e820_map, E820Kind};

    #[test]
    fn the_stub_writes_the_acpi_reset_register_and_fits_below_1_mib() {
        let code = stub();
        assert_eq!(&code[1..4], &[0xba, 0x02, 0x06], "mov dx, 0x602");
        assert_eq!(&code[4..7], &[0xb0, 0x01, 0xee], "mov al, 1; out dx, al");
        // The jump lands on the out: rel8 counts from the end of the jmp.
        assert_eq!(code.len() as i64 + i64::from(code[10] as i8), 6);
        assert!(RESET_VECTOR_ADDR + code.len() as u64 <= HIGH_MEMORY_START);
    }

    #[test]
    fn the_guest_ram_map_leaves_the_reset_vector_alone() {
        for entry in e820_map(512 << 20) {
            if entry.kind == E820Kind::Ram {
                let end = entry.addr + entry.size;
                assert!(end <= EBDA_START || entry.addr >= HIGH_MEMORY_START, "{entry:?} covers the reset vector");
            }
        }
    }
}
