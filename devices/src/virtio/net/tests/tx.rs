//! Transmit: frames from guest buffers reach the TAP intact, in order, exactly
//! once, whatever the descriptor layout and however busy the TAP is.

use vmm_sys_util::epoll::EventSet;

use super::harness::*;
use crate::virtio::net::HEADER_LEN;

#[test]
fn net_tx_frame_split_across_descriptors_arrives_intact() {
    let mem = guest_memory();
    let mut b = Bench::new(&mem);
    let f = frame(3000, 0x11);
    // Header alone, then the payload in three pieces, the last straddling the
    // boundary between the two memory regions.
    let straddle = REGION_SIZE - 500;
    fill_mem(&mem, TX_BUF, &f[..HEADER_LEN]);
    fill_mem(&mem, TX_BUF + 0x1000, &f[HEADER_LEN..1000]);
    fill_mem(&mem, TX_BUF + 0x2000, &f[1000..2000]);
    fill_mem(&mem, straddle, &f[2000..]);
    b.tx.add(&[
        r(TX_BUF, HEADER_LEN as u32),
        r(TX_BUF + 0x1000, 1000 - HEADER_LEN as u32),
        r(TX_BUF + 0x2000, 1000),
        r(straddle, 1000),
    ]);
    b.handler.process_tx();
    assert_eq!(b.peer.recv(), f);
    assert_eq!(b.peer.try_recv(), None, "exactly one frame");
    assert_eq!(b.tx.used_idx(), 1);
    assert_eq!(b.tx.used(0), (0, 0), "transmit chains complete with length 0");
    let stats = b.stats();
    assert_eq!(
        (stats.tx_frames, stats.tx_bytes, stats.dropped_tx),
        (1, 3000 - HEADER_LEN as u64, 0)
    );
    assert_eq!(b.interrupt.queue(1), 1);
}

#[test]
fn net_tx_header_and_payload_in_one_descriptor() {
    let mem = guest_memory();
    let mut b = Bench::new(&mem);
    let f = frame(60, 0x22);
    b.queue_tx(TX_BUF, &f);
    b.handler.process_tx();
    assert_eq!(b.peer.recv(), f);
}

#[test]
fn net_tx_offload_header_passes_unchanged() {
    let mem = guest_memory();
    let mut b = Bench::new(&mem);
    let f = frame(1514 + HEADER_LEN, 0x33);
    b.queue_tx(TX_BUF, &f);
    b.handler.process_tx();
    let got = b.peer.recv();
    assert_eq!(got[..HEADER_LEN], offload_header());
    assert_eq!(got, f);
}

#[test]
fn net_tx_indirect_chain() {
    let mem = guest_memory();
    let mut b = Bench::new(&mem);
    let f = frame(200, 0x44);
    fill_mem(&mem, TX_BUF, &f[..HEADER_LEN]);
    fill_mem(&mem, TX_BUF + 0x100, &f[HEADER_LEN..]);
    b.tx.add_indirect(
        INDIRECT,
        &[r(TX_BUF, HEADER_LEN as u32), r(TX_BUF + 0x100, 200 - HEADER_LEN as u32)],
    );
    b.handler.process_tx();
    assert_eq!(b.peer.recv(), f);
    assert_eq!(b.tx.used_idx(), 1);
}

#[test]
fn net_tx_frames_keep_their_order() {
    let mem = guest_memory();
    let mut b = Bench::new(&mem);
    let frames: Vec<_> = (0..8u8).map(|i| frame(100 + usize::from(i) * 10, i)).collect();
    for (i, f) in frames.iter().enumerate() {
        b.queue_tx(TX_BUF + 0x1000 * i as u64, f);
    }
    b.handler.process_tx();
    for f in &frames {
        assert_eq!(&b.peer.recv(), f);
    }
    assert_eq!(b.tx.used_idx(), 8);
    assert_eq!(b.stats().tx_frames, 8);
}

#[test]
fn net_tx_would_block_keeps_the_frame_for_later() {
    let mem = guest_memory();
    let mut b = Bench::new(&mem);
    let first = frame(100, 1);
    let second = frame(100, 2);
    b.queue_tx(TX_BUF, &first);
    b.queue_tx(TX_BUF + 0x1000, &second);
    b.backend.fail_next_write(libc::EAGAIN);
    b.handler.process_tx();
    assert_eq!(b.tx.used_idx(), 0, "nothing completed while the TAP is full");
    assert_eq!(b.peer.try_recv(), None);
    assert_eq!(
        b.handler.backend_interest(),
        Some(EventSet::IN | EventSet::EDGE_TRIGGERED | EventSet::OUT)
    );
    // A kick while blocked does not bypass the wait for writability.
    b.handler.tx_kicked();
    assert_eq!(b.tx.used_idx(), 0);

    b.handler.backend_writable();
    assert_eq!(b.peer.recv(), first);
    assert_eq!(b.peer.recv(), second);
    assert_eq!(b.tx.used_idx(), 2);
    assert_eq!(b.handler.backend_interest(), Some(EventSet::IN | EventSet::EDGE_TRIGGERED));
    assert_eq!(b.stats().dropped_tx, 0);
}

#[test]
fn net_tx_interrupted_write_is_retried() {
    let mem = guest_memory();
    let mut b = Bench::new(&mem);
    let f = frame(100, 3);
    b.queue_tx(TX_BUF, &f);
    b.backend.fail_next_write(libc::EINTR);
    b.handler.process_tx();
    assert_eq!(b.peer.recv(), f);
    assert_eq!(b.stats().dropped_tx, 0);
}

#[test]
fn net_tx_frame_refused_by_the_tap_is_dropped_and_counted() {
    let mem = guest_memory();
    let mut b = Bench::new(&mem);
    // EINVAL: what a TAP says to a bad offload header; EIO: interface down.
    for errno in [libc::EINVAL, libc::EIO] {
        b.backend.fail_next_write(errno);
        b.queue_tx(TX_BUF, &frame(100, 4));
    }
    let good = frame(100, 5);
    b.queue_tx(TX_BUF + 0x1000, &good);
    b.handler.process_tx();
    assert_eq!(b.peer.recv(), good);
    assert_eq!(b.tx.used_idx(), 3);
    assert_eq!(b.stats().dropped_tx, 2);
    assert!(b.link.is_up(), "a refused frame does not take the link down");
}

#[test]
fn net_tx_full_ring_through_a_busy_tap_loses_nothing() {
    let mem = guest_memory();
    let mut b = Bench::new(&mem);
    b.backend.shrink_send_buffer();
    // A full ring: 256 chains. The socket holds only a few messages, so the TAP
    // blocks again and again; drain it as we go.
    for i in 0..QUEUE_SIZE {
        b.queue_tx(TX_BUF + 0x100 * u64::from(i), &frame(64, i as u8));
    }
    let mut received = 0;
    let mut passes = 0;
    while b.tx.used_idx() < QUEUE_SIZE {
        b.handler.process_tx();
        b.handler.backend_writable();
        while let Some(f) = b.peer.try_recv() {
            let want = (0..=255u8).position(|t| frame(64, t) == f);
            assert_eq!(want, Some(received % 256), "frame {received}");
            received += 1;
        }
        passes += 1;
        assert!(passes < 10_000, "transmit made no progress");
    }
    while b.peer.try_recv().is_some() {
        received += 1;
    }
    assert_eq!(received, usize::from(QUEUE_SIZE));
    assert!(passes > 1, "the TAP blocked at least once");
    assert_eq!(b.stats().dropped_tx, 0);
}

#[test]
fn net_tx_interrupts_follow_event_idx() {
    let mem = guest_memory();
    let mut b = Bench::with_options(&mem, BenchOptions { mergeable: true, event_idx: true });
    // The driver wants an interrupt only once the used index passes 1.
    b.tx.set_used_event(1);
    b.queue_tx(TX_BUF, &frame(64, 1));
    b.handler.process_tx();
    assert_eq!(b.peer.recv().len(), 64);
    assert_eq!(b.interrupt.queue(1), 0, "used index 1 does not pass used_event 1");
    b.queue_tx(TX_BUF + 0x100, &frame(64, 2));
    b.handler.process_tx();
    assert_eq!(b.peer.recv().len(), 64);
    assert_eq!(b.interrupt.queue(1), 1);
}

#[test]
fn net_tx_polled_ring_is_polled_while_busy_and_kicks_resume_when_idle() {
    let mem = guest_memory();
    let mut b = Bench::with_options(&mem, BenchOptions { mergeable: true, event_idx: true });
    b.handler.poll_tx();
    b.queue_tx(TX_BUF, &frame(60, 1));
    b.handler.tx_kicked();
    assert_eq!(b.peer.recv().len(), 60);
    assert_eq!(b.tx.avail_event(), 0, "not asked to kick for the next frame");
    assert_eq!(b.interrupt.queue(1), 1, "the completion is announced at once");
    assert!(b.handler.tx_timer_wanted());
    // The driver publishes another frame without kicking; the timer finds it.
    b.queue_tx(TX_BUF + 0x100, &frame(70, 2));
    b.handler.tx_timer_expired();
    assert_eq!(b.peer.recv().len(), 70);
    assert_eq!(b.tx.used_idx(), 2);
    // A poll that finds the ring empty asks for the next kick again.
    b.handler.tx_timer_expired();
    assert_eq!(b.tx.avail_event(), 2, "kick me for the next frame");
    assert!(!b.handler.tx_timer_wanted());
}

/// A received frame: a vnet header, then an IPv4 TCP segment with `flags` and
/// `payload` bytes of data.
fn tcp_frame(flags: u8, payload: usize) -> Vec<u8> {
    let mut f = vec![0u8; HEADER_LEN];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00]);
    let total = (20 + 20 + payload) as u16;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[9] = 6;
    f.extend_from_slice(&ip);
    let mut tcp = [0u8; 20];
    tcp[12] = 5 << 4;
    tcp[13] = flags;
    f.extend_from_slice(&tcp);
    f.extend(std::iter::repeat_n(b'x', payload));
    f
}

#[test]
fn net_tx_polling_ends_when_the_guest_receives_something_it_may_answer() {
    let mem = guest_memory();
    let mut b = Bench::with_options(&mem, BenchOptions { mergeable: true, event_idx: true });
    b.handler.poll_tx();
    b.rx.add(&[w(RX_BUF, 2048)]);
    b.rx.add(&[w(RX_BUF + 0x1000, 2048)]);
    b.queue_tx(TX_BUF, &frame(60, 1));
    b.handler.tx_kicked();
    assert_eq!(b.peer.recv().len(), 60);
    assert!(b.handler.tx_timer_wanted());
    // The driver publishes a frame without kicking, then a bare ACK arrives: the
    // frame waits for the poll (a stream's sender is being batched).
    b.queue_tx(TX_BUF + 0x100, &frame(70, 2));
    b.peer.send(&tcp_frame(0x10, 0));
    b.handler.process_rx();
    assert_eq!(b.rx.used_idx(), 1);
    assert_eq!(b.tx.used_idx(), 1, "the second frame waits for the transmit timer");
    assert!(b.handler.tx_timer_wanted());
    // A segment with data arrives (a response, a request): the ring is served at
    // once and the driver is asked to kick for its next frame.
    b.peer.send(&tcp_frame(0x18, 1));
    b.handler.process_rx();
    assert_eq!(b.rx.used_idx(), 2);
    assert_eq!(b.peer.recv().len(), 70);
    assert_eq!(b.tx.used_idx(), 2);
    assert!(!b.handler.tx_timer_wanted());
    assert_eq!(b.tx.avail_event(), 2, "kick me for the next frame");
}

#[test]
fn net_tx_a_guest_answering_what_it_receives_is_not_polled() {
    let mem = guest_memory();
    let mut b = Bench::with_options(&mem, BenchOptions { mergeable: true, event_idx: true });
    b.handler.poll_tx();
    for i in 0..3 {
        b.rx.add(&[w(RX_BUF + 0x1000 * i, 2048)]);
    }
    // A request arrives; the guest's answer is sent and the driver is asked to
    // kick for the next frame at once (no timer).
    b.peer.send(&tcp_frame(0x18, 1));
    b.handler.process_rx();
    b.queue_tx(TX_BUF, &frame(60, 1));
    b.handler.tx_kicked();
    assert_eq!(b.peer.recv().len(), 60);
    assert!(!b.handler.tx_timer_wanted(), "no polling while answering");
    assert_eq!(b.tx.avail_event(), 1, "kick me for the next frame");
    // Only bare ACKs come in now (the guest sends a stream): polling is back.
    b.peer.send(&tcp_frame(0x10, 0));
    b.handler.process_rx();
    b.queue_tx(TX_BUF + 0x100, &frame(60, 2));
    b.handler.tx_kicked();
    assert_eq!(b.peer.recv().len(), 60);
    assert!(b.handler.tx_timer_wanted(), "a streaming sender is polled");
    assert_eq!(b.tx.avail_event(), 1, "not asked to kick for the next frame");
}
