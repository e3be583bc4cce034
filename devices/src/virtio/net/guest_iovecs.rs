//! Guest buffers as an iovec list, for `readv`/`writev` straight between the TAP
//! and guest memory (no bounce buffer).
//!
//! Every buffer is resolved through vm-memory (bounds-checked, split where it
//! crosses a region boundary) and pinned by its pointer guard for as long as the
//! list lives; the list borrows guest memory, so the mapping outlives it. The
//! kernel writes guest memory behind vm-memory's back on `readv`, so reads mark
//! what they wrote dirty in the guest-memory bitmap themselves.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use vm_memory::bitmap::{Bitmap, MS};
use vm_memory::volatile_memory::{PtrGuard, PtrGuardMut};
use vm_memory::{GuestAddress, GuestMemoryBackend, VolatileSlice};

use crate::virtio::GuestMemoryMmap;

/// Most iovecs one `readv`/`writev` call accepts (Linux UIO_MAXIOV).
pub(crate) const IOV_MAX: usize = 1024;

/// A slice of guest memory with its dirty bitmap.
type GuestSlice<'m> = VolatileSlice<'m, MS<'m, GuestMemoryMmap>>;

/// Which way the bytes move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    /// The device fills the buffers (receive: `readv` from the TAP).
    DeviceWrites,
    /// The device reads the buffers (transmit: `writev` to the TAP).
    DeviceReads,
}

/// Keeps a buffer mapped while the kernel may access it.
enum Guard {
    Read(#[allow(dead_code)] PtrGuard),
    Write(#[allow(dead_code)] PtrGuardMut),
}

/// A guest address range that is not (entirely) guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("guest buffer {addr:#x}+{len:#x} is not in guest memory")]
pub(crate) struct BadBuffer {
    /// Guest physical address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
}

/// A position in a [`GuestIovecs`] list.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IovecMark {
    entries: usize,
    len: usize,
}

/// An ordered list of guest buffers. A prefix can be dropped
/// ([`GuestIovecs::consume_front`]) so one list can serve several frames.
pub(crate) struct GuestIovecs<'m> {
    mem: &'m GuestMemoryMmap,
    direction: Direction,
    slices: Vec<GuestSlice<'m>>,
    iovecs: Vec<libc::iovec>,
    guards: Vec<Guard>,
    /// Index of the first live entry of `slices`/`iovecs`/`guards`.
    start: usize,
    /// Bytes in the live entries.
    len: usize,
}

impl<'m> GuestIovecs<'m> {
    /// An empty list the device will write into (`readv`).
    pub(crate) fn for_device_writes(mem: &'m GuestMemoryMmap) -> Self {
        Self::new(mem, Direction::DeviceWrites)
    }

    /// An empty list the device will read from (`writev`).
    pub(crate) fn for_device_reads(mem: &'m GuestMemoryMmap) -> Self {
        Self::new(mem, Direction::DeviceReads)
    }

    fn new(mem: &'m GuestMemoryMmap, direction: Direction) -> Self {
        Self {
            mem,
            direction,
            slices: Vec::new(),
            iovecs: Vec::new(),
            guards: Vec::new(),
            start: 0,
            len: 0,
        }
    }

    /// Appends the guest range `addr..addr+len`. Returns how many iovecs it took
    /// (more than one when it crosses a region boundary). On failure nothing is
    /// appended.
    pub(crate) fn push(&mut self, addr: GuestAddress, len: u32) -> Result<usize, BadBuffer> {
        let bad = BadBuffer { addr: addr.0, len };
        let count = usize::try_from(len).map_err(|_| bad)?;
        let before = self.slices.len();
        for slice in GuestMemoryBackend::get_slices(self.mem, addr, count) {
            match slice {
                Ok(slice) => self.slices.push(slice),
                Err(_) => {
                    self.slices.truncate(before);
                    return Err(bad);
                }
            }
        }
        for slice in &self.slices[before..] {
            let (ptr, guard) = match self.direction {
                Direction::DeviceWrites => {
                    let guard = slice.ptr_guard_mut();
                    (guard.as_ptr(), Guard::Write(guard))
                }
                Direction::DeviceReads => {
                    let guard = slice.ptr_guard();
                    (guard.as_ptr().cast_mut(), Guard::Read(guard))
                }
            };
            self.iovecs.push(libc::iovec { iov_base: ptr.cast(), iov_len: slice.len() });
            self.guards.push(guard);
        }
        self.len += count;
        Ok(self.slices.len() - before)
    }

    /// Bytes in the list.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Number of iovecs in the list.
    pub(crate) fn count(&self) -> usize {
        self.iovecs.len() - self.start
    }

    /// Drops the first `count` iovecs (and their bytes) from the list.
    pub(crate) fn consume_front(&mut self, count: usize) {
        let end = self.start.saturating_add(count).min(self.iovecs.len());
        let dropped: usize = self.iovecs[self.start..end].iter().map(|iov| iov.iov_len).sum();
        self.len -= dropped;
        self.start = end;
        if self.start == self.iovecs.len() {
            self.clear();
        }
    }

    /// A point [`Self::rollback`] can return to.
    pub(crate) fn mark(&self) -> IovecMark {
        IovecMark { entries: self.iovecs.len(), len: self.len }
    }

    /// Drops everything pushed since `mark` was taken (nothing consumed since).
    pub(crate) fn rollback(&mut self, mark: IovecMark) {
        if mark.entries < self.start || mark.entries > self.iovecs.len() {
            return;
        }
        self.slices.truncate(mark.entries);
        self.iovecs.truncate(mark.entries);
        self.guards.truncate(mark.entries);
        self.len = mark.len;
    }

    /// Empties the list.
    pub(crate) fn clear(&mut self) {
        self.slices.clear();
        self.iovecs.clear();
        self.guards.clear();
        self.start = 0;
        self.len = 0;
    }

    /// Reads one datagram (frame) from `fd` into the buffers. Returns the bytes
    /// read; more than [`Self::len`] means the frame did not fit (and was
    /// truncated). The bytes written are marked dirty.
    ///
    /// A TAP returns at most what the buffers hold, so a frame that filled them
    /// exactly could not be told from one that was cut short. A one-byte overflow
    /// buffer (host memory) after the guest's tells them apart: a frame that
    /// reaches it did not fit.
    pub(crate) fn readv(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        if self.direction != Direction::DeviceWrites {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "buffers are device-readable"));
        }
        // One iovec is for the overflow byte.
        if self.count() >= IOV_MAX {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "too many buffers for readv"));
        }
        let mut overflow = [0u8; 1];
        self.iovecs.push(libc::iovec { iov_base: overflow.as_mut_ptr().cast(), iov_len: 1 });
        let iovecs = &self.iovecs[self.start..];
        // SAFETY: every iovec but the last points into guest memory resolved and
        // bounds-checked by vm-memory; the slices borrow the guest memory object
        // (whose mappings live as long as it does) and the guards pin them for the
        // list's lifetime, which covers this call. The last points at `overflow`,
        // a live local. The kernel writes at most `iov_len` bytes into each.
        // `iovecs.len()` is at most IOV_MAX, so it fits in a c_int.
        let ret =
            unsafe { libc::readv(fd.as_raw_fd(), iovecs.as_ptr(), iovecs.len() as libc::c_int) };
        let result = if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(ret as usize) };
        // The overflow iovec must not outlive `overflow`.
        self.iovecs.pop();
        match &result {
            Ok(read) => self.mark_dirty(*read),
            Err(err) if err.kind() != io::ErrorKind::WouldBlock => {
                // The kernel may have written part of the buffers before failing.
                self.mark_dirty(self.len);
            }
            Err(_) => {}
        }
        result
    }

    /// Writes the buffers to `fd` as one datagram (frame). Returns the bytes written.
    pub(crate) fn writev(&self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        if self.direction != Direction::DeviceReads {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "buffers are device-writable"));
        }
        let iovecs = &self.iovecs[self.start..];
        if iovecs.len() > IOV_MAX {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "more than IOV_MAX buffers"));
        }
        // SAFETY: as in `readv`; the kernel only reads the described memory.
        // `iovecs.len()` is at most IOV_MAX, so it fits in a c_int.
        let ret =
            unsafe { libc::writev(fd.as_raw_fd(), iovecs.as_ptr(), iovecs.len() as libc::c_int) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        // Non-negative here.
        Ok(ret as usize)
    }

    /// Marks the first `bytes` bytes of the live buffers dirty.
    fn mark_dirty(&self, bytes: usize) {
        let mut left = bytes;
        for slice in &self.slices[self.start..] {
            if left == 0 {
                break;
            }
            let n = left.min(slice.len());
            slice.bitmap().mark_dirty(0, n);
            left -= n;
        }
    }
}
