//! Unit tests of the virtio-blk device, driven through mock virtqueues on real
//! guest memory and temporary image files.

mod config;
mod device;
mod harness;
mod io;
mod malformed;
mod open;
