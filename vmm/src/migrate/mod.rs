//! Live migration of a running machine over TCP: the source side (`source`), the
//! destination side (`destination`), and what both need (dirty tracking, throttling,
//! the description the destination checks).

pub mod admission;
pub mod destination;
pub mod dirty;
pub mod guest_pages;
pub mod source;
pub mod throttle;
pub mod tls;
pub mod transport;

use migration::messages::{CpuidEntry, ProtocolError};

use crate::kvm_vm::KvmVmError;
use crate::state::StateError;

/// Why a migration failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("cannot connect to {to}: {source}")]
    Connect { to: String, source: std::io::Error },
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error(transparent)]
    Dirty(#[from] KvmVmError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("destination refused: {0}")]
    Refused(String),
    #[error("the destination did not acknowledge the {0} step within {1} s")]
    NoAnswer(String, u64),
    #[error("{0}")]
    Device(String),
    /// A TLS set-up or handshake failure (the message says so itself).
    #[error("{0}")]
    Tls(String),
    #[error("the peer sent nothing for {0} s (stalled or gone); giving up")]
    Stalled(u64),
    #[error("guest memory: {0}")]
    Memory(String),
}

/// KVM CPUID entries as protocol data.
pub fn cpuid_to_wire(entries: &[kvm_bindings::kvm_cpuid_entry2]) -> Vec<CpuidEntry> {
    entries
        .iter()
        .map(|e| CpuidEntry { function: e.function, index: e.index, flags: e.flags, eax: e.eax, ebx: e.ebx, ecx: e.ecx, edx: e.edx })
        .collect()
}
