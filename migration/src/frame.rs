//! Framing: every message is `[kind: u8][length: u32 LE][payload]`. Lengths are bounded
//! so a corrupt or hostile stream cannot make the receiver allocate without limit.

use std::io::{self, Read, Write};

/// Largest payload accepted (a page batch of 1024 full pages is ~4.2 MiB; state blobs
/// are far smaller).
pub const MAX_PAYLOAD: u32 = 64 << 20;

/// Message kinds on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Hello = 1,
    Config = 2,
    Pages = 3,
    RoundDone = 4,
    State = 5,
    HandOver = 6,
    Ack = 7,
    Error = 8,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Hello,
            2 => Kind::Config,
            3 => Kind::Pages,
            4 => Kind::RoundDone,
            5 => Kind::State,
            6 => Kind::HandOver,
            7 => Kind::Ack,
            8 => Kind::Error,
            _ => return None,
        })
    }
}

/// Errors reading or writing frames.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection: {0}")]
    Io(#[from] io::Error),
    #[error("the peer closed the connection")]
    Closed,
    #[error("unknown message kind {0} (corrupt stream or different protocol)")]
    UnknownKind(u8),
    #[error("the peer speaks TLS and this side does not (give both sides --tls-dir)")]
    TlsPeer,
    #[error("message of {0} bytes exceeds the {MAX_PAYLOAD}-byte limit (corrupt stream)")]
    TooLarge(u32),
}

/// Writes one frame.
pub fn write_frame(w: &mut impl Write, kind: Kind, payload: &[u8]) -> Result<(), FrameError> {
    write_frame_parts(w, kind, &[payload])
}

/// Writes one frame whose payload is the concatenation of `parts` (no copy into one
/// buffer first).
pub fn write_frame_parts(w: &mut impl Write, kind: Kind, parts: &[&[u8]]) -> Result<(), FrameError> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let len = u32::try_from(total).ok().filter(|l| *l <= MAX_PAYLOAD).ok_or(FrameError::TooLarge(u32::MAX))?;
    let mut header = [0u8; 5];
    header[0] = kind as u8;
    header[1..].copy_from_slice(&len.to_le_bytes());
    w.write_all(&header)?;
    for p in parts {
        w.write_all(p)?;
    }
    Ok(())
}

/// Reads one frame into `buf` (reused between calls); returns its kind.
pub fn read_frame(r: &mut impl Read, buf: &mut Vec<u8>) -> Result<Kind, FrameError> {
    let mut header = [0u8; 5];
    if let Err(e) = r.read_exact(&mut header) {
        return Err(if e.kind() == io::ErrorKind::UnexpectedEof { FrameError::Closed } else { FrameError::Io(e) });
    }
    // A TLS record starts with its content type (21 alert, 22 handshake) and version 3.x.
    if matches!(header[0], 0x15 | 0x16) && header[1] == 3 {
        return Err(FrameError::TlsPeer);
    }
    let kind = Kind::from_u8(header[0]).ok_or(FrameError::UnknownKind(header[0]))?;
    let len = u32::from_le_bytes([header[1], header[2], header[3], header[4]]);
    if len > MAX_PAYLOAD {
        return Err(FrameError::TooLarge(len));
    }
    // The buffer grows as bytes arrive: a header alone cannot make this side allocate
    // the length it claims.
    buf.clear();
    let got = r.take(u64::from(len)).read_to_end(buf).map_err(FrameError::Io)?;
    if got != len as usize {
        return Err(FrameError::Closed);
    }
    Ok(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut wire = Vec::new();
        write_frame(&mut wire, Kind::State, b"abc").unwrap();
        write_frame(&mut wire, Kind::Ack, b"").unwrap();
        let mut r = &wire[..];
        let mut buf = Vec::new();
        assert_eq!(read_frame(&mut r, &mut buf).unwrap(), Kind::State);
        assert_eq!(buf, b"abc");
        assert_eq!(read_frame(&mut r, &mut buf).unwrap(), Kind::Ack);
        assert!(buf.is_empty());
        assert!(matches!(read_frame(&mut r, &mut buf), Err(FrameError::Closed)));
    }

    #[test]
    fn corrupt_headers_are_refused() {
        let mut buf = Vec::new();
        assert!(matches!(read_frame(&mut &[99u8, 0, 0, 0, 0][..], &mut buf), Err(FrameError::UnknownKind(99))));
        // A TLS ClientHello sent to a plaintext receiver.
        assert!(matches!(read_frame(&mut &[0x16u8, 3, 1, 0, 200][..], &mut buf), Err(FrameError::TlsPeer)));
        assert!(matches!(read_frame(&mut &[1u8, 0xff, 0xff, 0xff, 0xff][..], &mut buf), Err(FrameError::TooLarge(_))));
        // Truncated payload.
        assert!(matches!(read_frame(&mut &[1u8, 10, 0, 0, 0, 1, 2][..], &mut buf), Err(FrameError::Closed)));
        // A header claiming the maximum, then nothing: no 64 MiB buffer for it.
        let mut small = Vec::new();
        let mut claim = vec![3u8];
        claim.extend_from_slice(&MAX_PAYLOAD.to_le_bytes());
        assert!(matches!(read_frame(&mut &claim[..], &mut small), Err(FrameError::Closed)));
        assert!(small.capacity() < 1 << 20, "allocated {} bytes for an empty frame", small.capacity());
        // Truncated header.
        assert!(matches!(read_frame(&mut &[1u8, 10][..], &mut buf), Err(FrameError::Closed)));
    }
}
