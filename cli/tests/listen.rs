//! The host migration listener end to end: `tern listen` accepts live migrations for
//! the VMs defined in its `--defs` directory over mutual TLS, each received by a `tern
//! receive` of its own from the VM's definition; `tern migrate NAME --to` (TLS from the
//! source's definition) sends them. Source and destination "hosts" are one machine
//! with two runtime directories (`TERN_RUNTIME_DIR`). The guest is a tiny kernel that
//! writes `T` to COM1 in a loop, so its console on the destination keeps growing once
//! it runs there. These run on this machine's /dev/kvm (kvm_pvm too) and need openssl
//! for the test certificates (tests/tls/make-test-certs.sh).

mod tiny_kernel;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(30);

/// `mov al,'T'; out dx,al; mov ecx,N; dec ecx; jnz -3; jmp back`: a `T` on COM1 (dx is
/// set by `marking`) every few milliseconds, forever.
const TICK: &[u8] = &[
    0xb0, b'T', 0xee, 0xb9, 0x00, 0x00, 0x40, 0x00, 0x49, 0x75, 0xfd, 0xeb, 0xf3,
];

fn tern(runtime: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tern"));
    c.env("TERN_RUNTIME_DIR", runtime).stdin(Stdio::null());
    c
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Two hosts' worth of directories: runtime dirs, definitions, certificates.
struct Hosts {
    root: PathBuf,
    src: PathBuf,
    dst: PathBuf,
    defs: PathBuf,
    certs: PathBuf,
}

impl Hosts {
    fn new(what: &str) -> Hosts {
        let root = std::env::temp_dir().join(format!("tern-listen-{}-{what}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (src, dst, defs) = (
            root.join("run-src"),
            root.join("run-dst"),
            root.join("defs"),
        );
        for d in [&src, &dst, &defs] {
            std::fs::create_dir_all(d).unwrap();
        }
        let certs = root.join("certs");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/tls/make-test-certs.sh");
        let out = Command::new("sh")
            .arg(&script)
            .arg(&certs)
            .output()
            .expect("run make-test-certs.sh");
        assert!(
            out.status.success(),
            "make-test-certs.sh failed (is openssl installed?): {}",
            text(&out.stderr)
        );
        std::fs::write(
            root.join("guest.elf"),
            tiny_kernel::pvh_elf(&tiny_kernel::marking(b'R', TICK)),
        )
        .unwrap();
        Hosts {
            root,
            src,
            dst,
            defs,
            certs,
        }
    }

    /// A definition of VM `name`: at `dir/vm-NAME.toml` for the source (console
    /// `src-NAME.log`), or in the listener's definitions (console `dst-NAME.log`).
    fn define(&self, name: &str, on_destination: bool) -> PathBuf {
        let (file, console, tls) = if on_destination {
            (
                self.defs.join(format!("{name}.toml")),
                self.root.join(format!("dst-{name}.log")),
                self.certs.join("dest"),
            )
        } else {
            (
                self.root.join(format!("vm-{name}.toml")),
                self.root.join(format!("src-{name}.log")),
                self.certs.join("source"),
            )
        };
        let text = format!(
            "name = \"{name}\"\nmemory = \"64M\"\nallow-emulated-kvm = true\nserial = \"file={}\"\n[boot]\nkernel = \"{}\"\n[migration]\ntls-dir = \"{}\"\n",
            console.display(),
            self.root.join("guest.elf").display(),
            tls.display()
        );
        std::fs::write(&file, text).unwrap();
        file
    }

    fn console(&self, name: &str, on_destination: bool) -> Vec<u8> {
        let side = if on_destination { "dst" } else { "src" };
        std::fs::read(self.root.join(format!("{side}-{name}.log"))).unwrap_or_default()
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A process killed when dropped, its stderr collected.
struct Proc {
    child: Child,
    stderr: Arc<Mutex<String>>,
    /// Set when the stderr pipe reached its end (every writer closed it).
    stderr_done: Arc<std::sync::atomic::AtomicBool>,
}

impl Proc {
    fn start(cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        let stderr_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = stderr_done.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        Proc { child, stderr, stderr_done }
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until the log holds `want`; panics with the log otherwise.
    fn wait_for_log(&self, want: &str) -> String {
        let started = Instant::now();
        loop {
            let log = self.log();
            if log.contains(want) {
                return log;
            }
            assert!(started.elapsed() < DEADLINE, "no `{want}` in: {log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait(&mut self) -> i32 {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Its last lines may still be in the pipe: give the reader up to 2 s
                // (a child of it could hold the pipe open longer).
                let exited = Instant::now();
                while !self.stderr_done.load(std::sync::atomic::Ordering::SeqCst) && exited.elapsed() < Duration::from_secs(2) {
                    std::thread::sleep(Duration::from_millis(10));
                }
                return status.code().unwrap_or(-1);
            }
            assert!(
                started.elapsed() < DEADLINE,
                "the process did not end: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Stops the named VMs of a runtime directory when dropped (a received VM is not the
/// listener's child once the listener is gone, and runs in its own session).
struct StopAll(PathBuf, Vec<String>);

impl Drop for StopAll {
    fn drop(&mut self) {
        for name in &self.1 {
            let _ = tern(&self.0).args(["stop", name]).output();
        }
    }
}

fn info(runtime: &Path, name: &str) -> Output {
    tern(runtime)
        .args(["info", name, "--json"])
        .output()
        .unwrap()
}

fn wait_running(runtime: &Path, name: &str) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let out = info(runtime, name);
        if out.status.success() {
            return serde_json::from_slice(&out.stdout).unwrap();
        }
        assert!(
            started.elapsed() < DEADLINE,
            "VM {name} never answered: {}",
            text(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts the listener on a free port; returns it and its address.
fn start_listener(h: &Hosts) -> (Proc, String) {
    let listener = Proc::start(
        tern(&h.dst)
            .args([
                "listen",
                "--listen",
                "127.0.0.1:0",
                "--allow-emulated-kvm",
                "--timeout",
                "20",
            ])
            .arg("--defs")
            .arg(&h.defs)
            .arg("--tls-dir")
            .arg(h.certs.join("dest")),
    );
    let line = listener.wait_for_log("accepting migrations");
    let addr = line
        .lines()
        .find(|l| l.contains("accepting migrations"))
        .and_then(|l| l.split(" on ").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no address in: {line}"))
        .to_string();
    (listener, addr)
}

/// Starts VM `name` on the source from its definition and waits until it answers.
fn start_source(h: &Hosts, runtime: &Path, name: &str) -> Proc {
    let file = h.define(name, false);
    let vm = Proc::start(tern(runtime).arg("run").arg("--config").arg(&file));
    wait_running(runtime, name);
    vm
}

fn migrate(runtime: &Path, name: &str, to: &str) -> Output {
    tern(runtime)
        .args(["migrate", name, "--to", to, "--json"])
        .output()
        .unwrap()
}

/// The console of VM `name` on the destination grows: the guest runs there.
fn assert_runs_on_destination(h: &Hosts, name: &str) {
    let before = h.console(name, true).len();
    let started = Instant::now();
    while h.console(name, true).len() <= before {
        assert!(
            started.elapsed() < DEADLINE,
            "VM {name}'s console on the destination does not grow"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        h.console(name, true).iter().all(|&b| b == b'T'),
        "{}",
        text(&h.console(name, true))
    );
}

#[test]
fn named_vms_migrate_through_the_listener_one_after_another() {
    let h = Hosts::new("two");
    let (listener, addr) = start_listener(&h);
    let (a, b) = (
        format!("a{}", std::process::id()),
        format!("b{}", std::process::id()),
    );
    let _stop = StopAll(h.dst.clone(), vec![a.clone(), b.clone()]);
    for name in [&a, &b] {
        h.define(name, true);
        let mut source = start_source(&h, &h.src, name);
        let started = Instant::now();
        while !h.console(name, false).contains(&b'T') {
            assert!(
                started.elapsed() < DEADLINE,
                "the guest does not tick on the source"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // No --tls-dir: the definition's [migration] tls-dir.
        let out = migrate(&h.src, name, &addr);
        assert!(
            out.status.success(),
            "tern migrate {name}: {}{}",
            text(&out.stderr),
            listener.log()
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(report["total_ms"].as_f64().is_some(), "{report}");
        assert_eq!(source.wait(), 0, "the source tern: {}", source.log());
        assert!(
            source.log().contains("migrated to the destination"),
            "{}",
            source.log()
        );
        // Nothing of it is left on the source; it runs on the destination, by name.
        assert!(!info(&h.src, name).status.success());
        let here = wait_running(&h.dst, name);
        assert_eq!(
            (here["state"].as_str(), here["memory_bytes"].as_u64()),
            (Some("running"), Some(64 << 20)),
            "{here}"
        );
        assert_runs_on_destination(&h, name);
        listener.wait_for_log(&format!("VM {name} (from 127.0.0.1:"));
    }
    let log = listener.log();
    assert_eq!(log.matches("received; it runs here").count(), 2, "{log}");
    assert!(!log.contains("error"), "{log}");
    // Both are listed on the destination.
    let list = tern(&h.dst).args(["list"]).output().unwrap();
    let listed = text(&list.stdout);
    assert!(listed.contains(&a) && listed.contains(&b), "{listed}");
    // The listener's end does not end what it received.
    drop(listener);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(wait_running(&h.dst, &a)["state"], "running");
}

#[test]
fn unknown_and_running_names_are_refused_and_the_listener_serves_on() {
    let h = Hosts::new("refuse");
    let (mut listener, addr) = start_listener(&h);
    let pid = std::process::id();
    let (unknown, known) = (format!("u{pid}"), format!("k{pid}"));
    let _stop = StopAll(h.dst.clone(), vec![known.clone()]);

    // A VM the destination has no definition for: one line to the source, which keeps
    // its guest; one line in the listener's log.
    let unknown_vm = start_source(&h, &h.src, &unknown);
    let out = migrate(&h.src, &unknown, &addr);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    let want = format!(
        "destination refused: no VM named {unknown} is defined on this host (no {})",
        h.defs.join(format!("{unknown}.toml")).display()
    );
    assert!(err.contains(&want), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(wait_running(&h.src, &unknown)["state"], "running");
    let log = listener.wait_for_log("failed (status 1");
    assert!(
        log.contains("tern: error: incoming migration from 127.0.0.1:") && log.contains(&want),
        "{log}"
    );
    drop(unknown_vm);

    // The listener serves on: a defined VM migrates.
    h.define(&known, true);
    let mut source = start_source(&h, &h.src, &known);
    let out = migrate(&h.src, &known, &addr);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stderr),
        listener.log()
    );
    assert_eq!(source.wait(), 0);
    assert_runs_on_destination(&h, &known);

    // A second VM of that name (another source host) is refused: it runs here already.
    let other_src = h.root.join("run-src2");
    std::fs::create_dir_all(&other_src).unwrap();
    let second = start_source(&h, &other_src, &known);
    let out = migrate(&other_src, &known, &addr);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "destination refused: VM {known} is already running (runtime directory {})",
            h.dst.join(&known).display()
        )),
        "{err}"
    );
    assert_eq!(wait_running(&other_src, &known)["state"], "running");
    assert_eq!(wait_running(&h.dst, &known)["state"], "running");
    drop(second);

    // A source migrated by its socket names no VM: refused, saying how to do it.
    let third = start_source(&h, &other_src, &known);
    let out = tern(&other_src)
        .args(["migrate", "--to", &addr, "--tls-dir"])
        .arg(h.certs.join("source"))
        .arg("--api-socket")
        .arg(other_src.join(&known).join("api.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("the source did not name its VM: migrate it by name"),
        "{}",
        text(&out.stderr)
    );
    drop(third);

    assert!(
        listener.child.try_wait().unwrap().is_none(),
        "the listener ended: {}",
        listener.log()
    );
    // The listener logs a receive's end when it reaps the child, which may come a
    // moment after the source heard the refusal.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while listener.log().matches("failed (status 1").count() < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        listener.log().matches("failed (status 1").count(),
        3,
        "{}",
        listener.log()
    );
}

#[test]
fn bad_listener_set_ups_are_one_line() {
    let h = Hosts::new("bad");
    let run = |args: &[&str]| tern(&h.dst).arg("listen").args(args).output().unwrap();
    let out = run(&["--listen", "0.0.0.0:0", "--defs", h.defs.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("give --tls-dir DIR"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["--listen", "127.0.0.1:0", "--defs", "/nonexistent"]);
    assert_eq!(
        text(&out.stderr),
        "tern: error: --defs /nonexistent: not a directory of VM definitions\n"
    );
    let out = run(&[
        "--listen",
        "127.0.0.1:0",
        "--defs",
        h.defs.to_str().unwrap(),
        "--tls-dir",
        h.defs.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("ca.pem"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn tern_receive_takes_a_definition_and_refuses_another_vm() {
    let h = Hosts::new("config");
    let pid = std::process::id();
    let (name, other) = (format!("c{pid}"), format!("o{pid}"));
    let _stop = StopAll(h.dst.clone(), vec![name.clone()]);
    // The destination's definition: its [migration] tls-dir is the receiver's TLS.
    let def = h.define(&name, true);
    let receive = |h: &Hosts| {
        let r = Proc::start(
            tern(&h.dst)
                .args(["receive", "--listen", "127.0.0.1:0", "--config"])
                .arg(&def),
        );
        let log = r.wait_for_log("waiting for an incoming migration (mutual TLS)");
        let addr = log
            .split(" on ")
            .nth(1)
            .and_then(|rest| rest.lines().next())
            .unwrap()
            .to_string();
        (r, addr)
    };

    // A source sending another VM is refused; it keeps its guest.
    let (mut receiver, addr) = receive(&h);
    let _wrong = start_source(&h, &h.src, &other);
    let out = migrate(&h.src, &other, &addr);
    assert_eq!(out.status.code(), Some(1));
    let want = format!("the source sends VM {other}; this receive is for VM {name}");
    assert!(text(&out.stderr).contains(&want), "{}", text(&out.stderr));
    assert_ne!(receiver.wait(), 0);
    assert_eq!(wait_running(&h.src, &other)["state"], "running");

    let (_receiver, addr) = receive(&h);
    let mut source = start_source(&h, &h.src, &name);
    let out = migrate(&h.src, &name, &addr);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(source.wait(), 0);
    assert_eq!(wait_running(&h.dst, &name)["state"], "running");
    assert_runs_on_destination(&h, &name);
}
