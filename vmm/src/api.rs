//! The control API: JSON over a Unix socket, one request object per line, one reply
//! object per line.
//!
//! Requests: `{"command":"info"}`, `{"command":"pause"}`, `{"command":"resume"}`,
//! `{"command":"shutdown"}`. Replies: `{"ok":true,...}` or `{"ok":false,"error":"..."}`.
//! The listener thread only parses and forwards; the machine's owner thread executes
//! requests between events, so no request races a vCPU exit.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Sender};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::vcpu::VmEvent;

/// A request the machine's owner executes.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum ApiCommand {
    /// Machine description and state.
    Info,
    /// Park every vCPU.
    Pause,
    /// Un-park the vCPUs.
    Resume,
    /// Stop the VM; tern exits.
    Shutdown,
    /// Live-migrate to a `tern receive` at `to` (HOST:PORT). Progress replies carry
    /// `progress`; the last reply carries `report` (or `error`) and `done: true`.
    Migrate {
        to: String,
        #[serde(default = "default_max_downtime_ms")]
        max_downtime_ms: u64,
        /// Bandwidth cap in MiB/s (absent or 0: unlimited).
        #[serde(default)]
        max_bandwidth_mib_s: u64,
        /// Mutual TLS with the certificates in this directory (absent: plaintext).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tls_dir: Option<std::path::PathBuf>,
    },
}

fn default_max_downtime_ms() -> u64 {
    300
}

/// A reply: `ok` plus either fields or an error.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ApiReply {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Migration progress sample (more replies follow).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<migration::report::Progress>,
    /// Final migration report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<migration::report::Report>,
    /// False on a progress reply: more replies follow for this request.
    #[serde(default = "done_default", skip_serializing_if = "is_true")]
    pub done: bool,
}

fn done_default() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

impl ApiReply {
    /// A success with no fields.
    pub fn ok() -> Self {
        Self { ok: true, done: true, ..Default::default() }
    }
    /// A failure with a reason.
    pub fn error(reason: impl Into<String>) -> Self {
        Self { ok: false, done: true, error: Some(reason.into()), ..Default::default() }
    }
}

/// A request on its way to the machine, with where to send the reply.
#[derive(Debug)]
pub struct ApiRequest {
    pub command: ApiCommand,
    pub reply: Sender<ApiReply>,
}

/// Errors starting the API server.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot listen on API socket {path}: {source}")]
    Bind { path: PathBuf, source: std::io::Error },
    #[error("API socket {path} exists and another process is serving it")]
    InUse { path: PathBuf },
}

/// Removes the socket file when dropped.
pub struct ApiSocket {
    path: PathBuf,
}

impl Drop for ApiSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Starts the listener thread on `path`, forwarding requests into `events`.
pub fn serve(path: &Path, events: Sender<VmEvent>) -> Result<ApiSocket, ApiError> {
    if path.exists() {
        // A live server answers connections; a stale socket file from a crashed run
        // does not and is replaced.
        if UnixStream::connect(path).is_ok() {
            return Err(ApiError::InUse { path: path.to_path_buf() });
        }
        let _ = std::fs::remove_file(path);
    }
    let listener = UnixListener::bind(path).map_err(|source| ApiError::Bind { path: path.to_path_buf(), source })?;
    std::thread::Builder::new()
        .name("api".into())
        .spawn(move || {
            if let Err(e) = tern_seccomp::confine(tern_seccomp::ThreadClass::Api) {
                tracing::error!("control socket not served: {e}");
                return;
            }
            for stream in listener.incoming().flatten() {
                let events = events.clone();
                let _ = std::thread::Builder::new().name("api-conn".into()).spawn(move || {
                    match tern_seccomp::confine(tern_seccomp::ThreadClass::ApiConnection) {
                        Ok(()) => serve_connection(stream, events),
                        Err(e) => tracing::error!("control connection not served: {e}"),
                    }
                });
            }
        })
        .map_err(|source| ApiError::Bind { path: path.to_path_buf(), source })?;
    Ok(ApiSocket { path: path.to_path_buf() })
}

/// Longest request line accepted; anything longer is refused, not buffered.
const MAX_REQUEST_BYTES: u64 = 64 * 1024;

fn serve_connection(stream: UnixStream, events: Sender<VmEvent>) {
    let Ok(mut writer) = stream.try_clone() else { return };
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        match (&mut reader).take(MAX_REQUEST_BYTES).read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if line.trim().is_empty() {
            continue;
        }
        let command = match serde_json::from_str::<ApiCommand>(line.trim()) {
            Ok(command) => command,
            Err(e) => {
                if write_reply(&mut writer, &ApiReply::error(format!("bad request: {e}"))).is_err() {
                    return;
                }
                continue;
            }
        };
        // A migration streams progress replies for as long as it runs.
        let patience = match command {
            ApiCommand::Migrate { .. } => Duration::from_secs(24 * 3600),
            _ => Duration::from_secs(30),
        };
        let (tx, rx) = channel();
        if events.send(VmEvent::Api(ApiRequest { command, reply: tx })).is_err() {
            let _ = write_reply(&mut writer, &ApiReply::error("the machine is shutting down"));
            return;
        }
        loop {
            let reply = rx.recv_timeout(patience).unwrap_or_else(|_| ApiReply::error("the machine did not answer"));
            let done = reply.done;
            if write_reply(&mut writer, &reply).is_err() {
                return;
            }
            if done {
                break;
            }
        }
    }
}

fn write_reply(writer: &mut UnixStream, reply: &ApiReply) -> std::io::Result<()> {
    let mut text = serde_json::to_string(reply).unwrap_or_else(|_| "{\"ok\":false}".into());
    text.push('\n');
    writer.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_and_garbage_is_refused() {
        assert_eq!(serde_json::from_str::<ApiCommand>(r#"{"command":"pause"}"#).unwrap(), ApiCommand::Pause);
        assert!(serde_json::from_str::<ApiCommand>(r#"{"command":"explode"}"#).is_err());
        assert!(serde_json::from_str::<ApiCommand>("not json").is_err());
    }

    #[test]
    fn round_trip_over_socket() {
        let dir = std::env::temp_dir().join(format!("tern-api-test-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("api.sock");
        let (tx, rx) = channel();
        let _socket = serve(&path, tx).unwrap();
        // A fake machine: answers every request.
        std::thread::spawn(move || {
            while let Ok(VmEvent::Api(req)) = rx.recv() {
                let _ = req.reply.send(ApiReply { state: Some(format!("{:?}", req.command)), ..ApiReply::ok() });
            }
        });
        let mut conn = UnixStream::connect(&path).unwrap();
        conn.write_all(b"{\"command\":\"info\"}\nnonsense\n").unwrap();
        let mut reader = BufReader::new(conn);
        let mut first = String::new();
        reader.read_line(&mut first).unwrap();
        assert!(first.contains("\"ok\":true") && first.contains("Info"), "{first}");
        let mut second = String::new();
        reader.read_line(&mut second).unwrap();
        assert!(second.contains("\"ok\":false") && second.contains("bad request"), "{second}");
        // A second server on the same live socket is refused.
        assert!(matches!(serve(&path, channel().0), Err(ApiError::InUse { .. })));
    }
}
