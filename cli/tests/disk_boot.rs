//! `tern run` without `--kernel`: the kernel, initrd and command line come from the
//! boot disk's own grub.cfg (an ext4 image made with mkfs.ext4 -d, holding tiny PVH
//! "kernels" that mark their boot on COM1 and power off or reset).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod tiny_kernel;
use tiny_kernel::{marking, pvh_elf, POWER_OFF, RESET_CF9};

const GRUB_CFG: &str = r#"# as grub-mkconfig writes it, trimmed
if [ -s $prefix/grubenv ]; then
  load_env
fi
set default="0"
if [ x"${feature_menuentry_id}" = xy ]; then
  menuentry_id_option="--id"
else
  menuentry_id_option=""
fi
export menuentry_id_option
menuentry 'Tiny GNU/Linux' --class debian --class gnu-linux --class os $menuentry_id_option 'gnulinux-simple-tiny' {
	insmod ext2
	echo	'Loading Linux tiny ...'
	linux	/boot/vmlinuz-tiny root=/dev/vda ro quiet
	echo	'Loading initial ramdisk ...'
	initrd	/boot/initrd.img-tiny
}
menuentry 'Tiny that resets' $menuentry_id_option 'gnulinux-reset' {
	linux	/boot/vmlinuz-reset ro console=hvc0
}
"#;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tern-cli-disk-boot-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A whole-disk ext4 image holding /boot/grub/grub.cfg and the tiny kernels.
fn boot_disk(dir: &Path) -> PathBuf {
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("boot/grub")).unwrap();
    std::fs::write(tree.join("boot/grub/grub.cfg"), GRUB_CFG).unwrap();
    std::fs::write(tree.join("boot/vmlinuz-tiny"), pvh_elf(&marking(b'B', POWER_OFF))).unwrap();
    std::fs::write(tree.join("boot/initrd.img-tiny"), vec![0x5a; 64 << 10]).unwrap();
    std::fs::write(tree.join("boot/vmlinuz-reset"), pvh_elf(&marking(b'R', RESET_CF9))).unwrap();
    let image = dir.join("disk.img");
    let status = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&tree)
        .arg(&image)
        .arg("8M")
        .status()
        .unwrap_or_else(|e| panic!("mkfs.ext4 (e2fsprogs, installed by resources/install-host-packages.sh) cannot run: {e}"));
    assert!(status.success(), "mkfs.ext4 failed");
    image
}

fn tern_run(dir: &Path, disk: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["-v", "run", "--allow-emulated-kvm", "--memory", "64M"])
        .arg("--serial")
        .arg(format!("file={}", dir.join("console").display()))
        .arg("--disk")
        .arg(format!("path={}", disk.display()))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn the_default_entry_of_the_disks_grub_cfg_boots_with_its_initrd_and_a_serial_console() {
    let dir = scratch("default");
    let disk = boot_disk(&dir);
    let before = std::fs::read(&disk).unwrap();
    let out = tern_run(&dir, &disk, &["--on-reboot", "exit", "--cmdline-append", "tern.test=1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(std::fs::read(dir.join("console")).unwrap(), b"B", "{stderr}");
    assert!(stderr.contains("guest powered off"), "{stderr}");
    // -v names the entry and the command line: the entry's, the appended words, and
    // the serial console tern adds because the entry names none.
    assert!(stderr.contains("Tiny GNU/Linux") && stderr.contains("root=/dev/vda ro quiet tern.test=1 console=ttyS0"), "{stderr}");
    // The inspection only read the image.
    assert!(std::fs::read(&disk).unwrap() == before, "the disk image changed");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn boot_entry_picks_another_entry_by_title_or_index() {
    for choice in ["Tiny that resets", "1", "gnulinux-reset"] {
        let dir = scratch(&format!("entry-{}", choice.len()));
        let disk = boot_disk(&dir);
        let out = tern_run(&dir, &disk, &["--on-reboot", "exit", "--boot-entry", choice]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{choice}: {stderr}");
        assert_eq!(std::fs::read(dir.join("console")).unwrap(), b"R", "{choice}: {stderr}");
        assert!(stderr.contains("guest reset"), "{choice}: {stderr}");
        // The entry names a console: tern adds none.
        assert!(stderr.contains("ro console=hvc0") && !stderr.contains("console=hvc0 console=ttyS0"), "{stderr}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn a_disk_without_a_boot_configuration_or_no_disk_at_all_is_one_clear_error() {
    let dir = scratch("bad");
    let zeroes = dir.join("zeroes.img");
    std::fs::write(&zeroes, vec![0u8; 4 << 20]).unwrap();
    let out = tern_run(&dir, &zeroes, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("tern: error:")).collect();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains(&zeroes.display().to_string()), "{stderr}");

    let disk = boot_disk(&dir);
    let out = tern_run(&dir, &disk, &["--boot-entry", "no such entry"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no such entry"), "{stderr}");

    let out = Command::new(env!("CARGO_BIN_EXE_tern")).args(["run", "--allow-emulated-kvm"]).stderr(Stdio::piped()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("nothing to boot: give --kernel PATH, or a --disk"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
