//! Reading the image: positioned reads over a file or bytes, and windows onto a partition.

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::error::Problem;

/// Positioned, exact reads of a disk image (never writes).
pub trait ReadAt: Send + Sync {
    /// Fill `buf` from `offset`; an error if the image ends before `buf` is full.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;
}

impl ReadAt for std::fs::File {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.read_exact_at(buf, offset)
    }
}

impl ReadAt for Vec<u8> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let start = usize::try_from(offset).ok().filter(|s| *s <= self.len());
        let range = start.and_then(|s| s.checked_add(buf.len()).map(|e| s..e)).filter(|r| r.end <= self.len());
        match range {
            Some(r) => {
                buf.copy_from_slice(&self[r]);
                Ok(())
            }
            None => Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "past the end of the image")),
        }
    }
}

/// Read exactly `buf.len()` bytes at `offset`, as a `Problem` on failure.
pub(crate) fn read_exact(image: &dyn ReadAt, offset: u64, buf: &mut [u8]) -> Result<(), Problem> {
    image.read_at(offset, buf).map_err(|e| Problem::Io { offset, len: buf.len() as u64, reason: e.to_string() })
}

/// A partition's bytes: reads are relative to its start and never leave it.
#[derive(Clone)]
pub(crate) struct Window {
    pub image: Arc<dyn ReadAt>,
    pub start: u64,
    pub len: u64,
}

impl Window {
    /// Read at `offset` inside the window; an error if any byte lies outside it.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        match (end, self.start.checked_add(offset)) {
            (Some(end), Some(abs)) if end <= self.len => self.image.read_at(abs, buf),
            _ => Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "past the end of the partition")),
        }
    }

    /// `len` bytes at `offset`, or `None` if they are not all inside the window.
    pub fn bytes(&self, offset: u64, len: usize) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.read(offset, &mut buf).ok().map(|_| buf)
    }
}

impl ext4_view::Ext4Read for Window {
    fn read(&mut self, start_byte: u64, dst: &mut [u8]) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        Window::read(self, start_byte, dst).map_err(|e| Box::new(e) as _)
    }
}
