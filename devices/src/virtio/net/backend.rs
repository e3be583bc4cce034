//! The host side of the NIC as the worker sees it: something that reads and writes
//! whole frames (each prefixed by a 12-byte `virtio_net_hdr_v1`) straight from and
//! into guest buffers, and can be polled. The TAP device implements it; tests use
//! a socket pair.

use std::io;
use std::os::fd::BorrowedFd;

use super::guest_iovecs::GuestIovecs;

/// A frame-oriented backend.
pub(crate) trait NetBackend: Send + Sync {
    /// Name for messages (the TAP name).
    fn name(&self) -> &str;

    /// The descriptor the worker polls: readable when a frame waits, writable when
    /// a frame can be sent, HUP/ERR when the backend is gone.
    fn fd(&self) -> BorrowedFd<'_>;

    /// Reads one frame, header first, into `bufs`. Returns its length (header
    /// included); a length above `bufs.len()` means it did not fit and was
    /// truncated (it need not be the frame's full length). `WouldBlock` when no
    /// frame waits.
    fn read_frame(&self, bufs: &mut GuestIovecs<'_>) -> io::Result<usize>;

    /// Writes `frame` (header first) as one frame. `WouldBlock` when the backend
    /// cannot take it now; the frame must then be offered again later.
    fn write_frame(&self, frame: &GuestIovecs<'_>) -> io::Result<usize>;

    /// Sets which offloads the backend may use in frames it hands to the guest
    /// (`TUN_F_*` flags, see `offloads`).
    fn set_offloads(&self, tun_flags: u32) -> io::Result<()>;
}

/// What a failed backend read or write means for the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Nothing to read / no room to write now: wait for the fd to be ready.
    WouldBlock,
    /// A signal interrupted the call: retry it.
    Interrupted,
    /// The backend is gone for good (interface deleted, fd detached): link down.
    Gone,
    /// This frame failed (bad offload header, interface administratively down,
    /// memory pressure); later ones may work.
    Frame,
}

/// Classifies `err` from a backend read or write.
///
/// A TAP whose interface was deleted answers EBADFD; sockets answer EPIPE and
/// friends. EIO is what a TAP answers to writes while its interface is down,
/// which the host may fix at any time, so it only loses the frame.
pub(crate) fn classify(err: &io::Error) -> Failure {
    match err.kind() {
        io::ErrorKind::WouldBlock => return Failure::WouldBlock,
        io::ErrorKind::Interrupted => return Failure::Interrupted,
        _ => {}
    }
    match err.raw_os_error() {
        Some(
            libc::EBADFD
            | libc::EBADF
            | libc::ENODEV
            | libc::ENXIO
            | libc::EPIPE
            | libc::ECONNRESET
            | libc::ENOTCONN
            | libc::ESHUTDOWN,
        ) => Failure::Gone,
        _ => Failure::Frame,
    }
}
