//! The device as the transport and the VMM see it: identity, features,
//! configuration space, activation and reset, and the real worker thread driven
//! through eventfds: frames both ways, waiting for buffers and for the TAP,
//! announcements, and the TAP going away.

use std::mem::offset_of;
use std::sync::Arc;
use std::time::Duration;

use virtio_bindings::virtio_net::{
    virtio_net_config, VIRTIO_NET_CTRL_ANNOUNCE, VIRTIO_NET_CTRL_ANNOUNCE_ACK, VIRTIO_NET_F_CSUM,
    VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_F_GUEST_ANNOUNCE, VIRTIO_NET_F_GUEST_CSUM,
    VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
    VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_MAC,
    VIRTIO_NET_F_MQ, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_STATUS,
};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::backend::{socket_pair, Peer, SocketBackend};
use super::harness::*;
use crate::virtio::net::config_space::{offset, CONFIG_SPACE_SIZE};
use crate::virtio::net::ctrl::ACK_OK;
use crate::virtio::net::offloads::{TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN};
use crate::virtio::net::{Net, NetConfig, QUEUE_MAX_SIZE, STATUS_ANNOUNCE, STATUS_LINK_UP};
use crate::virtio::{
    device_type, features, ActivateContext, ActivateError, ActiveQueue, GuestMemoryMmap,
    VirtioDevice,
};

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef];

fn bit(b: u32) -> u64 {
    1u64 << b
}

fn device(name: &str) -> (Net, Arc<SocketBackend>, Peer) {
    let (backend, peer) = socket_pair(name);
    (Net::with_backend(backend.clone(), MAC), backend, peer)
}

/// The driver's side of an active device.
struct Active<'a> {
    rx: Driver<'a>,
    tx: Driver<'a>,
    ctrl: Driver<'a>,
    /// Writing one of these is a queue notification (rx, tx, ctrl).
    kicks: Vec<EventFd>,
    interrupt: Arc<CountingInterrupt>,
}

impl Active<'_> {
    fn kick(&self, queue: usize) {
        self.kicks[queue].write(1).expect("kick");
    }
}

/// Activates `net` with `acked` features and as many queues as they imply.
fn activate<'a>(net: &mut Net, mem: &'a GuestMemoryMmap, acked: u64) -> Active<'a> {
    let queues = if acked & bit(VIRTIO_NET_F_CTRL_VQ) != 0 { 3 } else { 2 };
    let active = drivers(mem);
    try_activate(net, mem, &active, acked, queues).expect("activate");
    active
}

fn drivers(mem: &GuestMemoryMmap) -> Active<'_> {
    Active {
        rx: Driver::new(mem, RX_RING),
        tx: Driver::new(mem, TX_RING),
        ctrl: Driver::new(mem, CTRL_RING),
        kicks: Vec::new(),
        interrupt: Arc::new(CountingInterrupt::default()),
    }
}

fn try_activate(
    net: &mut Net,
    mem: &GuestMemoryMmap,
    active: &Active<'_>,
    acked: u64,
    queues: usize,
) -> Result<Vec<EventFd>, ActivateError> {
    let drivers = [&active.rx, &active.tx, &active.ctrl];
    let mut kicks = Vec::new();
    let mut list = Vec::new();
    for d in drivers.iter().take(queues) {
        let notify = EventFd::new(EFD_NONBLOCK).expect("eventfd");
        kicks.push(notify.try_clone().expect("clone"));
        list.push(ActiveQueue { queue: d.queue(), notify });
    }
    let ctx = ActivateContext {
        mem: mem.clone(),
        acked_features: acked,
        queues: list,
        interrupt: active.interrupt.clone(),
    };
    net.activate(ctx).map(|()| kicks)
}

fn activate_all<'a>(net: &mut Net, mem: &'a GuestMemoryMmap) -> Active<'a> {
    let acked = net.offered_features();
    let mut active = drivers(mem);
    active.kicks = try_activate(net, mem, &active, acked, 3).expect("activate");
    active
}

fn config_status(net: &Net) -> u16 {
    let mut b = [0u8; 2];
    net.read_config(offset::STATUS as u64, &mut b);
    u16::from_le_bytes(b)
}

#[test]
fn net_identity_and_features() {
    let (net, _, _peer) = device("ident");
    assert_eq!(net.device_type(), device_type::NET);
    assert_eq!(net.queue_max_sizes(), vec![QUEUE_MAX_SIZE; 3]);
    assert_eq!(QUEUE_MAX_SIZE, 256);
    let f = net.offered_features();
    for b in [features::VERSION_1, features::RING_EVENT_IDX, features::RING_INDIRECT_DESC] {
        assert_ne!(f & b, 0);
    }
    for b in [
        VIRTIO_NET_F_CSUM,
        VIRTIO_NET_F_GUEST_CSUM,
        VIRTIO_NET_F_GUEST_TSO4,
        VIRTIO_NET_F_GUEST_TSO6,
        VIRTIO_NET_F_GUEST_ECN,
        VIRTIO_NET_F_HOST_TSO4,
        VIRTIO_NET_F_HOST_TSO6,
        VIRTIO_NET_F_HOST_ECN,
        VIRTIO_NET_F_MRG_RXBUF,
        VIRTIO_NET_F_MAC,
        VIRTIO_NET_F_STATUS,
        VIRTIO_NET_F_CTRL_VQ,
        VIRTIO_NET_F_GUEST_ANNOUNCE,
    ] {
        assert_ne!(f & bit(b), 0, "bit {b}");
    }
    assert_eq!(f & bit(34), 0, "never RING_PACKED");
    assert_eq!(f & bit(VIRTIO_NET_F_MQ), 0, "one queue pair");
    assert_eq!(net.mac(), MAC);
    assert_eq!(net.tap_name(), "ident");
    assert_eq!(net.config(), NetConfig { tap: "ident".into(), mac: Some(MAC) });
    assert!(net.link_up());
}

#[test]
fn net_config_space_layout_matches_the_spec() {
    assert_eq!(offset::MAC, offset_of!(virtio_net_config, mac));
    assert_eq!(offset::STATUS, offset_of!(virtio_net_config, status));
    assert_eq!(offset::MAX_VIRTQUEUE_PAIRS, offset_of!(virtio_net_config, max_virtqueue_pairs));
    assert_eq!(offset::MTU, offset_of!(virtio_net_config, mtu));
    assert_eq!(CONFIG_SPACE_SIZE, offset_of!(virtio_net_config, speed));

    let (mut net, _, _peer) = device("config");
    let mut mac = [0u8; 6];
    net.read_config(0, &mut mac);
    assert_eq!(mac, MAC);
    assert_eq!(config_status(&net), STATUS_LINK_UP);
    let mut pairs = [0u8; 2];
    net.read_config(offset::MAX_VIRTQUEUE_PAIRS as u64, &mut pairs);
    assert_eq!(u16::from_le_bytes(pairs), 1);
    // Byte-wise reads, and reads past the end.
    let mut one = [0u8; 1];
    net.read_config(3, &mut one);
    assert_eq!(one[0], MAC[3]);
    let mut tail = [0xffu8; 4];
    net.read_config(CONFIG_SPACE_SIZE as u64, &mut tail);
    assert_eq!(tail, [0; 4]);
    // Writes are ignored.
    let before = net.state().config_space;
    net.write_config(0, &[0; 6]);
    net.write_config(offset::STATUS as u64, &[0, 0]);
    net.write_config(u64::MAX, &[1]);
    assert_eq!(net.state().config_space, before);
}

#[test]
fn net_worker_moves_frames_both_ways() {
    let mem = guest_memory();
    let (mut net, _, peer) = device("both");
    let mut a = activate_all(&mut net, &mem);
    assert!(net.state().activated);

    // Transmit.
    let out = frame(1000, 1);
    fill_mem(&mem, TX_BUF, &out);
    a.tx.add(&[r(TX_BUF, 12), r(TX_BUF + 12, 988)]);
    a.kick(1);
    assert_eq!(peer.recv(), out);
    wait_for("tx completion", || a.tx.used_idx() == 1);
    wait_for("tx interrupt", || a.interrupt.queue(1) == 1);

    // Receive: buffers first, then a frame from the network.
    for i in 0..4 {
        a.rx.add(&[w(RX_BUF + 0x1000 * i, 1500)]);
    }
    a.kick(0);
    let inbound = frame(2000, 2);
    peer.send(&inbound);
    wait_for("rx completion", || a.rx.used_idx() == 2);
    wait_for("rx interrupt", || a.interrupt.queue(0) >= 1);
    assert_eq!(num_buffers_at(&mem, RX_BUF), 2);
    let mut got = read_mem(&mem, RX_BUF, 1500);
    got.extend(read_mem(&mem, RX_BUF + 0x1000, 500));
    assert_eq!(got[HEADER..], inbound[HEADER..]);

    let stats = net.stats();
    assert_eq!((stats.tx_frames, stats.rx_frames), (1, 1));
    let state = net.state();
    assert_eq!(state.queues.len(), 3);
    assert_eq!(
        (state.queues[0].next_avail, state.queues[0].next_used),
        (2, 2),
        "held chains not counted"
    );
    assert_eq!((state.queues[1].next_avail, state.queues[1].next_used), (1, 1));
    assert!(state.queues.iter().all(|q| q.event_idx_enabled));
    assert_eq!(state.acked_features, net.offered_features());
    assert_eq!(state.mac, MAC);
    assert_eq!(state.status, STATUS_LINK_UP);

    // Activating twice is refused.
    let all = net.offered_features();
    let again = try_activate(&mut net, &mem, &drivers(&mem), all, 3);
    assert!(matches!(again, Err(ActivateError::Other(_))));

    assert!(net.reset());
    let state = net.state();
    assert!(!state.activated);
    assert_eq!(state.acked_features, 0);
    assert_eq!(state.queues[0].next_avail, 2, "unused receive chains went back to the ring");
    assert_eq!(state.queues[1].next_used, 1);
    assert!(net.reset(), "resetting an idle device is fine");
}

const HEADER: usize = crate::virtio::net::HEADER_LEN;

#[test]
fn net_worker_stops_reading_without_buffers_and_resumes_after_a_kick() {
    let mem = guest_memory();
    let (mut net, _, peer) = device("nobufs");
    let mut a = activate_all(&mut net, &mem);
    let frames: Vec<_> = (0..3u8).map(|i| frame(200, i)).collect();
    for f in &frames {
        peer.send(f);
    }
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(a.rx.used_idx(), 0);
    assert_eq!(net.stats().dropped_rx, 0, "frames wait in the TAP, not dropped");

    for i in 0..3 {
        a.rx.add(&[w(RX_BUF + 0x1000 * i, 2048)]);
    }
    a.kick(0);
    wait_for("all three frames", || a.rx.used_idx() == 3);
    for (i, f) in frames.iter().enumerate() {
        let got = read_mem(&mem, RX_BUF + 0x1000 * i as u64, 200);
        assert_eq!(got[HEADER..], f[HEADER..]);
    }
    // And again: out of buffers, a new frame waits for the next kick.
    peer.send(&frame(200, 9));
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(a.rx.used_idx(), 3);
    a.rx.add(&[w(RX_BUF + 0x4000, 2048)]);
    a.kick(0);
    wait_for("the fourth frame", || a.rx.used_idx() == 4);
}

#[test]
fn net_worker_waits_for_a_full_tap_without_losing_frames() {
    let mem = guest_memory();
    let (mut net, backend, peer) = device("full");
    backend.shrink_send_buffer();
    let mut a = activate_all(&mut net, &mem);
    // The socket holds a few messages; queue many more.
    let frames: Vec<_> = (0..40u8).map(|i| frame(100 + usize::from(i), i)).collect();
    for (i, f) in frames.iter().enumerate() {
        fill_mem(&mem, TX_BUF + 0x200 * i as u64, f);
        a.tx.add(&[r(TX_BUF + 0x200 * i as u64, f.len() as u32)]);
    }
    a.kick(1);
    std::thread::sleep(Duration::from_millis(50));
    let stalled = a.tx.used_idx();
    assert!(stalled < 40, "the TAP filled up ({stalled} sent)");
    for f in &frames {
        assert_eq!(&peer.recv(), f, "in order, none lost");
    }
    wait_for("all completions", || a.tx.used_idx() == 40);
    assert_eq!(net.stats().dropped_tx, 0);
    assert_eq!(net.stats().tx_frames, 40);
}

#[test]
fn net_worker_serves_frames_queued_before_activation() {
    let mem = guest_memory();
    let (mut net, _, peer) = device("early");
    let mut a = drivers(&mem);
    let f = frame(100, 5);
    fill_mem(&mem, TX_BUF, &f);
    a.tx.add(&[r(TX_BUF, 100)]);
    let all = net.offered_features();
    a.kicks = try_activate(&mut net, &mem, &a, all, 3).expect("activate");
    assert_eq!(peer.recv(), f);
    wait_for("completion without a kick", || a.tx.used_idx() == 1);
    drop(net); // Dropping an active device stops its worker.
}

#[test]
fn net_announce_sets_the_status_bit_until_the_driver_acks() {
    let mem = guest_memory();
    let (mut net, _, _peer) = device("announce");
    assert!(!net.announce(), "not active");

    // A driver without GUEST_ANNOUNCE is not asked.
    let acked = net.offered_features() & !bit(VIRTIO_NET_F_GUEST_ANNOUNCE);
    let a = activate(&mut net, &mem, acked);
    assert!(!net.announce());
    assert_eq!(a.interrupt.config(), 0);
    assert!(net.reset());

    let mut a = activate_all(&mut net, &mem);
    assert!(net.announce());
    assert_eq!(config_status(&net), STATUS_LINK_UP | STATUS_ANNOUNCE);
    assert_eq!(net.state().status, STATUS_LINK_UP | STATUS_ANNOUNCE);
    assert_eq!(a.interrupt.config(), 1);

    // The driver acknowledges through the control queue.
    fill_mem(&mem, CTRL_BUF, &[VIRTIO_NET_CTRL_ANNOUNCE as u8, VIRTIO_NET_CTRL_ANNOUNCE_ACK as u8]);
    fill_mem(&mem, CTRL_BUF + 0x10, &[0xee]);
    a.ctrl.add(&[r(CTRL_BUF, 2), w(CTRL_BUF + 0x10, 1)]);
    a.kick(2);
    wait_for("ack", || a.ctrl.used_idx() == 1);
    assert_eq!(read_mem(&mem, CTRL_BUF + 0x10, 1)[0], ACK_OK);
    assert_eq!(config_status(&net), STATUS_LINK_UP);
    wait_for("ctrl interrupt", || a.interrupt.queue(2) == 1);

    // A reset forgets a pending announcement.
    assert!(net.announce());
    assert!(net.reset());
    assert_eq!(config_status(&net), STATUS_LINK_UP);
}

#[test]
fn net_tap_hang_up_takes_the_link_down() {
    let mem = guest_memory();
    let (mut net, _, mut peer) = device("hangup");
    let mut a = activate_all(&mut net, &mem);
    a.rx.add(&[w(RX_BUF, 2048)]);
    a.kick(0);
    peer.close();
    wait_for("link down", || !net.link_up());
    wait_for("config interrupt", || a.interrupt.config() == 1);
    assert_eq!(config_status(&net) & STATUS_LINK_UP, 0);
    assert!(!net.announce(), "no announcements on a dead link");

    // Transmit keeps draining: frames are dropped and their chains returned.
    for i in 0..3 {
        fill_mem(&mem, TX_BUF + 0x200 * i, &frame(100, i as u8));
        a.tx.add(&[r(TX_BUF + 0x200 * i, 100)]);
    }
    a.kick(1);
    wait_for("tx drained", || a.tx.used_idx() == 3);
    assert_eq!(net.stats().dropped_tx, 3);
    assert_eq!(a.interrupt.needs_reset(), 0, "the VM carries on");
    assert_eq!(a.interrupt.config(), 1, "one link change");
    assert!(net.reset());
}

#[test]
fn net_tap_write_failure_takes_the_link_down() {
    let mem = guest_memory();
    let mut b = Bench::new(&mem);
    b.backend.fail_next_write(libc::EBADFD);
    b.queue_tx(TX_BUF, &frame(100, 1));
    b.queue_tx(TX_BUF + 0x200, &frame(100, 2));
    b.handler.process_tx();
    assert!(!b.link.is_up());
    assert_eq!(b.interrupt.config(), 1);
    assert_eq!(b.tx.used_idx(), 2, "both chains returned");
    assert_eq!(b.stats().dropped_tx, 2);
    assert_eq!(b.peer.try_recv(), None, "nothing touches the TAP any more");
    assert_eq!(b.handler.backend_interest(), None);
}

#[test]
fn net_tap_read_failure_takes_the_link_down() {
    let mem = guest_memory();
    let mut b = Bench::new(&mem);
    b.rx.add(&[w(RX_BUF, 2048)]);
    b.backend.fail_next_read(libc::ENODEV);
    b.peer.send(&frame(100, 1));
    b.handler.process_rx();
    assert!(!b.link.is_up());
    assert_eq!(b.interrupt.config(), 1);
    assert_eq!(b.handler.backend_interest(), None);
    b.handler.process_rx();
    assert_eq!(b.rx.used_idx(), 0, "the TAP is not read any more");
}

#[test]
fn net_repeated_read_failures_end_in_link_down_not_a_busy_loop() {
    let mem = guest_memory();
    let mut b = Bench::new(&mem);
    b.rx.add(&[w(RX_BUF, 2048)]);
    for _ in 0..63 {
        b.backend.fail_next_read(libc::EINVAL);
        b.handler.process_rx();
    }
    assert!(b.link.is_up(), "a few failures are tolerated");
    assert!(b.handler.has_pending(), "the failed read is retried");
    b.backend.fail_next_read(libc::EINVAL);
    b.handler.process_rx();
    assert!(!b.link.is_up());
}

#[test]
fn net_offloads_follow_the_negotiated_features() {
    let mem = guest_memory();
    let (mut net, backend, _peer) = device("offloads");
    let _a = activate_all(&mut net, &mem);
    assert_eq!(
        backend.offloads().last(),
        Some(&(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN))
    );
    assert!(net.reset());
    assert_eq!(backend.offloads().last(), Some(&0));

    let _a = activate(&mut net, &mem, features::VERSION_1);
    assert_eq!(backend.offloads().last(), Some(&0));
    assert!(net.reset());
    let _a = activate(&mut net, &mem, features::VERSION_1 | bit(VIRTIO_NET_F_GUEST_CSUM));
    assert_eq!(backend.offloads().last(), Some(&TUN_F_CSUM));
    assert!(net.reset());
    // TSO without checksum offload means nothing to the TAP.
    let _a = activate(&mut net, &mem, features::VERSION_1 | bit(VIRTIO_NET_F_GUEST_TSO4));
    assert_eq!(backend.offloads().last(), Some(&0));
    assert!(net.reset());
    let _a = activate(
        &mut net,
        &mem,
        features::VERSION_1
            | bit(VIRTIO_NET_F_GUEST_CSUM)
            | bit(VIRTIO_NET_F_GUEST_TSO6)
            | bit(VIRTIO_NET_F_GUEST_ECN),
    );
    assert_eq!(backend.offloads().last(), Some(&(TUN_F_CSUM | TUN_F_TSO6 | TUN_F_TSO_ECN)));
    assert!(net.reset());
}

#[test]
fn net_activation_checks() {
    let mem = guest_memory();
    let (mut net, _, _peer) = device("checks");
    let all = net.offered_features();
    let a = drivers(&mem);
    // CTRL_VQ negotiated: three queues expected.
    match try_activate(&mut net, &mem, &a, all, 2) {
        Err(ActivateError::QueueCount { expected: 3, got: 2 }) => {}
        other => panic!("expected QueueCount, got {:?}", other.err()),
    }
    match try_activate(&mut net, &mem, &a, all & !bit(VIRTIO_NET_F_CTRL_VQ), 3) {
        Err(ActivateError::QueueCount { expected: 2, got: 3 }) => {}
        other => panic!("expected QueueCount, got {:?}", other.err()),
    }
    // A legacy driver.
    let err = try_activate(&mut net, &mem, &a, all & !features::VERSION_1, 3).expect_err("legacy");
    assert!(err.to_string().contains("VERSION_1"), "{err}");
    assert!(!net.state().activated);
    // Unknown feature bits are ignored.
    try_activate(&mut net, &mem, &a, u64::MAX, 3).expect("activate");
    assert_eq!(net.state().acked_features, all);
    assert!(net.reset());
}

#[test]
fn net_activation_refuses_a_queue_outside_guest_memory() {
    let mem = guest_memory();
    let (mut net, _, _peer) = device("badqueue");
    let a = drivers(&mem);
    let mut queues = Vec::new();
    for d in [&a.rx, &a.tx, &a.ctrl] {
        queues.push(ActiveQueue {
            queue: d.queue(),
            notify: EventFd::new(EFD_NONBLOCK).expect("eventfd"),
        });
    }
    virtio_queue::QueueT::set_desc_table_address(&mut queues[1].queue, Some(0), Some(0x10));
    let ctx = ActivateContext {
        mem: mem.clone(),
        acked_features: net.offered_features(),
        queues,
        interrupt: a.interrupt.clone(),
    };
    let err = net.activate(ctx).expect_err("must fail");
    assert!(err.to_string().contains("queue 1"), "{err}");
    assert!(!net.state().activated);
}

#[test]
fn net_worker_flags_a_corrupt_ring_for_reset() {
    let mem = guest_memory();
    let (mut net, _, _peer) = device("corrupt");
    let mut a = activate_all(&mut net, &mem);
    a.tx.set_avail_idx(QUEUE_SIZE * 2);
    a.kick(1);
    wait_for("needs-reset", || a.interrupt.needs_reset() == 1);
    a.kick(1);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(a.interrupt.needs_reset(), 1);
    assert!(net.reset());
}

#[test]
fn net_worker_thread_is_named_after_the_tap() {
    let mem = guest_memory();
    let (mut net, _, _peer) = device("tnm");
    let _a = activate_all(&mut net, &mem);
    let named = || {
        std::fs::read_dir("/proc/self/task").expect("tasks").flatten().any(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|c| c.trim() == "virtio-net-tnm")
        })
    };
    wait_for("worker thread", named);
    assert!(net.reset());
    assert!(!named(), "joined on reset");
}
