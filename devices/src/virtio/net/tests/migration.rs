//! Live-migration hooks: parking and restarting the worker, queue progress, the
//! state the destination needs (the MAC), handing the TAP over between source
//! and destination, and the announcement after resuming.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use virtio_bindings::virtio_net::VIRTIO_NET_F_GUEST_ANNOUNCE;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::backend::{socket_pair, Peer, SocketBackend};
use super::harness::*;
use crate::sync::lock;
use crate::virtio::net::backend::NetBackend;
use crate::virtio::net::{Net, NetError, STATUS_ANNOUNCE, STATUS_LINK_UP};
use crate::virtio::{ActivateContext, ActiveQueue, GuestMemoryMmap, VirtioDevice};

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x01, 0x02, 0x03];

/// A device that is not attached yet; each open hands out the next backend.
fn unattached(name: &str, backends: Vec<Arc<SocketBackend>>) -> Net {
    let pool = Mutex::new(VecDeque::from(backends));
    let tap = name.to_string();
    Net::with_opener(
        name.to_string(),
        MAC,
        Box::new(move || {
            lock(&pool).pop_front().map(|b| b as Arc<dyn NetBackend>).ok_or_else(|| {
                NetError::Busy {
                    tap: tap.clone(),
                    errno: "EBUSY",
                    source: std::io::Error::from_raw_os_error(libc::EBUSY),
                }
            })
        }),
    )
}

struct Queues<'a> {
    rx: Driver<'a>,
    tx: Driver<'a>,
    ctrl: Driver<'a>,
    kicks: Vec<EventFd>,
    interrupt: Arc<CountingInterrupt>,
}

/// Activates with every feature on fresh rings.
fn activate_fresh<'a>(net: &mut Net, mem: &'a GuestMemoryMmap) -> Queues<'a> {
    for base in [RX_RING, TX_RING, CTRL_RING] {
        Driver::new(mem, base);
    }
    activate_at(net, mem, &[])
}

/// Activates with every feature on the rings in memory, queues at `progress`
/// (as a migration destination does).
fn activate_at<'a>(net: &mut Net, mem: &'a GuestMemoryMmap, progress: &[(u16, u16)]) -> Queues<'a> {
    let q = Queues {
        rx: Driver::existing(mem, RX_RING),
        tx: Driver::existing(mem, TX_RING),
        ctrl: Driver::existing(mem, CTRL_RING),
        kicks: Vec::new(),
        interrupt: Arc::new(CountingInterrupt::default()),
    };
    let mut kicks = Vec::new();
    let mut list = Vec::new();
    for (i, d) in [&q.rx, &q.tx, &q.ctrl].into_iter().enumerate() {
        let mut queue = d.queue();
        if let Some(&(avail, used)) = progress.get(i) {
            virtio_queue::QueueT::set_next_avail(&mut queue, avail);
            virtio_queue::QueueT::set_next_used(&mut queue, used);
        }
        let notify = EventFd::new(EFD_NONBLOCK).expect("eventfd");
        kicks.push(notify.try_clone().expect("clone"));
        list.push(ActiveQueue { queue, notify });
    }
    let ctx = ActivateContext {
        mem: mem.clone(),
        acked_features: net.offered_features(),
        queues: list,
        interrupt: q.interrupt.clone(),
    };
    net.activate(ctx).expect("activate");
    Queues { kicks, ..q }
}

fn pair(name: &str) -> (Arc<SocketBackend>, Peer) {
    socket_pair(name)
}

#[test]
fn net_pause_parks_the_worker_and_resume_restarts_it() {
    let mem = guest_memory();
    let (backend, peer) = pair("pause");
    let mut net = unattached("pause", vec![backend]);
    net.acquire_backend().expect("attach");
    let mut q = activate_fresh(&mut net, &mem);
    for i in 0..3 {
        q.rx.add(&[w(RX_BUF + 0x1000 * i, 2048)]);
    }
    q.kicks[0].write(1).expect("kick");
    peer.send(&frame(100, 1));
    wait_for("first frame", || q.rx.used_idx() == 1);

    net.pause().expect("pause");
    // Chains the worker held go back: progress says one buffer taken.
    assert_eq!(net.queue_progress(), vec![(1, 1), (0, 0), (0, 0)]);
    assert!(net.state().activated);

    // While parked nothing moves.
    fill_mem(&mem, TX_BUF, &frame(100, 2));
    q.tx.add(&[r(TX_BUF, 100)]);
    q.kicks[1].write(1).expect("kick");
    peer.send(&frame(100, 3));
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!((q.rx.used_idx(), q.tx.used_idx()), (1, 0));
    assert_eq!(peer.try_recv(), None);
    assert_eq!(net.queue_progress(), vec![(1, 1), (0, 0), (0, 0)]);

    net.resume().expect("resume");
    assert_eq!(peer.recv(), frame(100, 2));
    wait_for("tx after resume", || q.tx.used_idx() == 1);
    wait_for("rx after resume", || q.rx.used_idx() == 2);
    assert!(net.reset());
}

#[test]
fn net_pause_and_resume_of_an_inactive_device() {
    let (backend, _peer) = pair("idle");
    let mut net = unattached("idle", vec![backend]);
    net.pause().expect("pause");
    assert!(net.queue_progress().is_empty());
    net.resume().expect("resume");
}

#[test]
fn net_state_carries_the_mac() {
    let (a, _pa) = pair("src");
    let (b, _pb) = pair("dst");
    let source = Net::with_backend(a, MAC);
    let mut destination = Net::with_backend(b, [0x52, 0x54, 0, 9, 9, 9]);
    assert_eq!(source.describe(), destination.describe(), "TAP name and MAC are not compared");
    destination.load_state(&source.save_state()).expect("load");
    assert_eq!(destination.mac(), MAC);
    let mut cfg = [0u8; 6];
    destination.read_config(0, &mut cfg);
    assert_eq!(cfg, MAC);

    for bad in [
        &[][..],
        &[2, 0x52, 0x54, 0, 1, 2, 3][..],
        &[1, 0x52, 0x54][..],
        &[1, 1, 0, 0, 0, 0, 1][..],
    ] {
        assert!(destination.load_state(bad).is_err(), "{bad:?}");
    }
    assert_eq!(destination.mac(), MAC, "a refused state changes nothing");
}

#[test]
fn net_state_cannot_be_loaded_into_an_active_device() {
    let mem = guest_memory();
    let (backend, _peer) = pair("active");
    let mut net = Net::with_backend(backend, MAC);
    let _q = activate_fresh(&mut net, &mem);
    let state = net.save_state();
    assert!(net.load_state(&state).is_err());
    assert!(net.reset());
}

#[test]
fn net_tap_hand_over_from_source_to_destination() {
    let mem = guest_memory();
    // Source: running, with a frame the guest queued just before the pause.
    let (src_backend, src_peer) = pair("tapx");
    let mut source = unattached("tapx", vec![src_backend.clone()]);
    source.acquire_backend().expect("attach");
    let q = activate_fresh(&mut source, &mem);
    assert!(source.release_backend().is_err(), "not while the worker runs");
    source.pause().expect("pause");
    fill_mem(&mem, TX_BUF, &frame(120, 7));
    let mut q = q;
    q.tx.add(&[r(TX_BUF, 120)]);
    let progress = source.queue_progress();
    let state = source.save_state();
    source.release_backend().expect("release");
    assert_eq!(Arc::strong_count(&src_backend), 1, "the source let go of its TAP");
    assert!(!source.link_up());
    drop(src_peer);

    // Destination: restored and activated before it has the TAP.
    let (dst_backend, dst_peer) = pair("tapx");
    let mut destination = unattached("tapx", vec![dst_backend]);
    destination.load_state(&state).expect("load");
    let d = activate_at(&mut destination, &mem, &progress);
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(d.tx.used_idx(), 0, "nothing is served before the hand-over");
    destination.acquire_backend().expect("take the TAP");
    // The frame queued on the source goes out from the destination.
    assert_eq!(dst_peer.recv(), frame(120, 7));
    wait_for("tx completion", || d.tx.used_idx() == 1);

    // After resuming, the guest is asked to announce itself.
    destination.after_migration();
    assert_eq!(destination.state().status, STATUS_LINK_UP | STATUS_ANNOUNCE);
    assert_eq!(d.interrupt.config(), 1);
    assert!(destination.reset());
    drop(source);
}

#[test]
fn net_source_takes_its_tap_back_after_a_failed_hand_over() {
    let mem = guest_memory();
    let (first, _p1) = pair("back");
    let (second, p2) = pair("back");
    let mut net = unattached("back", vec![first, second]);
    net.acquire_backend().expect("attach");
    let mut q = activate_fresh(&mut net, &mem);
    net.pause().expect("pause");
    net.release_backend().expect("release");
    assert!(net.resume().is_err(), "no TAP to serve");
    net.acquire_backend().expect("take back");
    net.resume().expect("resume");
    fill_mem(&mem, TX_BUF, &frame(90, 8));
    q.tx.add(&[r(TX_BUF, 90)]);
    q.kicks[1].write(1).expect("kick");
    assert_eq!(p2.recv(), frame(90, 8));
    assert!(net.link_up());
    assert!(net.reset());
}

#[test]
fn net_after_migration_without_guest_announce_does_nothing() {
    let mem = guest_memory();
    let (backend, _peer) = pair("noann");
    let mut net = Net::with_backend(backend, MAC);
    let q = drivers_without_announce(&mut net, &mem);
    net.after_migration();
    assert_eq!(net.state().status, STATUS_LINK_UP);
    assert_eq!(q.config(), 0);
    assert!(net.reset());
}

fn drivers_without_announce(net: &mut Net, mem: &GuestMemoryMmap) -> Arc<CountingInterrupt> {
    let rx = Driver::new(mem, RX_RING);
    let tx = Driver::new(mem, TX_RING);
    let ctrl = Driver::new(mem, CTRL_RING);
    let interrupt = Arc::new(CountingInterrupt::default());
    let queues = [rx.queue(), tx.queue(), ctrl.queue()]
        .into_iter()
        .map(|queue| ActiveQueue { queue, notify: EventFd::new(EFD_NONBLOCK).expect("eventfd") })
        .collect();
    let ctx = ActivateContext {
        mem: mem.clone(),
        acked_features: net.offered_features() & !(1 << VIRTIO_NET_F_GUEST_ANNOUNCE),
        queues,
        interrupt: interrupt.clone(),
    };
    net.activate(ctx).expect("activate");
    interrupt
}
