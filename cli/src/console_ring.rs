//! The console's memory of recent guest output: a ring holding the last `capacity`
//! bytes. Positions are counted from the first byte the guest ever wrote, so a reader
//! that fell behind learns how much the ring overwrote before it could read it.

/// A bounded ring of the most recent output bytes.
pub struct OutputRing {
    buf: Vec<u8>,
    /// Stream position just past the newest byte (bytes ever pushed).
    end: u64,
}

/// What [`OutputRing::read_from`] found.
#[derive(Debug, PartialEq, Eq)]
pub struct RingRead {
    /// Bytes between the reader's position and the oldest byte still held: lost.
    pub skipped: u64,
    /// The position after the bytes appended; where the next read starts.
    pub next: u64,
}

impl OutputRing {
    /// A ring keeping the last `capacity` bytes (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self { buf: vec![0; capacity.max(1)], end: 0 }
    }

    fn capacity(&self) -> u64 {
        self.buf.len() as u64
    }

    /// Position of the oldest byte held.
    pub fn start(&self) -> u64 {
        self.end.saturating_sub(self.capacity())
    }

    /// Position just past the newest byte.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Appends `data`, overwriting the oldest bytes once full.
    pub fn push(&mut self, data: &[u8]) {
        let cap = self.buf.len();
        // Only the last `cap` bytes of a larger write can be kept.
        let skip = data.len().saturating_sub(cap);
        let kept = &data[skip..];
        self.end += skip as u64;
        let at = (self.end % cap as u64) as usize;
        let first = kept.len().min(cap - at);
        self.buf[at..at + first].copy_from_slice(&kept[..first]);
        self.buf[..kept.len() - first].copy_from_slice(&kept[first..]);
        self.end += kept.len() as u64;
    }

    /// Appends to `out` at most `max` bytes from position `pos` on (or from the oldest
    /// byte still held, when `pos` was overwritten).
    pub fn read_from(&self, pos: u64, max: usize, out: &mut Vec<u8>) -> RingRead {
        let from = pos.clamp(self.start(), self.end);
        let to = self.end.min(from + max as u64);
        let cap = self.buf.len();
        let at = (from % cap as u64) as usize;
        let len = (to - from) as usize;
        let first = len.min(cap - at);
        out.extend_from_slice(&self.buf[at..at + first]);
        out.extend_from_slice(&self.buf[..len - first]);
        RingRead { skipped: from.saturating_sub(pos), next: to }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(ring: &OutputRing, pos: u64) -> (Vec<u8>, RingRead) {
        let mut out = Vec::new();
        let read = ring.read_from(pos, usize::MAX / 2, &mut out);
        (out, read)
    }

    #[test]
    fn holds_everything_until_full() {
        let mut ring = OutputRing::new(8);
        ring.push(b"abc");
        ring.push(b"de");
        assert_eq!((ring.start(), ring.end()), (0, 5));
        assert_eq!(all(&ring, 0), (b"abcde".to_vec(), RingRead { skipped: 0, next: 5 }));
        assert_eq!(all(&ring, 3), (b"de".to_vec(), RingRead { skipped: 0, next: 5 }));
        assert_eq!(all(&ring, 5), (Vec::new(), RingRead { skipped: 0, next: 5 }));
    }

    #[test]
    fn wraps_and_keeps_only_the_newest_bytes() {
        let mut ring = OutputRing::new(8);
        ring.push(b"0123456");
        ring.push(b"789ab"); // wraps
        assert_eq!((ring.start(), ring.end()), (4, 12));
        assert_eq!(all(&ring, 4).0, b"456789ab");
        // A reader at 0 lost the four overwritten bytes and is told so.
        assert_eq!(all(&ring, 0), (b"456789ab".to_vec(), RingRead { skipped: 4, next: 12 }));
        // Reads across the wrap point in pieces.
        let mut out = Vec::new();
        let first = ring.read_from(6, 3, &mut out);
        let second = ring.read_from(first.next, 3, &mut out);
        assert_eq!(out, b"6789ab");
        assert_eq!(second.next, 12);
    }

    #[test]
    fn is_bounded_whatever_is_pushed() {
        let mut ring = OutputRing::new(16);
        let big: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        ring.push(&big);
        assert_eq!(ring.end(), 1000);
        assert_eq!(ring.start(), 984);
        assert_eq!(all(&ring, 0).0, &big[984..]);
        for _ in 0..100 {
            ring.push(&big);
        }
        assert_eq!(ring.buf.len(), 16, "the ring never grows");
        let (bytes, read) = all(&ring, 0);
        assert_eq!(bytes, &big[984..]);
        assert_eq!(read.skipped, 101 * 1000 - 16);
    }
}
