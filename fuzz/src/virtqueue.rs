//! The driver side of a split virtqueue, as a fuzz input describes it: guest
//! memory contents, indirect descriptor tables, the descriptor table and the
//! available ring, written into guest memory before the device looks.
//!
//! Addresses are an anchor (a region edge, the hole, the top of the address space)
//! plus a signed offset, so the fuzzer reaches the interesting edges without
//! guessing 64-bit numbers.

use arbitrary::Arbitrary;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use crate::encoding::{encode_variant, Blob, Encode, List};
use crate::guarded_memory::{GuestMemoryMmap, MEM_END, REGION_SIZE};

/// Largest queue size.
pub const MAX_QUEUE_SIZE: u16 = 256;

/// Guest addresses a [`FuzzAddr`] is relative to.
pub const ANCHORS: [u64; 10] = [
    0,
    0x8000,
    REGION_SIZE,
    REGION_SIZE + 0x8000,
    2 * REGION_SIZE,
    3 * REGION_SIZE,
    3 * REGION_SIZE + 0x8000,
    MEM_END,
    0,
    1 << 32,
];

/// An address: `ANCHORS[anchor % len] + offset` (anchor 8 counts down from the
/// top of the address space).
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub struct FuzzAddr {
    pub anchor: u8,
    pub offset: i16,
}

impl FuzzAddr {
    /// `anchor + offset`.
    pub fn at(anchor: u8, offset: i16) -> Self {
        Self { anchor, offset }
    }

    /// An address near the start of region A (anchor 0).
    pub fn low(offset: u16) -> Self {
        Self { anchor: 0, offset: offset as i16 }
    }

    /// The guest address.
    pub fn get(self) -> u64 {
        let i = usize::from(self.anchor) % ANCHORS.len();
        let offset = i64::from(self.offset) as u64;
        if i == 8 {
            u64::MAX.wrapping_add(offset)
        } else {
            ANCHORS[i].wrapping_add(offset)
        }
    }
}

impl Encode for FuzzAddr {
    fn encode(&self, out: &mut Vec<u8>) {
        self.anchor.encode(out);
        self.offset.encode(out);
    }
}

/// A descriptor length.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FuzzLen {
    Bytes(u8),
    /// That many 512-byte sectors.
    Sectors(u8),
    Raw(u32),
}

impl FuzzLen {
    pub fn get(self) -> u32 {
        match self {
            Self::Bytes(n) => u32::from(n),
            Self::Sectors(n) => u32::from(n) * 512,
            Self::Raw(n) => n,
        }
    }
}

impl Encode for FuzzLen {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Bytes(n) => {
                encode_variant(0, 3, out);
                n.encode(out);
            }
            Self::Sectors(n) => {
                encode_variant(1, 3, out);
                n.encode(out);
            }
            Self::Raw(n) => {
                encode_variant(2, 3, out);
                n.encode(out);
            }
        }
    }
}

/// Descriptor flags (the `VRING_DESC_F_*` bits).
pub const NEXT: u8 = 1;
pub const WRITE: u8 = 2;
pub const INDIRECT: u8 = 4;

/// One descriptor.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub struct FuzzDesc {
    pub addr: FuzzAddr,
    pub len: FuzzLen,
    pub flags: u8,
    pub next: u8,
}

impl FuzzDesc {
    /// The 16 bytes of a split-ring descriptor.
    pub fn raw(&self) -> [u8; 16] {
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&self.addr.get().to_le_bytes());
        raw[8..12].copy_from_slice(&self.len.get().to_le_bytes());
        raw[12..14].copy_from_slice(&u16::from(self.flags).to_le_bytes());
        raw[14..].copy_from_slice(&u16::from(self.next).to_le_bytes());
        raw
    }
}

impl Encode for FuzzDesc {
    fn encode(&self, out: &mut Vec<u8>) {
        self.addr.encode(out);
        self.len.encode(out);
        self.flags.encode(out);
        self.next.encode(out);
    }
}

/// An indirect descriptor table written at `addr`.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub struct IndirectTable {
    pub addr: FuzzAddr,
    pub descs: List<FuzzDesc>,
}

impl Encode for IndirectTable {
    fn encode(&self, out: &mut Vec<u8>) {
        self.addr.encode(out);
        self.descs.encode(out);
    }
}

/// Bytes written into guest memory (request headers, frames, anything).
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub struct MemWrite {
    pub addr: FuzzAddr,
    pub bytes: Blob,
}

impl Encode for MemWrite {
    fn encode(&self, out: &mut Vec<u8>) {
        self.addr.encode(out);
        self.bytes.encode(out);
    }
}

/// Where a queue's rings live: descriptor table at `base`, available ring 4 KiB
/// after it, used ring 8 KiB after it.
#[derive(Clone, Copy, Debug)]
pub struct Rings {
    pub base: u64,
}

impl Rings {
    pub fn desc(self) -> u64 {
        self.base
    }
    pub fn avail(self) -> u64 {
        self.base + 0x1000
    }
    pub fn used(self) -> u64 {
        self.base + 0x2000
    }
}

/// Everything the driver put in memory for one queue.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub struct QueueImage {
    /// Queue size `1 << (size_log2 % 9)`.
    pub size_log2: u8,
    /// Descriptor table entries from index 0.
    pub descs: List<FuzzDesc>,
    /// Heads made available, in order.
    pub avail: List<u8>,
    /// Overrides the available index (a corrupt or racing driver).
    pub avail_idx: Option<u16>,
    /// `used_event` (interrupt threshold with EVENT_IDX).
    pub used_event: u16,
    pub indirect: List<IndirectTable>,
    pub writes: List<MemWrite>,
}

impl Encode for QueueImage {
    fn encode(&self, out: &mut Vec<u8>) {
        self.size_log2.encode(out);
        self.descs.encode(out);
        self.avail.encode(out);
        self.avail_idx.encode(out);
        self.used_event.encode(out);
        self.indirect.encode(out);
        self.writes.encode(out);
    }
}

impl QueueImage {
    /// A queue of the largest size with `descs` at indices 0.. and `heads` available.
    pub fn new(descs: Vec<FuzzDesc>, heads: Vec<u8>, writes: Vec<MemWrite>) -> Self {
        Self {
            size_log2: 8,
            descs: List(descs),
            avail: List(heads),
            avail_idx: None,
            used_event: 0,
            indirect: List::default(),
            writes: List(writes),
        }
    }

    /// The queue size.
    pub fn size(&self) -> u16 {
        1 << (self.size_log2 % 9)
    }

    /// The available index the driver published.
    pub fn published(&self) -> u16 {
        self.avail_idx.unwrap_or(self.avail.0.len() as u16)
    }

    /// Writes the image into `mem` (memory writes first, then indirect tables,
    /// then the rings). Writes outside guest memory are skipped.
    pub fn write(&self, mem: &GuestMemoryMmap, rings: Rings) {
        for w in &self.writes.0 {
            let _ = mem.write_slice(&w.bytes.0, GuestAddress(w.addr.get()));
        }
        for table in &self.indirect.0 {
            for (i, d) in table.descs.0.iter().enumerate() {
                let at = table.addr.get().wrapping_add(16 * i as u64);
                let _ = mem.write_slice(&d.raw(), GuestAddress(at));
            }
        }
        let size = self.size();
        for (i, d) in self.descs.0.iter().take(usize::from(size)).enumerate() {
            let _ = mem.write_slice(&d.raw(), GuestAddress(rings.desc() + 16 * i as u64));
        }
        for (i, head) in self.avail.0.iter().enumerate() {
            let slot = rings.avail() + 4 + 2 * (i as u64 % u64::from(size));
            let _ = mem.write_obj(u16::from(*head), GuestAddress(slot));
        }
        let _ = mem.write_obj(0u16, GuestAddress(rings.avail()));
        let _ = mem.write_obj(self.published(), GuestAddress(rings.avail() + 2));
        let _ = mem.write_obj(self.used_event, GuestAddress(rings.avail() + 4 + 2 * u64::from(size)));
        // The used ring's header starts at zero, whatever the writes left there.
        let _ = mem.write_obj(0u32, GuestAddress(rings.used()));
    }

    /// The device's view of the queue, ready (as the transport builds it).
    pub fn queue(&self, mem: &GuestMemoryMmap, rings: Rings, event_idx: bool) -> Queue {
        let mut queue = Queue::new(MAX_QUEUE_SIZE).expect("queue");
        let split = |a: u64| (Some(a as u32), Some((a >> 32) as u32));
        let (lo, hi) = split(rings.desc());
        queue.set_desc_table_address(lo, hi);
        let (lo, hi) = split(rings.avail());
        queue.set_avail_ring_address(lo, hi);
        let (lo, hi) = split(rings.used());
        queue.set_used_ring_address(lo, hi);
        queue.set_size(self.size());
        queue.set_event_idx(event_idx);
        queue.set_ready(true);
        assert!(queue.is_valid(mem), "rings at {:#x} are valid", rings.base);
        queue
    }
}

/// The used ring's index.
pub fn used_idx(mem: &GuestMemoryMmap, rings: Rings) -> u16 {
    mem.read_obj(GuestAddress(rings.used() + 2)).expect("used idx")
}

/// Used ring entry `i`: (descriptor id, length).
pub fn used_elem(mem: &GuestMemoryMmap, rings: Rings, size: u16, i: u16) -> (u32, u32) {
    let at = rings.used() + 4 + 8 * u64::from(i % size);
    let id = mem.read_obj(GuestAddress(at)).expect("used id");
    let len = mem.read_obj(GuestAddress(at + 4)).expect("used len");
    (id, len)
}

/// The available ring's index as it stands in guest memory.
pub fn avail_idx(mem: &GuestMemoryMmap, rings: Rings) -> u16 {
    mem.read_obj(GuestAddress(rings.avail() + 2)).expect("avail idx")
}

/// Checks how many chains the device returned (its own `next_used`, which guest
/// buffers cannot overwrite, unlike the used ring itself: a guest may legally point
/// a receive buffer at its own rings): never more than the queue's size, and no more
/// than `available` when the caller knows what the device could have seen (the
/// available index in the driver's final memory, when no device write into a guest
/// buffer can have changed it since).
pub fn check_returned(next_used: u16, available: Option<u16>, size: u16) {
    assert!(next_used <= size, "device returned {next_used} chains from a queue of size {size}");
    if let Some(available) = available {
        assert!(next_used <= available, "device returned {next_used} chains, driver made {available} available (queue size {size})");
    }
}

/// The used ring entries `0..count`: (descriptor id, length). Only meaningful when
/// the device wrote no guest buffer over the ring.
pub fn used_entries(mem: &GuestMemoryMmap, rings: Rings, image: &QueueImage, count: u16) -> Vec<(u32, u32)> {
    (0..count).map(|k| used_elem(mem, rings, image.size(), k)).collect()
}
