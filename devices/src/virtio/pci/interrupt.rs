//! Virtio interrupts over MSI-X: each queue and the config change have a vector the
//! driver chose; the ISR byte is kept for drivers that read it.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU8, Ordering};
use std::sync::Arc;

use super::common_config::NO_VECTOR;
use crate::pci::msix::Msix;
use crate::virtio::VirtioInterrupt;

/// ISR bit: a queue has used buffers.
pub const ISR_QUEUE: u8 = 1;
/// ISR bit: configuration changed.
pub const ISR_CONFIG: u8 = 2;

/// Interrupt state shared by the transport (which sets vectors) and the device worker
/// (which signals).
pub struct PciInterrupt {
    pub msix: Arc<Msix>,
    pub queue_vectors: Vec<AtomicU16>,
    pub config_vector: AtomicU16,
    pub isr: AtomicU8,
    pub needs_reset: AtomicBool,
}

impl PciInterrupt {
    /// Interrupt state for `queues` queues, all vectors unassigned.
    pub fn new(msix: Arc<Msix>, queues: usize) -> Self {
        Self {
            msix,
            queue_vectors: (0..queues).map(|_| AtomicU16::new(NO_VECTOR)).collect(),
            config_vector: AtomicU16::new(NO_VECTOR),
            isr: AtomicU8::new(0),
            needs_reset: AtomicBool::new(false),
        }
    }

    fn signal_vector(&self, vector: u16) -> io::Result<()> {
        if vector == NO_VECTOR {
            return Ok(());
        }
        self.msix.signal(vector)
    }
}

impl VirtioInterrupt for PciInterrupt {
    fn signal_queue(&self, queue: u16) -> io::Result<()> {
        self.isr.fetch_or(ISR_QUEUE, Ordering::SeqCst);
        let vector = self.queue_vectors.get(usize::from(queue)).map_or(NO_VECTOR, |v| v.load(Ordering::Acquire));
        self.signal_vector(vector)
    }

    fn signal_config(&self) -> io::Result<()> {
        self.isr.fetch_or(ISR_CONFIG, Ordering::SeqCst);
        self.signal_vector(self.config_vector.load(Ordering::Acquire))
    }

    fn set_needs_reset(&self) {
        self.needs_reset.store(true, Ordering::SeqCst);
        if let Err(e) = self.signal_config() {
            tracing::warn!("signalling device-needs-reset: {e}");
        }
    }
}
