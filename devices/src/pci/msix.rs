//! MSI-X: the vector table and pending-bit array a device exposes in a BAR, the
//! capability that enables and masks them, and delivery through irqfds.
//!
//! Each vector owns a GSI with an irqfd, allocated up front. A vector's route is
//! programmed when the guest unmasks it (drivers write the entry while it is masked,
//! then unmask), so a half-written entry is never routed. A signal on a masked
//! vector sets its pending bit; unmasking delivers it.

use std::io;
use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::EventFd;

use crate::interrupt::{MsiMessage, MsiRouter};
use crate::pci::capability_id;
use crate::sync::lock;

/// Bytes per table entry.
pub const ENTRY_SIZE: u64 = 16;
const CONTROL_MASKED: u32 = 1;
/// Message control: function mask.
pub const CONTROL_FUNCTION_MASK: u16 = 1 << 14;
/// Message control: MSI-X enable.
pub const CONTROL_ENABLE: u16 = 1 << 15;

#[derive(Clone, Copy, Debug)]
struct Entry {
    address_low: u32,
    address_high: u32,
    data: u32,
    control: u32,
}

impl Default for Entry {
    fn default() -> Self {
        Self { address_low: 0, address_high: 0, data: 0, control: CONTROL_MASKED }
    }
}

impl Entry {
    fn masked(&self) -> bool {
        self.control & CONTROL_MASKED != 0
    }
    fn message(&self) -> MsiMessage {
        MsiMessage { address: (u64::from(self.address_high) << 32) | u64::from(self.address_low), data: self.data }
    }
}

struct Vector {
    entry: Entry,
    pending: bool,
    gsi: u32,
    irqfd: EventFd,
    routed: Option<MsiMessage>,
}

struct State {
    vectors: Vec<Vector>,
    enabled: bool,
    function_masked: bool,
}

/// The MSI-X state of one function; shared by its transport and its worker threads.
pub struct Msix {
    state: Mutex<State>,
    router: Arc<dyn MsiRouter>,
}

/// Most vectors a function can have (the table size field is 11 bits).
pub const MAX_VECTORS: usize = 2048;

/// Plain-data snapshot of the table, for migration.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MsixSnapshot {
    pub enabled: bool,
    pub function_masked: bool,
    /// (address, data, masked, pending) per vector.
    #[serde(deserialize_with = "crate::bounded::vec::<_, _, MAX_VECTORS>")]
    pub vectors: Vec<(u64, u32, bool, bool)>,
}

/// Why a migrated MSI-X snapshot does not fit this function.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MsixRestoreError {
    #[error("MSI-X table has {own} vectors, snapshot has {saved}")]
    VectorCount { own: usize, saved: usize },
}

impl Msix {
    /// `count` vectors, each with a GSI and irqfd from `router`.
    pub fn new(count: u16, router: Arc<dyn MsiRouter>) -> io::Result<Self> {
        let mut vectors = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let (gsi, irqfd) = router.allocate()?;
            vectors.push(Vector { entry: Entry::default(), pending: false, gsi, irqfd, routed: None });
        }
        Ok(Self { state: Mutex::new(State { vectors, enabled: false, function_masked: false }), router })
    }

    /// Number of vectors.
    pub fn count(&self) -> u16 {
        lock(&self.state).vectors.len() as u16
    }

    /// The capability body and its writable mask, for a table at `table_offset` and
    /// a PBA at `pba_offset`, both in BAR `bar`.
    pub fn capability(count: u16, bar: u8, table_offset: u32, pba_offset: u32) -> (Vec<u8>, Vec<u8>) {
        let mut body = vec![capability_id::MSIX, 0];
        body.extend_from_slice(&(count - 1).to_le_bytes());
        body.extend_from_slice(&(table_offset | u32::from(bar)).to_le_bytes());
        body.extend_from_slice(&(pba_offset | u32::from(bar)).to_le_bytes());
        let mut writable = vec![0u8; body.len()];
        writable[3] = ((CONTROL_ENABLE | CONTROL_FUNCTION_MASK) >> 8) as u8;
        (body, writable)
    }

    /// Applies the message-control word after the guest wrote the capability.
    pub fn set_control(&self, control: u16) {
        let mut state = lock(&self.state);
        state.enabled = control & CONTROL_ENABLE != 0;
        state.function_masked = control & CONTROL_FUNCTION_MASK != 0;
        self.refresh(&mut state);
    }

    /// Routes unmasked vectors and delivers pending ones that can now be delivered.
    fn refresh(&self, state: &mut State) {
        let deliverable = state.enabled && !state.function_masked;
        for v in state.vectors.iter_mut() {
            if state.enabled && !v.entry.masked() && v.routed != Some(v.entry.message()) {
                let message = v.entry.message();
                match self.router.set_route(v.gsi, Some(message)) {
                    Ok(()) => v.routed = Some(message),
                    Err(e) => tracing::warn!("MSI-X route for GSI {}: {e}", v.gsi),
                }
            }
            if deliverable && !v.entry.masked() && v.pending {
                v.pending = false;
                let _ = v.irqfd.write(1);
            }
        }
    }

    /// Guest read of the table.
    pub fn table_read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if data.len() != 4 && data.len() != 8 {
            return;
        }
        let state = lock(&self.state);
        let index = (offset / ENTRY_SIZE) as usize;
        let Some(v) = state.vectors.get(index) else { return };
        let e = v.entry;
        let words = [e.address_low, e.address_high, e.data, e.control];
        let word = ((offset % ENTRY_SIZE) / 4) as usize;
        for (i, chunk) in data.chunks_mut(4).enumerate() {
            if let Some(w) = words.get(word + i) {
                chunk.copy_from_slice(&w.to_le_bytes());
            }
        }
    }

    /// Guest write of the table.
    pub fn table_write(&self, offset: u64, data: &[u8]) {
        if data.len() != 4 && data.len() != 8 {
            return;
        }
        let mut state = lock(&self.state);
        let index = (offset / ENTRY_SIZE) as usize;
        let word = ((offset % ENTRY_SIZE) / 4) as usize;
        let Some(v) = state.vectors.get_mut(index) else { return };
        for (i, chunk) in data.chunks(4).enumerate() {
            let value = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            match word + i {
                0 => v.entry.address_low = value,
                1 => v.entry.address_high = value,
                2 => v.entry.data = value,
                3 => v.entry.control = value & CONTROL_MASKED,
                _ => {}
            }
        }
        self.refresh(&mut state);
    }

    /// Guest read of the pending-bit array.
    pub fn pba_read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let state = lock(&self.state);
        for (i, byte) in data.iter_mut().enumerate() {
            let first = (offset as usize + i) * 8;
            for bit in 0..8 {
                if state.vectors.get(first + bit).is_some_and(|v| v.pending) {
                    *byte |= 1 << bit;
                }
            }
        }
    }

    /// Delivers `vector` (or marks it pending while masked). Vectors beyond the table
    /// and a disabled MSI-X are ignored.
    pub fn signal(&self, vector: u16) -> io::Result<()> {
        let mut state = lock(&self.state);
        if !state.enabled {
            return Ok(());
        }
        let function_masked = state.function_masked;
        let Some(v) = state.vectors.get_mut(usize::from(vector)) else { return Ok(()) };
        if function_masked || v.entry.masked() {
            v.pending = true;
            Ok(())
        } else {
            v.irqfd.write(1)
        }
    }

    /// Loads a snapshot taken on the migration source: table, masks, pending bits and
    /// enable state; routes the unmasked vectors again on this machine's GSIs.
    pub fn restore(&self, snap: &MsixSnapshot) -> Result<(), MsixRestoreError> {
        let mut state = lock(&self.state);
        if snap.vectors.len() != state.vectors.len() {
            return Err(MsixRestoreError::VectorCount { own: state.vectors.len(), saved: snap.vectors.len() });
        }
        for (v, (address, data, masked, pending)) in state.vectors.iter_mut().zip(snap.vectors.iter()) {
            v.entry = Entry {
                address_low: *address as u32,
                address_high: (*address >> 32) as u32,
                data: *data,
                control: u32::from(*masked),
            };
            v.pending = *pending;
            v.routed = None;
        }
        state.enabled = snap.enabled;
        state.function_masked = snap.function_masked;
        self.refresh(&mut state);
        Ok(())
    }

    /// Plain-data copy of the table.
    pub fn snapshot(&self) -> MsixSnapshot {
        let state = lock(&self.state);
        MsixSnapshot {
            enabled: state.enabled,
            function_masked: state.function_masked,
            vectors: state.vectors.iter().map(|v| (v.entry.message().address, v.entry.data, v.entry.masked(), v.pending)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    #[derive(Default)]
    struct FakeRouter {
        next_gsi: AtomicU32,
        routes: Mutex<Vec<(u32, Option<MsiMessage>)>>,
        irqfds: Mutex<Vec<EventFd>>,
    }
    impl MsiRouter for FakeRouter {
        fn allocate(&self) -> io::Result<(u32, EventFd)> {
            let fd = EventFd::new(EFD_NONBLOCK)?;
            self.irqfds.lock().unwrap().push(fd.try_clone()?);
            Ok((24 + self.next_gsi.fetch_add(1, Ordering::SeqCst), fd))
        }
        fn set_route(&self, gsi: u32, message: Option<MsiMessage>) -> io::Result<()> {
            self.routes.lock().unwrap().push((gsi, message));
            Ok(())
        }
    }

    fn write_entry(m: &Msix, v: u64, addr: u64, data: u32, masked: bool) {
        m.table_write(v * 16, &(addr as u32).to_le_bytes());
        m.table_write(v * 16 + 4, &((addr >> 32) as u32).to_le_bytes());
        m.table_write(v * 16 + 8, &data.to_le_bytes());
        m.table_write(v * 16 + 12, &u32::from(masked).to_le_bytes());
    }

    fn fired(router: &FakeRouter, v: usize) -> bool {
        router.irqfds.lock().unwrap()[v].read().is_ok()
    }

    #[test]
    fn table_reads_back_and_routes_on_unmask() {
        let router = Arc::new(FakeRouter::default());
        let m = Msix::new(2, router.clone()).unwrap();
        m.set_control(CONTROL_ENABLE);
        write_entry(&m, 1, 0xfee0_1000, 0x41, true);
        assert!(router.routes.lock().unwrap().is_empty(), "masked entries are not routed");
        let mut d = [0u8; 4];
        m.table_read(16 + 8, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x41);
        m.table_write(16 + 12, &0u32.to_le_bytes());
        assert_eq!(*router.routes.lock().unwrap(), vec![(25, Some(MsiMessage { address: 0xfee0_1000, data: 0x41 }))]);
    }

    #[test]
    fn masked_signal_is_pending_until_unmask() {
        let router = Arc::new(FakeRouter::default());
        let m = Msix::new(1, router.clone()).unwrap();
        m.set_control(CONTROL_ENABLE);
        write_entry(&m, 0, 0xfee0_0000, 0x30, true);
        m.signal(0).unwrap();
        assert!(!fired(&router, 0));
        let mut pba = [0u8; 8];
        m.pba_read(0, &mut pba);
        assert_eq!(pba[0], 1);
        m.table_write(12, &0u32.to_le_bytes());
        assert!(fired(&router, 0), "pending vector delivered on unmask");
        m.pba_read(0, &mut pba);
        assert_eq!(pba[0], 0);
        m.signal(0).unwrap();
        assert!(fired(&router, 0));
    }

    #[test]
    fn function_mask_and_disable() {
        let router = Arc::new(FakeRouter::default());
        let m = Msix::new(1, router.clone()).unwrap();
        write_entry(&m, 0, 0xfee0_0000, 0x30, false);
        m.signal(0).unwrap();
        assert!(!fired(&router, 0), "disabled MSI-X delivers nothing");
        m.set_control(CONTROL_ENABLE | CONTROL_FUNCTION_MASK);
        m.signal(0).unwrap();
        assert!(!fired(&router, 0));
        m.set_control(CONTROL_ENABLE);
        assert!(fired(&router, 0));
    }

    #[test]
    fn out_of_range_accesses_are_ignored() {
        let router = Arc::new(FakeRouter::default());
        let m = Msix::new(1, router).unwrap();
        m.table_write(1600, &[1, 2, 3, 4]);
        m.table_write(0, &[1, 2]);
        let mut d = [7u8; 4];
        m.table_read(1600, &mut d);
        assert_eq!(d, [0; 4]);
        m.signal(99).unwrap();
    }

    #[test]
    fn snapshot_restore_reroutes_on_the_new_machine() {
        let router = Arc::new(FakeRouter::default());
        let a = Msix::new(2, router.clone()).unwrap();
        a.set_control(CONTROL_ENABLE);
        write_entry(&a, 1, 0xfee0_2000, 0x51, false);
        write_entry(&a, 0, 0xfee0_0000, 0x50, true);
        a.signal(0).unwrap();
        let snap = a.snapshot();
        let router_b = Arc::new(FakeRouter::default());
        let b = Msix::new(2, router_b.clone()).unwrap();
        b.restore(&snap).unwrap();
        assert_eq!(b.snapshot(), snap);
        assert_eq!(*router_b.routes.lock().unwrap(), vec![(25, Some(MsiMessage { address: 0xfee0_2000, data: 0x51 }))]);
        let short = Msix::new(1, router_b).unwrap();
        assert_eq!(short.restore(&snap).unwrap_err().to_string(), "MSI-X table has 1 vectors, snapshot has 2");
        assert_eq!(short.snapshot().vectors.len(), 1, "nothing applied on refusal");
    }

    #[test]
    fn snapshot_decoding_bounds_the_table() {
        let snap = MsixSnapshot { enabled: true, function_masked: false, vectors: vec![(0xfee0_0000, 0x30, false, false); MAX_VECTORS + 1] };
        let bytes = postcard::to_allocvec(&snap).unwrap();
        assert!(postcard::from_bytes::<MsixSnapshot>(&bytes).is_err());
        let ok = MsixSnapshot { vectors: vec![(0xfee0_0000, 0x30, false, false); 3], ..snap };
        assert_eq!(postcard::from_bytes::<MsixSnapshot>(&postcard::to_allocvec(&ok).unwrap()).unwrap(), ok);
    }

    #[test]
    fn capability_layout() {
        let (body, writable) = Msix::capability(3, 0, 0x4000, 0x5000);
        assert_eq!(body[0], capability_id::MSIX);
        assert_eq!(u16::from_le_bytes([body[2], body[3]]), 2);
        assert_eq!(u32::from_le_bytes(body[4..8].try_into().unwrap()), 0x4000);
        assert_eq!(writable[3], 0xc0);
    }
}
