//! Partition tables: GPT (behind its protective MBR), MBR with logical partitions, or none.

use std::collections::HashSet;

use crate::error::{Fault, Problem};
use crate::image::{read_exact, ReadAt};

/// Sector size the tables are read with.
pub const SECTOR: u64 = 512;
/// Most GPT entries read (the array is at most this many times the entry size).
const MAX_GPT_ENTRIES: u32 = 1024;
/// Most logical partitions followed in an extended partition's chain.
const MAX_LOGICAL: usize = 128;

/// GPT type of a BIOS boot partition.
pub const GPT_BIOS_BOOT: &str = "21686148-6449-6E6F-744E-656564454649";
/// GPT type of an EFI system partition.
pub const GPT_ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// MBR type of an EFI system partition.
pub const MBR_ESP: u8 = 0xEF;

/// What the table says a partition is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionType {
    /// GPT type GUID, upper case, as `blkid` prints it.
    Gpt(String),
    /// MBR type byte.
    Mbr(u8),
    /// No partition table: the whole disk is one filesystem.
    WholeDisk,
}

/// One partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// 1-based, as Linux numbers it (GPT slot + 1; MBR 1-4 primary, 5+ logical); 0: whole disk.
    pub index: u32,
    /// Offset in bytes from the start of the image.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    pub kind: PartitionType,
}

impl Partition {
    /// A BIOS boot partition or an ESP: never searched for /boot, never an error.
    pub fn is_firmware(&self) -> bool {
        match &self.kind {
            PartitionType::Gpt(g) => g == GPT_BIOS_BOOT || g == GPT_ESP,
            PartitionType::Mbr(t) => *t == MBR_ESP,
            PartitionType::WholeDisk => false,
        }
    }
}

/// The partitions of an image of `len` bytes.
pub(crate) fn read(image: &dyn ReadAt, len: u64) -> Result<Vec<Partition>, Fault> {
    if len == 0 {
        return Err(Problem::Empty.into());
    }
    if len < SECTOR {
        return Ok(vec![whole(len)]);
    }
    let mut mbr = [0u8; 512];
    read_exact(image, 0, &mut mbr)?;
    if mbr[510..512] != [0x55, 0xAA] {
        return Ok(vec![whole(len)]);
    }
    let entries: Vec<MbrEntry> = (0..4).map(|i| MbrEntry::parse(&mbr[446 + 16 * i..462 + 16 * i])).collect();
    // A boot sector of a whole-disk filesystem also ends in 55 AA; its "entries" are not plausible.
    if !entries.iter().all(MbrEntry::plausible) {
        return Ok(vec![whole(len)]);
    }
    if entries.iter().any(|e| e.kind == 0xEE) {
        return read_gpt(image, len);
    }
    if entries.iter().all(|e| e.kind == 0) {
        return Ok(vec![whole(len)]);
    }
    read_mbr(image, len, &entries)
}

fn whole(len: u64) -> Partition {
    Partition { index: 0, start: 0, len, kind: PartitionType::WholeDisk }
}

/// A partition's byte range, checked against the image.
fn place(index: u32, first_lba: u64, sectors: u64, disk_len: u64) -> Result<(u64, u64), Fault> {
    let start = first_lba.saturating_mul(SECTOR);
    let end = first_lba.saturating_add(sectors).saturating_mul(SECTOR);
    if end > disk_len {
        return Err(Problem::PastEnd { index, start, end, disk_len }.into());
    }
    Ok((start, end - start))
}

struct MbrEntry {
    status: u8,
    kind: u8,
    first_lba: u32,
    sectors: u32,
}

impl MbrEntry {
    fn parse(b: &[u8]) -> Self {
        MbrEntry {
            status: b[0],
            kind: b[4],
            first_lba: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            sectors: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
        }
    }

    fn plausible(&self) -> bool {
        (self.status == 0 || self.status == 0x80) && (self.kind == 0 || (self.first_lba != 0 && self.sectors != 0))
    }

    fn is_extended(&self) -> bool {
        matches!(self.kind, 0x05 | 0x0F | 0x85)
    }
}

fn read_mbr(image: &dyn ReadAt, len: u64, entries: &[MbrEntry]) -> Result<Vec<Partition>, Fault> {
    let mut parts = Vec::new();
    let mut extended = None;
    for (i, e) in entries.iter().enumerate() {
        if e.kind == 0 {
            continue;
        }
        let index = i as u32 + 1;
        let (start, plen) = place(index, e.first_lba.into(), e.sectors.into(), len)?;
        if e.is_extended() {
            if extended.is_some() {
                return Err(Problem::Mbr("more than one extended partition".into()).into());
            }
            extended = Some((u64::from(e.first_lba), u64::from(e.sectors)));
        } else {
            parts.push(Partition { index, start, len: plen, kind: PartitionType::Mbr(e.kind) });
        }
    }
    if let Some((ext_lba, ext_sectors)) = extended {
        read_logical(image, len, ext_lba, ext_sectors, &mut parts)?;
    }
    Ok(parts)
}

/// Walk the EBR chain of the extended partition at `ext_lba`.
fn read_logical(image: &dyn ReadAt, len: u64, ext_lba: u64, ext_sectors: u64, parts: &mut Vec<Partition>) -> Result<(), Fault> {
    let mut seen = HashSet::new();
    let mut ebr_lba = ext_lba;
    let mut index = 5u32;
    loop {
        if !seen.insert(ebr_lba) {
            return Err(Problem::Mbr(format!("the extended partition's chain loops back to LBA {ebr_lba}")).into());
        }
        if seen.len() > MAX_LOGICAL {
            return Err(Problem::Mbr(format!("more than {MAX_LOGICAL} logical partitions")).into());
        }
        if ebr_lba >= ext_lba + ext_sectors {
            return Err(Problem::Mbr(format!("an extended boot record at LBA {ebr_lba} lies outside the extended partition")).into());
        }
        let mut ebr = [0u8; 512];
        read_exact(image, ebr_lba * SECTOR, &mut ebr)?;
        if ebr[510..512] != [0x55, 0xAA] {
            return Err(Problem::Mbr(format!("the extended boot record at LBA {ebr_lba} has no 55 AA signature")).into());
        }
        let this = MbrEntry::parse(&ebr[446..462]);
        let next = MbrEntry::parse(&ebr[462..478]);
        if this.kind != 0 {
            let first = ebr_lba + u64::from(this.first_lba);
            let (start, plen) = place(index, first, this.sectors.into(), len)?;
            parts.push(Partition { index, start, len: plen, kind: PartitionType::Mbr(this.kind) });
            index += 1;
        }
        if next.kind == 0 || next.first_lba == 0 {
            return Ok(());
        }
        ebr_lba = ext_lba + u64::from(next.first_lba);
    }
}

/// Format a GPT GUID (mixed endian on disk) as text.
pub fn guid_text(b: &[u8]) -> String {
    format!(
        "{:02X}{:02X}{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}",
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
    )
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

fn gpt(msg: impl Into<String>) -> Fault {
    Problem::Gpt(msg.into()).into()
}

fn read_gpt(image: &dyn ReadAt, len: u64) -> Result<Vec<Partition>, Fault> {
    if len < 2 * SECTOR {
        return Err(gpt("the image ends before the GPT header at LBA 1"));
    }
    let mut header = [0u8; 512];
    read_exact(image, SECTOR, &mut header)?;
    if &header[0..8] != b"EFI PART" {
        return Err(gpt("the protective MBR is not followed by an \"EFI PART\" header at LBA 1"));
    }
    let header_size = u32_at(&header, 12) as usize;
    if !(92..=512).contains(&header_size) {
        return Err(gpt(format!("header size {header_size} is not in 92..=512")));
    }
    let stored = u32_at(&header, 16);
    let mut copy = header;
    copy[16..20].fill(0);
    let computed = crc32fast::hash(&copy[..header_size]);
    if stored != computed {
        return Err(gpt(format!("header CRC32 is {stored:#010x}, computed {computed:#010x}")));
    }
    let entries_lba = u64_at(&header, 72);
    let count = u32_at(&header, 80);
    let entry_size = u32_at(&header, 84);
    if count > MAX_GPT_ENTRIES {
        return Err(gpt(format!("{count} partition entries (at most {MAX_GPT_ENTRIES})")));
    }
    if !(128..=4096).contains(&entry_size) || entry_size % 8 != 0 {
        return Err(gpt(format!("partition entry size {entry_size} is not a multiple of 8 in 128..=4096")));
    }
    let array_len = u64::from(count) * u64::from(entry_size);
    let array_start = entries_lba.checked_mul(SECTOR).filter(|s| *s >= 2 * SECTOR);
    let array_start = match array_start {
        Some(s) if s.checked_add(array_len).is_some_and(|e| e <= len) => s,
        _ => return Err(gpt(format!("the partition entry array at LBA {entries_lba} ({array_len} bytes) is not inside the image"))),
    };
    let mut array = vec![0u8; array_len as usize];
    read_exact(image, array_start, &mut array)?;
    let stored = u32_at(&header, 88);
    let computed = crc32fast::hash(&array);
    if stored != computed {
        return Err(gpt(format!("partition entry array CRC32 is {stored:#010x}, computed {computed:#010x}")));
    }
    let mut parts = Vec::new();
    for (slot, e) in array.chunks_exact(entry_size as usize).enumerate() {
        if e[0..16].iter().all(|b| *b == 0) {
            continue;
        }
        let index = slot as u32 + 1;
        let first = u64_at(e, 32);
        let last = u64_at(e, 40);
        if last < first {
            return Err(gpt(format!("partition {index} ends (LBA {last}) before it starts (LBA {first})")));
        }
        let (start, plen) = place(index, first, (last - first).saturating_add(1), len)?;
        parts.push(Partition { index, start, len: plen, kind: PartitionType::Gpt(guid_text(&e[0..16])) });
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_text_is_mixed_endian() {
        let b = [0x48, 0x61, 0x68, 0x21, 0x49, 0x64, 0x6F, 0x6E, 0x74, 0x4E, 0x65, 0x65, 0x64, 0x45, 0x46, 0x49];
        assert_eq!(guid_text(&b), GPT_BIOS_BOOT);
    }

    #[test]
    fn a_filesystem_boot_sector_is_not_a_partition_table() {
        // A FAT boot sector: 55 AA, but its "partition entries" are code bytes.
        let mut img = vec![0u8; 4096];
        img[446..510].iter_mut().enumerate().for_each(|(i, b)| *b = i as u8 | 1);
        img[510] = 0x55;
        img[511] = 0xAA;
        let parts = read(&img, 4096).unwrap();
        assert_eq!(parts, [Partition { index: 0, start: 0, len: 4096, kind: PartitionType::WholeDisk }]);
        // An empty table with a signature is no table either.
        img[446..510].fill(0);
        assert_eq!(read(&img, 4096).unwrap()[0].kind, PartitionType::WholeDisk);
        // A short image is one whole-disk partition; an empty one an error.
        assert_eq!(read(&vec![1u8; 100], 100).unwrap()[0].len, 100);
        assert!(matches!(read(&Vec::new(), 0).unwrap_err().problem, Problem::Empty));
    }

    #[test]
    fn gpt_last_lba_at_the_maximum_does_not_overflow() {
        assert!(matches!(place(1, 0, u64::MAX, 1 << 20).unwrap_err().problem, Problem::PastEnd { .. }));
    }
}
