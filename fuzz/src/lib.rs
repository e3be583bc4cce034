//! Shared pieces of tern's fuzz targets.
//!
//! - [`encoding`]: the input byte format. Inputs are read with `arbitrary` (derived
//!   for structs and enums, front to back), and written by [`encoding::Encode`], so
//!   the seed generator (`examples/gen_seeds.rs`) can write inputs that decode to
//!   exactly the structures it means;
//! - [`guarded_memory`]: guest memory whose regions are fenced by inaccessible host
//!   pages, so a device access outside guest memory faults instead of going unseen;
//! - [`inputs`]: the input structures of the virtio targets;
//! - [`net_run`]: one run of the virtio-net data path (both net targets);
//! - [`virtqueue`]: the driver side of a split virtqueue, described by the input.

pub mod encoding;
pub mod guarded_memory;
pub mod inputs;
pub mod net_run;
pub mod virtqueue;
