//! virtio-net receive path: the input describes guest memory and the receive
//! queue (and optionally the control queue), whether mergeable receive buffers
//! were negotiated, then a sequence of frames the network sends, worker events,
//! backend failures to inject and network-side actions. The NIC's data path runs
//! synchronously on a socket pair standing in for the TAP.
//!
//! Asserts: no panic; no access outside guest memory (guard pages); the device
//! returns at most as many chains as were made available; no more frames, and no
//! more bytes, are delivered than the network sent.
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
    // Delivered bytes cannot exceed what was sent (headers included).
    let sent: u64 = out.sent.iter().map(|f| f.len() as u64).sum();
    assert!(stats.rx_bytes + HEADER_LEN as u64 * stats.rx_frames <= sent, "more bytes delivered than sent");
});
