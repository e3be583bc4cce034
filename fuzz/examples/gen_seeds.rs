//! Writes the seed corpora: `fuzz/corpus/<target>/<name>` for every target, each
//! a small well-formed input (a valid read, a valid write, a transmit frame, a
//! driver initialising the transport, a migration stream...). Every structured
//! seed is decoded again and compared with what was meant, so a seed always
//! decodes to the input it describes.
//!
//! Run from the repository root: `cargo +nightly run --manifest-path fuzz/Cargo.toml --example gen_seeds`

use std::fs;
use std::path::Path;

use devices::virtio::pci::common_config::CommonConfig;
use devices::virtio::pci::VirtioPciSnapshot;
use devices::pci::msix::MsixSnapshot;
use devices::legacy::serial::SerialSnapshot;
use migration::messages::{self, AckDetail, AckStage, CpuidEntry, HandOver, Hello, Message, RoundDone, StepTimes, VmDescription};
use migration::pages::PageBatch;
use migration::PROTOCOL_VERSION;
use tern_fuzz::encoding::{decode, to_bytes, Blob, Encode, List};
use tern_fuzz::inputs::{event, BlockInput, FrameSpec, NetInput, NetOp, PciInput, PciOp};
use tern_fuzz::virtqueue::{FuzzAddr, FuzzDesc, FuzzLen, IndirectTable, MemWrite, QueueImage, INDIRECT, NEXT, WRITE};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (name, input) in block_seeds() {
        write_checked(&root, "virtio_blk_request", name, &input);
    }
    for (name, input) in tx_seeds() {
        write_checked(&root, "virtio_net_tx", name, &input);
    }
    for (name, input) in rx_seeds() {
        write_checked(&root, "virtio_net_rx", name, &input);
    }
    for (name, input) in pci_seeds() {
        write_checked(&root, "virtio_pci_config", name, &input);
    }
    for (name, bytes) in migration_seeds() {
        write(&root, "migration_stream", name, &bytes);
    }
}

fn write_checked<T>(root: &Path, target: &str, name: &str, input: &T)
where
    T: Encode + PartialEq + std::fmt::Debug + for<'a> arbitrary::Arbitrary<'a>,
{
    let bytes = to_bytes(input);
    let back: T = decode(&bytes).expect("seed decodes");
    assert_eq!(&back, input, "seed {target}/{name} decodes to something else");
    write(root, target, name, &bytes);
}

fn write(root: &Path, target: &str, name: &str, bytes: &[u8]) {
    let dir = root.join(target);
    fs::create_dir_all(&dir).expect("corpus dir");
    fs::write(dir.join(name), bytes).expect("write seed");
    println!("{target}/{name}: {} bytes", bytes.len());
}

// ---- descriptors

fn desc(addr: FuzzAddr, len: u32, flags: u8, next: u8) -> FuzzDesc {
    let len = if len <= 255 {
        FuzzLen::Bytes(len as u8)
    } else if len % 512 == 0 && len / 512 <= 255 {
        FuzzLen::Sectors((len / 512) as u8)
    } else {
        FuzzLen::Raw(len)
    };
    FuzzDesc { addr, len, flags, next }
}

/// A chain at table indices `first..` from (address, length, device-writable).
fn chain(first: u8, parts: &[(FuzzAddr, u32, bool)]) -> Vec<FuzzDesc> {
    parts
        .iter()
        .enumerate()
        .map(|(i, &(addr, len, writable))| {
            let last = i + 1 == parts.len();
            let flags = if writable { WRITE } else { 0 } | if last { 0 } else { NEXT };
            desc(addr, len, flags, if last { 0 } else { first + i as u8 + 1 })
        })
        .collect()
}

fn mem_write(addr: FuzzAddr, bytes: Vec<u8>) -> MemWrite {
    MemWrite { addr, bytes: Blob(bytes) }
}

// ---- virtio-blk

fn blk_header(request_type: u32, sector: u64) -> Vec<u8> {
    let mut h = request_type.to_le_bytes().to_vec();
    h.extend_from_slice(&[0; 4]);
    h.extend_from_slice(&sector.to_le_bytes());
    h
}

fn blk_range(sector: u64, sectors: u32, flags: u32) -> Vec<u8> {
    let mut r = sector.to_le_bytes().to_vec();
    r.extend_from_slice(&sectors.to_le_bytes());
    r.extend_from_slice(&flags.to_le_bytes());
    r
}

fn block(queue: QueueImage, features: u8) -> BlockInput {
    BlockInput { read_only: false, features, budget: 0, passes: 0, queue }
}

fn block_seeds() -> Vec<(&'static str, BlockInput)> {
    let hdr = FuzzAddr::low(0x8000);
    let hdr2 = FuzzAddr::low(0x8100);
    let status = FuzzAddr::low(0x9000);
    let status2 = FuzzAddr::low(0x9010);
    let data = FuzzAddr::at(3, 0); // region B
    // Straddles the A/B boundary (guest-adjacent, not host-adjacent).
    let straddle = FuzzAddr::at(2, -512);
    let read = chain(0, &[(hdr, 16, false), (data, 1024, true), (status, 1, true)]);
    let write = chain(0, &[(hdr, 16, false), (straddle, 1024, false), (status, 1, true)]);
    let mut seeds = vec![
        ("read", block(QueueImage::new(read.clone(), vec![0], vec![mem_write(hdr, blk_header(0, 2))]), 0)),
        ("write_straddling", block(QueueImage::new(write, vec![0], vec![mem_write(hdr, blk_header(1, 4)), mem_write(straddle, vec![0x77; 1024])]), 0)),
        ("flush", block(QueueImage::new(chain(0, &[(hdr, 16, false), (status, 1, true)]), vec![0], vec![mem_write(hdr, blk_header(4, 0))]), 0)),
        ("get_id", block(QueueImage::new(chain(0, &[(hdr, 16, false), (data, 20, true), (status, 1, true)]), vec![0], vec![mem_write(hdr, blk_header(8, 0))]), 0)),
        ("discard", block(QueueImage::new(chain(0, &[(hdr, 16, false), (data, 16, false), (status, 1, true)]), vec![0], vec![mem_write(hdr, blk_header(11, 0)), mem_write(data, blk_range(8, 8, 0))]), 0b0010)),
        ("write_zeroes", block(QueueImage::new(chain(0, &[(hdr, 16, false), (data, 16, false), (status, 1, true)]), vec![0], vec![mem_write(hdr, blk_header(13, 0)), mem_write(data, blk_range(16, 8, 1))]), 0b0100)),
    ];
    let mut ro = block(QueueImage::new(chain(0, &[(hdr, 16, false), (data, 512, false), (status, 1, true)]), vec![0], vec![mem_write(hdr, blk_header(1, 0))]), 0);
    ro.read_only = true;
    seeds.push(("write_read_only", ro));
    // Indirect: one descriptor pointing at a table of three.
    let table = FuzzAddr::low(0xc000);
    let mut indirect = QueueImage::new(vec![desc(table, 48, INDIRECT, 0)], vec![0], vec![mem_write(hdr, blk_header(0, 1))]);
    indirect.indirect = List(vec![IndirectTable { addr: table, descs: List(chain(0, &[(hdr, 16, false), (data, 512, true), (status, 1, true)])) }]);
    seeds.push(("indirect_read", block(indirect, 0b1000)));
    // Three requests, EVENT_IDX, one request per pass.
    let mut descs = read.clone();
    descs.extend(chain(3, &[(hdr2, 16, false), (FuzzAddr::at(6, 0), 2048, false), (status2, 1, true)]));
    descs.extend(chain(6, &[(FuzzAddr::low(0x8200), 16, false), (FuzzAddr::low(0x9020), 1, true)]));
    let multi = QueueImage::new(
        descs,
        vec![0, 3, 6],
        vec![mem_write(hdr, blk_header(0, 0)), mem_write(hdr2, blk_header(1, 60)), mem_write(FuzzAddr::low(0x8200), blk_header(4, 0))],
    );
    seeds.push(("three_requests", BlockInput { read_only: false, features: 0b0001, budget: 1, passes: 3, queue: multi }));
    seeds
}

// ---- virtio-net

fn vnet_frame(len: usize, tag: u8) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    f.extend((12..len).map(|i| (i as u8).wrapping_mul(31) ^ tag));
    f
}

fn net(features: u8, queue: QueueImage, ctrl: Option<QueueImage>, ops: Vec<NetOp>) -> NetInput {
    NetInput { features, queue, ctrl, ops: List(ops) }
}

fn tx_seeds() -> Vec<(&'static str, NetInput)> {
    let buf = FuzzAddr::at(2, 0);
    let one = QueueImage::new(chain(0, &[(buf, 100, false)]), vec![0], vec![mem_write(buf, vnet_frame(100, 1))]);
    let split = QueueImage::new(
        chain(0, &[(FuzzAddr::at(2, -12), 12, false), (FuzzAddr::at(6, 0), 1500, false)]),
        vec![0],
        vec![mem_write(FuzzAddr::at(2, -12), vec![0; 12]), mem_write(FuzzAddr::at(6, 0), vnet_frame(1512, 2)[12..].to_vec())],
    );
    let mut descs = chain(0, &[(buf, 100, false)]);
    descs.extend(chain(1, &[(FuzzAddr::at(3, 0), 200, false)]));
    let two = QueueImage::new(descs, vec![0, 1], vec![mem_write(buf, vnet_frame(100, 3)), mem_write(FuzzAddr::at(3, 0), vnet_frame(200, 4))]);
    // Control queue: announce acknowledgement (class 3, command 0), no data.
    let ctrl = QueueImage::new(
        chain(0, &[(FuzzAddr::low(0xe000), 2, false), (FuzzAddr::low(0xe010), 1, true)]),
        vec![0],
        vec![mem_write(FuzzAddr::low(0xe000), vec![3, 0])],
    );
    vec![
        ("one_frame", net(0, one.clone(), None, vec![NetOp::Event(event::TX_KICK), NetOp::Drain])),
        ("split_header", net(1, split, None, vec![NetOp::Event(event::TX_KICK)])),
        (
            "blocked_then_writable",
            net(0, two.clone(), None, vec![NetOp::FailNextWrite(0), NetOp::Event(event::TX_KICK), NetOp::Event(event::BACKEND_WRITABLE), NetOp::Drain]),
        ),
        (
            "polling",
            net(1, two, None, vec![NetOp::Event(event::POLL_TX), NetOp::Event(event::TX_KICK), NetOp::Event(event::TX_TIMER), NetOp::Event(event::TX_TIMER)]),
        ),
        ("link_down", net(0, one, Some(ctrl), vec![NetOp::FailNextWrite(4), NetOp::Event(event::TX_KICK), NetOp::Event(event::CTRL_KICK)])),
    ]
}

fn rx_seeds() -> Vec<(&'static str, NetInput)> {
    let mut descs = Vec::new();
    for i in 0..4u8 {
        descs.extend(chain(i, &[(FuzzAddr::at(3, i16::from(i) * 0x800), 0x800, true)]));
    }
    let four = QueueImage::new(descs, vec![0, 1, 2, 3], vec![]);
    let frame = |len: u32, fill: u8| FrameSpec { len, fill, head: Blob(vec![0; 12]) };
    let big = QueueImage::new(chain(0, &[(FuzzAddr::low(0x8000), 0x8000, true), (FuzzAddr::at(2, 0), 0x8000, true)]), vec![0], vec![]);
    vec![
        ("mergeable", net(2, four.clone(), None, vec![NetOp::Send(frame(100, 1)), NetOp::Send(frame(3000, 2)), NetOp::Event(event::BACKEND_READABLE)])),
        ("single_chain_straddling", net(0, big, None, vec![NetOp::Send(frame(1514, 3)), NetOp::Event(event::BACKEND_READABLE)])),
        ("too_big", net(0, four.clone(), None, vec![NetOp::Send(frame(5000, 4)), NetOp::Send(frame(60, 5)), NetOp::Event(event::BACKEND_READABLE)])),
        (
            "no_buffers_then_kick",
            net(3, QueueImage::new(vec![], vec![], vec![]), None, vec![NetOp::Send(frame(80, 6)), NetOp::Event(event::BACKEND_READABLE), NetOp::Event(event::RX_KICK)]),
        ),
        (
            "read_errors",
            net(2, four, None, vec![NetOp::FailNextRead(2), NetOp::Send(frame(90, 7)), NetOp::Event(event::BACKEND_READABLE), NetOp::Event(event::PENDING), NetOp::ClosePeer, NetOp::Event(event::BACKEND_READABLE)]),
        ),
    ]
}

// ---- virtio-pci

/// Sizes as `PciOp::size` encodes them.
fn size_code(size: usize) -> u8 {
    match size {
        1 => 0,
        2 => 1,
        4 => 2,
        _ => 3,
    }
}

fn common(offset: u16, size: usize, value: u64) -> PciOp {
    PciOp { kind: 1, region: 0, offset, size: size_code(size), write: true, value }
}

fn bar(region: u8, offset: u16, size: usize, write: bool, value: u64) -> PciOp {
    PciOp { kind: 1, region, offset, size: size_code(size), write, value }
}

fn select(reg: u16) -> PciOp {
    PciOp { kind: 2, region: 0, offset: reg, size: 0, write: true, value: 0 }
}

fn port(offset: u16, size: usize, write: bool, value: u64) -> PciOp {
    PciOp { kind: 0, region: 0, offset, size: size_code(size), write, value }
}

/// A driver bringing the device up: features, both queues, DRIVER_OK.
fn driver_init() -> Vec<PciOp> {
    let mut ops = vec![
        common(0x14, 1, 1),
        common(0x14, 1, 3),
        common(0x00, 4, 1),
        bar(0, 0x04, 4, false, 0),
        common(0x08, 4, 1),
        common(0x0c, 4, 1),
        common(0x14, 1, 0x0b),
    ];
    for (q, size, base) in [(0u64, 16u64, 0u64), (1, 256, 0x3000)] {
        ops.extend([
            common(0x16, 2, q),
            common(0x18, 2, size),
            common(0x1a, 2, q + 1),
            common(0x20, 8, base),
            common(0x28, 8, base + 0x1000),
            common(0x30, 8, base + 0x2000),
            common(0x1c, 2, 1),
        ]);
    }
    ops.extend([common(0x10, 2, 0), common(0x14, 1, 0x0f)]);
    ops
}

fn pci_seeds() -> Vec<(&'static str, PciInput)> {
    let mut init = driver_init();
    init.push(bar(1, 0, 1, false, 0));
    init.push(bar(3, 4, 2, true, 1));
    let mut reset = driver_init();
    reset.extend([common(0x14, 1, 0), bar(0, 0x14, 1, false, 0)]);
    let msix = vec![
        bar(4, 0x00, 8, true, 0xfee0_0000),
        bar(4, 0x08, 4, true, 0x4041),
        bar(4, 0x0c, 4, true, 0),
        bar(5, 0, 8, false, 0),
        bar(4, 0x10, 4, false, 0),
    ];
    let config = vec![
        select(0x00),
        port(4, 4, false, 0),
        select(0x10),
        port(4, 4, true, 0xffff_ffff),
        port(4, 4, false, 0),
        port(4, 4, true, 0xd000_0000),
        select(0x04),
        port(4, 2, true, 0x6),
        select(0x34),
        port(4, 1, false, 0),
        port(0, 4, false, 0),
        select(0x1fc), // slot 1: empty
        port(5, 2, false, 0),
    ];
    vec![
        ("driver_init", PciInput { ops: List(init) }),
        ("init_then_reset", PciInput { ops: List(reset) }),
        ("msix_table", PciInput { ops: List(msix) }),
        ("config_space_bar_move", PciInput { ops: List(config) }),
        ("device_config", PciInput { ops: List(vec![bar(2, 0, 4, false, 0), bar(2, 2, 2, true, 0x1234), bar(2, 0, 8, false, 0)]) }),
    ]
}

// ---- migration

fn machine_state() -> Vec<u8> {
    use vmm::state::vcpu::VcpuState;
    use vmm::state::vm::VmState;
    let vcpu = VcpuState {
        cpuid: vec![kvm_bindings::kvm_cpuid_entry2 { function: 1, eax: 0x806f8, ..Default::default() }],
        regs: kvm_bindings::kvm_regs { rip: 0x100_0000, rflags: 2, ..Default::default() },
        sregs: Default::default(),
        xsave: Default::default(),
        xcrs: Default::default(),
        lapic: Default::default(),
        msrs: vec![kvm_bindings::kvm_msr_entry { index: 0x10, data: 12345, ..Default::default() }],
        debugregs: Default::default(),
        events: Default::default(),
        mp_state: Default::default(),
    };
    let virtio = VirtioPciSnapshot {
        device: "virtio-blk capacity=64 read_only=false".into(),
        config_space: vec![0; 256],
        bar_sizes: vec![0x4000, 0, 0, 0, 0, 0],
        common: CommonConfig::new(1 << 32, &[256]),
        msix: MsixSnapshot { enabled: true, function_masked: false, vectors: vec![(0xfee0_0000, 0x41, false, false); 2] },
        isr: 0,
        needs_reset: false,
        active: true,
        queue_progress: vec![(3, 3)],
        device_state: vec![],
    };
    let state = vmm::state::MachineState {
        version: vmm::state::STATE_VERSION,
        vcpus: vec![vcpu],
        vm: VmState { pic_master: Default::default(), pic_slave: Default::default(), ioapic: Default::default(), pit: Default::default(), clock: Default::default() },
        serial: SerialSnapshot { in_buffer: b"hi".to_vec(), ..Default::default() },
        virtio: vec![virtio],
    };
    let bytes = state.encode();
    assert!(vmm::state::MachineState::decode(&bytes).is_ok(), "seed state decodes");
    bytes
}

fn page_batch() -> PageBatch {
    let mut batch = PageBatch::new(0);
    batch.push_with::<()>(0x1000, |p| {
        p[0] = 1;
        Ok(())
    })
    .expect("page");
    batch.push_with::<()>(0x2000, |_| Ok(())).expect("zero page");
    batch.push_with::<()>(0x1_0000, |p| {
        p.fill(0x5a);
        Ok(())
    })
    .expect("page");
    batch
}

fn migration_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let description = VmDescription {
        version: PROTOCOL_VERSION,
        memory_bytes: 256 << 10,
        cpus: 1,
        cpuid: vec![CpuidEntry { function: 1, index: 0, flags: 0, eax: 1, ebx: 2, ecx: 3, edx: 4 }],
        devices: vec!["virtio-blk capacity=64 read_only=false".into()],
        boot: None,
    };
    let mut full = Vec::new();
    for m in [
        Message::Hello(Hello::current()),
        Message::Config(description),
        Message::Pages(page_batch()),
        Message::RoundDone(RoundDone { version: PROTOCOL_VERSION, round: 0, pages: 3 }),
        Message::State(machine_state()),
        Message::HandOver(HandOver { version: PROTOCOL_VERSION }),
        messages::ack(AckStage::Resumed),
    ] {
        m.send(&mut full).expect("encode");
    }
    let mut refused = Vec::new();
    messages::error("destination refused: no such disk").send(&mut refused).expect("encode");
    // What a destination answers a source that asked for round acks: acks with detail.
    let mut detailed = Vec::new();
    for m in [
        messages::ack_detailed(AckStage::Hello, StepTimes::default(), AckDetail { features: messages::FEATURE_ROUND_ACKS, ..Default::default() }),
        messages::ack_detailed(AckStage::Round(0), StepTimes::default(), AckDetail { pages_us: 900, read_us: 40, ..Default::default() }),
        messages::ack_detailed(
            AckStage::Restored,
            StepTimes { restore_us: 300, ..Default::default() },
            AckDetail { features: 0, pages_us: 20, read_us: 5, decode_us: 30, handoff_us: 60 },
        ),
    ] {
        m.send(&mut detailed).expect("encode");
    }
    vec![
        ("full_stream", full),
        ("page_batch", page_batch().encode()),
        ("machine_state", machine_state()),
        ("error", refused),
        ("detailed_acks", detailed),
    ]
}
