//! The tern machine: KVM VM and vCPUs, guest memory, direct Linux boot, device wiring,
//! pause/resume.

pub mod boot;
pub mod layout;
pub mod memory;
