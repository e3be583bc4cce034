//! Copying whole guest pages in and out for migration with plain `memcpy`.
//!
//! vm-memory's `read_slice`/`write_slice` copy with volatile word accesses, which is
//! several times slower than `memcpy` (and far slower under emulation). Migration
//! copies every guest page at least once, so it copies pages through the host
//! address of a bounds-checked 4 KiB slice instead.

use vm_memory::{GuestAddress, GuestMemoryBackend};

use crate::memory::GuestMemoryMmap;

/// Page size copied.
pub const PAGE: usize = 4096;

/// Copies the guest page at `gpa` into `out` (4 KiB).
pub fn read_page(mem: &GuestMemoryMmap, gpa: u64, out: &mut [u8]) -> Result<(), String> {
    if out.len() != PAGE {
        return Err(format!("page buffer of {} bytes", out.len()));
    }
    let slice = mem.get_slice(GuestAddress(gpa), PAGE).map_err(|e| format!("page {gpa:#x}: {e}"))?;
    let guard = slice.ptr_guard();
    // SAFETY: `get_slice` checked that [gpa, gpa + 4 KiB) lies inside one mapped guest
    // region, so the source is valid for PAGE bytes for as long as `guard` lives; `out`
    // is a distinct host buffer of PAGE bytes. A vCPU may write the page meanwhile: the
    // copy may then mix old and new bytes, which is harmless because such a page is
    // dirty again and is sent again (the final copy happens with every vCPU parked).
    unsafe { std::ptr::copy_nonoverlapping(guard.as_ptr(), out.as_mut_ptr(), PAGE) };
    Ok(())
}

/// Writes 4 KiB of `data` to the guest page at `gpa` (destination; vCPUs not running).
pub fn write_page(mem: &GuestMemoryMmap, gpa: u64, data: &[u8]) -> Result<(), String> {
    if data.len() != PAGE {
        return Err(format!("page of {} bytes", data.len()));
    }
    let slice = mem.get_slice(GuestAddress(gpa), PAGE).map_err(|e| format!("page {gpa:#x}: {e}"))?;
    let guard = slice.ptr_guard_mut();
    // SAFETY: `get_slice` checked that the 4 KiB page lies inside one mapped guest
    // region; nothing else touches guest memory on the destination before the vCPUs
    // start, and `data` is a distinct buffer of PAGE bytes.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), guard.as_ptr(), PAGE) };
    Ok(())
}
