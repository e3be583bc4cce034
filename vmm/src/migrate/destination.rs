//! The destination side: accept one source (mutual TLS when configured), check what it
//! describes against this side's flags, devices and host before allocating anything,
//! receive memory and state in the protocol's order, take the disks at the hand-over,
//! resume the guest and tell the source it may exit. Anything wrong: tell the source
//! why, stop.

use std::io::{self, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use devices::sync::lock;
use migration::frame::{read_frame, FrameError, Kind};
use migration::messages::{self, AckDetail, AckStage, Message, ProtocolError, StepTimes, DESTINATION_FEATURES, FEATURE_ROUND_ACKS};
/// What `receive_connection`'s callers are handed: the hello and the description.
pub use migration::messages::{Hello, VmDescription};
use migration::pages::PageBatchView;
use migration::receiver::ReceiverProtocol;

pub use super::admission::Expectations;
use super::admission;
use super::guest_pages;
use super::transport::Conn;
use super::MigrateError;
use crate::machine::Machine;
use crate::memory::GuestMemoryMmap;
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

/// What the destination needs once the source said hello (and, with it, which VM it
/// sends): the limits, this side's device descriptions (in slot order), and how to
/// build the machine for the source's description.
pub struct Prepared<B> {
    /// Limits the description must fit.
    pub expect: Expectations,
    /// This side's device descriptions (the source's must match).
    pub local_devices: Vec<String>,
    /// Makes the machine; called once, after the description passed every check.
    pub build: B,
}

/// Binds the listening socket (so the caller can report the address before waiting).
pub fn listen(addr: &str) -> Result<TcpListener, MigrateError> {
    TcpListener::bind(addr).map_err(|source| MigrateError::Listen { addr: addr.to_string(), source })
}

/// Accepts one migration on `listener`, which is closed once the source connected
/// (one source per receive). `build` makes the machine for the source's description
/// (with this side's devices and serial); it is called once, after the description
/// passed every check. Returns the running machine, or why the migration failed (the
/// source has been told when it can still hear).
///
/// The source's bytes are read on their own thread, `migration-in`, confined to its
/// seccomp class before the first byte (TLS handshake included): it decodes the
/// stream, keeps the protocol's order and writes pages into guest memory; this thread
/// checks the description, builds the machine, restores the decoded state and takes
/// the devices over, on what the reader hands it.
pub fn receive(
    listener: TcpListener,
    options: &ReceiveOptions,
    build: impl FnOnce(&VmDescription) -> Result<Machine, String>,
) -> Result<Machine, MigrateError> {
    let (stream, _) = listener.accept()?;
    drop(listener);
    let prepared = Prepared { expect: options.expect.clone(), local_devices: options.local_devices.clone(), build };
    receive_connection(stream, options.tls.clone(), options.timeout, |_| Ok(prepared))
}

/// Receives one migration on an accepted connection (`tern listen` hands each one to
/// its own `tern receive`). `prepare` is called with the source's hello, before it is
/// acknowledged: it decides whether this side takes the VM the hello names and says
/// with what (a refusal is the source's one line); the rest is as [`receive`].
pub fn receive_connection<B>(
    stream: TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
    timeout: Duration,
    prepare: impl FnOnce(&Hello) -> Result<Prepared<B>, String>,
) -> Result<Machine, MigrateError>
where
    B: FnOnce(&VmDescription) -> Result<Machine, String>,
{
    let peer = stream.peer_addr()?;
    tracing::info!(%peer, tls = tls.is_some(), "incoming migration");
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(timeout))?;
    let (to_owner, from_reader) = channel();
    let (to_reader, from_owner) = channel();
    let reader = std::thread::Builder::new()
        .name("migration-in".into())
        .spawn(move || read_source(stream, peer.to_string(), tls, timeout, to_owner, from_owner))?;
    let result = own(prepare, &from_reader, &to_reader);
    if let Err(e) = &result {
        // The reader tells the source (if it can still hear) and ends.
        let _ = to_reader.send(OwnerSays::Refused(refusal_text(e)));
    }
    drop(to_reader);
    let _ = reader.join();
    result
}

/// What the reader hands the machine's owner, in protocol order.
enum ReaderSays {
    /// The source's hello (not yet acknowledged).
    Hello(Hello),
    /// The source's description (hello acknowledged).
    Described(VmDescription),
    /// The decoded machine state (all pages written).
    State(Box<MachineState>),
    /// The source has released its disks and TAPs.
    HandOver,
    /// The stream failed or broke the protocol (the source has been told).
    Failed(MigrateError),
}

/// What the owner answers.
enum OwnerSays {
    /// This side takes the VM the hello names: acknowledge.
    Welcome,
    /// The description fits and the machine is built: acknowledge, take pages into it.
    Accepted(GuestMemoryMmap),
    /// The state is restored: acknowledge (with what it cost).
    Restored(StepTimes),
    /// The guest runs here: acknowledge (with what it cost); the migration is over.
    Resumed(StepTimes),
    /// Refused or failed here: tell the source and stop.
    Refused(String),
}

/// A failure as the source should hear it (it prefixes a refusal with "destination
/// refused" itself).
fn refusal_text(e: &MigrateError) -> String {
    match e {
        MigrateError::Refused(reason) => reason.clone(),
        other => other.to_string(),
    }
}

/// The owner's side: every decision and every KVM or device operation.
fn own<B>(
    prepare: impl FnOnce(&Hello) -> Result<Prepared<B>, String>,
    from_reader: &Receiver<ReaderSays>,
    to_reader: &Sender<OwnerSays>,
) -> Result<Machine, MigrateError>
where
    B: FnOnce(&VmDescription) -> Result<Machine, String>,
{
    let next = || match from_reader.recv() {
        Ok(ReaderSays::Failed(e)) => Err(e),
        Ok(said) => Ok(said),
        Err(_) => Err(MigrateError::Device("the migration reader ended without a reason".into())),
    };
    let reader_gone = || MigrateError::Device("the migration reader ended".into());
    let ReaderSays::Hello(hello) = next()? else {
        return Err(MigrateError::Device("the reader skipped the hello".into()));
    };
    let Prepared { expect, local_devices, build } = prepare(&hello).map_err(MigrateError::Refused)?;
    to_reader.send(OwnerSays::Welcome).map_err(|_| reader_gone())?;
    let ReaderSays::Described(desc) = next()? else {
        return Err(MigrateError::Device("the reader skipped the description".into()));
    };
    // Everything about the description is checked before anything is allocated.
    admission::check_here(&desc, &expect, &local_devices).map_err(MigrateError::Refused)?;
    let mut machine = build(&desc).map_err(MigrateError::Refused)?;
    to_reader.send(OwnerSays::Accepted(machine.guest_memory().clone())).map_err(|_| reader_gone())?;
    loop {
        match next()? {
            ReaderSays::State(machine_state) => {
                let t = Instant::now();
                state::restore(machine.parts(), &machine_state)?;
                let times = StepTimes { restore_us: micros(t), ..Default::default() };
                to_reader.send(OwnerSays::Restored(times)).map_err(|_| reader_gone())?;
            }
            ReaderSays::HandOver => {
                let times = take_over(&mut machine)?;
                to_reader.send(OwnerSays::Resumed(times)).map_err(|_| reader_gone())?;
                return Ok(machine);
            }
            ReaderSays::Hello(_) | ReaderSays::Described(_) | ReaderSays::Failed(_) => {
                return Err(MigrateError::Device("the reader broke the protocol order".into()))
            }
        }
    }
}

/// Runs a machine whose state is restored: takes the disk locks and TAPs, starts the
/// vCPUs, lets the devices announce (virtio-net). A migration destination does it at
/// the hand-over, a snapshot restore at once. Returns what each step cost.
pub fn take_over(machine: &mut Machine) -> Result<StepTimes, MigrateError> {
    let mut times = StepTimes::default();
    let t = Instant::now();
    for device in &machine.parts().virtio {
        lock(device).device_mut().acquire_backend().map_err(|e| MigrateError::Device(e.to_string()))?;
    }
    times.take_over_us = micros(t);
    let t = Instant::now();
    machine.start().map_err(|e| MigrateError::Device(format!("starting vCPUs: {e}")))?;
    times.start_us = micros(t);
    let t = Instant::now();
    for device in &machine.parts().virtio {
        lock(device).device_mut().after_migration();
    }
    times.announce_us = micros(t);
    Ok(times)
}

/// Microseconds since `t` (saturating: a step never takes 71 minutes).
fn micros(t: Instant) -> u32 {
    micros_of(t.elapsed())
}

/// The reader thread: confines itself, then serves the stream; on a failure of its
/// own it tells the source and the owner.
fn read_source(
    stream: TcpStream,
    peer: String,
    tls: Option<Arc<rustls::ServerConfig>>,
    timeout: Duration,
    to_owner: Sender<ReaderSays>,
    from_owner: Receiver<OwnerSays>,
) {
    if let Err(e) = tern_seccomp::confine(tern_seccomp::ThreadClass::MigrationIncoming) {
        let _ = to_owner.send(ReaderSays::Failed(MigrateError::Device(format!("cannot confine the migration reader: {e}"))));
        return;
    }
    let conn = match tls {
        Some(config) => match Conn::server(stream, &peer, config) {
            Ok(conn) => conn,
            Err(e) => {
                let _ = to_owner.send(ReaderSays::Failed(MigrateError::Tls(e.to_string())));
                return;
            }
        },
        None => Conn::Plain(stream),
    };
    let mut r = BufReader::with_capacity(1 << 20, conn);
    match serve(&mut r, timeout, &to_owner, &from_owner) {
        Ok(()) => {}
        // The owner refused: the source hears its reason.
        Err(Stop::Owner(reason)) => tell_source(&mut r, reason),
        Err(Stop::Reader(e)) => {
            tell_source(&mut r, refusal_text(&e));
            let _ = to_owner.send(ReaderSays::Failed(e));
        }
    }
}

/// Best effort: the source may already be gone.
fn tell_source(r: &mut BufReader<Conn>, reason: String) {
    let w = r.get_mut();
    let _ = messages::error(reason).send(w);
    let _ = w.flush();
}

/// Why the reader stopped.
enum Stop {
    /// The owner refused or failed, with the reason for the source.
    Owner(String),
    /// The stream failed here.
    Reader(MigrateError),
}

impl From<MigrateError> for Stop {
    fn from(e: MigrateError) -> Self {
        Stop::Reader(e)
    }
}

impl From<ProtocolError> for Stop {
    fn from(e: ProtocolError) -> Self {
        Stop::Reader(MigrateError::Protocol(e))
    }
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
        FrameError::Io(io) if r.get_ref().is_tls() => MigrateError::Tls(super::transport::stream_failure(&io)),
        other => MigrateError::Protocol(ProtocolError::from(other)),
    })?;
    protocol.accept(kind).map_err(|e| MigrateError::Protocol(ProtocolError::OutOfOrder(e)))?;
    Ok(kind)
}

/// Hands `said` to the owner and waits for its answer.
fn ask(to_owner: &Sender<ReaderSays>, from_owner: &Receiver<OwnerSays>, said: ReaderSays) -> Result<OwnerSays, Stop> {
    if to_owner.send(said).is_err() {
        return Err(Stop::Owner("the destination stopped".into()));
    }
    match from_owner.recv() {
        Ok(OwnerSays::Refused(reason)) => Err(Stop::Owner(reason)),
        Ok(answer) => Ok(answer),
        Err(_) => Err(Stop::Owner("the destination stopped".into())),
    }
}

/// How a source is acknowledged: plain acks, or (when its hello asked) with
/// [`AckDetail`] and an ack per memory round.
struct Acks {
    detailed: bool,
}

impl Acks {
    fn ack(&self, stage: AckStage, times: StepTimes, detail: AckDetail) -> Message {
        if self.detailed {
            messages::ack_detailed(stage, times, detail)
        } else {
            messages::ack_with(stage, times)
        }
    }
}

/// Where the reader's time goes during a memory round.
#[derive(Clone, Copy, Default)]
struct RoundTimes {
    /// Reading frames after the round's first (waiting for bytes, TLS decryption,
    /// copying).
    read: Duration,
    /// Writing pages into guest memory.
    pages: Duration,
}

/// Microseconds of `d` (saturating).
fn micros_of(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

fn serve(r: &mut BufReader<Conn>, timeout: Duration, to_owner: &Sender<ReaderSays>, from_owner: &Receiver<OwnerSays>) -> Result<(), Stop> {
    let mut buf = Vec::new();
    let mut protocol = ReceiverProtocol::new();
    let decode = |kind, buf: &[u8]| -> Result<Message, MigrateError> {
        match Message::decode(kind, buf)? {
            Message::Error(e) => Err(MigrateError::Refused(format!("the source gave up: {}", e.reason))),
            m => Ok(m),
        }
    };

    let kind = next_frame(r, &mut buf, &mut protocol, timeout)?;
    let Message::Hello(hello) = decode(kind, &buf)? else {
        return Err(Stop::Reader(MigrateError::Protocol(ProtocolError::Unexpected { expected: "hello", got: "another message" })));
    };
    let acks = Acks { detailed: hello.features & FEATURE_ROUND_ACKS != 0 };
    let features = hello.features & DESTINATION_FEATURES;
    let OwnerSays::Welcome = ask(to_owner, from_owner, ReaderSays::Hello(hello))? else {
        return Err(Stop::Owner("the destination answered out of order".into()));
    };
    send(r, acks.ack(AckStage::Hello, StepTimes::default(), AckDetail { features, ..Default::default() }))?;

    let kind = next_frame(r, &mut buf, &mut protocol, timeout)?;
    let Message::Config(desc) = decode(kind, &buf)? else {
        return Err(Stop::Reader(MigrateError::Protocol(ProtocolError::Unexpected { expected: "config", got: "another message" })));
    };
    let OwnerSays::Accepted(mem) = ask(to_owner, from_owner, ReaderSays::Described(desc))? else {
        return Err(Stop::Owner("the destination answered out of order".into()));
    };
    send(r, acks.ack(AckStage::Config, StepTimes::default(), AckDetail::default()))?;

    let zero = vec![0u8; migration::PAGE_SIZE];
    // The round being received, and the final copy's once its round is done.
    let (mut round, mut last_copy) = (RoundTimes::default(), RoundTimes::default());
    // A round's reading is timed from its first frame on: before that, the reader
    // waits for the source to harvest the dirty log and decide (or pause).
    let mut round_started = false;
    loop {
        let t = Instant::now();
        let kind = next_frame(r, &mut buf, &mut protocol, timeout)?;
        let frame_read = Instant::now();
        if round_started {
            round.read += frame_read - t;
        }
        round_started = kind != Kind::RoundDone;
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
            round.pages += frame_read.elapsed();
            continue;
        }
        match decode(kind, &buf)? {
            Message::RoundDone(done) => {
                tracing::debug!(round = done.round, pages = done.pages, "round received");
                let times = std::mem::take(&mut round);
                if done.round == u32::MAX {
                    // The final copy: its times go with the state's ack.
                    last_copy = times;
                } else if acks.detailed {
                    let detail = AckDetail { pages_us: micros_of(times.pages), read_us: micros_of(times.read), ..Default::default() };
                    send(r, acks.ack(AckStage::Round(done.round), StepTimes::default(), detail))?;
                }
            }
            Message::State(bytes) => {
                let machine_state = MachineState::decode(&bytes).map_err(MigrateError::from)?;
                let decoded = Instant::now();
                let times = match ask(to_owner, from_owner, ReaderSays::State(Box::new(machine_state)))? {
                    OwnerSays::Restored(times) => times,
                    _ => StepTimes::default(),
                };
                let detail = AckDetail {
                    features: 0,
                    pages_us: micros_of(last_copy.pages),
                    read_us: micros_of(last_copy.read),
                    decode_us: micros_of(decoded - frame_read),
                    handoff_us: micros_of(decoded.elapsed()).saturating_sub(times.restore_us),
                };
                send(r, acks.ack(AckStage::Restored, times, detail))?;
            }
            Message::HandOver(_) => {
                let times = match ask(to_owner, from_owner, ReaderSays::HandOver)? {
                    OwnerSays::Resumed(times) => times,
                    _ => StepTimes::default(),
                };
                let own = [times.take_over_us, times.start_us, times.announce_us].iter().fold(0u32, |a, b| a.saturating_add(*b));
                let detail = AckDetail { handoff_us: micros_of(frame_read.elapsed()).saturating_sub(own), ..Default::default() };
                send(r, acks.ack(AckStage::Resumed, times, detail))?;
                return Ok(());
            }
            // The protocol state machine admits nothing else here.
            other => {
                return Err(Stop::Reader(MigrateError::Protocol(ProtocolError::Unexpected {
                    expected: "pages, state or hand-over",
                    got: other.name(),
                })))
            }
        }
    }
}
