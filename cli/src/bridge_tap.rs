//! `--net bridge=BR`: a TAP made for this VM, put on an existing bridge, brought up,
//! and removed again when tern ends, however it ends.
//!
//! The TAP is created persistent (`TUNSETPERSIST`), so the virtio-net device attaches
//! it by name like any `tap=` (and a migration can hand it over and take it back).
//! Removal is done by a small cleaner process forked before the first TAP exists: it
//! holds the read end of a pipe, learns each TAP's interface index through it, and
//! when the pipe closes (tern exited, crashed, was killed, or dropped the guard)
//! deletes them with one `RTM_DELLINK` each. The cleaner ignores the terminal's and
//! systemd's stop signals and keeps no other descriptor, so it never holds a disk
//! lock or a TAP open. No external command is run.

use std::ffi::{c_int, c_short, c_uint, c_ulong};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use devices::virtio::net::NetConfig;
use vmm_sys_util::ioctl::{ioctl_with_mut_ref, ioctl_with_val};
use vmm_sys_util::ioctl_iow_nr;

use crate::device_args::NetArg;

/// Where the kernel lists interfaces (a bridge has a `bridge/` directory there).
const SYS_CLASS_NET: &str = "/sys/class/net";
/// The template the kernel fills in for a new TAP's name (`ternbr0`, `ternbr1`, ...).
const TAP_TEMPLATE: &str = "ternbr%d";
/// More NICs than a VM's PCI bus holds: the cleaner's fixed table.
pub const MAX_BRIDGE_TAPS: usize = 32;

const TUNTAP: c_uint = b'T' as c_uint;
ioctl_iow_nr!(TUNSETIFF, TUNTAP, 202, c_int);
ioctl_iow_nr!(TUNSETPERSIST, TUNTAP, 203, c_int);
const IFF_TAP: c_short = 0x0002;
const IFF_NO_PI: c_short = 0x1000;
const IFF_VNET_HDR: c_short = 0x4000;
/// Socket ioctls of `<linux/sockios.h>`.
const SIOCGIFFLAGS: c_ulong = 0x8913;
const SIOCSIFFLAGS: c_ulong = 0x8914;
const SIOCGIFMTU: c_ulong = 0x8921;
const SIOCSIFMTU: c_ulong = 0x8922;
const SIOCGIFINDEX: c_ulong = 0x8933;
const SIOCBRADDIF: c_ulong = 0x89a2;

/// Why a bridge TAP could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// No interface of that name.
    #[error("bridge {0} does not exist")]
    NoSuchBridge(String),
    /// An interface that is not a bridge.
    #[error("{0} is not a bridge")]
    NotABridge(String),
    /// More bridge NICs than the cleaner tracks.
    #[error("at most {MAX_BRIDGE_TAPS} NICs on bridges")]
    TooMany,
    /// The cleaner process could not be started.
    #[error("cannot start the bridge TAP cleaner: {0}")]
    Cleaner(io::Error),
    /// A step of making the TAP failed.
    #[error("bridge {bridge}: cannot {step}: {source}{hint}", hint = permission_hint(source))]
    Setup {
        /// The bridge.
        bridge: String,
        /// What was being done, naming the TAP where it exists.
        step: String,
        /// The kernel's answer.
        source: io::Error,
    },
}

fn permission_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => " (needs CAP_NET_ADMIN)",
        _ => "",
    }
}

/// `struct ifreq`: the name and the union's first member as an int (`ifr_ifindex`,
/// `ifr_mtu`; `ifr_flags` is its low 16 bits on this little-endian target).
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    value: c_int,
    _pad: [u8; 20],
}

const _: () = assert!(std::mem::size_of::<IfReq>() == 40);
#[cfg(not(target_endian = "little"))]
compile_error!("IfReq keeps ifr_flags in the low half of an int: little-endian only");

impl IfReq {
    fn new(name: &str) -> Self {
        let mut ifr = Self {
            name: [0; libc::IFNAMSIZ],
            value: 0,
            _pad: [0; 20],
        };
        // The last byte stays NUL; names are validated to at most 15 bytes.
        let len = name.len().min(libc::IFNAMSIZ - 1);
        ifr.name[..len].copy_from_slice(&name.as_bytes()[..len]);
        ifr
    }

    fn name(&self) -> String {
        let end = self
            .name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.name.len());
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }
}

/// Whether `name` under `sys_class_net` is a bridge: one line when it is missing or
/// another kind of interface.
pub fn check_bridge(sys_class_net: &Path, name: &str) -> Result<(), BridgeError> {
    let dev = sys_class_net.join(name);
    if std::fs::symlink_metadata(&dev).is_err() {
        return Err(BridgeError::NoSuchBridge(name.to_string()));
    }
    if !dev.join("bridge").is_dir() {
        return Err(BridgeError::NotABridge(name.to_string()));
    }
    Ok(())
}

/// The TAPs this process put on bridges; dropping it (or tern's exit) removes them.
#[derive(Debug, Default)]
pub struct BridgeTaps {
    /// Write end of the cleaner's pipe; closing it starts the removal.
    cleaner: Option<File>,
    /// The cleaner's pid, to reap it when dropped early.
    pid: Option<libc::pid_t>,
    /// (TAP, bridge) pairs made.
    pub taps: Vec<(String, String)>,
}

#[cfg(test)]
impl BridgeTaps {
    /// Drops the guard and waits for the cleaner to have removed every TAP (tests).
    pub fn remove_now(mut self) {
        self.cleaner = None;
        if let Some(pid) = self.pid.take() {
            let mut status = 0;
            // SAFETY: waits for our own child; `status` is a live local.
            unsafe { libc::waitpid(pid, &mut status, 0) };
        }
    }
}

/// Turns every `bridge=` into a TAP on that bridge (every `tap=` as it is); returns
/// the NICs' configurations in the given order and the guard that removes the TAPs.
pub fn attach(nets: &[NetArg]) -> Result<(Vec<NetConfig>, BridgeTaps), BridgeError> {
    attach_under(Path::new(SYS_CLASS_NET), nets)
}

fn attach_under(
    sys_class_net: &Path,
    nets: &[NetArg],
) -> Result<(Vec<NetConfig>, BridgeTaps), BridgeError> {
    let bridges = nets
        .iter()
        .filter(|n| matches!(n, NetArg::Bridge { .. }))
        .count();
    let mut guard = BridgeTaps::default();
    if bridges == 0 {
        let configs = nets
            .iter()
            .filter_map(|n| {
                if let NetArg::Tap(c) = n {
                    Some(c.clone())
                } else {
                    None
                }
            })
            .collect();
        return Ok((configs, guard));
    }
    if bridges > MAX_BRIDGE_TAPS {
        return Err(BridgeError::TooMany);
    }
    for net in nets {
        if let NetArg::Bridge { bridge, .. } = net {
            check_bridge(sys_class_net, bridge)?;
        }
    }
    let (pipe, pid) = start_cleaner().map_err(BridgeError::Cleaner)?;
    guard.cleaner = Some(pipe);
    guard.pid = Some(pid);
    let mut configs = Vec::with_capacity(nets.len());
    for net in nets {
        match net {
            NetArg::Tap(config) => configs.push(config.clone()),
            NetArg::Bridge { bridge, mac } => {
                let tap = make_tap(&mut guard, bridge)?;
                configs.push(NetConfig { tap, mac: *mac });
            }
        }
    }
    Ok((configs, guard))
}

/// An `AF_UNIX` datagram socket for the interface ioctls.
fn ioctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket creation; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A socket ioctl on `ifr`.
fn sock_ioctl(sock: &OwnedFd, request: c_ulong, ifr: &mut IfReq) -> io::Result<()> {
    // SAFETY: `ifr` is a live 40-byte `struct ifreq` the kernel reads and writes
    // within the call; `sock` is an open socket.
    let ret = unsafe { libc::ioctl(sock.as_raw_fd(), request, ifr as *mut IfReq) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Creates a persistent TAP, hands its index to the cleaner, puts it on `bridge`
/// with the bridge's MTU and brings it up. Returns its name.
fn make_tap(guard: &mut BridgeTaps, bridge: &str) -> Result<String, BridgeError> {
    let fail = |step: String| {
        move |source| BridgeError::Setup {
            bridge: bridge.to_string(),
            step,
            source,
        }
    };
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(fail("open /dev/net/tun".into()))?;
    let mut ifr = IfReq::new(TAP_TEMPLATE);
    ifr.value = c_int::from(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
    // SAFETY: `tun` is an open tun descriptor and `ifr` a live, writable ifreq.
    if unsafe { ioctl_with_mut_ref(&tun, TUNSETIFF(), &mut ifr) } < 0 {
        return Err(fail("create a TAP".into())(io::Error::last_os_error()));
    }
    let tap = ifr.name();
    // SAFETY: TUNSETPERSIST takes its argument by value.
    if unsafe { ioctl_with_val(&tun, TUNSETPERSIST(), 1) } < 0 {
        return Err(fail(format!("make TAP {tap} persistent"))(
            io::Error::last_os_error(),
        ));
    }
    let sock = ioctl_socket().map_err(fail("open a socket".into()))?;
    let mut req = IfReq::new(&tap);
    if let Err(e) = sock_ioctl(&sock, SIOCGIFINDEX, &mut req) {
        // Not yet known to the cleaner: take persistence back, so closing removes it.
        // SAFETY: as above.
        unsafe { ioctl_with_val(&tun, TUNSETPERSIST(), 0) };
        return Err(fail(format!("find TAP {tap}"))(e));
    }
    let index = req.value;
    tell_cleaner(guard, index).map_err(fail(format!("hand TAP {tap} to the cleaner")))?;
    guard.taps.push((tap.clone(), bridge.to_string()));
    // The device attaches it by name later; only one descriptor may hold it.
    drop(tun);

    let mut mtu = IfReq::new(bridge);
    sock_ioctl(&sock, SIOCGIFMTU, &mut mtu).map_err(fail("read its MTU".into()))?;
    let mut set_mtu = IfReq::new(&tap);
    set_mtu.value = mtu.value;
    sock_ioctl(&sock, SIOCSIFMTU, &mut set_mtu)
        .map_err(fail(format!("set TAP {tap}'s MTU to {}", mtu.value)))?;
    let mut add = IfReq::new(bridge);
    add.value = index;
    sock_ioctl(&sock, SIOCBRADDIF, &mut add).map_err(fail(format!("add TAP {tap}")))?;
    let mut flags = IfReq::new(&tap);
    sock_ioctl(&sock, SIOCGIFFLAGS, &mut flags).map_err(fail(format!("read TAP {tap}'s flags")))?;
    flags.value |= libc::IFF_UP;
    sock_ioctl(&sock, SIOCSIFFLAGS, &mut flags).map_err(fail(format!("bring TAP {tap} up")))?;
    tracing::info!(tap = %tap, bridge, "TAP created on the bridge");
    Ok(tap)
}

fn tell_cleaner(guard: &BridgeTaps, index: c_int) -> io::Result<()> {
    let pipe = guard
        .cleaner
        .as_ref()
        .ok_or_else(|| io::Error::other("no cleaner"))?;
    io::Write::write_all(&mut &*pipe, &index.to_ne_bytes())
}

/// Forks the cleaner; returns the pipe's write end and its pid.
fn start_cleaner() -> io::Result<(File, libc::pid_t)> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptors are new and owned here from now on.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    // SAFETY: the child runs only `cleaner`, which makes raw system calls on stack
    // buffers (no allocation, no lock), so forking a process with threads is sound.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        cleaner(read.as_raw_fd());
    }
    drop(read);
    Ok((write, pid))
}

/// The cleaner process: reads interface indices until the pipe closes, then deletes
/// each interface. Never returns.
fn cleaner(pipe: RawFd) -> ! {
    // SAFETY: only async-signal-safe system calls on descriptors and stack buffers
    // follow; every failure ends the process.
    unsafe {
        for signal in [
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGHUP,
            libc::SIGQUIT,
            libc::SIGPIPE,
        ] {
            libc::signal(signal, libc::SIG_IGN);
        }
        libc::prctl(
            libc::PR_SET_NAME,
            c"tern-tapclean".as_ptr() as c_ulong,
            0,
            0,
            0,
        );
        // Keep the pipe alone: no disk lock, TAP, terminal or socket of tern's.
        if pipe > 0 {
            libc::close_range(0, (pipe - 1) as c_uint, 0);
        }
        libc::close_range((pipe + 1) as c_uint, c_uint::MAX, 0);
        let mut indices = [0 as c_int; MAX_BRIDGE_TAPS];
        let mut count = 0;
        let mut buf = [0u8; 4];
        let mut have = 0;
        loop {
            let n = libc::read(pipe, buf.as_mut_ptr().add(have).cast(), buf.len() - have);
            if n == 0 || (n < 0 && *libc::__errno_location() != libc::EINTR) {
                break;
            }
            if n < 0 {
                continue;
            }
            have += n as usize;
            if have == buf.len() {
                have = 0;
                if count < MAX_BRIDGE_TAPS {
                    indices[count] = c_int::from_ne_bytes(buf);
                    count += 1;
                }
            }
        }
        let sock = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        );
        if sock >= 0 {
            for (seq, &index) in indices[..count].iter().enumerate() {
                let msg = dellink_message(index, seq as u32 + 1);
                let mut addr: libc::sockaddr_nl = std::mem::zeroed();
                addr.nl_family = libc::AF_NETLINK as u16;
                let sent = libc::sendto(
                    sock,
                    msg.as_ptr().cast(),
                    msg.len(),
                    0,
                    (&addr as *const libc::sockaddr_nl).cast(),
                    std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
                );
                if sent > 0 {
                    // The acknowledgement (or error), so deletions happen in order.
                    let mut ack = [0u8; 256];
                    libc::recv(sock, ack.as_mut_ptr().cast(), ack.len(), 0);
                }
            }
        }
        libc::_exit(0)
    }
}

/// An `RTM_DELLINK` request for interface `index`: `nlmsghdr` then `ifinfomsg`.
fn dellink_message(index: c_int, seq: u32) -> [u8; 32] {
    let mut msg = [0u8; 32];
    msg[0..4].copy_from_slice(&32u32.to_ne_bytes()); // nlmsg_len
    msg[4..6].copy_from_slice(&libc::RTM_DELLINK.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    msg[6..8].copy_from_slice(&flags.to_ne_bytes());
    msg[8..12].copy_from_slice(&seq.to_ne_bytes());
    // nlmsg_pid 0 (the kernel); ifinfomsg: family AF_UNSPEC, type 0, then the index.
    msg[16 + 4..16 + 8].copy_from_slice(&index.to_ne_bytes());
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_bridge_and_a_non_bridge_are_one_line_each() {
        let root = std::env::temp_dir().join(format!("tern-sysnet-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("br0/bridge")).unwrap();
        std::fs::create_dir_all(root.join("eth0")).unwrap();
        assert!(check_bridge(&root, "br0").is_ok());
        assert_eq!(
            check_bridge(&root, "eth0").unwrap_err().to_string(),
            "eth0 is not a bridge"
        );
        assert_eq!(
            check_bridge(&root, "nope0").unwrap_err().to_string(),
            "bridge nope0 does not exist"
        );
        // attach checks every bridge before it creates anything.
        let nets = [
            NetArg::Bridge {
                bridge: "br0".into(),
                mac: None,
            },
            NetArg::Bridge {
                bridge: "nope0".into(),
                mac: None,
            },
        ];
        let err = attach_under(&root, &nets).unwrap_err();
        assert_eq!(err.to_string(), "bridge nope0 does not exist");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn taps_alone_pass_through_without_a_cleaner() {
        let nets = [
            NetArg::Tap(NetConfig::new("tap7")),
            NetArg::Tap(NetConfig {
                tap: "t8".into(),
                mac: Some([2, 0, 0, 0, 0, 1]),
            }),
        ];
        let (configs, guard) = attach_under(Path::new("/nonexistent"), &nets).unwrap();
        assert_eq!(
            configs,
            vec![
                NetConfig::new("tap7"),
                NetConfig {
                    tap: "t8".into(),
                    mac: Some([2, 0, 0, 0, 0, 1])
                }
            ]
        );
        assert!(guard.cleaner.is_none() && guard.pid.is_none() && guard.taps.is_empty());
    }

    #[test]
    fn the_dellink_request_names_the_index() {
        let msg = dellink_message(0x1234, 7);
        assert_eq!(u32::from_ne_bytes(msg[0..4].try_into().unwrap()), 32);
        assert_eq!(u16::from_ne_bytes(msg[4..6].try_into().unwrap()), 17); // RTM_DELLINK
        assert_eq!(u16::from_ne_bytes(msg[6..8].try_into().unwrap()), 1 | 4); // REQUEST | ACK
        assert_eq!(u32::from_ne_bytes(msg[8..12].try_into().unwrap()), 7);
        assert_eq!(msg[16], 0); // AF_UNSPEC
        assert_eq!(i32::from_ne_bytes(msg[20..24].try_into().unwrap()), 0x1234);
    }

    /// Makes (or deletes) a bridge through the socket ioctls.
    fn bridge_ioctl(request: c_ulong, name: &str) -> io::Result<()> {
        let sock = ioctl_socket()?;
        let cname = std::ffi::CString::new(name).unwrap();
        // SAFETY: SIOCBRADDBR/SIOCBRDELBR read a NUL-terminated name.
        if unsafe { libc::ioctl(sock.as_raw_fd(), request, cname.as_ptr()) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Needs CAP_NET_ADMIN (root here); fails with the reason without it.
    #[test]
    fn a_tap_is_made_on_the_bridge_up_and_removed_when_the_guard_goes() {
        const SIOCBRADDBR: c_ulong = 0x89a0;
        const SIOCBRDELBR: c_ulong = 0x89a1;
        let bridge = format!("tbu{}", std::process::id() % 1_000_000);
        bridge_ioctl(SIOCBRADDBR, &bridge).unwrap_or_else(|e| {
            panic!("this test needs CAP_NET_ADMIN to make bridge {bridge}: {e}")
        });
        let nets = [
            NetArg::Tap(NetConfig::new("tap-x")),
            NetArg::Bridge {
                bridge: bridge.clone(),
                mac: Some([2, 0, 0, 0, 0, 9]),
            },
        ];
        let result = attach(&nets);
        let (configs, guard) = match result {
            Ok(ok) => ok,
            Err(e) => {
                let _ = bridge_ioctl(SIOCBRDELBR, &bridge);
                panic!("attach: {e}");
            }
        };
        let tap = configs[1].tap.clone();
        assert_eq!(configs[0], NetConfig::new("tap-x"));
        assert!(tap.starts_with("ternbr"), "{tap}");
        assert_eq!(configs[1].mac, Some([2, 0, 0, 0, 0, 9]));
        assert_eq!(guard.taps, vec![(tap.clone(), bridge.clone())]);
        let sys = Path::new(SYS_CLASS_NET);
        let master = std::fs::read_link(sys.join(&tap).join("master")).unwrap();
        assert_eq!(master.file_name().unwrap().to_str(), Some(bridge.as_str()));
        let flags = std::fs::read_to_string(sys.join(&tap).join("flags")).unwrap();
        assert_eq!(
            u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap() & 1,
            1,
            "IFF_UP: {flags}"
        );
        // Persistent: the device can attach it by name, as it does any TAP.
        assert!(sys.join(&tap).join("tun_flags").exists());
        guard.remove_now();
        let gone = !sys.join(&tap).exists();
        let _ = bridge_ioctl(SIOCBRDELBR, &bridge);
        assert!(gone, "TAP {tap} still exists after the guard was dropped");
    }

    #[test]
    fn messages_hint_at_the_capability() {
        let e = BridgeError::Setup {
            bridge: "br0".into(),
            step: "create a TAP".into(),
            source: io::Error::from_raw_os_error(libc::EPERM),
        };
        assert!(
            e.to_string()
                .starts_with("bridge br0: cannot create a TAP: ")
                && e.to_string().ends_with("(needs CAP_NET_ADMIN)"),
            "{e}"
        );
    }
}
