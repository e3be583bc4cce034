//! systemd's readiness protocol (`Type=notify` units): when `$NOTIFY_SOCKET` names a
//! Unix datagram socket (a path, or `@name` in the abstract namespace), tern sends it
//! `READY=1` once the VM is up (`tern run`, `tern receive`: its control socket serves
//! and the vCPUs are starting; `tern listen`: it accepts connections). Without the
//! variable nothing is sent.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The variable systemd sets for a notify service.
const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Tells systemd the service is ready, with a status line. Failures are logged, never
/// fatal: the VM runs whether or not anyone listens.
pub fn ready(status: &str) {
    if let Err(e) = notify(&format!("READY=1\nSTATUS={status}")) {
        tracing::warn!("cannot notify systemd of readiness through ${NOTIFY_SOCKET}: {e}");
    }
}

/// Sends `message` to `$NOTIFY_SOCKET`, if set.
fn notify(message: &str) -> io::Result<()> {
    let Some(path) = std::env::var_os(NOTIFY_SOCKET) else {
        return Ok(());
    };
    let path = path.into_encoded_bytes();
    let addr = match path.split_first() {
        Some((b'@', name)) => SocketAddr::from_abstract_name(name)?,
        Some((b'/', _)) => SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(&path))?,
        _ => return Err(io::Error::other("not an absolute path or @abstract name")),
    };
    let socket = UnixDatagram::unbound()?;
    socket.send_to_addr(message.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_reaches_the_socket_the_variable_names() {
        let dir = std::env::temp_dir().join(format!("tern-notify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        // The environment is the process's: this test alone sets the variable.
        std::env::set_var(NOTIFY_SOCKET, &path);
        ready("VM vm1 running");
        let mut buf = [0u8; 256];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=VM vm1 running");
        // An abstract name.
        let name = format!("tern-notify-test-{}", std::process::id());
        let abstract_receiver =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        std::env::set_var(NOTIFY_SOCKET, format!("@{name}"));
        notify("READY=1").unwrap();
        let n = abstract_receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        std::env::set_var(NOTIFY_SOCKET, "relative");
        assert!(notify("READY=1").is_err());
        std::env::remove_var(NOTIFY_SOCKET);
        assert!(notify("READY=1").is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
