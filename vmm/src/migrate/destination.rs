//! The destination side: accept one source (mutual TLS when configured), check what it
//! describes against this side's flags, devices and host before allocating anything,
//! receive memory and state in the protocol's order, take the disks at the hand-over,
//! resume the guest and tell the source it may exit. Anything wrong: tell the source
//! why, stop.

use std::io::{self, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use devices::sync::lock;
use kvm_ioctls::Kvm;
use migration::frame::{read_frame, FrameError, Kind};
use migration::messages::{self, AckStage, Message, ProtocolError, VmDescription};
use migration::pages::PageBatchView;
use migration::receiver::ReceiverProtocol;

pub use super::admission::Expectations;
use super::admission;
use super::guest_pages;
use super::transport::Conn;
use super::MigrateError;
use crate::machine::Machine;
use crate::state::{self, MachineState};

/// How long a source may stay silent before it is called stalled (`--timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How `tern receive` accepts a migration.
#[derive(Clone)]
pub struct ReceiveOptions {
    /// Limits from the flags.
    pub expect: Expectations,
    /// This side's device descriptions, in slot order (the source's must match).
    pub local_devices: Vec<String>,
    /// Mutual TLS; `None`: plaintext (loopback or `--no-tls`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Longest silence from the source (every read, the handshake included).
    pub timeout: Duration,
}

impl Default for ReceiveOptions {
    fn default() -> Self {
        Self { expect: Expectations::default(), local_devices: Vec::new(), tls: None, timeout: DEFAULT_TIMEOUT }
    }
}

/// Binds the listening socket (so the caller can report the address before waiting).
pub fn listen(addr: &str) -> Result<TcpListener, MigrateError> {
    TcpListener::bind(addr).map_err(|source| MigrateError::Listen { addr: addr.to_string(), source })
}

/// Whether `addr` is a loopback address (plaintext stays on this host there).
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// Accepts one migration on `listener`, which is closed once the source connected
/// (one source per receive). `build` makes the machine for the source's description
/// (with this side's devices and serial); it is called once, after the description
/// passed every check. Returns the running machine, or why the migration failed (the
/// source has been told when it can still hear).
pub fn receive(
    listener: TcpListener,
    options: &ReceiveOptions,
    build: impl FnOnce(&VmDescription) -> Result<Machine, String>,
) -> Result<Machine, MigrateError> {
    let (stream, peer) = listener.accept()?;
    drop(listener);
    tracing::info!(%peer, tls = options.tls.is_some(), "incoming migration");
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(options.timeout))?;
    let conn = match &options.tls {
        Some(config) => Conn::server(stream, &peer.to_string(), config.clone()).map_err(|e| MigrateError::Tls(e.to_string()))?,
        None => Conn::Plain(stream),
    };
    let mut reader = BufReader::with_capacity(1 << 20, conn);
    let result = serve(&mut reader, options, build);
    if let Err(e) = &result {
        // Best effort: the source may already be gone.
        let w = reader.get_mut();
        // The source prefixes a refusal with "destination refused" itself.
        let reason = match e {
            MigrateError::Refused(reason) => reason.clone(),
            other => other.to_string(),
        };
        let _ = messages::error(reason).send(w);
        let _ = w.flush();
    }
    result
}

fn send(r: &mut BufReader<Conn>, m: Message) -> Result<(), MigrateError> {
    let w = r.get_mut();
    m.send(w)?;
    w.flush()?;
    Ok(())
}

/// Reads the next frame, checks its place in the protocol, and names a stalled source.
fn next_frame(r: &mut BufReader<Conn>, buf: &mut Vec<u8>, protocol: &mut ReceiverProtocol, timeout: Duration) -> Result<Kind, MigrateError> {
    let kind = read_frame(r, buf).map_err(|e| match e {
        FrameError::Io(io) if matches!(io.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
            MigrateError::Stalled(timeout.as_secs())
        }
        FrameError::Io(io) if r.get_ref().is_tls() => MigrateError::Tls(format!("TLS: {}", super::transport::explain(&io))),
        other => MigrateError::Protocol(ProtocolError::from(other)),
    })?;
    protocol.accept(kind).map_err(|e| MigrateError::Protocol(ProtocolError::OutOfOrder(e)))?;
    Ok(kind)
}

fn serve(
    r: &mut BufReader<Conn>,
    options: &ReceiveOptions,
    build: impl FnOnce(&VmDescription) -> Result<Machine, String>,
) -> Result<Machine, MigrateError> {
    let mut buf = Vec::new();
    let mut protocol = ReceiverProtocol::new();
    let timeout = options.timeout;
    let decode = |kind, buf: &[u8]| -> Result<Message, MigrateError> {
        match Message::decode(kind, buf)? {
            Message::Error(e) => Err(MigrateError::Refused(format!("the source gave up: {}", e.reason))),
            m => Ok(m),
        }
    };

    let kind = next_frame(r, &mut buf, &mut protocol, timeout)?;
    decode(kind, &buf)?;
    send(r, messages::ack(AckStage::Hello))?;

    let kind = next_frame(r, &mut buf, &mut protocol, timeout)?;
    let Message::Config(desc) = decode(kind, &buf)? else {
        return Err(MigrateError::Protocol(ProtocolError::Unexpected { expected: "config", got: "another message" }));
    };
    // Everything about the description is checked before anything is allocated.
    let kvm = Kvm::new().map_err(|e| MigrateError::Refused(format!("cannot open /dev/kvm: {e}")))?;
    admission::check(&desc, &options.expect, &options.local_devices, &kvm).map_err(MigrateError::Refused)?;
    let mut machine = build(&desc).map_err(MigrateError::Refused)?;
    send(r, messages::ack(AckStage::Config))?;

    let mem = machine.guest_memory().clone();
    let zero = vec![0u8; migration::PAGE_SIZE];
    loop {
        let kind = next_frame(r, &mut buf, &mut protocol, timeout)?;
        if kind == Kind::Pages {
            // Pages go from the network buffer straight into guest memory.
            let batch = PageBatchView::parse(&buf).map_err(ProtocolError::from)?;
            for (gpa, data) in batch.iter() {
                // Fresh memory is zero already; later rounds may zero a page again.
                let bytes = match data {
                    Some(d) => d,
                    None if batch.round == 0 => continue,
                    None => &zero[..],
                };
                guest_pages::write_page(&mem, gpa, bytes)
                    .map_err(|e| MigrateError::Memory(format!("page from the source is outside guest memory: {e}")))?;
            }
            continue;
        }
        match decode(kind, &buf)? {
            Message::RoundDone(done) => tracing::debug!(round = done.round, pages = done.pages, "round received"),
            Message::State(bytes) => {
                let machine_state = MachineState::decode(&bytes)?;
                state::restore(machine.parts(), &machine_state)?;
                send(r, messages::ack(AckStage::Restored))?;
            }
            Message::HandOver(_) => {
                for device in &machine.parts().virtio {
                    lock(device).device_mut().acquire_backend().map_err(|e| MigrateError::Device(e.to_string()))?;
                }
                machine.start().map_err(|e| MigrateError::Device(format!("starting vCPUs: {e}")))?;
                for device in &machine.parts().virtio {
                    lock(device).device_mut().after_migration();
                }
                send(r, messages::ack(AckStage::Resumed))?;
                return Ok(machine);
            }
            // The protocol state machine admits nothing else here.
            other => return Err(MigrateError::Protocol(ProtocolError::Unexpected { expected: "pages, state or hand-over", got: other.name() })),
        }
    }
}
