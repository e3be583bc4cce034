//! Snapshots: the machine state a live migration moves, written to a directory
//! instead of a socket (`take`), and restores, which build the machine as a migration
//! destination does and map guest memory from the snapshot copy-on-write (`restore`).
//!
//! - `format`: the manifest (sections with versions, lengths, CRC32s; the disks);
//! - `files`: writing and reading sections, the temporary directory and its commit;
//! - `memory_file`: guest memory as a sparse file (zero pages are holes);
//! - `disk_copy`: disk copies (FICLONE reflink, else a sparse-aware copy);
//! - `take`: the snapshot thread (pause, write, resume or stop);
//! - `restore`: opening a snapshot and running the guest from it.

pub mod disk_copy;
pub mod files;
pub mod format;
pub mod memory_file;
pub mod restore;
pub mod take;

use std::path::{Path, PathBuf};

/// Why a snapshot could not be taken or restored. One line each, naming what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{what} {}: {source}", path.display())]
    Io { what: String, path: PathBuf, source: std::io::Error },
    #[error("{} is {found} bytes, the manifest says {expected} (truncated or replaced)", path.display())]
    Truncated { path: PathBuf, found: u64, expected: u64 },
    #[error("{what} is corrupt: its CRC32 is {actual:08x}, the manifest says {stored:08x}")]
    Checksum { what: String, stored: u32, actual: u32 },
    #[error("{what} version {found}, this tern reads version {ours}")]
    Version { what: String, found: u32, ours: u32 },
    /// The snapshot directory itself cannot be read (the caller names it).
    #[error("{0}")]
    Directory(std::io::Error),
    /// A directory without a manifest (the caller names it).
    #[error("has no manifest (not a snapshot, or an unfinished one)")]
    NoManifest,
    #[error("not a usable snapshot: {0}")]
    Malformed(String),
    #[error("{0}")]
    Target(String),
    #[error("{0}")]
    Refused(String),
    #[error("pause failed: {0}")]
    Pause(String),
    #[error("{0}")]
    Device(String),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("guest memory: {0}")]
    Memory(String),
}

impl SnapshotError {
    /// An I/O error on `path` while doing `what`.
    pub fn io(what: impl Into<String>, path: &Path, source: std::io::Error) -> Self {
        SnapshotError::Io { what: what.into(), path: path.to_path_buf(), source }
    }
}
