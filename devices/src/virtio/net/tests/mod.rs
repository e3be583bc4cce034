//! Unit tests of the virtio-net device: mock virtqueues on real guest memory, a
//! socket pair standing in for the TAP, and (when permitted) one real TAP.

mod backend;
mod config;
mod ctrl;
mod device;
mod harness;
mod malformed;
mod migration;
mod rx;
mod tap;
mod tx;
