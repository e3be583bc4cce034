//! Talking to a running tern through its control socket: one request, then replies
//! until the last (`done`), progress replies handed to the caller as they come.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use anyhow::{bail, Context, Result};
use vmm::events::ApiReply;

/// Sends `request` on `socket` (described as `whose`, e.g. "the source's") and
/// returns the final reply; every progress reply (`done: false`) goes to `progress`.
pub fn request(socket: &Path, whose: &str, request: &serde_json::Value, mut progress: impl FnMut(&ApiReply)) -> Result<ApiReply> {
    let conn = UnixStream::connect(socket).with_context(|| format!("cannot reach {whose} control socket {}", socket.display()))?;
    (&conn).write_all(format!("{request}\n").as_bytes()).context("sending the request")?;
    let mut lines = BufReader::new(conn).lines();
    loop {
        let line = match lines.next() {
            Some(line) => line.with_context(|| format!("reading from {whose} control socket"))?,
            None => bail!("the control socket closed before the request ended"),
        };
        let reply: ApiReply = serde_json::from_str(&line).with_context(|| format!("unreadable reply: {line}"))?;
        if !reply.done {
            progress(&reply);
            continue;
        }
        return Ok(reply);
    }
}
