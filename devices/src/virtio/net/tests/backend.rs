//! A socket pair standing in for the TAP: the device's end implements
//! `NetBackend` (one SOCK_SEQPACKET message per frame, vnet header included),
//! the test holds the other end as "the network". Errors can be injected.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::sync::lock;
use crate::virtio::net::backend::NetBackend;
use crate::virtio::net::guest_iovecs::GuestIovecs;

/// The device's end.
pub struct SocketBackend {
    sock: OwnedFd,
    name: String,
    /// Errnos the next reads / writes fail with, in order.
    read_errors: Mutex<VecDeque<i32>>,
    write_errors: Mutex<VecDeque<i32>>,
    /// Every `set_offloads` call.
    offloads: Mutex<Vec<u32>>,
}

/// The network's end.
pub struct Peer {
    sock: Option<OwnedFd>,
}

/// A connected pair, both ends non-blocking.
pub fn socket_pair(name: &str) -> (Arc<SocketBackend>, Peer) {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` is a live array of two ints the kernel fills on success.
    let ret = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(ret, 0, "socketpair: {}", io::Error::last_os_error());
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let backend = SocketBackend {
        sock: a,
        name: name.to_string(),
        read_errors: Mutex::new(VecDeque::new()),
        write_errors: Mutex::new(VecDeque::new()),
        offloads: Mutex::new(Vec::new()),
    };
    (Arc::new(backend), Peer { sock: Some(b) })
}

impl SocketBackend {
    /// The next read fails with `errno`.
    pub fn fail_next_read(&self, errno: i32) {
        lock(&self.read_errors).push_back(errno);
    }

    /// The next write fails with `errno`.
    pub fn fail_next_write(&self, errno: i32) {
        lock(&self.write_errors).push_back(errno);
    }

    /// Makes the socket's send buffer as small as the kernel allows, so it fills
    /// after a few frames and writes fail with EAGAIN until the peer reads.
    pub fn shrink_send_buffer(&self) {
        let size: libc::c_int = 1;
        // SAFETY: SO_SNDBUF reads one int from the live local `size`.
        let ret = unsafe {
            libc::setsockopt(
                self.sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(ret, 0, "SO_SNDBUF: {}", io::Error::last_os_error());
    }

    /// Offload flags set so far.
    pub fn offloads(&self) -> Vec<u32> {
        lock(&self.offloads).clone()
    }
}

impl NetBackend for SocketBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    fn read_frame(&self, bufs: &mut GuestIovecs<'_>) -> io::Result<usize> {
        if let Some(errno) = lock(&self.read_errors).pop_front() {
            return Err(io::Error::from_raw_os_error(errno));
        }
        // Report the whole message's length when it is truncated (a TAP reports one
        // byte more than the buffers; either satisfies the trait).
        // SAFETY: a zero-length peek with a null buffer writes no memory.
        let full = unsafe {
            libc::recv(
                self.sock.as_raw_fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_PEEK | libc::MSG_TRUNC | libc::MSG_DONTWAIT,
            )
        };
        if full < 0 {
            return Err(io::Error::last_os_error());
        }
        let read = bufs.readv(self.sock.as_fd())?;
        Ok(read.max(full as usize))
    }

    fn write_frame(&self, frame: &GuestIovecs<'_>) -> io::Result<usize> {
        if let Some(errno) = lock(&self.write_errors).pop_front() {
            return Err(io::Error::from_raw_os_error(errno));
        }
        frame.writev(self.sock.as_fd())
    }

    fn set_offloads(&self, tun_flags: u32) -> io::Result<()> {
        lock(&self.offloads).push(tun_flags);
        Ok(())
    }
}

impl Peer {
    fn fd(&self) -> BorrowedFd<'_> {
        self.sock.as_ref().expect("peer open").as_fd()
    }

    /// Sends one frame to the device. Panics if the socket is full.
    pub fn send(&self, frame: &[u8]) {
        // SAFETY: `frame` is a live buffer of `frame.len()` bytes the kernel reads.
        let ret = unsafe {
            libc::send(
                self.fd().as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                libc::MSG_DONTWAIT,
            )
        };
        assert_eq!(ret, frame.len() as isize, "send: {}", io::Error::last_os_error());
    }

    /// Receives one frame if one is waiting.
    pub fn try_recv(&self) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 128 * 1024];
        // SAFETY: `buf` is a live, writable buffer of `buf.len()` bytes.
        let ret = unsafe {
            libc::recv(
                self.fd().as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if ret < 0 {
            let err = io::Error::last_os_error();
            assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "recv: {err}");
            return None;
        }
        buf.truncate(ret as usize);
        Some(buf)
    }

    /// Waits (up to 10 s) for one frame.
    pub fn recv(&self) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(frame) = self.try_recv() {
                return frame;
            }
            assert!(Instant::now() < deadline, "timed out waiting for a frame");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Closes the network's end: the device sees a hang-up.
    pub fn close(&mut self) {
        self.sock = None;
    }
}
