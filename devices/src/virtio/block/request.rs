//! Turning a guest descriptor chain into a validated block request.
//!
//! Everything here is guest-controlled: nothing is trusted, every length and
//! sector is range-checked with overflow-checked arithmetic, and every failure is a
//! [`RequestError`] that becomes a status byte (or, when the chain has no usable
//! status descriptor, a completion with used length 0).
//!
//! Framing: the device expects the layout Linux uses — one 16-byte device-readable
//! header descriptor, the data descriptors, and a device-writable status descriptor
//! last (its last byte is the status). Combined layouts (header and data sharing a
//! descriptor) are refused rather than guessed at.

use std::ops::Deref;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES,
    VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::DescriptorChain;
use vm_memory::{Bytes, GuestAddress};

use super::{
    MAX_DISCARD_SECTORS, MAX_DISCARD_SEG, MAX_WRITE_ZEROES_SECTORS, MAX_WRITE_ZEROES_SEG,
    SECTOR_SIZE, SEG_MAX,
};
use crate::virtio::GuestMemoryMmap;

/// Size of `struct virtio_blk_outhdr`.
pub(crate) const HEADER_LEN: u32 = 16;
/// Size of one `struct virtio_blk_discard_write_zeroes`.
const RANGE_LEN: u64 = 16;
/// Data descriptors kept per request; anything beyond is only counted (and refused).
const MAX_KEPT_SEGMENTS: usize = SEG_MAX as usize + 1;

/// One guest buffer of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Segment {
    /// Guest physical address (not yet checked against guest memory).
    pub addr: GuestAddress,
    /// Length in bytes.
    pub len: u32,
}

/// A validated request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Request {
    /// Read `segments` total bytes from byte `offset` into the buffers.
    Read { offset: u64, segments: Vec<Segment> },
    /// Write the buffers to byte `offset`.
    Write { offset: u64, segments: Vec<Segment> },
    /// Make completed writes durable.
    Flush,
    /// Return the serial in the buffers.
    GetId { segments: Vec<Segment> },
    /// Drop the backing of a byte range.
    Discard { offset: u64, len: u64 },
    /// Zero a byte range, deallocating it when `unmap`.
    WriteZeroes { offset: u64, len: u64, unmap: bool },
}

/// What the device allows, for validation.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Disk size in 512-byte sectors.
    pub capacity_sectors: u64,
    /// Writes, discards and write-zeroes are refused.
    pub read_only: bool,
    /// VIRTIO_BLK_F_DISCARD was negotiated.
    pub discard: bool,
    /// VIRTIO_BLK_F_WRITE_ZEROES was negotiated.
    pub write_zeroes: bool,
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestError {
    #[error("descriptor chain is broken (loop, index out of range or unreadable descriptor)")]
    BrokenChain,
    #[error("descriptor chain ends without a device-writable, non-empty status descriptor")]
    NoStatus,
    #[error("request has no header descriptor")]
    MissingHeader,
    #[error("request header descriptor is device-writable")]
    HeaderWritable,
    #[error("request header descriptor is {0} bytes, expected {HEADER_LEN}")]
    HeaderLength(u32),
    #[error("guest buffer {addr:#x}+{len:#x} is not in guest memory")]
    BadBuffer { addr: u64, len: u64 },
    #[error("data descriptor has the wrong direction for a {0} request")]
    WrongDirection(&'static str),
    #[error("{0} data descriptors exceed seg_max {SEG_MAX}")]
    TooManySegments(usize),
    #[error("data length {0} is not a multiple of 512")]
    UnalignedLength(u64),
    #[error("sector {sector} plus {len} bytes overflows")]
    Overflow { sector: u64, len: u64 },
    #[error("bytes {start:#x}..{end:#x} are beyond the end of the disk ({size:#x} bytes)")]
    OutOfRange { start: u64, end: u64, size: u64 },
    #[error("disk is read-only")]
    ReadOnly,
    #[error("unsupported request type {0}")]
    Unsupported(u32),
    #[error("discard/write-zeroes payload is {0} bytes, expected one 16-byte range")]
    BadRangePayload(u64),
    #[error("{got} ranges in one request, at most {max}")]
    TooManyRanges { got: u64, max: u32 },
    #[error("range of {got} sectors exceeds the limit of {max}")]
    RangeTooLong { got: u32, max: u32 },
    #[error("unsupported discard/write-zeroes flags {0:#x}")]
    UnsupportedFlags(u32),
    #[error("image I/O failed: {0}")]
    Io(#[from] std::io::Error),
}

impl RequestError {
    /// The status byte reported to the driver.
    pub(crate) fn status(&self) -> u8 {
        // Both constants are small; the casts cannot truncate.
        match self {
            Self::Unsupported(_) | Self::UnsupportedFlags(_) => VIRTIO_BLK_S_UNSUPP as u8,
            _ => VIRTIO_BLK_S_IOERR as u8,
        }
    }
}

/// The result of parsing one chain.
#[derive(Debug)]
pub(crate) enum Parsed {
    /// There is no place to write a status: complete the chain with used length 0.
    Unanswerable(RequestError),
    /// The status byte is at `status`; `request` is what to do, or why not.
    Answerable { status: GuestAddress, request: Result<Request, RequestError> },
}

/// The descriptors of a chain, split into header, data and status.
struct Layout {
    first: Descriptor,
    /// Descriptors between the first and the last, at most `MAX_KEPT_SEGMENTS`.
    middle: Vec<Descriptor>,
    /// How many there really were.
    middle_count: usize,
    /// The last descriptor, if the chain has more than one.
    last: Option<Descriptor>,
}

/// Reads and validates the request in `chain`.
pub(crate) fn parse<M>(chain: DescriptorChain<M>, mem: &GuestMemoryMmap, limits: &Limits) -> Parsed
where
    M: Deref<Target = GuestMemoryMmap>,
{
    let layout = match collect(chain) {
        Ok(layout) => layout,
        Err(e) => return Parsed::Unanswerable(e),
    };
    let status_desc = layout.last.unwrap_or(layout.first);
    if !status_desc.is_write_only() || status_desc.len() == 0 {
        return Parsed::Unanswerable(RequestError::NoStatus);
    }
    let Some(status) = status_desc.addr().0.checked_add(u64::from(status_desc.len()) - 1) else {
        return Parsed::Unanswerable(RequestError::NoStatus);
    };
    let request = if layout.last.is_none() {
        Err(RequestError::MissingHeader)
    } else {
        parse_request(&layout, mem, limits)
    };
    Parsed::Answerable { status: GuestAddress(status), request }
}

fn collect<M>(mut chain: DescriptorChain<M>) -> Result<Layout, RequestError>
where
    M: Deref<Target = GuestMemoryMmap>,
{
    let first = chain.next().ok_or(RequestError::BrokenChain)?;
    let mut middle = Vec::new();
    let mut middle_count = 0usize;
    let mut last: Option<Descriptor> = None;
    for desc in chain {
        if let Some(previous) = last.replace(desc) {
            if middle.len() < MAX_KEPT_SEGMENTS {
                middle.push(previous);
            }
            middle_count += 1;
        }
    }
    // The iterator stops early, without an error, on a loop, an out-of-range next
    // index, an unreadable descriptor or a bad indirect table: then the last
    // descriptor it yielded still says "next".
    if last.unwrap_or(first).has_next() {
        return Err(RequestError::BrokenChain);
    }
    Ok(Layout { first, middle, middle_count, last })
}

fn parse_request(
    layout: &Layout,
    mem: &GuestMemoryMmap,
    limits: &Limits,
) -> Result<Request, RequestError> {
    let header = &layout.first;
    if header.is_write_only() {
        return Err(RequestError::HeaderWritable);
    }
    if header.len() != HEADER_LEN {
        return Err(RequestError::HeaderLength(header.len()));
    }
    let mut raw = [0u8; HEADER_LEN as usize];
    mem.read_slice(&mut raw, header.addr()).map_err(|_| RequestError::BadBuffer {
        addr: header.addr().0,
        len: u64::from(HEADER_LEN),
    })?;
    let (type_bytes, rest) = raw.split_at(4);
    let request_type = u32::from_le_bytes(le_array(type_bytes));
    let sector = u64::from_le_bytes(le_array(&rest[4..]));

    if layout.middle_count > SEG_MAX as usize {
        return Err(RequestError::TooManySegments(layout.middle_count));
    }
    let segments: Vec<Segment> =
        layout.middle.iter().map(|d| Segment { addr: d.addr(), len: d.len() }).collect();

    match request_type {
        VIRTIO_BLK_T_IN => {
            expect_direction(&layout.middle, true, "read")?;
            let offset = check_sectors(sector, total_len(&segments), limits)?;
            Ok(Request::Read { offset, segments })
        }
        VIRTIO_BLK_T_OUT => {
            expect_direction(&layout.middle, false, "write")?;
            if limits.read_only {
                return Err(RequestError::ReadOnly);
            }
            let offset = check_sectors(sector, total_len(&segments), limits)?;
            Ok(Request::Write { offset, segments })
        }
        VIRTIO_BLK_T_FLUSH => Ok(Request::Flush),
        VIRTIO_BLK_T_GET_ID => {
            expect_direction(&layout.middle, true, "get-id")?;
            Ok(Request::GetId { segments })
        }
        VIRTIO_BLK_T_DISCARD if limits.discard => {
            expect_direction(&layout.middle, false, "discard")?;
            if limits.read_only {
                return Err(RequestError::ReadOnly);
            }
            let range = read_range(&segments, mem, MAX_DISCARD_SEG)?;
            // Discard has no flags at all; unmap is implied.
            if range.flags != 0 {
                return Err(RequestError::UnsupportedFlags(range.flags));
            }
            let (offset, len) = range.bytes(MAX_DISCARD_SECTORS, limits)?;
            Ok(Request::Discard { offset, len })
        }
        VIRTIO_BLK_T_WRITE_ZEROES if limits.write_zeroes => {
            expect_direction(&layout.middle, false, "write-zeroes")?;
            if limits.read_only {
                return Err(RequestError::ReadOnly);
            }
            let range = read_range(&segments, mem, MAX_WRITE_ZEROES_SEG)?;
            if range.flags & !VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP != 0 {
                return Err(RequestError::UnsupportedFlags(range.flags));
            }
            let unmap = range.flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP != 0;
            let (offset, len) = range.bytes(MAX_WRITE_ZEROES_SECTORS, limits)?;
            Ok(Request::WriteZeroes { offset, len, unmap })
        }
        other => Err(RequestError::Unsupported(other)),
    }
}

fn expect_direction(
    data: &[Descriptor],
    device_writable: bool,
    what: &'static str,
) -> Result<(), RequestError> {
    if data.iter().all(|d| d.is_write_only() == device_writable) {
        Ok(())
    } else {
        Err(RequestError::WrongDirection(what))
    }
}

/// Total bytes of `segments` (at most `SEG_MAX` u32 lengths: cannot overflow u64).
pub(crate) fn total_len(segments: &[Segment]) -> u64 {
    segments.iter().map(|s| u64::from(s.len)).sum()
}

/// Checks that `len` bytes from `sector` are whole sectors inside the disk and
/// returns the byte offset.
fn check_sectors(sector: u64, len: u64, limits: &Limits) -> Result<u64, RequestError> {
    if len % SECTOR_SIZE != 0 {
        return Err(RequestError::UnalignedLength(len));
    }
    let overflow = || RequestError::Overflow { sector, len };
    let start = sector.checked_mul(SECTOR_SIZE).ok_or_else(overflow)?;
    let end = start.checked_add(len).ok_or_else(overflow)?;
    let size = limits.capacity_sectors.saturating_mul(SECTOR_SIZE);
    if end > size {
        return Err(RequestError::OutOfRange { start, end, size });
    }
    Ok(start)
}

/// One `struct virtio_blk_discard_write_zeroes`.
struct SectorRange {
    sector: u64,
    num_sectors: u32,
    flags: u32,
}

impl SectorRange {
    /// Byte offset and length, checked against `max_sectors` and the disk size.
    fn bytes(&self, max_sectors: u32, limits: &Limits) -> Result<(u64, u64), RequestError> {
        if self.num_sectors > max_sectors {
            return Err(RequestError::RangeTooLong { got: self.num_sectors, max: max_sectors });
        }
        let len = u64::from(self.num_sectors) * SECTOR_SIZE;
        let offset = check_sectors(self.sector, len, limits)?;
        Ok((offset, len))
    }
}

/// Reads the single range of a discard / write-zeroes request from the guest.
fn read_range(
    segments: &[Segment],
    mem: &GuestMemoryMmap,
    max_ranges: u32,
) -> Result<SectorRange, RequestError> {
    let total = total_len(segments);
    if total == 0 || total % RANGE_LEN != 0 {
        return Err(RequestError::BadRangePayload(total));
    }
    if total / RANGE_LEN > u64::from(max_ranges) {
        return Err(RequestError::TooManyRanges { got: total / RANGE_LEN, max: max_ranges });
    }
    let mut raw = [0u8; RANGE_LEN as usize];
    let mut filled = 0usize;
    for seg in segments {
        if filled == raw.len() {
            break;
        }
        // A segment is at most u32::MAX bytes; the minimum is at most 16.
        let take = (seg.len as usize).min(raw.len() - filled);
        mem.read_slice(&mut raw[filled..filled + take], seg.addr)
            .map_err(|_| RequestError::BadBuffer { addr: seg.addr.0, len: u64::from(seg.len) })?;
        filled += take;
    }
    Ok(SectorRange {
        sector: u64::from_le_bytes(le_array(&raw[0..8])),
        num_sectors: u32::from_le_bytes(le_array(&raw[8..12])),
        flags: u32::from_le_bytes(le_array(&raw[12..16])),
    })
}

/// Copies the first `N` bytes of `bytes` into an array (zero-padded if shorter).
fn le_array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let n = N.min(bytes.len());
    out[..n].copy_from_slice(&bytes[..n]);
    out
}
