//! The source side: connect, describe the machine, copy memory in rounds while the
//! guest runs, then pause, copy the rest and the state, hand the disks over, and exit
//! only once the destination says the guest runs there. Any failure before that
//! resumes the guest here.

use std::io::{BufWriter, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use devices::sync::lock;
use migration::convergence::{Convergence, Decision, Policy, RoundStats};
use migration::messages::{self, Ack, AckStage, HandOver, Hello, Message, RoundDone, VmDescription, FEATURE_ROUND_ACKS};
use migration::pages::PageBatch;
use migration::report::{Progress, Report};
use migration::PROTOCOL_VERSION;

use super::dirty::DirtyTracker;
use super::guest_pages;
use super::throttle::Throttle;
use super::tls::TlsIdentity;
use super::transport::{self, Conn};
use super::{cpuid_to_wire, MigrateError};
use crate::machine_parts::MachineParts;
use crate::state;
use crate::events::VmEvent;

/// What `tern migrate` asked for.
#[derive(Clone, Debug)]
pub struct Options {
    /// Destination `HOST:PORT`.
    pub to: String,
    /// Downtime target.
    pub max_downtime: Duration,
    /// Cap on bytes per second sent while the guest runs (None: as fast as possible).
    pub max_bandwidth: Option<u64>,
    /// Mutual TLS from this directory (ca.pem, cert.pem, key.pem); `None`: plaintext.
    pub tls_dir: Option<PathBuf>,
    /// The VM's name for the destination's hello (None: not told).
    pub vm_name: Option<String>,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the destination at each acknowledged step.
const ACK_TIMEOUT: Duration = Duration::from_secs(120);

/// What the migration thread reports while it runs: progress after every round, then
/// one final update.
#[derive(Clone, Debug, PartialEq)]
pub enum MigrationUpdate {
    /// A round is done; more updates follow.
    Progress(Progress),
    /// The guest runs on the destination now.
    Done(Report),
    /// The migration did not happen and the guest keeps running here; says why.
    Failed(String),
}

/// Runs the migration on its own thread. Progress and the final result go to
/// `updates`; the machine's owner learns the outcome through `events`.
pub fn spawn(parts: MachineParts, options: Options, updates: impl Fn(MigrationUpdate) + Send + 'static, events: Sender<VmEvent>) {
    let thread = std::thread::Builder::new().name("migration".into()).spawn(move || {
        if let Err(e) = tern_seccomp::confine(tern_seccomp::ThreadClass::Migration) {
            let _ = events.send(VmEvent::MigrationFailed);
            updates(MigrationUpdate::Failed(format!("migration not started, the guest keeps running here: {e}")));
            return;
        }
        let progress = |p: Progress| updates(MigrationUpdate::Progress(p));
        match run(&parts, &options, &progress) {
            Ok(report) => {
                tracing::info!(?report, "migration complete");
                updates(MigrationUpdate::Done(report));
                let _ = events.send(VmEvent::MigratedAway);
            }
            Err(e) => {
                tracing::warn!("migration failed: {e}");
                // The owner hears of it first: a client that retries as soon as it
                // has the answer must find the machine no longer migrating (its next
                // request queues behind this event).
                let _ = events.send(VmEvent::MigrationFailed);
                updates(MigrationUpdate::Failed(format!("migration failed, the guest keeps running here: {e}")));
            }
        }
    });
    if let Err(e) = thread {
        tracing::error!("cannot start the migration thread: {e}");
    }
}

/// Bytes written, for bandwidth figures, with an optional pace.
struct CountingWriter<W> {
    inner: W,
    bytes: u64,
    pace: Option<Pace>,
}

/// Keeps the average send rate at or under a cap (from the pace's start, which is
/// each round's: time a round spent waiting, for its ack or the dirty log, is no
/// credit for a burst in the next).
struct Pace {
    bytes_per_s: u64,
    start: Instant,
    start_bytes: u64,
}

impl<W> CountingWriter<W> {
    /// Starts the pace again from now.
    fn restart_pace(&mut self) {
        let bytes = self.bytes;
        if let Some(p) = &mut self.pace {
            p.start = Instant::now();
            p.start_bytes = bytes;
        }
    }

    /// Sleeps until the bytes written since the pace began fit under the cap.
    fn keep_pace(&self) {
        if let Some(p) = &self.pace {
            let due = Duration::from_secs_f64((self.bytes - p.start_bytes) as f64 / p.bytes_per_s as f64);
            let elapsed = p.start.elapsed();
            if due > elapsed {
                std::thread::sleep(due - elapsed);
            }
        }
    }
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

type Writer = CountingWriter<BufWriter<Conn>>;

fn connect(to: &str) -> Result<TcpStream, MigrateError> {
    let err = |source| MigrateError::Connect { to: to.to_string(), source };
    let addrs: Vec<_> = to.to_socket_addrs().map_err(err)?.collect();
    let mut last = std::io::Error::other("no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(err(last))
}

/// The machine as the destination must rebuild it.
pub fn describe(parts: &MachineParts) -> VmDescription {
    VmDescription {
        version: PROTOCOL_VERSION,
        memory_bytes: parts.memory,
        cpus: parts.cpus,
        cpuid: cpuid_to_wire(&parts.cpuid),
        devices: parts.virtio.iter().map(|d| lock(d).device_mut().describe()).collect(),
        boot: parts.boot_record.clone(),
    }
}

/// Sends `pages`; returns (pages with contents, zero pages).
fn send_pages(w: &mut Writer, parts: &MachineParts, round: u32, pages: &[u64], batch: &mut PageBatch) -> Result<(u64, u64), MigrateError> {
    let (mut full, mut zero) = (0u64, 0u64);
    batch.clear(round);
    for &gpa in pages {
        let was_zero = batch
            .push_with(gpa, |buf| guest_pages::read_page(&parts.mem, gpa, buf))
            .map_err(|e| MigrateError::Memory(format!("reading page {gpa:#x}: {e}")))?;
        if was_zero { zero += 1 } else { full += 1 }
        if batch.is_full() {
            messages::send_pages(w, batch)?;
            batch.clear(round);
            w.keep_pace();
        }
    }
    if !batch.is_empty() {
        messages::send_pages(w, batch)?;
    }
    Message::RoundDone(RoundDone { version: PROTOCOL_VERSION, round, pages: pages.len() as u64 }).send(w)?;
    Ok((full, zero))
}

fn mib(bytes_per_s: f64) -> f64 {
    bytes_per_s / (1 << 20) as f64
}

/// Connects to the destination, over mutual TLS when a TLS directory is given.
fn open_connection(options: &Options) -> Result<Conn, MigrateError> {
    // The certificates are read before connecting: a bad TLS directory is the
    // operator's error and says so without touching the destination.
    let tls = match &options.tls_dir {
        Some(dir) => Some(TlsIdentity::load(dir).and_then(|id| id.client_config()).map_err(|e| MigrateError::Tls(e.to_string()))?),
        None => None,
    };
    let stream = connect(&options.to)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(ACK_TIMEOUT))?;
    match tls {
        Some(config) => Conn::client(stream, &options.to, config).map_err(|e| MigrateError::Tls(e.to_string())),
        None => Ok(Conn::Plain(stream)),
    }
}

/// A step as the source's errors name it.
fn stage_name(stage: AckStage) -> String {
    match stage {
        AckStage::Round(n) => format!("round {n}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Waits for the destination's acknowledgement of `stage`; returns it (with the times
/// it reports).
fn expect_ack(w: &mut Writer, buf: &mut Vec<u8>, stage: AckStage) -> Result<Ack, MigrateError> {
    let conn = w.inner.get_mut();
    let tls = conn.is_tls();
    messages::expect_ack(conn, buf, stage).map_err(|e| match e {
        // A TLS destination that refused this host's certificate says so in an alert,
        // which arrives on the first read after the handshake.
        migration::messages::ProtocolError::Frame(migration::frame::FrameError::Io(io))
            if matches!(io.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
        {
            MigrateError::NoAnswer(stage_name(stage), ACK_TIMEOUT.as_secs())
        }
        migration::messages::ProtocolError::Frame(migration::frame::FrameError::Io(io)) if tls => {
            MigrateError::Tls(transport::stream_failure(&io))
        }
        other => refusal(other),
    })
}

fn run(parts: &MachineParts, options: &Options, progress: &dyn Fn(Progress)) -> Result<Report, MigrateError> {
    let started = Instant::now();
    let conn = open_connection(options)?;
    let mut w: Writer = CountingWriter { inner: BufWriter::with_capacity(1 << 20, conn), bytes: 0, pace: None };
    let mut buf = Vec::new();

    // Hello and config: the destination refuses here, before anything is paused.
    Message::Hello(Hello::from_source(options.vm_name.clone())).send(&mut w)?;
    w.flush()?;
    // A destination of an earlier build acknowledges no rounds.
    let round_acks = expect_ack(&mut w, &mut buf, AckStage::Hello)?.detail.is_some_and(|d| d.features & FEATURE_ROUND_ACKS != 0);
    Message::Config(describe(parts)).send(&mut w)?;
    w.flush()?;
    expect_ack(&mut w, &mut buf, AckStage::Config)?;

    w.pace = options.max_bandwidth.map(|bytes_per_s| Pace { bytes_per_s, start: Instant::now(), start_bytes: w.bytes });
    let tracker = DirtyTracker::start(&parts.vm, &parts.mem)?;
    let throttle = Throttle::start(parts.vcpus.clone());
    let mut convergence = Convergence::new(Policy::with_max_downtime(options.max_downtime));
    let mut batch = PageBatch::new(0);
    let mut report = Report::default();
    let mut pages = tracker.all_pages();
    let mut round = 0u32;
    loop {
        let round_start = Instant::now();
        let bytes_before = w.bytes;
        w.restart_pace();
        let (full, zero) = send_pages(&mut w, parts, round, &pages, &mut batch)?;
        w.flush()?;
        if round_acks {
            // The round ends when its pages are in the destination's memory: its time
            // is the link's real rate, and a pause after it finds nothing in flight.
            expect_ack(&mut w, &mut buf, AckStage::Round(round))?;
        }
        report.pages_sent += full;
        report.zero_pages += zero;
        let dirty = tracker.take()?;
        let stats = RoundStats {
            round,
            pages_sent: pages.len() as u64,
            bytes_sent: w.bytes - bytes_before,
            duration: round_start.elapsed(),
            dirty_pages: dirty.len() as u64,
        };
        let decision = convergence.after_round(stats);
        progress(Progress {
            round,
            pages_left: dirty.len() as u64,
            dirty_rate_mib_s: mib(convergence.dirty_rate()),
            bandwidth_mib_s: mib(convergence.bandwidth().unwrap_or(0.0)),
            estimated_downtime_ms: convergence.estimated_downtime().as_secs_f64() * 1000.0,
            throttle_percent: convergence.throttle(),
        });
        pages = dirty;
        round += 1;
        match decision {
            Decision::StopAndCopy => break,
            Decision::Continue { throttle_percent } => {
                throttle.set(throttle_percent);
                report.max_throttle_percent = report.max_throttle_percent.max(throttle_percent);
            }
        }
    }
    throttle.stop();
    report.rounds = round;
    // The final copy goes at full speed: the guest is paused.
    w.pace = None;

    // Stop and copy. From here on, any failure must give the guest back.
    let paused_at = Instant::now();
    let vcpus_paused = parts.vcpus.pause();
    report.downtime_breakdown.pause_ms = ms(paused_at);
    if let Err(e) = vcpus_paused {
        // The failed pause let the guest run again here; tell the destination.
        let e = MigrateError::Device(format!("pause failed: {e}"));
        let _ = messages::error(format!("source aborted: {e}")).send(&mut w);
        let _ = w.flush();
        tracker.stop();
        return Err(e);
    }
    let mut handed_over = false;
    let result = stop_and_copy(parts, &tracker, pages, &mut w, &mut buf, &mut batch, &mut report, &mut handed_over);
    match result {
        Ok(()) => {
            report.downtime_ms = paused_at.elapsed().as_secs_f64() * 1000.0;
            report.total_ms = started.elapsed().as_secs_f64() * 1000.0;
            report.bytes_sent = w.bytes;
            // The guest runs on the destination now; this machine must never run it again.
            std::mem::forget(tracker);
            Ok(report)
        }
        Err(e) => {
            let _ = messages::error(format!("source aborted: {e}")).send(&mut w);
            let _ = w.flush();
            tracker.stop();
            recover(parts, handed_over).map_err(|again| MigrateError::Device(format!("{e}; and then: {again}")))?;
            Err(e)
        }
    }
}

/// Maps a destination's refusal to a clear error.
fn refusal(e: migration::messages::ProtocolError) -> MigrateError {
    match e {
        migration::messages::ProtocolError::Peer(reason) => MigrateError::Refused(reason),
        other => MigrateError::Protocol(other),
    }
}

#[allow(clippy::too_many_arguments)]
fn stop_and_copy(
    parts: &MachineParts,
    tracker: &DirtyTracker,
    mut pages: Vec<u64>,
    w: &mut Writer,
    buf: &mut Vec<u8>,
    batch: &mut PageBatch,
    report: &mut Report,
    handed_over: &mut bool,
) -> Result<(), MigrateError> {
    let b = &mut report.downtime_breakdown;
    let t = Instant::now();
    parts.pause_devices().map_err(MigrateError::Device)?;
    b.pause_devices_ms = ms(t);
    b.pause_ms += b.pause_devices_ms;
    // Everything written until the pause, by vCPUs and device workers alike.
    let t = Instant::now();
    pages.extend(tracker.take()?);
    pages.sort_unstable();
    pages.dedup();
    let (full, zero) = send_pages(w, parts, u32::MAX, &pages, batch)?;
    b.last_pages_ms = ms(t);
    let t = Instant::now();
    let machine_state = state::capture(parts, &parts.msr_indices)?;
    b.state_capture_ms = ms(t);
    Message::State(machine_state.encode()).send(w)?;
    w.flush()?;
    b.state_ms = ms(t);
    let t = Instant::now();
    parts.flush_devices().map_err(MigrateError::Device)?;
    b.disk_flush_ms = ms(t);
    // The disks and TAPs go and the hand-over follows the state at once, while the
    // destination decodes and restores it (it reads the hand-over after its "restored"
    // ack): releasing costs a network grace period per TAP, and waiting for "restored"
    // first would add a round trip. If the destination then fails, `recover` takes
    // them back (it never took them: it takes them only after a good restore).
    *handed_over = true;
    let t = Instant::now();
    for device in &parts.virtio {
        lock(device).device_mut().release_backend().map_err(|e| MigrateError::Device(e.to_string()))?;
    }
    Message::HandOver(HandOver { version: PROTOCOL_VERSION }).send(w)?;
    w.flush()?;
    b.release_ms = ms(t);
    let t = Instant::now();
    let restored = expect_ack(w, buf, AckStage::Restored)?;
    let restored_wait = ms(t);
    let t = Instant::now();
    let resumed = expect_ack(w, buf, AckStage::Resumed)?;
    let resumed_wait = ms(t);
    let us = |v: u32| f64::from(v) / 1000.0;
    let (restored_detail, resumed_detail) = (restored.detail.unwrap_or_default(), resumed.detail.unwrap_or_default());
    b.decode_ms = us(restored_detail.decode_us);
    b.restore_ms = us(restored.times.restore_us);
    b.take_over_ms = us(resumed.times.take_over_us);
    b.start_ms = us(resumed.times.start_us);
    b.announce_ms = us(resumed.times.announce_us);
    b.handoff_ms = us(restored_detail.handoff_us) + us(resumed_detail.handoff_us);
    b.dest_last_pages_ms = us(restored_detail.pages_us);
    b.dest_last_read_ms = us(restored_detail.read_us);
    b.transfer_ms = (restored_wait - b.decode_ms - b.restore_ms - us(restored_detail.handoff_us)).max(0.0)
        + (resumed_wait - b.take_over_ms - b.start_ms - b.announce_ms - us(resumed_detail.handoff_us)).max(0.0);
    report.final_pages = full + zero;
    report.pages_sent += full;
    report.zero_pages += zero;
    Ok(())
}

/// Milliseconds since `t`.
fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// Gives the guest back after a failed stop-and-copy: disk locks first (if the
/// destination holds them, the guest must not run here too), then device workers,
/// then vCPUs.
fn recover(parts: &MachineParts, handed_over: bool) -> Result<(), String> {
    if handed_over {
        for device in &parts.virtio {
            if let Err(e) = lock(device).device_mut().acquire_backend() {
                return Err(format!(
                    "cannot take the disks back ({e}); the destination may be running the guest, so it stays paused here"
                ));
            }
        }
    }
    parts.resume_devices_and_vcpus()
}
