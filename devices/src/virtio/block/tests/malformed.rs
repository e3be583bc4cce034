//! Hostile or broken descriptor chains: each must fail cleanly, never panic, never
//! touch memory outside the guest, and leave the queue usable.

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD,
    VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES,
    VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
};
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};

use super::harness::*;
use crate::virtio::block::{SECTOR_SIZE, SEG_MAX};
use crate::virtio::VirtioDevice;

const OK: u8 = VIRTIO_BLK_S_OK as u8;
const IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;
const UNSUPP: u8 = VIRTIO_BLK_S_UNSUPP as u8;
const NEXT: u16 = VRING_DESC_F_NEXT as u16;
const WRITE: u16 = VRING_DESC_F_WRITE as u16;

/// Submits one chain and returns (status byte, used length).
fn submit(rig: &Rig, descs: &[Desc]) -> (u8, u32) {
    let mut drv = Driver::new(&rig.mem);
    let mut queue = drv.queue();
    poison_status(&rig.mem, STATUS);
    drv.add(descs);
    rig.process(&mut queue);
    assert_eq!(drv.used_idx(), 1, "the chain is always returned");
    (status_at(&rig.mem, STATUS), drv.used(0).1)
}

/// Then checks that a good read still works on the same queue afterwards.
fn assert_queue_still_serves(rig: &Rig, drv: &mut Driver<'_>, queue: &mut virtio_queue::Queue) {
    let before = drv.used_idx();
    write_header(&rig.mem, HDR + 0x800, VIRTIO_BLK_T_IN, 1);
    poison_status(&rig.mem, STATUS + 0x10);
    drv.add(&[r(HDR + 0x800, 16), w(DATA + 0x10000, 512), w(STATUS + 0x10, 1)]);
    rig.process(queue);
    assert_eq!(drv.used_idx(), before.wrapping_add(1));
    assert_eq!(status_at(&rig.mem, STATUS + 0x10), OK);
}

#[test]
fn block_rejects_missing_header() {
    let rig = Rig::new("nohdr");
    assert_eq!(submit(&rig, &[w(STATUS, 1)]), (IOERR, 1));
}

#[test]
fn block_rejects_short_and_long_header() {
    let rig = Rig::new("shorthdr");
    write_header(&rig.mem, HDR, VIRTIO_BLK_T_IN, 0);
    assert_eq!(submit(&rig, &[r(HDR, 8), w(DATA, 512), w(STATUS, 1)]), (IOERR, 1));
    assert_eq!(submit(&rig, &[r(HDR, 0), w(DATA, 512), w(STATUS, 1)]), (IOERR, 1));
    // Header and data sharing a descriptor is refused, not guessed at.
    assert_eq!(submit(&rig, &[r(HDR, 16 + 512), w(STATUS, 1)]), (IOERR, 1));
}

#[test]
fn block_rejects_writable_header() {
    let rig = Rig::new("wrhdr");
    write_header(&rig.mem, HDR, VIRTIO_BLK_T_IN, 0);
    assert_eq!(submit(&rig, &[w(HDR, 16), w(DATA, 512), w(STATUS, 1)]), (IOERR, 1));
}

#[test]
fn block_rejects_data_in_the_wrong_direction() {
    let rig = Rig::new("direction");
    write_header(&rig.mem, HDR, VIRTIO_BLK_T_IN, 0);
    fill_mem(&rig.mem, DATA, &[0x77; 1024]);
    assert_eq!(submit(&rig, &[r(HDR, 16), r(DATA, 512), w(STATUS, 1)]), (IOERR, 1));
    assert_eq!(read_mem(&rig.mem, DATA, 512), vec![0x77; 512], "read did not land");
    assert_eq!(
        submit(&rig, &[r(HDR, 16), w(DATA, 512), r(DATA + 512, 512), w(STATUS, 1)]),
        (IOERR, 1)
    );

    let original = rig.image.read_at(0, 1024);
    write_header(&rig.mem, HDR, VIRTIO_BLK_T_OUT, 0);
    assert_eq!(submit(&rig, &[r(HDR, 16), w(DATA, 1024), w(STATUS, 1)]), (IOERR, 1));
    assert_eq!(rig.image.read_at(0, 1024), original, "write did not land");
}

#[test]
fn block_chain_without_usable_status_completes_with_zero_length() {
    let rig = Rig::new("nostatus");
    write_header(&rig.mem, HDR, VIRTIO_BLK_T_IN, 0);
    // Last descriptor device-readable.
    assert_eq!(submit(&rig, &[r(HDR, 16), w(DATA, 512), r(STATUS, 1)]), (STATUS_POISON, 0));
    // Last descriptor zero length.
    assert_eq!(submit(&rig, &[r(HDR, 16), w(DATA, 512), w(STATUS, 0)]), (STATUS_POISON, 0));
    // Only a header.
    assert_eq!(submit(&rig, &[r(HDR, 16)]), (STATUS_POISON, 0));
    // Status outside guest memory.
    assert_eq!(
        submit(&rig, &[r(HDR, 16), w(DATA, 512), w(MEM_END + 0x1000, 1)]),
        (STATUS_POISON, 0)
    );
}

#[test]
fn block_status_is_the_last_byte_of_the_status_descriptor() {
    let rig = Rig::new("statuslen");
    write_header(&rig.mem, HDR, VIRTIO_BLK_T_FLUSH, 0);
    fill_mem(&rig.mem, STATUS - 3, &[STATUS_POISON; 4]);
    let mut drv = Driver::new(&rig.mem);
    let mut queue = drv.queue();
    drv.add(&[r(HDR, 16), w(STATUS - 3, 4)]);
    rig.process(&mut queue);
    assert_eq!(
        read_mem(&rig.mem, STATUS - 3, 4),
        vec![STATUS_POISON, STATUS_POISON, STATUS_POISON, OK]
    );
}

#[test]
fn block_rejects_sectors_beyond_the_end() {
    let rig = Rig::new("beyond");
    write_header(&rig.mem, HDR, VIRTIO_BLK_T_IN, SECTORS);
    assert_eq!(submit(&rig, &[r(HDR, 16), w(DATA, 512), w(STATUS, 1)]), (IOERR, 1));
    write_header(&rig.mem, HDR, VIRTIO_BLK_T_IN, SECTORS - 1);
    assert_eq!(submit(&rig, &[r(HDR, 16), w(DATA, 1024), w(STATUS, 1)]), (IOERR, 1));
    // The last sector itself is fine.
    assert_eq!(submit(&rig, &[r(HDR, 16), w(DATA, 512), w(STATUS, 1)]), (OK, 513));
    write_header(&rig.mem, HDR, VIRTIO_BLK_T_OUT, SECTORS);
    assert_eq!(submit(&rig, &[r(HDR, 16), r(DATA, 512), w(STATUS, 1)]), (IOERR, 1));
    assert_eq!(rig.image.len(), SECTORS * SECTOR_SIZE, "image not extended");
}

#[test]
fn block_rejects_sector_overflow() {
    let rig = Rig::new("overflow");
    for sector in [u64::MAX, u64::MAX / SECTOR_SIZE, u64::MAX / SECTOR_SIZE + 1, 1 << 63] {
        write_header(&rig.mem, HDR, VIRTIO_BLK_T_IN, sector);
        assert_eq!(submit(&rig, &[r(HDR, 16), w(DATA, 512), w(STATUS, 1)]), (IOERR, 1));
        write_header(&rig.mem, HDR, VIRTIO_BLK_T_OUT, sector);
        assert_eq!(submit(&rig, &[r(HDR, 16), r(DATA, 512), w(STATUS, 1)]), (IOERR, 1));
    }
}

#[test]
fn block_rejects_lengths_that_are_not_whole_sectors() {
    let rig = Rig::new("unaligned");
    write_header(&rig.mem, HDR, VIRTIO_BLK_T_IN, 0);
    assert_eq!(submit(&rig, &[r(HDR, 16), w(DATA, 100), w(STATUS, 1)]), (IOERR, 1));
    write_header(&rig.mem, HDR, VIRTIO_BLK_T_OUT, 0);
    assert_eq!(
        submit(&rig, &[r(HDR, 16), r(DATA, 512), r(DATA + 512, 1), w(STATUS, 1)]),
        (IOERR, 1)
    );
}

#[test]
fn block_rejects_more_segments_than_seg_max() {
    // Big enough for seg_max whole sectors.
    let rig = Rig::build("segmax", 256, |_| {});
    let mut drv = Driver::new(&rig.mem);
    let mut queue = drv.queue();
    let chain = |hdr: u64, segments: u64, status: u64| -> Vec<Desc> {
        std::iter::once(r(hdr, 16))
            .chain((0..segments).map(|i| w(DATA + 512 * i, 512)))
            .chain(std::iter::once(w(status, 1)))
            .collect()
    };
    write_header(&rig.mem, HDR, VIRTIO_BLK_T_IN, 0);
    write_header(&rig.mem, HDR + 0x100, VIRTIO_BLK_T_IN, 0);
    poison_status(&rig.mem, STATUS);
    poison_status(&rig.mem, STATUS + 1);
    // More segments than the queue holds: only an indirect table can carry them.
    drv.add_indirect(INDIRECT, &chain(HDR, u64::from(SEG_MAX) + 1, STATUS));
    drv.add_indirect(INDIRECT + 0x2000, &chain(HDR + 0x100, u64::from(SEG_MAX), STATUS + 1));
    rig.process(&mut queue);
    assert_eq!(status_at(&rig.mem, STATUS), IOERR, "seg_max + 1");
    assert_eq!(drv.used(0).1, 1);
    assert_eq!(status_at(&rig.mem, STATUS + 1), OK, "seg_max");
    assert_eq!(drv.used(1).1, SEG_MAX * 512 + 1);
}

#[test]
fn block_rejects_buffers_outside_guest_memory() {
    let rig = Rig::new("oob");
    write_header(&rig.mem, HDR, VIRTIO_BLK_T_IN, 0);
    assert_eq!(submit(&rig, &[r(HDR, 16), w(MEM_END + 0x10000, 512), w(STATUS, 1)]), (IOERR, 1));
    // Straddling the end of guest memory.
    assert_eq!(submit(&rig, &[r(HDR, 16), w(MEM_END - 256, 512), w(STATUS, 1)]), (IOERR, 1));
    // Address wrap-around.
    assert_eq!(submit(&rig, &[r(HDR, 16), w(u64::MAX - 100, 512), w(STATUS, 1)]), (IOERR, 1));
    write_header(&rig.mem, HDR, VIRTIO_BLK_T_OUT, 0);
    let original = rig.image.read_at(0, 1024);
    assert_eq!(
        submit(&rig, &[r(HDR, 16), r(DATA, 512), r(MEM_END - 256, 512), w(STATUS, 1)]),
        (IOERR, 1)
    );
    assert_eq!(rig.image.read_at(0, 1024), original, "no partial write");
    // Header outside guest memory.
    assert_eq!(submit(&rig, &[r(MEM_END + 0x1000, 16), w(DATA, 512), w(STATUS, 1)]), (IOERR, 1));
}

#[test]
fn block_answers_unknown_types_with_unsupp() {
    let rig = Rig::new("unknown");
    for request_type in [2u32, 3, 14, 0xdead_beef] {
        write_header(&rig.mem, HDR, request_type, 0);
        assert_eq!(submit(&rig, &[r(HDR, 16), w(DATA, 512), w(STATUS, 1)]), (UNSUPP, 1));
    }
}

#[test]
fn block_refuses_discard_when_not_negotiated() {
    let rig = Rig::new("nodiscard");
    let mut drv = Driver::new(&rig.mem);
    let mut queue = drv.queue();
    write_header(&rig.mem, HDR, VIRTIO_BLK_T_DISCARD, 0);
    write_range(&rig.mem, DATA, 0, 1, 0);
    drv.add(&[r(HDR, 16), r(DATA, 16), w(STATUS, 1)]);
    let acked = rig.offered() & !(1 << virtio_bindings::virtio_blk::VIRTIO_BLK_F_DISCARD);
    rig.process_with_features(&mut queue, acked);
    assert_eq!(status_at(&rig.mem, STATUS), UNSUPP);
    assert_eq!(rig.image.read_at(0, 512), (0..512).map(pattern_byte).collect::<Vec<_>>());
}

#[test]
fn block_validates_discard_and_write_zeroes_ranges() {
    let rig = Rig::new("ranges");
    let unmap = VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP;
    let cases: &[(u32, u64, u32, u32, u8)] = &[
        // Discard takes no flags, not even unmap.
        (VIRTIO_BLK_T_DISCARD, 0, 1, unmap, UNSUPP),
        (VIRTIO_BLK_T_DISCARD, 0, 1, 0x80, UNSUPP),
        (VIRTIO_BLK_T_WRITE_ZEROES, 0, 1, 0x2, UNSUPP),
        (VIRTIO_BLK_T_DISCARD, SECTORS, 1, 0, IOERR),
        (VIRTIO_BLK_T_WRITE_ZEROES, SECTORS - 1, 2, unmap, IOERR),
        (VIRTIO_BLK_T_DISCARD, u64::MAX, 1, 0, IOERR),
        (VIRTIO_BLK_T_WRITE_ZEROES, u64::MAX / SECTOR_SIZE, 1, 0, IOERR),
        (VIRTIO_BLK_T_DISCARD, 0, u32::MAX, 0, IOERR),
        (VIRTIO_BLK_T_WRITE_ZEROES, 0, u32::MAX, 0, IOERR),
    ];
    let original = rig.image.read_at(0, (SECTORS * SECTOR_SIZE) as usize);
    for &(request_type, sector, num, flags, want) in cases {
        write_header(&rig.mem, HDR, request_type, 0);
        write_range(&rig.mem, DATA, sector, num, flags);
        let got = submit(&rig, &[r(HDR, 16), r(DATA, 16), w(STATUS, 1)]);
        assert_eq!(
            got,
            (want, 1),
            "type {request_type} sector {sector} num {num} flags {flags:#x}"
        );
    }
    // Payload of the wrong size or with two ranges (max_discard_seg is 1).
    write_header(&rig.mem, HDR, VIRTIO_BLK_T_DISCARD, 0);
    write_range(&rig.mem, DATA, 0, 1, 0);
    write_range(&rig.mem, DATA + 16, 1, 1, 0);
    assert_eq!(submit(&rig, &[r(HDR, 16), r(DATA, 8), w(STATUS, 1)]), (IOERR, 1));
    assert_eq!(submit(&rig, &[r(HDR, 16), r(DATA, 32), w(STATUS, 1)]), (IOERR, 1));
    assert_eq!(submit(&rig, &[r(HDR, 16), w(STATUS, 1)]), (IOERR, 1));
    assert_eq!(submit(&rig, &[r(HDR, 16), w(DATA, 16), w(STATUS, 1)]), (IOERR, 1));
    assert_eq!(submit(&rig, &[r(HDR, 16), r(MEM_END, 16), w(STATUS, 1)]), (IOERR, 1));
    assert_eq!(rig.image.read_at(0, (SECTORS * SECTOR_SIZE) as usize), original);
    // A range split over two descriptors is still one range.
    write_range(&rig.mem, DATA, 3, 1, 0);
    assert_eq!(submit(&rig, &[r(HDR, 16), r(DATA, 10), r(DATA + 10, 6), w(STATUS, 1)]), (OK, 1));
    assert_eq!(rig.image.read_at(3 * SECTOR_SIZE, 512), vec![0; 512]);
}

#[test]
fn block_descriptor_loop_is_dropped_and_queue_keeps_working() {
    let rig = Rig::new("loop");
    let mut drv = Driver::new(&rig.mem);
    let mut queue = drv.queue();
    write_header(&rig.mem, HDR, VIRTIO_BLK_T_IN, 0);
    poison_status(&rig.mem, STATUS);
    // 0 -> 1 -> 2 -> 1 -> ...
    drv.store(0, HDR, 16, NEXT, 1);
    drv.store(1, DATA, 512, WRITE | NEXT, 2);
    drv.store(2, STATUS, 1, WRITE | NEXT, 1);
    drv.publish(0);
    // A self-loop on the head.
    drv.store(3, HDR, 16, NEXT, 3);
    drv.publish(3);
    rig.process(&mut queue);
    assert_eq!(drv.used_idx(), 2);
    assert_eq!(drv.used(0), (0, 0));
    assert_eq!(drv.used(1), (3, 0));
    assert_eq!(status_at(&rig.mem, STATUS), STATUS_POISON);

    assert_queue_still_serves(&rig, &mut drv, &mut queue);
}

#[test]
fn block_out_of_range_next_index_is_dropped() {
    let rig = Rig::new("badnext");
    let mut drv = Driver::new(&rig.mem);
    let mut queue = drv.queue();
    write_header(&rig.mem, HDR, VIRTIO_BLK_T_IN, 0);
    poison_status(&rig.mem, STATUS);
    drv.store(0, HDR, 16, NEXT, 1);
    drv.store(1, DATA, 512, WRITE | NEXT, 300);
    drv.publish(0);
    rig.process(&mut queue);
    assert_eq!(drv.used(0), (0, 0));
    assert_eq!(status_at(&rig.mem, STATUS), STATUS_POISON);
}

#[test]
fn block_broken_indirect_tables_are_dropped() {
    let rig = Rig::new("badindirect");
    let mut drv = Driver::new(&rig.mem);
    let mut queue = drv.queue();
    poison_status(&rig.mem, STATUS);
    // Table length not a multiple of 16.
    drv.store(0, INDIRECT, 20, VRING_DESC_F_INDIRECT as u16, 0);
    drv.publish(0);
    // Table outside guest memory.
    drv.store(1, MEM_END + 0x1000, 48, VRING_DESC_F_INDIRECT as u16, 0);
    drv.publish(1);
    // Nested indirect table.
    write_header(&rig.mem, HDR, VIRTIO_BLK_T_FLUSH, 0);
    drv.add_indirect(INDIRECT + 0x100, &[r(HDR, 16), w(STATUS, 1)]);
    drv.store_indirect(INDIRECT + 0x100, 1, INDIRECT + 0x400, 32, VRING_DESC_F_INDIRECT as u16, 0);
    rig.process(&mut queue);
    assert_eq!(drv.used_idx(), 3);
    for i in 0..3 {
        assert_eq!(drv.used(i).1, 0, "chain {i}");
    }
    assert_eq!(status_at(&rig.mem, STATUS), STATUS_POISON);
}

#[test]
fn block_corrupt_available_ring_is_a_queue_error() {
    let rig = Rig::new("badavail");
    let mut drv = Driver::new(&rig.mem);
    let mut queue = drv.queue();
    // The available index runs more than a queue's worth ahead.
    drv.set_avail_idx(super::harness::QUEUE_SIZE + 5);
    let handler = rig.block.request_handler(rig.block.offered_features());
    assert!(handler.process_queue(&mut queue, &rig.mem, usize::MAX).is_err());
}

#[test]
fn block_out_of_range_head_index_is_a_queue_error() {
    let rig = Rig::new("badhead");
    let mut drv = Driver::new(&rig.mem);
    let mut queue = drv.queue();
    drv.publish(300);
    let handler = rig.block.request_handler(rig.block.offered_features());
    assert!(handler.process_queue(&mut queue, &rig.mem, usize::MAX).is_err());
}
