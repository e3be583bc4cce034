//! `tern run` across guest reboots, as a process: tiny "kernels" (ELF images with a PVH
//! note, entered in 32-bit protected mode, so they run on kvm_pvm too) that mark
//! their boot on COM1 and then reset the machine or power it off.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod tiny_kernel;
use tiny_kernel::{marking, pvh_elf, POWER_OFF, RESET_CF9, TRIPLE_FAULT};

const TIMEOUT: Duration = Duration::from_secs(60);

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tern-cli-reboot-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Replaces `path` the way a package upgrade does: a new file renamed over it.
fn install(path: &Path, image: &[u8]) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, image).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn tern_run(dir: &Path, extra: &[&str]) -> Command {
    let disk = dir.join("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tern"));
    cmd.args(["run", "--allow-emulated-kvm", "--memory", "64M"])
        .arg("--kernel")
        .arg(dir.join("kernel"))
        .arg("--serial")
        .arg(format!("file={}", dir.join("console").display()))
        .arg("--disk")
        .arg(format!("path={}", disk.display()))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

#[test]
fn with_on_reboot_exit_a_reset_ends_tern_with_0_and_a_triple_fault_with_3() {
    for (tail, status, says) in [
        (RESET_CF9, 0, "tern: guest reset (reset through the reset control register (port 0xCF9)); exiting (--on-reboot exit)"),
        (TRIPLE_FAULT, 3, "tern: guest crashed: vCPU 0 triple fault (KVM_EXIT_SHUTDOWN)"),
    ] {
        let dir = scratch(&format!("exit-{status}"));
        install(&dir.join("kernel"), &pvh_elf(&marking(b'B', tail)));
        let out = tern_run(&dir, &["--on-reboot", "exit"]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(status), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
        assert!(!stderr.contains("rebooted"), "{stderr}");
        assert_eq!(std::fs::read(dir.join("console")).unwrap(), b"B");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn a_reboot_boots_again_in_the_same_process_and_reads_the_kernel_again() {
    let dir = scratch("restart");
    install(&dir.join("kernel"), &pvh_elf(&marking(b'A', RESET_CF9)));
    let mut child = tern_run(&dir, &[]).spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let started = Instant::now();
    let mut text = String::new();
    let mut line = String::new();
    // The guest resets at once, every boot: wait for the second boot, then replace
    // the kernel with one that powers off; a later reboot must load it.
    while !text.contains("booting again (boot 2)") {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "tern ended before a reboot: {text}");
        text.push_str(&line);
        assert!(started.elapsed() < TIMEOUT, "{text}");
    }
    install(&dir.join("kernel"), &pvh_elf(&marking(b'P', POWER_OFF)));
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < TIMEOUT, "tern did not end after the kernel was replaced");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    text.push_str(&rest);
    assert_eq!(status.code(), Some(0), "{text}");
    let reboots: Vec<&str> = text.lines().filter(|l| l.starts_with("tern: guest rebooted (")).collect();
    assert!(reboots.len() >= 2, "{text}");
    for (i, l) in reboots.iter().enumerate() {
        let expect = format!("tern: guest rebooted (reset through the reset control register (port 0xCF9)); booting again (boot {})", i + 2);
        assert_eq!(*l, expect);
    }
    assert!(text.contains("tern: guest powered off"), "{text}");
    let console = String::from_utf8(std::fs::read(dir.join("console")).unwrap()).unwrap();
    assert_eq!(console, format!("{}P", "A".repeat(reboots.len())), "one mark per boot, the last from the new kernel");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_kernel_gone_at_a_reboot_ends_tern_with_one_error_line() {
    let dir = scratch("gone");
    install(&dir.join("kernel"), &pvh_elf(&marking(b'A', RESET_CF9)));
    let mut child = tern_run(&dir, &[]).spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut text = String::new();
    let mut line = String::new();
    while !text.contains("booting again (boot 2)") {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "tern ended before a reboot: {text}");
        text.push_str(&line);
    }
    std::fs::remove_file(dir.join("kernel")).unwrap();
    let status = child.wait().unwrap();
    std::io::Read::read_to_string(&mut stderr, &mut text).unwrap();
    assert_eq!(status.code(), Some(1), "{text}");
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("tern: error:")).collect();
    assert_eq!(errors.len(), 1, "{text}");
    assert!(errors[0].contains("booting the guest again after its reboot (boot ") && errors[0].contains("cannot open kernel"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
