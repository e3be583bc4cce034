//! i8042 keyboard controller, present so a guest can reset the machine (`reboot=k`).

use crate::bus::BusDevice;
use crate::power::{PowerRequest, PowerRequestSink};

/// First i8042 port (data); the command/status port is at +4.
pub const I8042_PORT: u16 = 0x60;
/// Ports decoded: 0x60..=0x64.
pub const I8042_PORT_COUNT: u64 = 5;

struct ResetTrigger(PowerRequestSink);

impl vm_superio::Trigger for ResetTrigger {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        (self.0)(PowerRequest::Reset);
        Ok(())
    }
}

/// The i8042 bus device; a CPU-reset command becomes [`PowerRequest::Reset`].
pub struct I8042 {
    inner: vm_superio::I8042Device<ResetTrigger>,
}

impl I8042 {
    /// A controller that reports resets to `power`.
    pub fn new(power: PowerRequestSink) -> Self {
        Self { inner: vm_superio::I8042Device::new(ResetTrigger(power)) }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if data.len() != 1 || (offset != 0 && offset != 4) {
            data.fill(0xff);
            return;
        }
        data[0] = self.inner.read(offset as u8);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if data.len() == 1 && (offset == 0 || offset == 4) {
            let _ = self.inner.write(offset as u8, data[0]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn reset_command_requests_reset() {
        let seen = Arc::new(Mutex::new(vec![]));
        let s = seen.clone();
        let mut dev = I8042::new(Arc::new(move |r| s.lock().unwrap().push(r)));
        dev.write(4, &[0xfe]);
        assert_eq!(*seen.lock().unwrap(), vec![PowerRequest::Reset]);
    }
}
