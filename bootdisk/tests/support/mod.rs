//! Building disk images for the tests: ext4 filesystems with mkfs.ext4 -d, and GPT/MBR
//! partition tables written here.
#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

pub const MIB: u64 = 1 << 20;
pub const BIOS_BOOT: &str = "21686148-6449-6E6F-744E-656564454649";
pub const ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
pub const LINUX: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!("tern-bootdisk-{tag}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Write `contents` at `rel` under `dir`, making parent directories.
pub fn put(dir: &Path, rel: &str, contents: &[u8]) {
    let p = dir.join(rel.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, contents).unwrap();
}

/// A symlink at `rel` under `dir` pointing to `target`.
pub fn link(dir: &Path, rel: &str, target: &str) {
    let p = dir.join(rel.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(target, p).unwrap();
}

/// Deterministic bytes standing in for a kernel or initrd.
pub fn pattern(seed: u8, len: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9u32 ^ u32::from(seed);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// An image file of `len` bytes (sparse).
pub fn new_image(path: &Path, len: u64) {
    File::create(path).unwrap().set_len(len).unwrap();
}

/// Make an ext4 filesystem of `size` bytes at `offset` in `img`, filled from `dir`.
pub fn mkfs(img: &Path, offset: u64, size: u64, dir: &Path, uuid: &str) {
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-U", uuid, "-d"])
        .arg(dir)
        .arg("-E")
        .arg(format!("offset={offset}"))
        .arg(img)
        .arg(format!("{}k", size / 1024))
        .output()
        .expect("mkfs.ext4 (e2fsprogs) runs");
    assert!(out.status.success(), "mkfs.ext4: {}", String::from_utf8_lossy(&out.stderr));
}

pub fn write_at(img: &Path, offset: u64, bytes: &[u8]) {
    OpenOptions::new().write(true).open(img).unwrap().write_all_at(bytes, offset).unwrap();
}

fn guid_bytes(text: &str) -> [u8; 16] {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    let b: Vec<u8> = (0..16).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()).collect();
    // Mixed endian: the first three fields are little-endian.
    [b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]
}

/// A GPT partition: slot (0-based), type GUID, first and last LBA (inclusive).
pub struct GptPart<'a> {
    pub slot: usize,
    pub kind: &'a str,
    pub first: u64,
    pub last: u64,
}

/// Protective MBR, primary GPT header at LBA 1, 128 entries at LBA 2 (CRC32s computed).
pub fn write_gpt(img: &Path, disk_len: u64, parts: &[GptPart]) {
    let sectors = disk_len / 512;
    let mut mbr = [0u8; 512];
    mbr[446 + 4] = 0xEE;
    mbr[446 + 8..446 + 12].copy_from_slice(&1u32.to_le_bytes());
    mbr[446 + 12..446 + 16].copy_from_slice(&((sectors - 1).min(0xFFFF_FFFF) as u32).to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    write_at(img, 0, &mbr);

    let mut entries = vec![0u8; 128 * 128];
    for p in parts {
        let e = &mut entries[p.slot * 128..p.slot * 128 + 128];
        e[0..16].copy_from_slice(&guid_bytes(p.kind));
        e[16..32].copy_from_slice(&guid_bytes("11111111-2222-3333-4444-555555555555"));
        e[16] = p.slot as u8;
        e[32..40].copy_from_slice(&p.first.to_le_bytes());
        e[40..48].copy_from_slice(&p.last.to_le_bytes());
    }
    write_at(img, 1024, &entries);

    let mut h = [0u8; 92];
    h[0..8].copy_from_slice(b"EFI PART");
    h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
    h[12..16].copy_from_slice(&92u32.to_le_bytes());
    h[24..32].copy_from_slice(&1u64.to_le_bytes());
    h[32..40].copy_from_slice(&(sectors - 1).to_le_bytes());
    h[40..48].copy_from_slice(&34u64.to_le_bytes());
    h[48..56].copy_from_slice(&(sectors - 34).to_le_bytes());
    h[56..72].copy_from_slice(&guid_bytes("DEADBEEF-0000-1111-2222-333333333333"));
    h[72..80].copy_from_slice(&2u64.to_le_bytes());
    h[80..84].copy_from_slice(&128u32.to_le_bytes());
    h[84..88].copy_from_slice(&128u32.to_le_bytes());
    h[88..92].copy_from_slice(&crc32fast::hash(&entries).to_le_bytes());
    let crc = crc32fast::hash(&h);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    write_at(img, 512, &h);
}

fn mbr_entry(kind: u8, first: u32, sectors: u32) -> [u8; 16] {
    let mut e = [0u8; 16];
    e[4] = kind;
    e[8..12].copy_from_slice(&first.to_le_bytes());
    e[12..16].copy_from_slice(&sectors.to_le_bytes());
    e
}

/// An MBR with primary entries (slot, type, first LBA, sectors).
pub fn write_mbr(img: &Path, primaries: &[(usize, u8, u32, u32)]) {
    let mut mbr = [0u8; 512];
    for &(slot, kind, first, sectors) in primaries {
        mbr[446 + 16 * slot..462 + 16 * slot].copy_from_slice(&mbr_entry(kind, first, sectors));
    }
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    write_at(img, 0, &mbr);
}

/// An EBR at `ebr_lba`: its logical partition (relative to the EBR) and the next EBR
/// (relative to the extended partition's start; 0: the last).
pub fn write_ebr(img: &Path, ebr_lba: u64, logical: (u8, u32, u32), next: (u32, u32)) {
    let mut ebr = [0u8; 512];
    ebr[446..462].copy_from_slice(&mbr_entry(logical.0, logical.1, logical.2));
    if next.0 != 0 {
        ebr[462..478].copy_from_slice(&mbr_entry(0x05, next.0, next.1));
    }
    ebr[510] = 0x55;
    ebr[511] = 0xAA;
    write_at(img, ebr_lba * 512, &ebr);
}

/// The error text of an inspect that must fail; it is one line starting with the disk.
pub fn inspect_error(img: &Path) -> String {
    let e = tern_bootdisk::inspect(img).expect_err("inspect must fail").to_string();
    assert!(e.starts_with(&img.display().to_string()), "{e}");
    assert!(!e.contains('\n'), "{e}");
    e
}

pub fn read(img: &Path) -> Vec<u8> {
    std::fs::read(img).unwrap()
}
