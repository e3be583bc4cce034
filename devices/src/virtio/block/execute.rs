//! Carrying out a validated request against the image and guest memory.

use vm_memory::{Bytes, GuestMemoryBackend, VolatileSlice};

use super::image::DiskImage;
use super::request::{Request, RequestError, Segment};
use super::vectored;
use super::SERIAL_LEN;
use crate::virtio::GuestMemoryMmap;

/// Guest-memory slices of one request's buffers.
type GuestSlices<'m> = Vec<VolatileSlice<'m, vm_memory::bitmap::MS<'m, GuestMemoryMmap>>>;

/// Performs `request`. Returns how many bytes were written into the driver's data
/// buffers (the status byte not included).
pub(crate) fn execute(
    request: &Request,
    mem: &GuestMemoryMmap,
    disk: &DiskImage,
    serial: &[u8; SERIAL_LEN],
) -> Result<u32, RequestError> {
    match request {
        Request::Read { offset, segments } => {
            let slices = guest_slices(mem, segments)?;
            vectored::read_to_slices(disk.file(), &slices, *offset)?;
            Ok(clamp_u32(slices.iter().map(|s| s.len() as u64).sum()))
        }
        Request::Write { offset, segments } => {
            let slices = guest_slices(mem, segments)?;
            vectored::write_from_slices(disk.file(), &slices, *offset)?;
            Ok(0)
        }
        Request::Flush => {
            disk.flush()?;
            Ok(0)
        }
        Request::GetId { segments } => write_serial(mem, segments, serial),
        Request::Discard { offset, len } => {
            disk.discard(*offset, *len)?;
            Ok(0)
        }
        Request::WriteZeroes { offset, len, unmap } => {
            disk.write_zeroes(*offset, *len, *unmap)?;
            Ok(0)
        }
    }
}

/// Resolves every segment to host memory, bounds-checked by vm-memory; a segment
/// may cover several guest memory regions and so yield several slices. Fails
/// before any I/O if any byte is outside guest memory.
fn guest_slices<'m>(
    mem: &'m GuestMemoryMmap,
    segments: &[Segment],
) -> Result<GuestSlices<'m>, RequestError> {
    let mut slices = Vec::with_capacity(segments.len());
    for seg in segments {
        let bad = || RequestError::BadBuffer { addr: seg.addr.0, len: u64::from(seg.len) };
        // A u32 length always fits in usize on the 64-bit hosts KVM runs on.
        let len = usize::try_from(seg.len).map_err(|_| bad())?;
        for slice in GuestMemoryBackend::get_slices(mem, seg.addr, len) {
            slices.push(slice.map_err(|_| bad())?);
        }
    }
    Ok(slices)
}

/// Copies the zero-padded serial into the driver's buffers, as much as fits.
fn write_serial(
    mem: &GuestMemoryMmap,
    segments: &[Segment],
    serial: &[u8; SERIAL_LEN],
) -> Result<u32, RequestError> {
    let mut written = 0usize;
    for seg in segments {
        if written == serial.len() {
            break;
        }
        let take = (seg.len as usize).min(serial.len() - written);
        mem.write_slice(&serial[written..written + take], seg.addr)
            .map_err(|_| RequestError::BadBuffer { addr: seg.addr.0, len: u64::from(seg.len) })?;
        written += take;
    }
    // At most SERIAL_LEN (20).
    Ok(written as u32)
}

fn clamp_u32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
