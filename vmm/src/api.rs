//! The control API: JSON over a Unix socket, one request object per line, one reply
//! object per line.
//!
//! Requests: `{"command":"info"}`, `{"command":"pause"}`, `{"command":"resume"}`,
//! `{"command":"shutdown"}`. Replies: `{"ok":true,...}` or `{"ok":false,"error":"..."}`.
//! The listener thread only parses and forwards; the machine's owner thread executes
//! requests between events, so no request races a vCPU exit.
//!
//! The last replies are not lost at the end: each request is counted from before the
//! owner has it until its last reply is written (`pending_replies`), and dropping the
//! [`ApiSocket`] waits (at most 2 s) for that count to reach zero, so the client of a
//! request that ended the machine (`migrate`, `snapshot` with `stop`, `stop`) reads
//! its answer before tern exits.
//!
//! The socket is a trust boundary: it is created owner-only (`socket_file`), each
//! connecting process must be tern's own user or root (`peer`, by SO_PEERCRED), and
//! at most [`MAX_CONNECTIONS`] are served at once (`connection_limit`). A refused
//! connection gets one `{"ok":false,"error":"..."}` line and is closed.

mod connection_limit;
mod pending_replies;

pub use crate::owner_socket::SOCKET_MODE;

use crate::owner_socket::{peer, socket_file, OwnedSocketFile, SocketFileError};
use pending_replies::PendingReplies;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::time::Duration;

use crate::events::{ApiCommand, ApiReply, ApiRequest, VmEvent};

/// Errors starting the API server.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The socket file (owner-only, see `owner_socket`).
    #[error(transparent)]
    Socket(#[from] SocketFileError),
    #[error("cannot start the API listener thread for {path}: {source}")]
    Spawn { path: PathBuf, source: std::io::Error },
}

/// Most control-API connections served at once; more are refused with an error reply.
pub const MAX_CONNECTIONS: usize = 16;

/// How long dropping the [`ApiSocket`] waits for replies the machine gave but the
/// connections have not written yet.
const LAST_REPLIES_TIMEOUT: Duration = Duration::from_secs(2);

/// The served control socket. Dropped (as tern exits), it first waits a while for
/// the replies still being written, then removes the socket file if it is still ours.
pub struct ApiSocket {
    pending: Arc<PendingReplies>,
    _file: OwnedSocketFile,
}

impl Drop for ApiSocket {
    fn drop(&mut self) {
        if !self.pending.wait_written(LAST_REPLIES_TIMEOUT) {
            tracing::warn!("an API reply was not written within {LAST_REPLIES_TIMEOUT:?} of the end");
        }
    }
}

/// Starts the listener thread on `path`, forwarding requests into `events`.
pub fn serve(path: &Path, events: Sender<VmEvent>) -> Result<ApiSocket, ApiError> {
    let (listener, file) = socket_file::create(path, "API socket")?;
    let limit = connection_limit::ConnectionLimit::new(MAX_CONNECTIONS);
    let pending = Arc::new(PendingReplies::default());
    let served = pending.clone();
    std::thread::Builder::new()
        .name("api".into())
        .spawn(move || accept_loop(listener, events, limit, served))
        .map_err(|source| ApiError::Spawn { path: path.to_path_buf(), source })?;
    Ok(ApiSocket { pending, _file: file })
}

/// Accepts connections, refuses the ones from other users and those over the limit,
/// and serves each of the rest on its own thread.
fn accept_loop(listener: UnixListener, events: Sender<VmEvent>, limit: connection_limit::ConnectionLimit, pending: Arc<PendingReplies>) {
    let own_uid = peer::own_uid();
    if let Err(e) = tern_seccomp::confine(tern_seccomp::ThreadClass::Api) {
        tracing::error!("control socket not served: {e}");
        return;
    }
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                // Out of fds, say: do not spin on the error.
                tracing::warn!("accepting an API connection: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        match peer::peer_uid(&stream) {
            Ok(uid) if peer::peer_allowed(uid, own_uid) => {}
            Ok(uid) => {
                tracing::warn!(peer_uid = uid, own_uid, "API connection refused: not tern's user or root");
                refuse(stream, &format!("permission denied: uid {uid} may not use this tern's API"));
                continue;
            }
            Err(e) => {
                tracing::warn!("API connection refused: cannot read its credentials: {e}");
                refuse(stream, "permission denied: cannot identify the connecting process");
                continue;
            }
        }
        let Some(slot) = limit.try_acquire() else {
            tracing::warn!(max = limit.max(), "API connection refused: too many connections");
            refuse(stream, &format!("too many API connections (at most {})", limit.max()));
            continue;
        };
        let events = events.clone();
        let pending = pending.clone();
        // The slot moves into the thread (or is dropped with the closure if the thread
        // cannot start) and is released however the connection ends.
        let spawned = std::thread::Builder::new().name("api-conn".into()).spawn(move || {
            let _slot = slot;
            match tern_seccomp::confine(tern_seccomp::ThreadClass::ApiConnection) {
                Ok(()) => serve_connection(stream, events, &pending),
                Err(e) => tracing::error!("control connection not served: {e}"),
            }
        });
        if let Err(e) = spawned {
            tracing::warn!("cannot start an API connection thread: {e}");
        }
    }
}

/// Sends one error reply and closes the connection.
fn refuse(mut stream: UnixStream, reason: &str) {
    // A peer that does not read must not stall the accept loop.
    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
    let _ = write_reply(&mut stream, &ApiReply::error(reason));
}

/// Longest request line accepted; anything longer is refused, not buffered.
const MAX_REQUEST_BYTES: u64 = 64 * 1024;

fn serve_connection(stream: UnixStream, events: Sender<VmEvent>, pending: &Arc<PendingReplies>) {
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
            ApiCommand::Migrate { .. } | ApiCommand::Snapshot { .. } => Duration::from_secs(24 * 3600),
            _ => Duration::from_secs(30),
        };
        let (tx, rx) = channel();
        // Counted before the machine has it, until its last reply is written.
        let _pending = pending.begin();
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

    /// A fresh socket path for one test.
    fn socket_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tern-api-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("api.sock")
    }

    fn read_line(conn: &UnixStream) -> String {
        let mut line = String::new();
        BufReader::new(conn).read_line(&mut line).unwrap();
        line
    }

    #[test]
    fn connections_beyond_the_limit_get_an_error_and_a_freed_slot_is_reused() {
        let path = socket_path("limit");
        let (tx, rx) = channel();
        let _socket = serve(&path, tx).unwrap();
        std::thread::spawn(move || {
            while let Ok(VmEvent::Api(req)) = rx.recv() {
                let _ = req.reply.send(ApiReply::ok());
            }
        });
        // Each connection is accepted, in order, before the next one: after a round
        // trip on the last, all MAX_CONNECTIONS hold a slot.
        let mut held: Vec<UnixStream> = (0..MAX_CONNECTIONS).map(|_| UnixStream::connect(&path).unwrap()).collect();
        held.last_mut().unwrap().write_all(b"{\"command\":\"info\"}\n").unwrap();
        assert!(read_line(held.last().unwrap()).contains("\"ok\":true"));
        let extra = UnixStream::connect(&path).unwrap();
        let reply = read_line(&extra);
        assert_eq!(reply.trim(), format!("{{\"ok\":false,\"error\":\"too many API connections (at most {MAX_CONNECTIONS})\"}}"));
        let mut rest = String::new();
        assert_eq!(BufReader::new(&extra).read_line(&mut rest).unwrap(), 0, "the refused connection is closed");
        // One client leaves: its slot comes back (released when its thread sees EOF).
        drop(held.pop());
        let started = std::time::Instant::now();
        loop {
            // Until the slot is back this connection is refused (error reply, closed),
            // so the write may meet a closed socket.
            let mut conn = UnixStream::connect(&path).unwrap();
            let mut reply = String::new();
            if conn.write_all(b"{\"command\":\"info\"}\n").is_ok()
                && BufReader::new(&conn).read_line(&mut reply).is_ok()
                && reply.contains("\"ok\":true")
            {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(5), "the freed slot never came back");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn the_socket_outlives_a_reply_given_just_before_the_end() {
        let path = socket_path("last-reply");
        let (tx, rx) = channel();
        let socket = serve(&path, tx).unwrap();
        let (taken_tx, taken) = channel();
        // A machine that ends on the request: it answers it after a while (the
        // connection has not written the answer when the socket is dropped).
        std::thread::spawn(move || {
            if let Ok(VmEvent::Api(req)) = rx.recv() {
                taken_tx.send(()).unwrap();
                std::thread::sleep(Duration::from_millis(100));
                let _ = req.reply.send(ApiReply { state: Some("ended".into()), ..ApiReply::ok() });
            }
        });
        let mut conn = UnixStream::connect(&path).unwrap();
        conn.write_all(b"{\"command\":\"shutdown\"}\n").unwrap();
        taken.recv_timeout(Duration::from_secs(10)).expect("the request reaches the machine");
        drop(socket);
        // Written before the drop returned: it is there at once.
        conn.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
        let reply = read_line(&conn);
        assert!(reply.contains("\"ok\":true") && reply.contains("ended"), "{reply}");
        assert!(!path.exists(), "the socket file is removed");
    }

    #[test]
    fn round_trip_over_socket() {
        let path = socket_path("round-trip");
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
        assert!(matches!(serve(&path, channel().0), Err(ApiError::Socket(SocketFileError::InUse { .. }))));
    }
}
