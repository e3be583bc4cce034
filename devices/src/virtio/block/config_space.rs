//! The virtio-blk device configuration space (virtio 1.x section 5.2.4), laid out
//! byte by byte in little endian. The driver only reads it: every field is fixed
//! for the life of the device.

use super::{
    DISCARD_SECTOR_ALIGNMENT, MAX_DISCARD_SECTORS, MAX_DISCARD_SEG, MAX_WRITE_ZEROES_SECTORS,
    MAX_WRITE_ZEROES_SEG, SECTOR_SIZE, SEG_MAX,
};

/// Field offsets of `struct virtio_blk_config`.
pub(crate) mod offset {
    pub const CAPACITY: usize = 0;
    pub const SIZE_MAX: usize = 8;
    pub const SEG_MAX: usize = 12;
    pub const GEOMETRY_CYLINDERS: usize = 16;
    pub const GEOMETRY_HEADS: usize = 18;
    pub const GEOMETRY_SECTORS: usize = 19;
    pub const BLK_SIZE: usize = 20;
    pub const PHYSICAL_BLOCK_EXP: usize = 24;
    pub const ALIGNMENT_OFFSET: usize = 25;
    pub const MIN_IO_SIZE: usize = 26;
    pub const OPT_IO_SIZE: usize = 28;
    pub const WRITEBACK: usize = 32;
    pub const NUM_QUEUES: usize = 34;
    pub const MAX_DISCARD_SECTORS: usize = 36;
    pub const MAX_DISCARD_SEG: usize = 40;
    pub const DISCARD_SECTOR_ALIGNMENT: usize = 44;
    pub const MAX_WRITE_ZEROES_SECTORS: usize = 48;
    pub const MAX_WRITE_ZEROES_SEG: usize = 52;
    pub const WRITE_ZEROES_MAY_UNMAP: usize = 56;
}

/// Bytes of configuration space we expose: up to and including
/// `write_zeroes_may_unmap` and its padding (secure erase and zoned fields follow,
/// which we do not offer).
pub(crate) const CONFIG_SPACE_SIZE: usize = 60;

/// The configuration space as the driver reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ConfigSpace {
    bytes: [u8; CONFIG_SPACE_SIZE],
}

impl ConfigSpace {
    /// Configuration of a disk of `capacity_sectors` 512-byte sectors.
    pub(crate) fn new(capacity_sectors: u64) -> Self {
        let mut space = Self { bytes: [0; CONFIG_SPACE_SIZE] };
        space.put(offset::CAPACITY, &capacity_sectors.to_le_bytes());
        // size_max: VIRTIO_BLK_F_SIZE_MAX is not offered, so segments may be any size.
        space.put(offset::SIZE_MAX, &0u32.to_le_bytes());
        space.put(offset::SEG_MAX, &SEG_MAX.to_le_bytes());
        // Geometry (VIRTIO_BLK_F_GEOMETRY) is not offered: all zero.
        space.put(offset::GEOMETRY_CYLINDERS, &0u16.to_le_bytes());
        space.put(offset::GEOMETRY_HEADS, &[0]);
        space.put(offset::GEOMETRY_SECTORS, &[0]);
        // SECTOR_SIZE is 512, which fits in u32.
        space.put(offset::BLK_SIZE, &(SECTOR_SIZE as u32).to_le_bytes());
        // Topology (VIRTIO_BLK_F_TOPOLOGY) is not offered; values describe a plain
        // 512-byte-sector disk anyway.
        space.put(offset::PHYSICAL_BLOCK_EXP, &[0]);
        space.put(offset::ALIGNMENT_OFFSET, &[0]);
        space.put(offset::MIN_IO_SIZE, &1u16.to_le_bytes());
        space.put(offset::OPT_IO_SIZE, &0u32.to_le_bytes());
        // Writeback cache: the guest must FLUSH for durability (VIRTIO_BLK_F_FLUSH).
        space.put(offset::WRITEBACK, &[1]);
        space.put(offset::NUM_QUEUES, &1u16.to_le_bytes());
        space.put(offset::MAX_DISCARD_SECTORS, &MAX_DISCARD_SECTORS.to_le_bytes());
        space.put(offset::MAX_DISCARD_SEG, &MAX_DISCARD_SEG.to_le_bytes());
        space.put(offset::DISCARD_SECTOR_ALIGNMENT, &DISCARD_SECTOR_ALIGNMENT.to_le_bytes());
        space.put(offset::MAX_WRITE_ZEROES_SECTORS, &MAX_WRITE_ZEROES_SECTORS.to_le_bytes());
        space.put(offset::MAX_WRITE_ZEROES_SEG, &MAX_WRITE_ZEROES_SEG.to_le_bytes());
        space.put(offset::WRITE_ZEROES_MAY_UNMAP, &[1]);
        space
    }

    /// The raw bytes, for reads by the driver.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn put(&mut self, at: usize, value: &[u8]) {
        self.bytes[at..at + value.len()].copy_from_slice(value);
    }
}
