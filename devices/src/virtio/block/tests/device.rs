//! The device as the transport sees it: identity, features, configuration space,
//! and activation with a real worker thread.

use std::io;
use std::mem::offset_of;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_bindings::virtio_blk::{
    virtio_blk_config, VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH,
    VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_WRITE_ZEROES, VIRTIO_BLK_S_OK,
    VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::harness::*;
use crate::virtio::block::config_space::{offset, CONFIG_SPACE_SIZE};
use crate::virtio::block::{QUEUE_MAX_SIZE, SECTOR_SIZE, SEG_MAX};
use crate::virtio::{
    device_type, features, ActivateContext, ActivateError, ActiveQueue, VirtioDevice,
    VirtioInterrupt,
};

const OK: u8 = VIRTIO_BLK_S_OK as u8;

#[derive(Default)]
struct CountingInterrupt {
    queue: AtomicUsize,
    config: AtomicUsize,
    needs_reset: AtomicUsize,
}

impl VirtioInterrupt for CountingInterrupt {
    fn signal_queue(&self, queue: u16) -> io::Result<()> {
        assert_eq!(queue, 0);
        self.queue.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn signal_config(&self) -> io::Result<()> {
        self.config.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn set_needs_reset(&self) {
        self.needs_reset.fetch_add(1, Ordering::SeqCst);
    }
}

fn config_u32(rig: &Rig, at: usize) -> u32 {
    let mut b = [0u8; 4];
    rig.block.read_config(at as u64, &mut b);
    u32::from_le_bytes(b)
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn block_identity_and_features() {
    let rig = Rig::new("features");
    assert_eq!(rig.block.device_type(), device_type::BLOCK);
    assert_eq!(rig.block.queue_max_sizes(), vec![QUEUE_MAX_SIZE]);
    let f = rig.block.offered_features();
    for bit in [features::VERSION_1, features::RING_EVENT_IDX, features::RING_INDIRECT_DESC] {
        assert_ne!(f & bit, 0);
    }
    for bit in [
        VIRTIO_BLK_F_SEG_MAX,
        VIRTIO_BLK_F_BLK_SIZE,
        VIRTIO_BLK_F_FLUSH,
        VIRTIO_BLK_F_DISCARD,
        VIRTIO_BLK_F_WRITE_ZEROES,
    ] {
        assert_ne!(f & (1 << bit), 0, "bit {bit}");
    }
    assert_eq!(f & (1 << VIRTIO_BLK_F_RO), 0);
    assert_eq!(f & (1 << 34), 0, "never RING_PACKED");

    let ro = Rig::read_only("features-ro");
    let f = ro.block.offered_features();
    assert_ne!(f & (1 << VIRTIO_BLK_F_RO), 0);
    assert_eq!(f & (1 << VIRTIO_BLK_F_DISCARD), 0);
    assert_eq!(f & (1 << VIRTIO_BLK_F_WRITE_ZEROES), 0);
}

#[test]
fn block_config_space_layout_matches_the_spec() {
    // Our offsets against the kernel's struct.
    assert_eq!(offset::CAPACITY, offset_of!(virtio_blk_config, capacity));
    assert_eq!(offset::SIZE_MAX, offset_of!(virtio_blk_config, size_max));
    assert_eq!(offset::SEG_MAX, offset_of!(virtio_blk_config, seg_max));
    assert_eq!(offset::GEOMETRY_CYLINDERS, offset_of!(virtio_blk_config, geometry));
    assert_eq!(offset::BLK_SIZE, offset_of!(virtio_blk_config, blk_size));
    assert_eq!(offset::PHYSICAL_BLOCK_EXP, offset_of!(virtio_blk_config, physical_block_exp));
    assert_eq!(offset::ALIGNMENT_OFFSET, offset_of!(virtio_blk_config, alignment_offset));
    assert_eq!(offset::MIN_IO_SIZE, offset_of!(virtio_blk_config, min_io_size));
    assert_eq!(offset::OPT_IO_SIZE, offset_of!(virtio_blk_config, opt_io_size));
    assert_eq!(offset::WRITEBACK, offset_of!(virtio_blk_config, wce));
    assert_eq!(offset::NUM_QUEUES, offset_of!(virtio_blk_config, num_queues));
    assert_eq!(offset::MAX_DISCARD_SECTORS, offset_of!(virtio_blk_config, max_discard_sectors));
    assert_eq!(offset::MAX_DISCARD_SEG, offset_of!(virtio_blk_config, max_discard_seg));
    assert_eq!(
        offset::DISCARD_SECTOR_ALIGNMENT,
        offset_of!(virtio_blk_config, discard_sector_alignment)
    );
    assert_eq!(
        offset::MAX_WRITE_ZEROES_SECTORS,
        offset_of!(virtio_blk_config, max_write_zeroes_sectors)
    );
    assert_eq!(offset::MAX_WRITE_ZEROES_SEG, offset_of!(virtio_blk_config, max_write_zeroes_seg));
    assert_eq!(
        offset::WRITE_ZEROES_MAY_UNMAP,
        offset_of!(virtio_blk_config, write_zeroes_may_unmap)
    );
    assert_eq!(CONFIG_SPACE_SIZE, offset_of!(virtio_blk_config, max_secure_erase_sectors));

    let rig = Rig::new("config");
    let mut cap = [0u8; 8];
    rig.block.read_config(0, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), SECTORS);
    // A driver may read a 64-bit field as two 32-bit halves.
    assert_eq!(u64::from(config_u32(&rig, 0)), SECTORS);
    assert_eq!(config_u32(&rig, 4), 0);
    assert_eq!(config_u32(&rig, offset::SEG_MAX), SEG_MAX);
    assert_eq!(config_u32(&rig, offset::BLK_SIZE), SECTOR_SIZE as u32);
    let mut nq = [0u8; 2];
    rig.block.read_config(offset::NUM_QUEUES as u64, &mut nq);
    assert_eq!(u16::from_le_bytes(nq), 1);
    assert_eq!(config_u32(&rig, offset::MAX_DISCARD_SEG), 1);
    assert_eq!(config_u32(&rig, offset::MAX_WRITE_ZEROES_SEG), 1);
    assert!(config_u32(&rig, offset::MAX_DISCARD_SECTORS) > 0);
    assert!(config_u32(&rig, offset::MAX_WRITE_ZEROES_SECTORS) > 0);
    assert!(config_u32(&rig, offset::DISCARD_SECTOR_ALIGNMENT) > 0);
    let mut one = [0u8; 1];
    rig.block.read_config(offset::WRITE_ZEROES_MAY_UNMAP as u64, &mut one);
    assert_eq!(one[0], 1);
    // Past the end reads as zero.
    assert_eq!(config_u32(&rig, CONFIG_SPACE_SIZE), 0);
    assert_eq!(config_u32(&rig, CONFIG_SPACE_SIZE - 2), 0);
}

#[test]
fn block_config_writes_are_ignored() {
    let mut rig = Rig::new("configwrite");
    let before = rig.block.state().config_space;
    rig.block.write_config(0, &[0xff; 8]);
    rig.block.write_config(offset::WRITEBACK as u64, &[0]);
    rig.block.write_config(u64::MAX, &[1]);
    assert_eq!(rig.block.state().config_space, before);
}

#[test]
fn block_worker_serves_requests_and_signals() {
    let mut rig = Rig::new("worker");
    let mem = rig.mem.clone();
    let mut drv = Driver::new(&mem);
    let interrupt = Arc::new(CountingInterrupt::default());
    let notify = EventFd::new(EFD_NONBLOCK).expect("eventfd");
    let kick = notify.try_clone().expect("eventfd clone");
    let ctx = ActivateContext {
        mem: mem.clone(),
        acked_features: rig.block.offered_features(),
        queues: vec![ActiveQueue { queue: drv.queue(), notify }],
        interrupt: interrupt.clone(),
    };
    rig.block.activate(ctx).expect("activate");
    assert!(rig.block.state().activated);

    // A write, then a read of it, each with a kick.
    let data: Vec<u8> = (0..1024u32).map(|i| (i % 199) as u8).collect();
    fill_mem(&mem, DATA, &data);
    write_header(&mem, HDR, VIRTIO_BLK_T_OUT, 6);
    poison_status(&mem, STATUS);
    drv.add(&[r(HDR, 16), r(DATA, 1024), w(STATUS, 1)]);
    kick.write(1).expect("kick");
    wait_for("write completion", || drv.used_idx() == 1);
    wait_for("interrupt", || interrupt.queue.load(Ordering::SeqCst) >= 1);
    assert_eq!(status_at(&mem, STATUS), OK);
    assert_eq!(rig.image.read_at(6 * SECTOR_SIZE, 1024), data);

    // Like a real driver with EVENT_IDX: ask for an interrupt after what it has seen.
    drv.set_used_event(1);
    write_header(&mem, HDR + 0x100, VIRTIO_BLK_T_IN, 6);
    poison_status(&mem, STATUS + 1);
    drv.add(&[r(HDR + 0x100, 16), w(DATA + 0x4000, 1024), w(STATUS + 1, 1)]);
    kick.write(1).expect("kick");
    wait_for("read completion", || drv.used_idx() == 2);
    wait_for("interrupt", || interrupt.queue.load(Ordering::SeqCst) >= 2);
    assert_eq!(status_at(&mem, STATUS + 1), OK);
    assert_eq!(read_mem(&mem, DATA + 0x4000, 1024), data);
    assert_eq!(interrupt.needs_reset.load(Ordering::SeqCst), 0);

    let state = rig.block.state();
    let queue = state.queue.expect("queue state");
    assert_eq!((queue.next_avail, queue.next_used), (2, 2));
    assert!(queue.event_idx_enabled);
    assert_eq!(state.acked_features, rig.block.offered_features());

    // Activating twice is refused.
    let again = ActivateContext {
        mem: mem.clone(),
        acked_features: 0,
        queues: vec![ActiveQueue { queue: drv.queue(), notify: EventFd::new(0).expect("eventfd") }],
        interrupt: interrupt.clone(),
    };
    assert!(matches!(rig.block.activate(again), Err(ActivateError::Other(_))));

    assert!(rig.block.reset());
    let state = rig.block.state();
    assert!(!state.activated);
    assert_eq!(state.acked_features, 0);
    assert_eq!(state.queue.map(|q| q.next_used), Some(2), "final queue state kept");
    // Resetting an idle device is fine too.
    assert!(rig.block.reset());
}

#[test]
fn block_worker_serves_requests_queued_before_activation() {
    let mut rig = Rig::new("early");
    let mem = rig.mem.clone();
    let mut drv = Driver::new(&mem);
    write_header(&mem, HDR, VIRTIO_BLK_T_IN, 0);
    drv.add(&[r(HDR, 16), w(DATA, 512), w(STATUS, 1)]);
    let interrupt = Arc::new(CountingInterrupt::default());
    let ctx = ActivateContext {
        mem: mem.clone(),
        acked_features: rig.block.offered_features(),
        queues: vec![ActiveQueue {
            queue: drv.queue(),
            notify: EventFd::new(EFD_NONBLOCK).expect("eventfd"),
        }],
        interrupt: interrupt.clone(),
    };
    rig.block.activate(ctx).expect("activate");
    wait_for("completion without a kick", || drv.used_idx() == 1);
    assert_eq!(status_at(&mem, STATUS), OK);
    // Dropping an active device stops its worker.
    drop(rig);
}

#[test]
fn block_worker_flags_a_corrupt_ring_for_reset() {
    let mut rig = Rig::new("corrupt");
    let mem = rig.mem.clone();
    let mut drv = Driver::new(&mem);
    let interrupt = Arc::new(CountingInterrupt::default());
    let notify = EventFd::new(EFD_NONBLOCK).expect("eventfd");
    let kick = notify.try_clone().expect("eventfd clone");
    let ctx = ActivateContext {
        mem: mem.clone(),
        acked_features: rig.block.offered_features(),
        queues: vec![ActiveQueue { queue: drv.queue(), notify }],
        interrupt: interrupt.clone(),
    };
    rig.block.activate(ctx).expect("activate");
    drv.set_avail_idx(QUEUE_SIZE * 2);
    kick.write(1).expect("kick");
    wait_for("needs-reset", || interrupt.needs_reset.load(Ordering::SeqCst) == 1);
    // Further kicks are ignored until reset.
    kick.write(1).expect("kick");
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(interrupt.needs_reset.load(Ordering::SeqCst), 1);
    assert_eq!(drv.used_idx(), 0);
    assert!(rig.block.reset());
}

#[test]
fn block_activate_needs_exactly_one_queue() {
    let mut rig = Rig::new("queues");
    let mem = rig.mem.clone();
    let drv = Driver::new(&mem);
    let interrupt: Arc<dyn VirtioInterrupt> = Arc::new(CountingInterrupt::default());
    for count in [0usize, 2] {
        let queues = (0..count)
            .map(|_| ActiveQueue { queue: drv.queue(), notify: EventFd::new(0).expect("eventfd") })
            .collect();
        let ctx = ActivateContext {
            mem: mem.clone(),
            acked_features: 0,
            queues,
            interrupt: interrupt.clone(),
        };
        match rig.block.activate(ctx) {
            Err(ActivateError::QueueCount { expected: 1, got }) => assert_eq!(got, count),
            other => panic!("expected QueueCount, got {:?}", other.err()),
        }
    }
    assert!(!rig.block.state().activated);
}

#[test]
fn block_acked_features_are_limited_to_offered() {
    let mut rig = Rig::read_only("acked");
    let mem = rig.mem.clone();
    let drv = Driver::new(&mem);
    let ctx = ActivateContext {
        mem: mem.clone(),
        acked_features: u64::MAX,
        queues: vec![ActiveQueue {
            queue: drv.queue(),
            notify: EventFd::new(EFD_NONBLOCK).expect("eventfd"),
        }],
        interrupt: Arc::new(CountingInterrupt::default()),
    };
    rig.block.activate(ctx).expect("activate");
    assert_eq!(rig.block.state().acked_features, rig.block.offered_features());
    assert!(rig.block.reset());
}

#[test]
fn block_activate_refuses_a_queue_outside_guest_memory() {
    let mut rig = Rig::new("badqueue");
    let mem = rig.mem.clone();
    let drv = Driver::new(&mem);
    let mut queue = drv.queue();
    virtio_queue::QueueT::set_desc_table_address(&mut queue, Some(0), Some(0x10));
    let ctx = ActivateContext {
        mem: mem.clone(),
        acked_features: rig.block.offered_features(),
        queues: vec![ActiveQueue { queue, notify: EventFd::new(EFD_NONBLOCK).expect("eventfd") }],
        interrupt: Arc::new(CountingInterrupt::default()),
    };
    let err = rig.block.activate(ctx).expect_err("must fail");
    assert!(matches!(err, ActivateError::Other(ref m) if m.contains("guest memory")), "{err:?}");
    assert!(!rig.block.state().activated);
}

#[test]
fn block_worker_parks_for_migration_and_resumes() {
    let mut rig = Rig::new("park");
    let mem = rig.mem.clone();
    let mut drv = Driver::new(&mem);
    let interrupt = Arc::new(CountingInterrupt::default());
    let notify = EventFd::new(EFD_NONBLOCK).expect("eventfd");
    let kick = notify.try_clone().expect("eventfd clone");
    let ctx = ActivateContext {
        mem: mem.clone(),
        acked_features: rig.block.offered_features(),
        queues: vec![ActiveQueue { queue: drv.queue(), notify }],
        interrupt: interrupt.clone(),
    };
    rig.block.activate(ctx).expect("activate");
    write_header(&mem, HDR, VIRTIO_BLK_T_IN, 0);
    drv.add(&[r(HDR, 16), w(DATA, 512), w(STATUS, 1)]);
    kick.write(1).expect("kick");
    wait_for("first request", || drv.used_idx() == 1);

    rig.block.pause().expect("pause");
    assert_eq!(rig.block.queue_progress(), vec![(1, 1)]);
    // While parked, a kicked request is not served.
    write_header(&mem, HDR + 0x100, VIRTIO_BLK_T_IN, 1);
    drv.add(&[r(HDR + 0x100, 16), w(DATA + 0x1000, 512), w(STATUS + 1, 1)]);
    kick.write(1).expect("kick");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(drv.used_idx(), 1, "parked worker served a request");
    assert_eq!(rig.block.queue_progress(), vec![(1, 1)]);

    // Resuming picks up the pending kick with the same queue.
    rig.block.resume().expect("resume");
    wait_for("request after resume", || drv.used_idx() == 2);
    assert_eq!(status_at(&mem, STATUS + 1), OK);
    assert_eq!(rig.block.queue_progress(), vec![(2, 2)]);

    // The lock hand-over: released, another opener may lock, then taken back fails
    // while that one holds it.
    rig.block.release_backend().expect("unlock");
    let other = crate::virtio::block::Block::new(crate::virtio::block::BlockConfig::new(rig.image.path())).expect("second opener locks after release");
    assert!(rig.block.acquire_backend().is_err(), "lock taken back while another holds it");
    drop(other);
    rig.block.acquire_backend().expect("lock taken back");
}
