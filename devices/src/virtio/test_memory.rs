//! Guest memory for device tests: two adjacent 1 MiB regions, so buffers can
//! straddle a region boundary.

use vm_memory::GuestAddress;

use super::GuestMemoryMmap;

/// Size of each region.
pub const REGION_SIZE: u64 = 0x10_0000;
/// End of guest memory.
pub const MEM_END: u64 = 2 * REGION_SIZE;

/// Fresh test guest memory.
pub fn guest_memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), REGION_SIZE as usize), (GuestAddress(REGION_SIZE), REGION_SIZE as usize)])
        .expect("guest memory")
}
