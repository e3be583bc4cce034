//! A TAP interface opened through `/dev/net/tun`: single queue, no packet-info
//! prefix, 12-byte virtio-net headers (IFF_VNET_HDR + TUNSETVNETHDRSZ), and a
//! non-blocking descriptor the worker polls.
//!
//! An existing TAP is attached; a missing one is created (and vanishes again when
//! the descriptor closes) if the process has CAP_NET_ADMIN. Bringing the link up
//! and addressing it is the host's business, not the device's.

use std::ffi::{c_int, c_short, c_uint, c_ulong};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;

use vmm_sys_util::ioctl::{ioctl_with_mut_ref, ioctl_with_ref, ioctl_with_val};
use vmm_sys_util::ioctl_iow_nr;

use super::backend::NetBackend;
use super::error::{attach_error, open_error, setup_error, NetError};
use super::guest_iovecs::GuestIovecs;
use super::header::HEADER_LEN;

/// The clone device every TAP is opened through.
const TUN_DEVICE: &str = "/dev/net/tun";

/// ioctl type of the tun driver (`<linux/if_tun.h>`).
const TUNTAP: c_uint = b'T' as c_uint;
ioctl_iow_nr!(TUNSETIFF, TUNTAP, 202, c_int);
ioctl_iow_nr!(TUNSETOFFLOAD, TUNTAP, 208, c_uint);
ioctl_iow_nr!(TUNSETVNETHDRSZ, TUNTAP, 216, c_int);

/// An Ethernet (layer 2) device rather than IP-only TUN.
const IFF_TAP: c_short = 0x0002;
/// No 4-byte packet-information prefix.
const IFF_NO_PI: c_short = 0x1000;
/// Frames carry a virtio-net header.
const IFF_VNET_HDR: c_short = 0x4000;

/// `struct ifreq` as TUNSETIFF reads and writes it: the name and the flags member
/// of the union, padded to the 40 bytes the kernel copies.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: c_short,
    _pad: [u8; 22],
}

const _: () = assert!(std::mem::size_of::<IfReq>() == 40);

/// An attached TAP interface.
#[derive(Debug)]
pub(crate) struct Tap {
    file: File,
    /// The interface name the kernel reports (differs from the requested one only
    /// when that was a `%d` template).
    name: String,
}

impl Tap {
    /// Attaches the TAP `name`, creating it if it does not exist. The name must
    /// already be valid (see `config::validate_tap_name`).
    pub(crate) fn open(name: &str) -> Result<Self, NetError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(TUN_DEVICE)
            .map_err(|e| open_error(name, e))?;

        let mut ifr = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
            _pad: [0; 22],
        };
        // Leave the last byte NUL: the kernel wants a terminated string.
        let len = name.len().min(libc::IFNAMSIZ - 1);
        ifr.name[..len].copy_from_slice(&name.as_bytes()[..len]);
        // SAFETY: `file` is an open tun descriptor and `ifr` a live, writable
        // 40-byte `struct ifreq` the kernel reads and writes back within the call.
        let ret = unsafe { ioctl_with_mut_ref(&file, TUNSETIFF(), &mut ifr) };
        if ret < 0 {
            return Err(attach_error(name, io::Error::last_os_error()));
        }
        let end = ifr.name.iter().position(|&b| b == 0).unwrap_or(ifr.name.len());
        let actual = String::from_utf8_lossy(&ifr.name[..end]).into_owned();
        let tap = Self { file, name: if actual.is_empty() { name.to_string() } else { actual } };

        // HEADER_LEN is 12.
        let header_len = HEADER_LEN as c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which refers to
        // a live local for the duration of the call.
        let ret = unsafe { ioctl_with_ref(&tap.file, TUNSETVNETHDRSZ(), &header_len) };
        if ret < 0 {
            return Err(setup_error(&tap.name, "TUNSETVNETHDRSZ", io::Error::last_os_error()));
        }
        // No offloads towards the guest until a driver negotiates them.
        tap.set_offloads(0).map_err(|e| setup_error(&tap.name, "TUNSETOFFLOAD", e))?;
        Ok(tap)
    }
}

impl NetBackend for Tap {
    fn name(&self) -> &str {
        &self.name
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    fn read_frame(&self, bufs: &mut GuestIovecs<'_>) -> io::Result<usize> {
        // The tun driver returns at most what the buffers hold; `readv`'s overflow
        // byte makes a frame that did not fit report one byte more.
        bufs.readv(self.file.as_fd())
    }

    fn write_frame(&self, frame: &GuestIovecs<'_>) -> io::Result<usize> {
        frame.writev(self.file.as_fd())
    }

    fn set_offloads(&self, tun_flags: u32) -> io::Result<()> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value; no memory is passed.
        let ret = unsafe { ioctl_with_val(&self.file, TUNSETOFFLOAD(), c_ulong::from(tun_flags)) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}
