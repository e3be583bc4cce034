//! Attaching images: every way opening can fail, with the disk path in the message.

use std::fs;
use std::io;
use std::path::Path;

use super::harness::TempImage;
use crate::virtio::block::image::open_error;
use crate::virtio::block::{Block, BlockConfig, BlockError, SECTOR_SIZE};

fn open(path: &Path, read_only: bool) -> Result<Block, BlockError> {
    let mut config = BlockConfig::new(path);
    config.read_only = read_only;
    Block::new(config)
}

fn assert_names_path(err: &BlockError, path: &Path) {
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "'{msg}' names {}", path.display());
}

#[test]
fn block_open_missing_image() {
    let image = TempImage::empty("missing");
    for read_only in [false, true] {
        let err = open(image.path(), read_only).expect_err("must fail");
        assert!(matches!(err, BlockError::NotFound { .. }), "{err:?}");
        assert_names_path(&err, image.path());
    }
}

#[test]
fn block_open_directory() {
    let image = TempImage::empty("dir");
    fs::create_dir(image.path()).expect("mkdir");
    for read_only in [false, true] {
        let err = open(image.path(), read_only).expect_err("must fail");
        assert!(matches!(err, BlockError::IsDirectory { .. }), "{err:?}");
        assert_names_path(&err, image.path());
    }
}

#[test]
fn block_open_size_not_whole_sectors() {
    let image = TempImage::patterned("unaligned", 3 * SECTOR_SIZE + 1);
    let err = open(image.path(), false).expect_err("must fail");
    assert!(matches!(err, BlockError::UnalignedSize { size, .. } if size == 1537), "{err:?}");
    assert_names_path(&err, image.path());
    assert!(err.to_string().contains("not a multiple of 512"));
}

#[test]
fn block_open_reports_capacity() {
    let image = TempImage::patterned("capacity", 8 * SECTOR_SIZE);
    let block = open(image.path(), false).expect("open");
    assert_eq!(block.capacity_sectors(), 8);
    assert!(!block.read_only());
    assert_eq!(block.path(), image.path());
    let empty = TempImage::patterned("zero", 0);
    assert_eq!(open(empty.path(), false).expect("open").capacity_sectors(), 0);
}

#[test]
fn block_writable_image_is_locked_exclusively() {
    let image = TempImage::patterned("locked", 4 * SECTOR_SIZE);
    let first = open(image.path(), false).expect("first open");
    for read_only in [false, true] {
        let err = open(image.path(), read_only).expect_err("second open must fail");
        assert!(matches!(err, BlockError::Locked { .. }), "{err:?}");
        assert_names_path(&err, image.path());
        assert!(err.to_string().contains("is locked by another process"));
    }
    drop(first);
    open(image.path(), false).expect("lock released with the disk");
}

#[test]
fn block_read_only_images_share_the_lock() {
    let image = TempImage::patterned("shared", 4 * SECTOR_SIZE);
    let a = open(image.path(), true).expect("first reader");
    let b = open(image.path(), true).expect("second reader");
    assert!(a.read_only() && b.read_only());
    let err = open(image.path(), false).expect_err("writer must fail");
    assert!(matches!(err, BlockError::Locked { .. }), "{err:?}");
}

#[test]
fn block_open_error_mapping() {
    let path = Path::new("/images/disk.img");
    let e = |errno| io::Error::from_raw_os_error(errno);
    for errno in [libc::EACCES, libc::EROFS, libc::EPERM] {
        let err = open_error(path, e(errno), true);
        assert!(matches!(err, BlockError::ReadOnlyImage { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("/images/disk.img") && msg.contains("readonly=on"), "{msg}");
        // Opening read-only, the same errno is just a failed open.
        assert!(matches!(open_error(path, e(errno), false), BlockError::Open { .. }));
    }
    assert!(matches!(open_error(path, e(libc::ENOENT), true), BlockError::NotFound { .. }));
    assert!(matches!(open_error(path, e(libc::EISDIR), true), BlockError::IsDirectory { .. }));
    let err = open_error(path, e(libc::EIO), true);
    assert!(matches!(err, BlockError::Open { .. }));
    assert!(err.to_string().contains("/images/disk.img"));
}

#[test]
fn block_serial_longer_than_20_bytes_is_refused() {
    let image = TempImage::patterned("longserial", 4 * SECTOR_SIZE);
    let mut config = BlockConfig::new(image.path());
    config.serial = Some("x".repeat(21));
    let err = Block::new(config).expect_err("must fail");
    assert!(matches!(err, BlockError::SerialTooLong { .. }), "{err:?}");
    assert_names_path(&err, image.path());
    let mut config = BlockConfig::new(image.path());
    config.serial = Some("y".repeat(20));
    Block::new(config).expect("20 bytes fit");
}
