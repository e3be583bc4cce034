//! Coalesced console output: while the guest drives COM1 in polling mode (the kernel
//! console: transmit interrupt off, each character written to THR then LSR polled),
//! KVM queues the THR writes in its coalesced-I/O ring instead of exiting to us for
//! every character. Any vCPU exit drains the ring, in order, before it is handled, so
//! the UART sees the same write sequence as without coalescing.
//!
//! With the transmit interrupt on, the guest waits for an interrupt that only comes
//! once we have seen its writes, so coalescing is switched off then.

use std::sync::Mutex;

use devices::bus::{Bus, BusDevice};
use devices::legacy::serial::{COM1_PORT, UART_PORT_COUNT};
use devices::legacy::Serial;
use devices::sync::lock;
use kvm_bindings::{kvm_coalesced_mmio, KVM_COALESCED_MMIO_PAGE_OFFSET};
use kvm_ioctls::{IoEventAddress, VcpuFd, VmFd};

/// The port whose writes are coalesced (COM1 THR).
const THR_PORT: u64 = COM1_PORT as u64;

/// The UART, its ring and the VM, as the vCPU loop needs them.
pub struct ConsoleLink {
    pub ring: CoalescedConsole,
    pub vm: std::sync::Arc<VmFd>,
    pub serial: std::sync::Arc<Mutex<Serial>>,
}

impl ConsoleLink {
    /// Replays the writes KVM queued (see [`CoalescedConsole::drain`]).
    pub fn drain(&self, pio: &Bus) {
        self.ring.drain(&self.serial, pio);
    }

    /// Whether `port` is one of COM1's registers.
    pub fn owns_port(port: u16) -> bool {
        (COM1_PORT..COM1_PORT + UART_PORT_COUNT as u16).contains(&port)
    }

    /// Serves a read of a COM1 register without the bus lookup: the kernel console
    /// reads LSR before every character, so this is the commonest exit of a boot.
    pub fn read_port(&self, port: u16, data: &mut [u8]) {
        lock(&self.serial).read(u64::from(port - COM1_PORT), data);
    }

    /// After the guest wrote a UART control register: coalesce THR writes exactly
    /// while the transmit interrupt is off.
    pub fn update(&self) {
        let polled = !lock(&self.serial).transmit_interrupt_enabled();
        self.ring.set_enabled(&self.vm, polled);
    }
}

/// The shared ring KVM fills; see the module docs.
pub struct CoalescedConsole {
    ring: *mut u8,
    ring_len: usize,
    entries: u32,
    /// Writes replayed from the ring so far (for logs and tests).
    replayed: std::sync::atomic::AtomicU64,
    /// Held while draining (any vCPU may drain) and while switching.
    state: Mutex<bool>,
}

// SAFETY: the ring is a shared mapping KVM writes as producer; consumers are
// serialised by `state`, and the pointer stays valid for the life of the struct.
unsafe impl Send for CoalescedConsole {}
// SAFETY: see above; every access to the ring happens under the `state` mutex.
unsafe impl Sync for CoalescedConsole {}

#[repr(C)]
struct RingHeader {
    first: u32,
    last: u32,
}

impl CoalescedConsole {
    /// Maps the ring through `fd` (any vCPU of the VM). `None` if KVM lacks coalesced
    /// PIO, in which case every console write simply exits as usual.
    pub fn new(vm: &VmFd, fd: &VcpuFd) -> Option<Self> {
        use std::os::fd::AsRawFd;
        if vm.check_extension_int(kvm_ioctls::Cap::CoalescedPio) <= 0 {
            return None;
        }
        // SAFETY: sysconf only reads a system value.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        // SAFETY: maps one page of the vCPU fd at KVM's documented ring offset; the
        // result is checked before use and unmapped in Drop.
        let ring = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                (KVM_COALESCED_MMIO_PAGE_OFFSET as usize * page) as libc::off_t,
            )
        };
        if ring == libc::MAP_FAILED {
            tracing::debug!("coalesced I/O ring unavailable: {}", std::io::Error::last_os_error());
            return None;
        }
        let entries = ((page - std::mem::size_of::<RingHeader>()) / std::mem::size_of::<kvm_coalesced_mmio>()) as u32;
        Some(Self { ring: ring.cast(), ring_len: page, entries, replayed: Default::default(), state: Mutex::new(false) })
    }

    /// Whether KVM has queued nothing that is not replayed yet. Read without the
    /// lock: it runs on every vCPU exit. A drain in progress elsewhere advances
    /// `first` only after replaying an entry, so "empty" is never seen early.
    fn is_empty(&self) -> bool {
        let header = self.ring.cast::<RingHeader>();
        // SAFETY: `header` points at the start of the ring page mapped in `new`
        // (valid for the life of `self`); only plain volatile reads of two u32s.
        unsafe { std::ptr::read_volatile(&(*header).first) == std::ptr::read_volatile(&(*header).last) }
    }

    /// Replays queued writes, oldest first: THR writes straight to `serial` (locked
    /// once for the whole drain), anything else onto `pio`.
    pub fn drain(&self, serial: &Mutex<Serial>, pio: &Bus) {
        if self.is_empty() {
            return;
        }
        let _guard = lock(&self.state);
        let mut uart = None;
        let mut replayed = 0;
        let header = self.ring.cast::<RingHeader>();
        // SAFETY: `header` points at the start of the mapped ring page. KVM writes
        // `last` (producer) and entries; we own `first`. Volatile accesses keep the
        // compiler from caching either across iterations; the fences order them.
        unsafe {
            loop {
                let first = std::ptr::read_volatile(&(*header).first);
                let last = std::ptr::read_volatile(&(*header).last);
                std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
                if first == last || first >= self.entries {
                    break;
                }
                let entry_ptr = self
                    .ring
                    .add(std::mem::size_of::<RingHeader>() + first as usize * std::mem::size_of::<kvm_coalesced_mmio>())
                    .cast::<kvm_coalesced_mmio>();
                let entry = std::ptr::read_volatile(entry_ptr);
                let len = (entry.len as usize).min(entry.data.len());
                if entry.phys_addr == THR_PORT {
                    uart.get_or_insert_with(|| lock(serial)).write(0, &entry.data[..len]);
                } else {
                    pio.write(entry.phys_addr, &entry.data[..len]);
                }
                replayed += 1;
                std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
                std::ptr::write_volatile(&mut (*header).first, (first + 1) % self.entries);
            }
        }
        self.replayed.fetch_add(replayed, std::sync::atomic::Ordering::Relaxed);
    }

    /// How many queued writes have been replayed so far.
    pub fn replayed(&self) -> u64 {
        self.replayed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Turns coalescing of THR writes on or off (no-op when already so).
    pub fn set_enabled(&self, vm: &VmFd, enabled: bool) {
        let mut state = lock(&self.state);
        if *state == enabled {
            return;
        }
        let addr = IoEventAddress::Pio(THR_PORT);
        let result = if enabled { vm.register_coalesced_mmio(addr, 1) } else { vm.unregister_coalesced_mmio(addr, 1) };
        match result {
            Ok(()) => *state = enabled,
            Err(e) => tracing::debug!("switching console coalescing to {enabled}: {e}"),
        }
    }
}

impl Drop for CoalescedConsole {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the page mapped in `new`.
        unsafe { libc::munmap(self.ring.cast(), self.ring_len) };
    }
}
