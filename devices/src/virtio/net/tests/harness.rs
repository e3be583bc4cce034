//! Test scaffolding: guest memory, a driver-side view of each virtqueue (on
//! virtio-queue's mock descriptor table), frames, and a bench that runs handler passes
//! synchronously against a socket-pair backend.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::DescriptorTable;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use super::backend::{socket_pair, Peer, SocketBackend};
use crate::virtio::net::handler::{HandlerContext, NetHandler, NetQueues};
use crate::virtio::net::link::LinkStatus;
use crate::virtio::net::stats::Counters;
use crate::virtio::net::HEADER_LEN;
use crate::virtio::{GuestMemoryMmap, VirtioInterrupt};

/// Queue size used by the tests (the device maximum).
pub const QUEUE_SIZE: u16 = 256;
pub use crate::virtio::test_memory::{guest_memory, MEM_END, REGION_SIZE};
/// Where the three rings live.
pub const RX_RING: u64 = 0x0;
pub const TX_RING: u64 = 0x4000;
pub const CTRL_RING: u64 = 0x8000;
/// Indirect descriptor tables.
pub const INDIRECT: u64 = 0xc000;
/// Receive buffers.
pub const RX_BUF: u64 = 0x1_0000;
/// Transmit buffers.
pub const TX_BUF: u64 = 0x4_0000;
/// Control command buffers.
pub const CTRL_BUF: u64 = 0xe000;

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

/// Ring layout inside a queue's area: the descriptor table at the start, then the
/// available ring, then the used ring. (`MockSplitQueue` 0.18 places its used ring
/// only `size` bytes after the available ring, so with more than ~128 entries its
/// rings overlap; the harness uses the mock's descriptor table and lays out the
/// rings itself.)
const AVAIL_OFFSET: u64 = 0x1000;
const USED_OFFSET: u64 = 0x1400;

/// The driver side of one virtqueue.
pub struct Driver<'a> {
    table: DescriptorTable<'a, GuestMemoryMmap>,
    mem: &'a GuestMemoryMmap,
    base: u64,
    next_desc: u16,
    avail_idx: u16,
}

impl<'a> Driver<'a> {
    /// A queue whose rings start at `base`, all fields zeroed.
    pub fn new(mem: &'a GuestMemoryMmap, base: u64) -> Self {
        fill_mem(mem, base, &[0u8; 0x2000]);
        Self::existing(mem, base)
    }

    /// A view of rings already at `base` (what a migration destination finds in
    /// the memory it received); only for inspecting them.
    pub fn existing(mem: &'a GuestMemoryMmap, base: u64) -> Self {
        let table = DescriptorTable::new(mem, GuestAddress(base), QUEUE_SIZE);
        let avail_idx = mem.read_obj(GuestAddress(base + AVAIL_OFFSET + 2)).expect("avail idx");
        Self { table, mem, base, next_desc: 0, avail_idx }
    }

    fn avail(&self) -> u64 {
        self.base + AVAIL_OFFSET
    }

    fn used_ring(&self) -> u64 {
        self.base + USED_OFFSET
    }

    /// The device-side queue, ready.
    pub fn queue(&self) -> Queue {
        let mut queue = Queue::new(QUEUE_SIZE).expect("queue");
        let split = |a: u64| (Some(a as u32), Some((a >> 32) as u32));
        let (lo, hi) = split(self.base);
        queue.set_desc_table_address(lo, hi);
        let (lo, hi) = split(self.avail());
        queue.set_avail_ring_address(lo, hi);
        let (lo, hi) = split(self.used_ring());
        queue.set_used_ring_address(lo, hi);
        queue.set_size(QUEUE_SIZE);
        queue.set_ready(true);
        assert!(queue.is_valid(self.mem));
        queue
    }

    /// Stores a raw descriptor at `index` of the descriptor table.
    pub fn store(&self, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let desc = RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next));
        self.table.store(index, desc).expect("store descriptor");
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
            let next = if last { 0 } else { (index + 1) % QUEUE_SIZE };
            self.store(index, d.addr, d.len, flags, next);
        }
        self.publish(head);
        head
    }

    /// Writes `descs` as an indirect table at `table` and makes available a chain
    /// of one descriptor pointing at it. Returns the head index.
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

    /// A free descriptor slot (for hand-made chains).
    pub fn slot(&mut self) -> u16 {
        let index = self.next_desc;
        self.next_desc = (self.next_desc + 1) % QUEUE_SIZE;
        index
    }

    /// Puts `head` in the available ring and bumps the index.
    pub fn publish(&mut self, head: u16) {
        let entry = self.avail() + 4 + 2 * u64::from(self.avail_idx % QUEUE_SIZE);
        self.mem.write_obj(head, GuestAddress(entry)).expect("avail entry");
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mem.write_obj(self.avail_idx, GuestAddress(self.avail() + 2)).expect("avail idx");
    }

    /// Sets the available index to anything (to corrupt the ring).
    pub fn set_avail_idx(&mut self, idx: u16) {
        self.avail_idx = idx;
        self.mem.write_obj(idx, GuestAddress(self.avail() + 2)).expect("avail idx");
    }

    /// The used ring index.
    pub fn used_idx(&self) -> u16 {
        self.mem.read_obj(GuestAddress(self.used_ring() + 2)).expect("used idx")
    }

    /// Used ring entry `i`: (descriptor id, length).
    pub fn used(&self, i: u16) -> (u32, u32) {
        let entry = self.used_ring() + 4 + 8 * u64::from(i % QUEUE_SIZE);
        let id = self.mem.read_obj(GuestAddress(entry)).expect("used id");
        let len = self.mem.read_obj(GuestAddress(entry + 4)).expect("used len");
        (id, len)
    }

    /// Writes `used_event` (the driver's interrupt threshold with EVENT_IDX).
    pub fn set_used_event(&self, value: u16) {
        let addr = self.avail() + 4 + 2 * u64::from(QUEUE_SIZE);
        self.mem.write_obj(value, GuestAddress(addr)).expect("used_event");
    }

    /// Reads `avail_event` (the device's notification threshold with EVENT_IDX).
    pub fn avail_event(&self) -> u16 {
        let addr = self.used_ring() + 4 + 8 * u64::from(QUEUE_SIZE);
        self.mem.read_obj(GuestAddress(addr)).expect("avail_event")
    }

    /// The used ring flags (VRING_USED_F_NO_NOTIFY without EVENT_IDX).
    pub fn used_flags(&self) -> u16 {
        self.mem.read_obj(GuestAddress(self.used_ring())).expect("used flags")
    }
}

/// A vnet header with every field set to something recognisable (the offload
/// fields must pass through unchanged); `num_buffers` is 0.
pub fn offload_header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0] = 1; // flags: NEEDS_CSUM
    h[1] = 1; // gso_type: TCPV4
    h[2..4].copy_from_slice(&54u16.to_le_bytes()); // hdr_len
    h[4..6].copy_from_slice(&1448u16.to_le_bytes()); // gso_size
    h[6..8].copy_from_slice(&34u16.to_le_bytes()); // csum_start
    h[8..10].copy_from_slice(&16u16.to_le_bytes()); // csum_offset
    h
}

/// A frame of `len` bytes in total: an offload header and then a pattern tagged
/// with `tag`.
pub fn frame(len: usize, tag: u8) -> Vec<u8> {
    let mut f = offload_header().to_vec();
    f.extend((HEADER_LEN..len).map(|i| (i as u8).wrapping_mul(31) ^ tag));
    f.truncate(len);
    f
}

/// `num_buffers` of the header at `addr`.
pub fn num_buffers_at(mem: &GuestMemoryMmap, addr: u64) -> u16 {
    mem.read_obj(GuestAddress(addr + 10)).expect("num_buffers")
}

pub fn read_mem(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    mem.read_slice(&mut buf, GuestAddress(addr)).expect("read guest memory");
    buf
}

pub fn fill_mem(mem: &GuestMemoryMmap, addr: u64, data: &[u8]) {
    mem.write_slice(data, GuestAddress(addr)).expect("fill guest memory");
}

/// Counts interrupts of each kind.
#[derive(Default)]
pub struct CountingInterrupt {
    pub queues: [AtomicUsize; 3],
    pub config: AtomicUsize,
    pub needs_reset: AtomicUsize,
}

impl CountingInterrupt {
    pub fn queue(&self, q: u16) -> usize {
        self.queues[usize::from(q)].load(Ordering::SeqCst)
    }
    pub fn config(&self) -> usize {
        self.config.load(Ordering::SeqCst)
    }
    pub fn needs_reset(&self) -> usize {
        self.needs_reset.load(Ordering::SeqCst)
    }
}

impl VirtioInterrupt for CountingInterrupt {
    fn signal_queue(&self, queue: u16) -> io::Result<()> {
        let slot = self.queues.get(usize::from(queue)).expect("queue index below 3");
        slot.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn signal_config(&self) -> io::Result<()> {
        self.config.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn set_needs_reset(&self) {
        self.needs_reset.fetch_add(1, Ordering::SeqCst);
    }
}

/// Polls `done` until it holds (10 s at most).
pub fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Options of a [`Bench`].
#[derive(Clone, Copy, Debug)]
pub struct BenchOptions {
    /// The driver negotiated MRG_RXBUF.
    pub mergeable: bool,
    /// The driver negotiated EVENT_IDX.
    pub event_idx: bool,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self { mergeable: true, event_idx: false }
    }
}

/// Three driver queues, a handler over them, and the network end of its backend;
/// passes run synchronously on the test thread.
pub struct Bench<'a> {
    pub mem: &'a GuestMemoryMmap,
    pub rx: Driver<'a>,
    pub tx: Driver<'a>,
    pub ctrl: Driver<'a>,
    pub handler: NetHandler,
    pub queues: Arc<NetQueues>,
    pub backend: Arc<SocketBackend>,
    pub peer: Peer,
    pub interrupt: Arc<CountingInterrupt>,
    pub link: Arc<LinkStatus>,
    pub counters: Arc<Counters>,
}

impl<'a> Bench<'a> {
    pub fn new(mem: &'a GuestMemoryMmap) -> Self {
        Self::with_options(mem, BenchOptions::default())
    }

    pub fn with_options(mem: &'a GuestMemoryMmap, options: BenchOptions) -> Self {
        let rx = Driver::new(mem, RX_RING);
        let tx = Driver::new(mem, TX_RING);
        let ctrl = Driver::new(mem, CTRL_RING);
        let mut queues = [rx.queue(), tx.queue(), ctrl.queue()];
        for q in &mut queues {
            q.set_event_idx(options.event_idx);
        }
        let [rxq, txq, ctrlq] = queues;
        let queues = Arc::new(NetQueues::new(rxq, txq, Some(ctrlq)));
        let (backend, peer) = socket_pair("bench");
        let interrupt = Arc::new(CountingInterrupt::default());
        let link = Arc::new(LinkStatus::new());
        let counters = Arc::new(Counters::default());
        let handler = NetHandler::new(HandlerContext {
            mem: mem.clone(),
            queues: queues.clone(),
            backend: backend.clone(),
            interrupt: interrupt.clone(),
            link: link.clone(),
            counters: counters.clone(),
            mergeable: options.mergeable,
        });
        Self { mem, rx, tx, ctrl, handler, queues, backend, peer, interrupt, link, counters }
    }

    /// Counter snapshot.
    pub fn stats(&self) -> crate::virtio::net::NetStats {
        self.counters.snapshot()
    }

    /// Puts `data` at `addr` and queues it on tx as one device-readable buffer.
    pub fn queue_tx(&mut self, addr: u64, data: &[u8]) -> u16 {
        fill_mem(self.mem, addr, data);
        self.tx.add(&[r(addr, data.len() as u32)])
    }

    /// The rx queue's reported position (held chains given back).
    pub fn rx_next_avail(&self) -> u16 {
        self.queues.states()[0].next_avail
    }
}
