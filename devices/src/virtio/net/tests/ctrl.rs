//! The control queue: supported commands are acknowledged, everything else and
//! every malformed command is answered VIRTIO_NET_ERR (or, with nowhere to write
//! the answer, completed with length 0).

use virtio_bindings::virtio_net::{
    VIRTIO_NET_CTRL_ANNOUNCE, VIRTIO_NET_CTRL_ANNOUNCE_ACK, VIRTIO_NET_CTRL_GUEST_OFFLOADS,
    VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, VIRTIO_NET_CTRL_MAC_TABLE_SET,
    VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, VIRTIO_NET_CTRL_RX,
    VIRTIO_NET_CTRL_RX_ALLMULTI, VIRTIO_NET_CTRL_RX_PROMISC, VIRTIO_NET_CTRL_VLAN,
};

use super::harness::*;
use crate::virtio::net::ctrl::{ACK_ERR, ACK_OK};
use crate::virtio::net::{STATUS_ANNOUNCE, STATUS_LINK_UP};

const ACK: u64 = CTRL_BUF + 0x800;
const POISON: u8 = 0xee;

/// Sends class/cmd/data as a header descriptor, a data descriptor (if any) and a
/// one-byte ack. Returns (ack byte, used length).
fn command(b: &mut Bench<'_>, class: u32, cmd: u32, data: &[u8]) -> (u8, u32) {
    fill_mem(b.mem, CTRL_BUF, &[class as u8, cmd as u8]);
    fill_mem(b.mem, CTRL_BUF + 0x100, data);
    fill_mem(b.mem, ACK, &[POISON]);
    let mut descs = vec![r(CTRL_BUF, 2)];
    if !data.is_empty() {
        descs.push(r(CTRL_BUF + 0x100, data.len() as u32));
    }
    descs.push(w(ACK, 1));
    submit(b, &descs)
}

/// Submits a hand-made chain. Returns (ack byte, used length).
fn submit(b: &mut Bench<'_>, descs: &[Desc]) -> (u8, u32) {
    let used = b.ctrl.used_idx();
    b.ctrl.add(descs);
    b.handler.process_ctrl();
    assert_eq!(b.ctrl.used_idx(), used.wrapping_add(1), "the command is always completed");
    (read_mem(b.mem, ACK, 1)[0], b.ctrl.used(used).1)
}

#[test]
fn net_ctrl_receive_modes_are_acknowledged() {
    let mem = guest_memory();
    let mut b = Bench::new(&mem);
    assert_eq!(command(&mut b, VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_PROMISC, &[1]), (ACK_OK, 1));
    assert_eq!(command(&mut b, VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_ALLMULTI, &[0]), (ACK_OK, 1));
    // Missing on/off byte; unknown receive-mode command.
    assert_eq!(command(&mut b, VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_PROMISC, &[]), (ACK_ERR, 1));
    assert_eq!(command(&mut b, VIRTIO_NET_CTRL_RX, 9, &[1]), (ACK_ERR, 1));
    assert_eq!(b.interrupt.queue(2), 4);
    assert_eq!(b.stats().ctrl_errors, 2);
}

#[test]
fn net_ctrl_mac_commands() {
    let mem = guest_memory();
    let mut b = Bench::new(&mem);
    let addr = [0x52, 0x54, 0, 1, 2, 3];
    assert_eq!(
        command(&mut b, VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, &addr),
        (ACK_OK, 1)
    );
    assert_eq!(
        command(&mut b, VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, &addr[..5]),
        (ACK_ERR, 1)
    );
    // Two empty tables (unicast, multicast): entry counts of 0.
    assert_eq!(
        command(&mut b, VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, &[0; 8]),
        (ACK_OK, 1)
    );
    assert_eq!(command(&mut b, VIRTIO_NET_CTRL_MAC, 7, &addr), (ACK_ERR, 1));
}

#[test]
fn net_ctrl_announce_ack_clears_the_status_bit() {
    let mem = guest_memory();
    let mut b = Bench::new(&mem);
    b.link.request_announce();
    assert_eq!(b.link.get(), STATUS_LINK_UP | STATUS_ANNOUNCE);
    assert_eq!(
        command(&mut b, VIRTIO_NET_CTRL_ANNOUNCE, VIRTIO_NET_CTRL_ANNOUNCE_ACK, &[]),
        (ACK_OK, 1)
    );
    assert_eq!(b.link.get(), STATUS_LINK_UP);
    assert_eq!(command(&mut b, VIRTIO_NET_CTRL_ANNOUNCE, 1, &[]), (ACK_ERR, 1));
}

#[test]
fn net_ctrl_multiqueue_accepts_only_one_pair() {
    let mem = guest_memory();
    let mut b = Bench::new(&mem);
    let set = VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET;
    assert_eq!(command(&mut b, VIRTIO_NET_CTRL_MQ, set, &1u16.to_le_bytes()), (ACK_OK, 1));
    assert_eq!(command(&mut b, VIRTIO_NET_CTRL_MQ, set, &2u16.to_le_bytes()), (ACK_ERR, 1));
    assert_eq!(command(&mut b, VIRTIO_NET_CTRL_MQ, set, &0u16.to_le_bytes()), (ACK_ERR, 1));
    assert_eq!(command(&mut b, VIRTIO_NET_CTRL_MQ, set, &[1]), (ACK_ERR, 1));
    // RSS / hash configuration are not offered.
    assert_eq!(command(&mut b, VIRTIO_NET_CTRL_MQ, 1, &[0; 16]), (ACK_ERR, 1));
}

#[test]
fn net_ctrl_unknown_classes_are_refused() {
    let mem = guest_memory();
    let mut b = Bench::new(&mem);
    assert_eq!(command(&mut b, VIRTIO_NET_CTRL_VLAN, 0, &[0, 1]), (ACK_ERR, 1));
    assert_eq!(command(&mut b, VIRTIO_NET_CTRL_GUEST_OFFLOADS, 0, &[0; 8]), (ACK_ERR, 1));
    assert_eq!(command(&mut b, 200, 0, &[]), (ACK_ERR, 1));
}

#[test]
fn net_ctrl_header_and_data_in_one_descriptor() {
    let mem = guest_memory();
    let mut b = Bench::new(&mem);
    fill_mem(&mem, CTRL_BUF, &[VIRTIO_NET_CTRL_RX as u8, VIRTIO_NET_CTRL_RX_PROMISC as u8, 1]);
    assert_eq!(submit(&mut b, &[r(CTRL_BUF, 3), w(ACK, 1)]), (ACK_OK, 1));
}

#[test]
fn net_ctrl_malformed_commands() {
    let mem = guest_memory();
    let mut b = Bench::new(&mem);
    fill_mem(&mem, CTRL_BUF, &[VIRTIO_NET_CTRL_RX as u8, VIRTIO_NET_CTRL_RX_PROMISC as u8, 1]);
    // A header of one byte.
    fill_mem(&mem, ACK, &[POISON]);
    assert_eq!(submit(&mut b, &[r(CTRL_BUF, 1), w(ACK, 1)]), (ACK_ERR, 1));
    // Only an ack buffer.
    assert_eq!(submit(&mut b, &[w(ACK, 1)]), (ACK_ERR, 1));
    // Device-readable data after the ack.
    assert_eq!(submit(&mut b, &[r(CTRL_BUF, 2), w(ACK, 1), r(CTRL_BUF + 2, 1)]), (ACK_ERR, 1));
    // Header outside guest memory.
    assert_eq!(submit(&mut b, &[r(MEM_END, 2), w(ACK, 1)]), (ACK_ERR, 1));
    // No ack buffer at all: nothing written, used length 0.
    fill_mem(&mem, ACK, &[POISON]);
    assert_eq!(submit(&mut b, &[r(CTRL_BUF, 3)]), (POISON, 0));
    // Ack outside guest memory.
    assert_eq!(submit(&mut b, &[r(CTRL_BUF, 3), w(MEM_END + 5, 1)]).1, 0);
    // A descriptor loop.
    let a = b.ctrl.slot();
    let c = b.ctrl.slot();
    b.ctrl.store(a, CTRL_BUF, 2, VRING_NEXT, c);
    b.ctrl.store(c, ACK, 1, VRING_NEXT | VRING_WRITE, a);
    let used = b.ctrl.used_idx();
    b.ctrl.publish(a);
    b.handler.process_ctrl();
    assert_eq!(b.ctrl.used_idx(), used + 1);
    assert_eq!(read_mem(&mem, ACK, 1)[0], ACK_ERR);
    // The queue still works.
    fill_mem(&mem, CTRL_BUF, &[VIRTIO_NET_CTRL_RX as u8, VIRTIO_NET_CTRL_RX_PROMISC as u8, 1]);
    assert_eq!(submit(&mut b, &[r(CTRL_BUF, 3), w(ACK, 1)]), (ACK_OK, 1));
}

const VRING_NEXT: u16 = virtio_bindings::virtio_ring::VRING_DESC_F_NEXT as u16;
const VRING_WRITE: u16 = virtio_bindings::virtio_ring::VRING_DESC_F_WRITE as u16;
