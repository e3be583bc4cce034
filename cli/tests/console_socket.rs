//! `tern run --serial socket=PATH` and `tern console PATH`, end to end: a tiny guest
//! (an ELF "kernel" assembled here, entered in 64-bit mode) prints a line at once and
//! then echoes every byte it receives on COM1. These run on this machine's /dev/kvm
//! (also the software kvm_pvm, hence --allow-emulated-kvm) and fail with the reason
//! when it is missing.

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(20);
const READY: &str = "tern-guest: ready\n";

/// An ELF64 executable for x86-64 loaded at 1 MiB whose entry prints [`READY`] on
/// COM1, then forever: wait for the line status register's data-ready bit, read the
/// byte, write it back.
fn echo_guest_elf() -> Vec<u8> {
    const BASE: u64 = 0x10_0000;
    const HEADERS: u64 = 64 + 56;
    let mut code = vec![0xba, 0xf8, 0x03, 0x00, 0x00]; // mov edx, 0x3f8
    for b in READY.bytes() {
        code.extend([0xb0, b, 0xee]); // mov al, b; out dx, al
    }
    let top = code.len() as i64;
    code.extend([0xba, 0xfd, 0x03, 0x00, 0x00]); // top: mov edx, 0x3fd (LSR)
    code.extend([0xec, 0xa8, 0x01]); // in al, dx; test al, 1
    code.extend([0x74, (top - (code.len() as i64 + 2)) as i8 as u8]); // jz top
    code.extend([0xba, 0xf8, 0x03, 0x00, 0x00]); // mov edx, 0x3f8
    code.extend([0xec, 0xee]); // in al, dx (RBR); out dx, al (THR)
    code.extend([0xeb, (top - (code.len() as i64 + 2)) as i8 as u8]); // jmp top

    let size = HEADERS + code.len() as u64;
    let mut elf = Vec::new();
    elf.extend(b"\x7fELF\x02\x01\x01\x00"); // 64-bit, little-endian, version 1, SysV
    elf.extend([0u8; 8]);
    elf.extend(2u16.to_le_bytes()); // ET_EXEC
    elf.extend(0x3eu16.to_le_bytes()); // x86-64
    elf.extend(1u32.to_le_bytes());
    elf.extend((BASE + HEADERS).to_le_bytes()); // entry: the code after the headers
    elf.extend(64u64.to_le_bytes()); // program headers right after this header
    elf.extend(0u64.to_le_bytes()); // no section headers
    elf.extend(0u32.to_le_bytes());
    elf.extend(64u16.to_le_bytes());
    elf.extend(56u16.to_le_bytes());
    elf.extend(1u16.to_le_bytes());
    elf.extend(64u16.to_le_bytes());
    elf.extend(0u16.to_le_bytes());
    elf.extend(0u16.to_le_bytes());
    // PT_LOAD, R+X: the whole file at BASE.
    elf.extend(1u32.to_le_bytes());
    elf.extend(5u32.to_le_bytes());
    elf.extend(0u64.to_le_bytes());
    elf.extend(BASE.to_le_bytes());
    elf.extend(BASE.to_le_bytes());
    elf.extend(size.to_le_bytes());
    elf.extend(size.to_le_bytes());
    elf.extend(0x1000u64.to_le_bytes());
    elf.extend(code);
    elf
}

/// A fresh directory with the guest in it.
fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tern-console-e2e-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("guest.elf"), echo_guest_elf()).unwrap();
    dir
}

fn tern_run(dir: &Path, serial: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tern"));
    cmd.args(["run", "--memory", "64M", "--allow-emulated-kvm", "--kernel"])
        .arg(dir.join("guest.elf"))
        .arg("--serial")
        .arg(serial)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    cmd
}

/// A running `tern run --serial socket=...`, killed when dropped.
struct Vm {
    child: Child,
    socket: PathBuf,
}

impl Vm {
    /// Starts the echo guest; returns once its console socket (0600) is in place.
    fn start(dir: &Path) -> Vm {
        let socket = dir.join("console.sock");
        let child = tern_run(dir, &format!("socket={}", socket.display())).stderr(Stdio::null()).spawn().unwrap();
        let mut vm = Vm { child, socket };
        let started = Instant::now();
        // A stale socket left in place beforehand has another mode than tern's 0600.
        while !std::fs::symlink_metadata(&vm.socket).is_ok_and(|m| m.file_type().is_socket() && m.mode() & 0o777 == 0o600) {
            if let Some(status) = vm.child.try_wait().unwrap() {
                panic!("tern ended before its console socket appeared: {status}");
            }
            assert!(started.elapsed() < DEADLINE, "no console socket at {}", vm.socket.display());
            std::thread::sleep(Duration::from_millis(10));
        }
        vm
    }

    fn assert_running(&mut self) {
        assert!(self.child.try_wait().unwrap().is_none(), "the guest's tern ended");
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = self.socket.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Reads from `conn` until `needle` arrived; returns everything read.
fn read_until(conn: &mut UnixStream, needle: &str) -> String {
    conn.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
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

/// Connects and reads the first line; retried while the previous client's detach
/// has not been seen yet (the refusal line).
fn attach_when_free(path: &Path) -> (UnixStream, String) {
    let started = Instant::now();
    loop {
        let mut conn = UnixStream::connect(path).unwrap();
        let first = read_until(&mut conn, "\n");
        if !first.contains("already attached") {
            return (conn, first);
        }
        assert!(started.elapsed() < DEADLINE, "the console stayed attached");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `tern console PATH` with pipes; its stdout collected as it comes.
struct ConsoleClient {
    child: Child,
    stdout: Arc<Mutex<Vec<u8>>>,
}

impl ConsoleClient {
    fn start(path: &Path, uid: Option<u32>) -> ConsoleClient {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tern"));
        cmd.arg("console").arg(path).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        if let Some(uid) = uid {
            cmd.uid(uid).gid(uid);
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let mut from = child.stdout.take().unwrap();
        let sink = stdout.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        ConsoleClient { child, stdout }
    }

    fn wait_for_output(&self, needle: &str) -> String {
        let started = Instant::now();
        loop {
            let got = String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned();
            if got.contains(needle) {
                return got;
            }
            assert!(started.elapsed() < DEADLINE, "tern console never showed {needle:?}; got {got:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(bytes).unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for the exit; returns (status code, stderr).
    fn finish(mut self) -> (i32, String) {
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(started.elapsed() < DEADLINE, "tern console did not exit");
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut stderr = String::new();
        self.child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
        (status.code().unwrap_or(-1), stderr)
    }
}

#[test]
fn the_console_keeps_what_the_guest_printed_takes_input_and_survives_detach_and_reattach() {
    let dir = test_dir("session");
    // What a killed tern leaves behind: a socket file nobody listens on.
    drop(UnixListener::bind(dir.join("console.sock")).unwrap());
    let mut vm = Vm::start(&dir);
    assert_eq!(std::fs::metadata(&vm.socket).unwrap().permissions().mode() & 0o777, 0o600, "owner-only");
    // The guest printed its line at once, before anyone attached.
    std::thread::sleep(Duration::from_millis(300));

    // First client: the buffered line, then an echo of what it types.
    let (mut first, got) = attach_when_free(&vm.socket);
    assert_eq!(got, READY, "the client attaching late gets the earlier output first");
    first.write_all(b"ping\n").unwrap();
    read_until(&mut first, "ping\n");

    // A second client while the first is attached: one line, then closed.
    let mut second = UnixStream::connect(&vm.socket).unwrap();
    second.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut refusal = String::new();
    second.read_to_string(&mut refusal).unwrap();
    assert_eq!(refusal, "tern: console already attached\r\n");

    // The first client leaves; the guest runs on.
    drop(first);
    vm.assert_running();

    // `tern console` attaches (once the detach was seen), shows the recent output,
    // sends keys, and detaches on Ctrl-A x.
    let started = Instant::now();
    let mut client = loop {
        let client = ConsoleClient::start(&vm.socket, None);
        let got = client.wait_for_output("\n");
        if !got.contains("already attached") {
            break client;
        }
        let _ = client.finish();
        assert!(started.elapsed() < DEADLINE, "the console stayed attached");
    };
    client.wait_for_output("ping\n");
    client.send(b"pong\n");
    let shown = client.wait_for_output("pong\n");
    assert!(shown.starts_with(&format!("{READY}ping\npong\n")), "{shown:?}");
    // Ctrl-A Ctrl-A is one literal Ctrl-A for the guest (which echoes it).
    client.send(&[0x01, 0x01, b'\n']);
    client.wait_for_output("pong\n\x01\n");
    client.send(&[0x01, b'x']);
    let (code, stderr) = client.finish();
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains(&format!("tern: attached to {}; Ctrl-A x detaches", vm.socket.display())), "{stderr}");
    assert!(stderr.contains("detached"), "{stderr}");
    vm.assert_running();

    // Attach again: everything so far is still there, and input still works.
    let (mut again, mut got) = attach_when_free(&vm.socket);
    if !got.ends_with("pong\n\x01\n") {
        got += &read_until(&mut again, "pong\n\x01\n");
    }
    assert_eq!(got, format!("{READY}ping\npong\n\x01\n"));
    again.write_all(b"still here\n").unwrap();
    read_until(&mut again, "still here\n");
    vm.assert_running();
}

#[test]
fn a_client_of_another_user_is_refused() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test runs a client as another user and needs root");
    let dir = test_dir("other-user");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut vm = Vm::start(&dir);
    // Let the file system admit the other user; tern itself must still refuse it.
    std::fs::set_permissions(&vm.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let nobody = ConsoleClient::start(&vm.socket, Some(65534));
    let got = nobody.wait_for_output("\n");
    assert_eq!(got, "tern: permission denied: uid 65534 may not attach to this console\r\n");
    let (code, stderr) = nobody.finish();
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("closed by tern"), "{stderr}");
    // The owner is served, and sees the guest's output.
    let (_conn, got) = attach_when_free(&vm.socket);
    assert_eq!(got, READY);
    vm.assert_running();
}

#[test]
fn a_path_that_is_not_a_stale_socket_is_one_clear_error_at_start() {
    let dir = test_dir("bad-path");
    let file = dir.join("notes.txt");
    std::fs::write(&file, b"precious").unwrap();
    for (serial, expect) in [
        (format!("socket={}", file.display()), format!("console socket path {} exists and is a regular file, not a socket", file.display())),
        (
            format!("socket={}", dir.join("missing/console.sock").display()),
            format!("cannot create console socket {}: directory {} does not exist", dir.join("missing/console.sock").display(), dir.join("missing").display()),
        ),
    ] {
        let out = tern_run(&dir, &serial).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(&expect), "expected {expect:?} in {stderr:?}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"precious");
}
