//! Batched console output. vm-superio writes (and flushes) one byte per guest `out`;
//! passing each byte straight to the host file costs a system call per character,
//! which dominates a chatty boot. This writer collects bytes and writes them out at
//! each newline, when its buffer fills, or when the owner calls [`LineBuffered::flush_now`]
//! (the machine does so periodically, so a prompt without a newline still shows).

use std::io::{self, Write};
use std::time::{Duration, Instant};

/// Bytes held before a forced write.
const CAPACITY: usize = 4096;

/// A line-buffered writer whose `flush` is a no-op; see the module docs.
pub struct LineBuffered<W: Write> {
    inner: W,
    buf: Vec<u8>,
    last_write: Instant,
}

impl<W: Write> LineBuffered<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self { inner, buf: Vec::with_capacity(CAPACITY), last_write: Instant::now() }
    }

    /// Writes a partial line out only once the guest has been quiet for `quiet`: a
    /// prompt shows promptly, a line being written is not split.
    pub fn flush_if_idle(&mut self, quiet: Duration) -> io::Result<()> {
        if self.last_write.elapsed() >= quiet {
            self.flush_now()?;
        }
        Ok(())
    }

    /// Writes everything buffered to the underlying writer.
    pub fn flush_now(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let result = self.inner.write_all(&self.buf).and_then(|_| self.inner.flush());
            self.buf.clear();
            result?;
        }
        Ok(())
    }
}

impl<W: Write> Write for LineBuffered<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.last_write = Instant::now();
        self.buf.extend_from_slice(data);
        if data.contains(&b'\n') || self.buf.len() >= CAPACITY {
            self.flush_now()?;
        }
        Ok(data.len())
    }

    /// Deliberately does nothing: see the module docs.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for LineBuffered<W> {
    fn drop(&mut self) {
        let _ = self.flush_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Log(Arc<Mutex<Vec<Vec<u8>>>>);
    impl Write for Log {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().push(b.to_vec());
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn idle_flush_waits_for_quiet() {
        let log = Log::default();
        let mut w = LineBuffered::new(log.clone());
        w.write_all(b"TERN-").unwrap();
        w.flush_if_idle(Duration::from_secs(3600)).unwrap();
        assert!(log.0.lock().unwrap().is_empty(), "a line being written is not split");
        w.flush_if_idle(Duration::ZERO).unwrap();
        assert_eq!(log.0.lock().unwrap()[0], b"TERN-".to_vec());
    }

    #[test]
    fn writes_whole_lines_and_flushes_on_demand() {
        let log = Log::default();
        let mut w = LineBuffered::new(log.clone());
        for b in b"hello\nprompt# " {
            w.write_all(&[*b]).unwrap();
            w.flush().unwrap();
        }
        assert_eq!(*log.0.lock().unwrap(), vec![b"hello\n".to_vec()]);
        w.flush_now().unwrap();
        assert_eq!(log.0.lock().unwrap()[1], b"prompt# ".to_vec());
        w.write_all(&vec![b'x'; CAPACITY]).unwrap();
        assert_eq!(log.0.lock().unwrap().len(), 3, "a full buffer is written");
        w.write_all(b"tail").unwrap();
        drop(w);
        assert_eq!(log.0.lock().unwrap()[3], b"tail".to_vec(), "dropping flushes");
    }
}
