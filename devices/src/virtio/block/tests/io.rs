//! Well-formed requests: reads, writes, flush, GET_ID, discard, write zeroes.

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES,
    VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
};
use vm_memory::bitmap::Bitmap;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use super::harness::*;
use crate::virtio::block::SECTOR_SIZE;

const OK: u8 = VIRTIO_BLK_S_OK as u8;
const IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;

fn expected(offset: u64, len: usize) -> Vec<u8> {
    (offset..offset + len as u64).map(pattern_byte).collect()
}

#[test]
fn block_read_returns_image_data() {
    let rig = Rig::new("read");
    let mut drv = Driver::new(&rig.mem);
    let mut queue = drv.queue();
    write_header(&rig.mem, HDR, VIRTIO_BLK_T_IN, 3);
    poison_status(&rig.mem, STATUS);
    let head = drv.add(&[r(HDR, 16), w(DATA, 1024), w(STATUS, 1)]);

    assert!(rig.process(&mut queue));

    assert_eq!(drv.used_idx(), 1);
    assert_eq!(drv.used(0), (u32::from(head), 1024 + 1));
    assert_eq!(status_at(&rig.mem, STATUS), OK);
    assert_eq!(read_mem(&rig.mem, DATA, 1024), expected(3 * SECTOR_SIZE, 1024));
}

#[test]
fn block_write_reaches_image_and_reads_back() {
    let rig = Rig::new("write");
    let mut drv = Driver::new(&rig.mem);
    let mut queue = drv.queue();
    let data: Vec<u8> = (0..1536u32).map(|i| (i * 13 % 251) as u8).collect();
    fill_mem(&rig.mem, DATA, &data);
    write_header(&rig.mem, HDR, VIRTIO_BLK_T_OUT, 10);
    drv.add(&[r(HDR, 16), r(DATA, 1536), w(STATUS, 1)]);
    rig.process(&mut queue);

    assert_eq!(drv.used(0).1, 1, "a write returns only the status byte");
    assert_eq!(status_at(&rig.mem, STATUS), OK);
    assert_eq!(rig.image.read_at(10 * SECTOR_SIZE, 1536), data);
    // Neighbours untouched.
    assert_eq!(rig.image.read_at(9 * SECTOR_SIZE, 512), expected(9 * SECTOR_SIZE, 512));
    assert_eq!(rig.image.read_at(13 * SECTOR_SIZE, 512), expected(13 * SECTOR_SIZE, 512));

    // Read it back into other buffers.
    write_header(&rig.mem, HDR + 0x100, VIRTIO_BLK_T_IN, 10);
    drv.add(&[r(HDR + 0x100, 16), w(DATA + 0x4000, 1536), w(STATUS + 1, 1)]);
    rig.process(&mut queue);
    assert_eq!(status_at(&rig.mem, STATUS + 1), OK);
    assert_eq!(read_mem(&rig.mem, DATA + 0x4000, 1536), data);
}

#[test]
fn block_vectored_io_over_scattered_and_region_crossing_buffers() {
    let rig = Rig::new("vectored");
    let mut drv = Driver::new(&rig.mem);
    let mut queue = drv.queue();
    // Three segments: 512 bytes, 1536 bytes across the boundary between the two
    // memory regions, and 1024 bytes elsewhere; a segment need not be whole sectors
    // as long as the total is.
    let straddle = REGION_SIZE - 700;
    let segs = [(DATA, 300u32), (straddle, 1748), (DATA + 0x8000, 1024)];
    write_header(&rig.mem, HDR, VIRTIO_BLK_T_IN, 5);
    let descs: Vec<Desc> = std::iter::once(r(HDR, 16))
        .chain(segs.iter().map(|&(a, l)| w(a, l)))
        .chain(std::iter::once(w(STATUS, 1)))
        .collect();
    drv.add(&descs);
    rig.process(&mut queue);
    assert_eq!(status_at(&rig.mem, STATUS), OK);
    assert_eq!(drv.used(0).1, 3072 + 1);
    let mut got = Vec::new();
    for &(a, l) in &segs {
        got.extend(read_mem(&rig.mem, a, l as usize));
    }
    assert_eq!(got, expected(5 * SECTOR_SIZE, 3072));

    // Write different data through the same scattered layout.
    let new: Vec<u8> = (0..3072u32).map(|i| (i % 97) as u8 + 1).collect();
    let mut pos = 0;
    for &(a, l) in &segs {
        fill_mem(&rig.mem, a, &new[pos..pos + l as usize]);
        pos += l as usize;
    }
    write_header(&rig.mem, HDR, VIRTIO_BLK_T_OUT, 20);
    let descs: Vec<Desc> = std::iter::once(r(HDR, 16))
        .chain(segs.iter().map(|&(a, l)| r(a, l)))
        .chain(std::iter::once(w(STATUS, 1)))
        .collect();
    drv.add(&descs);
    rig.process(&mut queue);
    assert_eq!(status_at(&rig.mem, STATUS), OK);
    assert_eq!(rig.image.read_at(20 * SECTOR_SIZE, 3072), new);
}

#[test]
fn block_indirect_chain_is_served() {
    let rig = Rig::new("indirect");
    let mut drv = Driver::new(&rig.mem);
    let mut queue = drv.queue();
    write_header(&rig.mem, HDR, VIRTIO_BLK_T_IN, 1);
    drv.add_indirect(INDIRECT, &[r(HDR, 16), w(DATA, 512), w(DATA + 0x1000, 512), w(STATUS, 1)]);
    rig.process(&mut queue);
    assert_eq!(status_at(&rig.mem, STATUS), OK);
    assert_eq!(drv.used(0).1, 1025);
    assert_eq!(read_mem(&rig.mem, DATA, 512), expected(SECTOR_SIZE, 512));
    assert_eq!(read_mem(&rig.mem, DATA + 0x1000, 512), expected(2 * SECTOR_SIZE, 512));
}

#[test]
fn block_read_marks_guest_pages_dirty() {
    let rig = Rig::new("dirty");
    let mut drv = Driver::new(&rig.mem);
    let mut queue = drv.queue();
    write_header(&rig.mem, HDR, VIRTIO_BLK_T_IN, 0);
    // Two pages of the second region, written only by the kernel's preadv.
    let buf = REGION_SIZE + 0x3000;
    let region = rig.mem.find_region(GuestAddress(buf)).expect("region");
    let offset = (buf - region.start_addr().0) as usize;
    assert!(!region.bitmap().dirty_at(offset));
    assert!(!region.bitmap().dirty_at(offset + 0x1000));
    drv.add(&[r(HDR, 16), w(buf, 8192), w(STATUS, 1)]);
    rig.process(&mut queue);
    assert_eq!(status_at(&rig.mem, STATUS), OK);
    assert!(region.bitmap().dirty_at(offset));
    assert!(region.bitmap().dirty_at(offset + 0x1000));
    assert!(!region.bitmap().dirty_at(offset + 0x2000), "only the buffer is marked");
}

#[test]
fn block_flush_completes() {
    let rig = Rig::new("flush");
    let mut drv = Driver::new(&rig.mem);
    let mut queue = drv.queue();
    write_header(&rig.mem, HDR, VIRTIO_BLK_T_FLUSH, 0);
    poison_status(&rig.mem, STATUS);
    drv.add(&[r(HDR, 16), w(STATUS, 1)]);
    rig.process(&mut queue);
    assert_eq!(drv.used(0).1, 1);
    assert_eq!(status_at(&rig.mem, STATUS), OK);
    rig.block.flush().expect("flush");
}

#[test]
fn block_get_id_returns_zero_padded_serial() {
    let rig = Rig::with_config("serial", |c| c.serial = Some("tern-disk-7".into()));
    let mut drv = Driver::new(&rig.mem);
    let mut queue = drv.queue();
    fill_mem(&rig.mem, DATA, &[0xaa; 20]);
    write_header(&rig.mem, HDR, VIRTIO_BLK_T_GET_ID, 0);
    drv.add(&[r(HDR, 16), w(DATA, 20), w(STATUS, 1)]);
    rig.process(&mut queue);
    assert_eq!(status_at(&rig.mem, STATUS), OK);
    assert_eq!(drv.used(0).1, 21);
    let mut want = b"tern-disk-7".to_vec();
    want.resize(20, 0);
    assert_eq!(read_mem(&rig.mem, DATA, 20), want);
}

#[test]
fn block_get_id_without_serial_is_zeroes_and_fits_short_buffers() {
    let rig = Rig::new("noserial");
    let mut drv = Driver::new(&rig.mem);
    let mut queue = drv.queue();
    fill_mem(&rig.mem, DATA, &[0xaa; 32]);
    write_header(&rig.mem, HDR, VIRTIO_BLK_T_GET_ID, 0);
    drv.add(&[r(HDR, 16), w(DATA, 8), w(STATUS, 1)]);
    rig.process(&mut queue);
    assert_eq!(status_at(&rig.mem, STATUS), OK);
    assert_eq!(drv.used(0).1, 9);
    assert_eq!(read_mem(&rig.mem, DATA, 8), vec![0; 8]);
    assert_eq!(read_mem(&rig.mem, DATA + 8, 1), vec![0xaa], "nothing past the buffer");
}

#[test]
fn block_discard_reads_back_as_zeroes() {
    let rig = Rig::new("discard");
    let mut drv = Driver::new(&rig.mem);
    let mut queue = drv.queue();
    write_header(&rig.mem, HDR, VIRTIO_BLK_T_DISCARD, 0);
    write_range(&rig.mem, DATA, 8, 16, 0);
    drv.add(&[r(HDR, 16), r(DATA, 16), w(STATUS, 1)]);
    rig.process(&mut queue);
    assert_eq!(status_at(&rig.mem, STATUS), OK);
    assert_eq!(drv.used(0).1, 1);
    assert_eq!(rig.image.read_at(8 * SECTOR_SIZE, 16 * 512), vec![0; 16 * 512]);
    assert_eq!(rig.image.read_at(7 * SECTOR_SIZE, 512), expected(7 * SECTOR_SIZE, 512));
    assert_eq!(rig.image.read_at(24 * SECTOR_SIZE, 512), expected(24 * SECTOR_SIZE, 512));
    assert_eq!(rig.image.len(), SECTORS * SECTOR_SIZE, "size kept");
}

#[test]
fn block_write_zeroes_with_and_without_unmap() {
    let rig = Rig::new("wzeroes");
    let mut drv = Driver::new(&rig.mem);
    let mut queue = drv.queue();
    for (i, (sector, flags)) in
        [(2u64, 0u32), (40, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP)].into_iter().enumerate()
    {
        let i = i as u64;
        write_header(&rig.mem, HDR + 0x100 * i, VIRTIO_BLK_T_WRITE_ZEROES, 0);
        write_range(&rig.mem, DATA + 0x100 * i, sector, 3, flags);
        drv.add(&[r(HDR + 0x100 * i, 16), r(DATA + 0x100 * i, 16), w(STATUS + i, 1)]);
    }
    rig.process(&mut queue);
    for i in 0..2 {
        assert_eq!(status_at(&rig.mem, STATUS + i), OK);
    }
    assert_eq!(rig.image.read_at(2 * SECTOR_SIZE, 3 * 512), vec![0; 3 * 512]);
    assert_eq!(rig.image.read_at(40 * SECTOR_SIZE, 3 * 512), vec![0; 3 * 512]);
    assert_eq!(rig.image.read_at(5 * SECTOR_SIZE, 512), expected(5 * SECTOR_SIZE, 512));
    assert_eq!(rig.image.len(), SECTORS * SECTOR_SIZE);
}

#[test]
fn block_zero_fallback_writes_zeroes() {
    let rig = Rig::new("zerofallback");
    rig.block.disk.write_zero_bytes(3 * SECTOR_SIZE, 2 * SECTOR_SIZE + 100).expect("zeroes");
    assert_eq!(rig.image.read_at(3 * SECTOR_SIZE, 1124), vec![0; 1124]);
    assert_eq!(rig.image.read_at(3 * SECTOR_SIZE + 1124, 1), expected(3 * SECTOR_SIZE + 1124, 1));
}

#[test]
fn block_read_only_disk_serves_reads_and_refuses_writes() {
    let rig = Rig::read_only("ro");
    let mut drv = Driver::new(&rig.mem);
    let mut queue = drv.queue();
    let original = rig.image.read_at(0, (SECTORS * SECTOR_SIZE) as usize);
    fill_mem(&rig.mem, DATA, &[0x55; 4096]);
    write_range(&rig.mem, DATA + 0x2000, 0, 4, 0);

    write_header(&rig.mem, HDR, VIRTIO_BLK_T_OUT, 0);
    drv.add(&[r(HDR, 16), r(DATA, 512), w(STATUS, 1)]);
    write_header(&rig.mem, HDR + 0x100, VIRTIO_BLK_T_DISCARD, 0);
    drv.add(&[r(HDR + 0x100, 16), r(DATA + 0x2000, 16), w(STATUS + 1, 1)]);
    write_header(&rig.mem, HDR + 0x200, VIRTIO_BLK_T_WRITE_ZEROES, 0);
    drv.add(&[r(HDR + 0x200, 16), r(DATA + 0x2000, 16), w(STATUS + 2, 1)]);
    write_header(&rig.mem, HDR + 0x300, VIRTIO_BLK_T_IN, 4);
    drv.add(&[r(HDR + 0x300, 16), w(DATA + 0x4000, 512), w(STATUS + 3, 1)]);
    write_header(&rig.mem, HDR + 0x400, VIRTIO_BLK_T_FLUSH, 0);
    drv.add(&[r(HDR + 0x400, 16), w(STATUS + 4, 1)]);

    // Acknowledge discard and write-zeroes even though a read-only disk does not
    // offer them: the device must still refuse.
    let all = rig.offered()
        | 1 << virtio_bindings::virtio_blk::VIRTIO_BLK_F_DISCARD
        | 1 << virtio_bindings::virtio_blk::VIRTIO_BLK_F_WRITE_ZEROES;
    rig.process_with_features(&mut queue, all);

    assert_eq!(status_at(&rig.mem, STATUS), IOERR, "write");
    assert_eq!(status_at(&rig.mem, STATUS + 1), IOERR, "discard");
    assert_eq!(status_at(&rig.mem, STATUS + 2), IOERR, "write zeroes");
    assert_eq!(status_at(&rig.mem, STATUS + 3), OK, "read");
    assert_eq!(status_at(&rig.mem, STATUS + 4), OK, "flush");
    assert_eq!(read_mem(&rig.mem, DATA + 0x4000, 512), expected(4 * SECTOR_SIZE, 512));
    assert_eq!(rig.image.read_at(0, (SECTORS * SECTOR_SIZE) as usize), original);
}

#[test]
fn block_event_idx_suppresses_interrupts_until_used_event() {
    let rig = Rig::new("eventidx");
    let mut drv = Driver::new(&rig.mem);
    let mut queue = drv.queue();
    virtio_queue::QueueT::set_event_idx(&mut queue, true);
    write_header(&rig.mem, HDR, VIRTIO_BLK_T_FLUSH, 0);

    // The driver wants an interrupt only once the used index passes 2.
    drv.set_used_event(2);
    drv.add(&[r(HDR, 16), w(STATUS, 1)]);
    assert!(!rig.process(&mut queue), "used idx 1: no interrupt yet");
    assert_eq!(drv.avail_event(), 1, "device asks to be kicked at the next request");

    drv.add(&[r(HDR, 16), w(STATUS + 1, 1)]);
    drv.add(&[r(HDR, 16), w(STATUS + 2, 1)]);
    assert!(rig.process(&mut queue), "used idx went past used_event");
    assert_eq!(drv.used_idx(), 3);
    assert_eq!(drv.avail_event(), 3);

    // Without EVENT_IDX every completion interrupts.
    let mut queue2 = drv.queue();
    virtio_queue::QueueT::set_next_avail(&mut queue2, 3);
    virtio_queue::QueueT::set_next_used(&mut queue2, 3);
    drv.add(&[r(HDR, 16), w(STATUS + 3, 1)]);
    assert!(rig.process(&mut queue2));
    // Nothing to do: no interrupt.
    assert!(!rig.process(&mut queue2));
}

#[test]
fn block_budget_bounds_one_pass_and_the_rest_stays_pending() {
    let rig = Rig::new("budget");
    let mut drv = Driver::new(&rig.mem);
    let mut queue = drv.queue();
    write_header(&rig.mem, HDR, VIRTIO_BLK_T_FLUSH, 0);
    for i in 0..3 {
        drv.add(&[r(HDR, 16), w(STATUS + i, 1)]);
    }
    let handler = rig.block.request_handler(rig.offered());
    let first = handler.process_queue(&mut queue, &rig.mem, 2).expect("queue usable");
    assert!(first.pending && first.interrupt);
    assert_eq!(drv.used_idx(), 2);
    let second = handler.process_queue(&mut queue, &rig.mem, 2).expect("queue usable");
    assert!(!second.pending && second.interrupt);
    assert_eq!(drv.used_idx(), 3);
    let idle = handler.process_queue(&mut queue, &rig.mem, 2).expect("queue usable");
    assert!(!idle.pending && !idle.interrupt);
}
