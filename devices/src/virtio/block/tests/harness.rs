//! Test scaffolding: guest memory, temporary images, and a driver-side view of the
//! request queue built on virtio-queue's `MockSplitQueue`.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Address, Bytes, GuestAddress};

use crate::virtio::block::{Block, BlockConfig, SECTOR_SIZE};
use crate::virtio::GuestMemoryMmap;

/// Queue size used by the tests (the device maximum).
pub const QUEUE_SIZE: u16 = 256;
pub use crate::virtio::test_memory::{guest_memory, MEM_END, REGION_SIZE};
/// Where tests put request headers, status bytes and data.
pub const HDR: u64 = 0x8000;
pub const STATUS: u64 = 0x9000;
pub const DATA: u64 = 0x2_0000;
/// Indirect descriptor tables.
pub const INDIRECT: u64 = 0xc000;
/// Sectors in the default test image.
pub const SECTORS: u64 = 64;

/// Poison written to the status byte before a request, to see whether it changed.
pub const STATUS_POISON: u8 = 0xee;

/// The byte the patterned image holds at `offset`.
pub fn pattern_byte(offset: u64) -> u8 {
    ((offset / SECTOR_SIZE) as u8).wrapping_mul(7) ^ (offset as u8)
}

/// A temporary image file, removed on drop.
pub struct TempImage {
    path: PathBuf,
}

impl TempImage {
    /// An image of `len` bytes filled with [`pattern_byte`].
    pub fn patterned(tag: &str, len: u64) -> Self {
        let image = Self::empty(tag);
        let data: Vec<u8> = (0..len).map(pattern_byte).collect();
        fs::write(&image.path, data).expect("write image");
        image
    }

    /// A path for an image that does not exist yet.
    pub fn empty(tag: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir()
            .join(format!("tern-blk-test-{}-{tag}-{n}.img", std::process::id()));
        let _ = fs::remove_file(&path);
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn read_at(&self, offset: u64, len: usize) -> Vec<u8> {
        let mut file = File::open(&self.path).expect("open image");
        file.seek(SeekFrom::Start(offset)).expect("seek");
        let mut buf = vec![0u8; len];
        file.read_exact(&mut buf).expect("read image");
        buf
    }

    pub fn len(&self) -> u64 {
        fs::metadata(&self.path).expect("metadata").len()
    }
}

impl Drop for TempImage {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
        let _ = fs::remove_dir(&self.path);
    }
}

/// One descriptor as the driver describes it.
#[derive(Clone, Copy, Debug)]
pub struct Desc {
    pub addr: u64,
    pub len: u32,
    pub writable: bool,
}

/// A device-readable buffer.
pub fn r(addr: u64, len: u32) -> Desc {
    Desc { addr, len, writable: false }
}

/// A device-writable buffer.
pub fn w(addr: u64, len: u32) -> Desc {
    Desc { addr, len, writable: true }
}

/// The driver side of the request queue.
pub struct Driver<'a> {
    mock: MockSplitQueue<'a, GuestMemoryMmap>,
    mem: &'a GuestMemoryMmap,
    next_desc: u16,
    avail_idx: u16,
}

impl<'a> Driver<'a> {
    pub fn new(mem: &'a GuestMemoryMmap) -> Self {
        Self { mock: MockSplitQueue::new(mem, QUEUE_SIZE), mem, next_desc: 0, avail_idx: 0 }
    }

    /// The device-side queue, ready.
    pub fn queue(&self) -> Queue {
        self.mock.create_queue().expect("queue")
    }

    /// Stores a raw descriptor at `index` of the descriptor table.
    pub fn store(&self, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let desc = RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next));
        self.mock.desc_table().store(index, desc).expect("store descriptor");
    }

    /// Writes `descs` as a chain into free table slots and makes it available.
    /// Returns the head index.
    pub fn add(&mut self, descs: &[Desc]) -> u16 {
        let head = self.next_desc;
        for (i, d) in descs.iter().enumerate() {
            let index = self.slot();
            let last = i + 1 == descs.len();
            let mut flags = if d.writable { VRING_DESC_F_WRITE as u16 } else { 0 };
            if !last {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            let next = (index + 1) % QUEUE_SIZE;
            self.store(index, d.addr, d.len, flags, if last { 0 } else { next });
        }
        self.publish(head);
        head
    }

    /// Writes `descs` as an indirect table at `table` and makes available a chain of
    /// one descriptor pointing at it. Returns the head index.
    pub fn add_indirect(&mut self, table: u64, descs: &[Desc]) -> u16 {
        for (i, d) in descs.iter().enumerate() {
            let last = i + 1 == descs.len();
            let mut flags = if d.writable { VRING_DESC_F_WRITE as u16 } else { 0 };
            if !last {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            let next = if last { 0 } else { i as u16 + 1 };
            let raw = RawDescriptor::from(SplitDescriptor::new(d.addr, d.len, flags, next));
            self.mem.write_obj(raw, GuestAddress(table + 16 * i as u64)).expect("indirect");
        }
        let head = self.slot();
        self.store(head, table, 16 * descs.len() as u32, VRING_DESC_F_INDIRECT as u16, 0);
        self.publish(head);
        head
    }

    /// Overwrites entry `i` of the indirect table at `table`.
    pub fn store_indirect(&self, table: u64, i: u64, addr: u64, len: u32, flags: u16, next: u16) {
        let raw = RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next));
        self.mem.write_obj(raw, GuestAddress(table + 16 * i)).expect("indirect");
    }

    /// Puts `head` in the available ring and bumps the index.
    pub fn publish(&mut self, head: u16) {
        let ring = self.mock.avail().ring();
        ring.ref_at(usize::from(self.avail_idx % QUEUE_SIZE)).expect("avail slot").store(head);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mock.avail().idx().store(self.avail_idx);
    }

    /// Sets the available index to anything (to corrupt the ring).
    pub fn set_avail_idx(&mut self, idx: u16) {
        self.avail_idx = idx;
        self.mock.avail().idx().store(idx);
    }

    /// The used ring index.
    pub fn used_idx(&self) -> u16 {
        self.mock.used().idx().load()
    }

    /// Used ring entry `i`: (descriptor id, length).
    pub fn used(&self, i: u16) -> (u32, u32) {
        let elem = self.mock.used().ring().ref_at(usize::from(i % QUEUE_SIZE)).expect("used");
        let elem = elem.load();
        (elem.id(), elem.len())
    }

    /// Writes `used_event` (the driver's interrupt threshold with EVENT_IDX).
    pub fn set_used_event(&self, value: u16) {
        let addr = self.mock.avail_addr().unchecked_add(4 + 2 * u64::from(QUEUE_SIZE));
        self.mem.write_obj(value, addr).expect("used_event");
    }

    /// Reads `avail_event` (the device's notification threshold with EVENT_IDX).
    pub fn avail_event(&self) -> u16 {
        let addr = self.mock.used_addr().unchecked_add(4 + 8 * u64::from(QUEUE_SIZE));
        self.mem.read_obj(addr).expect("avail_event")
    }

    fn slot(&mut self) -> u16 {
        let index = self.next_desc;
        self.next_desc = (self.next_desc + 1) % QUEUE_SIZE;
        index
    }
}

/// Writes a request header (type, ioprio 0, sector) at `addr`.
pub fn write_header(mem: &GuestMemoryMmap, addr: u64, request_type: u32, sector: u64) {
    let mut raw = [0u8; 16];
    raw[..4].copy_from_slice(&request_type.to_le_bytes());
    raw[8..].copy_from_slice(&sector.to_le_bytes());
    mem.write_slice(&raw, GuestAddress(addr)).expect("header");
}

/// Writes one discard / write-zeroes range at `addr`.
pub fn write_range(mem: &GuestMemoryMmap, addr: u64, sector: u64, num_sectors: u32, flags: u32) {
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&sector.to_le_bytes());
    raw[8..12].copy_from_slice(&num_sectors.to_le_bytes());
    raw[12..].copy_from_slice(&flags.to_le_bytes());
    mem.write_slice(&raw, GuestAddress(addr)).expect("range");
}

pub fn read_mem(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    mem.read_slice(&mut buf, GuestAddress(addr)).expect("read guest memory");
    buf
}

pub fn fill_mem(mem: &GuestMemoryMmap, addr: u64, data: &[u8]) {
    mem.write_slice(data, GuestAddress(addr)).expect("fill guest memory");
}

pub fn status_at(mem: &GuestMemoryMmap, addr: u64) -> u8 {
    mem.read_obj(GuestAddress(addr)).expect("status")
}

pub fn poison_status(mem: &GuestMemoryMmap, addr: u64) {
    mem.write_obj(STATUS_POISON, GuestAddress(addr)).expect("status");
}

/// A disk on a fresh patterned image, its memory and its queue, processed
/// synchronously (no worker thread).
pub struct Rig {
    pub image: TempImage,
    pub block: Block,
    pub mem: GuestMemoryMmap,
}

impl Rig {
    pub fn new(tag: &str) -> Self {
        Self::with_config(tag, |_| {})
    }

    pub fn read_only(tag: &str) -> Self {
        Self::with_config(tag, |c| c.read_only = true)
    }

    pub fn with_config(tag: &str, edit: impl FnOnce(&mut BlockConfig)) -> Self {
        Self::build(tag, SECTORS, edit)
    }

    pub fn build(tag: &str, sectors: u64, edit: impl FnOnce(&mut BlockConfig)) -> Self {
        let image = TempImage::patterned(tag, sectors * SECTOR_SIZE);
        let mut config = BlockConfig::new(image.path());
        edit(&mut config);
        let block = Block::new(config).expect("open disk");
        Self { image, block, mem: guest_memory() }
    }

    /// Runs every available request on `queue` as a driver that acked all offered
    /// features would see it. Returns whether an interrupt is due.
    pub fn process(&self, queue: &mut Queue) -> bool {
        self.process_with_features(queue, self.offered())
    }

    pub fn process_with_features(&self, queue: &mut Queue, acked: u64) -> bool {
        self.block
            .request_handler(acked)
            .process_queue(queue, &self.mem, usize::MAX)
            .expect("queue usable")
            .interrupt
    }

    pub fn offered(&self) -> u64 {
        use crate::virtio::VirtioDevice;
        self.block.offered_features()
    }
}
