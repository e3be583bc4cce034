//! A vCPU's XSAVE area: moved with KVM_GET_XSAVE2 / KVM_SET_XSAVE at the size KVM
//! reports for KVM_CAP_XSAVE2 (larger than 4 KiB once AMX-style dynamic state is on),
//! or with the legacy fixed 4 KiB ioctls on a KVM without that capability. The area
//! travels as its bytes; a destination refuses an area larger than its own KVM's.

use kvm_bindings::{kvm_xsave, Xsave};
use kvm_ioctls::{Cap, VcpuFd, VmFd};

use super::StateError;

/// Size of the legacy `struct kvm_xsave`.
pub const LEGACY_SIZE: usize = std::mem::size_of::<kvm_xsave>();
/// Largest area a state may carry (decode bound; the real limit is the host's size).
pub const MAX_SIZE: usize = 256 << 10;
const WORD: usize = std::mem::size_of::<u32>();

/// How this host's KVM moves XSAVE areas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XsaveIoctls {
    /// KVM_GET_XSAVE / KVM_SET_XSAVE with the fixed 4 KiB structure.
    Legacy,
    /// KVM_GET_XSAVE2 / KVM_SET_XSAVE with an area of `size` bytes (KVM_CAP_XSAVE2).
    Xsave2 { size: usize },
}

impl XsaveIoctls {
    /// Asks the VM (KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2) on the VM fd, as KVM's API
    /// documentation asks, since the size depends on the VM's permitted features).
    pub fn probe(vm: &VmFd) -> Self {
        Self::from_capability(vm.check_extension_int(Cap::Xsave2))
    }

    /// From the capability's value (0 or negative: not offered).
    pub fn from_capability(value: i32) -> Self {
        match usize::try_from(value) {
            Ok(size) if size > 0 => Self::Xsave2 { size: size.max(LEGACY_SIZE).next_multiple_of(WORD) },
            _ => Self::Legacy,
        }
    }

    /// Bytes of the area this host reads and writes.
    pub fn size(self) -> usize {
        match self {
            Self::Legacy => LEGACY_SIZE,
            Self::Xsave2 { size } => size,
        }
    }

    /// Reads the area of vCPU `vcpu` (`fd`).
    pub fn get(self, fd: &VcpuFd, vcpu: usize) -> Result<Vec<u8>, StateError> {
        match self {
            Self::Legacy => Ok(words_to_bytes(&fd.get_xsave().map_err(|source| StateError::Vcpu { vcpu, step: "KVM_GET_XSAVE", source })?.region, &[])),
            Self::Xsave2 { size } => {
                let mut area = Xsave::new(extra_words(size)).map_err(|e| StateError::Refused(format!("XSAVE buffer of {size} bytes: {e:?}")))?;
                // SAFETY: `area` holds the 4 KiB header plus extra_words(size) words, at
                // least the `size` bytes KVM reported for KVM_CAP_XSAVE2 on this VM, which
                // is what KVM_GET_XSAVE2 writes.
                unsafe { fd.get_xsave2(&mut area) }.map_err(|source| StateError::Vcpu { vcpu, step: "KVM_GET_XSAVE2", source })?;
                Ok(words_to_bytes(&area.as_fam_struct_ref().xsave.region, area.as_slice()))
            }
        }
    }

    /// Checks that an area received from a peer fits this host.
    pub fn check(self, area_len: usize) -> Result<(), String> {
        if area_len > self.size() {
            return Err(format!("XSAVE area of {area_len} bytes is larger than this host's {} bytes", self.size()));
        }
        if area_len < LEGACY_SIZE || area_len % WORD != 0 {
            return Err(format!("XSAVE area of {area_len} bytes is not a whole number of words of at least {LEGACY_SIZE}"));
        }
        Ok(())
    }

    /// Writes `area` (checked with [`XsaveIoctls::check`]) into vCPU `vcpu` (`fd`), zero
    /// beyond its end up to this host's size (absent components: XSTATE_BV bits clear).
    pub fn set(self, fd: &VcpuFd, vcpu: usize, area: &[u8]) -> Result<(), StateError> {
        self.check(area.len()).map_err(|reason| StateError::VcpuRefused { vcpu, reason })?;
        let failed = |source| StateError::Vcpu { vcpu, step: "KVM_SET_XSAVE", source };
        let (header, extra) = area.split_at(LEGACY_SIZE);
        match self {
            Self::Legacy => {
                let mut xsave = kvm_xsave::default();
                bytes_to_words(header, &mut xsave.region);
                // SAFETY: KVM_SET_XSAVE reads the 4 KiB `struct kvm_xsave` (this KVM has no
                // KVM_CAP_XSAVE2, so its area is no larger), fully initialised here.
                unsafe { fd.set_xsave(&xsave) }.map_err(failed)
            }
            Self::Xsave2 { size } => {
                let mut xsave = Xsave::new(extra_words(size)).map_err(|e| StateError::Refused(format!("XSAVE buffer of {size} bytes: {e:?}")))?;
                // SAFETY: only the fixed region is written; the FAM length is untouched.
                bytes_to_words(header, &mut unsafe { xsave.as_mut_fam_struct() }.xsave.region);
                bytes_to_words(extra, xsave.as_mut_slice());
                // SAFETY: `xsave` holds the `size` bytes KVM reported for KVM_CAP_XSAVE2 on
                // this VM, the most KVM_SET_XSAVE reads, all initialised.
                unsafe { fd.set_xsave2(&xsave) }.map_err(failed)
            }
        }
    }
}

/// FAM words after the 4 KiB header for an area of `size` bytes.
fn extra_words(size: usize) -> usize {
    size.saturating_sub(LEGACY_SIZE).div_ceil(WORD)
}

fn words_to_bytes(header: &[u32], extra: &[u32]) -> Vec<u8> {
    header.iter().chain(extra).flat_map(|w| w.to_ne_bytes()).collect()
}

/// Fills `words` from `bytes` (a whole number of words, no more than fit).
fn bytes_to_words(bytes: &[u8], words: &mut [u32]) {
    for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(WORD)) {
        *word = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_values() {
        assert_eq!(XsaveIoctls::from_capability(0), XsaveIoctls::Legacy);
        assert_eq!(XsaveIoctls::from_capability(-1), XsaveIoctls::Legacy);
        assert_eq!(XsaveIoctls::from_capability(2048), XsaveIoctls::Xsave2 { size: LEGACY_SIZE });
        assert_eq!(XsaveIoctls::from_capability(11008).size(), 11008);
    }

    #[test]
    fn areas_are_checked_against_this_host() {
        let host = XsaveIoctls::Xsave2 { size: 8192 };
        assert!(host.check(4096).is_ok());
        assert!(host.check(8192).is_ok());
        assert_eq!(host.check(11008).unwrap_err(), "XSAVE area of 11008 bytes is larger than this host's 8192 bytes");
        assert!(host.check(4095).is_err());
        assert!(host.check(4098).is_err());
        assert_eq!(XsaveIoctls::Legacy.check(8192).unwrap_err(), "XSAVE area of 8192 bytes is larger than this host's 4096 bytes");
    }

    #[test]
    fn words_round_trip() {
        let bytes: Vec<u8> = (0..16u8).collect();
        let mut words = [0u32; 4];
        bytes_to_words(&bytes, &mut words);
        assert_eq!(words_to_bytes(&words[..2], &words[2..]), bytes);
    }
}
