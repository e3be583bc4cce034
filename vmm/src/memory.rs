//! Guest RAM: sizing, the split around the 32-bit MMIO hole, and the E820 map.

use vm_memory::bitmap::AtomicBitmap;
use vm_memory::GuestAddress;

use crate::layout::{
    ACPI_TABLES_START, EBDA_START, HIGH_MEMORY_START, MMIO_HOLE_END, MMIO_HOLE_START,
};

/// Guest memory with a dirty bitmap recording writes made through vm-memory (devices).
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<AtomicBitmap>;
/// One mapped region of [`GuestMemoryMmap`].
pub type GuestRegionMmap = vm_memory::GuestRegionMmap<AtomicBitmap>;

/// Smallest guest tern accepts: enough for a kernel, initramfs and page tables.
pub const MIN_MEMORY: u64 = 64 << 20;

/// Errors creating guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// Size not usable.
    #[error("guest memory of {size} bytes is invalid: {reason}")]
    InvalidSize { size: u64, reason: &'static str },
    /// mmap of guest RAM failed.
    #[error("cannot map {size} bytes of guest memory: {source}")]
    Map { size: u64, source: vm_memory::mmap::FromRangesError },
    /// Mapping guest RAM from a snapshot's memory file failed.
    #[error("cannot map {size} bytes of guest memory from the snapshot's memory file: {reason}")]
    File { size: u64, reason: String },
}

/// E820 entry types used here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum E820Kind {
    /// Usable RAM.
    Ram = 1,
    /// Reserved (firmware tables area).
    Reserved = 2,
}

/// One E820 entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: E820Kind,
}

/// The RAM ranges `(start, size)` for a guest of `size` bytes: below the MMIO hole,
/// then above 4 GiB for the rest.
pub fn ram_ranges(size: u64) -> Vec<(GuestAddress, usize)> {
    let low = size.min(MMIO_HOLE_START);
    let mut ranges = vec![(GuestAddress(0), low as usize)];
    if size > low {
        ranges.push((GuestAddress(MMIO_HOLE_END), (size - low) as usize));
    }
    ranges
}

fn check_size(size: u64) -> Result<(), MemoryError> {
    if size < MIN_MEMORY {
        return Err(MemoryError::InvalidSize { size, reason: "below the 64 MiB minimum" });
    }
    if size % 4096 != 0 {
        return Err(MemoryError::InvalidSize { size, reason: "not a multiple of 4 KiB" });
    }
    if size > (1 << 46) {
        return Err(MemoryError::InvalidSize { size, reason: "above the 64 TiB maximum" });
    }
    Ok(())
}

/// Maps anonymous guest RAM of `size` bytes, checking the size first.
pub fn create_guest_memory(size: u64) -> Result<GuestMemoryMmap, MemoryError> {
    check_size(size)?;
    place_regions(size, |start, len, _| GuestRegionMmap::from_range(start, len, None).map_err(|source| MemoryError::Map { size, source }))
}

/// Maps guest RAM of `size` bytes from a snapshot's memory file (the regions back to
/// back), private and copy-on-write: the guest's writes stay in this process, the
/// file is never written (it may be open read-only), and pages the guest never
/// writes are shared with the page cache and every other restore of the file.
pub fn map_guest_memory_file(size: u64, file: &std::fs::File) -> Result<GuestMemoryMmap, MemoryError> {
    check_size(size)?;
    let file_len = file.metadata().map(|m| m.len()).map_err(|e| MemoryError::File { size, reason: e.to_string() })?;
    if file_len != size {
        return Err(MemoryError::File { size, reason: format!("the memory file holds {file_len} bytes") });
    }
    place_regions(size, |start, len, offset| {
        let clone = file.try_clone().map_err(|e| MemoryError::File { size, reason: e.to_string() })?;
        let mapping = vm_memory::mmap::MmapRegionBuilder::new_with_bitmap(len, vm_memory::bitmap::NewBitmap::with_len(len))
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_NORESERVE)
            .with_file_offset(vm_memory::FileOffset::new(clone, offset))
            .build()
            .map_err(|e| MemoryError::File { size, reason: e.to_string() })?;
        GuestRegionMmap::new(mapping, start).ok_or(MemoryError::InvalidSize { size, reason: "guest RAM region past the address space" })
    })
}

/// Makes each RAM range with `map(start, len, offset in the file of all regions)`,
/// each placed on a 2 MiB host boundary when the kernel lets it, and advises THP.
fn place_regions(
    size: u64,
    mut map: impl FnMut(GuestAddress, usize, u64) -> Result<GuestRegionMmap, MemoryError>,
) -> Result<GuestMemoryMmap, MemoryError> {
    let mut regions = Vec::new();
    let mut offset = 0u64;
    for (start, len) in ram_ranges(size) {
        let steered = crate::memory_placement::steer_next_mapping(len);
        let region = map(start, len, offset)?;
        offset += len as u64;
        if steered && !crate::memory_placement::is_aligned(region.as_ptr() as usize) {
            tracing::debug!(addr = region.as_ptr() as usize, "guest RAM mapping not 2 MiB aligned: no huge nested mappings");
        }
        regions.push(region);
    }
    let mem = GuestMemoryMmap::from_regions(regions)
        .map_err(|e| MemoryError::InvalidSize { size, reason: region_error(e) })?;
    advise_huge_pages(&mem);
    Ok(mem)
}

fn region_error(_: vm_memory::GuestRegionCollectionError) -> &'static str {
    "guest RAM regions overlap"
}

/// Asks the kernel to back guest RAM with transparent huge pages: far fewer faults
/// while the guest first touches its memory (and fewer nested-paging misses later).
/// Advisory: failure (THP disabled on the host) only costs speed.
fn advise_huge_pages(mem: &GuestMemoryMmap) {
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
    for region in mem.iter() {
        // SAFETY: the range is exactly one live anonymous mapping owned by `mem`;
        // MADV_HUGEPAGE changes only how the kernel backs it, never its contents.
        let rc = unsafe { libc::madvise(region.as_ptr().cast(), region.len() as usize, libc::MADV_HUGEPAGE) };
        if rc != 0 {
            tracing::debug!("madvise(MADV_HUGEPAGE) on guest memory: {}", std::io::Error::last_os_error());
        }
    }
}

/// The E820 map the guest sees for a guest of `size` bytes.
pub fn e820_map(size: u64) -> Vec<E820Entry> {
    let mut map = Vec::new();
    for (start, len) in ram_ranges(size) {
        let start = start.0;
        let end = start + len as u64;
        if start == 0 {
            map.push(E820Entry { addr: 0, size: EBDA_START, kind: E820Kind::Ram });
            map.push(E820Entry {
                addr: ACPI_TABLES_START,
                size: HIGH_MEMORY_START - ACPI_TABLES_START,
                kind: E820Kind::Reserved,
            });
            map.push(E820Entry {
                addr: HIGH_MEMORY_START,
                size: end - HIGH_MEMORY_START,
                kind: E820Kind::Ram,
            });
        } else {
            map.push(E820Entry { addr: start, size: end - start, kind: E820Kind::Ram });
        }
    }
    map
}

/// Highest address + 1 of RAM below the MMIO hole.
pub fn low_ram_end(size: u64) -> u64 {
    size.min(MMIO_HOLE_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_is_one_range() {
        assert_eq!(ram_ranges(512 << 20), vec![(GuestAddress(0), 512 << 20)]);
    }

    #[test]
    fn large_guest_splits_around_hole() {
        let r = ram_ranges(4 << 30);
        assert_eq!(r, vec![(GuestAddress(0), MMIO_HOLE_START as usize), (GuestAddress(MMIO_HOLE_END), (1 << 30) as usize)]);
        let e = e820_map(4 << 30);
        let ram: u64 = e.iter().filter(|x| x.kind == E820Kind::Ram).map(|x| x.size).sum();
        // Everything except the EBDA/VGA/BIOS area below 1 MiB is usable RAM.
        assert_eq!(ram, (4 << 30) - (HIGH_MEMORY_START - EBDA_START));
        assert_eq!(e.last().unwrap().addr, MMIO_HOLE_END);
    }

    #[test]
    fn bad_sizes_rejected() {
        assert!(matches!(create_guest_memory(1 << 20), Err(MemoryError::InvalidSize { .. })));
        assert!(matches!(create_guest_memory((64 << 20) + 1), Err(MemoryError::InvalidSize { .. })));
        assert!(create_guest_memory(64 << 20).is_ok());
    }
}

#[cfg(test)]
mod placement_tests {
    use super::*;
    use vm_memory::GuestMemoryBackend;

    #[test]
    fn guest_ram_is_2mib_aligned_in_the_host() {
        for _ in 0..4 {
            let mem = create_guest_memory(128 << 20).unwrap();
            for region in mem.iter() {
                assert!(crate::memory_placement::is_aligned(region.as_ptr() as usize), "{:p}", region.as_ptr());
            }
        }
    }
}
