//! `tern snapshot` and `tern restore`, end to end on this machine's /dev/kvm (the
//! software kvm_pvm too, hence --allow-emulated-kvm): a tiny guest counts ticks in
//! guest memory at 0x10000 and prints each tick's value as 8 hex digits on COM1.
//! A snapshot of the running guest leaves it running; restores of the snapshot (two
//! at once, the source gone) continue from the snapshot's counter, on copies of the
//! disk as it was at the snapshot. Every bad input is one error line, no panic, and
//! a failed snapshot leaves the guest running.

mod tiny_kernel;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tiny_kernel::{ticks, wait_for_tick, COUNTER, COUNTING_GUEST};
use vmm::snapshot::format::Manifest;

const DEADLINE: Duration = Duration::from_secs(30);
/// What the test disk holds when the snapshot is taken.
const DISK_CONTENT: &[u8] = b"DISK at the snapshot";

fn test_dir(name: &str) -> PathBuf {
    let dir = tiny_kernel::guest_dir("snapshot-e2e", name, COUNTING_GUEST);
    let disk = std::fs::File::create(dir.join("disk.img")).unwrap();
    disk.set_len(1 << 20).unwrap();
    disk.write_all_at(DISK_CONTENT, 0).unwrap();
    dir
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
    cmd.stdin(Stdio::null());
    cmd
}

/// `tern run` of the counting guest with a disk, its console in `src.serial`.
fn start_source(dir: &Path) -> Tern {
    let child = tern()
        .args(["run", "--memory", "64M", "--allow-emulated-kvm", "--kernel"])
        .arg(dir.join("guest.elf"))
        .arg("--serial")
        .arg(format!("file={}", dir.join("src.serial").display()))
        .arg("--api-socket")
        .arg(dir.join("api.sock"))
        .arg("--disk")
        .arg(format!("path={}", dir.join("disk.img").display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while UnixStream::connect(dir.join("api.sock")).is_err() {
        assert!(t.elapsed() < DEADLINE, "no API socket");
        std::thread::sleep(Duration::from_millis(10));
    }
    Tern(child)
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).output().unwrap()
}

fn snapshot(dir: &Path, to: &Path, extra: &[&str]) -> Output {
    run(tern().args(["snapshot", "--api-socket"]).arg(dir.join("api.sock")).arg("--to").arg(to).args(extra))
}

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Exactly one error line naming `expect`, a non-zero status, no panic.
fn assert_one_error_line(out: &Output, expect: &str) {
    let (_, err) = text(out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("tern: error:")).collect();
    assert_eq!(errors.len(), 1, "one error line: {err}");
    assert!(errors[0].contains(expect), "expected `{expect}` in: {err}");
}

/// The guest's counter in the snapshot's memory file.
fn snapshot_counter(snap: &Path) -> u32 {
    let mut bytes = [0u8; 4];
    std::fs::File::open(snap.join("memory.bin")).unwrap().read_exact_at(&mut bytes, COUNTER).unwrap();
    u32::from_le_bytes(bytes)
}

fn start_restore(snap: &Path, serial: &Path, extra: &[String]) -> Tern {
    let child = tern()
        .args(["restore", "--allow-emulated-kvm", "--from"])
        .arg(snap)
        .arg("--serial")
        .arg(format!("file={}", serial.display()))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    Tern(child)
}

/// The first stderr line of a running tern that contains `needle`.
fn stderr_line(t: &mut Tern, needle: &str) -> String {
    let mut reader = BufReader::new(t.0.stderr.as_mut().unwrap());
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            panic!("tern ended without saying `{needle}`");
        }
        if line.contains(needle) {
            return line;
        }
    }
}

#[test]
fn a_running_guest_is_snapshotted_keeps_running_and_two_restores_continue_from_it() {
    let dir = test_dir("continue");
    let source = start_source(&dir);
    let src_serial = dir.join("src.serial");
    wait_for_tick(&src_serial, 3);
    let snap = dir.join("snap");
    let out = snapshot(&dir, &snap, &[]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    for word in ["snapshot written to", "zero pages skipped", "pause", "memory write", "state capture", "disk copy", "resume", "1 copied"] {
        assert!(stdout.contains(word), "{word}: {stdout}");
    }
    let at_snapshot = snapshot_counter(&snap);
    assert!(at_snapshot >= 3, "{at_snapshot}");
    // The source keeps running past the snapshot.
    wait_for_tick(&src_serial, at_snapshot + 3);
    // The committed snapshot: a manifest, no staging directory left, a sparse memory file.
    assert!(snap.join("manifest").is_file());
    let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().contains("partial")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let memory = std::fs::metadata(snap.join("memory.bin")).unwrap();
    assert_eq!(memory.len(), 64 << 20);
    assert!(memory.blocks() * 512 < 16 << 20, "zero pages are holes: {} bytes allocated", memory.blocks() * 512);
    // The guest's disk changes after the snapshot; then the source goes away.
    std::fs::OpenOptions::new().write(true).open(dir.join("disk.img")).unwrap().write_all_at(b"CHANGED", 0).unwrap();
    drop(source);

    let restores: Vec<(Tern, PathBuf, PathBuf)> = (1..=2)
        .map(|n| {
            let serial = dir.join(format!("r{n}.serial"));
            let disk = dir.join(format!("r{n}.img"));
            let t = start_restore(&snap, &serial, &["--disk".into(), format!("path={}", disk.display())]);
            (t, serial, disk)
        })
        .collect();
    for (mut t, serial, disk) in restores {
        let said = stderr_line(&mut t, "guest restored from");
        assert!(said.contains("guest restored from") && said.contains("state load") && said.contains("memory map") && said.contains("device activation"), "{said}");
        let ticks = wait_for_tick(&serial, at_snapshot + 3);
        // It continues from the snapshot's instant: the first whole line is the tick
        // being printed then or the next, never a fresh boot's 1.
        assert!(ticks[0] == at_snapshot || ticks[0] == at_snapshot + 1, "snapshot at {at_snapshot}, restore printed {ticks:?}");
        assert!(ticks.windows(2).all(|w| w[1] == w[0] + 1), "{ticks:?}");
        let content = std::fs::read(&disk).unwrap();
        assert_eq!(&content[..DISK_CONTENT.len()], DISK_CONTENT, "the restored disk is the snapshot's");
        assert_eq!(content.len(), 1 << 20);
    }
    // The snapshot itself was never written.
    assert_eq!(snapshot_counter(&snap), at_snapshot);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn failed_snapshots_leave_the_guest_running_and_stop_ends_it() {
    let dir = test_dir("failures");
    let mut source = start_source(&dir);
    let src_serial = dir.join("src.serial");
    wait_for_tick(&src_serial, 2);
    std::fs::create_dir(dir.join("exists")).unwrap();
    assert_one_error_line(&snapshot(&dir, &dir.join("exists"), &[]), "already exists");
    assert_one_error_line(&snapshot(&dir, &dir.join("missing/snap"), &[]), "missing");
    // Refused by the running tern itself: /proc takes no directories.
    let out = snapshot(&dir, Path::new("/proc/tern-snapshot-test"), &[]);
    assert_one_error_line(&out, "snapshot to /proc/tern-snapshot-test failed, the guest keeps running");
    let now = *ticks(&src_serial).last().unwrap();
    wait_for_tick(&src_serial, now + 3);

    let snap = dir.join("stopped");
    let out = snapshot(&dir, &snap, &["--stop", "--no-disks"]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(text(&out).0.contains("then stopped"), "{:?}", text(&out));
    let status = source.0.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(source.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.contains("snapshot written; the guest is stopped"), "{err}");
    let manifest = Manifest::decode(&std::fs::read(snap.join("manifest")).unwrap()).unwrap();
    assert_eq!(manifest.disks.len(), 1);
    assert!(manifest.disks[0].copy.is_none() && manifest.disks[0].size_bytes == 1 << 20);
    assert!(!snap.join("disk0.img").exists());

    // A --no-disks snapshot restores only on an image of the recorded size.
    let small = dir.join("small.img");
    std::fs::File::create(&small).unwrap().set_len(512 << 10).unwrap();
    let restore = |extra: &[&str]| run(tern().args(["restore", "--allow-emulated-kvm", "--serial", "null", "--from"]).arg(&snap).args(extra));
    assert_one_error_line(&restore(&[]), "without a copy (--no-disks)");
    assert_one_error_line(&restore(&["--disk", &format!("path={}", small.display())]), "smaller than the snapshot's disk 0");
    // On the original image it runs, from where it stopped.
    let serial = dir.join("back.serial");
    let stopped_at = snapshot_counter(&snap);
    let _back = start_restore(&snap, &serial, &["--disk".into(), format!("path={}", dir.join("disk.img").display())]);
    wait_for_tick(&serial, stopped_at + 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_snapshots_are_refused_with_one_line() {
    let dir = test_dir("bad");
    let _source = start_source(&dir);
    wait_for_tick(&dir.join("src.serial"), 2);
    let snap = dir.join("snap");
    assert!(snapshot(&dir, &snap, &["--stop"]).status.success());
    let restore = |extra: &[&str]| run(tern().args(["restore", "--allow-emulated-kvm", "--serial", "null", "--from"]).arg(&snap).args(extra));
    let with = |file: &str, bytes: &[u8], expect: &str, extra: &[&str]| {
        let path = snap.join(file);
        let saved = std::fs::read(&path).unwrap();
        std::fs::write(&path, bytes).unwrap();
        assert_one_error_line(&restore(extra), expect);
        std::fs::write(&path, saved).unwrap();
    };

    assert_one_error_line(&run(tern().args(["restore", "--allow-emulated-kvm", "--from"]).arg(dir.join("nope"))), "No such file");
    std::fs::rename(snap.join("manifest"), dir.join("manifest.away")).unwrap();
    assert_one_error_line(&restore(&[]), "has no manifest");
    std::fs::rename(dir.join("manifest.away"), snap.join("manifest")).unwrap();
    std::fs::rename(snap.join("state.bin"), dir.join("state.away")).unwrap();
    assert_one_error_line(&restore(&[]), "state.bin: No such file");
    std::fs::rename(dir.join("state.away"), snap.join("state.bin")).unwrap();

    let state = std::fs::read(snap.join("state.bin")).unwrap();
    with("state.bin", &state[..state.len() / 2], "(truncated or replaced)", &[]);
    let mut flipped = state.clone();
    flipped[state.len() / 3] ^= 1;
    with("state.bin", &flipped, "is corrupt: its CRC32", &[]);
    let manifest_bytes = std::fs::read(snap.join("manifest")).unwrap();
    with("manifest", &manifest_bytes[..manifest_bytes.len() - 20], "manifest", &[]);
    let manifest = Manifest::decode(&manifest_bytes).unwrap();
    with("manifest", &Manifest { version: 2, ..manifest.clone() }.encode(), "snapshot format version 2, this tern reads version 1", &[]);
    let mut other = manifest.clone();
    other.sections.iter_mut().filter(|s| s.name == "state").for_each(|s| s.version = 99);
    with("manifest", &other.encode(), "section `state` version 99", &[]);
    // Guest memory is checked in full on request only.
    let memory = snap.join("memory.bin");
    let f = std::fs::OpenOptions::new().write(true).open(&memory).unwrap();
    f.write_all_at(&[0x5a], 0x200).unwrap();
    assert_one_error_line(&restore(&["--verify"]), "section `memory`");
    f.write_all_at(&[0], 0x200).unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len - 4096).unwrap();
    assert_one_error_line(&restore(&[]), "memory.bin is");
    f.set_len(len).unwrap();

    // A machine shape the flags refuse, disks that do not fit.
    assert_one_error_line(&restore(&["--memory", "32M"]), "more than --memory 32 MiB");
    assert_one_error_line(&restore(&["--disk", &format!("path={}", dir.join("disk.img").display())]), "never writes over an image");
    let (a, b) = (dir.join("a.img"), dir.join("b.img"));
    assert_one_error_line(&restore(&["--disk", &format!("path={}", a.display()), "--disk", &format!("path={}", b.display())]), "1 disks but 2");
    // A NIC the snapshot's machine does not have (parsing --net must not panic either).
    assert_one_error_line(&restore(&["--net", "bridge=ternnobridge0"]), "ternnobridge0");
    // Refusals made after the disk copy remove the copy.
    assert_one_error_line(&restore(&["--memory", "32M", "--disk", &format!("path={}", a.display())]), "more than --memory");
    assert!(!a.exists(), "the copy made for a refused restore is removed");
    let copies: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().contains(".restore-")).collect();
    assert!(copies.is_empty(), "{copies:?}");
    // Intact again: it restores.
    let serial = dir.join("ok.serial");
    let _ok = start_restore(&snap, &serial, &["--verify".into(), "--disk".into(), format!("path={}", a.display())]);
    wait_for_tick(&serial, snapshot_counter(&snap) + 2);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A tern (run or restore) of VM `name` on the "host" whose runtime directory is
/// `runtime`, once its control socket answers.
fn start_named(cmd: &mut Command, runtime: &Path, name: &str) -> Tern {
    let mut t = Tern(cmd.env("TERN_RUNTIME_DIR", runtime).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap());
    let started = Instant::now();
    while UnixStream::connect(runtime.join(name).join("api.sock")).is_err() {
        if let Some(status) = t.0.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(t.0.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("tern ended ({status}) before VM {name} answered: {err}");
        }
        assert!(started.elapsed() < DEADLINE, "VM {name} never answered");
        std::thread::sleep(Duration::from_millis(10));
    }
    t
}

/// The first bytes of the image at `path`.
fn disk_head(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()[..DISK_CONTENT.len()].to_vec()
}

#[test]
fn a_restore_from_a_definition_runs_by_name_on_its_disks() {
    let dir = test_dir("named");
    let runtime = dir.join("run");
    std::fs::create_dir_all(&runtime).unwrap();
    let name = format!("r{}", std::process::id());
    let def = dir.join("vm.toml");
    std::fs::write(&def, tiny_kernel::definition(&name, "guest.elf", &dir.join("vm.serial"), "disk.img")).unwrap();
    let named = |args: &[&str]| run(tern().env("TERN_RUNTIME_DIR", &runtime).args(args));
    let restore = |from: &Path| {
        let mut cmd = tern();
        cmd.args(["restore", "--from"]).arg(from).arg("--config").arg(&def);
        cmd
    };
    let (copies, saved) = (dir.join("copies"), dir.join("saved"));

    // `tern snapshot NAME`, with disk copies, of a VM run from the definition.
    let mut source = start_named(tern().arg("run").arg("--config").arg(&def), &runtime, &name);
    wait_for_tick(&dir.join("vm.serial"), 2);
    let out = named(&["snapshot", &name, "--to", copies.to_str().unwrap()]);
    assert!(out.status.success(), "{:?}", text(&out));
    // A name that runs is refused in one line, before any disk is looked at.
    let mut refused = restore(&copies);
    assert_one_error_line(
        &run(refused.env("TERN_RUNTIME_DIR", &runtime)),
        &format!("VM {name} is already running (runtime directory {})", runtime.join(&name).display()),
    );
    // A copy never goes over the definition's image unasked.
    let mut other = restore(&copies);
    let out = run(other.env("TERN_RUNTIME_DIR", &runtime).args(["--name", "other"]));
    assert_one_error_line(&out, &format!("the definition's disk 0 is {}", dir.join("disk.img").display()));
    assert!(text(&out).1.contains("--overwrite-disks"), "{:?}", text(&out));
    // Saved without disks and stopped by name: the definition's image is the disk.
    let out = named(&["snapshot", &name, "--to", saved.to_str().unwrap(), "--no-disks", "--stop"]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(source.0.wait().unwrap().code(), Some(0));
    let at_stop = snapshot_counter(&saved);

    let mut restored = start_named(&mut restore(&saved), &runtime, &name);
    let ticks = wait_for_tick(&dir.join("vm.serial"), at_stop + 2);
    assert!(ticks[0] == at_stop || ticks[0] == at_stop + 1, "saved at {at_stop}, restored guest printed {ticks:?}");
    let (list, _) = text(&named(&["list"]));
    let row = list.lines().find(|l| l.starts_with(&name)).unwrap_or_else(|| panic!("{name} not listed: {list}"));
    assert!(row.contains("running") && row.contains("64M"), "{row}");
    let out = named(&["stop", &name]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(restored.0.wait().unwrap().code(), Some(0));
    assert!(!text(&named(&["list"])).0.contains(&name));

    // --overwrite-disks: the snapshot's copy replaces the image, which another tern
    // holding it is protected from; a restore that fails after the copy puts it back.
    let image = dir.join("disk.img");
    std::fs::OpenOptions::new().write(true).open(&image).unwrap().write_all_at(b"CHANGED", 0).unwrap();
    let changed = disk_head(&image);
    let mut bad = restore(&copies);
    let out = run(bad.env("TERN_RUNTIME_DIR", &runtime).args(["--overwrite-disks", "--memory", "32M"]));
    assert_one_error_line(&out, "more than --memory");
    assert_eq!(disk_head(&image), changed, "a failed restore put the image back");
    let mut over = restore(&copies);
    let _over = start_named(over.args(["--overwrite-disks", "--serial", "null"]), &runtime, &name);
    assert_eq!(disk_head(&image), DISK_CONTENT, "the image is the snapshot's copy");
    let mut busy = restore(&copies);
    let out = run(busy.env("TERN_RUNTIME_DIR", &runtime).args(["--overwrite-disks", "--name", "busy"]));
    assert_one_error_line(&out, "is in use (another tern holds it locked)");
    let leftovers: Vec<_> =
        std::fs::read_dir(&dir).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().contains("tern-restore")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A tmpfs mounted for a test, unmounted (and its mount point removed) when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (mount's syntax: `16k`, `1m`) at `path`, created here.
    /// The test needs it: a host where it cannot be mounted fails the test.
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let t = Tmpfs(path.to_path_buf());
        t.mount_with(&["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tern-test"]);
        t
    }

    /// Makes it `bytes` large (at least what it holds).
    fn resize(&self, bytes: u64) {
        self.mount_with(&["-o", &format!("remount,size={bytes}")]);
    }

    fn mount_with(&self, args: &[&str]) {
        let out = Command::new("mount")
            .args(args)
            .arg(&self.0)
            .output()
            .unwrap_or_else(|e| panic!("this test mounts a small tmpfs and cannot run mount(8): {e}"));
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs (as root) and could not: mount {args:?} {}: {}",
            self.0.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg(&self.0).status().is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// The snapshot to `to`, on a filesystem too small for it, fails in one line that
/// names the target, the full filesystem and the file being written (`writing`);
/// nothing is left on that filesystem, a restore from it is refused, and the guest
/// runs on (its ticks advance, its API answers, tern is still there).
fn assert_snapshot_fails_full(dir: &Path, source: &mut Tern, to: &Path, writing: &str, extra: &[&str]) {
    let out = snapshot(dir, to, extra);
    assert_one_error_line(&out, "No space left on device");
    let (_, err) = text(&out);
    assert!(err.contains(&format!("snapshot to {} failed, the guest keeps running", to.display())), "{err}");
    assert!(err.contains(writing), "expected `{writing}` in: {err}");
    let parent = to.parent().unwrap();
    let left: Vec<_> = std::fs::read_dir(parent).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "a failed snapshot left {left:?} in {}", parent.display());
    let restore = run(tern().args(["restore", "--allow-emulated-kvm", "--serial", "null", "--from"]).arg(to));
    assert_one_error_line(&restore, &format!("snapshot {}: No such file or directory", to.display()));
    assert!(source.0.try_wait().unwrap().is_none(), "tern ended after a failed snapshot");
    let serial = dir.join("src.serial");
    let now = *ticks(&serial).last().unwrap();
    wait_for_tick(&serial, now + 3);
    let info = run(tern().args(["info", "--api-socket"]).arg(dir.join("api.sock")));
    assert!(info.status.success() && text(&info).0.contains("running"), "{:?}", text(&info));
}

/// Bytes a tmpfs charges for the files in `dir` but `except`.
fn charged(dir: &Path, except: &str) -> u64 {
    std::fs::read_dir(dir).unwrap().flatten().filter(|e| e.file_name() != except).map(|e| e.metadata().unwrap().blocks() * 512).sum()
}

#[test]
fn a_snapshot_onto_a_full_filesystem_fails_in_one_line_and_the_guest_runs_on() {
    let dir = test_dir("full");
    // A disk full of data: its copy alone is more than the small filesystem holds.
    let mut image = vec![0xa5u8; 1 << 20];
    image[..DISK_CONTENT.len()].copy_from_slice(DISK_CONTENT);
    std::fs::write(dir.join("disk.img"), &image).unwrap();
    let mut source = start_source(&dir);
    wait_for_tick(&dir.join("src.serial"), 2);

    // Full while guest memory is written, and while the disk is copied (the guest
    // paused); a failing --stop does not stop it either.
    for (name, size, writing) in [("tiny", "16k", "guest memory"), ("small", "1m", "disk copy")] {
        let mount = Tmpfs::mount(&dir.join(name), size);
        for extra in [&[][..], &["--stop"]] {
            assert_snapshot_fails_full(&dir, &mut source, &mount.0.join("snap"), writing, extra);
        }
    }
    // Full only when the manifest is written, once the guest runs again: the tmpfs
    // holds exactly what a snapshot takes without its manifest.
    let mount = Tmpfs::mount(&dir.join("late"), "8m");
    let probe = mount.0.join("probe");
    let out = snapshot(&dir, &probe, &[]);
    assert!(out.status.success(), "{:?}", text(&out));
    let without_manifest = charged(&probe, "manifest");
    std::fs::remove_dir_all(&probe).unwrap();
    mount.resize(without_manifest);
    for extra in [&[][..], &["--stop"]] {
        assert_snapshot_fails_full(&dir, &mut source, &mount.0.join("snap"), "manifest", extra);
    }
    drop(mount);
    // The failures left no snapshot running: the next ones are written, each asked
    // for as soon as the one before answered (none finds it still in progress).
    for n in 0..4 {
        let snap = dir.join(format!("after{n}"));
        let out = snapshot(&dir, &snap, &[]);
        assert!(out.status.success(), "{:?}", text(&out));
        assert!(snapshot_counter(&snap) >= 2);
    }
    drop(source);
    let _ = std::fs::remove_dir_all(&dir);
}
