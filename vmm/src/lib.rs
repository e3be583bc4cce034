//! The tern machine: KVM VM and vCPUs, guest memory, direct Linux boot, device wiring,
//! pause/resume.

pub mod api;
pub mod boot;
pub mod cpuid;
pub mod events;
pub mod host_check;
pub mod kvm_vm;
pub mod layout;
pub mod legacy_devices;
pub mod machine;
pub mod machine_parts;
pub mod memory;
pub mod memory_placement;
pub mod migrate;
pub mod msi_routing;
pub mod owner_socket;
pub mod pci_devices;
pub mod reboot;
pub mod snapshot;
pub mod state;
pub mod vcpu;
pub mod vmgenid;

pub use machine::{Boot, Machine, MachineConfig, MachineError, MachineExit};
pub use reboot::OnReboot;
