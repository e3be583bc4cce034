//! virtio-net: a NIC backed by a host TAP interface, served on a worker thread.
//!
//! - `config` and `mac`: what to attach ([`NetConfig`], TAP name and MAC checks);
//! - `tap`: opening the TAP (`/dev/net/tun`, vnet headers, offloads), behind the
//!   `backend` trait so tests can put a socket pair in its place;
//! - `config_space` and `link`: what the driver reads (MAC, link status);
//! - `guest_iovecs`: guest buffers as iovecs for `readv`/`writev`, no copies;
//! - `tx`, `rx` (with `rx_chains`) and `ctrl`: one pass over each queue;
//! - `handler`: the passes together, link-down handling; `worker`: the epoll thread;
//! - `migration_state`: what a migration carries besides the queues (the MAC).
//!
//! Queues: 0 receive, 1 transmit, 2 control (when VIRTIO_NET_F_CTRL_VQ is
//! negotiated). Every frame carries a 12-byte `virtio_net_hdr_v1`, passed
//! between guest and TAP unchanged (the device only fills in `num_buffers`).

mod backend;
mod config;
mod config_space;
mod ctrl;
mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod guest_iovecs;
mod handler;
mod header;
mod link;
mod mac;
mod migration_state;
mod offloads;
mod pure_ack;
mod queue_error;
mod rx;
mod rx_chains;
mod stats;
mod tap;
mod tx;
mod tx_poll_interval;
mod worker;

#[cfg(test)]
mod tests;

use std::fmt;
use std::io;
use std::sync::Arc;

use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_F_GUEST_ANNOUNCE, VIRTIO_NET_F_GUEST_CSUM,
    VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
    VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_MAC,
    VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_STATUS,
};
use virtio_queue::{QueueState, QueueT};

pub use error::NetError;
pub use header::{HEADER_LEN, MAX_BUFFER_LEN, MAX_FRAME_LEN};
pub use link::{STATUS_ANNOUNCE, STATUS_LINK_UP};
pub use mac::{parse_mac, validate_mac, MacDisplay, MacError, GENERATED_MAC_PREFIX};
pub use config::{validate_tap_name, NetConfig, TapNameError, MAX_TAP_NAME_LEN};
pub use stats::NetStats;

use backend::{classify, Failure, NetBackend};
use config_space::config_bytes;
use handler::NetQueues;
use link::LinkStatus;
use offloads::tun_offloads;
use stats::Counters;
use tap::Tap;
use worker::{Worker, WorkerParts, WorkerShared};

use super::{
    device_type, features, read_config_bytes, ActivateContext, ActivateError, ActiveQueue,
    MigrationError, VirtioDevice, VirtioInterrupt,
};

/// Size of each queue the device offers.
pub const QUEUE_MAX_SIZE: u16 = 256;
/// Queues: receive, transmit, control.
pub const NUM_QUEUES: usize = 3;

/// Plain-data device state, for migration snapshots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetState {
    /// Features the device offers.
    pub offered_features: u64,
    /// Features the driver acknowledged at activation (0 when not active).
    pub acked_features: u64,
    /// The guest's MAC address.
    pub mac: [u8; 6],
    /// The configuration-space `status` field (link up, announce).
    pub status: u16,
    /// The driver activated the device (its worker runs, or is parked for a
    /// migration or until the TAP is attached).
    pub activated: bool,
    /// Queue positions in index order (rx, tx, then ctrl when negotiated), once
    /// the device has been activated. Receive chains the worker had taken but not
    /// filled are counted as still available.
    pub queues: Vec<QueueState>,
    /// The configuration space bytes.
    pub config_space: Vec<u8>,
}

/// Opens the backend (again): at construction, or when a migration hands the
/// TAP over ([`VirtioDevice::acquire_backend`]).
type Opener = Box<dyn Fn() -> Result<Arc<dyn NetBackend>, NetError> + Send>;

/// Where the device's worker is.
enum Run {
    /// Not activated (or reset).
    Inactive,
    /// Serving the queues.
    Running(Worker),
    /// Activated, but not serving: paused for migration, or waiting for its TAP.
    Parked(WorkerParts),
}

/// A virtio-net device.
pub struct Net {
    /// The TAP's name (as the kernel reports it once attached).
    tap: String,
    mac: [u8; 6],
    /// The attached backend; `None` between a migration hand-over and taking the
    /// TAP (back).
    backend: Option<Arc<dyn NetBackend>>,
    open: Opener,
    link: Arc<LinkStatus>,
    counters: Arc<Counters>,
    acked_features: u64,
    /// The transport's interrupt handle while active (for link changes and
    /// announcements).
    interrupt: Option<Arc<dyn VirtioInterrupt>>,
    run: Run,
    /// Paused for migration: the worker stays parked until resumed.
    paused: bool,
    /// Queue positions at the last reset, kept for [`Net::state`].
    last_queues: Vec<QueueState>,
}

impl Net {
    /// Opens (or creates) the TAP named in `config`. Without a configured MAC, a
    /// locally administered one is generated.
    pub fn new(config: NetConfig) -> Result<Self, NetError> {
        let mut net = Self::new_unattached(config)?;
        let backend = (net.open)()?;
        net.attach(backend);
        tracing::info!(tap = %net.tap, mac = %MacDisplay(&net.mac), "virtio-net TAP attached");
        Ok(net)
    }

    /// Checks `config` without opening the TAP: for a migration destination on the
    /// same host, where the source holds the (single-queue) TAP until it hands it
    /// over; [`VirtioDevice::acquire_backend`] opens it then. Until then an active
    /// device stays parked.
    pub fn new_unattached(config: NetConfig) -> Result<Self, NetError> {
        validate_tap_name(&config.tap)
            .map_err(|source| NetError::Config { tap: config.tap.clone(), source })?;
        let mac = match config.mac {
            Some(mac) => {
                validate_mac(&mac)
                    .map_err(|source| NetError::Mac { tap: config.tap.clone(), source })?;
                mac
            }
            None => mac::generate_mac(&config.tap),
        };
        let name = config.tap.clone();
        let open: Opener =
            Box::new(move || Tap::open(&name).map(|tap| Arc::new(tap) as Arc<dyn NetBackend>));
        Ok(Self::with_opener(config.tap, mac, open))
    }

    /// For a migration destination: opens the TAP now when it is free (a TAP of its
    /// own, on another host or here), so the hand-over does not wait for it; frames
    /// that reach it meanwhile wait in its queue until the guest runs, as in QEMU's
    /// destination. The source's own TAP is busy until the source hands it over:
    /// then the device is left unattached ([`Net::new_unattached`]).
    pub fn new_at_hand_over(config: NetConfig) -> Result<Self, NetError> {
        match Self::new(config.clone()) {
            Err(NetError::Busy { .. }) => Self::new_unattached(config),
            other => other,
        }
    }

    /// A device on any backend (tests use a socket pair), not yet attached.
    pub(crate) fn with_opener(tap: String, mac: [u8; 6], open: Opener) -> Self {
        Self {
            tap,
            mac,
            backend: None,
            open,
            link: Arc::new(LinkStatus::new()),
            counters: Arc::new(Counters::default()),
            acked_features: 0,
            interrupt: None,
            run: Run::Inactive,
            paused: false,
            last_queues: Vec::new(),
        }
    }

    /// A device attached to `backend` (tests).
    #[cfg(test)]
    pub(crate) fn with_backend(backend: Arc<dyn NetBackend>, mac: [u8; 6]) -> Self {
        let again = backend.clone();
        let mut net =
            Self::with_opener(backend.name().to_string(), mac, Box::new(move || Ok(again.clone())));
        net.attach(backend);
        net
    }

    /// The TAP interface name.
    pub fn tap_name(&self) -> &str {
        &self.tap
    }

    /// The guest's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The effective configuration, MAC included: what a migration destination
    /// must attach so the guest keeps its address.
    pub fn config(&self) -> NetConfig {
        NetConfig { tap: self.tap.clone(), mac: Some(self.mac) }
    }

    /// Whether the TAP is attached and usable (false once it went away, and while
    /// a migration has handed it over).
    pub fn link_up(&self) -> bool {
        self.backend.is_some() && self.link.is_up()
    }

    /// Traffic counters.
    pub fn stats(&self) -> NetStats {
        self.counters.snapshot()
    }

    /// Asks the guest to announce itself (gratuitous ARP, unsolicited neighbour
    /// advertisements): sets VIRTIO_NET_S_ANNOUNCE and signals a configuration
    /// change. A migration destination calls this after resuming (see
    /// [`VirtioDevice::after_migration`]), so switches learn where the guest went.
    /// Safe while the worker runs. Does nothing (and returns false) unless the
    /// device is active, the driver negotiated VIRTIO_NET_F_GUEST_ANNOUNCE, and
    /// the link is up.
    pub fn announce(&self) -> bool {
        let Some(interrupt) = &self.interrupt else {
            return false;
        };
        if self.acked_features & (1 << VIRTIO_NET_F_GUEST_ANNOUNCE) == 0 || !self.link_up() {
            return false;
        }
        self.link.request_announce();
        if let Err(e) = interrupt.signal_config() {
            tracing::warn!(tap = %self.tap, "cannot signal the announcement: {e}");
        }
        true
    }

    /// Plain-data state. Queue positions are only stable while the worker is idle
    /// or parked (the VM paused), which is when migration asks.
    pub fn state(&self) -> NetState {
        NetState {
            offered_features: self.offered_features(),
            acked_features: self.acked_features,
            mac: self.mac,
            status: self.link.get(),
            activated: !matches!(self.run, Run::Inactive),
            queues: self.queue_states().unwrap_or_else(|| self.last_queues.clone()),
            config_space: config_bytes(&self.mac, self.link.get()).to_vec(),
        }
    }

    /// Positions of the active queues, `None` when not activated.
    fn queue_states(&self) -> Option<Vec<QueueState>> {
        match &self.run {
            Run::Inactive => None,
            Run::Running(worker) => Some(worker.queue_states()),
            Run::Parked(parts) => Some(parts.queues.states()),
        }
    }

    /// Takes `backend` as the TAP.
    fn attach(&mut self, backend: Arc<dyn NetBackend>) {
        self.tap = backend.name().to_string();
        self.backend = Some(backend);
    }

    /// Tells the TAP which offloads it may use towards the guest. A TAP that is
    /// gone takes the link down instead of failing.
    fn apply_offloads(&self, acked: u64) -> Result<(), String> {
        let Some(backend) = &self.backend else {
            return Ok(());
        };
        if !self.link.is_up() {
            return Ok(());
        }
        let flags = tun_offloads(acked);
        match backend.set_offloads(flags) {
            Ok(()) => Ok(()),
            Err(e) if classify(&e) == Failure::Gone => {
                tracing::error!(tap = %self.tap, "TAP is gone ({e}); link down");
                self.link.set_down();
                Ok(())
            }
            Err(e) => {
                Err(format!("virtio-net {}: cannot set TAP offloads {flags:#x}: {e}", self.tap))
            }
        }
    }

    /// Starts the worker of an activated device when nothing holds it back (not
    /// paused, TAP attached).
    fn start_if_ready(&mut self) -> io::Result<()> {
        let Some(backend) = self.backend.clone() else {
            return Ok(());
        };
        if self.paused || !matches!(self.run, Run::Parked(_)) {
            return Ok(());
        }
        let Run::Parked(parts) = std::mem::replace(&mut self.run, Run::Inactive) else {
            return Ok(());
        };
        let shared =
            WorkerShared { backend, link: self.link.clone(), counters: self.counters.clone() };
        let worker = Worker::spawn(format!("virtio-net-{}", self.tap), parts, shared)?;
        self.run = Run::Running(worker);
        Ok(())
    }
}

impl fmt::Debug for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Net")
            .field("tap", &self.tap)
            .field("mac", &MacDisplay(&self.mac).to_string())
            .field("link_up", &self.link_up())
            .field("running", &matches!(self.run, Run::Running(_)))
            .field("paused", &self.paused)
            .finish()
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        device_type::NET
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_MAX_SIZE; NUM_QUEUES]
    }

    fn offered_features(&self) -> u64 {
        let net_features = [
            VIRTIO_NET_F_CSUM,
            VIRTIO_NET_F_GUEST_CSUM,
            VIRTIO_NET_F_GUEST_TSO4,
            VIRTIO_NET_F_GUEST_TSO6,
            VIRTIO_NET_F_GUEST_ECN,
            VIRTIO_NET_F_HOST_TSO4,
            VIRTIO_NET_F_HOST_TSO6,
            VIRTIO_NET_F_HOST_ECN,
            VIRTIO_NET_F_MRG_RXBUF,
            VIRTIO_NET_F_MAC,
            VIRTIO_NET_F_STATUS,
            VIRTIO_NET_F_CTRL_VQ,
            VIRTIO_NET_F_GUEST_ANNOUNCE,
        ];
        net_features.iter().fold(
            features::VERSION_1 | features::RING_EVENT_IDX | features::RING_INDIRECT_DESC,
            |acc, bit| acc | 1u64 << bit,
        )
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&config_bytes(&self.mac, self.link.get()), offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // The MAC is only writable by legacy drivers; every other field is read-only.
        tracing::debug!(offset, len = data.len(), "ignoring virtio-net config write");
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        if !matches!(self.run, Run::Inactive) {
            return Err(ActivateError::Other("virtio-net device is already active".into()));
        }
        let acked = ctx.acked_features & self.offered_features();
        if acked & features::VERSION_1 == 0 {
            return Err(ActivateError::Other(format!(
                "virtio-net {}: driver did not accept VIRTIO_F_VERSION_1 (legacy drivers are not supported)",
                self.tap
            )));
        }
        let has_ctrl = acked & (1 << VIRTIO_NET_F_CTRL_VQ) != 0;
        let expected = if has_ctrl { 3 } else { 2 };
        if ctx.queues.len() != expected {
            return Err(ActivateError::QueueCount { expected, got: ctx.queues.len() });
        }
        let mut queues = Vec::with_capacity(expected);
        for (index, ActiveQueue { mut queue, notify }) in ctx.queues.into_iter().enumerate() {
            if !queue.ready() || !queue.is_valid(&ctx.mem) {
                return Err(ActivateError::Other(format!(
                    "virtio-net {}: queue {index} is not ready or its rings are outside guest memory",
                    self.tap
                )));
            }
            queue.set_event_idx(acked & features::RING_EVENT_IDX != 0);
            queues.push((queue, notify));
        }
        let mut queues = queues.into_iter();
        let (Some((rx, rx_notify)), Some((tx, tx_notify))) = (queues.next(), queues.next()) else {
            return Err(ActivateError::QueueCount { expected, got: 0 });
        };
        let (ctrl, ctrl_notify) = queues.next().map_or((None, None), |(q, fd)| (Some(q), Some(fd)));

        self.apply_offloads(acked).map_err(ActivateError::Other)?;
        self.run = Run::Parked(WorkerParts {
            queues: Arc::new(NetQueues::new(rx, tx, ctrl)),
            rx_notify,
            tx_notify,
            ctrl_notify,
            mem: ctx.mem,
            interrupt: ctx.interrupt.clone(),
            mergeable: acked & (1 << VIRTIO_NET_F_MRG_RXBUF) != 0,
        });
        if let Err(e) = self.start_if_ready() {
            self.run = Run::Inactive;
            return Err(ActivateError::Worker(e));
        }
        self.interrupt = Some(ctx.interrupt);
        self.acked_features = acked;
        Ok(())
    }

    fn reset(&mut self) -> bool {
        match std::mem::replace(&mut self.run, Run::Inactive) {
            Run::Running(worker) => self.last_queues = worker.stop(),
            Run::Parked(parts) => self.last_queues = parts.queues.states(),
            Run::Inactive => {}
        }
        self.paused = false;
        self.acked_features = 0;
        self.interrupt = None;
        self.link.clear_announce();
        // No offloads towards a driver that has not negotiated any.
        if let (Some(backend), true) = (&self.backend, self.link.is_up()) {
            if let Err(e) = backend.set_offloads(0) {
                tracing::warn!(tap = %self.tap, "cannot clear TAP offloads: {e}");
            }
        }
        true
    }

    fn pause(&mut self) -> Result<(), MigrationError> {
        self.paused = true;
        match std::mem::replace(&mut self.run, Run::Inactive) {
            Run::Running(worker) => {
                // A worker that cannot be parked is gone (its queues with it): the
                // device needs a reset, and the migration must not go on.
                let parts = worker.park().ok_or_else(|| {
                    MigrationError::Failed(format!(
                        "virtio-net {}: worker could not be parked",
                        self.tap
                    ))
                })?;
                self.run = Run::Parked(parts);
            }
            other => self.run = other,
        }
        Ok(())
    }

    fn resume(&mut self) -> Result<(), MigrationError> {
        self.paused = false;
        if matches!(self.run, Run::Parked(_)) && self.backend.is_none() {
            return Err(MigrationError::Failed(format!(
                "virtio-net {}: cannot resume without the TAP (take it back first)",
                self.tap
            )));
        }
        self.start_if_ready().map_err(|e| {
            MigrationError::Failed(format!("virtio-net {}: restarting worker: {e}", self.tap))
        })
    }

    fn queue_progress(&self) -> Vec<(u16, u16)> {
        self.queue_states()
            .unwrap_or_default()
            .iter()
            .map(|q| (q.next_avail, q.next_used))
            .collect()
    }

    fn save_state(&self) -> Vec<u8> {
        migration_state::encode(&self.mac)
    }

    fn load_state(&mut self, state: &[u8]) -> Result<(), MigrationError> {
        if !matches!(self.run, Run::Inactive) {
            return Err(MigrationError::Failed(format!(
                "virtio-net {}: state must be loaded before activation",
                self.tap
            )));
        }
        let mac = migration_state::decode(state)
            .map_err(|e| MigrationError::Failed(format!("virtio-net {}: {e}", self.tap)))?;
        self.mac = mac;
        Ok(())
    }

    fn release_backend(&mut self) -> Result<(), MigrationError> {
        if matches!(self.run, Run::Running(_)) {
            return Err(MigrationError::Failed(format!(
                "virtio-net {}: pause the device before handing its TAP over",
                self.tap
            )));
        }
        // The worker is parked and holds no reference: this closes the TAP.
        if self.backend.take().is_some() {
            tracing::info!(tap = %self.tap, "virtio-net TAP released");
        }
        Ok(())
    }

    fn acquire_backend(&mut self) -> Result<(), MigrationError> {
        if self.backend.is_none() {
            let backend = (self.open)()
                .map_err(|e| MigrationError::Failed(format!("taking the TAP: {e}")))?;
            self.attach(backend);
            tracing::info!(tap = %self.tap, "virtio-net TAP attached");
            if self.link.set_up() {
                if let Some(interrupt) = &self.interrupt {
                    // The driver saw the link go down with the old descriptor.
                    let _ = interrupt.signal_config();
                }
            }
        }
        if !matches!(self.run, Run::Inactive) {
            self.apply_offloads(self.acked_features).map_err(MigrationError::Failed)?;
        }
        self.start_if_ready().map_err(|e| {
            MigrationError::Failed(format!("virtio-net {}: starting worker: {e}", self.tap))
        })
    }

    fn after_migration(&mut self) {
        if !self.announce() {
            tracing::debug!(tap = %self.tap, "guest not asked to announce (not negotiated or link down)");
        }
    }

    fn describe(&self) -> String {
        // Neither the TAP name (host-specific) nor the MAC (carried in the state).
        format!("virtio-net queues={NUM_QUEUES} features={:#x}", self.offered_features())
    }
}
