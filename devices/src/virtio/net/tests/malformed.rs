//! Hostile or broken descriptor chains: each is dropped (transmit) or returned
//! unused (receive) and counted, never panics, never touches memory outside the
//! guest, and leaves the queue working.

use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};

use super::harness::*;
use crate::virtio::net::{HEADER_LEN, MAX_BUFFER_LEN};

const NEXT: u16 = VRING_DESC_F_NEXT as u16;
const WRITE: u16 = VRING_DESC_F_WRITE as u16;

/// Sends a good frame after the bad ones and checks it arrives: the queue still
/// works and nothing bad reached the TAP.
fn assert_tx_still_works(b: &mut Bench<'_>) {
    let good = frame(100, 0xaa);
    let before = b.tx.used_idx();
    b.queue_tx(TX_BUF + 0x8000, &good);
    b.handler.process_tx();
    assert_eq!(b.peer.recv(), good, "only the good frame reaches the TAP");
    assert_eq!(b.peer.try_recv(), None);
    assert_eq!(b.tx.used_idx(), before.wrapping_add(1));
}

/// Submits one bad transmit chain (already in the ring) and checks it was dropped.
fn assert_tx_dropped(b: &mut Bench<'_>) {
    let dropped = b.stats().dropped_tx;
    let used = b.tx.used_idx();
    b.handler.process_tx();
    assert_eq!(b.tx.used_idx(), used.wrapping_add(1), "the chain is returned");
    assert_eq!(b.tx.used(used).1, 0);
    assert_eq!(b.stats().dropped_tx, dropped + 1);
    assert_tx_still_works(b);
}

#[test]
fn net_tx_drops_a_frame_without_a_full_header() {
    let mem = guest_memory();
    let mut b = Bench::new(&mem);
    b.queue_tx(TX_BUF, &frame(HEADER_LEN, 1)[..8]);
    assert_tx_dropped(&mut b);
    // A header but no Ethernet header after it.
    b.queue_tx(TX_BUF, &frame(HEADER_LEN + 4, 1));
    assert_tx_dropped(&mut b);
    // An empty descriptor.
    b.tx.add(&[r(TX_BUF, 0)]);
    assert_tx_dropped(&mut b);
    assert_eq!(b.stats().tx_frames, 3, "only the three good frames");
}

#[test]
fn net_tx_drops_a_chain_with_a_writable_descriptor() {
    let mem = guest_memory();
    let mut b = Bench::new(&mem);
    fill_mem(&mem, TX_BUF, &frame(200, 2));
    b.tx.add(&[r(TX_BUF, 100), w(TX_BUF + 100, 100)]);
    assert_tx_dropped(&mut b);
}

#[test]
fn net_tx_drops_a_buffer_outside_guest_memory() {
    let mem = guest_memory();
    let mut b = Bench::new(&mem);
    fill_mem(&mem, TX_BUF, &frame(100, 3));
    b.tx.add(&[r(TX_BUF, 50), r(MEM_END + 0x1000, 50)]);
    assert_tx_dropped(&mut b);
    // Straddling the end of guest memory.
    b.tx.add(&[r(MEM_END - 20, 100)]);
    assert_tx_dropped(&mut b);
    // An address near u64::MAX.
    b.tx.add(&[r(TX_BUF, 50), r(u64::MAX - 10, 50)]);
    assert_tx_dropped(&mut b);
}

#[test]
fn net_tx_drops_a_descriptor_loop() {
    let mem = guest_memory();
    let mut b = Bench::new(&mem);
    fill_mem(&mem, TX_BUF, &frame(100, 4));
    let a = b.tx.slot();
    let c = b.tx.slot();
    b.tx.store(a, TX_BUF, 50, NEXT, c);
    b.tx.store(c, TX_BUF + 50, 50, NEXT, a);
    b.tx.publish(a);
    assert_tx_dropped(&mut b);
}

#[test]
fn net_tx_drops_a_chain_pointing_past_the_table() {
    let mem = guest_memory();
    let mut b = Bench::new(&mem);
    fill_mem(&mem, TX_BUF, &frame(100, 5));
    let a = b.tx.slot();
    b.tx.store(a, TX_BUF, 100, NEXT, QUEUE_SIZE + 5);
    b.tx.publish(a);
    assert_tx_dropped(&mut b);
}

#[test]
fn net_tx_drops_an_oversized_frame() {
    let mem = guest_memory();
    let mut b = Bench::new(&mem);
    // One byte over the limit, in two descriptors (the limit is checked per chain).
    let half = (MAX_BUFFER_LEN / 2) as u32;
    b.tx.add(&[r(TX_BUF, half), r(TX_BUF + u64::from(half), half + 1)]);
    assert_tx_dropped(&mut b);
    // A single descriptor of 4 GiB - 1.
    b.tx.add(&[r(0, u32::MAX)]);
    assert_tx_dropped(&mut b);
    // Exactly the limit is fine.
    let f = frame(MAX_BUFFER_LEN, 6);
    b.queue_tx(TX_BUF, &f);
    b.handler.process_tx();
    assert_eq!(b.peer.recv(), f);
}

#[test]
fn net_tx_drops_a_bad_indirect_table() {
    let mem = guest_memory();
    let mut b = Bench::new(&mem);
    fill_mem(&mem, TX_BUF, &frame(100, 7));
    // Table length not a multiple of 16.
    let a = b.tx.slot();
    b.tx.store(a, INDIRECT, 24, VRING_DESC_F_INDIRECT as u16, 0);
    b.tx.publish(a);
    assert_tx_dropped(&mut b);
    // Table outside guest memory.
    let a = b.tx.slot();
    b.tx.store(a, MEM_END, 32, VRING_DESC_F_INDIRECT as u16, 0);
    b.tx.publish(a);
    assert_tx_dropped(&mut b);
}

/// Posts `descs` as a bad receive chain followed by a good one, sends a frame and
/// checks the bad chain came back unused while the frame went to the good one.
fn assert_rx_chain_refused(b: &mut Bench<'_>, bad_head: u16) {
    let good = b.rx.add(&[w(RX_BUF + 0x8000, 2048)]);
    let f = frame(300, 9);
    b.peer.send(&f);
    b.handler.process_rx();
    assert_eq!(b.rx.used_idx(), 2);
    assert_eq!(b.rx.used(0), (u32::from(bad_head), 0));
    assert_eq!(b.rx.used(1), (u32::from(good), 300));
    assert_eq!(read_mem(b.mem, RX_BUF + 0x8000 + HEADER_LEN as u64, 288), f[HEADER_LEN..]);
    assert_eq!(b.stats().bad_rx_chains, 1);
    assert_eq!(b.stats().rx_frames, 1);
}

#[test]
fn net_rx_refuses_a_readable_descriptor() {
    let mem = guest_memory();
    let mut b = Bench::new(&mem);
    fill_mem(&mem, RX_BUF, &[0x5a; 64]);
    let bad = b.rx.add(&[w(RX_BUF + 0x100, 1024), r(RX_BUF, 1024)]);
    assert_rx_chain_refused(&mut b, bad);
}

#[test]
fn net_rx_refuses_a_buffer_outside_guest_memory() {
    let mem = guest_memory();
    let mut b = Bench::new(&mem);
    let bad = b.rx.add(&[w(MEM_END - 100, 2048)]);
    assert_rx_chain_refused(&mut b, bad);
}

#[test]
fn net_rx_refuses_a_chain_smaller_than_a_header() {
    let mem = guest_memory();
    let mut b = Bench::new(&mem);
    let bad = b.rx.add(&[w(RX_BUF, 6), w(RX_BUF + 0x100, 5)]);
    assert_rx_chain_refused(&mut b, bad);
}

#[test]
fn net_rx_refuses_a_descriptor_loop() {
    let mem = guest_memory();
    let mut b = Bench::new(&mem);
    let a = b.rx.slot();
    let c = b.rx.slot();
    b.rx.store(a, RX_BUF, 1024, NEXT | WRITE, c);
    b.rx.store(c, RX_BUF + 1024, 1024, NEXT | WRITE, a);
    b.rx.publish(a);
    assert_rx_chain_refused(&mut b, a);
}

#[test]
fn net_rx_refuses_a_chain_of_too_many_buffers() {
    let mem = guest_memory();
    let mut b = Bench::new(&mem);
    let descs: Vec<Desc> = (0..100).map(|i| w(RX_BUF + 64 * i, 64)).collect();
    let bad = b.rx.add(&descs);
    assert_rx_chain_refused(&mut b, bad);
}

#[test]
fn net_corrupt_avail_index_flags_the_device_for_reset() {
    let mem = guest_memory();
    let mut b = Bench::new(&mem);
    b.tx.set_avail_idx(QUEUE_SIZE * 2);
    b.handler.process_tx();
    assert_eq!(b.interrupt.needs_reset(), 1);
    assert_eq!(b.handler.backend_interest(), None, "the TAP is no longer polled");
    // Nothing more is served until the driver resets.
    b.rx.add(&[w(RX_BUF, 2048)]);
    b.peer.send(&frame(100, 1));
    b.handler.process_rx();
    b.handler.process_tx();
    assert_eq!(b.rx.used_idx(), 0);
    assert_eq!(b.interrupt.needs_reset(), 1);
}
