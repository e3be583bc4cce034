//! The fuzz input format, both ways.
//!
//! Reading is `arbitrary` 1.x: integers little endian from the front (zero-padded
//! when the input runs out), `bool` the low bit of a byte, `Option` a `bool` then
//! the value, enums a `u32` `x` choosing variant `(x * n) >> 32`. Lists are
//! [`List`] and byte strings [`Blob`]: a count from the front, then the items (the
//! stock `Vec` takes its length from the back of the input, which a writer cannot
//! easily mirror). [`Encode`] writes the same layout; the seed generator checks
//! each seed by decoding it again.

use arbitrary::{Arbitrary, Result, Unstructured};

/// Writes a value in the layout `arbitrary` reads it back from.
pub trait Encode {
    /// Appends the encoding of `self` to `out`.
    fn encode(&self, out: &mut Vec<u8>);
}

/// Encodes `value` into a fresh buffer.
pub fn to_bytes(value: &impl Encode) -> Vec<u8> {
    let mut out = Vec::new();
    value.encode(&mut out);
    out
}

macro_rules! encode_int {
    ($($t:ty),*) => {$(
        impl Encode for $t {
            fn encode(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
encode_int!(u8, u16, u32, u64, i8, i16, i32, i64);

impl Encode for bool {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
}

impl<T: Encode> Encode for Option<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Some(v) => {
                true.encode(out);
                v.encode(out);
            }
            None => false.encode(out),
        }
    }
}

/// Writes the selector of variant `index` of an enum with `count` variants (the
/// smallest `x` with `(x * count) >> 32 == index`).
pub fn encode_variant(index: u32, count: u32, out: &mut Vec<u8>) {
    let x = ((u64::from(index) << 32) + u64::from(count) - 1) / u64::from(count);
    (x as u32).encode(out);
}

/// A list read as a `u8` count then that many items (fewer when the input ends).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct List<T>(pub Vec<T>);

impl<T> Default for List<T> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<'a, T: Arbitrary<'a>> Arbitrary<'a> for List<T> {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let count = u8::arbitrary(u)?;
        let mut items = Vec::new();
        for _ in 0..count {
            if u.is_empty() {
                break;
            }
            items.push(T::arbitrary(u)?);
        }
        Ok(Self(items))
    }
}

impl<T: Encode> Encode for List<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        let count = u8::try_from(self.0.len()).expect("at most 255 items in a List");
        count.encode(out);
        for item in &self.0 {
            item.encode(out);
        }
    }
}

/// A byte string read as a `u16` length then that many bytes (fewer when the
/// input ends).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Blob(pub Vec<u8>);

impl<'a> Arbitrary<'a> for Blob {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let len = usize::from(u16::arbitrary(u)?).min(u.len());
        Ok(Self(u.bytes(len)?.to_vec()))
    }
}

impl Encode for Blob {
    fn encode(&self, out: &mut Vec<u8>) {
        let len = u16::try_from(self.0.len()).expect("at most 64 KiB in a Blob");
        len.encode(out);
        out.extend_from_slice(&self.0);
    }
}

/// Decodes `T` from the front of `data` (what every target does with its input).
pub fn decode<'a, T: Arbitrary<'a>>(data: &'a [u8]) -> Option<T> {
    T::arbitrary(&mut Unstructured::new(data)).ok()
}
