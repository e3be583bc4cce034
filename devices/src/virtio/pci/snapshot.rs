//! What a migration carries of one virtio-pci function, and the checks a destination
//! makes before loading it: the snapshot comes from the migration peer, so every
//! index, size, address and bit is held against the destination's own device first.

use serde::{Deserialize, Serialize};
use vm_memory::{GuestAddress, GuestMemory, Permissions};

use super::common_config::{CommonConfig, NO_VECTOR};
use crate::pci::config::{ConfigRestoreError, CONFIG_SPACE_SIZE};
use crate::pci::msix::{MsixRestoreError, MsixSnapshot};
use crate::virtio::{features, status, GuestMemoryMmap, MigrationError};

/// Largest device-specific state a snapshot may carry.
pub const MAX_DEVICE_STATE: usize = 4096;
/// Feature words a driver may select: virtio defines at most 128 feature bits.
const FEATURE_WORDS: u32 = 4;
/// ISR bits: queue interrupt, configuration change.
const ISR_BITS: u8 = 0x3;

/// Everything about one virtio-pci function a migration carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtioPciSnapshot {
    /// The device's own description, checked against the destination's device.
    pub device: String,
    #[serde(deserialize_with = "crate::bounded::vec::<_, _, CONFIG_SPACE_SIZE>")]
    pub config_space: Vec<u8>,
    /// Size of each of the six BARs (0 where absent).
    #[serde(deserialize_with = "crate::bounded::vec::<_, _, 6>")]
    pub bar_sizes: Vec<u64>,
    pub common: CommonConfig,
    pub msix: MsixSnapshot,
    pub isr: u8,
    pub needs_reset: bool,
    pub active: bool,
    /// `(next_avail, next_used)` of each enabled queue, in queue order.
    #[serde(deserialize_with = "crate::bounded::vec::<_, _, { super::common_config::MAX_QUEUES }>")]
    pub queue_progress: Vec<(u16, u16)>,
    #[serde(deserialize_with = "crate::bounded::vec::<_, _, MAX_DEVICE_STATE>")]
    pub device_state: Vec<u8>,
}

/// Why a snapshot from the migration source cannot be loaded into this function.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("source device is `{saved}`, destination device is `{own}`")]
    Device { saved: String, own: String },
    #[error("PCI config: {0}")]
    Config(#[from] ConfigRestoreError),
    #[error("{0}")]
    Msix(#[from] MsixRestoreError),
    #[error("MSI-X {what} is {in_config} in config space but {in_table} in the table state")]
    MsixControl { what: &'static str, in_config: bool, in_table: bool },
    #[error("snapshot has {saved} queues, device has {own}")]
    QueueCount { saved: usize, own: usize },
    #[error("queue {index}: maximum size {saved} != {own}")]
    QueueMaxSize { index: usize, saved: u16, own: u16 },
    #[error("queue {index}: size {size} is not a power of two of at most {max}")]
    QueueSize { index: usize, size: u16, max: u16 },
    #[error("queue {index}: {ring} at {addr:#x} is not {align}-byte aligned")]
    RingAlignment { index: usize, ring: &'static str, addr: u64, align: u64 },
    #[error("queue {index}: {ring} at {addr:#x} ({len} bytes) is outside guest memory")]
    RingOutsideMemory { index: usize, ring: &'static str, addr: u64, len: u64 },
    #[error("queue {index}: {in_flight} buffers in flight (next_avail {next_avail}, next_used {next_used}) exceed its size {size}")]
    InFlight { index: usize, in_flight: u16, next_avail: u16, next_used: u16, size: u16 },
    #[error("{saved} queue positions for {enabled} enabled queues of an {state} device")]
    QueueProgress { saved: usize, enabled: usize, state: &'static str },
    #[error("{owner} MSI-X vector {vector} is beyond the {count}-vector table")]
    Vector { owner: String, vector: u16, count: u16 },
    #[error("{which} feature select {value} is beyond the {FEATURE_WORDS} feature words")]
    FeatureSelect { which: &'static str, value: u32 },
    #[error("queue select {value} is beyond the {count} queues")]
    QueueSelect { value: u16, count: usize },
    #[error("driver features {extra:#x} were not offered by this device")]
    Features { extra: u64 },
    #[error("FEATURES_OK is set but the driver did not accept VIRTIO_F_VERSION_1")]
    NoVersion1,
    #[error("device is active but status {status:#04x} lacks FEATURES_OK or DRIVER_OK")]
    ActiveStatus { status: u8 },
    #[error("ISR {0:#04x} has bits other than queue and configuration interrupts")]
    Isr(u8),
    #[error("{0}")]
    Migration(#[from] MigrationError),
}

/// The parts of the destination's own function a snapshot is checked against.
pub(super) struct Own<'a> {
    pub common: &'a CommonConfig,
    pub msix_vectors: u16,
    pub mem: &'a GuestMemoryMmap,
}

/// Checks everything in `snap` that does not need the configuration space or the
/// device model (those check themselves): the common configuration, queue rings and
/// positions, vector numbers and the ISR.
pub(super) fn check(snap: &VirtioPciSnapshot, own: &Own) -> Result<(), RestoreError> {
    check_common(&snap.common, own)?;
    if snap.msix.vectors.len() != usize::from(own.msix_vectors) {
        return Err(MsixRestoreError::VectorCount { own: usize::from(own.msix_vectors), saved: snap.msix.vectors.len() }.into());
    }
    if snap.isr & !ISR_BITS != 0 {
        return Err(RestoreError::Isr(snap.isr));
    }
    let enabled: Vec<usize> = snap.common.queues.iter().enumerate().filter(|(_, q)| q.enabled).map(|(i, _)| i).collect();
    if !snap.active {
        if !snap.queue_progress.is_empty() {
            return Err(RestoreError::QueueProgress { saved: snap.queue_progress.len(), enabled: enabled.len(), state: "inactive" });
        }
        return Ok(());
    }
    let wanted = status::FEATURES_OK | status::DRIVER_OK;
    if snap.common.status & wanted != wanted {
        return Err(RestoreError::ActiveStatus { status: snap.common.status });
    }
    if snap.queue_progress.len() != enabled.len() {
        return Err(RestoreError::QueueProgress { saved: snap.queue_progress.len(), enabled: enabled.len(), state: "active" });
    }
    for (&index, &(next_avail, next_used)) in enabled.iter().zip(snap.queue_progress.iter()) {
        let q = &snap.common.queues[index];
        let n = u64::from(q.size);
        check_rings(index, [("descriptor table", q.desc, 16, 16 * n), ("available ring", q.driver, 2, 6 + 2 * n), ("used ring", q.device, 4, 6 + 8 * n)], own.mem)?;
        let in_flight = next_avail.wrapping_sub(next_used);
        if in_flight > q.size {
            return Err(RestoreError::InFlight { index, in_flight, next_avail, next_used, size: q.size });
        }
    }
    Ok(())
}

fn check_common(saved: &CommonConfig, own: &Own) -> Result<(), RestoreError> {
    if saved.queues.len() != own.common.queues.len() {
        return Err(RestoreError::QueueCount { saved: saved.queues.len(), own: own.common.queues.len() });
    }
    for (which, value) in [("device", saved.device_feature_select), ("driver", saved.driver_feature_select)] {
        if value >= FEATURE_WORDS {
            return Err(RestoreError::FeatureSelect { which, value });
        }
    }
    // Drivers select existing queues only (a device without queues keeps select 0).
    if usize::from(saved.queue_select) >= saved.queues.len().max(1) {
        return Err(RestoreError::QueueSelect { value: saved.queue_select, count: saved.queues.len() });
    }
    let extra = saved.driver_features & !own.common.offered_features;
    if extra != 0 {
        return Err(RestoreError::Features { extra });
    }
    let vector_ok = |v: u16| v == NO_VECTOR || v < own.msix_vectors;
    if !vector_ok(saved.msix_config) {
        return Err(RestoreError::Vector { owner: "configuration".into(), vector: saved.msix_config, count: own.msix_vectors });
    }
    for (index, (q, mine)) in saved.queues.iter().zip(own.common.queues.iter()).enumerate() {
        if q.max_size != mine.max_size {
            return Err(RestoreError::QueueMaxSize { index, saved: q.max_size, own: mine.max_size });
        }
        if !q.size.is_power_of_two() || q.size > mine.max_size {
            return Err(RestoreError::QueueSize { index, size: q.size, max: mine.max_size });
        }
        if !vector_ok(q.msix_vector) {
            return Err(RestoreError::Vector { owner: format!("queue {index}"), vector: q.msix_vector, count: own.msix_vectors });
        }
    }
    // A driver only gets FEATURES_OK with VERSION_1 (common_config::write_status).
    if saved.status & status::FEATURES_OK != 0 && saved.driver_features & features::VERSION_1 == 0 {
        return Err(RestoreError::NoVersion1);
    }
    Ok(())
}

/// Each ring `(name, address, alignment, length)` of a split queue (virtio 1.x 2.7)
/// must be aligned and lie in guest memory, as activation would require.
fn check_rings(index: usize, rings: [(&'static str, u64, u64, u64); 3], mem: &GuestMemoryMmap) -> Result<(), RestoreError> {
    for (ring, addr, align, len) in rings {
        if addr % align != 0 {
            return Err(RestoreError::RingAlignment { index, ring, addr, align });
        }
        let fits = addr.checked_add(len).is_some() && mem.check_range(GuestAddress(addr), len as usize, Permissions::ReadWrite);
        if !fits {
            return Err(RestoreError::RingOutsideMemory { index, ring, addr, len });
        }
    }
    Ok(())
}
