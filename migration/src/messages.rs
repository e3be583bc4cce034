//! Protocol messages. Control messages are postcard-encoded structs that each start with
//! a `version` field (postcard is not self-describing, so a version mismatch must be
//! caught explicitly); page batches have their own compact encoding (`pages`), and the
//! machine state is an opaque blob versioned by its producer.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::frame::{read_frame, write_frame, write_frame_parts, FrameError, Kind};
use crate::pages::{PageBatch, PageError};
use crate::{MAGIC, PROTOCOL_VERSION};

/// Hello feature bit: the VM's name follows the hello's fixed fields (a postcard
/// string). A source sends it when migrated by name (`tern migrate NAME`), so a host's
/// migration listener can pick that VM's definition; without the bit the hello is the
/// three fields alone, as every earlier build sent and reads it.
pub const FEATURE_VM_NAME: u64 = 1;
/// Hello feature bit: the source asks the destination to acknowledge every memory
/// round once its pages are in guest memory (`AckStage::Round`, so the source times
/// a round to its end there and pauses the guest with nothing left in flight) and to
/// add [`AckDetail`] to its acks. A destination that does says so in the hello's ack
/// (`AckDetail::features`); one of an earlier build ignores the bit and sends the
/// plain acks it always sent.
pub const FEATURE_ROUND_ACKS: u64 = 2;
/// The hello features this build honours as a destination.
pub const DESTINATION_FEATURES: u64 = FEATURE_ROUND_ACKS;
/// The longest VM name a hello may carry, in bytes.
pub const MAX_VM_NAME: usize = 64;

/// Opening message from the source. On the wire: `magic`, `version`, `features`,
/// then the VM name only when `features` has [`FEATURE_VM_NAME`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub magic: u64,
    pub version: u32,
    /// Optional features the sender supports ([`FEATURE_VM_NAME`]; set on the wire
    /// from `vm_name`).
    pub features: u64,
    /// The VM being sent, when the source knows it by name.
    pub vm_name: Option<String>,
}

/// The hello's fixed fields, as every build encodes them.
#[derive(Serialize, Deserialize)]
struct HelloHead {
    magic: u64,
    version: u32,
    features: u64,
}

impl Hello {
    /// This build's hello.
    pub fn current() -> Self {
        Self { magic: MAGIC, version: PROTOCOL_VERSION, features: 0, vm_name: None }
    }

    /// This build's hello for the VM called `name`.
    pub fn named(name: Option<String>) -> Self {
        let features = if name.is_some() { FEATURE_VM_NAME } else { 0 };
        Self { features, vm_name: name, ..Self::current() }
    }

    /// This build's hello as a migration source sends it: named (or not) and asking
    /// for round acknowledgements.
    pub fn from_source(name: Option<String>) -> Self {
        let hello = Self::named(name);
        Self { features: hello.features | FEATURE_ROUND_ACKS, ..hello }
    }

    fn encode(&self) -> Vec<u8> {
        let features = match self.vm_name {
            Some(_) => self.features | FEATURE_VM_NAME,
            None => self.features & !FEATURE_VM_NAME,
        };
        let mut bytes = encode(&HelloHead { magic: self.magic, version: self.version, features });
        if let Some(name) = &self.vm_name {
            bytes.extend(encode(&name.as_str()));
        }
        bytes
    }

    fn decode(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let malformed = |reason: String| ProtocolError::Malformed { kind: Kind::Hello, reason };
        let (head, mut rest): (HelloHead, _) = postcard::take_from_bytes(bytes).map_err(|e| malformed(e.to_string()))?;
        if head.magic != MAGIC {
            return Err(ProtocolError::BadMagic(head.magic));
        }
        check_version(head.version)?;
        let mut vm_name = None;
        if head.features & FEATURE_VM_NAME != 0 {
            // Borrowed: the name's claimed length allocates nothing.
            let (name, after): (&str, _) = postcard::take_from_bytes(rest).map_err(|e| malformed(format!("VM name: {e}")))?;
            if name.len() > MAX_VM_NAME {
                return Err(malformed(format!("VM name of {} bytes, at most {MAX_VM_NAME} allowed", name.len())));
            }
            vm_name = Some(name.to_string());
            rest = after;
        }
        if !rest.is_empty() {
            return Err(malformed(format!("{} trailing bytes", rest.len())));
        }
        Ok(Self { magic: head.magic, version: head.version, features: head.features, vm_name })
    }
}

/// One CPUID entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuidEntry {
    pub function: u32,
    pub index: u32,
    pub flags: u32,
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// What the source machine is: checked by the destination before any memory moves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmDescription {
    pub version: u32,
    pub memory_bytes: u64,
    pub cpus: u8,
    /// Guest CPUID of vCPU 0 as the source set it.
    pub cpuid: Vec<CpuidEntry>,
    /// Each device's own description (model and the properties the guest sees), in
    /// PCI slot order: the destination's devices must describe themselves identically.
    pub devices: Vec<String>,
    /// What the guest boots at its next reset (`None`: the source had nothing to
    /// boot again). Since protocol version 2.
    pub boot: Option<BootRecord>,
}

/// Longest path a [`BootRecord`] may hold (Linux's PATH_MAX).
pub const MAX_BOOT_PATH: usize = 4096;
/// Longest command line a [`BootRecord`] may hold (tern passes at most 2 KiB).
pub const MAX_BOOT_CMDLINE: usize = 2048;
/// Longest disk boot entry name (an index, title or id).
pub const MAX_BOOT_ENTRY: usize = 1024;

/// The boot source a machine was started with, so a machine that carries on its guest
/// (a migration destination, a restore) boots the same at the guest's next reset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootRecord {
    pub source: BootSourceRecord,
    /// Whether a reset boots the guest again (`--on-reboot restart`) or ends tern.
    pub restart: bool,
}

/// Where the kernel comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BootSourceRecord {
    /// `--kernel`: the kernel and initrd files (absolute paths, as bytes: a path need
    /// not be UTF-8) and the command line.
    Kernel { kernel: Vec<u8>, initrd: Option<Vec<u8>>, cmdline: String },
    /// A disk boot: the boot configuration on the guest's disk `disk` (its index among
    /// the disks, so each side reads its own image), with `--boot-entry`, `--cmdline`
    /// and `--cmdline-append`.
    Disk { disk: u32, entry: Option<String>, cmdline: Option<String>, append: Option<String> },
}

impl BootRecord {
    /// Bounds and sanity of a record from a peer or a file: one line naming the field.
    pub fn check(&self) -> Result<(), String> {
        let path = |what: &str, p: &[u8]| {
            if p.is_empty() || p.len() > MAX_BOOT_PATH || p.contains(&0) || p[0] != b'/' {
                return Err(format!("the recorded {what} path is not an absolute path of at most {MAX_BOOT_PATH} bytes"));
            }
            Ok(())
        };
        let text = |what: &str, t: &Option<String>, max: usize| match t {
            Some(t) if t.len() > max || t.contains('\0') => Err(format!("the recorded {what} is longer than {max} bytes or holds a NUL")),
            _ => Ok(()),
        };
        match &self.source {
            BootSourceRecord::Kernel { kernel, initrd, cmdline } => {
                path("kernel", kernel)?;
                if let Some(initrd) = initrd {
                    path("initrd", initrd)?;
                }
                text("command line", &Some(cmdline.clone()), MAX_BOOT_CMDLINE)
            }
            BootSourceRecord::Disk { disk: _, entry, cmdline, append } => {
                text("boot entry", entry, MAX_BOOT_ENTRY)?;
                text("command line", cmdline, MAX_BOOT_CMDLINE)?;
                text("command line addition", append, MAX_BOOT_CMDLINE)
            }
        }
    }
}

/// End of a memory round.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundDone {
    pub version: u32,
    pub round: u32,
    pub pages: u64,
}

/// The source has flushed and unlocked its disks; the destination may take them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandOver {
    pub version: u32,
}

/// Which step the destination acknowledges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AckStage {
    Hello,
    Config,
    /// Memory and state received and restored; waiting for the hand-over.
    Restored,
    /// The guest runs on the destination: the source may exit.
    Resumed,
    /// Every page of this round is in guest memory (only to a source that asked,
    /// [`FEATURE_ROUND_ACKS`]; never for the final round).
    Round(u32),
}

/// Acknowledgement from the destination. On the wire: `version`, `stage`, `times`,
/// then `detail` only to a source whose hello asked for it ([`FEATURE_ROUND_ACKS`]):
/// earlier builds send and read the three fields alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    pub version: u32,
    pub stage: AckStage,
    /// What the destination's own part of the step cost (zero where none).
    pub times: StepTimes,
    /// More of the destination's side of the step.
    pub detail: Option<AckDetail>,
}

/// The ack's fixed fields, as every build encodes them.
#[derive(Serialize, Deserialize)]
struct AckHead {
    version: u32,
    stage: AckStage,
    times: StepTimes,
}

/// What a destination adds to its acks for a source that asked ([`FEATURE_ROUND_ACKS`]),
/// µs where a time: the parts of the downtime the plain acks leave in "transfer".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckDetail {
    /// Hello ack: the hello's features this destination honours.
    pub features: u64,
    /// Round and Restored acks: writing the round's pages into guest memory (Restored:
    /// the final copy's).
    pub pages_us: u32,
    /// Round and Restored acks: reading the round's frames off the connection after
    /// its first (waiting for bytes, TLS decryption, copying).
    pub read_us: u32,
    /// Restored ack: decoding the machine state.
    pub decode_us: u32,
    /// Restored and Resumed acks: handing the state or the hand-over to the thread
    /// that owns the machine and its answer back (the step's time, its work aside).
    pub handoff_us: u32,
}

impl Ack {
    fn encode(&self) -> Vec<u8> {
        let mut bytes = encode(&AckHead { version: self.version, stage: self.stage, times: self.times });
        if let Some(detail) = &self.detail {
            bytes.extend(encode(detail));
        }
        bytes
    }

    fn decode(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let malformed = |reason: String| ProtocolError::Malformed { kind: Kind::Ack, reason };
        let (head, rest): (AckHead, _) = postcard::take_from_bytes(bytes).map_err(|e| malformed(e.to_string()))?;
        check_version(head.version)?;
        let detail = if rest.is_empty() { None } else { Some(decode::<AckDetail>(Kind::Ack, rest)?) };
        Ok(Self { version: head.version, stage: head.stage, times: head.times, detail })
    }
}

/// The destination's share of a migration's downtime, µs, reported in its acks so the
/// source's report can break the downtime down: `restore_us` in the `Restored` ack
/// (loading the machine state into KVM and the devices), the rest in the `Resumed` ack.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepTimes {
    /// Loading the machine state (vCPUs, VM, devices).
    pub restore_us: u32,
    /// Taking the disk locks and TAPs at the hand-over.
    pub take_over_us: u32,
    /// Starting the vCPUs.
    pub start_us: u32,
    /// The devices' announcements (virtio-net's gratuitous ARP request).
    pub announce_us: u32,
}

/// A refusal or failure, sent by either side before it gives up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMessage {
    pub version: u32,
    pub reason: String,
}

/// Any protocol message.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    Hello(Hello),
    Config(VmDescription),
    Pages(PageBatch),
    RoundDone(RoundDone),
    State(Vec<u8>),
    HandOver(HandOver),
    Ack(Ack),
    Error(ErrorMessage),
}

/// Errors decoding or exchanging messages.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("malformed {kind:?} message: {reason}")]
    Malformed { kind: Kind, reason: String },
    #[error(transparent)]
    Pages(#[from] PageError),
    #[error("peer speaks protocol version {theirs}, this tern speaks {ours}")]
    Version { theirs: u32, ours: u32 },
    #[error("not a tern migration stream (bad magic {0:#x})")]
    BadMagic(u64),
    #[error("expected {expected}, got {got}")]
    Unexpected { expected: &'static str, got: &'static str },
    #[error("the peer reported: {0}")]
    Peer(String),
    #[error(transparent)]
    OutOfOrder(#[from] crate::receiver::OutOfOrder),
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising plain structs to a Vec cannot fail.
    postcard::to_allocvec(value).unwrap_or_default()
}

fn decode<'a, T: Deserialize<'a>>(kind: Kind, bytes: &'a [u8]) -> Result<T, ProtocolError> {
    let (value, rest) = postcard::take_from_bytes(bytes)
        .map_err(|e| ProtocolError::Malformed { kind, reason: e.to_string() })?;
    if !rest.is_empty() {
        return Err(ProtocolError::Malformed { kind, reason: format!("{} trailing bytes", rest.len()) });
    }
    Ok(value)
}

fn check_version(version: u32) -> Result<(), ProtocolError> {
    if version != PROTOCOL_VERSION {
        return Err(ProtocolError::Version { theirs: version, ours: PROTOCOL_VERSION });
    }
    Ok(())
}

impl Message {
    /// Short name for errors.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello(_) => "hello",
            Message::Config(_) => "config",
            Message::Pages(_) => "pages",
            Message::RoundDone(_) => "round-done",
            Message::State(_) => "state",
            Message::HandOver(_) => "hand-over",
            Message::Ack(_) => "ack",
            Message::Error(_) => "error",
        }
    }

    /// Writes the message as one frame.
    pub fn send(&self, w: &mut impl Write) -> Result<(), ProtocolError> {
        if let Message::Pages(b) = self {
            return send_pages(w, b);
        }
        let (kind, payload) = match self {
            Message::Hello(m) => (Kind::Hello, m.encode()),
            Message::Config(m) => (Kind::Config, encode(m)),
            Message::Pages(b) => (Kind::Pages, b.encode()),
            Message::RoundDone(m) => (Kind::RoundDone, encode(m)),
            Message::State(s) => (Kind::State, s.clone()),
            Message::HandOver(m) => (Kind::HandOver, encode(m)),
            Message::Ack(m) => (Kind::Ack, m.encode()),
            Message::Error(m) => (Kind::Error, encode(m)),
        };
        write_frame(w, kind, &payload)?;
        Ok(())
    }

    /// Reads and validates one message (version checked; a Hello's magic checked).
    pub fn receive(r: &mut impl Read, buf: &mut Vec<u8>) -> Result<Message, ProtocolError> {
        let kind = read_frame(r, buf)?;
        Message::decode(kind, buf)
    }

    /// Decodes a frame payload.
    pub fn decode(kind: Kind, bytes: &[u8]) -> Result<Message, ProtocolError> {
        Ok(match kind {
            Kind::Hello => Message::Hello(Hello::decode(bytes)?),
            Kind::Config => {
                let m: VmDescription = decode(kind, bytes)?;
                check_version(m.version)?;
                Message::Config(m)
            }
            Kind::Pages => Message::Pages(PageBatch::decode(bytes)?),
            Kind::RoundDone => {
                let m: RoundDone = decode(kind, bytes)?;
                check_version(m.version)?;
                Message::RoundDone(m)
            }
            Kind::State => Message::State(bytes.to_vec()),
            Kind::HandOver => {
                let m: HandOver = decode(kind, bytes)?;
                check_version(m.version)?;
                Message::HandOver(m)
            }
            Kind::Ack => Message::Ack(Ack::decode(bytes)?),
            Kind::Error => {
                let m: ErrorMessage = decode(kind, bytes)?;
                Message::Error(m)
            }
        })
    }
}

/// Writes a page batch as a Pages frame without taking or copying it (the sender
/// reuses one batch buffer for the whole migration).
pub fn send_pages(w: &mut impl Write, batch: &PageBatch) -> Result<(), ProtocolError> {
    write_frame_parts(w, Kind::Pages, &[&batch.encode_head(), batch.data()])?;
    Ok(())
}

/// Convenience constructors.
pub fn ack(stage: AckStage) -> Message {
    ack_with(stage, StepTimes::default())
}

/// An ack that reports what the step cost here.
pub fn ack_with(stage: AckStage, times: StepTimes) -> Message {
    Message::Ack(Ack { version: PROTOCOL_VERSION, stage, times, detail: None })
}

/// An ack with the detail a source asked for ([`FEATURE_ROUND_ACKS`]).
pub fn ack_detailed(stage: AckStage, times: StepTimes, detail: AckDetail) -> Message {
    Message::Ack(Ack { version: PROTOCOL_VERSION, stage, times, detail: Some(detail) })
}

/// An error message for the peer.
pub fn error(reason: impl Into<String>) -> Message {
    Message::Error(ErrorMessage { version: PROTOCOL_VERSION, reason: reason.into() })
}

/// Waits for an ack of `stage` and returns it (the times it reports); a peer error
/// becomes [`ProtocolError::Peer`].
pub fn expect_ack(r: &mut impl Read, buf: &mut Vec<u8>, stage: AckStage) -> Result<Ack, ProtocolError> {
    match Message::receive(r, buf)? {
        Message::Ack(a) if a.stage == stage => Ok(a),
        Message::Error(e) => Err(ProtocolError::Peer(e.reason)),
        other => Err(ProtocolError::Unexpected { expected: "ack", got: other.name() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn description() -> VmDescription {
        VmDescription {
            version: PROTOCOL_VERSION,
            memory_bytes: 512 << 20,
            cpus: 2,
            cpuid: vec![CpuidEntry { function: 1, index: 0, flags: 0, eax: 1, ebx: 2, ecx: 3, edx: 4 }],
            devices: vec!["virtio-blk capacity=8 read_only=false".into(), "virtio-net".into()],
            boot: Some(BootRecord {
                source: BootSourceRecord::Kernel { kernel: b"/boot/vmlinuz".to_vec(), initrd: None, cmdline: "console=ttyS0".into() },
                restart: true,
            }),
        }
    }

    #[test]
    fn descriptions_carry_the_boot_source_and_bad_records_are_named() {
        let mut wire = Vec::new();
        let mut desc = description();
        desc.boot = Some(BootRecord {
            source: BootSourceRecord::Disk { disk: 1, entry: Some("2".into()), cmdline: None, append: Some("quiet".into()) },
            restart: false,
        });
        Message::Config(desc.clone()).send(&mut wire).unwrap();
        assert_eq!(Message::receive(&mut &wire[..], &mut Vec::new()).unwrap(), Message::Config(desc.clone()));
        assert_eq!(desc.boot.as_ref().unwrap().check(), Ok(()));
        assert_eq!(description().boot.unwrap().check(), Ok(()));
        let kernel = |kernel: &[u8], cmdline: &str| BootRecord {
            source: BootSourceRecord::Kernel { kernel: kernel.to_vec(), initrd: None, cmdline: cmdline.into() },
            restart: true,
        };
        assert!(kernel(b"relative/vmlinuz", "").check().unwrap_err().contains("recorded kernel path"));
        assert!(kernel(b"/a\0b", "").check().is_err());
        assert!(kernel(&[b'/'; MAX_BOOT_PATH + 1], "").check().is_err());
        assert!(kernel(b"/vmlinuz", &"x".repeat(MAX_BOOT_CMDLINE + 1)).check().unwrap_err().contains("command line"));
    }

    fn all_messages() -> Vec<Message> {
        vec![
            Message::Hello(Hello::current()),
            Message::Hello(Hello::named(Some("web1".into()))),
            Message::Config(description()),
            Message::RoundDone(RoundDone { version: PROTOCOL_VERSION, round: 3, pages: 99 }),
            Message::State(vec![1, 2, 3]),
            Message::HandOver(HandOver { version: PROTOCOL_VERSION }),
            ack(AckStage::Resumed),
            ack_detailed(AckStage::Round(7), StepTimes::default(), AckDetail { pages_us: 1200, read_us: 300, ..Default::default() }),
            ack_detailed(AckStage::Hello, StepTimes::default(), AckDetail { features: DESTINATION_FEATURES, ..Default::default() }),
            ack_detailed(
                AckStage::Restored,
                StepTimes { restore_us: 400, ..Default::default() },
                AckDetail { features: 0, pages_us: 5, read_us: 6, decode_us: 7, handoff_us: 8 },
            ),
            error("nope"),
        ]
    }

    #[test]
    fn an_ack_without_detail_is_the_three_fields_of_earlier_builds() {
        // What every earlier build sent and reads: version, stage, times.
        let times = StepTimes { restore_us: 1, take_over_us: 2, start_us: 3, announce_us: 4 };
        let old = encode(&AckHead { version: PROTOCOL_VERSION, stage: AckStage::Resumed, times });
        let Message::Ack(plain) = ack_with(AckStage::Resumed, times) else { panic!("an ack") };
        assert_eq!(plain.encode(), old);
        assert_eq!(Message::decode(Kind::Ack, &old).unwrap(), Message::Ack(plain));
        // The detail follows the fields; a detailed ack decodes with it, and only a
        // whole detail is accepted.
        let detail = AckDetail { features: 0, pages_us: 10, read_us: 20, decode_us: 30, handoff_us: 40 };
        let Message::Ack(detailed) = ack_detailed(AckStage::Resumed, times, detail) else { panic!("an ack") };
        let wire = detailed.encode();
        assert!(wire.starts_with(&old));
        assert_eq!(Message::decode(Kind::Ack, &wire).unwrap(), Message::Ack(detailed));
        let e = Message::decode(Kind::Ack, &wire[..wire.len() - 1]).unwrap_err().to_string();
        assert!(e.starts_with("malformed Ack message"), "{e}");
        let mut longer = wire.clone();
        longer.push(0);
        assert_eq!(Message::decode(Kind::Ack, &longer).unwrap_err().to_string(), "malformed Ack message: 1 trailing bytes");
    }

    #[test]
    fn a_source_asks_for_round_acks_and_a_destination_of_any_build_reads_its_hello() {
        let hello = Hello::from_source(None);
        assert_eq!(hello.features, FEATURE_ROUND_ACKS);
        // Earlier destinations read the three fields and look at the name bit only.
        let wire = hello.encode();
        let (head, rest): (HelloHead, _) = postcard::take_from_bytes(&wire).unwrap();
        assert!(rest.is_empty() && head.features & FEATURE_VM_NAME == 0);
        assert_eq!(Message::decode(Kind::Hello, &wire).unwrap(), Message::Hello(hello));
        let named = Hello::from_source(Some("web1".into()));
        assert_eq!(named.features, FEATURE_ROUND_ACKS | FEATURE_VM_NAME);
        assert_eq!(Message::decode(Kind::Hello, &named.encode()).unwrap(), Message::Hello(named));
    }

    #[test]
    fn every_message_round_trips() {
        for m in all_messages() {
            let mut wire = Vec::new();
            m.send(&mut wire).unwrap();
            let mut buf = Vec::new();
            assert_eq!(Message::receive(&mut &wire[..], &mut buf).unwrap(), m);
        }
    }

    #[test]
    fn version_and_magic_mismatches_are_refused() {
        let mut wire = Vec::new();
        Message::Hello(Hello { version: 1, ..Hello::current() }).send(&mut wire).unwrap();
        assert!(matches!(Message::receive(&mut &wire[..], &mut Vec::new()), Err(ProtocolError::Version { theirs: 1, .. })));
        wire.clear();
        Message::Hello(Hello { magic: 7, ..Hello::current() }).send(&mut wire).unwrap();
        assert!(matches!(Message::receive(&mut &wire[..], &mut Vec::new()), Err(ProtocolError::BadMagic(7))));
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut payload = Hello::current().encode();
        payload.push(0);
        assert!(matches!(Message::decode(Kind::Hello, &payload), Err(ProtocolError::Malformed { .. })));
        let mut payload = Hello::named(Some("vm1".into())).encode();
        payload.push(0);
        assert!(matches!(Message::decode(Kind::Hello, &payload), Err(ProtocolError::Malformed { .. })));
    }

    #[test]
    fn a_hello_without_a_name_is_the_three_fields_of_earlier_builds() {
        // What every earlier build sent: magic, version, features, nothing more.
        let old = encode(&HelloHead { magic: MAGIC, version: PROTOCOL_VERSION, features: 0 });
        assert_eq!(Hello::current().encode(), old);
        assert_eq!(Message::decode(Kind::Hello, &old).unwrap(), Message::Hello(Hello::current()));
        // A name sets the feature bit and follows the fields.
        let named = Hello::named(Some("web1".into())).encode();
        assert!(named.starts_with(&encode(&HelloHead { magic: MAGIC, version: PROTOCOL_VERSION, features: FEATURE_VM_NAME })));
        match Message::decode(Kind::Hello, &named).unwrap() {
            Message::Hello(h) => assert_eq!((h.vm_name.as_deref(), h.features), (Some("web1"), FEATURE_VM_NAME)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_missing_or_oversized_name_is_refused() {
        let head = encode(&HelloHead { magic: MAGIC, version: PROTOCOL_VERSION, features: FEATURE_VM_NAME });
        let e = Message::decode(Kind::Hello, &head).unwrap_err().to_string();
        assert!(e.starts_with("malformed Hello message: VM name: "), "{e}");
        let mut long = head.clone();
        long.extend(encode(&"x".repeat(MAX_VM_NAME + 1).as_str()));
        let e = Message::decode(Kind::Hello, &long).unwrap_err().to_string();
        assert_eq!(e, "malformed Hello message: VM name of 65 bytes, at most 64 allowed");
        // A name claiming gigabytes it does not have allocates nothing and is refused.
        let mut lying = head;
        lying.extend([0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(Message::decode(Kind::Hello, &lying).is_err());
    }

    proptest! {
        /// Any bytes at all: decoding gives a message or an error, never a panic.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let mut buf = Vec::new();
            let mut r = &bytes[..];
            for _ in 0..8 {
                if Message::receive(&mut r, &mut buf).is_err() { break; }
            }
        }

        /// A valid stream with one byte flipped or truncated anywhere: no panic, and a
        /// truncated stream is an error.
        #[test]
        fn corrupted_valid_streams_never_panic(flip in any::<prop::sample::Index>(), xor in 1u8..=255, cut in any::<prop::sample::Index>()) {
            let mut wire = Vec::new();
            for m in all_messages() { m.send(&mut wire).unwrap(); }
            let mut flipped = wire.clone();
            let i = flip.index(flipped.len());
            flipped[i] ^= xor;
            let mut buf = Vec::new();
            let mut r = &flipped[..];
            while Message::receive(&mut r, &mut buf).is_ok() {}
            let truncated = &wire[..cut.index(wire.len())];
            let mut r = truncated;
            let mut count = 0;
            let result = loop {
                match Message::receive(&mut r, &mut buf) {
                    Ok(_) => count += 1,
                    Err(e) => break e,
                }
            };
            prop_assert!(count < all_messages().len());
            prop_assert!(matches!(result, ProtocolError::Frame(FrameError::Closed)));
        }
    }
}
