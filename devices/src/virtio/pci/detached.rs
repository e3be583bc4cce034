//! What a virtio-pci function holds once its device model was taken out for the next
//! boot of the machine (a guest reboot builds a new machine around the same models):
//! an inert stand-in that offers nothing and refuses to activate.

use crate::virtio::{ActivateContext, ActivateError, VirtioDevice};

/// The stand-in; see the module docs.
pub(super) struct Detached {
    device_type: u32,
    queue_max_sizes: Vec<u16>,
}

impl Detached {
    /// A stand-in with the shape of `device` (type and queue count), so the old
    /// function stays self-consistent until it is dropped.
    pub(super) fn like(device: &dyn VirtioDevice) -> Self {
        Self { device_type: device.device_type(), queue_max_sizes: device.queue_max_sizes() }
    }
}

impl VirtioDevice for Detached {
    fn device_type(&self) -> u32 {
        self.device_type
    }
    fn queue_max_sizes(&self) -> Vec<u16> {
        self.queue_max_sizes.clone()
    }
    fn offered_features(&self) -> u64 {
        0
    }
    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    fn activate(&mut self, _ctx: ActivateContext) -> Result<(), ActivateError> {
        Err(ActivateError::Other("the device was moved to the machine's next boot".into()))
    }
    fn reset(&mut self) -> bool {
        true
    }
}
