//! Live migration building blocks, as plain data: the wire protocol (framing, versioned
//! messages, page batches with zero-page markers), the convergence policy that decides
//! when to stop copying and how hard to throttle, and the report a migration ends with.
//!
//! The orchestration that touches a running machine lives in `vmm::migrate`; it talks
//! to this crate only through these types.

pub mod convergence;
pub mod frame;
pub mod messages;
pub mod pages;
pub mod receiver;
pub mod report;
pub mod snapshot_report;

/// Protocol version spoken by this build. A peer with another version is refused.
/// 2: the config message's description records the boot source (`BootRecord`).
pub const PROTOCOL_VERSION: u32 = 2;
/// Magic number opening every Hello ("TERNMIG\0").
pub const MAGIC: u64 = 0x5445_524e_4d49_4700;
/// Guest page size the protocol moves.
pub const PAGE_SIZE: usize = 4096;
