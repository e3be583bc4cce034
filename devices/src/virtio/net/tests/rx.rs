//! Receive: frames from the TAP land in the driver's buffers intact, spread over
//! mergeable buffers when needed, with `num_buffers` right and leftover chains
//! kept for later; no buffers means no reading until the driver kicks.

use virtio_queue::QueueT;
use vm_memory::bitmap::Bitmap;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use super::harness::*;
use crate::sync::lock;
use crate::virtio::net::HEADER_LEN;

/// `f` with `num_buffers` set to `n`, as the guest should see it.
fn delivered(f: &[u8], n: u16) -> Vec<u8> {
    let mut f = f.to_vec();
    f[10..12].copy_from_slice(&n.to_le_bytes());
    f
}

#[test]
fn net_rx_frame_into_one_chain() {
    let mem = guest_memory();
    let mut b = Bench::new(&mem);
    let head = b.rx.add(&[w(RX_BUF, 2048)]);
    let f = frame(1000, 7);
    b.peer.send(&f);
    b.handler.process_rx();
    assert_eq!(b.rx.used_idx(), 1);
    assert_eq!(b.rx.used(0), (u32::from(head), 1000));
    assert_eq!(read_mem(&mem, RX_BUF, 1000), delivered(&f, 1));
    // The offload fields the TAP wrote are passed through untouched.
    assert_eq!(read_mem(&mem, RX_BUF, 10), offload_header()[..10]);
    let stats = b.stats();
    assert_eq!(
        (stats.rx_frames, stats.rx_bytes, stats.dropped_rx),
        (1, 1000 - HEADER_LEN as u64, 0)
    );
    assert_eq!(b.interrupt.queue(0), 1);
}

#[test]
fn net_rx_frame_across_chains_with_mergeable_buffers() {
    let mem = guest_memory();
    let mut b = Bench::new(&mem);
    let heads: Vec<u16> = (0..4).map(|i| b.rx.add(&[w(RX_BUF + 0x1000 * i, 1500)])).collect();
    let f = frame(4000, 8);
    b.peer.send(&f);
    b.handler.process_rx();

    assert_eq!(b.rx.used_idx(), 3, "three chains used, the fourth kept");
    assert_eq!(b.rx.used(0), (u32::from(heads[0]), 1500));
    assert_eq!(b.rx.used(1), (u32::from(heads[1]), 1500));
    assert_eq!(b.rx.used(2), (u32::from(heads[2]), 1000));
    assert_eq!(num_buffers_at(&mem, RX_BUF), 3);
    let mut got = read_mem(&mem, RX_BUF, 1500);
    got.extend(read_mem(&mem, RX_BUF + 0x1000, 1500));
    got.extend(read_mem(&mem, RX_BUF + 0x2000, 1000));
    assert_eq!(got, delivered(&f, 3));
    assert_eq!(b.rx_next_avail(), 3, "the held chain counts as still available");

    // The kept chain takes the next frame.
    let g = frame(500, 9);
    b.peer.send(&g);
    b.handler.process_rx();
    assert_eq!(b.rx.used_idx(), 4);
    assert_eq!(b.rx.used(3), (u32::from(heads[3]), 500));
    assert_eq!(read_mem(&mem, RX_BUF + 0x3000, 500), delivered(&g, 1));
    assert_eq!(b.stats().rx_frames, 2);
}

#[test]
fn net_rx_frame_that_exactly_fills_the_buffers() {
    let mem = guest_memory();
    let mut b = Bench::new(&mem);
    b.rx.add(&[w(RX_BUF, 1500)]);
    b.rx.add(&[w(RX_BUF + 0x1000, 1500)]);
    let f = frame(3000, 10);
    b.peer.send(&f);
    b.handler.process_rx();
    assert_eq!(b.rx.used_idx(), 2);
    assert_eq!((b.rx.used(0).1, b.rx.used(1).1), (1500, 1500));
    assert_eq!(num_buffers_at(&mem, RX_BUF), 2);
    assert_eq!(read_mem(&mem, RX_BUF + 0x1000, 1500), f[1500..]);
    assert_eq!(b.stats().dropped_rx, 0);
}

#[test]
fn net_rx_unused_chains_go_back_to_the_ring() {
    let mem = guest_memory();
    let mut b = Bench::new(&mem);
    for i in 0..3 {
        b.rx.add(&[w(RX_BUF + 0x1000 * i, 1500)]);
    }
    b.peer.send(&frame(100, 1));
    b.handler.process_rx();
    assert_eq!(b.rx.used_idx(), 1);
    assert_eq!(lock(&b.queues.rx).queue.next_avail(), 3, "all three taken");
    assert_eq!(b.rx_next_avail(), 1, "reported as one taken");
    b.handler.finish();
    let rxq = lock(&b.queues.rx);
    assert_eq!(rxq.queue.next_avail(), 1, "two chains back on the ring");
    assert!(rxq.held.is_empty());
}

#[test]
fn net_rx_frames_fill_chains_in_order() {
    let mem = guest_memory();
    let mut b = Bench::new(&mem);
    for i in 0..8 {
        b.rx.add(&[w(RX_BUF + 0x1000 * i, 2048)]);
    }
    let frames: Vec<_> = (0..8u8).map(|i| frame(100 + 50 * usize::from(i), i)).collect();
    for f in &frames {
        b.peer.send(f);
    }
    b.handler.process_rx();
    assert_eq!(b.rx.used_idx(), 8);
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(b.rx.used(i as u16), (i as u32, f.len() as u32));
        assert_eq!(read_mem(&mem, RX_BUF + 0x1000 * i as u64, f.len()), delivered(f, 1));
    }
    assert_eq!(b.interrupt.queue(0), 1, "one interrupt per pass");
}

#[test]
fn net_rx_without_mergeable_buffers_a_frame_must_fit_one_chain() {
    let mem = guest_memory();
    let mut b = Bench::with_options(&mem, BenchOptions { mergeable: false, event_idx: false });
    let small = b.rx.add(&[w(RX_BUF, 1500)]);
    b.peer.send(&frame(4000, 1));
    b.handler.process_rx();
    assert_eq!(b.rx.used_idx(), 0, "too big for the chain: dropped, chain kept");
    assert_eq!(b.stats().dropped_rx, 1);

    let f = frame(1000, 2);
    b.peer.send(&f);
    b.handler.process_rx();
    assert_eq!(b.rx.used(0), (u32::from(small), 1000));
    assert_eq!(read_mem(&mem, RX_BUF, 1000), delivered(&f, 1));

    // A big chain the way Linux posts them without MRG_RXBUF: header, then data.
    let big = b.rx.add(&[w(RX_BUF + 0x1000, HEADER_LEN as u32), w(RX_BUF + 0x2000, 8000)]);
    let g = frame(5000, 3);
    b.peer.send(&g);
    b.handler.process_rx();
    assert_eq!(b.rx.used(1), (u32::from(big), 5000));
    assert_eq!(read_mem(&mem, RX_BUF + 0x1000, HEADER_LEN), delivered(&g, 1)[..HEADER_LEN]);
    assert_eq!(read_mem(&mem, RX_BUF + 0x2000, 5000 - HEADER_LEN), g[HEADER_LEN..]);
}

#[test]
fn net_rx_oversized_frame_is_dropped_and_buffers_kept() {
    let mem = guest_memory();
    let mut b = Bench::new(&mem);
    let first = b.rx.add(&[w(RX_BUF, 1500)]);
    b.rx.add(&[w(RX_BUF + 0x1000, 1500)]);
    b.peer.send(&frame(5000, 1));
    b.handler.process_rx();
    assert_eq!(b.rx.used_idx(), 0);
    assert_eq!(b.stats().dropped_rx, 1);
    let f = frame(100, 2);
    b.peer.send(&f);
    b.handler.process_rx();
    assert_eq!(b.rx.used(0), (u32::from(first), 100));
    assert_eq!(read_mem(&mem, RX_BUF, 100), delivered(&f, 1));
}

#[test]
fn net_rx_runt_frame_is_dropped() {
    let mem = guest_memory();
    let mut b = Bench::new(&mem);
    b.rx.add(&[w(RX_BUF, 1500)]);
    b.peer.send(&[1, 2, 3, 4, 5]);
    b.handler.process_rx();
    assert_eq!(b.rx.used_idx(), 0);
    assert_eq!(b.stats().dropped_rx, 1);
}

#[test]
fn net_rx_stops_without_buffers_and_resumes_after_a_kick() {
    let mem = guest_memory();
    let mut b = Bench::new(&mem);
    let f = frame(300, 4);
    b.peer.send(&f);
    b.handler.process_rx();
    assert_eq!(b.rx.used_idx(), 0);
    assert!(!b.handler.reading_backend(), "the TAP is not read");
    assert!(!b.handler.has_pending(), "nothing to do until a kick");
    assert_eq!(b.rx.used_flags(), 0, "driver asked to kick");
    // A kick with nothing posted changes nothing.
    b.handler.rx_kicked();
    assert!(!b.handler.reading_backend());

    let head = b.rx.add(&[w(RX_BUF, 2048)]);
    b.rx.add(&[w(RX_BUF + 0x1000, 2048)]);
    b.handler.rx_kicked();
    assert_eq!(b.rx.used_idx(), 1);
    assert_eq!(b.rx.used(0), (u32::from(head), 300));
    assert_eq!(read_mem(&mem, RX_BUF, 300), delivered(&f, 1));
    // A buffer is left: poll the TAP again, no kicks needed.
    assert!(b.handler.reading_backend());
    assert_eq!(b.rx.used_flags(), 1, "kicks suppressed again (VRING_USED_F_NO_NOTIFY)");
}

#[test]
fn net_rx_out_of_buffers_with_event_idx_asks_for_the_next_kick() {
    let mem = guest_memory();
    let mut b = Bench::with_options(&mem, BenchOptions { mergeable: true, event_idx: true });
    b.rx.add(&[w(RX_BUF, 2048)]);
    b.peer.send(&frame(100, 1));
    b.peer.send(&frame(100, 2));
    b.handler.process_rx();
    assert_eq!(b.rx.used_idx(), 1);
    assert_eq!(b.rx.avail_event(), 1, "kick me when chain 1 is published");
    assert!(!b.handler.reading_backend());
    b.rx.add(&[w(RX_BUF + 0x1000, 2048)]);
    b.handler.rx_kicked();
    assert_eq!(b.rx.used_idx(), 2);
}

#[test]
fn net_rx_marks_guest_pages_dirty() {
    let mem = guest_memory();
    let mut b = Bench::new(&mem);
    // Two pages of the second region, written only by the kernel's readv.
    let buf = REGION_SIZE + 0x3000;
    let region = mem.find_region(GuestAddress(buf)).expect("region");
    let offset = (buf - region.start_addr().0) as usize;
    assert!(!region.bitmap().dirty_at(offset));
    b.rx.add(&[w(buf, 8192)]);
    b.peer.send(&frame(6000, 5));
    b.handler.process_rx();
    assert_eq!(b.rx.used_idx(), 1);
    assert!(region.bitmap().dirty_at(offset));
    assert!(region.bitmap().dirty_at(offset + 0x1000));
    assert!(!region.bitmap().dirty_at(offset + 0x2000), "only what the frame covered");
}

#[test]
fn net_rx_buffer_straddling_regions() {
    let mem = guest_memory();
    let mut b = Bench::new(&mem);
    let buf = REGION_SIZE - 700;
    b.rx.add(&[w(buf, 2000)]);
    let f = frame(1500, 6);
    b.peer.send(&f);
    b.handler.process_rx();
    assert_eq!(b.rx.used(0).1, 1500);
    assert_eq!(read_mem(&mem, buf, 1500), delivered(&f, 1));
}

#[test]
fn net_rx_interrupts_follow_event_idx() {
    let mem = guest_memory();
    let mut b = Bench::with_options(&mem, BenchOptions { mergeable: true, event_idx: true });
    for i in 0..4 {
        b.rx.add(&[w(RX_BUF + 0x1000 * i, 2048)]);
    }
    b.rx.set_used_event(1);
    b.peer.send(&frame(100, 1));
    b.handler.process_rx();
    assert_eq!(b.interrupt.queue(0), 0, "used index 1 does not pass used_event 1");
    b.peer.send(&frame(100, 2));
    b.handler.process_rx();
    assert_eq!(b.interrupt.queue(0), 1);
}
