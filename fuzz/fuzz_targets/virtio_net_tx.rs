//! virtio-net transmit path: the input describes guest memory and the transmit
//! queue (and optionally the control queue), then a sequence of worker events
//! (kicks, backend readable/writable/hang-up, transmit polling and its timer),
//! backend failures to inject, and network-side actions. The NIC's data path runs
//! synchronously on a socket pair standing in for the TAP.
//!
//! Asserts: no panic; no access outside guest memory (guard pages); the device
//! returns at most as many chains as were made available; every transmit chain
//! comes back with used length 0 (checked without a control queue, whose
//! acknowledgements may be pointed at the ring); every frame that reaches the network is
//! a vnet header plus at least an Ethernet header and at most MAX_BUFFER_LEN bytes;
//! the frames and bytes counted as sent are exactly those the network received
//! (unless it hung up).
#![no_main]

use devices::virtio::net::HEADER_LEN;
use libfuzzer_sys::fuzz_target;
use tern_fuzz::encoding::decode;
use tern_fuzz::inputs::NetInput;
use tern_fuzz::net_run::{run, Under};

fuzz_target!(|data: &[u8]| {
    let Some(input) = decode::<NetInput>(data) else { return };
    let out = run(&input, Under::Tx);
    // Transmit writes no guest memory, so the used ring is intact unless control
    // acknowledgements were written over it.
    if input.ctrl.is_none() {
        assert!(out.used.iter().all(|&(_, len)| len == 0), "transmit chain returned with a length: {:?}", out.used);
    }
    if !out.peer_closed {
        assert_eq!(out.stats.tx_frames, out.received.len() as u64, "frames sent vs received");
        let bytes: u64 = out.received.iter().map(|f| (f.len() - HEADER_LEN) as u64).sum();
        assert_eq!(out.stats.tx_bytes, bytes, "bytes sent vs received");
    }
});
