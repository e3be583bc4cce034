//! Decoding helpers for state received from a migration peer (untrusted input): a
//! sequence with more elements than its field allows is refused while it is read, so
//! no vector grows past the bound and nothing is allocated from a length the peer
//! wrote before that length is checked.
//!
//! Use on a `Vec` field: `#[serde(deserialize_with = "devices::bounded::vec::<_, _, 64>")]`.
//!
//! Some wire formats (postcard) drop the text of a decoder's custom error; the reason
//! of the last refusal on this thread is kept too, for [`take_refusal`].

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, Error, SeqAccess, Visitor};

thread_local! {
    static REFUSAL: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Records why a decoder refused its input, and returns the error carrying it.
pub fn refuse<E: Error>(reason: String) -> E {
    let error = E::custom(&reason);
    REFUSAL.with(|r| *r.borrow_mut() = Some(reason));
    error
}

/// The reason of the last refusal recorded on this thread (cleared by reading).
pub fn take_refusal() -> Option<String> {
    REFUSAL.with(|r| r.borrow_mut().take())
}

struct BoundedVisitor<T, const MAX: usize>(PhantomData<T>);

impl<'de, T: Deserialize<'de>, const MAX: usize> Visitor<'de> for BoundedVisitor<T, MAX> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a sequence of at most {MAX} elements")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        if let Some(n) = seq.size_hint().filter(|&n| n > MAX) {
            return Err(refuse(format!("{n} elements where at most {MAX} are allowed")));
        }
        // The hint is checked against MAX above; still cap what is reserved up front.
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX).min(4096));
        while let Some(element) = seq.next_element()? {
            if out.len() == MAX {
                return Err(refuse(format!("more than {MAX} elements")));
            }
            out.push(element);
        }
        Ok(out)
    }
}

/// Deserializes a `Vec<T>` of at most `MAX` elements.
pub fn vec<'de, D: Deserializer<'de>, T: Deserialize<'de>, const MAX: usize>(deserializer: D) -> Result<Vec<T>, D::Error> {
    deserializer.deserialize_seq(BoundedVisitor::<T, MAX>(PhantomData))
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Holder {
        #[serde(deserialize_with = "super::vec::<_, _, 3>")]
        items: Vec<u32>,
    }

    #[test]
    fn within_bound_decodes_and_beyond_is_refused() {
        let ok = Holder { items: vec![1, 2, 3] };
        let bytes = postcard::to_allocvec(&ok).unwrap();
        assert_eq!(postcard::from_bytes::<Holder>(&bytes).unwrap(), ok);
        let long = postcard::to_allocvec(&Holder { items: vec![1, 2, 3, 4] }).unwrap();
        let _ = super::take_refusal();
        assert!(postcard::from_bytes::<Holder>(&long).is_err());
        assert_eq!(super::take_refusal().as_deref(), Some("4 elements where at most 3 are allowed"));
        // A length prefix claiming billions of elements is refused before anything is reserved.
        assert!(postcard::from_bytes::<Holder>(&[0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
    }
}
