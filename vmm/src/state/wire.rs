//! Decoding KVM structures received from a migration peer: each travels as an opaque
//! byte string, which kvm-bindings would silently zero-pad or truncate to the
//! structure's size. Here a string of any other length is refused, so a peer cannot
//! send a short LAPIC or an oversized IOAPIC, nor make one input byte decode into a
//! multi-KiB structure.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::BytesDeserializer;
use serde::de::{DeserializeOwned, Deserializer, Error, SeqAccess, Visitor};
use serde::Deserialize;

use devices::bounded::refuse;

/// The type's name without its path, for messages.
fn short_name<T>() -> &'static str {
    let name = std::any::type_name::<T>();
    name.rsplit("::").next().unwrap_or(name)
}

struct ExactVisitor<T>(PhantomData<T>);

impl<'de, T: DeserializeOwned> Visitor<'de> for ExactVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} bytes of {}", std::mem::size_of::<T>(), short_name::<T>())
    }

    fn visit_bytes<E: Error>(self, bytes: &[u8]) -> Result<T, E> {
        let expected = std::mem::size_of::<T>();
        if bytes.len() != expected {
            return Err(refuse(format!("{} is {} bytes, expected {expected}", short_name::<T>(), bytes.len())));
        }
        T::deserialize(BytesDeserializer::<E>::new(bytes))
    }
}

/// Deserializes a kvm-bindings structure whose encoding is exactly its size.
pub fn exact<'de, D: Deserializer<'de>, T: DeserializeOwned>(deserializer: D) -> Result<T, D::Error> {
    deserializer.deserialize_bytes(ExactVisitor::<T>(PhantomData))
}

/// One element of a vector decoded with [`exact`].
struct Exact<T>(T);

impl<'de, T: DeserializeOwned> Deserialize<'de> for Exact<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        exact(deserializer).map(Exact)
    }
}

struct ExactVecVisitor<T, const MAX: usize>(PhantomData<T>);

impl<'de, T: DeserializeOwned, const MAX: usize> Visitor<'de> for ExactVecVisitor<T, MAX> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "at most {MAX} {}", short_name::<T>())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        if let Some(n) = seq.size_hint().filter(|&n| n > MAX) {
            return Err(refuse(format!("{n} {} where at most {MAX} are allowed", short_name::<T>())));
        }
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX));
        while let Some(Exact(element)) = seq.next_element::<Exact<T>>()? {
            if out.len() == MAX {
                return Err(refuse(format!("more than {MAX} {}", short_name::<T>())));
            }
            out.push(element);
        }
        Ok(out)
    }
}

/// Deserializes at most `MAX` kvm-bindings structures, each decoded with [`exact`].
pub fn exact_vec<'de, D: Deserializer<'de>, T: DeserializeOwned, const MAX: usize>(deserializer: D) -> Result<Vec<T>, D::Error> {
    deserializer.deserialize_seq(ExactVecVisitor::<T, MAX>(PhantomData))
}

#[cfg(test)]
mod tests {
    use kvm_bindings::{kvm_lapic_state, kvm_msr_entry};
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    struct Holder {
        #[serde(deserialize_with = "super::exact")]
        lapic: kvm_lapic_state,
        #[serde(deserialize_with = "super::exact_vec::<_, _, 2>")]
        msrs: Vec<kvm_msr_entry>,
    }

    /// The encoding of a Holder whose LAPIC blob is `lapic_len` bytes and MSR list
    /// holds `msrs` entries.
    fn encoded(lapic_len: usize, msrs: usize) -> Vec<u8> {
        #[derive(Serialize)]
        struct Raw<'a> {
            #[serde(with = "serde_bytes_compat")]
            lapic: &'a [u8],
            msrs: Vec<kvm_msr_entry>,
        }
        mod serde_bytes_compat {
            pub fn serialize<S: serde::Serializer>(b: &&[u8], s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(b)
            }
        }
        let lapic = vec![0x5au8; lapic_len];
        postcard::to_allocvec(&Raw { lapic: &lapic, msrs: vec![kvm_msr_entry { index: 0x10, data: 7, ..Default::default() }; msrs] }).unwrap()
    }

    #[test]
    fn exact_sizes_decode() {
        let h: Holder = postcard::from_bytes(&encoded(std::mem::size_of::<kvm_lapic_state>(), 2)).unwrap();
        assert!(h.lapic.regs.iter().all(|&b| b == 0x5a));
        assert_eq!((h.msrs.len(), h.msrs[1].index, h.msrs[1].data), (2, 0x10, 7));
    }

    #[test]
    fn short_long_and_too_many_are_refused_with_the_reason() {
        let _ = devices::bounded::take_refusal();
        assert!(postcard::from_bytes::<Holder>(&encoded(1000, 0)).is_err());
        assert_eq!(devices::bounded::take_refusal().as_deref(), Some("kvm_lapic_state is 1000 bytes, expected 1024"));
        assert!(postcard::from_bytes::<Holder>(&encoded(1025, 0)).is_err());
        assert_eq!(devices::bounded::take_refusal().as_deref(), Some("kvm_lapic_state is 1025 bytes, expected 1024"));
        assert!(postcard::from_bytes::<Holder>(&encoded(1024, 3)).is_err());
        assert_eq!(devices::bounded::take_refusal().as_deref(), Some("3 kvm_msr_entry where at most 2 are allowed"));
    }
}
