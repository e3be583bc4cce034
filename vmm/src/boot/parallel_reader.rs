//! A kernel-image reader that fills large guest-memory reads with several threads.
//!
//! Loading a kernel is mostly the host faulting in fresh guest RAM and copying the
//! image into it: for a 50 MB vmlinux that is a noticeable part of tern's start-up,
//! and it runs on one CPU while the others wait for the guest. linux-loader reads
//! each ELF segment with one `read_volatile` call into guest memory; this reader
//! splits such a read into chunks read at their file offsets (`pread`) by scoped
//! threads, so the faults and copies run on every CPU. Small reads (headers, notes)
//! stay single `pread`s. The reader behaves like a file otherwise: reads advance a
//! position that `Seek` moves.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use vm_memory::bitmap::BitmapSlice;
use vm_memory::{ReadVolatile, VolatileMemoryError, VolatileSlice};

/// Reads smaller than this stay on the calling thread.
const PARALLEL_MIN: usize = 4 << 20;
/// At most this many threads per read.
const MAX_THREADS: usize = 8;

/// See the module docs.
pub struct ParallelFileReader {
    file: File,
    pos: u64,
    threads: usize,
}

impl ParallelFileReader {
    /// Wraps `file`, reading from its start with up to one thread per available CPU.
    pub fn new(file: File) -> Self {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_THREADS);
        Self::with_threads(file, threads)
    }

    /// Wraps `file` with at most `threads` threads per large read.
    pub fn with_threads(file: File, threads: usize) -> Self {
        Self { file, pos: 0, threads: threads.max(1) }
    }
}

impl Read for ParallelFileReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for ParallelFileReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let base = match to {
            SeekFrom::Start(offset) => Some(offset),
            SeekFrom::Current(delta) => self.pos.checked_add_signed(delta),
            SeekFrom::End(delta) => self.file.metadata()?.len().checked_add_signed(delta),
        };
        self.pos = base.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start of the file"))?;
        Ok(self.pos)
    }
}

/// A destination address that scoped threads may write through.
#[derive(Clone, Copy)]
struct Dest(*mut u8);
// SAFETY: each thread writes only its own disjoint chunk of a buffer that outlives
// the scope the threads run in (see `read_volatile`).
unsafe impl Send for Dest {}

/// Reads `len` bytes at `offset` into `dst` until done, end of file or an error;
/// returns how many bytes arrived.
fn pread_fully(fd: i32, dst: Dest, len: usize, offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < len {
        // SAFETY: `dst` is valid for writes of `len` bytes (the caller's chunk), and
        // `done < len` keeps the write inside it.
        let n = unsafe { libc::pread(fd, dst.0.add(done).cast(), len - done, (offset + done as u64) as libc::off_t) };
        match n {
            0 => break,
            n if n > 0 => done += n as usize,
            _ => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }
    Ok(done)
}

impl ReadVolatile for ParallelFileReader {
    fn read_volatile<B: BitmapSlice>(&mut self, buf: &mut VolatileSlice<B>) -> Result<usize, VolatileMemoryError> {
        let len = buf.len();
        let guard = buf.ptr_guard_mut();
        let dst = Dest(guard.as_ptr());
        let fd = self.file.as_raw_fd();
        let threads = if len >= PARALLEL_MIN { self.threads } else { 1 };
        let chunk = len.div_ceil(threads).max(1);
        let results: Vec<io::Result<usize>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..len)
                .step_by(chunk)
                .map(|start| {
                    let this_len = chunk.min(len - start);
                    // SAFETY: `start < len`, so the chunk start stays inside the slice.
                    let at = Dest(unsafe { dst.0.add(start) });
                    let offset = self.pos + start as u64;
                    scope.spawn(move || pread_fully(fd, at, this_len, offset))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(io::Error::other("kernel reader thread panicked"))))
                .collect()
        });
        // The bytes read form a prefix of the slice up to the first short chunk.
        let mut total = 0;
        for (i, result) in results.into_iter().enumerate() {
            let expected = chunk.min(len - i * chunk);
            match result {
                Ok(n) => {
                    total += n;
                    if n < expected {
                        break;
                    }
                }
                Err(e) => {
                    buf.bitmap().mark_dirty(0, len);
                    return Err(VolatileMemoryError::IOError(e));
                }
            }
        }
        buf.bitmap().mark_dirty(0, total);
        self.pos += total as u64;
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
    use vmm_sys_util::tempfile::TempFile;

    /// A temporary file holding `len` patterned bytes, and those bytes.
    fn image(len: usize) -> (TempFile, Vec<u8>) {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
        let f = TempFile::new().unwrap();
        f.as_file().write_all(&data).unwrap();
        (f, data)
    }

    fn reopen(f: &TempFile) -> File {
        File::open(f.as_path()).unwrap()
    }

    #[test]
    fn large_reads_land_exactly_as_a_plain_read_would() {
        let len = PARALLEL_MIN * 2 + 12345;
        let (f, data) = image(len + 100);
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), len + 4096)]).unwrap();
        let mut reader = ParallelFileReader::with_threads(reopen(&f), 3);
        reader.seek(SeekFrom::Start(100)).unwrap();
        mem.read_exact_volatile_from(GuestAddress(4096), &mut reader, len).unwrap();
        let mut back = vec![0u8; len];
        mem.read_slice(&mut back, GuestAddress(4096)).unwrap();
        assert!(back == data[100..100 + len], "guest memory differs from the file");
        assert_eq!(reader.stream_position().unwrap(), 100 + len as u64);
    }

    #[test]
    fn a_read_past_the_end_of_the_file_fails_cleanly() {
        let (f, _) = image(PARALLEL_MIN + 10);
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), PARALLEL_MIN * 2)]).unwrap();
        let mut reader = ParallelFileReader::with_threads(reopen(&f), 4);
        let err = mem.read_exact_volatile_from(GuestAddress(0), &mut reader, PARALLEL_MIN * 2).unwrap_err();
        assert!(err.to_string().contains(&format!("only used {} bytes", PARALLEL_MIN + 10)), "{err}");
    }

    #[test]
    fn small_reads_and_seeks_behave_like_a_file() {
        let (f, data) = image(1000);
        let mut reader = ParallelFileReader::new(reopen(&f));
        let mut head = [0u8; 10];
        reader.read_exact(&mut head).unwrap();
        assert_eq!(head, data[..10]);
        reader.seek(SeekFrom::End(-5)).unwrap();
        let mut tail = Vec::new();
        reader.read_to_end(&mut tail).unwrap();
        assert_eq!(tail, data[995..]);
        assert!(reader.seek(SeekFrom::Current(-2000)).is_err());
    }
}
