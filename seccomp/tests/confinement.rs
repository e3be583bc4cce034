//! Filters installed for real: the test binary runs itself again as a child (the
//! `child` test, selected by an environment variable), which sets a mode, confines
//! itself as a class and then makes one allowed or forbidden call. The parent
//! checks how the child ended: exit 0, or killed by SIGSYS.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};

use tern_seccomp::{confine, set_mode, Mode, ThreadClass};

const CASE_VAR: &str = "TERN_SECCOMP_TEST_CASE";

/// What the child says on stderr right before its one forbidden call.
const MARK: &str = "about to make the forbidden call";

fn run_child(case: &str) -> (ExitStatus, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--test-threads=1", "--nocapture"])
        .env(CASE_VAR, case)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .unwrap();
    (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The child got as far as the forbidden call (everything before it was allowed)
/// and that call killed it.
fn assert_killed_by_sigsys(case: &str) {
    let (status, stderr) = run_child(case);
    assert!(stderr.contains(MARK), "{case}: stopped before the forbidden call: {status:?} {stderr}");
    assert_eq!(status.signal(), Some(libc::SIGSYS), "{case}: {status:?} {stderr}");
    assert!(stderr.contains("which its seccomp filter forbids; ending tern"), "{case}: no report line: {stderr}");
}

fn assert_exits_cleanly(case: &str) {
    let (status, stderr) = run_child(case);
    assert_eq!(status.code(), Some(0), "{case}: {status:?} {stderr}");
}

fn mark() {
    eprintln!("{MARK}");
}

#[test]
fn forbidden_socket_on_a_block_worker_kills_the_process() {
    assert_killed_by_sigsys("forbidden-block-socket");
    let (_, stderr) = run_child("forbidden-block-socket");
    assert!(stderr.contains("tern: fatal: the block-worker thread made syscall 41 (socket)"), "{stderr}");
}

#[test]
fn forbidden_open_on_a_vcpu_kills_the_process() {
    assert_killed_by_sigsys("forbidden-vcpu-open");
    let (_, stderr) = run_child("forbidden-vcpu-open");
    assert!(stderr.contains("the vcpu thread made syscall 257 (openat) on \"/etc/hostname\""), "{stderr}");
}

#[test]
fn a_worker_started_by_a_vcpu_is_held_to_its_own_list() {
    assert_killed_by_sigsys("forbidden-stacked-worker-eventfd");
}

#[test]
fn the_console_socket_thread_cannot_connect_anywhere() {
    assert_killed_by_sigsys("forbidden-console-socket-connect");
}

#[test]
fn log_mode_lets_a_forbidden_call_through() {
    assert_exits_cleanly("log-block-socket");
}

#[test]
fn off_mode_installs_nothing() {
    assert_exits_cleanly("off-block-socket");
}

#[test]
fn allowed_calls_work_under_every_class() {
    for class in ThreadClass::ALL {
        assert_exits_cleanly(&format!("allowed-{class}"));
    }
}

/// The child's side; does nothing in a normal test run.
#[test]
fn child() {
    let Ok(case) = std::env::var(CASE_VAR) else { return };
    let code = match case.as_str() {
        "forbidden-block-socket" => {
            enforce(ThreadClass::BlockWorker);
            mark();
            socket();
            1
        }
        "forbidden-vcpu-open" => {
            enforce(ThreadClass::Vcpu);
            mark();
            let _ = std::fs::File::open("/etc/hostname");
            1
        }
        "forbidden-stacked-worker-eventfd" => {
            // eventfd2 is on the vCPU's list (for its workers), not a worker's own.
            enforce(ThreadClass::Vcpu);
            std::thread::spawn(|| {
                confine(ThreadClass::BlockWorker).unwrap();
                mark();
                eventfd();
            })
            .join()
            .unwrap();
            1
        }
        "forbidden-console-socket-connect" => {
            enforce(ThreadClass::ConsoleSocket);
            mark();
            let _ = std::os::unix::net::UnixStream::connect("/nonexistent/tern.sock");
            1
        }
        "log-block-socket" => {
            set_mode(Mode::Log).unwrap();
            confine(ThreadClass::BlockWorker).unwrap();
            socket();
            0
        }
        "off-block-socket" => {
            set_mode(Mode::Off).unwrap();
            confine(ThreadClass::BlockWorker).unwrap();
            socket();
            0
        }
        other => match other.strip_prefix("allowed-").and_then(class_named) {
            Some(class) => allowed(class),
            None => 2,
        },
    };
    // SAFETY: ends the child at once, without the harness's own clean-up calls
    // (which the filter was not written for); exit_group is on every list.
    unsafe { libc::_exit(code) }
}

fn class_named(name: &str) -> Option<ThreadClass> {
    ThreadClass::ALL.into_iter().find(|c| c.name() == name)
}

fn enforce(class: ThreadClass) {
    set_mode(Mode::On).unwrap();
    confine(class).unwrap();
}

fn socket() -> i32 {
    // SAFETY: plain syscall, no pointers.
    unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) }
}

fn eventfd() -> OwnedFd {
    // SAFETY: plain syscall; the descriptor is checked and owned below.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK) };
    assert!(fd >= 0);
    // SAFETY: a fresh descriptor nobody else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn epoll_on(fd: &OwnedFd) -> OwnedFd {
    // SAFETY: plain syscalls; the event is a live local.
    unsafe {
        let ep = libc::epoll_create1(libc::EPOLL_CLOEXEC);
        assert!(ep >= 0);
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: 7 };
        assert_eq!(libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd.as_raw_fd(), &mut ev), 0);
        OwnedFd::from_raw_fd(ep)
    }
}

/// Signals `fd` (an eventfd), waits for it through `ep` and clears it.
fn kick_and_wait(ep: &OwnedFd, fd: &OwnedFd) {
    let one = 1u64.to_ne_bytes();
    let mut buf = [0u8; 8];
    let mut ev = [libc::epoll_event { events: 0, u64: 0 }];
    // SAFETY: buffers are live locals of the sizes given.
    unsafe {
        assert_eq!(libc::write(fd.as_raw_fd(), one.as_ptr().cast(), 8), 8);
        assert_eq!(libc::epoll_wait(ep.as_raw_fd(), ev.as_mut_ptr(), 1, 1000), 1);
        assert_eq!(libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), 8), 8);
    }
    assert_eq!(u64::from_ne_bytes(buf), 1);
}

/// Signals an eventfd and clears it, as the console's output wake-up does.
fn kick_and_wait_poll(fd: &OwnedFd) {
    let one = 1u64.to_ne_bytes();
    let mut buf = [0u8; 8];
    // SAFETY: buffers are live locals of the sizes given.
    unsafe {
        assert_eq!(libc::write(fd.as_raw_fd(), one.as_ptr().cast(), 8), 8);
        assert_eq!(libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), 8), 8);
    }
}

fn socketpair() -> (std::os::unix::net::UnixStream, std::os::unix::net::UnixStream) {
    std::os::unix::net::UnixStream::pair().unwrap()
}

/// One representative allowed operation per class; 0 when it worked.
fn allowed(class: ThreadClass) -> i32 {
    use std::io::{Read, Write};
    match class {
        ThreadClass::BlockWorker => {
            let file = tempfile_rw();
            let notify = eventfd();
            let ep = epoll_on(&notify);
            enforce(class);
            kick_and_wait(&ep, &notify);
            let data = [0x5au8; 4096];
            let mut back = [0u8; 4096];
            // SAFETY: iovecs over live local buffers.
            unsafe {
                let w = libc::iovec { iov_base: data.as_ptr() as *mut _, iov_len: data.len() };
                assert_eq!(libc::pwritev(file.as_raw_fd(), &w, 1, 8192), 4096);
                let r = libc::iovec { iov_base: back.as_mut_ptr().cast(), iov_len: back.len() };
                assert_eq!(libc::preadv(file.as_raw_fd(), &r, 1, 8192), 4096);
                assert_eq!(libc::fdatasync(file.as_raw_fd()), 0);
                assert_eq!(libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, 8192, 4096), 0);
            }
            assert_eq!(back, data);
        }
        ThreadClass::NetWorker => {
            let (mut tap, peer) = socketpair();
            tap.set_nonblocking(true).unwrap();
            let notify = eventfd();
            let ep = epoll_on(&notify);
            // SAFETY: plain syscall.
            let timer = unsafe { OwnedFd::from_raw_fd(libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK)) };
            enforce(class);
            kick_and_wait(&ep, &notify);
            assert_eq!(tap.write_vectored(&[IoSlice::new(b"fr"), IoSlice::new(b"ame")]).unwrap(), 5);
            // The far end of the "TAP", with plain read/write as on a real one.
            let mut got = [0u8; 5];
            // SAFETY: live local buffers of the sizes given.
            unsafe {
                assert_eq!(libc::read(peer.as_raw_fd(), got.as_mut_ptr().cast(), 5), 5);
                assert_eq!(libc::write(peer.as_raw_fd(), b"reply".as_ptr().cast(), 5), 5);
            }
            let (mut a, mut b) = ([0u8; 2], [0u8; 3]);
            assert_eq!(tap.read_vectored(&mut [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)]).unwrap(), 5);
            let spec = libc::itimerspec {
                it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
                it_value: libc::timespec { tv_sec: 0, tv_nsec: 50_000 },
            };
            // SAFETY: a live itimerspec; no old value asked for.
            assert_eq!(unsafe { libc::timerfd_settime(timer.as_raw_fd(), 0, &spec, std::ptr::null_mut()) }, 0);
        }
        ThreadClass::Vcpu => {
            enforce(class);
            // KVM_RUN passes the filter (this descriptor is no vCPU: ENOTTY).
            let notify = eventfd();
            // SAFETY: KVM_RUN takes no argument.
            let ret = unsafe { libc::ioctl(notify.as_raw_fd(), 0xae80, 0) };
            assert_eq!((ret, std::io::Error::last_os_error().raw_os_error()), (-1, Some(libc::ENOTTY)));
            // Activating a device: the worker gets a copy of the notify eventfd,
            // starts and confines itself.
            let worker_notify = eventfd().try_clone().unwrap();
            let ep = epoll_on(&worker_notify);
            std::thread::Builder::new()
                .name("virtio-blk-0".into())
                .spawn(move || {
                    confine(ThreadClass::BlockWorker).unwrap();
                    kick_and_wait(&ep, &worker_notify);
                })
                .unwrap()
                .join()
                .unwrap();
        }
        ThreadClass::Main => {
            enforce(class);
            std::io::stdout().write_all(b"console\n").unwrap();
            // A migration starts: its thread connects somewhere.
            std::thread::spawn(|| {
                confine(ThreadClass::Migration).unwrap();
                let fd = socket();
                assert!(fd >= 0);
                // SAFETY: our own descriptor.
                unsafe { libc::close(fd) };
            })
            .join()
            .unwrap();
        }
        ThreadClass::Api => {
            let (mut client, server) = socketpair();
            enforce(class);
            std::thread::spawn(move || {
                confine(ThreadClass::ApiConnection).unwrap();
                let mut writer = server.try_clone().unwrap();
                let mut line = [0u8; 5];
                (&server).read_exact(&mut line).unwrap();
                writer.write_all(b"ok\n").unwrap();
            });
            client.write_all(b"info\n").unwrap();
            let mut reply = [0u8; 3];
            client.read_exact(&mut reply).unwrap();
            assert_eq!(&reply, b"ok\n");
        }
        ThreadClass::ApiConnection => {
            let (mut client, server) = socketpair();
            enforce(class);
            let mut writer = server.try_clone().unwrap();
            client.write_all(b"info\n").unwrap();
            let mut line = [0u8; 5];
            (&server).read_exact(&mut line).unwrap();
            writer.write_all(b"ok\n").unwrap();
        }
        ThreadClass::Migration => {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let disk = tempfile_rw();
            enforce(class);
            let mut stream = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5)).unwrap();
            stream.set_nodelay(true).unwrap();
            stream.write_all(b"hello").unwrap();
            // SAFETY: our own descriptor and a flag word.
            assert_eq!(unsafe { libc::flock(disk.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }, 0);
            // SAFETY: as above.
            assert_eq!(unsafe { libc::flock(disk.as_raw_fd(), libc::LOCK_UN) }, 0);
            std::thread::spawn(|| {
                confine(ThreadClass::MigrationThrottle).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(1));
            })
            .join()
            .unwrap();
        }
        ThreadClass::MigrationThrottle => {
            let parked = std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_millis(20)));
            enforce(class);
            // The kick: a signal to another thread of the process (0: just checks).
            // SAFETY: the handle is a live thread of this process.
            assert_eq!(unsafe { libc::pthread_kill(std::os::unix::thread::JoinHandleExt::as_pthread_t(&parked), 0) }, 0);
            std::thread::sleep(std::time::Duration::from_millis(1));
            parked.join().unwrap();
        }
        ThreadClass::Console => {
            let irq = eventfd();
            enforce(class);
            let mut buf = [0u8; 16];
            // stdin is /dev/null in the child: end of input at once.
            assert_eq!(std::io::stdin().read(&mut buf).unwrap(), 0);
            let one = 1u64.to_ne_bytes();
            // SAFETY: an 8-byte local buffer.
            assert_eq!(unsafe { libc::write(irq.as_raw_fd(), one.as_ptr().cast(), 8) }, 8);
        }
        ThreadClass::ConsoleSocket => {
            // Set up before confinement, as tern does: the listener (non-blocking), the
            // output eventfd and the UART's irqfd.
            let dir = std::env::temp_dir().join(format!("tern-seccomp-console-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let listener = std::os::unix::net::UnixListener::bind(dir.join("c.sock")).unwrap();
            listener.set_nonblocking(true).unwrap();
            let mut client = std::os::unix::net::UnixStream::connect(dir.join("c.sock")).unwrap();
            let _ = std::fs::remove_dir_all(&dir);
            let wake = eventfd();
            let irq = eventfd();
            enforce(class);
            let mut fds = [
                libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: wake.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            ];
            // SAFETY: a live array of two pollfds.
            assert_eq!(unsafe { libc::poll(fds.as_mut_ptr(), 2, 1000) }, 1);
            let flags = libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
            // SAFETY: no address pointers; the descriptor is owned below.
            let fd = unsafe { libc::accept4(listener.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut(), flags) };
            assert!(fd >= 0);
            // SAFETY: a fresh descriptor nobody else owns.
            let mut server = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
            let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
            let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
            // SAFETY: `cred` and `len` are live locals of the sizes given.
            let rc = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_PEERCRED, (&mut cred as *mut libc::ucred).cast(), &mut len) };
            assert_eq!(rc, 0);
            client.write_all(b"key").unwrap();
            let mut got = [0u8; 3];
            server.read_exact(&mut got).unwrap();
            server.write_all(b"output").unwrap();
            let mut echoed = [0u8; 6];
            client.read_exact(&mut echoed).unwrap();
            kick_and_wait_poll(&wake);
            let one = 1u64.to_ne_bytes();
            // SAFETY: an 8-byte local buffer.
            assert_eq!(unsafe { libc::write(irq.as_raw_fd(), one.as_ptr().cast(), 8) }, 8);
        }
        ThreadClass::Snapshot => {
            use std::os::unix::fs::FileExt;
            let disk = tempfile_rw();
            let base = std::env::temp_dir().join(format!("tern-seccomp-snapshot-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&base);
            std::fs::create_dir_all(&base).unwrap();
            enforce(class);
            // A staging directory with a file written at an offset, sized, synced,
            // a reflink attempt from a disk, then the rename into place and removal.
            let staging = base.join(".snap.partial");
            std::fs::DirBuilder::new().create(&staging).unwrap();
            let path = staging.join("memory.bin");
            let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path).unwrap();
            file.write_all_at(b"page", 4096).unwrap();
            file.set_len(1 << 20).unwrap();
            file.sync_all().unwrap();
            let mut back = [0u8; 4];
            file.read_exact_at(&mut back, 4096).unwrap();
            assert_eq!(&back, b"page");
            assert_eq!(std::fs::metadata(&path).unwrap().len(), 1 << 20);
            assert!(std::fs::canonicalize(&path).is_ok());
            // SAFETY: FICLONE with a descriptor argument; either may refuse, the call is what matters.
            let _ = unsafe { libc::ioctl(file.as_raw_fd(), 0x4004_9409, disk.as_raw_fd()) };
            let (from, to) = (std::ffi::CString::new(staging.to_str().unwrap()).unwrap(), std::ffi::CString::new(base.join("snap").to_str().unwrap()).unwrap());
            // SAFETY: two NUL-terminated paths that outlive the call.
            assert_eq!(unsafe { libc::renameat2(libc::AT_FDCWD, from.as_ptr(), libc::AT_FDCWD, to.as_ptr(), libc::RENAME_NOREPLACE) }, 0);
            std::fs::remove_dir_all(&base).unwrap();
        }
        ThreadClass::MigrationIncoming => {
            let (mut a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
            enforce(class);
            // The source's bytes in, acknowledgements out; buffers grow as they come.
            b.write_all(b"frame").unwrap();
            let mut buf = Vec::with_capacity(1 << 20);
            buf.resize(5, 0);
            a.read_exact(&mut buf).unwrap();
            a.write_all(b"ack").unwrap();
        }
    }
    0
}


/// A scratch file, opened read-write (and already unlinked).
fn tempfile_rw() -> std::fs::File {
    let path = std::env::temp_dir().join(format!("tern-seccomp-{}-{}", std::process::id(), rand_suffix()));
    let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path).unwrap();
    file.set_len(1 << 16).unwrap();
    std::fs::remove_file(&path).unwrap();
    file
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}
