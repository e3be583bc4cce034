//! Virtio devices and what they share: the device trait the PCI transport drives,
//! the interrupt interface, feature bits, and device status bits.
//!
//! Life cycle: the transport (virtio-pci) negotiates features and queue layout with
//! the driver; on DRIVER_OK it calls [`VirtioDevice::activate`] with ready queues,
//! their notification eventfds and an interrupt handle; the device starts its worker
//! thread. A driver reset (status 0) calls [`VirtioDevice::reset`], which stops the
//! worker and returns the queues so the transport can start over.

pub mod block;
pub mod net;
pub mod pci;
#[cfg(test)]
pub(crate) mod test_memory;

use std::io;
use std::sync::Arc;

use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

/// Guest memory as devices see it (writes through it set the dirty bitmap).
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<vm_memory::bitmap::AtomicBitmap>;

/// Virtio device type ids (virtio 1.x section 5).
pub mod device_type {
    pub const NET: u32 = 1;
    pub const BLOCK: u32 = 2;
}

/// Feature bits common to all devices.
pub mod features {
    /// Indirect descriptor tables.
    pub const RING_INDIRECT_DESC: u64 = 1 << 28;
    /// used_event / avail_event notification suppression.
    pub const RING_EVENT_IDX: u64 = 1 << 29;
    /// Virtio 1.x (modern) device.
    pub const VERSION_1: u64 = 1 << 32;
}

/// Device status bits written by the driver.
pub mod status {
    pub const ACKNOWLEDGE: u8 = 1;
    pub const DRIVER: u8 = 2;
    pub const DRIVER_OK: u8 = 4;
    pub const FEATURES_OK: u8 = 8;
    pub const DEVICE_NEEDS_RESET: u8 = 64;
    pub const FAILED: u8 = 128;
}

/// How a device interrupts the driver. Implemented by the transport (MSI-X vectors).
pub trait VirtioInterrupt: Send + Sync {
    /// Signals "used buffers in queue `queue`".
    fn signal_queue(&self, queue: u16) -> io::Result<()>;
    /// Signals "device configuration changed" (e.g. link status, capacity).
    fn signal_config(&self) -> io::Result<()>;
    /// Marks the device as needing a reset (a driver-side protocol violation) and
    /// tells the driver through a configuration interrupt.
    fn set_needs_reset(&self);
}

/// One queue handed to a device at activation.
pub struct ActiveQueue {
    /// Queue with the driver's ring addresses and size, ready.
    pub queue: Queue,
    /// Written (by KVM, through an ioeventfd) when the driver notifies this queue.
    pub notify: EventFd,
}

/// Everything a device needs to start serving its queues.
pub struct ActivateContext {
    pub mem: GuestMemoryMmap,
    /// Features both sides agreed on.
    pub acked_features: u64,
    pub queues: Vec<ActiveQueue>,
    pub interrupt: Arc<dyn VirtioInterrupt>,
}

/// Errors activating a device.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error("device expects {expected} queues, driver enabled {got}")]
    QueueCount { expected: usize, got: usize },
    #[error("cannot start device worker: {0}")]
    Worker(io::Error),
    #[error("{0}")]
    Other(String),
}

/// A virtio device model behind a transport.
pub trait VirtioDevice: Send {
    /// Virtio device type ([`device_type`]).
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; its length is the number of queues.
    fn queue_max_sizes(&self) -> Vec<u16>;
    /// Features the device offers (must include [`features::VERSION_1`]).
    fn offered_features(&self) -> u64;
    /// Reads the device-specific configuration space. Bytes past its end read as 0.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device-specific configuration space (most fields are read-only).
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// Starts serving the queues.
    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError>;
    /// Stops serving (worker joined, in-flight requests finished). Returns false when
    /// the device cannot be reset, which the transport reports as a failed reset.
    fn reset(&mut self) -> bool;

    // ---- live migration. A device that cannot migrate refuses in `pause`, so a
    // migration never proceeds with a device still running behind its back.

    /// Parks the worker at a request boundary (in-flight requests completed, used
    /// rings updated), keeping the queues for [`VirtioDevice::resume`]. A device that
    /// is not active has nothing to park.
    fn pause(&mut self) -> Result<(), MigrationError> {
        Err(MigrationError::Unsupported(self.device_type()))
    }
    /// Restarts a worker parked by [`VirtioDevice::pause`].
    fn resume(&mut self) -> Result<(), MigrationError> {
        Err(MigrationError::Unsupported(self.device_type()))
    }
    /// `(next_avail, next_used)` of every active queue, valid while paused.
    fn queue_progress(&self) -> Vec<(u16, u16)> {
        Vec::new()
    }
    /// Device-specific state to carry to the destination (opaque bytes).
    fn save_state(&self) -> Vec<u8> {
        Vec::new()
    }
    /// Loads state saved by [`VirtioDevice::save_state`] on the source (before activation).
    /// A device that saves nothing refuses state it did not write.
    fn load_state(&mut self, state: &[u8]) -> Result<(), MigrationError> {
        if state.is_empty() {
            Ok(())
        } else {
            Err(MigrationError::Failed(format!("virtio device type {} keeps no state, the snapshot carries {} bytes", self.device_type(), state.len())))
        }
    }
    /// Makes completed guest writes durable before the hand-over (disks: fdatasync).
    fn flush(&mut self) -> Result<(), MigrationError> {
        Ok(())
    }
    /// Gives up exclusive host resources (disk image locks) for the destination.
    fn release_backend(&mut self) -> Result<(), MigrationError> {
        Ok(())
    }
    /// Takes exclusive host resources (after a failed hand-over, or on the destination).
    fn acquire_backend(&mut self) -> Result<(), MigrationError> {
        Ok(())
    }
    /// Called on the destination once the guest runs again (virtio-net announces).
    fn after_migration(&mut self) {}
    /// A disk's image as attached (path, read-only, serial), for snapshots to copy
    /// or record; `None` for anything that is not a disk.
    fn disk_image(&self) -> Option<block::BlockConfig> {
        None
    }
    /// A description the destination checks its own device against.
    fn describe(&self) -> String {
        format!("virtio device type {}", self.device_type())
    }
}

/// Migration errors of a device.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("virtio device type {0} does not support live migration")]
    Unsupported(u32),
    #[error("{0}")]
    Failed(String),
}

/// Copies `data.len()` bytes of `config` starting at `offset` into `data`, zero-filling
/// anything past the end. Shared by devices whose config space is a byte array.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else { return };
    if start >= config.len() {
        return;
    }
    let end = config.len().min(start.saturating_add(data.len()));
    data[..end - start].copy_from_slice(&config[start..end]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_are_bounded() {
        let cfg = [1u8, 2, 3, 4];
        let mut d = [9u8; 4];
        read_config_bytes(&cfg, 2, &mut d);
        assert_eq!(d, [3, 4, 0, 0]);
        read_config_bytes(&cfg, u64::MAX, &mut d);
        assert_eq!(d, [0; 4]);
    }
}
