//! The destination side: accept one source, check what it describes against this
//! machine, receive memory and state, take the disks at the hand-over, resume the
//! guest and tell the source it may exit. Anything wrong: tell the source why, stop.

use std::io::{BufReader, BufWriter, Write};
use std::net::{TcpListener, TcpStream};

use devices::sync::lock;
use kvm_ioctls::Kvm;
use migration::frame::{read_frame, Kind};
use migration::messages::{self, AckStage, Message, ProtocolError, VmDescription};
use migration::pages::PageBatchView;

use super::{cpuid_to_wire, guest_pages, MigrateError};
use crate::cpuid::incompatible_features;
use crate::machine::Machine;
use crate::state::{self, MachineState};

/// What the destination was told to expect (flags of `tern receive`).
#[derive(Clone, Debug, Default)]
pub struct Expectations {
    pub memory: Option<u64>,
    pub cpus: Option<u8>,
}

/// Binds the listening socket (so the caller can report the address before waiting).
pub fn listen(addr: &str) -> Result<TcpListener, MigrateError> {
    TcpListener::bind(addr).map_err(|source| MigrateError::Listen { addr: addr.to_string(), source })
}

/// Checks a source's description against expectations, local devices and this host's
/// CPU features. Returns the reason for refusing.
pub fn check(desc: &VmDescription, expect: &Expectations, local_devices: &[String], kvm: &Kvm) -> Result<(), String> {
    if let Some(m) = expect.memory {
        if m != desc.memory_bytes {
            return Err(format!("memory size differs: source {} MiB, destination {} MiB", desc.memory_bytes >> 20, m >> 20));
        }
    }
    if let Some(c) = expect.cpus {
        if c != desc.cpus {
            return Err(format!("vCPU count differs: source {}, destination {c}", desc.cpus));
        }
    }
    if desc.devices != local_devices {
        return Err(format!("devices differ: source {:?}, destination {:?}", desc.devices, local_devices));
    }
    let supported = crate::cpuid::supported_cpuid(kvm).map_err(|e| e.to_string())?;
    let missing = incompatible_features(&desc.cpuid, &cpuid_to_wire(supported.as_slice()));
    if !missing.is_empty() {
        return Err(format!("this host lacks CPU features the guest uses: {}", missing.join(", ")));
    }
    Ok(())
}

/// Accepts one migration on `listener`. `build` makes the machine for the source's
/// description (with this side's devices and serial); it is called once, after the
/// hello. Returns the running machine, or why the migration failed (the source has
/// been told).
pub fn receive(
    listener: &TcpListener,
    expect: &Expectations,
    build: impl FnOnce(&VmDescription) -> Result<Machine, String>,
) -> Result<Machine, MigrateError> {
    let (stream, peer) = listener.accept()?;
    tracing::info!(%peer, "incoming migration");
    stream.set_nodelay(true)?;
    let mut reader = BufReader::with_capacity(1 << 20, stream.try_clone()?);
    let mut writer = BufWriter::new(stream);
    let result = serve(&mut reader, &mut writer, expect, build);
    if let Err(e) = &result {
        // Best effort: the source may already be gone.
        let _ = messages::error(e.to_string()).send(&mut writer);
        let _ = writer.flush();
    }
    result
}

fn send(w: &mut BufWriter<TcpStream>, m: Message) -> Result<(), MigrateError> {
    m.send(w)?;
    w.flush()?;
    Ok(())
}

fn serve(
    r: &mut BufReader<TcpStream>,
    w: &mut BufWriter<TcpStream>,
    expect: &Expectations,
    build: impl FnOnce(&VmDescription) -> Result<Machine, String>,
) -> Result<Machine, MigrateError> {
    let mut buf = Vec::new();
    match Message::receive(r, &mut buf)? {
        Message::Hello(_) => send(w, messages::ack(AckStage::Hello))?,
        other => return Err(unexpected("hello", &other)),
    }
    let desc = match Message::receive(r, &mut buf)? {
        Message::Config(d) => d,
        other => return Err(unexpected("config", &other)),
    };
    let mut machine = build(&desc).map_err(MigrateError::Refused)?;
    let kvm = Kvm::new().map_err(|e| MigrateError::Refused(format!("cannot open /dev/kvm: {e}")))?;
    let local: Vec<String> = machine.parts().virtio.iter().map(|d| lock(d).device_mut().describe()).collect();
    check(&desc, expect, &local, &kvm).map_err(MigrateError::Refused)?;
    send(w, messages::ack(AckStage::Config))?;

    let mem = machine.guest_memory().clone();
    let zero = vec![0u8; migration::PAGE_SIZE];
    loop {
        let kind = read_frame(r, &mut buf).map_err(ProtocolError::from)?;
        if kind == Kind::Pages {
            // Pages go from the network buffer straight into guest memory.
            let batch = PageBatchView::parse(&buf).map_err(ProtocolError::from)?;
            for (gpa, data) in batch.iter() {
                // Fresh memory is zero already; later rounds may zero a page again.
                let bytes = match data {
                    Some(d) => d,
                    None if batch.round == 0 => continue,
                    None => &zero[..],
                };
                guest_pages::write_page(&mem, gpa, bytes)
                    .map_err(|e| MigrateError::Memory(format!("page from the source is outside guest memory: {e}")))?;
            }
            continue;
        }
        match Message::decode(kind, &buf)? {
            Message::Pages(_) => return Err(MigrateError::Memory("page batch decoded twice".into())),
            Message::RoundDone(done) => tracing::debug!(round = done.round, pages = done.pages, "round received"),
            Message::State(bytes) => {
                let machine_state = MachineState::decode(&bytes)?;
                state::restore(machine.parts(), &machine_state)?;
                send(w, messages::ack(AckStage::Restored))?;
            }
            Message::HandOver(_) => {
                for device in &machine.parts().virtio {
                    lock(device).device_mut().acquire_backend().map_err(|e| MigrateError::Device(e.to_string()))?;
                }
                machine.start().map_err(|e| MigrateError::Device(format!("starting vCPUs: {e}")))?;
                for device in &machine.parts().virtio {
                    lock(device).device_mut().after_migration();
                }
                send(w, messages::ack(AckStage::Resumed))?;
                return Ok(machine);
            }
            Message::Error(e) => return Err(MigrateError::Refused(format!("the source gave up: {}", e.reason))),
            other => return Err(unexpected("pages, state or hand-over", &other)),
        }
    }
}

fn unexpected(expected: &'static str, got: &Message) -> MigrateError {
    match got {
        Message::Error(e) => MigrateError::Refused(format!("the source reported: {}", e.reason)),
        _ => MigrateError::Protocol(migration::messages::ProtocolError::Unexpected { expected, got: got.name() }),
    }
}
