//! The input structures of the virtio targets (the migration target takes raw
//! stream bytes), shared with the seed generator.

use arbitrary::Arbitrary;

use crate::encoding::{encode_variant, Blob, Encode, List};
use crate::virtqueue::QueueImage;

/// VIRTIO_F_RING_INDIRECT_DESC.
pub const INDIRECT_DESC: u64 = 1 << 28;
/// VIRTIO_F_RING_EVENT_IDX.
pub const EVENT_IDX: u64 = 1 << 29;
/// VIRTIO_F_VERSION_1.
pub const VERSION_1: u64 = 1 << 32;

/// One run of the virtio-blk request path.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub struct BlockInput {
    pub read_only: bool,
    /// Bit 0 EVENT_IDX, 1 DISCARD, 2 WRITE_ZEROES, 3 INDIRECT_DESC.
    pub features: u8,
    /// Requests per pass (0: unlimited).
    pub budget: u8,
    /// Passes over the queue after the first (mod 4), while requests are pending.
    pub passes: u8,
    pub queue: QueueImage,
}

impl BlockInput {
    /// The features the driver acknowledges.
    pub fn acked_features(&self) -> u64 {
        let mut acked = VERSION_1;
        for (bit, feature) in [(0, EVENT_IDX), (1, 1 << 13), (2, 1 << 14), (3, INDIRECT_DESC)] {
            if self.features & (1 << bit) != 0 {
                acked |= feature;
            }
        }
        acked
    }
}

impl Encode for BlockInput {
    fn encode(&self, out: &mut Vec<u8>) {
        self.read_only.encode(out);
        self.features.encode(out);
        self.budget.encode(out);
        self.passes.encode(out);
        self.queue.encode(out);
    }
}

/// A frame the network sends to the NIC: `head`, then `fill` bytes up to `len`
/// (`len` is taken modulo 70 000, so frames larger than the device's limit occur).
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub struct FrameSpec {
    pub len: u32,
    pub fill: u8,
    pub head: Blob,
}

impl FrameSpec {
    /// The frame's bytes (vnet header included).
    pub fn bytes(&self) -> Vec<u8> {
        let len = (self.len % 70_000) as usize;
        let mut frame = self.head.0.clone();
        frame.resize(len, self.fill);
        frame.truncate(len);
        frame
    }
}

impl Encode for FrameSpec {
    fn encode(&self, out: &mut Vec<u8>) {
        self.len.encode(out);
        self.fill.encode(out);
        self.head.encode(out);
    }
}

/// Errnos a backend read or write can be made to fail with.
pub const ERRNOS: [i32; 8] = [
    libc::EAGAIN,
    libc::EINTR,
    libc::EIO,
    libc::EBADFD,
    libc::EPIPE,
    libc::ENOBUFS,
    libc::EINVAL,
    libc::ECONNRESET,
];

/// One step of a virtio-net run.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum NetOp {
    /// A worker event (index into the device's event list, modulo its length).
    Event(u8),
    /// The next backend write fails with `ERRNOS[i % 8]`.
    FailNextWrite(u8),
    /// The next backend read fails with `ERRNOS[i % 8]`.
    FailNextRead(u8),
    /// The backend's send buffer becomes tiny (writes would block).
    ShrinkSendBuffer,
    /// The network sends a frame to the NIC.
    Send(FrameSpec),
    /// The network reads every frame the NIC sent.
    Drain,
    /// The network end closes.
    ClosePeer,
}

impl Encode for NetOp {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Event(e) => {
                encode_variant(0, 7, out);
                e.encode(out);
            }
            Self::FailNextWrite(e) => {
                encode_variant(1, 7, out);
                e.encode(out);
            }
            Self::FailNextRead(e) => {
                encode_variant(2, 7, out);
                e.encode(out);
            }
            Self::ShrinkSendBuffer => encode_variant(3, 7, out),
            Self::Send(f) => {
                encode_variant(4, 7, out);
                f.encode(out);
            }
            Self::Drain => encode_variant(5, 7, out),
            Self::ClosePeer => encode_variant(6, 7, out),
        }
    }
}

/// Worker event indices of [`NetOp::Event`] (the order of `devices`' `fuzzing::Event`
/// list in the targets).
pub mod event {
    pub const RX_KICK: u8 = 0;
    pub const TX_KICK: u8 = 1;
    pub const CTRL_KICK: u8 = 2;
    pub const BACKEND_READABLE: u8 = 3;
    pub const BACKEND_WRITABLE: u8 = 4;
    pub const BACKEND_HUNG_UP: u8 = 5;
    pub const PENDING: u8 = 6;
    pub const POLL_TX: u8 = 7;
    pub const TX_TIMER: u8 = 8;
    pub const COUNT: u8 = 9;
}

/// One run of the virtio-net data path.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub struct NetInput {
    /// Bit 0 EVENT_IDX, bit 1 MRG_RXBUF.
    pub features: u8,
    /// The queue under test (transmit for `virtio_net_tx`, receive for `virtio_net_rx`).
    pub queue: QueueImage,
    /// The control queue, when negotiated.
    pub ctrl: Option<QueueImage>,
    pub ops: List<NetOp>,
}

impl NetInput {
    pub fn event_idx(&self) -> bool {
        self.features & 1 != 0
    }
    pub fn mergeable(&self) -> bool {
        self.features & 2 != 0
    }
}

impl Encode for NetInput {
    fn encode(&self, out: &mut Vec<u8>) {
        self.features.encode(out);
        self.queue.encode(out);
        self.ctrl.encode(out);
        self.ops.encode(out);
    }
}

/// One register access of the virtio-pci target.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub struct PciOp {
    /// `kind % 3`: 0 the 0xCF8/0xCFC ports, 1 BAR 0, 2 select a config register
    /// (writes 0xCF8 with slot `offset >> 8`, register `offset & 0xfc`).
    pub kind: u8,
    /// For BAR 0: which area (`region % 7`: common, ISR, device, notify, MSI-X
    /// table, PBA, anywhere); the offset is taken within it.
    pub region: u8,
    pub offset: u16,
    /// `[1, 2, 4, 8][size % 4]` bytes.
    pub size: u8,
    pub write: bool,
    pub value: u64,
}

impl Encode for PciOp {
    fn encode(&self, out: &mut Vec<u8>) {
        self.kind.encode(out);
        self.region.encode(out);
        self.offset.encode(out);
        self.size.encode(out);
        self.write.encode(out);
        self.value.encode(out);
    }
}

/// A sequence of register accesses.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub struct PciInput {
    pub ops: List<PciOp>,
}

impl Encode for PciInput {
    fn encode(&self, out: &mut Vec<u8>) {
        self.ops.encode(out);
    }
}
