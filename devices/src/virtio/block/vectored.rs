//! Vectored I/O between the image file and guest-memory buffers (`preadv` /
//! `pwritev` straight into the guest's pages, no bounce buffer).
//!
//! The kernel writes guest memory behind vm-memory's back on reads, so reads mark
//! their buffers dirty in the guest-memory bitmap themselves: migration must resend
//! those pages.

use std::fs::File;
use std::io;
use std::os::unix::io::AsRawFd;

use vm_memory::bitmap::BitmapSlice;
use vm_memory::VolatileSlice;

/// Most iovecs one `preadv`/`pwritev` call accepts (Linux UIO_MAXIOV).
const IOV_MAX: usize = 1024;

#[derive(Clone, Copy)]
enum Direction {
    /// File to guest memory.
    Read,
    /// Guest memory to file.
    Write,
}

/// Fills `bufs`, in order, from `file` starting at byte `offset`. Every buffer is
/// marked dirty afterwards, also on failure (part of it may have been written).
pub(crate) fn read_to_slices<B: BitmapSlice>(
    file: &File,
    bufs: &[VolatileSlice<'_, B>],
    offset: u64,
) -> io::Result<()> {
    let guards: Vec<_> = bufs.iter().map(|b| b.ptr_guard_mut()).collect();
    let mut iovecs: Vec<libc::iovec> = guards
        .iter()
        .map(|g| libc::iovec { iov_base: g.as_ptr().cast(), iov_len: g.len() })
        .collect();
    let result = transfer(file, &mut iovecs, offset, Direction::Read);
    for buf in bufs {
        buf.bitmap().mark_dirty(0, buf.len());
    }
    drop(guards);
    result
}

/// Writes `bufs`, in order, to `file` starting at byte `offset`.
pub(crate) fn write_from_slices<B: BitmapSlice>(
    file: &File,
    bufs: &[VolatileSlice<'_, B>],
    offset: u64,
) -> io::Result<()> {
    let guards: Vec<_> = bufs.iter().map(|b| b.ptr_guard()).collect();
    let mut iovecs: Vec<libc::iovec> = guards
        .iter()
        .map(|g| libc::iovec { iov_base: g.as_ptr().cast_mut().cast(), iov_len: g.len() })
        .collect();
    let result = transfer(file, &mut iovecs, offset, Direction::Write);
    drop(guards);
    result
}

/// Moves every byte described by `iovecs`, retrying short transfers and EINTR.
/// The iovecs must describe memory valid for the transfer's direction for the whole
/// call; they are consumed (advanced) as bytes move.
fn transfer(
    file: &File,
    iovecs: &mut [libc::iovec],
    mut offset: u64,
    direction: Direction,
) -> io::Result<()> {
    let mut first = 0;
    skip_empty(iovecs, &mut first);
    while first < iovecs.len() {
        let batch = &iovecs[first..iovecs.len().min(first + IOV_MAX)];
        let file_offset = libc::off_t::try_from(offset).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "offset does not fit in off_t")
        })?;
        // `batch.len()` is at most IOV_MAX, so it fits in a c_int.
        let count = batch.len() as libc::c_int;
        let ret = match direction {
            // SAFETY: every iovec points into a guest-memory mapping that the caller's
            // `VolatileSlice`s (and their pointer guards) keep mapped for the whole
            // call, with the length vm-memory bounds-checked; the kernel writes at most
            // `iov_len` bytes into each.
            Direction::Read => unsafe {
                libc::preadv(file.as_raw_fd(), batch.as_ptr(), count, file_offset)
            },
            // SAFETY: as above; the kernel only reads the described memory.
            Direction::Write => unsafe {
                libc::pwritev(file.as_raw_fd(), batch.as_ptr(), count, file_offset)
            },
        };
        if ret < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        // `ret` is non-negative here.
        let moved = ret as usize;
        if moved == 0 {
            return Err(match direction {
                Direction::Read => io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "image ended before the requested sectors",
                ),
                Direction::Write => {
                    io::Error::new(io::ErrorKind::WriteZero, "image accepted no more data")
                }
            });
        }
        offset = offset.saturating_add(moved as u64);
        advance(iovecs, &mut first, moved);
    }
    Ok(())
}

/// Consumes `moved` bytes from the iovecs starting at index `first`.
fn advance(iovecs: &mut [libc::iovec], first: &mut usize, mut moved: usize) {
    while moved > 0 && *first < iovecs.len() {
        let iov = &mut iovecs[*first];
        let step = moved.min(iov.iov_len);
        iov.iov_base = iov.iov_base.cast::<u8>().wrapping_add(step).cast();
        iov.iov_len -= step;
        moved -= step;
        skip_empty(iovecs, first);
    }
}

fn skip_empty(iovecs: &[libc::iovec], first: &mut usize) {
    while *first < iovecs.len() && iovecs[*first].iov_len == 0 {
        *first += 1;
    }
}
