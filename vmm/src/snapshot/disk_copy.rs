//! Copying a disk image: a reflink (`FICLONE`: the copy shares the source's blocks
//! until either is written, instant on btrfs, XFS and the like) where the filesystem
//! can, otherwise a sparse-aware copy (only the source's data extents, found with
//! `SEEK_DATA`/`SEEK_HOLE`, are copied; holes stay holes). Also a file's identity for
//! `--no-disks` snapshots.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use super::files::create_new;
use super::format::FileIdentity;
use super::SnapshotError;

/// `FICLONE` from <linux/fs.h>: `_IOW(0x94, 9, int)`.
pub const FICLONE: u64 = 0x4004_9409;

/// How a disk was copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyMethod {
    Reflink,
    Copy,
}

impl CopyMethod {
    pub fn name(self) -> &'static str {
        match self {
            CopyMethod::Reflink => "reflink",
            CopyMethod::Copy => "copy",
        }
    }
}

/// Size of an image (a regular file or a block device).
pub fn image_size(file: &File, path: &Path) -> Result<u64, SnapshotError> {
    let mut f = file;
    f.seek(SeekFrom::End(0)).map_err(|e| SnapshotError::io("cannot size", path, e))
}

/// The identity of the file at `path`.
pub fn identity(path: &Path) -> Result<FileIdentity, SnapshotError> {
    let m = std::fs::metadata(path).map_err(|e| SnapshotError::io("disk", path, e))?;
    Ok(FileIdentity { dev: m.dev(), ino: m.ino(), mtime_s: m.mtime(), mtime_ns: m.mtime_nsec() })
}

/// Copies `src` to `dst` (which must not exist, created owner-only); `progress`
/// hears the bytes done. Returns how, and the size. The copy is not synced: the caller
/// syncs it before it counts on it surviving a crash (`sync_file`).
pub fn copy(src: &Path, dst: &Path, mut progress: impl FnMut(u64, u64)) -> Result<(CopyMethod, u64), SnapshotError> {
    let from = File::open(src).map_err(|e| SnapshotError::io("cannot open disk", src, e))?;
    let size = image_size(&from, src)?;
    let to = create_new(dst)?;
    // SAFETY: FICLONE takes the source descriptor as its argument; both descriptors
    // are open for the duration of the call and nothing is read from memory.
    let cloned = unsafe { libc::ioctl(to.as_raw_fd(), FICLONE as _, from.as_raw_fd()) } == 0;
    let method = if cloned {
        CopyMethod::Reflink
    } else {
        to.set_len(size).map_err(|e| SnapshotError::io("cannot size the disk copy", dst, e))?;
        copy_extents(&from, src, &to, dst, size, &mut progress)?;
        CopyMethod::Copy
    };
    progress(size, size);
    Ok((method, size))
}

/// Syncs the file at `path` (written earlier, e.g. by `copy`) to its storage.
pub fn sync_file(path: &Path) -> Result<(), SnapshotError> {
    File::open(path).and_then(|f| f.sync_all()).map_err(|e| SnapshotError::io("cannot sync", path, e))
}

/// The next data extent `[start, end)` at or after `offset`, or `None` past the last
/// one. A filesystem without `SEEK_DATA` reports everything as data.
fn next_extent(file: &File, offset: u64, size: u64) -> Option<(u64, u64)> {
    let fd = file.as_raw_fd();
    // SAFETY: lseek on an open descriptor with a valid whence only moves its offset.
    let start = unsafe { libc::lseek(fd, offset as libc::off_t, libc::SEEK_DATA) };
    if start < 0 {
        let e = std::io::Error::last_os_error().raw_os_error();
        return if e == Some(libc::ENXIO) || offset >= size { None } else { Some((offset, size)) };
    }
    // SAFETY: as above.
    let end = unsafe { libc::lseek(fd, start, libc::SEEK_HOLE) };
    let end = if end < 0 { size } else { (end as u64).min(size) };
    ((start as u64) < end).then_some((start as u64, end))
}

fn copy_extents(from: &File, src: &Path, to: &File, dst: &Path, size: u64, progress: &mut impl FnMut(u64, u64)) -> Result<(), SnapshotError> {
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    while let Some((start, end)) = next_extent(from, offset, size) {
        let mut at = start;
        while at < end {
            let n = (end - at).min(buf.len() as u64) as usize;
            from.read_exact_at(&mut buf[..n], at).map_err(|e| SnapshotError::io("cannot read disk", src, e))?;
            // Zero blocks inside an extent stay holes in the copy too.
            if buf[..n].iter().any(|&b| b != 0) {
                to.write_all_at(&buf[..n], at).map_err(|e| SnapshotError::io("cannot write the disk copy", dst, e))?;
            }
            at += n as u64;
            progress(at, size);
        }
        offset = end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sparse_image_copies_with_its_contents_and_holes() {
        let dir = std::env::temp_dir().join(format!("tern-disk-copy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("src.img");
        let f = File::create(&src).unwrap();
        f.set_len(16 << 20).unwrap();
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(b"tail", (16 << 20) - 4).unwrap();
        let dst = dir.join("dst.img");
        let (_, size) = copy(&src, &dst, |_, _| {}).unwrap();
        assert_eq!(size, 16 << 20);
        assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
        assert!(std::fs::metadata(&dst).unwrap().blocks() * 512 < 8 << 20, "holes stay holes");
        // The copy never replaces a file.
        assert!(copy(&src, &dst, |_, _| {}).unwrap_err().to_string().contains("cannot create"));
        assert_eq!(identity(&src).unwrap(), identity(&src).unwrap());
        assert_ne!(identity(&src).unwrap(), identity(&dst).unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
