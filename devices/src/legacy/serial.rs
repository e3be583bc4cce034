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

type Output = super::serial_output::LineBuffered<SerialOutput>;

/// An 8250 UART bus device.
pub struct Serial {
    inner: vm_superio::Serial<Interrupt, vm_superio::serial::NoEvents, Output>,
    interrupt: Interrupt,
}

/// UART registers and receive FIFO, for migration (mirrors vm-superio's `SerialState`,
/// which has no serde).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SerialSnapshot {
    pub baud_divisor_low: u8,
    pub baud_divisor_high: u8,
    pub interrupt_enable: u8,
    pub interrupt_identification: u8,
    pub line_control: u8,
    pub line_status: u8,
    pub modem_control: u8,
    pub modem_status: u8,
    pub scratch: u8,
    pub in_buffer: Vec<u8>,
}

impl Serial {
    /// A UART raising `interrupt` and writing guest output to `output`.
    pub fn new(interrupt: Interrupt, output: SerialOutput) -> Self {
        Self { inner: vm_superio::Serial::new(interrupt.clone(), Output::new(output)), interrupt }
    }

    /// Whether the guest enabled the transmit-holding-register-empty interrupt (and is
    /// not addressing the divisor latch).
    pub fn transmit_interrupt_enabled(&self) -> bool {
        const IER_THRI: u8 = 0x02;
        const LCR_DLAB: u8 = 0x80;
        let s = self.inner.state();
        s.interrupt_enable & IER_THRI != 0 && s.line_control & LCR_DLAB == 0
    }

    /// Puts the registers back to their power-on state (a machine reset), keeping the
    /// interrupt and the output (pending output is flushed first). Unread input is
    /// dropped, as a reset UART drops it.
    pub fn reset(&mut self) -> io::Result<()> {
        let flushed = self.flush_output();
        let placeholder = vm_superio::Serial::new(self.interrupt.clone(), Output::new(Box::new(io::sink())));
        let output = std::mem::replace(&mut self.inner, placeholder).into_writer();
        self.inner = vm_superio::Serial::new(self.interrupt.clone(), output);
        flushed
    }

    /// Register state.
    pub fn snapshot(&self) -> SerialSnapshot {
        let s = self.inner.state();
        SerialSnapshot {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer,
        }
    }

    /// Loads register state, keeping this UART's interrupt and output.
    pub fn restore(&mut self, snap: &SerialSnapshot) -> io::Result<()> {
        let state = vm_superio::serial::SerialState {
            baud_divisor_low: snap.baud_divisor_low,
            baud_divisor_high: snap.baud_divisor_high,
            interrupt_enable: snap.interrupt_enable,
            interrupt_identification: snap.interrupt_identification,
            line_control: snap.line_control,
            line_status: snap.line_status,
            modem_control: snap.modem_control,
            modem_status: snap.modem_status,
            scratch: snap.scratch,
            in_buffer: snap.in_buffer.clone(),
        };
        let placeholder = vm_superio::Serial::new(self.interrupt.clone(), Output::new(Box::new(io::sink())));
        let output = std::mem::replace(&mut self.inner, placeholder).into_writer();
        match vm_superio::Serial::from_state(&state, self.interrupt.clone(), vm_superio::serial::NoEvents, output) {
            Ok(inner) => {
                self.inner = inner;
                Ok(())
            }
            Err(e) => Err(io::Error::other(format!("serial state: {e:?}"))),
        }
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

    /// Writes out a partial line once the guest has been quiet for `quiet`.
    pub fn flush_output_if_idle(&mut self, quiet: std::time::Duration) -> io::Result<()> {
        self.inner.writer_mut().flush_if_idle(quiet)
    }

    /// Flushes buffered guest output to its writer.
    pub fn flush_output(&mut self) -> io::Result<()> {
        self.inner.writer_mut().flush_now()
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
        s.flush_output().unwrap();
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
    fn snapshot_restore_keeps_registers_and_fifo() {
        let out = SharedBuf::default();
        let mut a = Serial::new(Interrupt::new().unwrap(), Box::new(out.clone()));
        a.write(3, &[0x83]); // DLAB + 8 bits
        a.write(0, &[0x0c]); // divisor low
        a.write(3, &[0x03]);
        a.write(7, &[0x5a]); // scratch
        a.enqueue_input(b"ab").unwrap();
        let snap = a.snapshot();
        let out2 = SharedBuf::default();
        let mut b = Serial::new(Interrupt::new().unwrap(), Box::new(out2.clone()));
        b.restore(&snap).unwrap();
        assert_eq!(b.snapshot(), snap);
        let mut d = [0u8];
        b.read(0, &mut d);
        assert_eq!(d[0], b'a');
        b.write(0, b"z");
        b.flush_output().unwrap();
        assert_eq!(&*out2.0.lock().unwrap(), b"z", "restored UART writes to its own output");
    }

    #[test]
    fn reset_restores_power_on_registers_and_keeps_the_output() {
        let out = SharedBuf::default();
        let mut s = Serial::new(Interrupt::new().unwrap(), Box::new(out.clone()));
        let power_on = s.snapshot();
        s.write(3, &[0x83]);
        s.write(0, &[0x0c]);
        s.write(3, &[0x03]);
        s.write(1, &[0x02]);
        s.write(0, b"a");
        s.enqueue_input(b"q").unwrap();
        assert_ne!(s.snapshot(), power_on);
        s.reset().unwrap();
        assert_eq!(s.snapshot(), power_on);
        assert_eq!(&*out.0.lock().unwrap(), b"a", "pending output flushed before the reset");
        s.write(0, b"b");
        s.flush_output().unwrap();
        assert_eq!(&*out.0.lock().unwrap(), b"ab", "same output after the reset");
    }

    #[test]
    fn wide_accesses_are_ignored() {
        let out = SharedBuf::default();
        let mut s = Serial::new(Interrupt::new().unwrap(), Box::new(out.clone()));
        s.write(0, b"ab");
        let mut d = [0u8; 2];
        s.read(0, &mut d);
        assert_eq!(d, [0xff, 0xff]);
        assert!(out.0.lock().unwrap().is_empty());
    }
}
