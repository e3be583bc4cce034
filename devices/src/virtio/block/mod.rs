//! virtio-blk: a disk backed by a raw image file, served on a worker thread.
//!
//! - `config`: what to attach ([`BlockConfig`]) and the serial length check;
//! - `image`: opening, locking and sizing the image, flush/discard/write-zeroes;
//! - `config_space`: the device configuration space the driver reads;
//! - `request`: validating a guest descriptor chain into a request;
//! - `execute` and `vectored`: doing the I/O straight into guest memory;
//! - `handler`: draining the queue with notification suppression;
//! - `worker`: the epoll thread that runs the handler.

mod config;
mod config_space;
mod error;
mod execute;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod handler;
mod image;
mod request;
mod vectored;
mod worker;

#[cfg(test)]
mod tests;

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO,
    VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_WRITE_ZEROES,
};
use virtio_queue::{QueueState, QueueT};

pub use error::BlockError;
pub use config::{validate_serial, BlockConfig, SerialTooLong};

use config_space::ConfigSpace;
use handler::RequestHandler;
use image::DiskImage;
use request::Limits;
use worker::{ParkedWorker, Worker, WorkerContext};

use super::{
    device_type, features, read_config_bytes, ActivateContext, ActivateError, ActiveQueue,
    VirtioDevice, MigrationError,
};

/// Bytes per sector, the unit of every virtio-blk offset.
pub const SECTOR_SIZE: u64 = 512;
/// Size of the request queue the device offers.
pub const QUEUE_MAX_SIZE: u16 = 256;
/// Most data descriptors per request (the queue minus header and status).
pub const SEG_MAX: u32 = QUEUE_MAX_SIZE as u32 - 2;
/// Bytes of the GET_ID answer (the serial, zero padded).
pub const SERIAL_LEN: usize = 20;

/// Largest discard, in sectors (2 GiB).
const MAX_DISCARD_SECTORS: u32 = 1 << 22;
/// Ranges per discard request.
const MAX_DISCARD_SEG: u32 = 1;
/// Discard granularity the driver should use, in sectors (4 KiB).
const DISCARD_SECTOR_ALIGNMENT: u32 = 8;
/// Largest write-zeroes, in sectors (1 GiB: bounds the zero-writing fallback).
const MAX_WRITE_ZEROES_SECTORS: u32 = 1 << 21;
/// Ranges per write-zeroes request.
const MAX_WRITE_ZEROES_SEG: u32 = 1;

/// Numbers worker threads `virtio-blk-<n>`.
static NEXT_DISK_ID: AtomicUsize = AtomicUsize::new(0);

/// Plain-data device state, for migration snapshots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockState {
    /// Features the device offers.
    pub offered_features: u64,
    /// Features the driver acknowledged at activation (0 when not active).
    pub acked_features: u64,
    /// Disk size in sectors.
    pub capacity_sectors: u64,
    /// Attached read-only.
    pub read_only: bool,
    /// A worker is serving the queue.
    pub activated: bool,
    /// The request queue, once the device has been activated.
    pub queue: Option<QueueState>,
    /// The configuration space bytes.
    pub config_space: Vec<u8>,
}

/// A virtio-blk device.
pub struct Block {
    id: usize,
    disk: Arc<DiskImage>,
    serial: [u8; SERIAL_LEN],
    config_space: ConfigSpace,
    acked_features: u64,
    worker: Option<Worker>,
    /// A worker parked for migration, with what it needs to restart.
    parked: Option<ParkedWorker>,
    /// Queue state at the last reset, kept for [`Block::state`].
    last_queue: Option<QueueState>,
}

impl Block {
    /// Opens and locks the image described by `config`.
    pub fn new(config: BlockConfig) -> Result<Self, BlockError> {
        Self::with_image(&config, DiskImage::open(&config.path, config.read_only)?)
    }

    /// Opens the image without locking it: for a migration destination, which takes
    /// the lock when the source hands the disk over ([`VirtioDevice::acquire_backend`]).
    pub fn new_unlocked(config: BlockConfig) -> Result<Self, BlockError> {
        Self::with_image(&config, DiskImage::open_unlocked(&config.path, config.read_only)?)
    }

    fn with_image(config: &BlockConfig, disk: DiskImage) -> Result<Self, BlockError> {
        let serial = serial_bytes(config)?;
        tracing::info!(
            path = %disk.path().display(),
            sectors = disk.sectors(),
            read_only = disk.read_only(),
            "virtio-blk disk attached"
        );
        Ok(Self {
            id: NEXT_DISK_ID.fetch_add(1, Ordering::Relaxed),
            config_space: ConfigSpace::new(disk.sectors()),
            disk: Arc::new(disk),
            serial,
            acked_features: 0,
            worker: None,
            parked: None,
            last_queue: None,
        })
    }

    /// The image path.
    pub fn path(&self) -> &Path {
        self.disk.path()
    }

    /// Disk size in 512-byte sectors.
    pub fn capacity_sectors(&self) -> u64 {
        self.disk.sectors()
    }

    /// Whether the disk is read-only to the guest.
    pub fn read_only(&self) -> bool {
        self.disk.read_only()
    }

    /// Makes every completed guest write durable (`fdatasync`). Migration calls it
    /// before handing the disk over; safe while the worker runs.
    pub fn flush(&self) -> io::Result<()> {
        self.disk.flush()
    }

    /// Plain-data state. Queue indices are only stable while the worker is idle
    /// (the VM paused), which is when migration asks.
    pub fn state(&self) -> BlockState {
        BlockState {
            offered_features: self.offered_features(),
            acked_features: self.acked_features,
            capacity_sectors: self.disk.sectors(),
            read_only: self.disk.read_only(),
            activated: self.worker.is_some(),
            queue: self.worker.as_ref().map(Worker::queue_state).or(self.last_queue),
            config_space: self.config_space.as_bytes().to_vec(),
        }
    }

    /// The request handler for a driver that acknowledged `acked_features`.
    fn request_handler(&self, acked_features: u64) -> RequestHandler {
        let limits = Limits {
            capacity_sectors: self.disk.sectors(),
            read_only: self.disk.read_only(),
            discard: acked_features & (1 << VIRTIO_BLK_F_DISCARD) != 0,
            write_zeroes: acked_features & (1 << VIRTIO_BLK_F_WRITE_ZEROES) != 0,
        };
        RequestHandler::new(self.disk.clone(), self.serial, limits)
    }
}

impl fmt::Debug for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Block")
            .field("id", &self.id)
            .field("path", &self.disk.path())
            .field("capacity_sectors", &self.disk.sectors())
            .field("read_only", &self.disk.read_only())
            .field("activated", &self.worker.is_some())
            .finish()
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        device_type::BLOCK
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_MAX_SIZE]
    }

    fn offered_features(&self) -> u64 {
        let mut offered = features::VERSION_1
            | features::RING_EVENT_IDX
            | features::RING_INDIRECT_DESC
            | 1 << VIRTIO_BLK_F_SEG_MAX
            | 1 << VIRTIO_BLK_F_BLK_SIZE
            | 1 << VIRTIO_BLK_F_FLUSH;
        if self.disk.read_only() {
            offered |= 1 << VIRTIO_BLK_F_RO;
        } else {
            offered |= 1 << VIRTIO_BLK_F_DISCARD | 1 << VIRTIO_BLK_F_WRITE_ZEROES;
        }
        offered
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(self.config_space.as_bytes(), offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Every field is read-only (VIRTIO_BLK_F_CONFIG_WCE is not offered).
        tracing::debug!(offset, len = data.len(), "ignoring virtio-blk config write");
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        if self.worker.is_some() {
            return Err(ActivateError::Other("virtio-blk device is already active".into()));
        }
        let got = ctx.queues.len();
        let mut queues = ctx.queues.into_iter();
        let (Some(ActiveQueue { mut queue, notify }), None) = (queues.next(), queues.next()) else {
            return Err(ActivateError::QueueCount { expected: 1, got });
        };
        if !queue.ready() || !queue.is_valid(&ctx.mem) {
            return Err(ActivateError::Other(format!(
                "virtio-blk {}: request queue is not ready or its rings are outside guest memory",
                self.disk.path().display()
            )));
        }
        let acked = ctx.acked_features & self.offered_features();
        queue.set_event_idx(acked & features::RING_EVENT_IDX != 0);
        let worker = Worker::spawn(WorkerContext {
            name: format!("virtio-blk-{}", self.id),
            handler: self.request_handler(acked),
            mem: ctx.mem,
            queue,
            notify,
            interrupt: ctx.interrupt,
        })
        .map_err(ActivateError::Worker)?;
        self.worker = Some(worker);
        self.acked_features = acked;
        Ok(())
    }

    fn reset(&mut self) -> bool {
        if let Some(worker) = self.worker.take() {
            self.last_queue = Some(worker.stop());
        }
        self.parked = None;
        self.acked_features = 0;
        true
    }

    fn pause(&mut self) -> Result<(), MigrationError> {
        if let Some(worker) = self.worker.take() {
            let parked = worker.park().ok_or_else(|| {
                MigrationError::Failed(format!("virtio-blk {}: worker could not be parked", self.disk.path().display()))
            })?;
            self.parked = Some(parked);
        }
        Ok(())
    }

    fn resume(&mut self) -> Result<(), MigrationError> {
        let Some(parked) = self.parked.take() else { return Ok(()) };
        let worker = Worker::spawn(WorkerContext {
            name: format!("virtio-blk-{}", self.id),
            handler: self.request_handler(self.acked_features),
            mem: parked.mem,
            queue: parked.queue,
            notify: parked.notify,
            interrupt: parked.interrupt,
        })
        .map_err(|e| MigrationError::Failed(format!("virtio-blk {}: restarting worker: {e}", self.disk.path().display())))?;
        self.worker = Some(worker);
        Ok(())
    }

    fn queue_progress(&self) -> Vec<(u16, u16)> {
        let queue = match (&self.parked, &self.worker) {
            (Some(p), _) => Some(p.queue.state()),
            (None, Some(w)) => Some(w.queue_state()),
            (None, None) => None,
        };
        queue.map(|q| vec![(q.next_avail, q.next_used)]).unwrap_or_default()
    }

    fn flush(&mut self) -> Result<(), MigrationError> {
        self.disk.flush().map_err(|e| MigrationError::Failed(format!("flushing {}: {e}", self.disk.path().display())))
    }

    fn release_backend(&mut self) -> Result<(), MigrationError> {
        self.disk.unlock().map_err(|e| MigrationError::Failed(format!("unlocking {}: {e}", self.disk.path().display())))
    }

    fn acquire_backend(&mut self) -> Result<(), MigrationError> {
        self.disk.lock().map_err(|e| MigrationError::Failed(e.to_string()))
    }

    fn disk_image(&self) -> Option<BlockConfig> {
        let len = self.serial.iter().position(|&b| b == 0).unwrap_or(SERIAL_LEN);
        let serial = (len > 0).then(|| String::from_utf8_lossy(&self.serial[..len]).into_owned());
        Some(BlockConfig { path: self.disk.path().to_path_buf(), read_only: self.disk.read_only(), serial })
    }

    fn describe(&self) -> String {
        format!("virtio-blk capacity={} read_only={}", self.disk.sectors(), self.disk.read_only())
    }
}

/// The GET_ID answer: the serial, zero padded to 20 bytes.
fn serial_bytes(config: &BlockConfig) -> Result<[u8; SERIAL_LEN], BlockError> {
    let mut bytes = [0u8; SERIAL_LEN];
    if let Some(serial) = &config.serial {
        if validate_serial(serial).is_err() {
            return Err(BlockError::SerialTooLong {
                path: config.path.clone(),
                serial: serial.clone(),
            });
        }
        bytes[..serial.len()].copy_from_slice(serial.as_bytes());
    }
    Ok(bytes)
}
