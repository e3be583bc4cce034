//! `tern receive` against garbage, truncated, replayed and version-mismatched streams:
//! each ends the receiver with a clear error and a non-zero exit, never a panic, and
//! before any guest exists (so these run on any host with /dev/kvm).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use migration::messages::{Hello, Message};

struct Receiver {
    child: Child,
    port: u16,
    stderr: BufReader<std::process::ChildStderr>,
}

fn start_receiver() -> Receiver {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["receive", "--listen", "127.0.0.1:0", "--serial", "null", "--allow-emulated-kvm"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tern receive");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("tern receive did not say where it listens: {line:?}"));
    Receiver { child, port, stderr }
}

/// Feeds `bytes`, closes, and returns (exit code, rest of stderr).
fn feed(bytes: &[u8]) -> (i32, String) {
    let mut r = start_receiver();
    let mut conn = TcpStream::connect(("127.0.0.1", r.port)).unwrap();
    conn.write_all(bytes).unwrap();
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = r.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "tern receive did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut rest = String::new();
    for line in r.stderr.lines() {
        rest.push_str(&line.unwrap());
        rest.push('\n');
    }
    (status.code().unwrap_or(-1), rest)
}

fn frame(m: &Message) -> Vec<u8> {
    let mut v = Vec::new();
    m.send(&mut v).unwrap();
    v
}

fn assert_clean_failure(code: i32, stderr: &str, expect: &str) {
    assert_ne!(code, 0, "tern receive succeeded on a bad stream: {stderr}");
    assert!(stderr.contains("tern: error: incoming migration failed"), "{stderr}");
    assert!(stderr.contains(expect), "expected `{expect}` in: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.lines().filter(|l| l.starts_with("tern: error")).count(), 1, "one error line: {stderr}");
}

#[test]
fn garbage_is_refused() {
    let (code, err) = feed(b"GET / HTTP/1.1\r\nHost: tern\r\n\r\n");
    assert_clean_failure(code, &err, "unknown message kind");
}

#[test]
fn truncated_stream_is_refused() {
    let hello = frame(&Message::Hello(Hello::current()));
    let (code, err) = feed(&hello[..hello.len() - 3]);
    assert_clean_failure(code, &err, "closed the connection");
}

#[test]
fn version_mismatch_is_refused() {
    let (code, err) = feed(&frame(&Message::Hello(Hello { version: 99, ..Hello::current() })));
    assert_clean_failure(code, &err, "protocol version 99");
}

#[test]
fn replayed_hello_is_refused() {
    let mut stream = frame(&Message::Hello(Hello::current()));
    stream.extend(frame(&Message::Hello(Hello::current())));
    let (code, err) = feed(&stream);
    assert_clean_failure(code, &err, "out-of-order message: got hello while expecting config");
}
