//! The raw image behind a disk: opening and locking it, its size, and the
//! whole-range operations (flush, discard, write zeroes).

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use super::error::BlockError;
use super::SECTOR_SIZE;

/// Zero buffer size for the write-zeroes fallback.
const ZERO_CHUNK: usize = 1 << 20;

/// An open, locked raw image.
#[derive(Debug)]
pub(crate) struct DiskImage {
    file: File,
    path: PathBuf,
    size: u64,
    read_only: bool,
}

impl DiskImage {
    /// Opens `path` for reading (and writing unless `read_only`), checks that it is a
    /// whole number of sectors, and takes an `flock`: exclusive for a writable disk,
    /// shared for a read-only one, never waiting.
    pub(crate) fn open(path: &Path, read_only: bool) -> Result<Self, BlockError> {
        let image = Self::open_unlocked(path, read_only)?;
        image.lock()?;
        Ok(image)
    }

    /// Like [`DiskImage::open`] without taking the lock: a migration destination opens
    /// its disks this way and locks them at the hand-over.
    pub(crate) fn open_unlocked(path: &Path, read_only: bool) -> Result<Self, BlockError> {
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|e| open_error(path, e, !read_only))?;

        let metadata = file
            .metadata()
            .map_err(|source| BlockError::Open { path: path.to_path_buf(), source })?;
        if metadata.is_dir() {
            return Err(BlockError::IsDirectory { path: path.to_path_buf() });
        }

        // Seeking to the end works for regular files and block devices alike.
        let size = (&file)
            .seek(SeekFrom::End(0))
            .map_err(|source| BlockError::Size { path: path.to_path_buf(), source })?;
        if size % SECTOR_SIZE != 0 {
            return Err(BlockError::UnalignedSize { path: path.to_path_buf(), size });
        }

        Ok(Self { file, path: path.to_path_buf(), size, read_only })
    }

    /// Takes the image lock (exclusive when writable, shared when read-only).
    pub(crate) fn lock(&self) -> Result<(), BlockError> {
        lock(&self.file, &self.path, self.read_only)
    }

    /// Drops the image lock (the hand-over to a migration destination).
    pub(crate) fn unlock(&self) -> io::Result<()> {
        // SAFETY: flock only takes our own open descriptor and a flag word.
        if unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Image path, for messages.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Size in 512-byte sectors.
    pub(crate) fn sectors(&self) -> u64 {
        self.size / SECTOR_SIZE
    }

    /// Whether the disk was attached read-only.
    pub(crate) fn read_only(&self) -> bool {
        self.read_only
    }

    /// The open image file.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Writes everything the guest wrote so far to stable storage (`fdatasync`).
    pub(crate) fn flush(&self) -> io::Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.file.sync_data()
    }

    /// Drops the backing of `[offset, offset + len)`. Discard is a hint: when the
    /// file system cannot punch holes, nothing happens and the data stays.
    pub(crate) fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        match self.fallocate(libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, offset, len) {
            Err(e) if is_unsupported(&e) => Ok(()),
            other => other,
        }
    }

    /// Makes `[offset, offset + len)` read as zeroes: by punching a hole when the
    /// driver allows unmapping, else by zeroing the range in place; when the file
    /// system supports neither, by writing zeroes.
    pub(crate) fn write_zeroes(&self, offset: u64, len: u64, unmap: bool) -> io::Result<()> {
        let mode = if unmap {
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE
        } else {
            libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE
        };
        match self.fallocate(mode, offset, len) {
            Err(e) if is_unsupported(&e) => self.write_zero_bytes(offset, len),
            other => other,
        }
    }

    fn fallocate(&self, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let offset = libc::off_t::try_from(offset).map_err(|_| invalid_range())?;
        let len = libc::off_t::try_from(len).map_err(|_| invalid_range())?;
        loop {
            // SAFETY: fallocate only operates on the file behind our open descriptor;
            // it takes no pointers.
            let ret = unsafe { libc::fallocate(self.file.as_raw_fd(), mode, offset, len) };
            if ret == 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }

    pub(super) fn write_zero_bytes(&self, mut offset: u64, len: u64) -> io::Result<()> {
        let zeroes = vec![0u8; ZERO_CHUNK.min(usize::try_from(len).unwrap_or(ZERO_CHUNK))];
        let end = offset.checked_add(len).ok_or_else(invalid_range)?;
        while offset < end {
            let chunk = usize::try_from(end - offset).unwrap_or(usize::MAX).min(zeroes.len());
            self.file.write_all_at(&zeroes[..chunk], offset)?;
            offset += chunk as u64;
        }
        Ok(())
    }
}

/// Maps an `open` failure to the error the user should see. Opening for writing
/// fails with EACCES, EPERM or EROFS when the image (or its file system) is
/// read-only: say so and suggest `readonly=on`.
pub(crate) fn open_error(path: &Path, source: io::Error, writable: bool) -> BlockError {
    let path = path.to_path_buf();
    match source.raw_os_error() {
        Some(libc::ENOENT) => BlockError::NotFound { path },
        Some(libc::EISDIR) => BlockError::IsDirectory { path },
        Some(libc::EACCES | libc::EPERM | libc::EROFS | libc::ETXTBSY) if writable => {
            BlockError::ReadOnlyImage { path, source }
        }
        _ => BlockError::Open { path, source },
    }
}

fn lock(file: &File, path: &Path, read_only: bool) -> Result<(), BlockError> {
    let mode = if read_only { libc::LOCK_SH } else { libc::LOCK_EX };
    loop {
        // SAFETY: flock only takes our own open descriptor and a flag word. The lock
        // lives as long as the open file description, i.e. as long as `file`.
        let ret = unsafe { libc::flock(file.as_raw_fd(), mode | libc::LOCK_NB) };
        if ret == 0 {
            return Ok(());
        }
        let source = io::Error::last_os_error();
        match source.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => {
                return Err(BlockError::Locked { path: path.to_path_buf() });
            }
            _ => return Err(BlockError::Lock { path: path.to_path_buf(), source }),
        }
    }
}

fn is_unsupported(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOSYS))
}

fn invalid_range() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "range does not fit in a file offset")
}
