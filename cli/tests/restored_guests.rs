//! What a restored guest is, end to end on this machine's /dev/kvm (kvm_pvm too, hence
//! --allow-emulated-kvm): its VM generation ID (kept by a plain restore, new for every
//! clone) and its reboots. The tiny guest prints the 16 bytes of the VM generation ID
//! (guest-physical 0xfe000, where the DSDT's VGEN device points) as 32 hex digits on
//! COM1, line after line, and resets the machine through 0xCF9 once a byte arrives on
//! its console.

mod tiny_kernel;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Output, Stdio};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(30);
/// Where the VM generation ID lives (an offset in a snapshot's memory file too).
const VMGENID_ADDR: u64 = 0xfe000;

/// Forever: if COM1 holds an input byte, read it and reset through 0xCF9; else print
/// the 16 bytes at 0xfe000 as hex and a newline, spin a while. 32-bit code.
fn id_printing_guest() -> Vec<u8> {
    let mut code = vec![
        0xba, 0xfd, 0x03, 0x00, 0x00, // top: mov edx, 0x3fd (LSR)
        0xec, // in al, dx
        0xa8, 0x01, // test al, 1 (data ready)
        0x75, 0x48, // jnz reset
        0xbe, 0x00, 0xe0, 0x0f, 0x00, // mov esi, 0xfe000
        0xb9, 0x10, 0x00, 0x00, 0x00, // mov ecx, 16
        0xba, 0xf8, 0x03, 0x00, 0x00, // mov edx, 0x3f8
        0x0f, 0xb6, 0x06, // byte: movzx eax, byte [esi]
        0xc1, 0xe0, 0x18, // shl eax, 24
        0xbf, 0x02, 0x00, 0x00, 0x00, // mov edi, 2
        0xc1, 0xc0, 0x04, // digit: rol eax, 4
        0x89, 0xc3, // mov ebx, eax
        0x83, 0xe3, 0x0f, // and ebx, 0xf
        0x83, 0xc3, 0x30, // add ebx, '0'
        0x83, 0xfb, 0x39, // cmp ebx, '9'
        0x76, 0x03, // jbe emit
        0x83, 0xc3, 0x27, // add ebx, 'a' - '9' - 1
        0x93, 0xee, 0x93, // emit: xchg eax, ebx; out dx, al; xchg eax, ebx
        0xff, 0xcf, // dec edi
        0x75, 0xe6, // jnz digit
        0xff, 0xc6, // inc esi
        0xff, 0xc9, // dec ecx
        0x75, 0xd5, // jnz byte
        0xb0, 0x0a, 0xee, // mov al, 10; out dx, al
        0xbe, 0x00, 0x00, 0x02, 0x00, // mov esi, 0x20000
        0xff, 0xce, // delay: dec esi
        0x75, 0xfc, // jnz delay
        0xeb, 0xae, // jmp top
        0xba, 0xf8, 0x03, 0x00, 0x00, // reset: mov edx, 0x3f8
        0xec, // in al, dx (take the byte)
    ];
    code.extend_from_slice(tiny_kernel::RESET_CF9);
    code
}

fn test_dir(name: &str) -> PathBuf {
    tiny_kernel::guest_dir("restored", name, &id_printing_guest())
}

/// A tern process, killed when dropped.
struct Tern(Child);

impl Drop for Tern {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tern() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tern"));
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    cmd
}

/// `tern run` of the guest, its console in `serial`, its API socket `api.sock`.
fn start_source(dir: &Path, serial: &str) -> Tern {
    let child = tern()
        .args(["run", "--memory", "64M", "--allow-emulated-kvm", "--kernel"])
        .arg(dir.join("guest.elf"))
        .arg("--serial")
        .arg(format!("file={}", dir.join(serial).display()))
        .arg("--api-socket")
        .arg(dir.join("api.sock"))
        .spawn()
        .unwrap();
    let t = Instant::now();
    while UnixStream::connect(dir.join("api.sock")).is_err() {
        assert!(t.elapsed() < DEADLINE, "no API socket");
        std::thread::sleep(Duration::from_millis(10));
    }
    Tern(child)
}

/// `tern snapshot --stop` of the source; waits for it to end.
fn snapshot_and_stop(dir: &Path, source: Tern, snap: &Path) {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["snapshot", "--stop", "--api-socket"])
        .arg(dir.join("api.sock"))
        .arg("--to")
        .arg(snap)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut source = source;
    let status = source.0.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

fn start_restore(snap: &Path, serial: &Path, extra: &[&str]) -> Tern {
    let child = tern()
        .args(["restore", "--allow-emulated-kvm", "--from"])
        .arg(snap)
        .arg("--serial")
        .arg(format!("file={}", serial.display()))
        .args(extra)
        .spawn()
        .unwrap();
    Tern(child)
}

/// The whole ID lines the guest printed to `serial` so far (a line the guest was in
/// the middle of at a snapshot is shorter, and left out).
fn id_lines(serial: &Path) -> Vec<String> {
    tiny_kernel::whole_lines(serial).into_iter().filter(|l| l.len() == 32 && l.bytes().all(|b| b.is_ascii_hexdigit())).collect()
}

/// Waits for `count` whole ID lines; they must all be one ID, which is returned.
fn printed_id(serial: &Path, count: usize) -> String {
    let t = Instant::now();
    loop {
        let lines = id_lines(serial);
        if lines.len() >= count {
            assert!(lines.iter().all(|l| *l == lines[0]), "{}: the ID changed while it ran: {lines:?}", serial.display());
            return lines[0].clone();
        }
        assert!(t.elapsed() < DEADLINE, "{} printed {lines:?}", serial.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The ID in a snapshot's memory file, as the guest prints it.
fn snapshot_id(snap: &Path) -> String {
    let mut id = [0u8; 16];
    std::fs::File::open(snap.join("memory.bin")).unwrap().read_exact_at(&mut id, VMGENID_ADDR).unwrap();
    id.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn clones_get_a_new_vm_generation_id_each_and_plain_restores_keep_it() {
    let dir = test_dir("vmgenid");
    let source = start_source(&dir, "src.serial");
    let at_boot = printed_id(&dir.join("src.serial"), 2);
    assert_ne!(at_boot, "0".repeat(32), "a cold boot gets a random ID");
    let snap = dir.join("snap");
    snapshot_and_stop(&dir, source, &snap);
    assert_eq!(snapshot_id(&snap), at_boot, "the ID is in guest memory, so in the snapshot");

    // Another cold boot of the same machine: another ID.
    let other = start_source(&dir, "other.serial");
    assert_ne!(printed_id(&dir.join("other.serial"), 2), at_boot);
    drop(other);

    let plain_serial = dir.join("plain.serial");
    let plain = start_restore(&snap, &plain_serial, &[]);
    let clone_serials: Vec<PathBuf> = (1..=2).map(|n| dir.join(format!("clone{n}.serial"))).collect();
    let clones: Vec<Tern> = clone_serials.iter().map(|s| start_restore(&snap, s, &["--clone"])).collect();
    assert_eq!(printed_id(&plain_serial, 2), at_boot, "a plain restore keeps the ID");
    let cloned: Vec<String> = clone_serials.iter().map(|s| printed_id(s, 2)).collect();
    for id in &cloned {
        assert_ne!(*id, at_boot, "a clone gets a new ID");
        assert_ne!(*id, "0".repeat(32));
    }
    assert_ne!(cloned[0], cloned[1], "every clone its own");
    drop(clones);
    drop(plain);
    // The snapshot itself still holds the original.
    assert_eq!(snapshot_id(&snap), at_boot);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Replaces `path` the way a package upgrade does: a new file renamed over it.
fn install(path: &Path, image: &[u8]) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, image).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A tiny kernel that prints `mark` and powers off.
fn marking_kernel(mark: u8) -> Vec<u8> {
    tiny_kernel::pvh_elf(&tiny_kernel::marking(mark, tiny_kernel::POWER_OFF))
}

/// A snapshot (`--stop`) of the ID-printing guest, taken while it runs.
fn running_snapshot(dir: &Path) -> PathBuf {
    let source = start_source(dir, "src.serial");
    printed_id(&dir.join("src.serial"), 1);
    let snap = dir.join("snap");
    snapshot_and_stop(dir, source, &snap);
    snap
}

/// Attaches to `tern`'s console socket once the guest prints, sends one byte (the
/// guest resets), and collects the console until tern ends; returns (exit status,
/// stderr, console output after the attach).
fn reset_through_the_console(mut tern: Tern, console: &Path) -> (Option<i32>, String, Vec<u8>) {
    let t = Instant::now();
    let mut conn = loop {
        match UnixStream::connect(console) {
            Ok(conn) => break conn,
            Err(e) => assert!(t.elapsed() < DEADLINE, "no console socket: {e}"),
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    conn.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    // The guest runs (its state is restored) once it printed a whole line.
    while seen.iter().filter(|b| **b == b'\n').count() < 2 {
        let n = conn.read(&mut buf).expect("console output");
        assert!(n > 0, "tern ended before the guest printed: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    conn.write_all(b"r").unwrap();
    conn.read_to_end(&mut seen).expect("the console closes when tern ends");
    let status = tern.0.wait().unwrap();
    let mut stderr = String::new();
    tern.0.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    (status.code(), stderr, seen)
}

fn restore_on_console(snap: &Path, console: &Path, extra: &[&str]) -> Tern {
    let child = tern()
        .args(["restore", "--allow-emulated-kvm", "--from"])
        .arg(snap)
        .arg("--serial")
        .arg(format!("socket={}", console.display()))
        .args(extra)
        .spawn()
        .unwrap();
    Tern(child)
}

const CF9_REBOOT: &str = "tern: guest rebooted (reset through the reset control register (port 0xCF9)); booting again (boot 2)";

#[test]
fn a_restored_guest_reboots_into_the_kernel_it_booted_or_the_one_given() {
    let dir = test_dir("restore-reboot");
    let snap = running_snapshot(&dir);
    // The kernel file the source booted is upgraded: the restored guest's reboot boots it.
    install(&dir.join("guest.elf"), &marking_kernel(b'P'));
    let console = dir.join("a.console");
    let (status, stderr, out) = reset_through_the_console(restore_on_console(&snap, &console, &[]), &console);
    assert_eq!(status, Some(0), "{stderr}");
    assert!(stderr.contains(CF9_REBOOT), "{stderr}");
    assert!(stderr.contains("tern: guest powered off"), "{stderr}");
    assert!(out.ends_with(b"\nP") || out.ends_with(b"P"), "boot 2 ran the recorded kernel: {}", String::from_utf8_lossy(&out));
    assert_eq!(out.iter().filter(|b| **b == b'P').count(), 1, "{}", String::from_utf8_lossy(&out));

    // --kernel here wins over the recorded one, which is gone.
    std::fs::remove_file(dir.join("guest.elf")).unwrap();
    install(&dir.join("other.elf"), &marking_kernel(b'Q'));
    let console = dir.join("b.console");
    let other = dir.join("other.elf");
    let clone = restore_on_console(&snap, &console, &["--clone", "--kernel", other.to_str().unwrap()]);
    let (status, stderr, out) = reset_through_the_console(clone, &console);
    assert_eq!(status, Some(0), "{stderr}");
    assert!(stderr.contains(CF9_REBOOT), "{stderr}");
    assert!(out.ends_with(b"Q") && !out.contains(&b'P'), "{}", String::from_utf8_lossy(&out));

    // Neither: a reset ends tern, saying why.
    let console = dir.join("c.console");
    let (status, stderr, _) = reset_through_the_console(restore_on_console(&snap, &console, &[]), &console);
    assert_eq!(status, Some(0), "{stderr}");
    let gone = dir.join("guest.elf");
    let expect = format!(
        "tern: guest reset (reset through the reset control register (port 0xCF9)); exiting (not booted again: the kernel the source booted, {}, is not on this host; give --kernel)",
        gone.display()
    );
    assert!(stderr.contains(&expect), "{stderr}");
    assert!(!stderr.contains("rebooted"), "{stderr}");
    // A --kernel that is not there is refused before anything is restored.
    let out = tern().args(["restore", "--allow-emulated-kvm", "--serial", "null", "--kernel"]).arg(&gone).arg("--from").arg(&snap).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.lines().filter(|l| l.starts_with("tern: error:")).count() == 1 && err.contains("kernel"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_received_guest_reboots_into_the_kernel_the_source_booted() {
    let dir = test_dir("receive-reboot");
    let source = start_source(&dir, "src.serial");
    printed_id(&dir.join("src.serial"), 1);
    let console = dir.join("dst.console");
    let (mut receiver, stderr, port) = start_receiver(format!("socket={}", console.display()));
    let out = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["migrate", "--api-socket"])
        .arg(dir.join("api.sock"))
        .args(["--to", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    drop(source);
    install(&dir.join("guest.elf"), &marking_kernel(b'P'));
    receiver.stderr = Some(stderr.into_inner());
    let (status, stderr, out) = reset_through_the_console(Tern(receiver), &console);
    assert_eq!(status, Some(0), "{stderr}");
    assert!(stderr.contains(CF9_REBOOT), "{stderr}");
    assert!(out.ends_with(b"P"), "{}", String::from_utf8_lossy(&out));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A `tern receive` on a free loopback port with the serial destination `serial`: the
/// process, its stderr (past the line that names the port) and the port.
fn start_receiver(serial: String) -> (Child, BufReader<ChildStderr>, u16) {
    let mut receiver = tern()
        .args(["receive", "--listen", "127.0.0.1:0", "--allow-emulated-kvm", "--serial"])
        .arg(serial)
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(receiver.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let port: u16 = line.trim().rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("{line}"));
    (receiver, stderr, port)
}

/// Waits for the API socket at `sock` to answer (or `t` to end, which fails the test).
fn wait_for_api(t: &mut Tern, sock: &Path) {
    let started = Instant::now();
    while UnixStream::connect(sock).is_err() {
        if let Some(status) = t.0.try_wait().unwrap() {
            let mut err = String::new();
            t.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            panic!("tern ended ({status}) before {} answered: {err}", sock.display());
        }
        assert!(started.elapsed() < DEADLINE, "{} never answered", sock.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The counting guest's counter in a snapshot's memory file.
fn snapshot_counter(snap: &Path) -> u32 {
    let mut bytes = [0u8; 4];
    std::fs::File::open(snap.join("memory.bin")).unwrap().read_exact_at(&mut bytes, tiny_kernel::COUNTER).unwrap();
    u32::from_le_bytes(bytes)
}

/// The ticks a guest restored or received at counter `from` printed: its first
/// whole line is the tick it was printing then or the next, and they follow on.
fn assert_continues(serial: &Path, from: u32) -> Vec<u32> {
    let ticks = tiny_kernel::wait_for_tick(serial, from + 3);
    assert!(ticks[0] == from || ticks[0] == from + 1, "{} continues from {from}, printed {ticks:?}", serial.display());
    assert!(ticks.windows(2).all(|w| w[1] == w[0] + 1), "{ticks:?}");
    ticks
}

#[test]
fn a_restored_guest_is_snapshotted_again_and_migrated_and_each_continues_counting() {
    let dir = test_dir("restored-moves");
    std::fs::write(dir.join("guest.elf"), tiny_kernel::pvh_elf(tiny_kernel::COUNTING_GUEST)).unwrap();
    let source = start_source(&dir, "src.serial");
    tiny_kernel::wait_for_tick(&dir.join("src.serial"), 2);
    let first = dir.join("first");
    snapshot_and_stop(&dir, source, &first);
    let at_first = snapshot_counter(&first);

    // Restored, with a control socket of its own.
    let (restored_serial, restored_sock) = (dir.join("restored.serial"), dir.join("restored.sock"));
    let mut restored = start_restore(&first, &restored_serial, &["--api-socket", restored_sock.to_str().unwrap()]);
    wait_for_api(&mut restored, &restored_sock);
    assert_continues(&restored_serial, at_first);

    // Snapshotted again while it runs: it runs on, and the second snapshot restores.
    let second = dir.join("second");
    let out = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["snapshot", "--api-socket"])
        .arg(&restored_sock)
        .arg("--to")
        .arg(&second)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let at_second = snapshot_counter(&second);
    assert!(at_second > at_first, "the second snapshot ({at_second}) is later than the first ({at_first})");
    tiny_kernel::wait_for_tick(&restored_serial, at_second + 3);
    let again_serial = dir.join("again.serial");
    let again = start_restore(&second, &again_serial, &[]);
    assert_continues(&again_serial, at_second);
    drop(again);

    // Migrated to a receiver on loopback: the restored source ends, the destination
    // counts on from where it was.
    let receiver_serial = dir.join("received.serial");
    let (receiver, mut stderr, port) = start_receiver(format!("file={}", receiver_serial.display()));
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    let _receiver = Tern(receiver);
    let out = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["migrate", "--api-socket"])
        .arg(&restored_sock)
        .args(["--to", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status = restored.0.wait().unwrap();
    let mut err = String::new();
    restored.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.contains("tern: guest migrated to the destination; exiting"), "{err}");
    let last = *tiny_kernel::ticks(&restored_serial).last().unwrap();
    assert!(last > at_second, "{last}");
    let received = tiny_kernel::wait_for_tick(&receiver_serial, last + 4);
    assert!(received[0] == last + 1 || received[0] == last + 2, "the restored guest printed up to {last}, the received one {received:?}");
    assert!(received.windows(2).all(|w| w[1] == w[0] + 1), "{received:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
