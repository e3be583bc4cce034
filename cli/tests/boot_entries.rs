//! `tern boot-entries` on a real image (mkfs.ext4 -d) and on a broken one.

use std::process::Command;

fn tern() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tern"))
}

#[test]
fn lists_entries_and_fails_with_one_line_on_a_bad_image() {
    let dir = std::env::temp_dir().join(format!("tern-boot-entries-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("boot/grub")).unwrap();
    std::fs::write(root.join("boot/grub/grub.cfg"), "set default=\"1\"\nmenuentry 'One' {\n linux /boot/k1 ro\n}\nmenuentry 'Two' --id two {\n linux /boot/k2 ro quiet\n initrd /boot/i2\n}\n").unwrap();
    std::fs::write(root.join("boot/k1"), b"kernel one").unwrap();
    let img = dir.join("disk.img");
    std::fs::File::create(&img).unwrap().set_len(8 << 20).unwrap();
    let mk = Command::new("mkfs.ext4").args(["-q", "-F", "-d"]).arg(&root).arg(&img).output().unwrap();
    assert!(mk.status.success(), "{}", String::from_utf8_lossy(&mk.stderr));

    let out = tern().args(["boot-entries", "-v", "--disk"]).arg(&img).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("whole disk: bytes 0..8388608 (no partition table): ext2/3/4, UUID "), "{text}");
    assert_eq!(lines[1], "grub.cfg on the whole disk (/boot/grub/grub.cfg)");
    assert_eq!(lines[2], "  0   One  kernel /boot/k1  initrd -  cmdline \"ro\"");
    assert_eq!(lines[3], "  1 * Two  kernel /boot/k2  initrd /boot/i2  cmdline \"ro quiet\"");

    std::fs::write(&img, vec![0u8; 4096]).unwrap();
    let out = tern().args(["boot-entries", "--disk"]).arg(&img).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err, format!("tern: error: {}: no partition table and no filesystem tern can read (tern reads /boot from ext2/3/4)\n", img.display()));
    let _ = std::fs::remove_dir_all(&dir);
}
