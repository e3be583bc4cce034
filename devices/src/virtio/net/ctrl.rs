//! The control queue: each chain is one command — a device-readable
//! `virtio_net_ctrl_hdr` (class, command) and its data, then a device-writable
//! `ack` byte the device sets to VIRTIO_NET_OK or VIRTIO_NET_ERR.
//!
//! Supported: receive-mode (promiscuous, all-multicast, ...) and MAC-filter
//! commands are acknowledged (the TAP delivers everything anyway);
//! ANNOUNCE_ACK clears the ANNOUNCE status bit; MQ_VQ_PAIRS_SET accepts one pair.
//! Everything else, and any malformed command, is answered with VIRTIO_NET_ERR;
//! a chain without a place for the ack completes with used length 0.

use std::ops::Deref;

use virtio_bindings::virtio_net::{
    VIRTIO_NET_CTRL_ANNOUNCE, VIRTIO_NET_CTRL_ANNOUNCE_ACK, VIRTIO_NET_CTRL_MAC,
    VIRTIO_NET_CTRL_MAC_ADDR_SET, VIRTIO_NET_CTRL_MAC_TABLE_SET, VIRTIO_NET_CTRL_MQ,
    VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_NOBCAST,
    VIRTIO_NET_ERR, VIRTIO_NET_OK,
};
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress};

use super::link::LinkStatus;
use super::queue_error::{QueueError, MAX_IDLE_PASSES};
use super::stats::Counters;
use crate::virtio::GuestMemoryMmap;

/// VIRTIO_NET_OK as the ack byte.
pub(crate) const ACK_OK: u8 = VIRTIO_NET_OK as u8;
/// VIRTIO_NET_ERR as the ack byte.
pub(crate) const ACK_ERR: u8 = VIRTIO_NET_ERR as u8;

/// Command bytes read from the guest; no command we accept needs more (larger
/// ones, like a MAC table, are accepted without being read).
const MAX_COMMAND_BYTES: usize = 64;

/// What one control pass did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CtrlPass {
    /// Commands completed.
    pub completed: usize,
    /// The driver needs an interrupt.
    pub interrupt: bool,
}

/// Answers every available command.
pub(crate) fn process_ctrl(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    link: &LinkStatus,
    counters: &Counters,
) -> Result<CtrlPass, QueueError> {
    let mut completed = 0usize;
    let mut idle_passes = 0;
    loop {
        queue.disable_notification(mem)?;
        let mut progressed = false;
        while let Some(chain) = queue.iter(mem)?.next() {
            let head = chain.head_index();
            let used_len = answer(chain, mem, link, counters);
            queue.add_used(mem, head, used_len)?;
            progressed = true;
            completed += 1;
        }
        if !queue.enable_notification(mem)? {
            break;
        }
        idle_passes = if progressed { 0 } else { idle_passes + 1 };
        if idle_passes > MAX_IDLE_PASSES {
            return Err(QueueError::Stalled);
        }
    }
    let interrupt = completed > 0 && queue.needs_notification(mem)?;
    Ok(CtrlPass { completed, interrupt })
}

/// A control chain taken apart.
struct Command {
    /// The first bytes of the device-readable part (header, then data).
    bytes: Vec<u8>,
    /// Length of the whole device-readable part.
    readable_len: u64,
    /// The ack byte, if the chain has a device-writable descriptor.
    ack: Option<GuestAddress>,
    /// The chain is well formed (not broken, readable before writable, all
    /// readable buffers inside guest memory).
    well_formed: bool,
}

/// Runs one command. Returns the used length: 1 when the ack was written, else 0.
fn answer<M>(
    chain: DescriptorChain<M>,
    mem: &GuestMemoryMmap,
    link: &LinkStatus,
    counters: &Counters,
) -> u32
where
    M: Deref<Target = GuestMemoryMmap>,
{
    let head = chain.head_index();
    let command = read_command(chain, mem);
    let ack = if command.well_formed { execute(&command, link) } else { ACK_ERR };
    if ack != ACK_OK {
        Counters::add(&counters.ctrl_errors, 1);
    }
    let Some(addr) = command.ack else {
        tracing::debug!(head, "control command without an ack buffer");
        return 0;
    };
    match mem.write_obj(ack, addr) {
        Ok(()) => 1,
        Err(_) => {
            tracing::debug!(head, "control ack at {:#x} is outside guest memory", addr.0);
            0
        }
    }
}

fn read_command<M>(chain: DescriptorChain<M>, mem: &GuestMemoryMmap) -> Command
where
    M: Deref<Target = GuestMemoryMmap>,
{
    let mut command = Command { bytes: Vec::new(), readable_len: 0, ack: None, well_formed: true };
    let mut last_has_next = true;
    for desc in chain {
        last_has_next = desc.has_next();
        if desc.is_write_only() {
            if command.ack.is_none() && desc.len() > 0 {
                command.ack = Some(desc.addr());
            }
            continue;
        }
        if command.ack.is_some() {
            // Device-readable after device-writable.
            command.well_formed = false;
            continue;
        }
        command.readable_len += u64::from(desc.len());
        let want = MAX_COMMAND_BYTES.saturating_sub(command.bytes.len()).min(desc.len() as usize);
        if want > 0 {
            let at = command.bytes.len();
            command.bytes.resize(at + want, 0);
            if mem.read_slice(&mut command.bytes[at..], desc.addr()).is_err() {
                command.well_formed = false;
            }
        }
    }
    if last_has_next {
        command.well_formed = false;
    }
    command
}

/// The ack for a well-formed command.
fn execute(command: &Command, link: &LinkStatus) -> u8 {
    let [class, cmd, ref data @ ..] = command.bytes[..] else {
        return ACK_ERR;
    };
    let (class, cmd) = (u32::from(class), u32::from(cmd));
    let data_len = command.readable_len.saturating_sub(2);
    let ok = match class {
        VIRTIO_NET_CTRL_RX => cmd <= VIRTIO_NET_CTRL_RX_NOBCAST && data_len == 1,
        VIRTIO_NET_CTRL_MAC => match cmd {
            // Two u32 entry counts at least; the entries are not needed.
            VIRTIO_NET_CTRL_MAC_TABLE_SET => data_len >= 8,
            VIRTIO_NET_CTRL_MAC_ADDR_SET => data_len == 6,
            _ => false,
        },
        VIRTIO_NET_CTRL_ANNOUNCE if cmd == VIRTIO_NET_CTRL_ANNOUNCE_ACK => {
            link.ack_announce();
            true
        }
        VIRTIO_NET_CTRL_MQ if cmd == VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET => {
            data_len == 2 && matches!(data, [1, 0])
        }
        _ => false,
    };
    tracing::debug!(class, cmd, ok, "virtio-net control command");
    if ok {
        ACK_OK
    } else {
        ACK_ERR
    }
}
