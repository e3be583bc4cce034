//! The systemd units in resources/systemd/: `systemd-analyze verify` passes on them
//! without a warning (with tern's path put in), they hold the keys that make them
//! right for a VM, and the readiness they declare (`Type=notify`) is real: `tern run`
//! and `tern listen` send READY=1 to `$NOTIFY_SOCKET` once they serve. systemd-analyze
//! comes with Debian's systemd package (resources/install-host-packages.sh).

mod tiny_kernel;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const TERN: &str = env!("CARGO_BIN_EXE_tern");

fn unit_text(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../resources/systemd")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The value of `key` in the unit's `[Service]` section (last one wins, as systemd).
fn service_key(text: &str, key: &str) -> Option<String> {
    let mut in_service = false;
    let mut value = None;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service {
            if let Some(v) = line
                .strip_prefix(key)
                .and_then(|rest| rest.strip_prefix('='))
            {
                value = Some(v.to_string());
            }
        }
    }
    value
}

fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tern-units-{}-{what}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn systemd_analyze_verify_passes_without_a_warning() {
    let dir = temp_dir("verify");
    for (source, instance) in [
        ("tern@.service", "tern@vm1.service"),
        ("tern-listen.service", "tern-listen.service"),
    ] {
        let text = unit_text(source).replace("/usr/local/bin/tern", TERN);
        let path = dir.join(instance);
        std::fs::write(&path, text).unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()
            .expect("systemd-analyze (Debian's systemd package; resources/install-host-packages.sh installs it)");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "systemd-analyze verify {source}: {err}"
        );
        // It warns about an unknown key or bad value and still exits 0.
        assert!(
            err.trim().is_empty(),
            "systemd-analyze verify {source} warns: {err}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_units_hold_what_a_vm_needs() {
    let vm = unit_text("tern@.service");
    let key = |k| service_key(&vm, k).unwrap_or_else(|| panic!("tern@.service has no {k}="));
    assert_eq!(key("Type"), "notify");
    assert_eq!(
        key("ExecStart"),
        "/usr/local/bin/tern run --config /etc/tern/%i.toml --name %i"
    );
    let stop = key("ExecStop");
    assert!(
        stop.starts_with("-/usr/local/bin/tern shutdown %i --timeout "),
        "{stop}"
    );
    let shutdown_timeout: u64 = stop.rsplit(' ').next().unwrap().parse().unwrap();
    // Room for the shutdown's timeout and its hard stop's 10 s.
    let stop_timeout: u64 = key("TimeoutStopSec").parse().unwrap();
    assert!(
        stop_timeout >= shutdown_timeout + 10,
        "TimeoutStopSec {stop_timeout} vs shutdown {shutdown_timeout}"
    );
    assert_eq!(key("KillMode"), "mixed");
    // Not `always`: a guest that powers off or migrates away must stay off here.
    assert_eq!(key("Restart"), "on-failure");
    assert_eq!(key("UMask"), "0077");

    let listen = unit_text("tern-listen.service");
    let key =
        |k| service_key(&listen, k).unwrap_or_else(|| panic!("tern-listen.service has no {k}="));
    assert_eq!(key("Type"), "notify");
    let start = key("ExecStart");
    assert!(
        start.starts_with("/usr/local/bin/tern listen --listen ")
            && start.contains("--tls-dir ")
            && start.ends_with("--defs /etc/tern"),
        "{start}"
    );
    // Received VMs run in the listener's control group: stopping it must not end them.
    assert_eq!(key("KillMode"), "process");
}

/// A notify socket; returns it and its path.
fn notify_socket(dir: &Path) -> (UnixDatagram, PathBuf) {
    let path = dir.join("notify");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    (socket, path)
}

fn notification(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = socket
        .recv(&mut buf)
        .expect("no readiness notification within 20 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn tern_run_and_tern_listen_notify_readiness_once_they_serve() {
    let dir = temp_dir("notify");
    let name = format!("n{}", std::process::id());
    std::fs::write(
        dir.join("guest.elf"),
        tiny_kernel::pvh_elf(&tiny_kernel::marking(b'R', &[0xeb, 0xfe])),
    )
    .unwrap();
    std::fs::write(
        dir.join("vm.toml"),
        format!("name = \"{name}\"\nmemory = \"64M\"\nallow-emulated-kvm = true\nserial = \"null\"\n[boot]\nkernel = \"guest.elf\"\n"),
    )
    .unwrap();
    let runtime = dir.join("run");
    let (socket, path) = notify_socket(&dir);
    let mut vm = Command::new(TERN)
        .args(["run", "--config"])
        .arg(dir.join("vm.toml"))
        .env("NOTIFY_SOCKET", &path)
        .env("TERN_RUNTIME_DIR", &runtime)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let message = notification(&socket);
    assert!(message.starts_with("READY=1\n"), "{message}");
    // Ready means its control socket answers.
    let info = Command::new(TERN)
        .args(["info", &name])
        .env("TERN_RUNTIME_DIR", &runtime)
        .output()
        .unwrap();
    assert!(
        info.status.success(),
        "{}",
        String::from_utf8_lossy(&info.stderr)
    );
    let _ = vm.kill();
    let _ = vm.wait();

    let defs = dir.join("defs");
    std::fs::create_dir_all(&defs).unwrap();
    let mut listener = Command::new(TERN)
        .args(["listen", "--listen", "127.0.0.1:0", "--defs"])
        .arg(&defs)
        .env("NOTIFY_SOCKET", &path)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let message = notification(&socket);
    let _ = listener.kill();
    let _ = listener.wait();
    assert!(
        message.starts_with("READY=1\nSTATUS=accepting migrations on 127.0.0.1:"),
        "{message}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
