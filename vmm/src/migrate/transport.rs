//! The migration connection: plain TCP or mutual TLS over TCP, one stream type for
//! both sides. Each side uses the connection from one thread, alternately writing and
//! reading, so one object carries both directions (a TLS session cannot be split).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::ops::DerefMut;
use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection, StreamOwned};

use super::tls::{self, TlsError};

/// Why a connection could not be secured.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("TLS handshake with {peer} failed: {reason}")]
    Handshake { peer: String, reason: String },
}

/// A migration connection.
pub enum Conn {
    Plain(TcpStream),
    Client(Box<StreamOwned<ClientConnection, TcpStream>>),
    Server(Box<StreamOwned<ServerConnection, TcpStream>>),
}

impl Conn {
    /// The TCP socket underneath (for timeouts and options).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Client(s) => &s.sock,
            Conn::Server(s) => &s.sock,
        }
    }

    /// Sets the read timeout of the socket: a peer that sends nothing for this long is
    /// a stalled peer.
    pub fn set_read_timeout(&self, timeout: Duration) -> io::Result<()> {
        self.tcp().set_read_timeout(Some(timeout))
    }

    /// Whether the connection is encrypted and authenticated.
    pub fn is_tls(&self) -> bool {
        !matches!(self, Conn::Plain(_))
    }

    /// The source's side: TLS client to `to`, verifying the destination's certificate
    /// against the host in `to`. The socket's read timeout bounds the handshake.
    pub fn client(sock: TcpStream, to: &str, config: Arc<ClientConfig>) -> Result<Conn, TransportError> {
        let name = tls::server_name(to)?;
        let handshake = |reason: String| TransportError::Handshake { peer: to.to_string(), reason };
        let session = ClientConnection::new(config, name).map_err(|e| handshake(e.to_string()))?;
        let mut stream = StreamOwned::new(session, sock);
        complete_handshake(stream.conn.deref_mut(), &mut stream.sock).map_err(|e| handshake(explain(&e)))?;
        Ok(Conn::Client(Box::new(stream)))
    }

    /// The destination's side: TLS server requiring a client certificate from the CA.
    pub fn server(sock: TcpStream, peer: &str, config: Arc<ServerConfig>) -> Result<Conn, TransportError> {
        let handshake = |reason: String| TransportError::Handshake { peer: peer.to_string(), reason };
        let session = ServerConnection::new(config).map_err(|e| handshake(e.to_string()))?;
        let mut stream = StreamOwned::new(session, sock);
        complete_handshake(stream.conn.deref_mut(), &mut stream.sock).map_err(|e| handshake(explain(&e)))?;
        Ok(Conn::Server(Box::new(stream)))
    }
}

/// Drives a TLS handshake to its end (both certificates verified) before any protocol
/// byte is exchanged, so a refused peer is refused up front with the reason.
fn complete_handshake<D>(conn: &mut rustls::ConnectionCommon<D>, sock: &mut TcpStream) -> io::Result<()> {
    while conn.is_handshaking() {
        let (read, wrote) = conn.complete_io(sock)?;
        if read == 0 && wrote == 0 && conn.is_handshaking() {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the peer closed the connection during the handshake"));
        }
    }
    // Flush what the handshake left to send (the client's Finished).
    while conn.wants_write() {
        conn.write_tls(sock)?;
    }
    Ok(())
}

/// A read or write failure on an established TLS connection, as one line.
pub fn stream_failure(e: &io::Error) -> String {
    format!("TLS: {}", explain(e))
}

/// An error on a TLS connection as one line, with a hint for the usual causes.
pub fn explain(e: &io::Error) -> String {
    let text = e.to_string();
    let hint = if text.contains("InvalidContentType") || text.contains("corrupt message") {
        " (the peer does not speak TLS: use --tls-dir on both sides)"
    } else if text.contains("UnknownIssuer") || text.contains("BadSignature") {
        " (its certificate is not signed by this host's CA)"
    } else if text.contains("alert") && (text.contains("UnknownCA") || text.contains("BadCertificate") || text.contains("CertificateRequired")) {
        " (the peer refused this host's certificate: not signed by its CA)"
    } else if text.contains("NotValidForName") {
        " (its certificate does not name the address dialled)"
    } else if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) {
        " (no answer: timed out)"
    } else {
        ""
    };
    format!("{text}{hint}")
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Client(s) => s.read(buf),
            Conn::Server(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Client(s) => s.write(buf),
            Conn::Server(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Client(s) => s.flush(),
            Conn::Server(s) => s.flush(),
        }
    }
}
