//! `tern run --kernel` with a 32-bit bzImage (no XLF_KERNEL_64), as a process: a tiny
//! protected-mode "kernel" checks the 32-bit boot protocol's entry state (CS 0x10,
//! DS/ES/SS 0x18, paging off, ebp/edi/ebx 0, %esi = the zero page) and writes the start
//! of its command line to COM1 through the zero page, then powers off.

use std::path::PathBuf;
use std::process::{Command, Stdio};

mod tiny_kernel;
use tiny_kernel::{bzimage32, linux32_entry_check};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tern-cli-linux32-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_32_bit_bzimage_is_entered_through_the_32_bit_boot_protocol_with_1_and_2_vcpus() {
    for cpus in ["1", "2"] {
        let dir = scratch(cpus);
        let kernel = dir.join("bzImage");
        std::fs::write(&kernel, bzimage32(&linux32_entry_check())).unwrap();
        let initrd = dir.join("initrd");
        std::fs::write(&initrd, vec![0x5a; 4096]).unwrap();
        let disk = dir.join("disk.img");
        std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_tern"))
            .args(["run", "--allow-emulated-kvm", "--memory", "128M", "--cpus", cpus, "--on-reboot", "exit"])
            .arg("--kernel")
            .arg(&kernel)
            .arg("--initrd")
            .arg(&initrd)
            .args(["--cmdline", "OK console=ttyS0"])
            .arg("--serial")
            .arg(format!("file={}", dir.join("console").display()))
            .arg("--disk")
            .arg(format!("path={}", disk.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let console = String::from_utf8_lossy(&std::fs::read(dir.join("console")).unwrap()).into_owned();
        assert_eq!(console, "OK", "--cpus {cpus}: the guest wrote {console:?}; {stderr}");
        assert_eq!(out.status.code(), Some(0), "--cpus {cpus}: {stderr}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
