//! The virtio-pci common configuration structure (virtio 1.x 4.1.4.3): feature
//! negotiation, device status, and per-queue setup, as plain data.

use crate::virtio::{features, status};

/// "No MSI-X vector" value.
pub const NO_VECTOR: u16 = 0xffff;
/// Most queues a migrated common configuration may describe.
pub const MAX_QUEUES: usize = 1024;

/// One queue as the driver configured it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueueSetup {
    pub max_size: u16,
    pub size: u16,
    pub enabled: bool,
    pub msix_vector: u16,
    pub desc: u64,
    pub driver: u64,
    pub device: u64,
}

impl QueueSetup {
    fn new(max_size: u16) -> Self {
        Self { max_size, size: max_size, enabled: false, msix_vector: NO_VECTOR, desc: 0, driver: 0, device: 0 }
    }
}

/// What a write asks the transport to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusChange {
    None,
    /// Status was written as 0: reset the device.
    Reset,
    /// DRIVER_OK was set: activate the device.
    Activate,
}

/// Common configuration state.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CommonConfig {
    pub offered_features: u64,
    pub device_feature_select: u32,
    pub driver_feature_select: u32,
    pub driver_features: u64,
    pub msix_config: u16,
    pub status: u8,
    pub config_generation: u8,
    pub queue_select: u16,
    #[serde(deserialize_with = "crate::bounded::vec::<_, _, MAX_QUEUES>")]
    pub queues: Vec<QueueSetup>,
}

fn set_half(value: &mut u64, high: bool, half: u32) {
    if high {
        *value = (*value & 0xffff_ffff) | (u64::from(half) << 32);
    } else {
        *value = (*value & !0xffff_ffff) | u64::from(half);
    }
}

impl CommonConfig {
    /// Fresh state for a device offering `offered_features` with these queues.
    pub fn new(offered_features: u64, queue_max_sizes: &[u16]) -> Self {
        Self {
            offered_features,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            msix_config: NO_VECTOR,
            status: 0,
            config_generation: 0,
            queue_select: 0,
            queues: queue_max_sizes.iter().map(|m| QueueSetup::new(*m)).collect(),
        }
    }

    /// Back to power-on state (driver reset), keeping the device's offer.
    pub fn reset(&mut self) {
        let sizes: Vec<u16> = self.queues.iter().map(|q| q.max_size).collect();
        *self = Self::new(self.offered_features, &sizes);
    }

    fn selected(&self) -> Option<&QueueSetup> {
        self.queues.get(usize::from(self.queue_select))
    }

    fn selected_mut(&mut self) -> Option<&mut QueueSetup> {
        self.queues.get_mut(usize::from(self.queue_select))
    }

    /// Value of the register at `offset` (registers are read at their natural width;
    /// narrower reads take the low bytes of the register's remainder).
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        let q = self.selected();
        let (base, value): (u64, u64) = match offset {
            0x00..=0x03 => (0x00, u64::from(self.device_feature_select)),
            0x04..=0x07 => (0x04, match self.device_feature_select {
                0 => self.offered_features & 0xffff_ffff,
                1 => self.offered_features >> 32,
                _ => 0,
            }),
            0x08..=0x0b => (0x08, u64::from(self.driver_feature_select)),
            0x0c..=0x0f => (0x0c, match self.driver_feature_select {
                0 => self.driver_features & 0xffff_ffff,
                1 => self.driver_features >> 32,
                _ => 0,
            }),
            0x10..=0x11 => (0x10, u64::from(self.msix_config)),
            0x12..=0x13 => (0x12, self.queues.len() as u64),
            0x14 => (0x14, u64::from(self.status)),
            0x15 => (0x15, u64::from(self.config_generation)),
            0x16..=0x17 => (0x16, u64::from(self.queue_select)),
            0x18..=0x19 => (0x18, q.map_or(0, |q| u64::from(q.size))),
            0x1a..=0x1b => (0x1a, q.map_or(u64::from(NO_VECTOR), |q| u64::from(q.msix_vector))),
            0x1c..=0x1d => (0x1c, q.map_or(0, |q| u64::from(q.enabled))),
            // queue_notify_off: queue i notifies at i * multiplier.
            0x1e..=0x1f => (0x1e, u64::from(self.queue_select)),
            0x20..=0x27 => (0x20, q.map_or(0, |q| q.desc)),
            0x28..=0x2f => (0x28, q.map_or(0, |q| q.driver)),
            0x30..=0x37 => (0x30, q.map_or(0, |q| q.device)),
            _ => (offset, 0),
        };
        let bytes = (value >> ((offset - base) * 8)).to_le_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = bytes.get(i).copied().unwrap_or(0);
        }
    }

    /// Applies a driver write; returns what the transport must do about status.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> StatusChange {
        let mut buf = [0u8; 8];
        let n = data.len().min(8);
        buf[..n].copy_from_slice(&data[..n]);
        let v = u64::from_le_bytes(buf);
        let v32 = v as u32;
        let v16 = v as u16;
        // Queue fields are frozen once the queue is enabled (virtio 1.x 4.1.4.3.2).
        let queue_writable = self.selected().is_some_and(|q| !q.enabled);
        match (offset, n) {
            (0x00, 4) => self.device_feature_select = v32,
            (0x08, 4) => self.driver_feature_select = v32,
            (0x0c, 4) => {
                // Features can only change before FEATURES_OK.
                if self.status & status::FEATURES_OK == 0 {
                    match self.driver_feature_select {
                        0 => set_half(&mut self.driver_features, false, v32),
                        1 => set_half(&mut self.driver_features, true, v32),
                        _ => {}
                    }
                }
            }
            (0x10, 2) => self.msix_config = v16,
            (0x14, 1) => return self.write_status(v as u8),
            (0x16, 2) => self.queue_select = v16,
            (0x18, 2) if queue_writable => {
                if let Some(q) = self.selected_mut() {
                    // Split-ring sizes are powers of two up to the maximum.
                    if v16.is_power_of_two() && v16 <= q.max_size {
                        q.size = v16;
                    }
                }
            }
            (0x1a, 2) => {
                if let Some(q) = self.selected_mut() {
                    q.msix_vector = v16;
                }
            }
            (0x1c, 2) => {
                if let Some(q) = self.selected_mut() {
                    if v16 == 1 {
                        q.enabled = true;
                    }
                }
            }
            (0x20 | 0x24 | 0x28 | 0x2c | 0x30 | 0x34, 4) if queue_writable => {
                if let Some(q) = self.selected_mut() {
                    let high = offset % 8 == 4;
                    let field = match offset & !7 {
                        0x20 => &mut q.desc,
                        0x28 => &mut q.driver,
                        _ => &mut q.device,
                    };
                    set_half(field, high, v32);
                }
            }
            (0x20 | 0x28 | 0x30, 8) if queue_writable => {
                if let Some(q) = self.selected_mut() {
                    match offset {
                        0x20 => q.desc = v,
                        0x28 => q.driver = v,
                        _ => q.device = v,
                    }
                }
            }
            _ => tracing::debug!(offset, len = n, "ignored virtio common-config write"),
        }
        StatusChange::None
    }

    fn write_status(&mut self, value: u8) -> StatusChange {
        if value == 0 {
            return StatusChange::Reset;
        }
        let mut value = value;
        let newly = value & !self.status;
        if newly & status::FEATURES_OK != 0 {
            let unsupported = self.driver_features & !self.offered_features;
            if unsupported != 0 || self.driver_features & features::VERSION_1 == 0 {
                // Refuse: the driver reads FEATURES_OK back as clear and gives up.
                value &= !status::FEATURES_OK;
            }
        }
        let activate = newly & status::DRIVER_OK != 0 && value & status::FEATURES_OK != 0;
        if newly & status::DRIVER_OK != 0 && value & status::FEATURES_OK == 0 {
            value &= !status::DRIVER_OK;
        }
        self.status = value;
        if activate { StatusChange::Activate } else { StatusChange::None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read32(c: &CommonConfig, off: u64) -> u32 {
        let mut d = [0u8; 4];
        c.read(off, &mut d);
        u32::from_le_bytes(d)
    }

    #[test]
    fn feature_negotiation() {
        let mut c = CommonConfig::new(features::VERSION_1 | 0x5, &[256]);
        c.write(0x00, &1u32.to_le_bytes());
        assert_eq!(read32(&c, 0x04), 1);
        c.write(0x08, &0u32.to_le_bytes());
        c.write(0x0c, &0x4u32.to_le_bytes());
        c.write(0x08, &1u32.to_le_bytes());
        c.write(0x0c, &1u32.to_le_bytes());
        assert_eq!(c.driver_features, features::VERSION_1 | 4);
        assert_eq!(c.write(0x14, &[status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK]), StatusChange::None);
        assert_ne!(c.status & status::FEATURES_OK, 0);
        // Features are frozen after FEATURES_OK.
        c.write(0x08, &0u32.to_le_bytes());
        c.write(0x0c, &0u32.to_le_bytes());
        assert_eq!(c.driver_features, features::VERSION_1 | 4);
        assert_eq!(c.write(0x14, &[0x0f]), StatusChange::Activate);
        assert_eq!(c.write(0x14, &[0]), StatusChange::Reset);
    }

    #[test]
    fn unsupported_features_are_refused() {
        let mut c = CommonConfig::new(features::VERSION_1, &[256]);
        c.write(0x08, &0u32.to_le_bytes());
        c.write(0x0c, &0x8u32.to_le_bytes());
        c.write(0x08, &1u32.to_le_bytes());
        c.write(0x0c, &1u32.to_le_bytes());
        c.write(0x14, &[status::FEATURES_OK]);
        assert_eq!(c.status & status::FEATURES_OK, 0);
        // DRIVER_OK without FEATURES_OK does not activate.
        assert_eq!(c.write(0x14, &[status::DRIVER_OK]), StatusChange::None);
    }

    #[test]
    fn queue_setup_and_freeze() {
        let mut c = CommonConfig::new(features::VERSION_1, &[256, 128]);
        assert_eq!(read32(&c, 0x12) & 0xffff, 2);
        c.write(0x16, &1u16.to_le_bytes());
        assert_eq!(read32(&c, 0x18) & 0xffff, 128);
        c.write(0x18, &100u16.to_le_bytes()); // not a power of two
        c.write(0x18, &512u16.to_le_bytes()); // above max
        c.write(0x18, &64u16.to_le_bytes());
        c.write(0x20, &0x1000u32.to_le_bytes());
        c.write(0x24, &0x1u32.to_le_bytes());
        c.write(0x1a, &3u16.to_le_bytes());
        c.write(0x1c, &1u16.to_le_bytes());
        c.write(0x20, &0x2000u32.to_le_bytes()); // frozen
        c.write(0x18, &32u16.to_le_bytes()); // frozen
        let q = c.queues[1];
        assert_eq!((q.size, q.desc, q.msix_vector, q.enabled), (64, 0x1_0000_1000, 3, true));
        // Selecting a queue that does not exist reads zeros and ignores writes.
        c.write(0x16, &9u16.to_le_bytes());
        assert_eq!(read32(&c, 0x18) & 0xffff, 0);
        c.write(0x1c, &1u16.to_le_bytes());
        c.reset();
        assert!(!c.queues[1].enabled);
        assert_eq!(c.queues[1].size, 128);
    }
}
