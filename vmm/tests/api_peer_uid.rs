//! The control socket refuses a process of another user: as root, this test opens the
//! socket's mode to everyone (so the file system lets the other user in) and connects
//! from a child running as `nobody`; tern must answer with one refusal and nothing of
//! the machine. Needs root (to run a child under another uid); fails with the reason
//! otherwise.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::mpsc::channel;

use vmm::events::{ApiReply, VmEvent};

/// The uid and gid of `nobody` on Debian.
const NOBODY: u32 = 65534;
const CLIENT_ENV: &str = "TERN_API_PEER_CLIENT";

/// The child's side: connect, ask for info, print the reply line.
fn client(path: &str) {
    let conn = UnixStream::connect(path).unwrap_or_else(|e| panic!("connect as uid {}: {e}", own_uid()));
    // tern may refuse (one line, then close) before this request is written: a
    // broken pipe here is expected then; the refusal is still there to read.
    let _ = (&conn).write_all(b"{\"command\":\"info\"}\n");
    let mut line = String::new();
    BufReader::new(conn).read_line(&mut line).unwrap();
    println!("{}", line.trim_end());
}

fn own_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

#[test]
fn a_process_of_another_user_is_refused() {
    if let Ok(path) = std::env::var(CLIENT_ENV) {
        client(&path);
        return;
    }
    assert_eq!(own_uid(), 0, "this test runs a client as another user and needs root");
    let dir = std::env::temp_dir().join(format!("tern-api-peer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.join("api.sock");
    let (tx, rx) = channel();
    let _socket = vmm::api::serve(&path, tx).unwrap();
    // A machine that would answer anything it is asked.
    std::thread::spawn(move || {
        while let Ok(VmEvent::Api(request)) = rx.recv() {
            let _ = request.reply.send(ApiReply { state: Some("running".into()), ..ApiReply::ok() });
        }
    });
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();

    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "a_process_of_another_user_is_refused", "--nocapture", "--test-threads", "1"])
        .env(CLIENT_ENV, &path)
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "client as nobody failed: {stdout} {}", String::from_utf8_lossy(&out.stderr));
    // The harness prints the test's name on the same line before the reply.
    let reply = stdout.lines().find_map(|l| l.find("{\"ok\"").map(|at| &l[at..])).unwrap_or_default();
    assert!(reply.contains("\"ok\":false") && reply.contains("permission denied: uid 65534"), "{stdout}");
    assert!(!reply.contains("running"), "the machine answered another user: {reply}");

    // The owner is still served.
    let conn = UnixStream::connect(&path).unwrap();
    (&conn).write_all(b"{\"command\":\"info\"}\n").unwrap();
    let mut line = String::new();
    BufReader::new(conn).read_line(&mut line).unwrap();
    assert!(line.contains("\"ok\":true") && line.contains("running"), "{line}");
}
