//! virtio-net receive path: the input describes guest memory and the receive
//! queue (and optionally the control queue), whether mergeable receive buffers
//! were negotiated, then a sequence of frames the network sends, worker events,
//! backend failures to inject and network-side actions. The NIC's data path runs
//! synchronously on a socket pair standing in for the TAP.
//!
//! Asserts: no panic; no access outside guest memory (guard pages); the used ring
//! returns at most what was made available, with valid ids; no more frames are
//! delivered than the network sent; the used lengths add up to exactly the frames
//! counted as delivered (their bytes plus a vnet header each).
#![no_main]

use devices::virtio::net::HEADER_LEN;
use libfuzzer_sys::fuzz_target;
use tern_fuzz::encoding::decode;
use tern_fuzz::inputs::NetInput;
use tern_fuzz::net_run::{run, Under};

fuzz_target!(|data: &[u8]| {
    let Some(input) = decode::<NetInput>(data) else { return };
    let out = run(&input, Under::Rx);
    let stats = out.stats;
    assert!(stats.rx_frames <= out.sent.len() as u64, "{} frames delivered, {} sent", stats.rx_frames, out.sent.len());
    let used: u64 = out.used.iter().map(|&(_, len)| u64::from(len)).sum();
    assert_eq!(used, stats.rx_bytes + HEADER_LEN as u64 * stats.rx_frames, "used lengths vs delivered frames");
    let _ = out.mem;
});
