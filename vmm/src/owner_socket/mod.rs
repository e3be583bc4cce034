//! Unix sockets only tern's user may reach: the control API's and the serial
//! console's. `socket_file` creates the listening socket owner-only (0600) without a
//! race, replaces nothing but a stale socket and removes it at exit only while it is
//! still ours; `peer` tells who connected (SO_PEERCRED) and whom tern serves (its own
//! user and root).

pub mod peer;
pub mod socket_file;

pub use socket_file::{create, OwnedSocketFile, SOCKET_MODE};

use std::path::PathBuf;

/// Why a socket file could not be created. `what` names the socket in the message
/// ("API socket", "console socket").
#[derive(Debug, thiserror::Error)]
pub enum SocketFileError {
    #[error("cannot listen on {what} {path}: {source}")]
    Bind { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("cannot create {what} {path}: directory {parent} does not exist")]
    NoParent { what: &'static str, path: PathBuf, parent: PathBuf },
    #[error("{what} {path} exists and another process is serving it")]
    InUse { what: &'static str, path: PathBuf },
    #[error("{what} path {path} exists and is a {kind}, not a socket; refusing to replace it")]
    NotASocket { what: &'static str, path: PathBuf, kind: &'static str },
    #[error("cannot tell whether {what} {path} is in use: {source}")]
    Probe { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("cannot remove the stale {what} {path}: {source}")]
    RemoveStale { what: &'static str, path: PathBuf, source: std::io::Error },
}
