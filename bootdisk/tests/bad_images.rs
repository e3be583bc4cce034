//! Broken and hostile images: each gives one line naming the disk and the problem, never a panic.

mod support;

use std::sync::Arc;

use support::*;
use tern_bootdisk::{inspect, inspect_reader, load, ReadAt};

fn root_with_grub(t: &TempDir) -> std::path::PathBuf {
    let root = t.path("root");
    put(&root, "boot/grub/grub.cfg", b"menuentry 'L' {\n linux /boot/vmlinuz ro\n}\n");
    put(&root, "boot/vmlinuz", &pattern(1, 10_000));
    root
}

/// One GPT partition (LBA 2048, 8 MiB) in a 12 MiB image, filled by `fill`.
fn gpt_image(t: &TempDir, fill: impl FnOnce(&std::path::Path)) -> std::path::PathBuf {
    let img = t.path("disk.img");
    new_image(&img, 12 * MIB);
    fill(&img);
    write_gpt(&img, 12 * MIB, &[GptPart { slot: 0, kind: LINUX, first: 2048, last: 9 * MIB / 512 - 1 }]);
    img
}

#[test]
fn empty_file() {
    let t = TempDir::new("empty");
    let img = t.path("disk.img");
    new_image(&img, 0);
    assert_eq!(inspect_error(&img), format!("{}: the image is empty", img.display()));
}

#[test]
fn all_zeroes() {
    let t = TempDir::new("zero");
    let img = t.path("disk.img");
    new_image(&img, 4 * MIB);
    assert_eq!(inspect_error(&img), format!("{}: no partition table and no filesystem tern can read (tern reads /boot from ext2/3/4)", img.display()));
}

#[test]
fn random_bytes_and_random_bytes_behind_a_partition_table() {
    for seed in 0..8u8 {
        let bytes = pattern(seed, 256 * 1024);
        let e = inspect_reader("rand.img", Arc::new(bytes.clone()) as Arc<dyn ReadAt>, bytes.len() as u64).unwrap_err().to_string();
        assert!(e.starts_with("rand.img: ") && !e.contains('\n'), "{e}");
    }
    // Random filesystem bytes behind a valid GPT, with an ext4 magic planted.
    let t = TempDir::new("rand");
    let img = gpt_image(&t, |img| {
        write_at(img, MIB, &pattern(3, 8 * MIB as usize));
        write_at(img, MIB + 1024 + 56, &[0x53, 0xEF]);
    });
    let e = inspect_error(&img);
    assert!(e.contains("partition 1: ext2/3/4 filesystem: "), "{e}");
}

#[test]
fn truncated_image() {
    let t = TempDir::new("trunc");
    let root = root_with_grub(&t);
    let img = gpt_image(&t, |img| mkfs(img, MIB, 8 * MIB, &root, "01234567-89ab-cdef-0123-456789abcdef"));
    assert!(inspect(&img).is_ok());
    std::fs::OpenOptions::new().write(true).open(&img).unwrap().set_len(5 * MIB).unwrap();
    assert_eq!(
        inspect_error(&img),
        format!("{}: partition 1 (bytes 1048576..9437184) ends past the end of the image (5242880 bytes)", img.display())
    );
    // Cut inside the GPT entry array.
    std::fs::OpenOptions::new().write(true).open(&img).unwrap().set_len(4096).unwrap();
    let e = inspect_error(&img);
    assert!(e.ends_with("GPT: the partition entry array at LBA 2 (16384 bytes) is not inside the image"), "{e}");
}

#[test]
fn gpt_entry_past_the_end() {
    let t = TempDir::new("pastend");
    let img = t.path("disk.img");
    new_image(&img, 4 * MIB);
    write_gpt(&img, 4 * MIB, &[GptPart { slot: 2, kind: LINUX, first: 2048, last: 20479 }]);
    assert_eq!(
        inspect_error(&img),
        format!("{}: partition 3 (bytes 1048576..10485760) ends past the end of the image (4194304 bytes)", img.display())
    );
}

#[test]
fn bad_gpt_crcs() {
    let t = TempDir::new("crc");
    let img = t.path("disk.img");
    new_image(&img, 4 * MIB);
    write_gpt(&img, 4 * MIB, &[GptPart { slot: 0, kind: LINUX, first: 2048, last: 4095 }]);
    let good = read(&img);
    write_at(&img, 512 + 40, &[0x99]);
    let e = inspect_error(&img);
    assert!(e.starts_with(&format!("{}: GPT: header CRC32 is 0x", img.display())) && e.contains(", computed 0x"), "{e}");
    std::fs::write(&img, &good).unwrap();
    write_at(&img, 1024 + 33, &[0x77]);
    let e = inspect_error(&img);
    assert!(e.contains(": GPT: partition entry array CRC32 is 0x"), "{e}");
}

#[test]
fn unsupported_filesystem_is_named() {
    let t = TempDir::new("xfs");
    let img = gpt_image(&t, |img| write_at(img, MIB, b"XFSB\0\0\x10\0"));
    assert_eq!(inspect_error(&img), format!("{}: partition 1: holds xfs: unsupported (tern reads /boot from ext2/3/4)", img.display()));
    let t = TempDir::new("luks");
    let img = gpt_image(&t, |img| write_at(img, MIB, b"LUKS\xba\xbe\0\x02"));
    assert_eq!(inspect_error(&img), format!("{}: partition 1: holds LUKS: unsupported (tern reads /boot from ext2/3/4)", img.display()));
}

#[test]
fn symlink_loop_in_boot_is_an_error_not_a_hang() {
    let t = TempDir::new("loop");
    let root = t.path("root");
    link(&root, "boot/grub", "/boot/grub2");
    link(&root, "boot/grub2", "/boot/grub");
    let img = gpt_image(&t, |img| mkfs(img, MIB, 8 * MIB, &root, "01234567-89ab-cdef-0123-456789abcdef"));
    assert_eq!(
        inspect_error(&img),
        format!("{}: partition 1: grub.cfg /boot/grub/grub.cfg: too many levels of symbolic links", img.display())
    );
    // The same for Debian's kernel link.
    let t = TempDir::new("loop2");
    let root = t.path("root");
    link(&root, "vmlinuz", "vmlinuz.old");
    link(&root, "vmlinuz.old", "vmlinuz");
    let img = gpt_image(&t, |img| mkfs(img, MIB, 8 * MIB, &root, "01234567-89ab-cdef-0123-456789abcdef"));
    assert_eq!(inspect_error(&img), format!("{}: partition 1: link /vmlinuz: too many levels of symbolic links", img.display()));
}

#[test]
fn no_boot_configuration_on_a_readable_filesystem() {
    let t = TempDir::new("noconf");
    let root = t.path("root");
    put(&root, "etc/hostname", b"x\n");
    let img = gpt_image(&t, |img| mkfs(img, MIB, 8 * MIB, &root, "01234567-89ab-cdef-0123-456789abcdef"));
    assert_eq!(
        inspect_error(&img),
        format!("{}: no /boot/grub/grub.cfg, /boot/grub2/grub.cfg, /boot/loader/entries/*.conf or /vmlinuz link on any ext2/3/4 filesystem (searched partition 1)", img.display())
    );
}

#[test]
fn grub_cfg_syntax_error_names_file_and_line() {
    let t = TempDir::new("syntax");
    let root = t.path("root");
    put(&root, "boot/grub/grub.cfg", b"set default=0\nmenuentry 'x' {\n linux /k\n");
    let img = gpt_image(&t, |img| mkfs(img, MIB, 8 * MIB, &root, "01234567-89ab-cdef-0123-456789abcdef"));
    assert_eq!(inspect_error(&img), format!("{}: partition 1: /boot/grub/grub.cfg line 3: missing }}", img.display()));
}

#[test]
fn search_for_a_uuid_no_partition_holds() {
    let t = TempDir::new("nouuid");
    let root = t.path("root");
    put(&root, "boot/grub/grub.cfg", b"menuentry 'x' {\n search --no-floppy --fs-uuid --set=root 99999999-0000-0000-0000-000000000000\n linux /k\n}\n");
    let img = gpt_image(&t, |img| mkfs(img, MIB, 8 * MIB, &root, "01234567-89ab-cdef-0123-456789abcdef"));
    assert_eq!(
        inspect_error(&img),
        format!("{}: partition 1: grub.cfg entry 'x' searches for filesystem UUID 99999999-0000-0000-0000-000000000000, which no partition holds", img.display())
    );
}

/// An inode that claims a size larger than its partition (set with debugfs) is refused
/// before anything is allocated for it.
#[test]
fn inode_claiming_a_huge_size() {
    for (size, expect) in [
        ("0x10000000", "is 268435456 bytes, more than its partition (8388608 bytes)"),
        ("0x40000000000", ": corrupt filesystem: too many blocks in file"),
    ] {
        let t = TempDir::new("huge");
        let root = root_with_grub(&t);
        let img = t.path("disk.img");
        new_image(&img, 8 * MIB);
        mkfs(&img, 0, 8 * MIB, &root, "01234567-89ab-cdef-0123-456789abcdef");
        let out = std::process::Command::new("debugfs").args(["-w", "-R", &format!("sif /boot/vmlinuz size {size}")]).arg(&img).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let menu = inspect(&img).unwrap();
        let e = load(&menu, &menu.entries[0]).unwrap_err().to_string();
        let prefix = format!("{}: whole-disk filesystem: grub.cfg entry 'L' /boot/vmlinuz", img.display());
        assert!(e.starts_with(&prefix) && e.ends_with(expect), "{e}");
    }
}

#[test]
fn mbr_extended_chain_that_loops() {
    let t = TempDir::new("ebrloop");
    let img = t.path("disk.img");
    new_image(&img, 8 * MIB);
    write_mbr(&img, &[(0, 0x05, 2048, 8192)]);
    write_ebr(&img, 2048, (0x83, 63, 100), (2048, 100));
    write_ebr(&img, 4096, (0x83, 63, 100), (2048, 100));
    let e = inspect_error(&img);
    assert!(e.ends_with("MBR: the extended partition's chain loops back to LBA 4096"), "{e}");
}

#[test]
fn grub_device_naming_a_partition_without_ext4() {
    let t = TempDir::new("nodev");
    let root = t.path("root");
    put(&root, "boot/grub/grub.cfg", b"menuentry 'x' {\n linux (hd0,gpt7)/vmlinuz ro\n}\n");
    let img = gpt_image(&t, |img| mkfs(img, MIB, 8 * MIB, &root, "01234567-89ab-cdef-0123-456789abcdef"));
    assert_eq!(
        inspect_error(&img),
        format!("{}: partition 1: grub.cfg entry 'x' names partition 7, which holds no ext2/3/4 filesystem on this disk", img.display())
    );
}

#[test]
fn a_grub_cfg_over_one_mib_is_refused_before_it_is_read() {
    let t = TempDir::new("bigcfg");
    let root = t.path("root");
    let mut cfg = b"menuentry 'x' { linux /k }\n".to_vec();
    cfg.resize((1 << 20) + 1, b'#');
    put(&root, "boot/grub/grub.cfg", &cfg);
    let img = gpt_image(&t, |img| mkfs(img, MIB, 8 * MIB, &root, "01234567-89ab-cdef-0123-456789abcdef"));
    assert_eq!(
        inspect_error(&img),
        format!("{}: partition 1: grub.cfg /boot/grub/grub.cfg is 1048577 bytes, more than the 1 MiB limit", img.display())
    );
}
