//! Migration stream decoding, as the destination does it: the input is the byte
//! stream from the source. Frames are read with `read_frame` (up to 64); a Pages
//! frame is parsed with `PageBatchView::parse` and its pages written into guarded
//! guest memory with the destination's `guest_pages::write_page`; every frame is
//! decoded with `Message::decode`, and a State message's payload with
//! `MachineState::decode`. The whole input is also tried directly as a page batch
//! and as a machine state.
//!
//! Asserts: no panic; no access outside guest memory (guard pages); a batch the
//! view accepts decodes to the same pages as an owned `PageBatch` and re-encodes
//! to the same bytes; every decoded message survives `send` + `receive` unchanged;
//! a decoded machine state re-encodes to bytes that decode and re-encode to
//! themselves.
#![no_main]

use libfuzzer_sys::fuzz_target;
use migration::frame::{read_frame, Kind};
use migration::messages::Message;
use migration::pages::{PageBatch, PageBatchView};
use migration::PAGE_SIZE;
use tern_fuzz::guarded_memory::{GuardedMemory, GuestMemoryMmap};
use vmm::migrate::guest_pages::write_page;
use vmm::state::MachineState;

const MAX_FRAMES: usize = 64;

fuzz_target!(|data: &[u8]| {
    let mem = GuardedMemory::fresh().mem();
    pages(mem, data);
    machine_state(data);

    let mut stream = data;
    let mut buf = Vec::new();
    for _ in 0..MAX_FRAMES {
        let Ok(kind) = read_frame(&mut stream, &mut buf) else { break };
        if kind == Kind::Pages {
            pages(mem, &buf);
        }
        let Ok(message) = Message::decode(kind, &buf) else { continue };
        let mut wire = Vec::new();
        message.send(&mut wire).expect("a decoded message encodes");
        let again = Message::receive(&mut &wire[..], &mut Vec::new()).expect("a re-encoded message decodes");
        assert_eq!(again, message, "message changed in a round trip");
        if let Message::State(bytes) = &message {
            machine_state(bytes);
        }
    }
});

/// Parses `bytes` as a page batch and, if valid, writes its pages into guest memory.
fn pages(mem: &GuestMemoryMmap, bytes: &[u8]) {
    let Ok(view) = PageBatchView::parse(bytes) else { return };
    let zero = [0u8; PAGE_SIZE];
    for (gpa, page) in view.iter() {
        let page = page.unwrap_or(&zero);
        assert_eq!(page.len(), PAGE_SIZE, "page of {} bytes", page.len());
        // Pages outside guest memory are refused with an error, never written.
        let _ = write_page(mem, gpa, page);
    }
    let owned = PageBatch::decode(bytes).expect("a batch the view accepts decodes");
    assert!(owned.iter().eq(view.iter()), "view and owned batch disagree");
    assert_eq!(owned.round, view.round);
    assert!(owned.encode() == bytes, "a valid batch re-encodes to other bytes");
}

/// Decodes `bytes` as a machine state and checks its encoding is stable.
fn machine_state(bytes: &[u8]) {
    let Ok(state) = MachineState::decode(bytes) else { return };
    let encoded = state.encode();
    let again = MachineState::decode(&encoded).expect("a re-encoded state decodes");
    assert!(again.encode() == encoded, "machine state encoding is not stable");
}
