//! Host-KVM live-migration test: a tiny guest stamps an increasing generation number
//! into every page of 62 MiB, in a loop, while it is migrated over loopback TCP between
//! two machines driven exactly as `tern run` / `tern receive` drive them (the source
//! through its control API). After the move the guest keeps counting on the
//! destination and no page's generation is below what the source last saw. A relay
//! that tampers with the machine state in flight shows the destination refusing it;
//! mutual TLS admits a source of the same CA and refuses one of another.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use kvm_ioctls::Kvm;
use migration::frame;
use migration::messages::{self, Message};
use vm_memory::{Bytes, GuestAddress};
use vmm::migrate::destination::{self, Expectations, ReceiveOptions};
use vmm::state::{xsave, MachineState};
use devices::virtio::block::{Block, BlockConfig};
use devices::virtio::VirtioDevice;
use vmm::{Boot, Machine, MachineConfig, MachineExit};

const LOAD_ADDR: u64 = 0x10_0000;
const GEN_ADDR: u64 = 0x1_0000;
const STAMP_START: u32 = 0x20_0000;
const MEMORY: u64 = 64 << 20;
const STAMP_END: u32 = MEMORY as u32;

/// The stamping loop over the whole 2 MiB..64 MiB range.
fn stamping_guest() -> Vec<u8> {
    stamping_guest_over(STAMP_START, STAMP_END)
}

/// inc [GEN]; eax = [GEN]; for edi in start..end step 4096 { [edi] = eax }; repeat
fn stamping_guest_over(start: u32, end: u32) -> Vec<u8> {
    let mut c = vec![0xff, 0x05];
    c.extend_from_slice(&(GEN_ADDR as u32).to_le_bytes()); // inc dword [GEN]
    c.push(0xa1);
    c.extend_from_slice(&(GEN_ADDR as u32).to_le_bytes()); // mov eax, [GEN]
    c.push(0xbf);
    c.extend_from_slice(&start.to_le_bytes()); // mov edi, START
    let inner = c.len();
    c.extend_from_slice(&[0x89, 0x07]); // mov [edi], eax
    c.extend_from_slice(&[0x81, 0xc7, 0x00, 0x10, 0x00, 0x00]); // add edi, 4096
    c.extend_from_slice(&[0x81, 0xff]);
    c.extend_from_slice(&end.to_le_bytes()); // cmp edi, END
    let jb_at = c.len();
    c.extend_from_slice(&[0x72, (inner as i64 - (jb_at as i64 + 2)) as u8]); // jb inner
    let jmp_at = c.len();
    c.extend_from_slice(&[0xeb, (0i64 - (jmp_at as i64 + 2)) as u8]); // jmp start
    c
}

/// The guests of these tests compete for the host's CPUs: the throttling test needs
/// its guest to outrun the link, which it cannot while other guests run beside it.
/// Every test holds this lock for its whole run.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Also turns seccomp on, as `tern run` does: the source's threads (the machine loop,
/// vCPUs, API, migration) run under their filters, so a syscall missing from a list
/// kills this test binary with SIGSYS.
fn kvm() -> Kvm {
    tern_seccomp::set_mode(tern_seccomp::Mode::On).expect("seccomp filters compile and install");
    Kvm::new().unwrap_or_else(|e| panic!("host-KVM tests need /dev/kvm, which cannot be opened here: {e}"))
}

fn config(boot: Boot) -> MachineConfig {
    MachineConfig {
        cpus: 1,
        memory: MEMORY,
        boot,
        serial_output: Box::new(std::io::sink()),
        in_kernel_irqchip: true,
        track_dirty_pages: false,
        virtio_devices: Vec::new(),
    }
}

/// A destination receiving on its own thread, as `tern receive` does.
type Receiving = std::thread::JoinHandle<Result<Machine, vmm::migrate::MigrateError>>;

/// Starts a destination on a free loopback port; returns the port and its thread.
fn receiver(options: ReceiveOptions) -> (u16, Receiving) {
    let listener = destination::listen("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dest = std::thread::spawn(move || {
        destination::receive(listener, &options, |desc| {
            Machine::new(&kvm(), MachineConfig { cpus: desc.cpus, memory: desc.memory_bytes, ..config(Boot::Incoming) }, Instant::now())
                .map_err(|e| e.to_string())
        })
    });
    (port, dest)
}

fn stamps(mem: &vmm::memory::GuestMemoryMmap) -> Vec<u32> {
    (STAMP_START..STAMP_END).step_by(4096).map(|a| mem.read_obj(GuestAddress(u64::from(a))).unwrap()).collect()
}

/// A source's control socket, served, in a test directory of its own (tern-migration-NAME-PID).
fn source_api(source: &Machine, name: &str) -> (std::path::PathBuf, vmm::api::ApiSocket) {
    let dir = std::env::temp_dir().join(format!("tern-migration-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let api = dir.join("src.sock");
    let socket = vmm::api::serve(&api, source.event_sender()).unwrap();
    (api, socket)
}

fn generation(mem: &vmm::memory::GuestMemoryMmap) -> u32 {
    mem.read_obj(GuestAddress(GEN_ADDR)).unwrap()
}

/// Waits until the stamping guest's generation counter in `mem` reaches `at_least`;
/// fails the test with `what` (and the generation reached) after `timeout`.
fn wait_for_generation(mem: &vmm::memory::GuestMemoryMmap, at_least: u32, timeout: Duration, what: &str) {
    let t = Instant::now();
    while generation(mem) < at_least {
        assert!(t.elapsed() < timeout, "{what} (generation {})", generation(mem));
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn running_guest_migrates_and_no_page_goes_backwards() {
    let _serial = one_at_a_time();
    // Source: running guest with a control socket.
    let mut source = Machine::new(&kvm(), config(Boot::Flat32 { code: stamping_guest(), load_addr: LOAD_ADDR }), Instant::now()).unwrap();
    let source_mem = source.guest_memory().clone();
    let (api, _socket) = source_api(&source, "test");
    source.start().unwrap();
    wait_for_generation(&source_mem, 3, Duration::from_secs(60), "guest did not start stamping");
    let source_owner = std::thread::spawn(move || source.wait_for_exit(Some(Duration::from_secs(300))));

    // Destination: listening, builds its machine from the source's description.
    let (port, dest) = receiver(ReceiveOptions { expect: Expectations { memory: Some(MEMORY), cpus: Some(1) }, ..Default::default() });

    // `tern migrate` does exactly this over the source's control socket.
    let conn = UnixStream::connect(&api).unwrap();
    (&conn).write_all(format!("{{\"command\":\"migrate\",\"to\":\"127.0.0.1:{port}\",\"max_downtime_ms\":300}}\n").as_bytes()).unwrap();
    let mut lines = BufReader::new(conn).lines();
    let mut progress = 0;
    let final_reply = loop {
        let line = lines.next().expect("reply").unwrap();
        if line.contains("\"progress\"") {
            progress += 1;
            continue;
        }
        break line;
    };
    assert!(final_reply.contains("\"ok\":true") && final_reply.contains("\"report\""), "{final_reply}");
    assert!(progress >= 1, "no progress replies");
    assert_eq!(source_owner.join().unwrap(), Some(MachineExit::MigratedAway));

    // The source is frozen at its last state: that is what the guest last saw there.
    let last_gen = generation(&source_mem);
    let last_stamps = stamps(&source_mem);
    assert!(last_gen >= 3);

    let mut dest = dest.join().unwrap().expect("destination received the guest");
    let dest_mem = dest.guest_memory().clone();
    wait_for_generation(&dest_mem, last_gen + 2, Duration::from_secs(60), "guest does not keep counting on the destination");
    dest.pause().unwrap();
    let now = stamps(&dest_mem);
    for (i, (before, after)) in last_stamps.iter().zip(now.iter()).enumerate() {
        assert!(after >= before, "page {:#x} went backwards: source saw {before}, destination has {after}", STAMP_START as usize + i * 4096);
        assert!(*after >= last_gen - 1, "page {:#x} is stale: {after} < {}", STAMP_START as usize + i * 4096, last_gen - 1);
    }
    dest.stop_vcpus();
    assert_downtime_breakdown(&final_reply, false);
    let report = final_reply;
    eprintln!("migration report: {report}");
}

/// The report breaks its downtime down: the destination's own steps arrive in its acks,
/// every step is measured, and together they are the downtime (give or take the few
/// statements between the timers, and the destination's work that overlapped the
/// source's own last steps: transfer is then 0 for that wait).
fn assert_downtime_breakdown(reply: &str, with_disk: bool) {
    let v: serde_json::Value = serde_json::from_str(reply).unwrap();
    let report = &v["report"];
    let downtime = report["downtime_ms"].as_f64().unwrap();
    let b = &report["downtime_breakdown"];
    let step = |k: &str| b[k].as_f64().unwrap_or_else(|| panic!("no {k} in {reply}"));
    let steps = [
        "pause_ms",
        "last_pages_ms",
        "state_ms",
        "disk_flush_ms",
        "decode_ms",
        "restore_ms",
        "release_ms",
        "take_over_ms",
        "start_ms",
        "announce_ms",
        "handoff_ms",
        "transfer_ms",
    ];
    let sum: f64 = steps.iter().map(|k| step(k)).sum();
    // The destination's own steps arrive in its acks' detail (it was asked for them).
    for k in ["pause_ms", "last_pages_ms", "state_ms", "decode_ms", "restore_ms", "start_ms", "handoff_ms"] {
        assert!(step(k) > 0.0, "{k} was not measured: {reply}");
    }
    assert!(step("transfer_ms") >= 0.0, "{reply}");
    let destination: f64 = ["decode_ms", "restore_ms", "take_over_ms", "start_ms", "announce_ms", "handoff_ms"].iter().map(|k| step(k)).sum();
    if report["final_pages"].as_u64().unwrap() > 0 {
        assert!(step("dest_last_pages_ms") > 0.0, "the destination's last pages were not measured: {reply}");
    }
    if with_disk {
        assert!(step("disk_flush_ms") > 0.0 && step("take_over_ms") > 0.0, "the disk's flush and lock hand-over were not measured: {reply}");
    }
    assert!(sum <= downtime + 0.5 + destination && sum >= downtime * 0.9 - 1.0, "the steps add up to {sum} ms of a {downtime} ms downtime: {reply}");
}

/// Sends one migrate request over the source's API socket; returns the final reply.
fn migrate_via_api(api: &std::path::Path, to: &str) -> String {
    migrate_with(api, &format!("{{\"command\":\"migrate\",\"to\":\"{to}\"}}"))
}

fn migrate_with(api: &std::path::Path, request: &str) -> String {
    let conn = UnixStream::connect(api).unwrap();
    (&conn).write_all(format!("{request}\n").as_bytes()).unwrap();
    let mut lines = BufReader::new(conn).lines();
    loop {
        let line = lines.next().expect("reply").unwrap();
        if !line.contains("\"progress\"") {
            return line;
        }
    }
}

#[test]
fn refused_migrations_never_pause_the_guest() {
    let _serial = one_at_a_time();
    let mut source = Machine::new(&kvm(), config(Boot::Flat32 { code: stamping_guest(), load_addr: LOAD_ADDR }), Instant::now()).unwrap();
    let source_mem = source.guest_memory().clone();
    let (api, _socket) = source_api(&source, "refusal");
    source.start().unwrap();
    let owner = std::thread::spawn(move || source.wait_for_exit(Some(Duration::from_secs(120))));

    // 1. Nothing listens on the port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let reply = migrate_via_api(&api, &format!("127.0.0.1:{port}"));
    assert!(reply.contains("\"ok\":false") && reply.contains("cannot connect"), "{reply}");

    // 2. A destination expecting another memory size refuses at the config step.
    let (port, dest) = receiver(ReceiveOptions { expect: Expectations { memory: Some(MEMORY / 2), cpus: None }, ..Default::default() });
    let reply = migrate_via_api(&api, &format!("127.0.0.1:{port}"));
    assert!(reply.contains("\"ok\":false") && reply.contains("more than --memory"), "{reply}");
    let dest_err = dest.join().unwrap().err().expect("destination refused");
    assert!(dest_err.to_string().contains("more than --memory"), "{dest_err}");

    // The guest was never paused: it keeps stamping.
    let before = generation(&source_mem);
    wait_for_generation(&source_mem, before + 2, Duration::from_secs(30), "source guest stopped after refused migrations");
    let info = {
        let conn = UnixStream::connect(&api).unwrap();
        (&conn).write_all(b"{\"command\":\"info\"}\n{\"command\":\"shutdown\"}\n").unwrap();
        let mut lines = BufReader::new(conn).lines();
        lines.next().unwrap().unwrap()
    };
    assert!(info.contains("\"state\":\"running\""), "{info}");
    assert_eq!(owner.join().unwrap(), Some(MachineExit::UserQuit));
}

#[test]
fn guest_outrunning_the_link_is_throttled_and_still_completes() {
    let _serial = one_at_a_time();
    // 12 MiB rewritten continuously against a 32 MiB/s link (each round ~375 ms, over
    // the 300 ms limit): every round finds the whole working set dirty again, so only
    // throttling (and in the end the round limit) brings the migration to an end.
    let (start, end) = (STAMP_START, STAMP_START + (12 << 20));
    let mut source = Machine::new(&kvm(), config(Boot::Flat32 { code: stamping_guest_over(start, end), load_addr: LOAD_ADDR }), Instant::now()).unwrap();
    let source_mem = source.guest_memory().clone();
    let (api, _socket) = source_api(&source, "throttle");
    source.start().unwrap();
    let owner = std::thread::spawn(move || source.wait_for_exit(Some(Duration::from_secs(300))));
    let (port, dest) = receiver(ReceiveOptions::default());
    let reply = migrate_with(&api, &format!("{{\"command\":\"migrate\",\"to\":\"127.0.0.1:{port}\",\"max_bandwidth_mib_s\":32}}"));
    assert!(reply.contains("\"ok\":true"), "{reply}");
    let throttle: u32 = reply.split("\"max_throttle_percent\":").nth(1).and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next()).and_then(|n| n.parse().ok()).unwrap();
    assert!(throttle > 0, "the guest outran the link but was never throttled: {reply}");
    assert_eq!(owner.join().unwrap(), Some(MachineExit::MigratedAway));
    let last_gen = generation(&source_mem);
    let mut dest = dest.join().unwrap().expect("destination received the guest");
    let dest_mem = dest.guest_memory().clone();
    wait_for_generation(&dest_mem, last_gen + 2, Duration::from_secs(60), "guest does not keep counting on the destination");
    dest.stop_vcpus();
    eprintln!("throttled migration report: {reply}");
}

/// Test certificates from tests/tls/make-test-certs.sh (README's openssl recipe).
fn test_certs() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tern-migration-certs-{}", std::process::id()));
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/tls/make-test-certs.sh");
    let out = std::process::Command::new("sh").arg(&script).arg(&dir).output().expect("run make-test-certs.sh");
    assert!(out.status.success(), "make-test-certs.sh failed (is openssl installed?): {}", String::from_utf8_lossy(&out.stderr));
    dir
}

fn tls_receiver(certs: &std::path::Path) -> (u16, Receiving) {
    let server = vmm::migrate::tls::TlsIdentity::load(&certs.join("dest")).unwrap().server_config().unwrap();
    receiver(ReceiveOptions { tls: Some(server), ..Default::default() })
}

#[test]
fn migrates_over_mutual_tls_and_a_source_of_another_ca_is_refused() {
    let _serial = one_at_a_time();
    let certs = test_certs();
    let mut source = Machine::new(&kvm(), config(Boot::Flat32 { code: stamping_guest(), load_addr: LOAD_ADDR }), Instant::now()).unwrap();
    let source_mem = source.guest_memory().clone();
    let (api, _socket) = source_api(&source, "tls");
    source.start().unwrap();
    let owner = std::thread::spawn(move || source.wait_for_exit(Some(Duration::from_secs(300))));
    let request = |port: u16, identity: &str| {
        format!(
            "{{\"command\":\"migrate\",\"to\":\"127.0.0.1:{port}\",\"tls_dir\":\"{}\"}}",
            certs.join(identity).display()
        )
    };

    // 1. A source whose certificate comes from another CA: refused, the guest keeps running.
    let (port, dest) = tls_receiver(&certs);
    let reply = migrate_with(&api, &request(port, "rogue"));
    assert!(reply.contains("\"ok\":false") && reply.contains("keeps running here") && reply.contains("TLS"), "{reply}");
    let dest_err = dest.join().unwrap().err().expect("the destination refused the rogue source");
    assert!(dest_err.to_string().contains("TLS handshake"), "{dest_err}");
    let before = generation(&source_mem);
    wait_for_generation(&source_mem, before + 2, Duration::from_secs(30), "source guest stopped after a refused TLS migration");

    // 2. A plaintext source to a TLS destination: refused too.
    let (port, dest) = tls_receiver(&certs);
    let reply = migrate_via_api(&api, &format!("127.0.0.1:{port}"));
    assert!(reply.contains("\"ok\":false"), "{reply}");
    assert!(dest.join().unwrap().err().expect("refused").to_string().contains("does not speak TLS"));

    // 3. The real migration, over mutual TLS.
    let (port, dest) = tls_receiver(&certs);
    let reply = migrate_with(&api, &request(port, "source"));
    assert!(reply.contains("\"ok\":true") && reply.contains("\"report\""), "{reply}");
    assert_eq!(owner.join().unwrap(), Some(MachineExit::MigratedAway));
    let last_gen = generation(&source_mem);
    let mut dest = dest.join().unwrap().expect("destination received the guest over TLS");
    let dest_mem = dest.guest_memory().clone();
    wait_for_generation(&dest_mem, last_gen + 2, Duration::from_secs(60), "guest does not keep counting on the destination");
    dest.stop_vcpus();
    eprintln!("TLS migration report: {reply}");
}

/// A change made to the machine state in flight.
type Tamper = fn(&mut MachineState);

/// Relays one migration from the source (accepted on `front`) to `to`, passing every
/// frame through unchanged except the machine state, which `tamper` rewrites.
fn tampering_relay(front: std::net::TcpListener, to: u16, tamper: Tamper) -> std::thread::JoinHandle<()> {
    editing_relay(front, to, move |kind, payload| {
        if kind == frame::Kind::State {
            let Ok(Message::State(bytes)) = Message::decode(kind, payload) else { panic!("state frame") };
            let mut state = MachineState::decode(&bytes).expect("the source's own state decodes");
            tamper(&mut state);
            *payload = state.encode();
        }
    })
}

/// Relays one migration from the source (accepted on `front`) to `to` frame by frame;
/// `edit` may rewrite each frame's payload on the way. Replies go back untouched.
fn editing_relay(front: std::net::TcpListener, to: u16, edit: impl Fn(frame::Kind, &mut Vec<u8>) + Send + 'static) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let (source, _) = front.accept().unwrap();
        let dest = std::net::TcpStream::connect(("127.0.0.1", to)).unwrap();
        let (mut dest_r, mut source_w) = (dest.try_clone().unwrap(), source.try_clone().unwrap());
        let back = std::thread::spawn(move || {
            let _ = std::io::copy(&mut dest_r, &mut source_w);
            let _ = source_w.shutdown(std::net::Shutdown::Both);
        });
        let (mut from, mut into) = (std::io::BufReader::new(source), dest);
        let mut buf = Vec::new();
        while let Ok(kind) = frame::read_frame(&mut from, &mut buf) {
            edit(kind, &mut buf);
            if frame::write_frame(&mut into, kind, &buf).is_err() {
                break;
            }
        }
        let _ = into.shutdown(std::net::Shutdown::Both);
        let _ = back.join();
    })
}

/// A destination of an earlier build knows no round acks: it ignores the hello's
/// feature bit and sends plain acks. Played here by the real destination behind a
/// relay that clears the bit: the source must not wait for round acks, and its report
/// has the steps plain acks carry.
#[test]
fn a_destination_that_gives_no_round_acks_still_receives() {
    let _serial = one_at_a_time();
    let mut source = Machine::new(&kvm(), config(Boot::Flat32 { code: stamping_guest(), load_addr: LOAD_ADDR }), Instant::now()).unwrap();
    let (api, _socket) = source_api(&source, "plain-acks");
    source.start().unwrap();
    let owner = std::thread::spawn(move || source.wait_for_exit(Some(Duration::from_secs(300))));
    let (dest_port, dest) = receiver(ReceiveOptions::default());
    let front = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let front_port = front.local_addr().unwrap().port();
    let relay = editing_relay(front, dest_port, |kind, payload| {
        if kind == frame::Kind::Hello {
            let Ok(Message::Hello(mut hello)) = Message::decode(kind, payload) else { panic!("hello frame") };
            assert_ne!(hello.features & messages::FEATURE_ROUND_ACKS, 0, "the source asks for round acks");
            hello.features &= !messages::FEATURE_ROUND_ACKS;
            payload.clear();
            Message::Hello(hello).send(payload).unwrap();
            // The frame's payload alone: drop the header `send` wrote.
            payload.drain(..5);
        }
    });
    let t = Instant::now();
    let reply = migrate_via_api(&api, &format!("127.0.0.1:{front_port}"));
    assert!(reply.contains("\"ok\":true"), "{reply}");
    assert!(t.elapsed() < Duration::from_secs(60), "the source waited for acks that never come: {reply}");
    relay.join().unwrap();
    assert_eq!(owner.join().unwrap(), Some(MachineExit::MigratedAway));
    let v: serde_json::Value = serde_json::from_str(&reply).unwrap();
    let b = &v["report"]["downtime_breakdown"];
    assert!(b["restore_ms"].as_f64().unwrap() > 0.0 && b["start_ms"].as_f64().unwrap() > 0.0, "{reply}");
    for k in ["decode_ms", "handoff_ms", "dest_last_pages_ms"] {
        assert_eq!(b[k].as_f64(), Some(0.0), "{k} from a destination that was not asked for it: {reply}");
    }
    let mut dest = dest.join().unwrap().expect("destination received the guest");
    dest.stop_vcpus();
}

#[test]
fn tampered_machine_state_is_refused_and_the_source_keeps_running() {
    let _serial = one_at_a_time();
    let mut source = Machine::new(&kvm(), config(Boot::Flat32 { code: stamping_guest(), load_addr: LOAD_ADDR }), Instant::now()).unwrap();
    let source_mem = source.guest_memory().clone();
    let (api, _socket) = source_api(&source, "tamper");
    source.start().unwrap();
    let owner = std::thread::spawn(move || source.wait_for_exit(Some(Duration::from_secs(300))));

    let cases: [(Tamper, &str); 3] = [
        (|s| s.vcpus.push(MachineState::decode(&s.encode()).unwrap().vcpus.remove(0)), "state has 2 vCPUs, machine has 1"),
        (|s| s.vcpus[0].xsave.resize(xsave::MAX_SIZE, 0), "vCPU 0 state: XSAVE area of 262144 bytes is larger than this host's"),
        (|s| s.vm.ioapic.chip_id = 0, "IOAPIC state carries chip id 0, expected 2"),
    ];
    for (tamper, reason) in cases {
        let (dest_port, dest) = receiver(ReceiveOptions::default());
        let front = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let front_port = front.local_addr().unwrap().port();
        let relay = tampering_relay(front, dest_port, tamper);
        let reply = migrate_via_api(&api, &format!("127.0.0.1:{front_port}"));
        let dest_err = dest.join().unwrap().err().expect("destination refused the state").to_string();
        assert!(dest_err.contains(reason), "destination: {dest_err}");
        assert!(reply.contains("\"ok\":false") && reply.contains(reason), "source: {reply}");
        relay.join().unwrap();

        // The source resumed its guest: it keeps stamping.
        let before = generation(&source_mem);
        wait_for_generation(&source_mem, before + 2, Duration::from_secs(30), &format!("source guest stopped after a refused state ({reason})"));
    }
    let conn = UnixStream::connect(&api).unwrap();
    (&conn).write_all(b"{\"command\":\"shutdown\"}\n").unwrap();
    assert_eq!(owner.join().unwrap(), Some(MachineExit::UserQuit));
}

#[test]
fn xsave_area_moves_through_this_hosts_kvm_at_its_size() {
    let _serial = one_at_a_time();
    let kvm = kvm();
    let vm = kvm.create_vm().unwrap();
    let vcpu = vm.create_vcpu(0).unwrap();
    let ioctls = xsave::XsaveIoctls::probe(&vm);
    let mut area = ioctls.get(&vcpu, 0).unwrap();
    assert_eq!(area.len(), ioctls.size(), "{ioctls:?}");
    eprintln!("XSAVE: {ioctls:?}");
    // MXCSR (offset 24 of the legacy region) changes and reads back through the area,
    // with the x87 and SSE bits set in the header's XSTATE_BV (offset 512).
    area[512] |= 0x3;
    area[24..28].copy_from_slice(&(0x1f80u32 | 0x40).to_le_bytes());
    ioctls.set(&vcpu, 0, &area).unwrap();
    assert_eq!(ioctls.get(&vcpu, 0).unwrap()[24..28], area[24..28]);
    // A legacy-sized area from an older source loads too; a larger one than KVM's is refused.
    ioctls.set(&vcpu, 0, &area[..xsave::LEGACY_SIZE]).unwrap();
    let too_big = vec![0u8; ioctls.size() + 64];
    let err = ioctls.set(&vcpu, 0, &too_big).unwrap_err().to_string();
    assert!(err.contains("is larger than this host's"), "{err}");
}

/// Relays one migration from the source (accepted on `front`) to a real destination
/// on `to`, frame by frame, until `cut(kind, bytes so far)` says stop; then it closes
/// the source's side with SO_LINGER 0: the kernel answers the source with a reset
/// (ECONNRESET), as for a destination killed with unread data in its socket.
fn resetting_relay(front: std::net::TcpListener, to: u16, cut: fn(frame::Kind, usize) -> bool) -> std::thread::JoinHandle<()> {
    use std::os::fd::AsRawFd;
    std::thread::spawn(move || {
        let (source, _) = front.accept().unwrap();
        let dest = std::net::TcpStream::connect(("127.0.0.1", to)).unwrap();
        let (mut dest_r, mut source_w) = (dest.try_clone().unwrap(), source.try_clone().unwrap());
        let back = std::thread::spawn(move || {
            let _ = std::io::copy(&mut dest_r, &mut source_w);
        });
        let (mut from, mut into) = (std::io::BufReader::new(source.try_clone().unwrap()), dest);
        let mut buf = Vec::new();
        let mut passed = 0;
        while let Ok(kind) = frame::read_frame(&mut from, &mut buf) {
            if cut(kind, passed) || frame::write_frame(&mut into, kind, &buf).is_err() {
                break;
            }
            passed += buf.len();
        }
        let linger = libc::linger { l_onoff: 1, l_linger: 0 };
        // SAFETY: a valid socket descriptor and a linger struct of the size given.
        let rc = unsafe {
            libc::setsockopt(
                source.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        let _ = into.shutdown(std::net::Shutdown::Both);
        drop(from);
        drop(source);
        let _ = back.join();
    })
}

/// A destination like [`receiver`] whose machine has the disk `image` (unlocked until
/// the hand-over, as `tern receive` opens it).
fn receiver_with_disk(image: std::path::PathBuf) -> (u16, Receiving) {
    let listener = destination::listen("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dest = std::thread::spawn(move || {
        let disk = Block::new_unlocked(BlockConfig::new(image)).map_err(|e| vmm::migrate::MigrateError::Device(e.to_string()))?;
        let options = ReceiveOptions { local_devices: vec![disk.describe()], ..Default::default() };
        let mut disk = Some(disk);
        destination::receive(listener, &options, move |desc| {
            let devices: Vec<Box<dyn VirtioDevice>> = disk.take().map(|d| Box::new(d) as Box<dyn VirtioDevice>).into_iter().collect();
            Machine::new(
                &kvm(),
                MachineConfig { cpus: desc.cpus, memory: desc.memory_bytes, virtio_devices: devices, ..config(Boot::Incoming) },
                Instant::now(),
            )
            .map_err(|e| e.to_string())
        })
    });
    (port, dest)
}

/// The rig saw a plaintext source die by SIGSYS on its next migration after a
/// destination was killed mid-transfer (the source's write failed with ECONNRESET).
/// Here seccomp is on: a forbidden syscall anywhere on that path ends this test
/// binary with the reporter's line naming the thread class and the syscall.
#[test]
fn a_destination_reset_mid_transfer_leaves_a_source_that_migrates_again() {
    let _serial = one_at_a_time();
    let dir = std::env::temp_dir().join(format!("tern-migration-reset-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A disk too, as in the rig: its flush and lock hand-over are on the failure paths.
    let image = dir.join("disk.img");
    std::fs::File::create(&image).unwrap().set_len(1 << 20).unwrap();
    let disk: Box<dyn VirtioDevice> = Box::new(Block::new(BlockConfig::new(&image)).unwrap());
    let source_config = MachineConfig { virtio_devices: vec![disk], ..config(Boot::Flat32 { code: stamping_guest(), load_addr: LOAD_ADDR }) };
    let mut source = Machine::new(&kvm(), source_config, Instant::now()).unwrap();
    let source_mem = source.guest_memory().clone();
    let api = dir.join("src.sock");
    let _socket = vmm::api::serve(&api, source.event_sender()).unwrap();
    source.start().unwrap();
    let owner = std::thread::spawn(move || source.wait_for_exit(Some(Duration::from_secs(300))));

    // Cut early in the first round, later in it, and once the guest is paused (at the
    // machine state, after the last pages).
    let cuts: [fn(frame::Kind, usize) -> bool; 3] =
        [|_, bytes| bytes > 1 << 20, |_, bytes| bytes > 8 << 20, |kind, _| kind == frame::Kind::State];
    for (attempt, cut) in cuts.into_iter().enumerate() {
        let (dest_port, dest) = receiver_with_disk(image.clone());
        let front = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = front.local_addr().unwrap().port();
        let relay = resetting_relay(front, dest_port, cut);
        let t = Instant::now();
        let reply = migrate_via_api(&api, &format!("127.0.0.1:{port}"));
        relay.join().unwrap();
        assert!(dest.join().unwrap().is_err(), "attempt {attempt}: the cut destination received a guest");
        eprintln!("attempt {attempt}: {:?}: {reply}", t.elapsed());
        assert!(reply.contains("\"ok\":false"), "attempt {attempt}: {reply}");
        let before = generation(&source_mem);
        let t = Instant::now();
        while generation(&source_mem) <= before + 1 {
            if t.elapsed() > Duration::from_secs(30) {
                let conn = UnixStream::connect(&api).unwrap();
                (&conn).write_all(b"{\"command\":\"info\"}\n").unwrap();
                let info = BufReader::new(conn).lines().next().unwrap().unwrap();
                panic!("source guest stopped after a reset destination (generation {before}): {info}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // The source released its disk with the state (before the destination's
        // "restored"): it has it back, so nothing else can write it.
        let second = Block::new(BlockConfig::new(&image)).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(second.contains("is locked by another process"), "attempt {attempt}: the source's disk is not locked again: {second:?}");
    }
    let (port, dest) = receiver_with_disk(image.clone());
    let reply = migrate_via_api(&api, &format!("127.0.0.1:{port}"));
    assert!(reply.contains("\"ok\":true"), "{reply}");
    assert_downtime_breakdown(&reply, true);
    assert_eq!(owner.join().unwrap(), Some(MachineExit::MigratedAway));
    let mut dest = dest.join().unwrap().unwrap();
    dest.stop_vcpus();
}

#[test]
fn a_migration_after_a_guest_reboot_moves_the_new_boot() {
    let _serial = one_at_a_time();
    // Boot 1 resets through 0xCF9 (a byte in the PCI configuration ports) before it
    // stamps anything; boot 2 finds COM1 input waiting and stamps forever.
    let mut code = vec![0xba, 0xfd, 0x03, 0x00, 0x00, 0xec, 0xa8, 0x01]; // mov edx, 0x3fd; in al, dx; test al, 1
    let reset = [0xba, 0xf9, 0x0c, 0x00, 0x00, 0xb0, 0x02, 0xee, 0xb0, 0x06, 0xee, 0xeb, 0xfe];
    code.extend_from_slice(&[0x75, reset.len() as u8]); // jnz stamping
    code.extend_from_slice(&reset);
    code.extend(stamping_guest());
    let source = Machine::new(&kvm(), config(Boot::Flat32 { code, load_addr: LOAD_ADDR }), Instant::now()).unwrap();
    let serial = source.serial();
    let (api, _socket) = source_api(&source, "reboot-test");
    let (boots_tx, boots_rx) = std::sync::mpsc::channel();
    let source_owner = std::thread::spawn(move || {
        vmm::reboot::run(&kvm(), source, vmm::OnReboot::Restart, false, Some(Duration::from_secs(300)), |next| {
            serial.lock().unwrap().enqueue_input(b"x").unwrap();
            boots_tx.send(next.boot).unwrap();
        })
        .unwrap()
    });
    assert_eq!(boots_rx.recv_timeout(Duration::from_secs(60)), Ok(2));
    std::thread::sleep(Duration::from_millis(200));

    let (port, dest) = receiver(ReceiveOptions { expect: Expectations { memory: Some(MEMORY), cpus: Some(1) }, ..Default::default() });
    let reply = migrate_via_api(&api, &format!("127.0.0.1:{port}"));
    assert!(reply.contains("\"ok\":true") && reply.contains("\"report\""), "{reply}");
    assert_eq!(source_owner.join().unwrap(), Some(MachineExit::MigratedAway));
    assert!(boots_rx.try_recv().is_err(), "no further reboot on the source");

    // Boot 1 never stamps: a counting guest on the destination came from boot 2.
    let mut dest = dest.join().unwrap().expect("destination received the guest");
    let dest_mem = dest.guest_memory().clone();
    let arrived = generation(&dest_mem);
    assert!(arrived >= 1, "the destination holds boot 1's memory");
    wait_for_generation(&dest_mem, arrived + 2, Duration::from_secs(60), "guest does not keep stamping on the destination");
    dest.stop_vcpus();
}

#[test]
fn a_reset_during_a_migration_waits_for_its_end_and_a_failed_one_then_reboots() {
    let _serial = one_at_a_time();
    // The guest polls COM1 and resets through 0xCF9 once input arrives.
    let mut code = vec![0xba, 0xfd, 0x03, 0x00, 0x00, 0xec, 0xa8, 0x01]; // mov edx, 0x3fd; in al, dx; test al, 1
    code.extend_from_slice(&[0x74, 0xf6]); // jz back to the mov (10 bytes back from the jz's end)
    code.extend_from_slice(&[0xba, 0xf9, 0x0c, 0x00, 0x00, 0xb0, 0x02, 0xee, 0xb0, 0x06, 0xee, 0xeb, 0xfe]);
    let source = Machine::new(&kvm(), config(Boot::Flat32 { code, load_addr: LOAD_ADDR }), Instant::now()).unwrap();
    let serial = source.serial();
    let (api, _socket) = source_api(&source, "reset-test");
    let (boots_tx, boots_rx) = std::sync::mpsc::channel();
    let owner = std::thread::spawn(move || {
        vmm::reboot::run(&kvm(), source, vmm::OnReboot::Restart, false, Some(Duration::from_secs(120)), |next| {
            boots_tx.send(next.clone()).unwrap();
        })
        .unwrap()
    });

    // A "destination" that accepts and never answers: the migration stays in progress.
    let stalled = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = stalled.local_addr().unwrap().port();
    let api_for_migrate = api.clone();
    let migrate = std::thread::spawn(move || migrate_via_api(&api_for_migrate, &format!("127.0.0.1:{port}")));
    let (held, _) = stalled.accept().unwrap();

    serial.lock().unwrap().enqueue_input(b"x").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(boots_rx.try_recv().is_err(), "the machine rebooted under a running migration");
    let info = {
        let conn = UnixStream::connect(&api).unwrap();
        (&conn).write_all(b"{\"command\":\"info\"}\n").unwrap();
        BufReader::new(conn).lines().next().unwrap().unwrap()
    };
    assert!(info.contains("\"state\":\"migrating\"") && info.contains("\"boot\":1"), "{info}");

    // The destination goes away: the migration fails, then the held reset reboots.
    drop(held);
    let reply = migrate.join().unwrap();
    assert!(reply.contains("\"ok\":false"), "{reply}");
    let rebooted = boots_rx.recv_timeout(Duration::from_secs(60)).expect("the held reset rebooted the guest");
    assert_eq!(rebooted.boot, 2);
    assert!(rebooted.reason.contains("port 0xCF9"), "{rebooted:?}");
    assert!(boots_rx.recv_timeout(Duration::from_millis(200)).is_err(), "one reset, one reboot");

    let conn = UnixStream::connect(&api).unwrap();
    (&conn).write_all(b"{\"command\":\"info\"}\n{\"command\":\"shutdown\"}\n").unwrap();
    let info = BufReader::new(conn).lines().next().unwrap().unwrap();
    assert!(info.contains("\"state\":\"running\"") && info.contains("\"boot\":2"), "{info}");
    assert_eq!(owner.join().unwrap(), Some(MachineExit::UserQuit));
}

/// Like [`stamping_guest_over`], with `delay` iterations of `loop` after each page:
/// a guest that dirties its working set at a finite rate, as a busy Linux guest does.
fn paced_stamping_guest(start: u32, end: u32, delay: u32) -> Vec<u8> {
    let mut c = vec![0xff, 0x05];
    c.extend_from_slice(&(GEN_ADDR as u32).to_le_bytes()); // inc dword [GEN]
    c.push(0xa1);
    c.extend_from_slice(&(GEN_ADDR as u32).to_le_bytes()); // mov eax, [GEN]
    c.push(0xbf);
    c.extend_from_slice(&start.to_le_bytes()); // mov edi, START
    let inner = c.len();
    c.extend_from_slice(&[0x89, 0x07]); // mov [edi], eax
    c.push(0xb9);
    c.extend_from_slice(&delay.to_le_bytes()); // mov ecx, DELAY
    c.extend_from_slice(&[0xe2, 0xfe]); // loop $
    c.extend_from_slice(&[0x81, 0xc7, 0x00, 0x10, 0x00, 0x00]); // add edi, 4096
    c.extend_from_slice(&[0x81, 0xff]);
    c.extend_from_slice(&end.to_le_bytes()); // cmp edi, END
    let jb_at = c.len();
    c.extend_from_slice(&[0x72, (inner as i64 - (jb_at as i64 + 2)) as u8]); // jb inner
    let jmp_at = c.len();
    c.extend_from_slice(&[0xeb, (0i64 - (jmp_at as i64 + 2)) as u8]); // jmp start
    c
}

/// Migrates a 256 MiB guest that rewrites 128 MiB of it at a finite rate, over
/// loopback (plain or mutual TLS); checks that no page went backwards on the way and
/// returns the source's final reply.
fn paced_migration(tls: bool) -> String {
    let memory: u64 = 256 << 20;
    let end = STAMP_START + (128 << 20);
    let code = paced_stamping_guest(STAMP_START, end, 200);
    let mut source = Machine::new(&kvm(), MachineConfig { memory, ..config(Boot::Flat32 { code, load_addr: LOAD_ADDR }) }, Instant::now()).unwrap();
    let source_mem = source.guest_memory().clone();
    let (api, _socket) = source_api(&source, "paced");
    source.start().unwrap();
    // One whole pass first: every page of the working set holds data.
    wait_for_generation(&source_mem, 2, Duration::from_secs(120), "guest did not start stamping");
    let owner = std::thread::spawn(move || source.wait_for_exit(Some(Duration::from_secs(300))));
    let (port, dest, tls_dir) = if tls {
        let certs = test_certs();
        let (port, dest) = tls_receiver(&certs);
        (port, dest, format!(",\"tls_dir\":\"{}\"", certs.join("source").display()))
    } else {
        let (port, dest) = receiver(ReceiveOptions::default());
        (port, dest, String::new())
    };
    let reply = migrate_with(&api, &format!("{{\"command\":\"migrate\",\"to\":\"127.0.0.1:{port}\",\"max_downtime_ms\":300{tls_dir}}}"));
    assert!(reply.contains("\"ok\":true"), "{reply}");
    assert_eq!(owner.join().unwrap(), Some(MachineExit::MigratedAway));
    let last_stamps: Vec<u32> = (STAMP_START..end).step_by(4096).map(|a| source_mem.read_obj(GuestAddress(u64::from(a))).unwrap()).collect();
    let mut dest = dest.join().unwrap().expect("destination received the guest");
    dest.pause().unwrap();
    let dest_mem = dest.guest_memory().clone();
    for (i, before) in last_stamps.iter().enumerate() {
        let addr = u64::from(STAMP_START) + i as u64 * 4096;
        let after: u32 = dest_mem.read_obj(GuestAddress(addr)).unwrap();
        assert!(after >= *before, "page {addr:#x} went backwards: source saw {before}, destination has {after}");
    }
    dest.stop_vcpus();
    reply
}

/// A guest that dirties memory slower than the link drains it pauses only for a small
/// final copy: rounds end when the destination holds their pages (round acks), so
/// nothing is in flight at the pause, and rounds go on past the first estimate that
/// fits while the dirty set shrinks. The report names every step, the destination's
/// included; the working set verifies on the destination. Plaintext and mutual TLS.
#[test]
fn a_guest_dirtying_at_a_finite_rate_pauses_for_a_small_final_copy() {
    let _serial = one_at_a_time();
    for tls in [false, true] {
        let reply = paced_migration(tls);
        eprintln!("paced migration report (TLS {tls}): {reply}");
        assert_downtime_breakdown(&reply, false);
        let v: serde_json::Value = serde_json::from_str(&reply).unwrap();
        let final_pages = v["report"]["final_pages"].as_u64().unwrap();
        // The working set is 32768 pages; one round over it leaves thousands dirty here.
        assert!(final_pages < 4096, "the final copy held {final_pages} pages (TLS {tls}): {reply}");
    }
}
