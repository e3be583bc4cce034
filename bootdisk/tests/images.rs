//! Real images (mkfs.ext4 -d + partition tables written here) inspected and loaded.

mod support;

use std::path::Path;

use support::*;
use tern_bootdisk::{inspect, load, partitions, BootMenu, ConfigSource, FileRef};

const DEBIAN: &str = include_str!("fixtures/debian12-grub.cfg");
const UBUNTU: &str = include_str!("fixtures/ubuntu-boot-partition-grub.cfg");
const ROOT_UUID: &str = "5e1c2b0a-7c5d-4c4e-9d0b-1c2d3e4f5a6b";
const DISK: u64 = 24 * MIB;

fn grubenv(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut s = String::from("# GRUB Environment Block\n");
    for (k, v) in pairs {
        s.push_str(&format!("{k}={v}\n"));
    }
    let mut b = s.into_bytes();
    b.resize(1024, b'#');
    b
}

/// Debian cloud layout: p1 ext4 root (LBA 2048..), p14 BIOS boot, p15 ESP.
fn debian_cloud(t: &TempDir, grub_cfg: &str, env: Option<&[(&str, &str)]>) -> std::path::PathBuf {
    let root = t.path("root");
    put(&root, "boot/grub/grub.cfg", grub_cfg.as_bytes());
    put(&root, "boot/vmlinuz-6.1.0-18-amd64", &pattern(1, 300_000));
    put(&root, "boot/initrd.img-6.1.0-18-amd64", &pattern(2, 70_000));
    put(&root, "etc/hostname", b"debian\n");
    if let Some(env) = env {
        put(&root, "boot/grub/grubenv", &grubenv(env));
    }
    let img = t.path("disk.img");
    new_image(&img, DISK);
    mkfs(&img, 8 * MIB, 12 * MIB, &root, ROOT_UUID);
    // The ESP holds only a FAT32 signature: it is skipped, not an error.
    write_at(&img, 4 * MIB + 0x52, b"FAT32   ");
    write_gpt(
        &img,
        DISK,
        &[
            GptPart { slot: 0, kind: LINUX, first: 8 * MIB / 512, last: 20 * MIB / 512 - 1 },
            GptPart { slot: 13, kind: BIOS_BOOT, first: 2048, last: 4095 },
            GptPart { slot: 14, kind: ESP, first: 4 * MIB / 512, last: 8 * MIB / 512 - 1 },
        ],
    );
    img
}

#[test]
fn gpt_debian_cloud_layout_grub_cfg_on_root() {
    let t = TempDir::new("cloud");
    let img = debian_cloud(&t, DEBIAN, None);
    let before = read(&img);
    let menu = inspect(&img).unwrap();
    assert_eq!(menu.source, ConfigSource::Grub { path: "/boot/grub/grub.cfg".into(), partition: 1 });
    assert_eq!(menu.entries.len(), 4);
    assert_eq!(menu.default, 0);
    let e = menu.select(None).unwrap();
    assert_eq!(e.title, "Debian GNU/Linux");
    assert_eq!(e.kernel, FileRef { partition: 1, path: "/boot/vmlinuz-6.1.0-18-amd64".into() });
    let boot = load(&menu, e).unwrap();
    assert_eq!(boot.kernel, pattern(1, 300_000));
    assert_eq!(boot.initrd, Some(pattern(2, 70_000)));
    assert!(boot.cmdline.starts_with(&format!("root=UUID={ROOT_UUID} ro console=tty0")));
    assert_eq!(boot.title, "Debian GNU/Linux");

    let parts = partitions(&img).unwrap();
    let kinds: Vec<(u32, &str)> = parts.iter().map(|p| (p.partition.index, p.filesystem.as_str())).collect();
    assert_eq!(kinds, [(1, "ext2/3/4"), (14, "BIOS boot"), (15, "EFI system (vfat)")]);
    assert_eq!(parts[0].uuid.as_deref(), Some(ROOT_UUID));
    // Read-only: the image is byte for byte what it was.
    assert_eq!(read(&img), before);
}

#[test]
fn grub_entry_naming_a_missing_kernel_fails_to_load_with_one_line() {
    let t = TempDir::new("missing");
    let img = debian_cloud(&t, DEBIAN, None);
    let menu = inspect(&img).unwrap();
    let e = menu.select(Some("3")).unwrap();
    let err = load(&menu, e).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "{}: partition 1: grub.cfg entry 'Advanced options for Debian GNU/Linux>Debian GNU/Linux, with Linux 6.1.0-9-amd64' names /boot/vmlinuz-6.1.0-9-amd64, which does not exist",
            img.display()
        )
    );
}

#[test]
fn grub_default_from_cfg_and_grubenv_and_select_choices() {
    let t = TempDir::new("defaults");
    let by_index = inspect(&debian_cloud(&t, &DEBIAN.replace("set default=\"0\"", "set default=\"1>1\""), None)).unwrap();
    assert_eq!(by_index.default, 2);
    let t = TempDir::new("defaults");
    let sub = inspect(&debian_cloud(&t, &DEBIAN.replace("set default=\"0\"", "set default=\"1>0\""), None)).unwrap();
    assert_eq!(sub.default, 1);
    let t = TempDir::new("defaults");
    let id = format!("gnulinux-advanced-{ROOT_UUID}>gnulinux-6.1.0-18-amd64-recovery-{ROOT_UUID}");
    let by_id = inspect(&debian_cloud(&t, &DEBIAN.replace("set default=\"0\"", &format!("set default=\"{id}\"")), None)).unwrap();
    assert_eq!(by_id.default, 2);
    let t = TempDir::new("defaults");
    let by_title = inspect(&debian_cloud(&t, &DEBIAN.replace("set default=\"0\"", "set default=\"Debian GNU/Linux\""), None)).unwrap();
    assert_eq!(by_title.default, 0);
    // GRUB_DEFAULT=saved: `set default="${saved_entry}"`, saved_entry from grubenv.
    let t = TempDir::new("defaults");
    let saved_cfg = DEBIAN.replace("set default=\"0\"", "set default=\"${saved_entry}\"");
    let saved = inspect(&debian_cloud(&t, &saved_cfg, Some(&[("saved_entry", "1>2")]))).unwrap();
    assert_eq!(saved.default, 3);
    let t = TempDir::new("defaults");
    let next = inspect(&debian_cloud(&t, DEBIAN, Some(&[("next_entry", "1>1")]))).unwrap();
    assert_eq!(next.default, 2);

    let m: &BootMenu = &by_index;
    assert_eq!(m.select(Some("1")).unwrap().title, "Advanced options for Debian GNU/Linux>Debian GNU/Linux, with Linux 6.1.0-18-amd64");
    assert_eq!(m.select(Some("Debian GNU/Linux")).unwrap().id.as_deref(), Some(format!("gnulinux-simple-{ROOT_UUID}").as_str()));
    assert_eq!(m.select(Some(&format!("gnulinux-6.1.0-9-amd64-advanced-{ROOT_UUID}"))).unwrap().kernel.path, "/boot/vmlinuz-6.1.0-9-amd64");
    assert_eq!(m.select(None).unwrap().title, m.entries[2].title);
    let err = m.select(Some("Windows")).unwrap_err().to_string();
    assert!(err.ends_with(": no boot entry \"Windows\" (choose an index 0..4, a title or an id)"), "{err}");
}

#[test]
fn gpt_separate_boot_partition_with_microcode_initrd() {
    let t = TempDir::new("bootpart");
    let boot = t.path("boot");
    put(&boot, "grub/grub.cfg", UBUNTU.as_bytes());
    put(&boot, "vmlinuz-6.8.0-31-generic", &pattern(3, 200_000));
    put(&boot, "amd-ucode.img", &pattern(4, 5000));
    put(&boot, "initrd.img-6.8.0-31-generic", &pattern(5, 40_000));
    let root = t.path("root");
    put(&root, "etc/fstab", b"UUID=bbbbbbbb-5555-6666-7777-888888888888 /boot ext4 defaults 0 2\n");
    let img = t.path("disk.img");
    new_image(&img, 32 * MIB);
    mkfs(&img, MIB, 10 * MIB, &boot, "bbbbbbbb-5555-6666-7777-888888888888");
    mkfs(&img, 12 * MIB, 10 * MIB, &root, "aaaaaaaa-1111-2222-3333-444444444444");
    write_gpt(
        &img,
        32 * MIB,
        &[
            GptPart { slot: 1, kind: LINUX, first: MIB / 512, last: 11 * MIB / 512 - 1 },
            GptPart { slot: 2, kind: LINUX, first: 12 * MIB / 512, last: 22 * MIB / 512 - 1 },
        ],
    );
    let menu = inspect(&img).unwrap();
    assert_eq!(menu.source, ConfigSource::Grub { path: "/grub/grub.cfg".into(), partition: 2 });
    let e = menu.select(None).unwrap();
    assert_eq!(e.kernel, FileRef { partition: 2, path: "/vmlinuz-6.8.0-31-generic".into() });
    let b = load(&menu, e).unwrap();
    assert_eq!(b.kernel, pattern(3, 200_000));
    let mut both = pattern(4, 5000);
    both.extend(pattern(5, 40_000));
    assert_eq!(b.initrd, Some(both));
    assert_eq!(b.cmdline, "root=UUID=aaaaaaaa-1111-2222-3333-444444444444 ro quiet splash");
}

#[test]
fn mbr_with_a_logical_partition() {
    let t = TempDir::new("mbr");
    let root = t.path("root");
    let cfg = "set default=\"0\"\nmenuentry 'Logical' {\n\tlinux /boot/vmlinuz root=/dev/vda5 ro\n\tinitrd /boot/initrd.img\n}\n";
    put(&root, "boot/grub/grub.cfg", cfg.as_bytes());
    put(&root, "boot/vmlinuz", &pattern(6, 100_000));
    put(&root, "boot/initrd.img", &pattern(7, 1000));
    let empty = t.path("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let img = t.path("disk.img");
    new_image(&img, 32 * MIB);
    // p1: swap-typed, no filesystem; p2: extended (4 MiB..32 MiB) holding p5 (ext4 data) and p6 (ext4 root).
    mkfs(&img, 5 * MIB, 8 * MIB, &empty, "11111111-0000-0000-0000-000000000005");
    mkfs(&img, 16 * MIB, 10 * MIB, &root, "11111111-0000-0000-0000-000000000006");
    write_mbr(&img, &[(0, 0x82, 2048, 4096), (1, 0x05, 8192, 57344)]);
    // EBR 1 at LBA 8192: p5 at +2048 (5 MiB), next EBR at extended+16384 (LBA 24576, 12 MiB).
    write_ebr(&img, 8192, (0x83, 2048, 16384), (16384, 40960));
    write_ebr(&img, 24576, (0x83, 8192, 20480), (0, 0));
    let parts = partitions(&img).unwrap();
    let idx: Vec<u32> = parts.iter().map(|p| p.partition.index).collect();
    assert_eq!(idx, [1, 5, 6]);
    assert_eq!(parts[2].partition.start, 16 * MIB);
    let menu = inspect(&img).unwrap();
    assert_eq!(menu.source, ConfigSource::Grub { path: "/boot/grub/grub.cfg".into(), partition: 6 });
    let b = load(&menu, &menu.entries[0]).unwrap();
    assert_eq!(b.kernel, pattern(6, 100_000));
    assert_eq!(b.initrd, Some(pattern(7, 1000)));
    assert_eq!(b.cmdline, "root=/dev/vda5 ro");
}

#[test]
fn whole_disk_ext4_with_debian_links_only() {
    let t = TempDir::new("links");
    let root = t.path("root");
    put(&root, "boot/vmlinuz-6.1.0-18-amd64", &pattern(8, 150_000));
    put(&root, "boot/initrd.img-6.1.0-18-amd64", &pattern(9, 9_000));
    link(&root, "vmlinuz", "boot/vmlinuz-6.1.0-18-amd64");
    link(&root, "initrd.img", "boot/initrd.img-6.1.0-18-amd64");
    let img = t.path("disk.img");
    new_image(&img, 16 * MIB);
    mkfs(&img, 0, 16 * MIB, &root, ROOT_UUID);
    let menu = inspect(&img).unwrap();
    assert_eq!(menu.source, ConfigSource::DebianLinks { partition: 0 });
    let e = menu.select(None).unwrap();
    assert_eq!(e.cmdline, format!("root=UUID={ROOT_UUID} ro"));
    assert_eq!(e.kernel, FileRef { partition: 0, path: "/vmlinuz".into() });
    let b = load(&menu, e).unwrap();
    assert_eq!(b.kernel, pattern(8, 150_000));
    assert_eq!(b.initrd, Some(pattern(9, 9_000)));
}

#[test]
fn bls_entries_sorted_newest_first_with_kernelopts() {
    let t = TempDir::new("bls");
    let root = t.path("root");
    let entry = |v: &str| {
        format!("title Red Hat Enterprise Linux ({v}) 8.9\nversion {v}\nlinux /vmlinuz-{v}\ninitrd /initramfs-{v}.img $tuned_initrd\noptions $kernelopts $tuned_params\nid rhel-{v}\ngrub_users $grub_users\ngrub_arg --unrestricted\ngrub_class kernel\n")
    };
    put(&root, "boot/loader/entries/0123abcd-4.18.0-513.el8.x86_64.conf", entry("4.18.0-513.el8.x86_64").as_bytes());
    put(&root, "boot/loader/entries/0123abcd-4.18.0-80.el8.x86_64.conf", entry("4.18.0-80.el8.x86_64").as_bytes());
    put(&root, "boot/vmlinuz-4.18.0-513.el8.x86_64", &pattern(10, 80_000));
    put(&root, "boot/initramfs-4.18.0-513.el8.x86_64.img", &pattern(11, 8_000));
    put(&root, "boot/grub2/grubenv", &grubenv(&[("kernelopts", "root=/dev/mapper/rhel-root ro crashkernel=auto"), ("tuned_params", "")]));
    // grub.cfg that only calls blscfg: no menuentry, so the BLS entries are the menu.
    put(&root, "boot/grub2/grub.cfg", b"set default=\"${saved_entry}\"\ninsmod blscfg\nblscfg\n");
    let img = t.path("disk.img");
    new_image(&img, 20 * MIB);
    mkfs(&img, MIB, 16 * MIB, &root, ROOT_UUID);
    write_gpt(&img, 20 * MIB, &[GptPart { slot: 0, kind: LINUX, first: 2048, last: 17 * MIB / 512 - 1 }]);
    let menu = inspect(&img).unwrap();
    assert_eq!(menu.source, ConfigSource::Bls { partition: 1 });
    let titles: Vec<&str> = menu.entries.iter().map(|e| e.title.as_str()).collect();
    assert_eq!(titles, ["Red Hat Enterprise Linux (4.18.0-513.el8.x86_64) 8.9", "Red Hat Enterprise Linux (4.18.0-80.el8.x86_64) 8.9"]);
    let e = menu.select(None).unwrap();
    assert_eq!(e.id.as_deref(), Some("0123abcd-4.18.0-513.el8.x86_64"));
    assert_eq!(e.kernel.path, "/boot/vmlinuz-4.18.0-513.el8.x86_64");
    assert_eq!(e.cmdline, "root=/dev/mapper/rhel-root ro crashkernel=auto");
    // `$tuned_initrd` is empty in grubenv (unset): it names no file.
    assert_eq!(e.initrds, [FileRef { partition: 1, path: "/boot/initramfs-4.18.0-513.el8.x86_64.img".into() }]);
    let b = load(&menu, e).unwrap();
    assert_eq!(b.kernel, pattern(10, 80_000));
    assert_eq!(b.initrd, Some(pattern(11, 8_000)));
    // The older entry's kernel is not on the disk: loading it names the file.
    let err = load(&menu, &menu.entries[1]).unwrap_err().to_string();
    assert!(err.ends_with("partition 1: BLS entry 'Red Hat Enterprise Linux (4.18.0-80.el8.x86_64) 8.9' names /boot/vmlinuz-4.18.0-80.el8.x86_64, which does not exist"), "{err}");
}

#[test]
fn the_in_memory_reader_gives_the_same_menu() {
    let t = TempDir::new("reader");
    let img = debian_cloud(&t, DEBIAN, None);
    let bytes = read(&img);
    let len = bytes.len() as u64;
    let image: std::sync::Arc<dyn tern_bootdisk::ReadAt> = std::sync::Arc::new(bytes);
    let menu = tern_bootdisk::inspect_reader("mem.img", image.clone(), len).unwrap();
    assert_eq!(menu.disk, Path::new("mem.img"));
    assert_eq!(menu.entries, inspect(&img).unwrap().entries);
    let b = tern_bootdisk::load_reader(&menu, &menu.entries[0], image, len).unwrap();
    assert_eq!(b.kernel, pattern(1, 300_000));
}
