//! VMs in a fleet, end to end: `tern run --config FILE` (a VM definition, flags over
//! it), `--name` (sockets in the runtime directory, one VM per name), `tern list`,
//! `info`, `pause`, `resume`, `stop`, `shutdown` of a guest that ignores the power
//! button, and `--net bridge=BR` (a TAP made on the bridge and removed however tern
//! ends). The guest is a tiny kernel that marks its boot on COM1 and spins. These run
//! on this machine's /dev/kvm (kvm_pvm too) and fail with the reason when it is
//! missing; the bridge test needs CAP_NET_ADMIN and fails saying so without it.

mod tiny_kernel;

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(20);
/// `jmp $`: a guest that never powers off.
const SPIN: &[u8] = &[0xeb, 0xfe];

fn tern() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tern"))
}

/// A fresh directory holding the spinning guest.
fn test_dir(name: &str) -> PathBuf {
    tiny_kernel::guest_dir("fleet", name, &tiny_kernel::marking(b'R', SPIN))
}

/// A unique VM name for this test process.
fn vm_name(what: &str) -> String {
    format!("t{}-{what}", std::process::id())
}

/// Runs a control subcommand to its end.
fn control(args: &[&str]) -> Output {
    tern().args(args).stdin(Stdio::null()).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A `tern run` child, killed when dropped.
struct Vm {
    child: Child,
    name: String,
}

impl Vm {
    fn start(cmd: &mut Command, name: &str) -> Vm {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut vm = Vm {
            child,
            name: name.to_string(),
        };
        let started = Instant::now();
        loop {
            let out = control(&["info", name, "--json"]);
            if out.status.success() {
                break;
            }
            if let Some(status) = vm.child.try_wait().unwrap() {
                let mut err = String::new();
                std::io::Read::read_to_string(vm.child.stderr.as_mut().unwrap(), &mut err).unwrap();
                panic!("tern run ended ({status}) before VM {name} answered: {err}");
            }
            assert!(
                started.elapsed() < DEADLINE,
                "VM {name} never answered: {}",
                text(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        vm
    }

    fn info(&self) -> serde_json::Value {
        let out = control(&["info", &self.name, "--json"]);
        assert!(out.status.success(), "info: {}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Waits for tern to end; returns its status code and stderr.
    fn wait(&mut self) -> (i32, String) {
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(started.elapsed() < DEADLINE, "tern run did not end");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(self.child.stderr.as_mut().unwrap(), &mut err).unwrap();
        (status.code().unwrap_or(-1), err)
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The definition every control test uses: two vCPUs, 64M, the spinning guest.
fn definition(dir: &Path, name: &str) -> PathBuf {
    let file = dir.join("vm.toml");
    let text = format!(
        "name = \"{name}\"\ncpus = 2\nmemory = \"64M\"\nallow-emulated-kvm = true\nserial = \"file=console.log\"\n\n[boot]\nkernel = \"guest.elf\"\n"
    );
    std::fs::write(&file, text).unwrap();
    file
}

#[test]
fn a_vm_from_a_definition_is_listed_paused_resumed_and_stopped_by_name() {
    let dir = test_dir("control");
    let name = vm_name("ctl");
    let file = definition(&dir, &name);
    // --memory on the command line overrides the file's 64M; cpus stay the file's.
    let mut vm = Vm::start(
        tern()
            .arg("run")
            .arg("--config")
            .arg(&file)
            .args(["--memory", "96M"]),
        &name,
    );

    let info = vm.info();
    assert_eq!(info["ok"], true, "{info}");
    assert_eq!(info["state"], "running", "{info}");
    assert_eq!(info["cpus"], 2, "{info}");
    assert_eq!(info["memory_bytes"], 96u64 << 20, "{info}");
    assert_eq!(info["pid"], vm.child.id(), "{info}");
    assert!(info["uptime_ms"].as_u64().is_some(), "{info}");
    // The console went to the file the definition names, relative to it.
    let started = Instant::now();
    while std::fs::read(dir.join("console.log")).unwrap_or_default() != b"R" {
        assert!(
            started.elapsed() < DEADLINE,
            "no boot mark in {}",
            dir.join("console.log").display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The API socket is in the VM's owner-only runtime directory.
    let run_dir = Path::new("/run/tern").join(&name);
    assert!(std::os::unix::fs::FileTypeExt::is_socket(
        &std::fs::symlink_metadata(run_dir.join("api.sock"))
            .unwrap()
            .file_type()
    ));
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&run_dir).unwrap().permissions()
        ) & 0o777,
        0o700
    );

    let list = control(&["list"]);
    assert!(list.status.success(), "{}", text(&list.stderr));
    let listed = text(&list.stdout);
    let row = listed
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))
        .unwrap_or_else(|| panic!("{name} not listed: {listed}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cols[1..4], ["running", "2", "96M"], "{row}");
    assert_eq!(cols[5], vm.child.id().to_string(), "{row}");
    assert!(listed.starts_with("NAME"), "{listed}");

    assert!(control(&["pause", &name]).status.success());
    assert_eq!(vm.info()["state"], "paused");
    assert!(control(&["resume", &name]).status.success());
    assert_eq!(vm.info()["state"], "running");

    // A second VM of the same name is refused with one line, and the first runs on.
    let second = control(&["run", "--config", file.to_str().unwrap()]);
    assert_eq!(second.status.code(), Some(1));
    let err = text(&second.stderr);
    assert_eq!(
        err,
        format!(
            "tern: error: VM {name} is already running (runtime directory {})\n",
            run_dir.display()
        )
    );
    assert_eq!(vm.info()["state"], "running");

    let stop = control(&["stop", &name]);
    assert!(stop.status.success(), "{}", text(&stop.stderr));
    let (code, err) = vm.wait();
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("tern: quit"), "{err}");
    let gone = control(&["info", &name]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(
        text(&gone.stderr).starts_with(&format!(
            "tern: error: no VM named {name} is running on this host"
        )),
        "{}",
        text(&gone.stderr)
    );
    // And the name is free again.
    let mut again = Vm::start(tern().arg("run").arg("--config").arg(&file), &name);
    assert_eq!(again.info()["memory_bytes"], 64u64 << 20);
    let stop = control(&["stop", &name]);
    assert!(stop.status.success(), "stop after a restart under the same name: {}", text(&stop.stderr));
    assert_eq!(again.wait().0, 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn shutdown_stops_a_guest_that_ignores_the_power_button_after_the_timeout() {
    let dir = test_dir("shutdown");
    let name = vm_name("shut");
    let file = definition(&dir, &name);
    let mut vm = Vm::start(tern().arg("run").arg("--config").arg(&file), &name);
    let began = Instant::now();
    let out = control(&["shutdown", &name, "--timeout", "1"]);
    let took = began.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr),
        format!(
            "tern: error: VM {name} did not power off within 1 s of the power button; stopped it\n"
        )
    );
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(10),
        "{took:?}"
    );
    let (code, err) = vm.wait();
    assert_eq!(code, 0, "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn control_of_an_api_socket_path_works_without_a_name() {
    let dir = test_dir("socket");
    let socket = dir.join("api.sock");
    let mut child = tern()
        .args([
            "run",
            "--memory",
            "64M",
            "--allow-emulated-kvm",
            "--serial",
            "null",
            "--kernel",
        ])
        .arg(dir.join("guest.elf"))
        .arg("--api-socket")
        .arg(&socket)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let sock = socket.to_str().unwrap();
    while !control(&["info", "--api-socket", sock]).status.success() {
        assert!(
            started.elapsed() < DEADLINE && child.try_wait().unwrap().is_none(),
            "no API socket"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let info = text(&control(&["info", "--api-socket", sock]).stdout);
    assert!(
        info.contains("state:   running")
            && info.contains("vcpus:   1")
            && info.contains("memory:  64M"),
        "{info}"
    );
    assert!(control(&["stop", "--api-socket", sock]).status.success());
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_definition_is_one_line_naming_file_line_and_key() {
    let dir = test_dir("bad");
    let file = dir.join("vm.toml");
    std::fs::write(&file, "name = \"x\"\ncpus = \"two\"\n").unwrap();
    let out = control(&["run", "--config", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!(
            "tern: error: {}:2:8: cpus: invalid type: string \"two\", expected u8\n",
            file.display()
        )
    );
    std::fs::write(&file, "[boot]\nkernel = \"missing.elf\"\n").unwrap();
    let out = control(&["run", "--config", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "tern: error: {}:2:10: boot.kernel: {}: No such file",
            file.display(),
            dir.join("missing.elf").display()
        )),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Makes or deletes a bridge through the socket ioctls (SIOCBRADDBR/SIOCBRDELBR).
fn bridge_ioctl(request: libc::c_ulong, name: &str) -> std::io::Result<()> {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let cname = std::ffi::CString::new(name).unwrap();
    // SAFETY: the request reads a NUL-terminated name that outlives the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), request, cname.as_ptr()) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The interfaces on `bridge`.
fn ports(bridge: &str) -> Vec<String> {
    let mut ports: Vec<String> =
        std::fs::read_dir(Path::new("/sys/class/net").join(bridge).join("brif"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
    ports.sort();
    ports
}

/// A bridge for one test, deleted when dropped.
struct Bridge(String);

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = bridge_ioctl(0x89a1, &self.0);
    }
}

#[test]
fn a_nic_on_a_bridge_gets_a_tap_that_is_removed_even_when_tern_is_killed() {
    let bridge = Bridge(format!("tbr{}", std::process::id() % 100_000));
    bridge_ioctl(0x89a0, &bridge.0).unwrap_or_else(|e| {
        panic!(
            "this test needs CAP_NET_ADMIN to make bridge {}: {e}",
            bridge.0
        )
    });
    let dir = test_dir("bridge");
    let name = vm_name("br");
    let file = definition(&dir, &name);
    std::fs::write(
        &file,
        std::fs::read_to_string(&file).unwrap()
            + &format!(
                "\n[[net]]\nbridge = \"{}\"\nmac = \"52:54:00:12:34:56\"\n",
                bridge.0
            ),
    )
    .unwrap();
    let mut vm = Vm::start(tern().arg("run").arg("--config").arg(&file), &name);
    let taps = ports(&bridge.0);
    assert_eq!(taps.len(), 1, "{taps:?}");
    let tap = Path::new("/sys/class/net").join(&taps[0]);
    let flags = std::fs::read_to_string(tap.join("flags")).unwrap();
    assert_eq!(
        u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap() & 1,
        1,
        "the TAP is up: {flags}"
    );
    // SIGKILL: no destructor runs in tern; the cleaner process still removes the TAP.
    vm.child.kill().unwrap();
    vm.wait();
    let started = Instant::now();
    while tap.exists() {
        assert!(
            started.elapsed() < DEADLINE,
            "{} still exists after tern was killed",
            tap.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(ports(&bridge.0).is_empty());

    // A bridge that does not exist is one line, and no TAP is left behind.
    let out = control(&[
        "run",
        "--config",
        file.to_str().unwrap(),
        "--net",
        "bridge=nosuchbr0",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "tern: error: bridge nosuchbr0 does not exist\n"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
