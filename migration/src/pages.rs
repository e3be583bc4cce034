//! Page batches: guest pages on the wire. A zero page travels as its address with a
//! marker bit, a full page as its address followed (in the data area) by 4 KiB.
//!
//! Layout: `[version u32][round u32][count u32][count x addr u64][data: full pages]`,
//! little endian; `addr` is page aligned, bit 0 set = zero page.

use crate::{PAGE_SIZE, PROTOCOL_VERSION};

const ZERO_FLAG: u64 = 1;
const HEADER: usize = 12;
/// Largest number of pages in one batch.
pub const MAX_PAGES_PER_BATCH: usize = 1024;

/// Errors decoding a batch.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PageError {
    #[error("page batch shorter than its header")]
    Truncated,
    #[error("page batch version {0} is not {PROTOCOL_VERSION}")]
    Version(u32),
    #[error("page batch claims {0} pages (limit {MAX_PAGES_PER_BATCH})")]
    TooMany(u32),
    #[error("page address {0:#x} is not page aligned or has unknown flags")]
    BadAddress(u64),
    #[error("page batch data is {got} bytes, expected {expected}")]
    DataLength { got: usize, expected: usize },
}

/// Is this page all zeroes? (OR-folds 64-byte blocks: the compiler vectorises it.)
pub fn is_zero_page(page: &[u8]) -> bool {
    let mut blocks = page.chunks_exact(64);
    for block in &mut blocks {
        let mut acc = 0u64;
        for word in block.chunks_exact(8) {
            let mut b = [0u8; 8];
            b.copy_from_slice(word);
            acc |= u64::from_ne_bytes(b);
        }
        if acc != 0 {
            return false;
        }
    }
    blocks.remainder().iter().all(|b| *b == 0)
}

/// A batch of pages for one round.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageBatch {
    pub round: u32,
    addrs: Vec<u64>,
    data: Vec<u8>,
}

impl PageBatch {
    /// An empty batch for `round`.
    pub fn new(round: u32) -> Self {
        Self { round, addrs: Vec::new(), data: Vec::new() }
    }

    /// Pages in the batch.
    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }

    /// Whether the batch reached [`MAX_PAGES_PER_BATCH`].
    pub fn is_full(&self) -> bool {
        self.addrs.len() >= MAX_PAGES_PER_BATCH
    }

    /// Empties the batch for reuse (keeps its allocations).
    pub fn clear(&mut self, round: u32) {
        self.round = round;
        self.addrs.clear();
        self.data.clear();
    }

    /// Adds the page at `gpa`, filled by `fill` (which reads guest memory into the
    /// 4 KiB buffer it is given). Zero pages are detected and sent as markers. Returns
    /// whether the page was a zero page.
    pub fn push_with<E>(&mut self, gpa: u64, fill: impl FnOnce(&mut [u8]) -> Result<(), E>) -> Result<bool, E> {
        let start = self.data.len();
        self.data.resize(start + PAGE_SIZE, 0);
        if let Err(e) = fill(&mut self.data[start..]) {
            self.data.truncate(start);
            return Err(e);
        }
        let zero = is_zero_page(&self.data[start..]);
        if zero {
            self.data.truncate(start);
            self.addrs.push(gpa | ZERO_FLAG);
        } else {
            self.addrs.push(gpa);
        }
        Ok(zero)
    }

    /// Every page: address and contents (`None` for a zero page).
    pub fn iter(&self) -> impl Iterator<Item = (u64, Option<&[u8]>)> {
        let mut full = self.data.chunks_exact(PAGE_SIZE);
        self.addrs.iter().map(move |a| {
            if a & ZERO_FLAG != 0 {
                (a & !ZERO_FLAG, None)
            } else {
                (*a, full.next())
            }
        })
    }

    /// Number of zero pages in the batch.
    pub fn zero_pages(&self) -> usize {
        self.addrs.iter().filter(|a| *a & ZERO_FLAG != 0).count()
    }

    /// Wire encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.encode_head();
        out.extend_from_slice(&self.data);
        out
    }

    /// The encoding up to (not including) the page data: `encode_head() + data` is the
    /// whole payload, so the page data can be written without another copy.
    pub fn encode_head(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.addrs.len() * 8 + self.data.len());
        out.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        out.extend_from_slice(&self.round.to_le_bytes());
        out.extend_from_slice(&(self.addrs.len() as u32).to_le_bytes());
        for a in &self.addrs {
            out.extend_from_slice(&a.to_le_bytes());
        }
        out
    }

    /// The full pages' contents, in order.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Decodes and validates a batch.
    pub fn decode(bytes: &[u8]) -> Result<Self, PageError> {
        let view = PageBatchView::parse(bytes)?;
        Ok(Self { round: view.round, addrs: view.addrs, data: view.data.to_vec() })
    }
}

/// A decoded batch borrowing its page data from the frame buffer (no copy): the
/// receiver writes pages straight from the network buffer into guest memory.
#[derive(Debug)]
pub struct PageBatchView<'a> {
    pub round: u32,
    addrs: Vec<u64>,
    data: &'a [u8],
}

impl<'a> PageBatchView<'a> {
    /// Every page: address and contents (`None` for a zero page).
    pub fn iter(&self) -> impl Iterator<Item = (u64, Option<&'a [u8]>)> + '_ {
        let mut full = self.data.chunks_exact(PAGE_SIZE);
        self.addrs.iter().map(move |a| if a & ZERO_FLAG != 0 { (a & !ZERO_FLAG, None) } else { (*a, full.next()) })
    }

    /// Validates a batch's encoding.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, PageError> {
        let word = |at: usize| -> Result<u32, PageError> {
            let b = bytes.get(at..at + 4).ok_or(PageError::Truncated)?;
            Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let version = word(0)?;
        if version != PROTOCOL_VERSION {
            return Err(PageError::Version(version));
        }
        let round = word(4)?;
        let count = word(8)?;
        if count as usize > MAX_PAGES_PER_BATCH {
            return Err(PageError::TooMany(count));
        }
        let addrs_end = HEADER + count as usize * 8;
        let addr_bytes = bytes.get(HEADER..addrs_end).ok_or(PageError::Truncated)?;
        let mut addrs = Vec::with_capacity(count as usize);
        let mut full = 0usize;
        for chunk in addr_bytes.chunks_exact(8) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            let a = u64::from_le_bytes(b);
            if a & (PAGE_SIZE as u64 - 1) & !ZERO_FLAG != 0 {
                return Err(PageError::BadAddress(a));
            }
            if a & ZERO_FLAG == 0 {
                full += 1;
            }
            addrs.push(a);
        }
        let data = &bytes[addrs_end..];
        if data.len() != full * PAGE_SIZE {
            return Err(PageError::DataLength { got: data.len(), expected: full * PAGE_SIZE });
        }
        Ok(Self { round, addrs, data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> PageBatch {
        let mut b = PageBatch::new(2);
        b.push_with::<()>(0x1000, |p| {
            p[7] = 9;
            Ok(())
        })
        .unwrap();
        assert!(b.push_with::<()>(0x5000, |_| Ok(())).unwrap(), "zero page detected");
        b
    }

    #[test]
    fn round_trip_with_zero_markers() {
        let b = sample();
        assert_eq!(b.zero_pages(), 1);
        let wire = b.encode();
        assert_eq!(wire.len(), HEADER + 16 + PAGE_SIZE, "zero page carries no data");
        let d = PageBatch::decode(&wire).unwrap();
        let pages: Vec<_> = d.iter().collect();
        assert_eq!(pages[0].0, 0x1000);
        assert_eq!(pages[0].1.unwrap()[7], 9);
        assert_eq!(pages[1], (0x5000, None));
    }

    #[test]
    fn fill_errors_leave_the_batch_unchanged() {
        let mut b = sample();
        assert_eq!(b.push_with(0x9000, |_| Err("boom")), Err("boom"));
        assert_eq!(b, sample());
    }

    #[test]
    fn bad_batches_are_refused() {
        let wire = sample().encode();
        assert_eq!(PageBatch::decode(&wire[..5]), Err(PageError::Truncated));
        assert_eq!(PageBatch::decode(&wire[..wire.len() - 1]), Err(PageError::DataLength { got: PAGE_SIZE - 1, expected: PAGE_SIZE }));
        let mut bad = wire.clone();
        bad[12] = 0x10; // misaligned address
        assert!(matches!(PageBatch::decode(&bad), Err(PageError::BadAddress(_))));
        let mut many = wire.clone();
        many[8..12].copy_from_slice(&5000u32.to_le_bytes());
        assert_eq!(PageBatch::decode(&many), Err(PageError::TooMany(5000)));
        let mut version = wire;
        version[0] = 9;
        assert_eq!(PageBatch::decode(&version), Err(PageError::Version(9)));
    }

    #[test]
    fn zero_detection() {
        let mut p = vec![0u8; PAGE_SIZE];
        assert!(is_zero_page(&p));
        p[PAGE_SIZE - 1] = 1;
        assert!(!is_zero_page(&p));
        assert!(!is_zero_page(&p[1..]));
    }

    proptest! {
        #[test]
        fn decode_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..9000)) {
            let _ = PageBatch::decode(&bytes);
        }

        #[test]
        fn encode_decode_identity(pages in proptest::collection::vec((0u64..1 << 30, any::<bool>(), any::<u8>()), 0..40)) {
            let mut b = PageBatch::new(1);
            for (n, zero, fill) in &pages {
                b.push_with::<()>(n << 12, |p| { if !zero { p.fill(fill | 1); } Ok(()) }).unwrap();
            }
            prop_assert_eq!(PageBatch::decode(&b.encode()).unwrap(), b);
        }
    }
}
