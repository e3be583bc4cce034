//! Guest memory as a file: the RAM regions back to back in guest-address order, each
//! 4 KiB page at its offset. Zero pages are not written, so they stay holes of a
//! sparse file; runs of pages with contents go out in writes of up to 1 MiB. The
//! CRC32 covers the whole file as it reads (holes as zeros). A restore maps the file
//! copy-on-write (`memory::map_guest_memory_file`).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use super::SnapshotError;
use crate::memory::GuestMemoryMmap;
use crate::migrate::guest_pages::{self, PAGE};

/// Pages gathered before one write.
const RUN_PAGES: usize = 256;

/// What writing guest memory did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryWritten {
    pub length: u64,
    pub pages_written: u64,
    pub zero_pages: u64,
}

/// Writes every guest page to `file` (empty, just created); zero pages become holes.
/// `progress` hears the bytes done so far after every write. The vCPUs and device
/// workers must be parked. Only the copy happens here, while the guest is paused: the
/// caller syncs the file and takes its checksum (`files::crc32_of`: holes read as
/// zeros, so it is the CRC32 of guest memory) once the guest runs again.
pub fn write(mem: &GuestMemoryMmap, file: &File, path: &Path, mut progress: impl FnMut(u64)) -> Result<MemoryWritten, SnapshotError> {
    let zero = [0u8; PAGE];
    let mut run = vec![0u8; RUN_PAGES * PAGE];
    let mut out = MemoryWritten::default();
    let mut file_offset = 0u64;
    for region in mem.iter() {
        let base = region.start_addr().0;
        let len = region.len();
        let mut run_start = file_offset;
        let mut run_len = 0usize;
        let flush = |run: &[u8], at: u64| file.write_all_at(run, at).map_err(|e| SnapshotError::io("cannot write guest memory to", path, e));
        let mut page = 0u64;
        while page < len {
            let slot = &mut run[run_len..run_len + PAGE];
            guest_pages::read_page(mem, base + page, slot).map_err(SnapshotError::Memory)?;
            if slot[..] == zero[..] {
                out.zero_pages += 1;
                if run_len > 0 {
                    flush(&run[..run_len], run_start)?;
                    run_len = 0;
                }
                run_start = file_offset + page + PAGE as u64;
            } else {
                out.pages_written += 1;
                run_len += PAGE;
                if run_len == run.len() {
                    flush(&run, run_start)?;
                    run_len = 0;
                    run_start = file_offset + page + PAGE as u64;
                    progress(run_start);
                }
            }
            page += PAGE as u64;
        }
        if run_len > 0 {
            flush(&run[..run_len], run_start)?;
        }
        file_offset += len;
        progress(file_offset);
    }
    // The trailing zero pages are a hole too.
    file.set_len(file_offset).map_err(|e| SnapshotError::io("cannot size the memory file", path, e))?;
    out.length = file_offset;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use vm_memory::{Bytes, GuestAddress};

    #[test]
    fn zero_pages_are_holes_and_the_file_maps_back_copy_on_write() {
        let mem = crate::memory::create_guest_memory(64 << 20).unwrap();
        mem.write_obj(0xdead_beef_u32, GuestAddress(0x1000)).unwrap();
        mem.write_obj(0x1234_u32, GuestAddress((32 << 20) + 8)).unwrap();
        let path = std::env::temp_dir().join(format!("tern-memory-file-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let file = super::super::files::create_new(&path).unwrap();
        let mut last = 0;
        let written = write(&mem, &file, &path, |done| last = done).unwrap();
        assert_eq!((written.pages_written, written.zero_pages), (2, (64 << 20) / 4096 - 2));
        assert_eq!((written.length, last), (64 << 20, 64 << 20));
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 64 << 20);
        assert!(meta.blocks() * 512 < 1 << 20, "the zero pages take no space: {} blocks", meta.blocks());
        let mut expected = crc32fast::Hasher::new();
        let mut page = vec![0u8; 4096];
        for at in (0..64u64 << 20).step_by(4096) {
            mem.read_slice(&mut page, GuestAddress(at)).unwrap();
            expected.update(&page);
        }
        assert_eq!(super::super::files::crc32_of(&file, &path, written.length, |_| {}).unwrap(), expected.finalize(), "the file's CRC32 is guest memory's");

        let ro = File::open(&path).unwrap();
        let restored = crate::memory::map_guest_memory_file(64 << 20, &ro).unwrap();
        assert_eq!(restored.read_obj::<u32>(GuestAddress(0x1000)).unwrap(), 0xdead_beef);
        assert_eq!(restored.read_obj::<u32>(GuestAddress((32 << 20) + 8)).unwrap(), 0x1234);
        // Writes stay in this process: the file is never written.
        restored.write_obj(7u32, GuestAddress(0x1000)).unwrap();
        assert_eq!(restored.read_obj::<u32>(GuestAddress(0x1000)).unwrap(), 7);
        let again = crate::memory::map_guest_memory_file(64 << 20, &ro).unwrap();
        assert_eq!(again.read_obj::<u32>(GuestAddress(0x1000)).unwrap(), 0xdead_beef);
        assert!(crate::memory::map_guest_memory_file(128 << 20, &ro).unwrap_err().to_string().contains("memory file"));
        let _ = std::fs::remove_file(&path);
    }
}
