//! 8250/16550 UART (COM1) on vm-superio, with guest output going to any writer and
//! host input queued into the receive FIFO.

use std::io::{self, Write};

use crate::bus::BusDevice;
use crate::interrupt::Interrupt;

/// COM1 base port.
pub const COM1_PORT: u16 = 0x3f8;
/// COM1 legacy IRQ line.
pub const COM1_IRQ: u32 = 4;
/// Number of ports the UART decodes.
pub const UART_PORT_COUNT: u64 = 8;

/// Where guest output goes; boxed so the VMM can pick stdout, a file or a sink.
pub type SerialOutput = Box<dyn Write + Send>;

/// An 8250 UART bus device.
pub struct Serial {
    inner: vm_superio::Serial<Interrupt, vm_superio::serial::NoEvents, SerialOutput>,
}

impl Serial {
    /// A UART raising `interrupt` and writing guest output to `output`.
    pub fn new(interrupt: Interrupt, output: SerialOutput) -> Self {
        Self { inner: vm_superio::Serial::new(interrupt, output) }
    }

    /// Queues host input for the guest. Returns how many bytes fit in the FIFO; the
    /// caller retries the rest later.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let room = self.inner.fifo_capacity();
        let take = bytes.len().min(room);
        if take == 0 {
            return Ok(0);
        }
        self.inner
            .enqueue_raw_bytes(&bytes[..take])
            .map_err(|e| io::Error::other(format!("serial input: {e:?}")))
    }

    /// Free room in the receive FIFO.
    pub fn input_room(&self) -> usize {
        self.inner.fifo_capacity()
    }

    /// Flushes buffered guest output to its writer.
    pub fn flush_output(&mut self) -> io::Result<()> {
        self.inner.writer_mut().flush()
    }
}

impl BusDevice for Serial {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if data.len() != 1 || offset >= UART_PORT_COUNT {
            data.fill(0xff);
            return;
        }
        data[0] = self.inner.read(offset as u8);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if data.len() != 1 || offset >= UART_PORT_COUNT {
            return;
        }
        if let Err(e) = self.inner.write(offset as u8, data[0]) {
            tracing::warn!("serial write failed: {e:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct SharedBuf(Arc<Mutex<Vec<u8>>>);
    impl Write for SharedBuf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn guest_output_reaches_writer_and_input_reaches_guest() {
        let out = SharedBuf::default();
        let irq = Interrupt::new().unwrap();
        let mut s = Serial::new(irq.clone(), Box::new(out.clone()));
        for b in b"hi" {
            s.write(0, &[*b]);
        }
        assert_eq!(&*out.0.lock().unwrap(), b"hi");

        // Enable the receive-data interrupt, then queue input.
        s.write(1, &[0x01]);
        assert_eq!(s.enqueue_input(b"x").unwrap(), 1);
        assert_eq!(irq.event().read().unwrap(), 1, "input raised the interrupt");
        let mut lsr = [0u8];
        s.read(5, &mut lsr);
        assert_eq!(lsr[0] & 1, 1, "data ready");
        let mut rbr = [0u8];
        s.read(0, &mut rbr);
        assert_eq!(rbr[0], b'x');
    }

    #[test]
    fn wide_accesses_are_ignored() {
        let out = SharedBuf::default();
        let mut s = Serial::new(Interrupt::new().unwrap(), Box::new(out.clone()));
        s.write(0, &[b'a', b'b']);
        let mut d = [0u8; 2];
        s.read(0, &mut d);
        assert_eq!(d, [0xff, 0xff]);
        assert!(out.0.lock().unwrap().is_empty());
    }
}
