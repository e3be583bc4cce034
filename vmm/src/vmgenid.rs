//! The VM generation ID (Microsoft's "Virtual Machine Generation ID", as Linux's
//! vmgenid driver reads it): 16 bytes at [`VMGENID_ADDR`], a page of the reserved
//! BIOS area that the DSDT's `\_SB.VGEN` (`_HID` "VMGENCTR", `_CID` "VM_Gen_Counter")
//! names through its `ADDR` method. Each cold boot gets a random ID; a reboot keeps
//! it; a snapshot or migration carries it inside guest memory; a clone gets a new one,
//! written before its vCPUs run, then announced by the Generic Event Device's
//! interrupt on [`VMGENID_GSI`], whose `_EVT` does `Notify(\_SB.VGEN, 0x80)`: Linux's
//! driver then reads the new ID and reseeds its random number generator.

use vm_memory::{Bytes, GuestAddress};

use crate::layout::VMGENID_ADDR;
use crate::memory::GuestMemoryMmap;

/// The GSI of the Generic Event Device's second interrupt: "the generation ID
/// changed" (the first, `devices::power::POWER_BUTTON_GSI`, is the power button).
pub const VMGENID_GSI: u32 = 10;

/// Length of the ID.
pub const GENERATION_ID_LEN: usize = 16;

/// Errors reading, making or writing the ID.
#[derive(Debug, thiserror::Error)]
pub enum GenerationIdError {
    #[error("cannot draw a random VM generation ID: {0}")]
    Random(std::io::Error),
    #[error("the VM generation ID at {VMGENID_ADDR:#x} in guest memory: {0}")]
    GuestMemory(#[from] vm_memory::GuestMemoryError),
    #[error("announcing the new VM generation ID to the guest (GSI {VMGENID_GSI}): {0}")]
    Notify(std::io::Error),
}

/// A VM generation ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenerationId(pub [u8; GENERATION_ID_LEN]);

impl GenerationId {
    /// A fresh ID from the kernel's random number generator.
    pub fn random() -> Result<Self, GenerationIdError> {
        let mut id = [0u8; GENERATION_ID_LEN];
        let mut filled = 0;
        while filled < id.len() {
            let rest = &mut id[filled..];
            // SAFETY: getrandom writes at most `rest.len()` bytes into `rest`, a live,
            // exclusively borrowed buffer of that length.
            let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(GenerationIdError::Random(e));
            }
            filled += n as usize;
        }
        Ok(Self(id))
    }

    /// The ID the guest sees now.
    pub fn read(mem: &GuestMemoryMmap) -> Result<Self, GenerationIdError> {
        let mut id = [0u8; GENERATION_ID_LEN];
        mem.read_slice(&mut id, GuestAddress(VMGENID_ADDR))?;
        Ok(Self(id))
    }

    /// Puts the ID where the guest reads it.
    pub fn write(&self, mem: &GuestMemoryMmap) -> Result<(), GenerationIdError> {
        mem.write_slice(&self.0, GuestAddress(VMGENID_ADDR))?;
        Ok(())
    }

    /// As a GUID is usually written (the bytes in memory order, in hex).
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_differ_and_are_not_zero() {
        let (a, b) = (GenerationId::random().unwrap(), GenerationId::random().unwrap());
        assert_ne!(a, b);
        assert_ne!(a.0, [0; GENERATION_ID_LEN]);
        assert_eq!(a.hex().len(), 32);
    }

    #[test]
    fn written_ids_are_read_back_at_the_fixed_address() {
        let mem = crate::memory::create_guest_memory(64 << 20).unwrap();
        assert_eq!(GenerationId::read(&mem).unwrap().0, [0; GENERATION_ID_LEN]);
        let id = GenerationId([7; GENERATION_ID_LEN]);
        id.write(&mem).unwrap();
        assert_eq!(GenerationId::read(&mem).unwrap(), id);
        let mut raw = [0u8; GENERATION_ID_LEN];
        mem.read_slice(&mut raw, GuestAddress(0xfe000)).unwrap();
        assert_eq!(raw, [7; GENERATION_ID_LEN]);
        // The spec: 8-byte aligned, inside one page.
        assert_eq!(VMGENID_ADDR % 8, 0);
        assert_eq!(VMGENID_ADDR / 4096, (VMGENID_ADDR + GENERATION_ID_LEN as u64 - 1) / 4096);
    }
}
