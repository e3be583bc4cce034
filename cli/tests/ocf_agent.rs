//! The Pacemaker resource agent resources/ocf/tern: Debian's `ocf-tester` passes on it
//! (meta-data valid against ra-api-1.dtd, validate-all, probes, start, monitor, stop,
//! repeated and idempotent, with a tiny guest that ignores the power button, so every
//! stop takes the hard-stop path), and its migrate_to / migrate_from move a VM through
//! a host's `tern listen`, or refuse, keeping the guest, when the target has no
//! definition for it. Needs root (ocf-tester checks the agent as user nobody; named
//! VMs live in /run/tern) and Debian's resource-agents and libxml2-utils
//! (resources/install-host-packages.sh installs them); fails saying so otherwise.

mod tiny_kernel;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const TERN: &str = env!("CARGO_BIN_EXE_tern");
const OCF_ROOT: &str = "/usr/lib/ocf";
/// `jmp $` after the boot mark: a guest that ignores the power button.
const SPIN: &[u8] = &[0xeb, 0xfe];

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn agent() -> PathBuf {
    std::fs::canonicalize(Path::new(env!("CARGO_MANIFEST_DIR")).join("../resources/ocf/tern"))
        .unwrap()
}

/// Root and the packages, or a failure that says what is missing.
fn require_environment() {
    // SAFETY: geteuid only reads the process's credentials.
    assert_eq!(unsafe { libc::geteuid() }, 0, "the OCF agent tests need root (ocf-tester runs the agent as nobody; VMs live in /run/tern)");
    for (tool, package) in [
        ("/usr/sbin/ocf-tester", "resource-agents"),
        ("/usr/bin/xmllint", "libxml2-utils"),
    ] {
        assert!(Path::new(tool).exists(), "{tool} is missing: install Debian's {package} (resources/install-host-packages.sh does)");
    }
    assert!(
        Path::new(OCF_ROOT)
            .join("lib/heartbeat/ocf-shellfuncs")
            .exists(),
        "no ocf-shellfuncs under {OCF_ROOT}: install resource-agents"
    );
}

/// A directory readable by nobody (ocf-tester's meta-data check runs as nobody) with
/// the guest.
fn test_dir(what: &str) -> PathBuf {
    tiny_kernel::guest_dir("ocf", what, &tiny_kernel::marking(b'R', SPIN))
}

/// A definition of VM `name` at `file`, with a TLS directory when given.
fn define(dir: &Path, file: &Path, name: &str, tls: Option<&Path>) {
    let mut text = format!(
        "name = \"{name}\"\nmemory = \"64M\"\nallow-emulated-kvm = true\nserial = \"null\"\n[boot]\nkernel = \"{}\"\n",
        dir.join("guest.elf").display()
    );
    if let Some(tls) = tls {
        text.push_str(&format!("[migration]\ntls-dir = \"{}\"\n", tls.display()));
    }
    std::fs::write(file, text).unwrap();
}

#[test]
fn ocf_tester_passes() {
    require_environment();
    let dir = test_dir("tester");
    let name = format!("ocf{}", std::process::id());
    let file = dir.join("vm.toml");
    define(&dir, &file, &name, None);
    let started = Instant::now();
    let out = Command::new("/usr/sbin/ocf-tester")
        .args(["-n", "tern-test"])
        .arg("-o")
        .arg(format!("config={}", file.display()))
        .arg("-o")
        .arg(format!("binary={TERN}"))
        .args(["-o", "shutdown_timeout=1"])
        .arg("-o")
        .arg(format!("logfile={}", dir.join("vm.log").display()))
        .arg(agent())
        .env("OCF_ROOT", OCF_ROOT)
        .env("HA_RSCTMP", &dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
    eprintln!(
        "ocf-tester took {:.1} s:\n{report}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        out.status.success(),
        "ocf-tester failed:\n{report}\nVM log: {}",
        std::fs::read_to_string(dir.join("vm.log")).unwrap_or_default()
    );
    assert!(report.contains("passed all tests"), "{report}");
    // It left nothing running.
    let info = Command::new(TERN).args(["info", &name]).output().unwrap();
    assert!(
        !info.status.success(),
        "VM {name} still runs after ocf-tester"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// One agent action with `params` (OCF_RESKEY_*) on the "host" whose runtime directory
/// is `runtime`; returns its status and stderr.
fn action(runtime: &Path, rsctmp: &Path, what: &str, params: &[(&str, String)]) -> (i32, String) {
    let mut cmd = Command::new("sh");
    cmd.arg(agent())
        .arg(what)
        .env("OCF_ROOT", OCF_ROOT)
        .env("HA_RSCTMP", rsctmp)
        .env("TERN_RUNTIME_DIR", runtime)
        .env("OCF_RESKEY_binary", TERN);
    cmd.env("OCF_RESOURCE_INSTANCE", "vm")
        .env("OCF_RESKEY_CRM_meta_timeout", "60000")
        .env("OCF_RESKEY_CRM_meta_interval", "10000");
    for (key, value) in params {
        cmd.env(format!("OCF_RESKEY_{key}"), value);
    }
    let out: Output = cmd.stdin(Stdio::null()).output().unwrap();
    (out.status.code().unwrap_or(-1), text(&out.stderr))
}

#[test]
fn migrate_to_and_migrate_from_move_the_vm_through_the_listener() {
    require_environment();
    let dir = test_dir("migrate");
    let certs = dir.join("certs");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/tls/make-test-certs.sh");
    let out = Command::new("sh")
        .arg(&script)
        .arg(&certs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "make-test-certs.sh (openssl): {}",
        text(&out.stderr)
    );
    let (src, dst, defs) = (dir.join("run-a"), dir.join("run-b"), dir.join("defs-b"));
    for d in [&src, &dst, &defs] {
        std::fs::create_dir_all(d).unwrap();
    }
    let pid = std::process::id();
    let (name, stray) = (format!("m{pid}"), format!("s{pid}"));
    let file = dir.join("vm.toml");
    define(&dir, &file, &name, Some(&certs.join("source")));
    define(
        &dir,
        &defs.join(format!("{name}.toml")),
        &name,
        Some(&certs.join("dest")),
    );

    // Node b's listener.
    let mut listener = Command::new(TERN)
        .args([
            "listen",
            "--listen",
            "127.0.0.1:0",
            "--allow-emulated-kvm",
            "--defs",
        ])
        .arg(&defs)
        .arg("--tls-dir")
        .arg(certs.join("dest"))
        .env("TERN_RUNTIME_DIR", &dst)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    let mut log = std::io::BufReader::new(listener.stderr.take().unwrap());
    std::io::BufRead::read_line(&mut log, &mut first).unwrap();
    // Keep reading its log (a listener whose stderr is closed would lose its lines).
    std::thread::spawn(move || std::io::copy(&mut log, &mut std::io::sink()));
    let port = first
        .split(" on 127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap_or_else(|| panic!("{first}"))
        .to_string();

    let params = |config: &Path| {
        vec![
            ("config", config.display().to_string()),
            ("shutdown_timeout", "1".to_string()),
            ("migration_port", port.clone()),
            (
                "migration_host_map",
                "node-a=127.0.0.2 node-b=127.0.0.1".to_string(),
            ),
            ("CRM_meta_migrate_target", "node-b".to_string()),
            ("CRM_meta_migrate_source", "node-a".to_string()),
            ("logfile", dir.join("vm.log").display().to_string()),
        ]
    };
    let p = params(&file);
    assert_eq!(action(&src, &dir, "monitor", &p).0, 7);
    let (rc, err) = action(&src, &dir, "start", &p);
    assert_eq!(rc, 0, "start: {err}");
    assert_eq!(action(&src, &dir, "monitor", &p).0, 0);
    let started = Instant::now();
    let (rc, err) = action(&src, &dir, "migrate_to", &p);
    assert_eq!(rc, 0, "migrate_to: {err}");
    eprintln!("migrate_to took {:?}", started.elapsed());
    let (rc, err) = action(&dst, &dir, "migrate_from", &p);
    assert_eq!(rc, 0, "migrate_from: {err}");
    // Pacemaker then stops the source's instance: nothing runs there any more.
    assert_eq!(action(&src, &dir, "stop", &p).0, 0);
    assert_eq!(action(&src, &dir, "monitor", &p).0, 7);
    assert_eq!(action(&dst, &dir, "monitor", &p).0, 0);
    let (rc, err) = action(&dst, &dir, "stop", &p);
    assert_eq!(rc, 0, "stop on the target: {err}");
    assert_eq!(action(&dst, &dir, "monitor", &p).0, 7);

    // A VM node b has no definition for: migrate_to fails with one reason, the guest
    // runs on here.
    let stray_file = dir.join("stray.toml");
    define(&dir, &stray_file, &stray, Some(&certs.join("source")));
    let p = params(&stray_file);
    assert_eq!(action(&src, &dir, "start", &p).0, 0);
    let (rc, err) = action(&src, &dir, "migrate_to", &p);
    assert_eq!(rc, 1, "{err}");
    assert!(err.contains(&format!("ocf-exit-reason:migrating VM {stray} to node-b failed: tern: error: migration failed, the guest keeps running here: destination refused: no VM named {stray} is defined on this host")), "{err}");
    assert_eq!(action(&src, &dir, "monitor", &p).0, 0);
    let (rc, err) = action(&dst, &dir, "migrate_from", &p);
    assert_eq!(rc, 1, "{err}");
    assert!(err.contains("did not arrive here"), "{err}");
    assert_eq!(action(&src, &dir, "stop", &p).0, 0);
    assert_eq!(action(&src, &dir, "monitor", &p).0, 7);

    let _ = listener.kill();
    let _ = listener.wait();
    // Give the reaped children a moment, then clean up.
    std::thread::sleep(Duration::from_millis(100));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The path of the file a process with `pid` has open whose path ends with `suffix`.
fn open_file(pid: u64, suffix: &Path) -> Option<PathBuf> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .find(|target| target.ends_with(suffix))
}

/// The pid `tern info NAME` reports, on the "host" with runtime directory `runtime`.
fn vm_pid(runtime: &Path, name: &str) -> u64 {
    let out = Command::new(TERN)
        .args(["info", name, "--json"])
        .env("TERN_RUNTIME_DIR", runtime)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    reply["pid"].as_u64().unwrap()
}

#[test]
fn snapshot_dir_saves_the_vm_on_stop_and_start_restores_it_on_its_disks() {
    require_environment();
    let dir = test_dir("snapdir");
    std::fs::write(
        dir.join("counter.elf"),
        tiny_kernel::pvh_elf(tiny_kernel::COUNTING_GUEST),
    )
    .unwrap();
    std::fs::File::create(dir.join("disk.img"))
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let (runtime, snaps, console) = (dir.join("run"), dir.join("snaps"), dir.join("console"));
    std::fs::create_dir_all(&runtime).unwrap();
    let name = format!("snap{}", std::process::id());
    let file = dir.join("vm.toml");
    std::fs::write(
        &file,
        tiny_kernel::definition(&name, "counter.elf", &console, "disk.img"),
    )
    .unwrap();
    let p = vec![
        ("config", file.display().to_string()),
        ("shutdown_timeout", "1".to_string()),
        ("snapshot_dir", snaps.display().to_string()),
        ("logfile", dir.join("vm.log").display().to_string()),
    ];
    let log = || std::fs::read_to_string(dir.join("vm.log")).unwrap_or_default();
    let saved = snaps.join(&name);

    assert_eq!(action(&runtime, &dir, "monitor", &p).0, 7);
    let (rc, err) = action(&runtime, &dir, "start", &p);
    assert_eq!(rc, 0, "start: {err}\n{}", log());
    assert_eq!(action(&runtime, &dir, "monitor", &p).0, 0);
    tiny_kernel::wait_for_tick(&console, 3);

    // stop saves it: memory and state, not the disk; the guest is gone.
    let (rc, err) = action(&runtime, &dir, "stop", &p);
    assert_eq!(rc, 0, "stop: {err}\n{}", log());
    assert_eq!(action(&runtime, &dir, "monitor", &p).0, 7);
    assert!(
        saved.join("manifest").is_file(),
        "no snapshot in {}: {err}",
        saved.display()
    );
    assert!(!saved.join("disk0.img").exists(), "the disk was copied");
    let mut counter = [0u8; 4];
    std::os::unix::fs::FileExt::read_exact_at(
        &std::fs::File::open(saved.join("memory.bin")).unwrap(),
        &mut counter,
        tiny_kernel::COUNTER,
    )
    .unwrap();
    let at_stop = u32::from_le_bytes(counter);
    let before = tiny_kernel::ticks(&console);
    assert!(
        at_stop >= 3 && before.last().is_some_and(|&t| t <= at_stop),
        "saved at {at_stop}, printed {before:?}"
    );

    // start restores it, on the definition's disk, continuing from the saved tick.
    let (rc, err) = action(&runtime, &dir, "start", &p);
    assert_eq!(rc, 0, "start from the snapshot: {err}\n{}", log());
    assert_eq!(action(&runtime, &dir, "monitor", &p).0, 0);
    let after = tiny_kernel::wait_for_tick(&console, at_stop + 3);
    assert!(
        after[0] == at_stop || after[0] == at_stop + 1,
        "saved at {at_stop}, the restored guest printed {after:?} (a fresh boot starts at 1)"
    );
    assert!(after.windows(2).all(|w| w[1] == w[0] + 1), "{after:?}");
    let pid = vm_pid(&runtime, &name);
    assert!(
        open_file(pid, &dir.join("disk.img")).is_some(),
        "the restored VM (pid {pid}) does not run on the definition's disk"
    );
    assert!(
        log().contains(&format!("guest restored from {}", saved.display())),
        "{}",
        log()
    );
    // The snapshot is kept aside, so a later start cannot bring this state back.
    assert!(!saved.exists());
    assert!(snaps
        .join(format!("{name}.restored"))
        .join("manifest")
        .is_file());

    // The next stop saves again; a start after that restores the newer state.
    let (rc, err) = action(&runtime, &dir, "stop", &p);
    assert_eq!(rc, 0, "second stop: {err}\n{}", log());
    assert_eq!(action(&runtime, &dir, "monitor", &p).0, 7);
    assert!(saved.join("manifest").is_file());
    let _ = std::fs::remove_dir_all(&dir);
}
