//! virtio-blk request path: the input describes guest memory (request headers,
//! data, indirect tables), the descriptor table and the available ring of the
//! request queue, the negotiated features and whether the disk is read-only. The
//! disk's request handler drains the queue synchronously (as its worker does on a
//! notification) against a temporary 32 KiB raw image.
//!
//! Asserts: no panic; no access outside guest memory (guest regions are fenced by
//! guard pages, see `guarded_memory`); the device returns at most as many chains
//! as were made available; the image never changes size; a read-only image
//! never changes at all.
#![no_main]

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use devices::virtio::block::{fuzzing, Block, BlockConfig};
use libfuzzer_sys::fuzz_target;
use tern_fuzz::encoding::decode;
use tern_fuzz::guarded_memory::GuardedMemory;
use tern_fuzz::inputs::BlockInput;
use tern_fuzz::virtqueue::{check_returned, Rings};
use virtio_queue::QueueT;

/// Image size: 64 sectors.
const IMAGE_LEN: u64 = 64 * 512;
const RINGS: Rings = Rings { base: 0 };

/// A disk on its own image, reused by every input of this process.
struct Disk {
    path: PathBuf,
    file: File,
    block: Block,
}

impl Disk {
    fn new(read_only: bool) -> Self {
        let dir = std::env::temp_dir().join(format!("tern-fuzz-blk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(if read_only { "ro.img" } else { "rw.img" });
        std::fs::write(&path, pattern()).expect("image");
        let file = OpenOptions::new().read(true).write(true).open(&path).expect("open image");
        let mut config = BlockConfig::new(&path);
        config.read_only = read_only;
        let block = Block::new(config).expect("disk");
        Self { path, file, block }
    }

    /// Puts the image back to its initial contents.
    fn restore(&self) {
        self.file.set_len(IMAGE_LEN).expect("set_len");
        self.file.write_all_at(&pattern(), 0).expect("rewrite image");
    }

    fn contents(&self) -> Vec<u8> {
        std::fs::read(&self.path).expect("read image")
    }
}

fn pattern() -> Vec<u8> {
    (0..IMAGE_LEN).map(|i| ((i / 512) as u8).wrapping_mul(7) ^ (i as u8)).collect()
}

thread_local! {
    static DISKS: RefCell<Option<(Disk, Disk)>> = const { RefCell::new(None) };
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = decode::<BlockInput>(data) else { return };
    let memory = GuardedMemory::fresh();
    let mem = memory.mem();
    DISKS.with(|disks| {
        let mut disks = disks.borrow_mut();
        let (rw, ro) = disks.get_or_insert_with(|| (Disk::new(false), Disk::new(true)));
        let disk = if input.read_only { ro } else { rw };
        disk.restore();

        input.queue.write(mem, RINGS);
        let features = input.acked_features();
        let mut queue = input.queue.queue(mem, RINGS, features & tern_fuzz::inputs::EVENT_IDX != 0);
        let budget = if input.budget == 0 { usize::MAX } else { usize::from(input.budget) };
        for _ in 0..=input.passes % 4 {
            match fuzzing::process_queue(&disk.block, &mut queue, mem, features, budget) {
                Ok(pass) if pass.pending => continue,
                Ok(_) | Err(_) => break,
            }
        }

        check_returned(queue.next_used(), Some(input.queue.published()), input.queue.size());
        let after = disk.contents();
        assert_eq!(after.len() as u64, IMAGE_LEN, "the image changed size");
        if input.read_only {
            assert!(after == pattern(), "a read-only image changed");
        }
    });
});
