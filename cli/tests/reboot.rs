//! `tern run` across guest reboots, as a process: tiny "kernels" (ELF images with a PVH
//! note, entered in 32-bit protected mode, so they run on kvm_pvm too) that mark
//! their boot on COM1 and then reset the machine or power it off.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ENTRY: u32 = 0x10_0000;
const TIMEOUT: Duration = Duration::from_secs(60);

/// An ELF64 image loading `code` at 1 MiB with a Xen PVH entry note pointing there.
fn pvh_elf(code: &[u8]) -> Vec<u8> {
    const EHDR: usize = 64;
    const PHDR: usize = 56;
    let note_at = EHDR + 2 * PHDR;
    let mut note = Vec::new();
    for field in [4u32, 4, 18] {
        // namesz ("Xen\0"), descsz (a 32-bit entry), XEN_ELFNOTE_PHYS32_ENTRY
        note.extend_from_slice(&field.to_le_bytes());
    }
    note.extend_from_slice(b"Xen\0");
    note.extend_from_slice(&ENTRY.to_le_bytes());
    let code_at = 0x1000usize;

    let mut elf = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&0x3eu16.to_le_bytes()); // x86-64
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&u64::from(ENTRY).to_le_bytes());
    elf.extend_from_slice(&(EHDR as u64).to_le_bytes()); // e_phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    for half in [EHDR as u16, PHDR as u16, 2, 0, 0, 0] {
        elf.extend_from_slice(&half.to_le_bytes());
    }
    let phdr = |kind: u32, offset: usize, addr: u64, size: usize| {
        let mut p = Vec::new();
        p.extend_from_slice(&kind.to_le_bytes());
        p.extend_from_slice(&5u32.to_le_bytes()); // R+X
        for field in [offset as u64, addr, addr, size as u64, size as u64, 4] {
            p.extend_from_slice(&field.to_le_bytes());
        }
        p
    };
    elf.extend(phdr(1, code_at, u64::from(ENTRY), code.len())); // PT_LOAD
    elf.extend(phdr(4, note_at, 0, note.len())); // PT_NOTE
    elf.extend(note);
    elf.resize(code_at, 0);
    elf.extend_from_slice(code);
    elf
}

/// `mov edx, port; mov al, mark; out dx, al`, then `tail`.
fn marking(mark: u8, tail: &[u8]) -> Vec<u8> {
    let mut code = vec![0xba, 0xf8, 0x03, 0, 0, 0xb0, mark, 0xee];
    code.extend_from_slice(tail);
    code
}

/// Reset through 0xCF9 (inside the PCI configuration ports: tern run has PCI), then spin.
const RESET_CF9: &[u8] = &[0xba, 0xf9, 0x0c, 0, 0, 0xb0, 0x02, 0xee, 0xb0, 0x06, 0xee, 0xeb, 0xfe];
/// lidt with an empty table, ud2: a triple fault.
const TRIPLE_FAULT: &[u8] = &[0x0f, 0x01, 0x1d, 0x00, 0x06, 0x00, 0x00, 0x0f, 0x0b];
/// ACPI S5 through the sleep control register, then spin.
const POWER_OFF: &[u8] = &[0xba, 0x00, 0x06, 0, 0, 0xb0, (5 << 2) | (1 << 5), 0xee, 0xeb, 0xfe];

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
