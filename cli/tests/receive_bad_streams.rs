//! `tern receive` against garbage, truncated, replayed and version-mismatched streams:
//! each ends the receiver with a clear error and a non-zero exit, never a panic, and
//! before any guest exists (so these run on any host with /dev/kvm).

use std::io::Write;
use std::net::TcpStream;

use migration::messages::{Hello, Message};

mod common;

use common::{assert_clean_failure, start_receiver};

/// Feeds `bytes`, closes, and returns (exit code, rest of stderr).
fn feed(bytes: &[u8]) -> (i32, String) {
    let r = start_receiver(&[]);
    let mut conn = TcpStream::connect(("127.0.0.1", r.port)).unwrap();
    conn.write_all(bytes).unwrap();
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    r.finish()
}

fn frame(m: &Message) -> Vec<u8> {
    let mut v = Vec::new();
    m.send(&mut v).unwrap();
    v
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
