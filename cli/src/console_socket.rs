//! `--serial socket=PATH`: the guest console on a Unix socket that people attach to
//! and detach from (`tern console PATH`) while the guest runs on.
//!
//! Guest output always goes into a ring of the last [`RING_BYTES`] bytes; the UART's
//! writer never touches a client socket, so no client can slow the guest. One thread
//! (class `console-socket`, confined before its first accept) waits on the listener,
//! the attached client and an eventfd the writer signals while a client is attached,
//! and copies: ring to client (non-blocking; a client that does not read falls
//! behind and loses the bytes the ring overwrote meanwhile, so what is held for it is
//! bounded), client to the UART's receive FIFO.
//!
//! One client at a time: while one is attached, a second gets one line, `tern:
//! console already attached`, and is closed. A new client first receives what the
//! ring holds (the recent output), then live output. The socket file is created
//! owner-only and cleaned up as the control API's is (`vmm::owner_socket`), and a
//! client of another user (other than root) is refused with one line.

use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use devices::legacy::Serial;
use devices::sync::lock;
use vmm::owner_socket::{self, peer, OwnedSocketFile, SocketFileError};

use crate::console_ring::OutputRing;

/// Recent guest output kept for clients that attach later (many screenfuls).
pub const RING_BYTES: usize = 64 * 1024;
/// Most output taken from the ring for a client at once.
const OUTPUT_CHUNK: usize = 16 * 1024;
/// Most client input read at once (it waits there until the UART's FIFO takes it).
const INPUT_CHUNK: usize = 4096;

/// Why the console socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleSocketError {
    #[error(transparent)]
    Socket(#[from] SocketFileError),
    #[error("cannot set up console socket {path}: {source}")]
    Setup { path: String, source: io::Error },
}

/// Guest output shared by the UART's writer and the socket thread.
struct Hub {
    ring: Mutex<OutputRing>,
    /// Whether a client is attached (the writer wakes the thread only then).
    attached: AtomicBool,
    /// Readable when there is new output for the attached client.
    wake: OwnedFd,
    /// Ring position up to which the attached client has been sent everything.
    sent: AtomicU64,
}

impl Hub {
    fn new() -> io::Result<Self> {
        // SAFETY: eventfd takes no pointers; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by eventfd and nothing else owns it.
        let wake = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { ring: Mutex::new(OutputRing::new(RING_BYTES)), attached: AtomicBool::new(false), wake, sent: AtomicU64::new(0) })
    }

    fn signal(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a valid buffer to our eventfd. A full counter
        // (EAGAIN) already means "wake up", so the result does not matter.
        unsafe { libc::write(self.wake.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }

    fn drain_signal(&self) {
        let mut count = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a valid 8-byte buffer from our eventfd;
        // EAGAIN (nothing pending) is fine.
        unsafe { libc::read(self.wake.as_raw_fd(), count.as_mut_ptr().cast(), count.len()) };
    }
}

/// The UART's output writer for `--serial socket=PATH`: into the ring, and a wake-up
/// for the socket thread when a client is attached. Never blocks on a client.
pub struct ConsoleOutput(Arc<Hub>);

impl Write for ConsoleOutput {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        lock(&self.0.ring).push(data);
        if self.0.attached.load(Ordering::Acquire) {
            self.0.signal();
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A console socket listening at its path, not served yet (the machine is built
/// between the two, and the server needs its UART).
pub struct ConsoleSocket {
    listener: UnixListener,
    file: OwnedSocketFile,
    hub: Arc<Hub>,
}

impl ConsoleSocket {
    /// Creates the socket at `path` (owner-only; a missing directory, a live socket
    /// or any file other than a stale socket is an error) and the writer for the UART.
    pub fn create(path: &Path) -> Result<(Self, ConsoleOutput), ConsoleSocketError> {
        let setup = |source| ConsoleSocketError::Setup { path: path.display().to_string(), source };
        let (listener, file) = owner_socket::create(path, "console socket")?;
        // Accepting never blocks the loop on a client that went away meanwhile.
        listener.set_nonblocking(true).map_err(setup)?;
        let hub = Arc::new(Hub::new().map_err(setup)?);
        Ok((Self { listener, file, hub: hub.clone() }, ConsoleOutput(hub)))
    }

    /// Starts the socket thread, forwarding client input into `serial`. The returned
    /// guard removes the socket file when dropped (if it is still ours).
    pub fn serve(self, serial: Arc<Mutex<Serial>>) -> Result<ServedConsole, ConsoleSocketError> {
        let Self { listener, file, hub } = self;
        let server = Server { listener, hub: hub.clone(), serial, own_uid: peer::own_uid(), client: None };
        std::thread::Builder::new()
            .name("console-socket".into())
            .spawn(move || server.run())
            .map_err(|source| ConsoleSocketError::Setup { path: file.path().display().to_string(), source })?;
        Ok(ServedConsole { _file: file, hub })
    }
}

/// A console socket being served: removes its file when dropped.
pub struct ServedConsole {
    _file: OwnedSocketFile,
    hub: Arc<Hub>,
}

impl ServedConsole {
    /// Waits (at most `limit`) until the attached client, if any, has been sent the
    /// guest's last output: tern calls it before it exits, so the lines a guest printed
    /// just before it powered off or reset reach the person watching.
    pub fn finish_output(&self, limit: Duration) {
        let started = Instant::now();
        self.hub.signal();
        while self.hub.attached.load(Ordering::Acquire)
            && self.hub.sent.load(Ordering::Acquire) < lock(&self.hub.ring).end()
            && started.elapsed() < limit
        {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// The socket thread's state.
struct Server {
    listener: UnixListener,
    hub: Arc<Hub>,
    serial: Arc<Mutex<Serial>>,
    own_uid: u32,
    client: Option<Client>,
}

/// The attached client.
struct Client {
    stream: UnixStream,
    /// Ring position of the next output byte for this client.
    pos: u64,
    /// Output taken from the ring and not yet written (from `out_sent` on).
    out: Vec<u8>,
    out_sent: usize,
    /// The last write would have blocked: wait for the socket to be writable.
    out_blocked: bool,
    /// Input read from the client that the UART's FIFO has not taken yet.
    input: Vec<u8>,
}

impl Server {
    fn run(mut self) {
        // Before the first client is accepted.
        if let Err(e) = tern_seccomp::confine(tern_seccomp::ThreadClass::ConsoleSocket) {
            tracing::error!("console socket not served: {e}");
            return;
        }
        loop {
            let (client_fd, client_events) = match &self.client {
                Some(c) => c.poll_interest(),
                None => (-1, 0),
            };
            let mut fds = [
                libc::pollfd { fd: self.listener.as_raw_fd(), events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: self.hub.wake.as_raw_fd(), events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: client_fd, events: client_events, revents: 0 },
            ];
            // Input the FIFO could not take yet is retried every millisecond.
            let timeout = if self.client.as_ref().is_some_and(|c| !c.input.is_empty()) { 1 } else { -1 };
            // SAFETY: `fds` is a valid array of 3 pollfds for the duration of the call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != ErrorKind::Interrupted {
                    tracing::warn!("console socket: poll: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            if fds[1].revents != 0 {
                self.hub.drain_signal();
            }
            // The attached client first: one that just left makes room for a new one
            // waiting in the same pass.
            if let Some(client) = &mut self.client {
                if !client.serve(fds[2].revents, &self.serial, &self.hub) {
                    self.detach();
                }
            }
            if fds[0].revents & libc::POLLIN != 0 {
                self.accept();
            }
        }
    }

    /// Accepts one pending client: attached if it may be, refused with a line if not.
    fn accept(&mut self) {
        let flags = libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
        // SAFETY: accept4 with null address pointers only returns a new descriptor.
        let fd: RawFd = unsafe { libc::accept4(self.listener.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut(), flags) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            if !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted | ErrorKind::ConnectionAborted) {
                // Out of descriptors, say: do not spin on the error.
                tracing::warn!("accepting a console client: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
            return;
        }
        // SAFETY: `fd` was just returned by accept4 and nothing else owns it.
        let stream = unsafe { UnixStream::from_raw_fd(fd) };
        match peer::peer_uid(&stream) {
            Ok(uid) if peer::peer_allowed(uid, self.own_uid) => {}
            Ok(uid) => {
                tracing::warn!(peer_uid = uid, own_uid = self.own_uid, "console client refused: not tern's user or root");
                return refuse(&stream, &format!("permission denied: uid {uid} may not attach to this console"));
            }
            Err(e) => {
                tracing::warn!("console client refused: cannot read its credentials: {e}");
                return refuse(&stream, "permission denied: cannot identify the connecting process");
            }
        }
        if self.client.is_some() {
            return refuse(&stream, "console already attached");
        }
        tracing::info!("console client attached");
        let pos = lock(&self.hub.ring).start();
        self.hub.sent.store(pos, Ordering::Release);
        self.client = Some(Client { stream, pos, out: Vec::new(), out_sent: 0, out_blocked: false, input: Vec::new() });
        self.hub.attached.store(true, Ordering::Release);
        // The recent output goes out on this pass: the wake-up signal is not needed.
        if let Some(client) = &mut self.client {
            if !client.send_output(&self.hub) {
                self.detach();
            }
        }
    }

    fn detach(&mut self) {
        self.client = None;
        self.hub.attached.store(false, Ordering::Release);
        tracing::info!("console client detached");
    }
}

/// Sends one line to a client that is not attached, and closes it. The stream is
/// non-blocking: a client that does not read loses the line, never stalls the loop.
fn refuse(mut stream: &UnixStream, reason: &str) {
    let _ = stream.write(format!("tern: {reason}\r\n").as_bytes());
}

impl Client {
    /// The descriptor and events to wait for: input only when the last input was
    /// taken, writability only when output is waiting (no descriptor otherwise, so
    /// a hang-up is not reported over and over while input waits for the FIFO).
    fn poll_interest(&self) -> (RawFd, libc::c_short) {
        let mut events = 0;
        if self.input.is_empty() {
            events |= libc::POLLIN;
        }
        if self.out_blocked {
            events |= libc::POLLOUT;
        }
        (if events == 0 { -1 } else { self.stream.as_raw_fd() }, events)
    }

    /// Moves input to the UART and output to the client; `false` when the client is
    /// gone (end of stream or an error).
    fn serve(&mut self, revents: libc::c_short, serial: &Mutex<Serial>, hub: &Hub) -> bool {
        if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 && self.input.is_empty() {
            let mut buf = [0u8; INPUT_CHUNK];
            match (&self.stream).read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => self.input.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(_) => return false,
            }
        }
        if !self.input.is_empty() {
            let taken = match lock(serial).enqueue_input(&self.input) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!("console input dropped: {e}");
                    self.input.len()
                }
            };
            self.input.drain(..taken);
        }
        self.send_output(hub)
    }

    /// Writes what the ring holds past this client's position until it is caught up
    /// or its socket is full; `false` when the client is gone.
    fn send_output(&mut self, hub: &Hub) -> bool {
        loop {
            if self.out_sent == self.out.len() {
                self.out.clear();
                self.out_sent = 0;
                let read = lock(&hub.ring).read_from(self.pos, OUTPUT_CHUNK, &mut self.out);
                if read.skipped > 0 {
                    tracing::debug!(bytes = read.skipped, "console client fell behind; its oldest output was dropped");
                }
                self.pos = read.next;
                if self.out.is_empty() {
                    self.out_blocked = false;
                    hub.sent.store(self.pos, Ordering::Release);
                    return true;
                }
            }
            match (&self.stream).write(&self.out[self.out_sent..]) {
                Ok(0) => return false,
                Ok(n) => self.out_sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.out_blocked = true;
                    return true;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use devices::bus::BusDevice;
    use devices::interrupt::Interrupt;
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    use std::path::PathBuf;
    use std::time::Instant;

    const DEADLINE: Duration = Duration::from_secs(10);

    fn socket_path(name: &str) -> PathBuf {
        // The tests run confined, as tern does.
        let _ = tern_seccomp::set_mode(tern_seccomp::Mode::On);
        let dir = std::env::temp_dir().join(format!("tern-console-sock-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("console.sock")
    }

    fn uart() -> Arc<Mutex<Serial>> {
        Arc::new(Mutex::new(Serial::new(Interrupt::new().unwrap(), Box::new(io::sink()))))
    }

    /// Reads from `conn` until `needle` arrived; returns all that was read.
    fn read_until(conn: &mut UnixStream, needle: &str) -> String {
        conn.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let started = Instant::now();
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        while !String::from_utf8_lossy(&got).contains(needle) {
            assert!(started.elapsed() < DEADLINE, "never received {needle:?}; got {:?}", String::from_utf8_lossy(&got));
            match conn.read(&mut buf) {
                Ok(0) => panic!("closed before {needle:?}; got {:?}", String::from_utf8_lossy(&got)),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    }

    /// The bytes the guest would read from the UART's receive FIFO now.
    fn guest_reads(serial: &Mutex<Serial>, want: usize) -> Vec<u8> {
        let started = Instant::now();
        let mut got = Vec::new();
        while got.len() < want {
            assert!(started.elapsed() < DEADLINE, "the guest got only {got:?}");
            let mut s = lock(serial);
            let mut lsr = [0u8];
            s.read(5, &mut lsr);
            if lsr[0] & 1 == 1 {
                let mut rbr = [0u8];
                s.read(0, &mut rbr);
                got.push(rbr[0]);
            } else {
                drop(s);
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        got
    }

    #[test]
    fn a_late_client_gets_the_recent_output_then_live_output_and_its_keys_reach_the_uart() {
        let path = socket_path("late");
        let (socket, mut out) = ConsoleSocket::create(&path).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        out.write_all(b"booted before anyone looked\n").unwrap();
        let serial = uart();
        let file = socket.serve(serial.clone()).unwrap();
        let mut conn = UnixStream::connect(&path).unwrap();
        read_until(&mut conn, "booted before anyone looked\n");
        out.write_all(b"live line\n").unwrap();
        read_until(&mut conn, "live line\n");
        conn.write_all(b"ls\r").unwrap();
        assert_eq!(guest_reads(&serial, 3), b"ls\r");
        drop(file);
        assert!(!path.exists(), "the socket file is removed with its guard");
    }

    #[test]
    fn the_last_output_reaches_the_attached_client_before_tern_exits() {
        let path = socket_path("last");
        let (socket, mut out) = ConsoleSocket::create(&path).unwrap();
        let served = socket.serve(uart()).unwrap();
        let mut conn = UnixStream::connect(&path).unwrap();
        out.write_all(b"attached\n").unwrap();
        read_until(&mut conn, "attached\n");
        // The guest's last words, then tern ends at once: the socket thread dies with it.
        let last = vec![b'x'; 48 * 1024];
        out.write_all(&last).unwrap();
        out.write_all(b"powering off\n").unwrap();
        served.finish_output(DEADLINE);
        drop(served);
        conn.shutdown(std::net::Shutdown::Write).unwrap();
        // What the client holds now is all it will get from a process that exited.
        let mut got = Vec::new();
        conn.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 65536];
        while let Ok(n) = conn.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got.ends_with(b"powering off\n"), "{} bytes, ending {:?}", got.len(), String::from_utf8_lossy(&got[got.len().saturating_sub(20)..]));
        assert_eq!(got.len(), last.len() + b"powering off\n".len());

        // Without a client there is nobody to wait for.
        let path = socket_path("last-alone");
        let (socket, mut out) = ConsoleSocket::create(&path).unwrap();
        let served = socket.serve(uart()).unwrap();
        out.write_all(b"nobody listens\n").unwrap();
        let started = Instant::now();
        served.finish_output(DEADLINE);
        assert!(started.elapsed() < Duration::from_secs(1), "waited {:?} for no client", started.elapsed());
    }

    #[test]
    fn one_client_at_a_time_and_a_detached_console_can_be_attached_again() {
        let path = socket_path("one");
        let (socket, mut out) = ConsoleSocket::create(&path).unwrap();
        let _file = socket.serve(uart()).unwrap();
        out.write_all(b"first\n").unwrap();
        let mut a = UnixStream::connect(&path).unwrap();
        read_until(&mut a, "first\n");
        let mut b = UnixStream::connect(&path).unwrap();
        let mut refusal = String::new();
        b.set_read_timeout(Some(DEADLINE)).unwrap();
        b.read_to_string(&mut refusal).unwrap();
        assert_eq!(refusal, "tern: console already attached\r\n", "one line, then closed");
        // The first client is still served.
        out.write_all(b"second\n").unwrap();
        read_until(&mut a, "second\n");
        drop(a);
        // Once the detach is seen, a new client gets the whole story again.
        let started = Instant::now();
        loop {
            let mut c = UnixStream::connect(&path).unwrap();
            let got = read_until(&mut c, "\n");
            if !got.contains("already attached") {
                let got = if got.contains("second\n") { got } else { got + &read_until(&mut c, "second\n") };
                assert!(got.starts_with("first\nsecond\n"), "{got:?}");
                break;
            }
            assert!(started.elapsed() < DEADLINE, "the detach was never noticed");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_client_that_never_reads_blocks_nothing_and_loses_only_old_output() {
        let path = socket_path("stalled");
        let (socket, mut out) = ConsoleSocket::create(&path).unwrap();
        let serial = uart();
        let _file = socket.serve(serial.clone()).unwrap();
        let mut stalled = UnixStream::connect(&path).unwrap();
        // Attached (it got the first line) and from now on not reading.
        out.write_all(b"hello\n").unwrap();
        read_until(&mut stalled, "hello\n");
        let line = [b'.'; 1023];
        let started = Instant::now();
        const TOTAL: usize = 16 << 20;
        for _ in 0..TOTAL / 1024 {
            out.write_all(&line).unwrap();
            out.write_all(b"\n").unwrap();
        }
        out.write_all(b"THE END\n").unwrap();
        assert!(started.elapsed() < Duration::from_secs(5), "guest output was held up: {:?}", started.elapsed());
        // Its input still reaches the guest.
        stalled.write_all(b"k").unwrap();
        assert_eq!(guest_reads(&serial, 1), b"k");
        // When it reads again it gets the newest output, and far less than was written.
        let mut got = 0;
        let mut tail = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        stalled.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let started = Instant::now();
        while !String::from_utf8_lossy(&tail).contains("THE END\n") {
            assert!(started.elapsed() < DEADLINE, "the newest output never came");
            if let Ok(n) = stalled.read(&mut buf) {
                got += n;
                tail.extend_from_slice(&buf[..n]);
                let keep = tail.len().saturating_sub(64);
                tail.drain(..keep);
            }
        }
        assert!(got < TOTAL / 2, "a stalled client was sent {got} of {TOTAL} bytes: nothing was dropped");
    }

    #[test]
    fn a_regular_file_at_the_path_is_refused_and_kept() {
        let path = socket_path("file");
        std::fs::write(&path, b"keep me").unwrap();
        let err = ConsoleSocket::create(&path).err().unwrap();
        assert!(err.to_string().contains("console socket path") && err.to_string().contains("regular file"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
    }
}
