//! Opening TAPs: the errno-to-error mapping, and (where this process may create
//! TAPs) real TAPs: create, busy, offloads, the frame format on the wire, and no
//! interface left behind.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use vm_memory::GuestAddress;

use super::harness::*;
use crate::virtio::net::backend::NetBackend;
use crate::virtio::net::error::{attach_error, open_error, setup_error};
use crate::virtio::net::guest_iovecs::GuestIovecs;
use crate::virtio::net::offloads::{TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN};
use crate::virtio::net::tap::Tap;
use crate::virtio::net::{Net, NetConfig, NetError, HEADER_LEN};

fn os(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

#[test]
fn net_tap_attach_errors_are_mapped() {
    let e = attach_error("tap7", os(libc::EPERM));
    assert!(
        matches!(e, NetError::PermissionDenied { ref tap, errno: "EPERM", .. } if tap == "tap7")
    );
    let msg = e.to_string();
    assert!(
        msg.contains("tap7") && msg.contains("EPERM") && msg.contains("CAP_NET_ADMIN"),
        "{msg}"
    );

    let e = attach_error("tap7", os(libc::EBUSY));
    assert!(matches!(e, NetError::Busy { errno: "EBUSY", .. }));
    let msg = e.to_string();
    assert!(
        msg.contains("tap7") && msg.contains("EBUSY") && msg.contains("another process"),
        "{msg}"
    );

    let e = attach_error("eth0", os(libc::EINVAL));
    assert!(matches!(e, NetError::NotATap { errno: "EINVAL", .. }));
    assert!(e.to_string().contains("not a single-queue TAP"), "{e}");

    let e = attach_error("tap7", os(libc::ENOMEM));
    assert!(matches!(e, NetError::Attach { errno: "ENOMEM", .. }));
    assert!(e.to_string().contains("tap7"));
}

#[test]
fn net_tun_open_errors_are_mapped() {
    let e = open_error("tap7", os(libc::ENOENT));
    assert!(matches!(e, NetError::TunMissing { errno: "ENOENT", .. }));
    assert!(e.to_string().contains("modprobe tun"), "{e}");
    let e = open_error("tap7", os(libc::EACCES));
    assert!(matches!(e, NetError::TunAccess { errno: "EACCES", .. }));
    assert!(e.to_string().contains("/dev/net/tun") && e.to_string().contains("tap7"), "{e}");
    let e = open_error("tap7", os(libc::EMFILE));
    assert!(matches!(e, NetError::TunOpen { errno: "EMFILE", .. }));
    let e = setup_error("tap7", "TUNSETVNETHDRSZ", os(libc::EINVAL));
    assert!(e.to_string().contains("TUNSETVNETHDRSZ") && e.to_string().contains("EINVAL"), "{e}");
}

#[test]
fn net_new_refuses_bad_configuration_before_touching_the_host() {
    let err =
        Net::new(NetConfig { tap: "much-too-long-name".into(), mac: None }).expect_err("name");
    assert!(matches!(err, NetError::Config { .. }), "{err}");
    let err =
        Net::new(NetConfig { tap: "t0".into(), mac: Some([1, 0, 0, 0, 0, 1]) }).expect_err("mac");
    assert!(matches!(err, NetError::Mac { .. }), "{err}");
}

/// A fresh interface name for this process.
fn unique_name() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("tnt{}x{}", std::process::id() % 100_000, N.fetch_add(1, Ordering::Relaxed))
}

/// Creates a TAP, or says why this host does not let us (then the test is skipped).
fn try_create() -> Option<(Tap, String)> {
    let name = unique_name();
    match Tap::open(&name) {
        Ok(tap) => Some((tap, name)),
        Err(
            e @ (NetError::TunMissing { .. }
            | NetError::TunAccess { .. }
            | NetError::PermissionDenied { .. }),
        ) => {
            eprintln!("skipping real-TAP test: {e}");
            None
        }
        Err(e) => panic!("creating a TAP failed unexpectedly: {e}"),
    }
}

fn exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

#[test]
fn net_real_tap_create_busy_offloads_and_cleanup() {
    let Some((tap, name)) = try_create() else { return };
    assert_eq!(tap.name(), name);
    assert!(exists(&name));
    // Single queue: a second attach is refused with a clear error.
    match Tap::open(&name) {
        Err(e @ NetError::Busy { .. }) => assert!(e.to_string().contains(&name), "{e}"),
        other => panic!("expected Busy, got {other:?}"),
    }
    tap.set_offloads(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN).expect("offloads");
    tap.set_offloads(0).expect("offloads off");
    drop(tap);
    // A TAP we created is not persistent: it goes with its descriptor.
    assert!(!exists(&name), "{name} left behind");
}

#[test]
fn a_destination_opens_a_free_tap_at_once_and_the_sources_at_the_hand_over() {
    let Some((source_tap, held)) = try_create() else { return };
    let waiting = Net::new_at_hand_over(NetConfig::new(&held)).expect("a busy TAP waits for the hand-over");
    assert!(!waiting.link_up(), "{held} is the source's until it hands it over");
    drop(waiting);
    let free = unique_name();
    let own = Net::new_at_hand_over(NetConfig::new(&free)).expect("a free TAP");
    assert!(own.link_up(), "{free} is free: attached before the hand-over");
    drop(own);
    drop(source_tap);
    assert!(!exists(&free) && !exists(&held));
}

#[test]
fn net_real_tap_refuses_an_interface_that_is_not_a_tap() {
    let Some((tap, _)) = try_create() else { return };
    drop(tap);
    let err = Net::new(NetConfig::new("lo")).expect_err("lo is not a TAP");
    assert!(matches!(err, NetError::NotATap { .. }), "{err}");
}

/// Sets IFF_UP on `name` (and disables IPv6 on it, to keep the wire quiet).
fn bring_up(name: &str) {
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
    // SAFETY: plain socket creation.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
    // SAFETY: `fd` was just created and is owned here.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the live `ifr`.
    unsafe {
        assert_eq!(libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr), 0);
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        assert_eq!(
            libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &mut ifr),
            0,
            "{}",
            io::Error::last_os_error()
        );
    }
}

/// A raw packet socket bound to interface `name`.
fn packet_socket(name: &str) -> OwnedFd {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket creation.
    let fd = unsafe {
        libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_NONBLOCK, i32::from(proto))
    };
    assert!(fd >= 0, "packet socket: {}", io::Error::last_os_error());
    // SAFETY: `fd` was just created and is owned here.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let cname = std::ffi::CString::new(name).expect("name");
    // SAFETY: `cname` is a NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    assert!(index > 0);
    // SAFETY: sockaddr_ll is plain old data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = proto;
    addr.sll_ifindex = index as i32;
    // SAFETY: `addr` is a live sockaddr_ll of the size passed.
    let ret = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(ret, 0, "bind: {}", io::Error::last_os_error());
    sock
}

const TEST_ETHERTYPE: [u8; 2] = [0x88, 0xb5];

/// An Ethernet frame of local-experimental ethertype with `payload`.
fn eth_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
    f.extend(TEST_ETHERTYPE);
    f.extend(payload);
    f
}

fn is_ours(eth: &[u8], payload: &[u8]) -> bool {
    eth.len() >= 14 && eth[12..14] == TEST_ETHERTYPE && eth[14..].starts_with(payload)
}

#[test]
fn net_real_tap_frames_carry_a_12_byte_vnet_header() {
    let Some((tap, name)) = try_create() else { return };
    bring_up(&name);
    let sniffer = packet_socket(&name);
    let mem = guest_memory();

    // Guest to host: header (no offloads) plus frame, straight from guest memory.
    let payload: Vec<u8> = (0..200u32).map(|i| (i * 7) as u8).collect();
    let mut out = vec![0u8; HEADER_LEN];
    out.extend(eth_frame(&payload));
    fill_mem(&mem, TX_BUF, &out);
    let mut frame = GuestIovecs::for_device_reads(&mem);
    frame.push(GuestAddress(TX_BUF), 20).expect("buffer");
    frame.push(GuestAddress(TX_BUF + 20), (out.len() - 20) as u32).expect("buffer");
    assert_eq!(tap.write_frame(&frame).expect("write to TAP"), out.len());
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: `buf` is a live, writable buffer of `buf.len()` bytes.
        let n = unsafe { libc::recv(sniffer.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n > 0 && is_ours(&buf[..n as usize], &payload) {
            assert_eq!(buf[..n as usize], out[HEADER_LEN..], "the TAP strips exactly 12 bytes");
            break;
        }
        assert!(Instant::now() < deadline, "frame from the guest never reached the host");
        std::thread::sleep(Duration::from_millis(5));
    }

    // Host to guest: the TAP prepends the header; num_buffers is the device's.
    let back = eth_frame(b"hello from the host side of the TAP");
    // SAFETY: `back` is a live buffer of `back.len()` bytes.
    let n = unsafe { libc::send(sniffer.as_raw_fd(), back.as_ptr().cast(), back.len(), 0) };
    assert_eq!(n, back.len() as isize, "inject: {}", io::Error::last_os_error());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        fill_mem(&mem, RX_BUF, &[0xee; 2048]);
        let mut bufs = GuestIovecs::for_device_writes(&mem);
        bufs.push(GuestAddress(RX_BUF), 2048).expect("buffer");
        match tap.read_frame(&mut bufs) {
            Ok(n)
                if is_ours(
                    &read_mem(&mem, RX_BUF + HEADER_LEN as u64, n - HEADER_LEN),
                    b"hello",
                ) =>
            {
                assert_eq!(n, HEADER_LEN + back.len());
                assert_eq!(read_mem(&mem, RX_BUF, 10), vec![0; 10], "no offloads negotiated");
                // Older kernels skip num_buffers, newer ones zero it; the device
                // writes it either way.
                let num_buffers = read_mem(&mem, RX_BUF + 10, 2);
                assert!(num_buffers == [0xee, 0xee] || num_buffers == [0, 0], "{num_buffers:?}");
                assert_eq!(read_mem(&mem, RX_BUF + HEADER_LEN as u64, back.len()), back);
                break;
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("TAP read: {e}"),
        }
        assert!(Instant::now() < deadline, "frame from the host never reached the TAP");
    }

    // A frame larger than the buffers reads as one byte more than they hold.
    // SAFETY: as above.
    let n = unsafe { libc::send(sniffer.as_raw_fd(), back.as_ptr().cast(), back.len(), 0) };
    assert_eq!(n, back.len() as isize);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut bufs = GuestIovecs::for_device_writes(&mem);
        bufs.push(GuestAddress(RX_BUF), (HEADER_LEN + 20) as u32).expect("buffer");
        match tap.read_frame(&mut bufs) {
            Ok(n) if n == HEADER_LEN + 20 + 1 => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("TAP read: {e}"),
        }
        assert!(Instant::now() < deadline, "truncated frame never seen");
    }
    drop(tap);
    assert!(!exists(&name));
}

#[test]
fn net_real_tap_deleted_under_a_running_device_takes_the_link_down() {
    use std::sync::Arc;

    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    use crate::virtio::{ActivateContext, ActiveQueue, VirtioDevice};

    let Some((tap, name)) = try_create() else { return };
    let mem = guest_memory();
    let mut net = Net::with_backend(Arc::new(tap), [0x52, 0x54, 0, 0, 0, 1]);
    let drivers =
        [Driver::new(&mem, RX_RING), Driver::new(&mem, TX_RING), Driver::new(&mem, CTRL_RING)];
    let interrupt = Arc::new(CountingInterrupt::default());
    let queues = drivers
        .iter()
        .map(|d| ActiveQueue {
            queue: d.queue(),
            notify: EventFd::new(EFD_NONBLOCK).expect("eventfd"),
        })
        .collect();
    let ctx = ActivateContext {
        mem: mem.clone(),
        acked_features: net.offered_features(),
        queues,
        interrupt: interrupt.clone(),
    };
    net.activate(ctx).expect("activate");
    assert!(net.link_up());

    let deleted = std::process::Command::new("ip").args(["link", "del", &name]).status();
    if !deleted.is_ok_and(|s| s.success()) {
        eprintln!("skipping: cannot run `ip link del {name}`");
        return;
    }
    wait_for("link down", || !net.link_up());
    wait_for("config interrupt", || interrupt.config() == 1);
    assert_eq!(interrupt.needs_reset(), 0);
    assert!(net.reset());
    assert!(!exists(&name));
}
