//! What filesystem a partition holds (by magic), and opening ext2/3/4 read-only.

use ext4_view::Ext4;

use crate::error::Problem;
use crate::image::Window;

/// Most block groups accepted before ext4-view allocates their descriptors.
const MAX_BLOCK_GROUPS: u64 = 1 << 20;

/// A filesystem as its magic numbers tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    /// ext2, ext3 or ext4: readable.
    Ext,
    Xfs,
    Btrfs,
    Vfat,
    Swap,
    Luks,
    Lvm2,
    Iso9660,
    Unknown,
}

impl FsKind {
    /// The name errors and `-v` print.
    pub fn name(self) -> &'static str {
        match self {
            FsKind::Ext => "ext2/3/4",
            FsKind::Xfs => "xfs",
            FsKind::Btrfs => "btrfs",
            FsKind::Vfat => "vfat",
            FsKind::Swap => "swap",
            FsKind::Luks => "LUKS",
            FsKind::Lvm2 => "an LVM2 physical volume",
            FsKind::Iso9660 => "iso9660",
            FsKind::Unknown => "no filesystem tern knows",
        }
    }
}

fn magic_at(w: &Window, offset: u64, magic: &[u8]) -> bool {
    w.bytes(offset, magic.len()).is_some_and(|b| b == magic)
}

/// Identify the filesystem on a partition by its magic numbers.
pub(crate) fn identify(w: &Window) -> FsKind {
    if magic_at(w, 1024 + 56, &[0x53, 0xEF]) {
        FsKind::Ext
    } else if magic_at(w, 0, b"XFSB") {
        FsKind::Xfs
    } else if magic_at(w, 0x10040, b"_BHRfS_M") {
        FsKind::Btrfs
    } else if magic_at(w, 0, b"LUKS\xba\xbe") || magic_at(w, 0, b"SKUL\xba\xbe") {
        FsKind::Luks
    } else if (0..4).any(|s| magic_at(w, s * 512, b"LABELONE") && magic_at(w, s * 512 + 24, b"LVM2 001")) {
        FsKind::Lvm2
    } else if magic_at(w, 4086, b"SWAPSPACE2") || magic_at(w, 4086, b"SWAP-SPACE") {
        FsKind::Swap
    } else if magic_at(w, 0x36, b"FAT") || magic_at(w, 0x52, b"FAT32") {
        FsKind::Vfat
    } else if magic_at(w, 0x8001, b"CD001") {
        FsKind::Iso9660
    } else {
        FsKind::Unknown
    }
}

fn le32(b: &[u8], o: usize) -> u64 {
    u64::from(u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]))
}

/// Check the superblock's geometry against the partition before ext4-view sizes its tables by it.
fn check_superblock(w: &Window) -> Result<(), Problem> {
    let sb = w.bytes(1024, 1024).ok_or_else(|| Problem::Ext4("the superblock lies past the end of the partition".into()))?;
    let log_block = le32(&sb, 0x18);
    if log_block > 6 {
        return Err(Problem::Ext4(format!("block size 1024 << {log_block} is too large")));
    }
    let block_size = 1024u64 << log_block;
    let incompat = le32(&sb, 0x60);
    let mut blocks = le32(&sb, 0x04);
    if incompat & 0x80 != 0 {
        blocks |= le32(&sb, 0x150) << 32;
    }
    let fs_len = blocks.checked_mul(block_size);
    if fs_len.is_none_or(|l| l > w.len) {
        return Err(Problem::Ext4(format!("{blocks} blocks of {block_size} bytes do not fit in the partition ({} bytes)", w.len)));
    }
    let per_group = le32(&sb, 0x20);
    if per_group == 0 || blocks / per_group > MAX_BLOCK_GROUPS {
        return Err(Problem::Ext4(format!("{blocks} blocks in groups of {per_group} is more than {MAX_BLOCK_GROUPS} groups")));
    }
    Ok(())
}

/// Open the ext2/3/4 filesystem on a partition, read-only.
pub(crate) fn open_ext(w: &Window) -> Result<Ext4, Problem> {
    check_superblock(w)?;
    Ext4::load(Box::new(w.clone())).map_err(|e| Problem::Ext4(e.to_string()))
}
