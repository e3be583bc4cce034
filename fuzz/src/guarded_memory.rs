//! Guest memory fenced by guard pages.
//!
//! Guest layout: region A at 0 and region B right after it (adjacent in guest
//! physical space, so buffers can straddle the boundary), a hole, then region C.
//! In the host each region sits between `PROT_NONE` pages: a device that computes
//! a host pointer past the end of a region (or assumes two guest-adjacent regions
//! are host-adjacent) faults at once, and libFuzzer reports the crash.
//!
//! One mapping serves a whole fuzzing process; [`GuardedMemory::reset`] zeroes it
//! between inputs (`MADV_DONTNEED`), so every input starts from the same memory.

use std::sync::OnceLock;

use vm_memory::bitmap::AtomicBitmap;
use vm_memory::{GuestAddress, GuestRegionMmap, MmapRegion};

/// The guest memory type devices use.
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<AtomicBitmap>;

/// Bytes in each region.
pub const REGION_SIZE: u64 = 0x1_0000;
/// Guest addresses of regions A, B and C.
pub const REGION_STARTS: [u64; 3] = [0, REGION_SIZE, 3 * REGION_SIZE];
/// First address past region C.
pub const MEM_END: u64 = 4 * REGION_SIZE;

const PAGE: usize = 4096;

/// The guarded mapping and the guest memory built on it.
pub struct GuardedMemory {
    mem: GuestMemoryMmap,
    /// Host address of the first region and the gap to the next one, to reset them.
    regions: Vec<usize>,
}

impl GuardedMemory {
    fn new() -> Self {
        let region = REGION_SIZE as usize;
        let total = PAGE + REGION_STARTS.len() * (region + PAGE);
        // SAFETY: an anonymous, private mapping at an address the kernel picks; no
        // existing memory is affected. It is never unmapped (it lives as long as the
        // process), so the raw regions built on it below stay valid.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
        let mut regions = Vec::new();
        let mut guest_regions = Vec::new();
        for (i, start) in REGION_STARTS.iter().enumerate() {
            let host = base as usize + PAGE + i * (region + PAGE);
            // SAFETY: [host, host + region) lies inside the mapping made above; the
            // pages around it stay PROT_NONE.
            let ret = unsafe {
                libc::mprotect(host as *mut libc::c_void, region, libc::PROT_READ | libc::PROT_WRITE)
            };
            assert_eq!(ret, 0, "mprotect: {}", std::io::Error::last_os_error());
            // SAFETY: the range is mapped read-write with these flags for the life
            // of the process (see above).
            let mapping = unsafe {
                MmapRegion::<AtomicBitmap>::build_raw(
                    host as *mut u8,
                    region,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                )
            }
            .expect("raw region");
            guest_regions.push(GuestRegionMmap::new(mapping, GuestAddress(*start)).expect("region"));
            regions.push(host);
        }
        let mem = GuestMemoryMmap::from_regions(guest_regions).expect("guest memory");
        Self { mem, regions }
    }

    /// The process's guarded memory, zeroed.
    pub fn fresh() -> &'static GuardedMemory {
        static MEMORY: OnceLock<GuardedMemory> = OnceLock::new();
        let memory = MEMORY.get_or_init(GuardedMemory::new);
        memory.reset();
        memory
    }

    /// The guest memory (cheap to clone: clones share the mapping).
    pub fn mem(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// Zeroes every region.
    pub fn reset(&self) {
        for host in &self.regions {
            // SAFETY: the range is one of our private anonymous regions; DONTNEED makes
            // its next touch read zeroes, which is what a reset means. Nothing holds
            // references into it across inputs.
            let ret = unsafe {
                libc::madvise(*host as *mut libc::c_void, REGION_SIZE as usize, libc::MADV_DONTNEED)
            };
            assert_eq!(ret, 0, "madvise: {}", std::io::Error::last_os_error());
        }
    }
}
