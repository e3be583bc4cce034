//! VM-wide KVM state: the in-kernel PICs and IOAPIC, the PIT, and kvmclock.

use kvm_bindings::{kvm_clock_data, kvm_irqchip, kvm_pit_state2, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE};
use kvm_ioctls::VmFd;
use serde::{Deserialize, Serialize};

use super::StateError;

/// The VM's interrupt controllers, timer and clock. Decoding refuses structures of
/// any other size than their own.
#[derive(Serialize, Deserialize)]
pub struct VmState {
    #[serde(deserialize_with = "super::wire::exact")]
    pub pic_master: kvm_irqchip,
    #[serde(deserialize_with = "super::wire::exact")]
    pub pic_slave: kvm_irqchip,
    #[serde(deserialize_with = "super::wire::exact")]
    pub ioapic: kvm_irqchip,
    #[serde(deserialize_with = "super::wire::exact")]
    pub pit: kvm_pit_state2,
    #[serde(deserialize_with = "super::wire::exact")]
    pub clock: kvm_clock_data,
}

fn vm_ioctl(step: &'static str) -> impl Fn(kvm_ioctls::Error) -> StateError {
    move |source| StateError::Vm { step, source }
}

fn get_chip(vm: &VmFd, chip_id: u32) -> Result<kvm_irqchip, StateError> {
    let mut chip = kvm_irqchip { chip_id, ..Default::default() };
    vm.get_irqchip(&mut chip).map_err(vm_ioctl("KVM_GET_IRQCHIP"))?;
    Ok(chip)
}

impl VmState {
    /// Captures the VM state (vCPUs parked).
    pub fn save(vm: &VmFd) -> Result<Self, StateError> {
        Ok(Self {
            pic_master: get_chip(vm, KVM_IRQCHIP_PIC_MASTER)?,
            pic_slave: get_chip(vm, KVM_IRQCHIP_PIC_SLAVE)?,
            ioapic: get_chip(vm, KVM_IRQCHIP_IOAPIC)?,
            pit: vm.get_pit2().map_err(vm_ioctl("KVM_GET_PIT2"))?,
            clock: vm.get_clock().map_err(vm_ioctl("KVM_GET_CLOCK"))?,
        })
    }

    /// Checks state received from a peer: each irqchip blob names the chip it is
    /// loaded into (KVM_SET_IRQCHIP picks the chip by the id inside the blob).
    pub fn check(&self) -> Result<(), StateError> {
        for (name, chip, expected) in [
            ("PIC master", &self.pic_master, KVM_IRQCHIP_PIC_MASTER),
            ("PIC slave", &self.pic_slave, KVM_IRQCHIP_PIC_SLAVE),
            ("IOAPIC", &self.ioapic, KVM_IRQCHIP_IOAPIC),
        ] {
            if chip.chip_id != expected {
                return Err(StateError::Refused(format!("{name} state carries chip id {}, expected {expected}", chip.chip_id)));
            }
        }
        Ok(())
    }

    /// Loads interrupt controllers and the PIT.
    pub fn restore_devices(&self, vm: &VmFd) -> Result<(), StateError> {
        self.check()?;
        vm.set_irqchip(&self.pic_master).map_err(vm_ioctl("KVM_SET_IRQCHIP (PIC master)"))?;
        vm.set_irqchip(&self.pic_slave).map_err(vm_ioctl("KVM_SET_IRQCHIP (PIC slave)"))?;
        vm.set_irqchip(&self.ioapic).map_err(vm_ioctl("KVM_SET_IRQCHIP (IOAPIC)"))?;
        vm.set_pit2(&self.pit).map_err(vm_ioctl("KVM_SET_PIT2"))?;
        Ok(())
    }

    /// Sets kvmclock to where the source's stood: the guest's clock continues from the
    /// pause (last, just before the vCPUs run).
    pub fn restore_clock(&self, vm: &VmFd) -> Result<(), StateError> {
        let clock = kvm_clock_data { clock: self.clock.clock, ..Default::default() };
        vm.set_clock(&clock).map_err(vm_ioctl("KVM_SET_CLOCK"))
    }
}
