//! Device models for tern.
//!
//! Devices here know nothing about KVM: they see register reads and writes routed by a
//! [`bus::Bus`], raise interrupts through [`interrupt::Interrupt`] handles (an eventfd that
//! the VMM wires to an irqfd), and report guest power requests through
//! [`power::PowerRequestSink`].

pub mod bounded;
pub mod bus;
pub mod interrupt;
pub mod legacy;
pub mod pci;
pub mod power;
pub mod sync;
pub mod virtio;
