//! Places guest RAM mappings on 2 MiB boundaries.
//!
//! KVM maps guest memory with 2 MiB (nested) page-table entries only where the guest
//! physical address and the host virtual address agree modulo 2 MiB; a RAM region whose
//! mapping starts at an arbitrary 4 KiB boundary gets 4 KiB mappings throughout, and
//! every 4 KiB the guest first touches costs a separate fault. Newer kernels align
//! large anonymous mappings themselves; older ones (Debian 12's 6.1) do not.
//!
//! vm-memory creates (and owns, and later unmaps) each mapping with `mmap(NULL, ...)`,
//! so tern steers where the kernel puts it instead of mapping it itself: it reserves an
//! address range, keeps a sub-2 MiB sliver at the top of it so the free gap ends on a
//! 2 MiB boundary, and frees the rest; the kernel's top-down search then places the
//! next mapping of that size flush against the sliver, i.e. aligned. This only steers:
//! the caller checks the result, and a misplaced mapping is merely slower.

use std::ptr::null_mut;

/// Huge-page size KVM can use for guest mappings.
pub const HUGE: usize = 2 << 20;

/// A PROT_NONE sliver kept mapped for the life of the process (no memory, a few
/// pages of address space at most).
fn reserve(len: usize) -> Option<usize> {
    // SAFETY: an anonymous PROT_NONE reservation at an address of the kernel's
    // choosing; it touches no existing mapping.
    let addr = unsafe {
        libc::mmap(null_mut(), len, libc::PROT_NONE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE, -1, 0)
    };
    (addr != libc::MAP_FAILED).then_some(addr as usize)
}

fn unmap(addr: usize, len: usize) {
    if len > 0 {
        // SAFETY: unmaps only (part of) the reservation made in `reserve` by this
        // module, which nothing else uses.
        unsafe { libc::munmap(addr as *mut libc::c_void, len) };
    }
}

/// Prepares the address space so that the next `mmap(NULL, size)` lands 2 MiB-aligned
/// (for sizes that are multiples of 2 MiB). Returns false if it could not prepare.
pub fn steer_next_mapping(size: usize) -> bool {
    if size % HUGE != 0 {
        return false;
    }
    let len = size + HUGE;
    let Some(start) = reserve(len) else { return false };
    let end = start + len;
    let aligned_end = end & !(HUGE - 1);
    // Keep [aligned_end, end) mapped: the free gap the next mapping goes into now ends
    // on a 2 MiB boundary, and it is exactly big enough (at least `size`).
    unmap(start, aligned_end - start);
    true
}

/// Whether `addr` is 2 MiB aligned.
pub fn is_aligned(addr: usize) -> bool {
    addr % HUGE == 0
}
