//! `tern receive` as a trust boundary: who may connect and what it may send. Each case
//! ends the receiver with one clear error line and a non-zero exit, before any guest
//! memory exists (so these run on any host with /dev/kvm). Certificates come from
//! tests/tls/make-test-certs.sh (README's openssl recipe); openssl must be installed
//! (resources/install-host-packages.sh installs it).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use migration::messages::{ack, AckStage, Hello, Message, VmDescription};
use vmm::migrate::tls::TlsIdentity;
use vmm::migrate::transport::Conn;

/// The test certificates, made once per test binary.
fn certs() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("tern-tls-certs-{}", std::process::id()));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/tls/make-test-certs.sh");
        let out = Command::new("sh").arg(&script).arg(&dir).output().expect("run make-test-certs.sh");
        assert!(out.status.success(), "make-test-certs.sh failed (is openssl installed?): {}", String::from_utf8_lossy(&out.stderr));
        dir
    })
}

mod common;

use common::{assert_clean_failure, start_receiver};

fn tls_client(port: u16, identity: &str) -> Result<Conn, String> {
    let id = TlsIdentity::load(&certs().join(identity)).map_err(|e| e.to_string())?;
    let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    Conn::client(sock, &format!("127.0.0.1:{port}"), id.client_config().map_err(|e| e.to_string())?).map_err(|e| e.to_string())
}

fn send(conn: &mut impl Write, m: &Message) {
    m.send(conn).unwrap();
    conn.flush().unwrap();
}

fn receive(conn: &mut impl Read) -> Result<Message, String> {
    Message::receive(conn, &mut Vec::new()).map_err(|e| e.to_string())
}

fn description(memory_bytes: u64, cpus: u8) -> VmDescription {
    VmDescription { version: migration::PROTOCOL_VERSION, memory_bytes, cpus, cpuid: Vec::new(), devices: Vec::new(), boot: None }
}

fn tls_dir_args(identity: &str) -> Vec<String> {
    vec!["--tls-dir".into(), certs().join(identity).display().to_string()]
}

#[test]
fn non_loopback_listener_needs_tls_or_an_explicit_no_tls() {
    let out = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["receive", "--listen", "0.0.0.0:0", "--serial", "null", "--allow-emulated-kvm"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("--tls-dir") && err.contains("--no-tls"), "{err}");
    // With --no-tls it warns, then listens.
    let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["receive", "--listen", "0.0.0.0:0", "--serial", "null", "--allow-emulated-kvm", "--no-tls"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let (mut first, mut second) = (String::new(), String::new());
    stderr.read_line(&mut first).unwrap();
    stderr.read_line(&mut second).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(first.contains("warning") && first.contains("unauthenticated"), "{first}");
    assert!(second.contains("waiting for an incoming migration") && second.contains("plaintext"), "{second}");
}

#[test]
fn an_authenticated_source_is_heard_and_a_hostile_config_refused_before_allocation() {
    let r = start_receiver(&tls_dir_args("dest").iter().map(String::as_str).collect::<Vec<_>>());
    let mut conn = tls_client(r.port, "source").expect("mutual TLS handshake with a certificate of the same CA");
    send(&mut conn, &Message::Hello(Hello::current()));
    assert_eq!(receive(&mut conn), Ok(ack(AckStage::Hello)));
    // 64 TiB and 254 vCPUs: refused at the check, before a machine is built.
    send(&mut conn, &Message::Config(description(64 << 40, 254)));
    let reply = receive(&mut conn).map(|m| format!("{m:?}")).unwrap_or_else(|e| e);
    assert!(reply.contains("more than this host's"), "{reply}");
    let (code, err) = r.finish();
    assert_clean_failure(code, &err, "more than this host's");
}

#[test]
fn a_source_from_another_ca_is_refused() {
    let r = start_receiver(&tls_dir_args("dest").iter().map(String::as_str).collect::<Vec<_>>());
    // The rogue source does not trust the destination's CA either: it refuses first.
    let e = tls_client(r.port, "rogue").err().expect("a rogue source cannot verify the destination");
    assert!(e.contains("not signed by this host's CA"), "{e}");
    let (code, err) = r.finish();
    assert_clean_failure(code, &err, "TLS handshake");

    // A rogue source that trusts the destination's CA but has its own certificate.
    let r = start_receiver(&tls_dir_args("dest").iter().map(String::as_str).collect::<Vec<_>>());
    let mixed = std::env::temp_dir().join(format!("tern-tls-mixed-{}", std::process::id()));
    std::fs::create_dir_all(&mixed).unwrap();
    std::fs::copy(certs().join("dest/ca.pem"), mixed.join("ca.pem")).unwrap();
    std::fs::copy(certs().join("rogue/cert.pem"), mixed.join("cert.pem")).unwrap();
    std::fs::copy(certs().join("rogue/key.pem"), mixed.join("key.pem")).unwrap();
    let id = TlsIdentity::load(&mixed).unwrap();
    let sock = TcpStream::connect(("127.0.0.1", r.port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // TLS 1.3: the client finishes its side; the server's refusal arrives as an alert.
    if let Ok(mut conn) = Conn::client(sock, &format!("127.0.0.1:{}", r.port), id.client_config().unwrap()) {
        let _ = Message::Hello(Hello::current()).send(&mut conn);
        let _ = conn.flush();
        assert!(receive(&mut conn).is_err(), "the destination answered a source of another CA");
    }
    let (code, err) = r.finish();
    assert_clean_failure(code, &err, "TLS handshake");
    assert!(err.contains("certificate") || err.contains("UnknownIssuer"), "{err}");
}

#[test]
fn a_plaintext_source_to_a_tls_receiver_is_refused() {
    let r = start_receiver(&tls_dir_args("dest").iter().map(String::as_str).collect::<Vec<_>>());
    let mut conn = TcpStream::connect(("127.0.0.1", r.port)).unwrap();
    send(&mut conn, &Message::Hello(Hello::current()));
    let (code, err) = r.finish();
    assert_clean_failure(code, &err, "does not speak TLS");
}

#[test]
fn a_tls_source_to_a_plaintext_receiver_is_told_why() {
    let r = start_receiver(&[]);
    let e = tls_client(r.port, "source").err().expect("no TLS handshake with a plaintext receiver");
    assert!(e.contains("TLS handshake"), "{e}");
    let (code, err) = r.finish();
    assert_clean_failure(code, &err, "the peer speaks TLS and this side does not");
}

#[test]
fn a_stalled_source_is_given_up() {
    let r = start_receiver(&["--timeout", "1"]);
    let conn = TcpStream::connect(("127.0.0.1", r.port)).unwrap();
    let t = Instant::now();
    let (code, err) = r.finish();
    drop(conn);
    assert_clean_failure(code, &err, "sent nothing for 1 s");
    assert!(t.elapsed() < Duration::from_secs(20), "took {:?}", t.elapsed());
}

#[test]
fn a_receiver_refuses_more_memory_than_its_flag() {
    let r = start_receiver(&["--memory", "512M"]);
    let mut conn = TcpStream::connect(("127.0.0.1", r.port)).unwrap();
    send(&mut conn, &Message::Hello(Hello::current()));
    assert_eq!(receive(&mut conn), Ok(ack(AckStage::Hello)));
    send(&mut conn, &Message::Config(description(768 << 20, 1)));
    let reply = receive(&mut conn).map(|m| format!("{m:?}")).unwrap_or_else(|e| e);
    assert!(reply.contains("768 MiB") && reply.contains("--memory 512 MiB"), "{reply}");
    let (code, err) = r.finish();
    assert_clean_failure(code, &err, "more than --memory 512 MiB");
}

#[test]
fn a_hand_over_before_a_restored_state_is_refused() {
    let r = start_receiver(&[]);
    let mut conn = TcpStream::connect(("127.0.0.1", r.port)).unwrap();
    send(&mut conn, &Message::Hello(Hello::current()));
    assert_eq!(receive(&mut conn), Ok(ack(AckStage::Hello)));
    send(&mut conn, &Message::Config(description(64 << 20, 1)));
    match receive(&mut conn) {
        Ok(m) if m == ack(AckStage::Config) => {}
        other => panic!("a small, plain guest was not accepted: {other:?}"),
    }
    send(&mut conn, &Message::HandOver(migration::messages::HandOver { version: migration::PROTOCOL_VERSION }));
    let (code, err) = r.finish();
    assert_clean_failure(code, &err, "out-of-order message: got hand-over while expecting pages, round-done or state");
}
