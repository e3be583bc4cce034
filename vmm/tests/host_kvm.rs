//! Host-KVM tests: tiny guests assembled here (32-bit flat protected mode, paging off)
//! run on this machine's /dev/kvm through the real machine code paths: vCPU threads,
//! port and MMIO buses, HLT, pause/resume, the dirty-page log, the UART.
//!
//! These need /dev/kvm; without it they fail with the reason (they are not skipped).

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use devices::bus::BusDevice;
use kvm_ioctls::Kvm;
use vm_memory::{Bytes, GuestAddress};
use vmm::{Boot, Machine, MachineConfig, MachineExit};

const LOAD_ADDR: u64 = 0x10_0000;
const TIMEOUT: Duration = Duration::from_secs(30);

/// Also turns seccomp on, as `tern run` does: every tern thread these tests start
/// (vCPUs, the API's, and the thread that waits for the machine) confines itself.
fn kvm() -> Kvm {
    tern_seccomp::set_mode(tern_seccomp::Mode::On).expect("seccomp filters compile and install");
    Kvm::new().unwrap_or_else(|e| panic!("host-KVM tests need /dev/kvm, which cannot be opened here: {e}"))
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);
impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn machine(code: Vec<u8>, cpus: u8, track_dirty_pages: bool, serial: Capture) -> Machine {
    let config = MachineConfig {
        cpus,
        memory: 64 << 20,
        boot: Boot::Flat32 { code, load_addr: LOAD_ADDR },
        serial_output: Box::new(serial),
        in_kernel_irqchip: false,
        track_dirty_pages,
        virtio_devices: Vec::new(),
    };
    Machine::new(&kvm(), config, Instant::now()).expect("machine builds")
}

/// `mov edx, port`
fn mov_edx(port: u32) -> Vec<u8> {
    let mut v = vec![0xba];
    v.extend_from_slice(&port.to_le_bytes());
    v
}

const HLT: u8 = 0xf4;

#[test]
fn serial_output_reaches_the_configured_writer() {
    let mut code = mov_edx(0x3f8);
    for b in b"hello\n" {
        code.extend_from_slice(&[0xb0, *b, 0xee]); // mov al, b; out dx, al
    }
    code.push(HLT);
    let out = Capture::default();
    let mut m = machine(code, 1, false, out.clone());
    m.start().unwrap();
    assert_eq!(m.wait_for_exit(Some(TIMEOUT)), Some(MachineExit::AllHalted));
    assert_eq!(&*out.0.lock().unwrap(), b"hello\n");
}

/// `mov edx, port; mov al, value; out dx, al` for each value.
fn out_bytes(port: u32, values: &[u8]) -> Vec<u8> {
    let mut code = mov_edx(port);
    for b in values {
        code.extend_from_slice(&[0xb0, *b, 0xee]);
    }
    code
}

/// With the in-kernel irqchip, a polled console (transmit interrupt off) goes through
/// KVM's coalesced ring, and output stays in order when the guest switches the
/// transmit interrupt on halfway (coalescing off) and then powers off.
#[test]
fn polled_console_writes_are_coalesced_and_stay_in_order() {
    let mut code = out_bytes(0x3f9, &[0]); // IER = 0: polled
    code.extend(out_bytes(0x3f8, b"polled: 0123456789\n"));
    code.extend(out_bytes(0x3f9, &[0x02])); // IER = THRI: interrupt-driven
    code.extend(out_bytes(0x3f8, b"irq\n"));
    code.extend(out_bytes(0x600, &[(5 << 2) | (1 << 5)])); // ACPI S5
    code.push(HLT);
    let out = Capture::default();
    let config = MachineConfig {
        cpus: 1,
        memory: 64 << 20,
        boot: Boot::Flat32 { code, load_addr: LOAD_ADDR },
        serial_output: Box::new(out.clone()),
        in_kernel_irqchip: true,
        track_dirty_pages: false,
        virtio_devices: Vec::new(),
    };
    let mut m = Machine::new(&kvm(), config, Instant::now()).expect("machine builds");
    m.start().unwrap();
    assert_eq!(m.wait_for_exit(Some(TIMEOUT)), Some(MachineExit::PowerOff));
    assert_eq!(String::from_utf8_lossy(&out.0.lock().unwrap()), "polled: 0123456789\nirq\n");
    // Every polled write went through the ring; none of the interrupt-driven ones.
    assert_eq!(m.coalesced_console_writes(), 19);
}

#[derive(Default)]
struct Recorder {
    reads: Vec<(u64, usize)>,
    writes: Vec<(u64, Vec<u8>)>,
}
impl BusDevice for Recorder {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.reads.push((offset, data.len()));
        let value = 0xdead_beefu32.to_le_bytes();
        data.copy_from_slice(&value[..data.len()]);
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        self.writes.push((offset, data.to_vec()));
    }
}

#[test]
fn port_and_mmio_exits_reach_bus_devices() {
    let mut code = vec![0xa1, 0x00, 0x00, 0x00, 0xd0]; // mov eax, [0xd0000000]
    code.extend(mov_edx(0x1234));
    code.push(0xef); // out dx, eax
    code.extend_from_slice(&[0xa3, 0x04, 0x00, 0x00, 0xd0]); // mov [0xd0000004], eax
    code.push(HLT);
    let mut m = machine(code, 1, false, Capture::default());
    let mmio = Arc::new(Mutex::new(Recorder::default()));
    let pio = Arc::new(Mutex::new(Recorder::default()));
    m.mmio_bus().insert(mmio.clone(), 0xd000_0000, 0x10).unwrap();
    m.pio_bus().insert(pio.clone(), 0x1234, 4).unwrap();
    m.start().unwrap();
    assert_eq!(m.wait_for_exit(Some(TIMEOUT)), Some(MachineExit::AllHalted));
    let mmio = mmio.lock().unwrap();
    assert_eq!(mmio.reads, vec![(0, 4)]);
    assert_eq!(mmio.writes, vec![(4, 0xdead_beefu32.to_le_bytes().to_vec())]);
    assert_eq!(pio.lock().unwrap().writes, vec![(0, 0xdead_beefu32.to_le_bytes().to_vec())]);
}

#[test]
fn hlt_on_every_vcpu_ends_the_machine() {
    let mut m = machine(vec![HLT], 1, false, Capture::default());
    m.start().unwrap();
    assert_eq!(m.wait_for_exit(Some(TIMEOUT)), Some(MachineExit::AllHalted));
    // The waiting thread ran the loop confined (and is still, for the teardown).
    assert_eq!(tern_seccomp::confined_as(), Some(tern_seccomp::ThreadClass::Main));
}

const COUNTER_ADDR: u64 = 0x1_0000;

/// `inc dword [COUNTER_ADDR]; jmp back`
fn counting_loop() -> Vec<u8> {
    let mut code = vec![0xff, 0x05];
    code.extend_from_slice(&(COUNTER_ADDR as u32).to_le_bytes());
    code.extend_from_slice(&[0xeb, 0xf8]);
    code
}

fn counter(m: &Machine) -> u32 {
    m.guest_memory().read_obj(GuestAddress(COUNTER_ADDR)).unwrap()
}

#[test]
fn pause_stops_guest_progress_and_resume_restarts_it() {
    let mut m = machine(counting_loop(), 1, false, Capture::default());
    m.start().unwrap();
    let started = Instant::now();
    while counter(&m) == 0 {
        assert!(started.elapsed() < TIMEOUT, "guest never started counting");
        std::thread::sleep(Duration::from_millis(5));
    }
    for _ in 0..3 {
        m.pause().unwrap();
        assert!(m.is_paused());
        let frozen = counter(&m);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(counter(&m), frozen, "guest made progress while paused");
        m.resume();
        let resumed = Instant::now();
        while counter(&m) == frozen {
            assert!(resumed.elapsed() < TIMEOUT, "guest did not resume");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    m.stop_vcpus();
}

#[test]
fn dirty_log_reports_exactly_the_pages_written() {
    let targets = [0x2_0000u32, 0x2_3000, 0x5_0ff0, 0x30_0000];
    let mut code = vec![];
    for t in targets {
        code.extend_from_slice(&[0xc7, 0x05]); // mov dword [t], imm32
        code.extend_from_slice(&t.to_le_bytes());
        code.extend_from_slice(&1u32.to_le_bytes());
    }
    code.push(HLT);
    let mut m = machine(code, 1, true, Capture::default());
    // Nothing logged before the guest runs (our own loading is not a guest write).
    assert_eq!(m.take_dirty_pages().unwrap(), Vec::<u64>::new());
    m.start().unwrap();
    assert_eq!(m.wait_for_exit(Some(TIMEOUT)), Some(MachineExit::AllHalted));
    let mut dirty = m.take_dirty_pages().unwrap();
    dirty.sort();
    assert_eq!(dirty, vec![0x2_0000, 0x2_3000, 0x5_0000, 0x30_0000]);
    // The log was cleared by reading it.
    assert_eq!(m.take_dirty_pages().unwrap(), Vec::<u64>::new());
}

#[test]
fn acpi_power_off_port_ends_the_machine_cleanly() {
    let mut code = mov_edx(0x600);
    code.extend_from_slice(&[0xb0, (5 << 2) | (1 << 5), 0xee]); // SLP_TYP=5 | SLP_EN
    code.push(HLT);
    let mut m = machine(code, 1, false, Capture::default());
    m.start().unwrap();
    assert_eq!(m.wait_for_exit(Some(TIMEOUT)), Some(MachineExit::PowerOff));
}

#[test]
fn cpu_count_is_checked() {
    let config = MachineConfig {
        cpus: 0,
        memory: 64 << 20,
        boot: Boot::Flat32 { code: vec![HLT], load_addr: LOAD_ADDR },
        serial_output: Box::new(std::io::sink()),
        in_kernel_irqchip: false,
        track_dirty_pages: false,
        virtio_devices: Vec::new(),
    };
    let err = Machine::new(&kvm(), config, Instant::now()).err().expect("0 vCPUs refused");
    assert!(err.to_string().contains("--cpus 0"), "{err}");
}

#[test]
fn control_api_pauses_resumes_and_shuts_down() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::net::UnixStream;

    let mut m = machine(counting_loop(), 1, false, Capture::default());
    let mem = m.guest_memory().clone();
    let read_counter = move || -> u32 { mem.read_obj(GuestAddress(COUNTER_ADDR)).unwrap() };
    let dir = std::env::temp_dir().join(format!("tern-host-kvm-api-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("api.sock");
    let _socket = vmm::api::serve(&path, m.event_sender()).unwrap();
    m.start().unwrap();
    let owner = std::thread::spawn(move || m.wait_for_exit(Some(TIMEOUT)));

    let conn = UnixStream::connect(&path).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut ask = |request: &str| -> String {
        (&conn).write_all(format!("{request}\n").as_bytes()).unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        line
    };
    assert!(ask(r#"{"command":"info"}"#).contains(r#""state":"running""#));
    assert!(ask(r#"{"command":"pause"}"#).contains(r#""ok":true"#));
    assert!(ask(r#"{"command":"info"}"#).contains(r#""state":"paused""#));
    let frozen = read_counter();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(read_counter(), frozen, "guest ran while paused through the API");
    assert!(ask(r#"{"command":"resume"}"#).contains(r#""ok":true"#));
    let resumed = Instant::now();
    while read_counter() == frozen {
        assert!(resumed.elapsed() < TIMEOUT, "guest did not resume");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(ask(r#"{"command":"shutdown"}"#).contains(r#""ok":true"#));
    assert_eq!(owner.join().unwrap(), Some(MachineExit::UserQuit));
}

#[test]
fn keyboard_controller_reset_ends_the_machine_as_a_reset() {
    // mov al, 0xfe; out 0x64, al  (pulse the reset line, as `reboot=k` does)
    let mut m = machine(vec![0xb0, 0xfe, 0xe6, 0x64, HLT], 1, false, Capture::default());
    m.start().unwrap();
    assert!(matches!(m.wait_for_exit(Some(TIMEOUT)), Some(MachineExit::Reset { .. })));
}

#[test]
fn a_triple_fault_ends_the_machine_as_a_crash_that_says_where_the_guest_was() {
    // lidt [0x600] (six zero bytes: an empty IDT); ud2. The #UD cannot be delivered,
    // nor the #GP and #DF that follow: the CPU shuts down.
    let code = vec![0x0f, 0x01, 0x1d, 0x00, 0x06, 0x00, 0x00, 0x0f, 0x0b, HLT];
    let mut m = machine(code, 1, false, Capture::default());
    m.start().unwrap();
    let exit = m.wait_for_exit(Some(TIMEOUT));
    let Some(MachineExit::TripleFault { vcpu, reason }) = exit.clone() else {
        panic!("a triple fault must end the machine as a triple fault, not {exit:?}");
    };
    assert_eq!(vcpu, 0);
    assert!(!exit.unwrap().is_clean(), "a triple fault is a guest crash");
    assert!(reason.contains("vCPU 0 triple fault"), "{reason}");
    assert!(reason.contains("rip=0x") && reason.contains("idt=0x0/0x0"), "registers missing: {reason}");
}

#[test]
fn debug_port_writes_are_timestamped() {
    // mov al, 1; out 0x402 (mov dx, 0x402; out dx, al); mov al, 2; out dx, al; hlt
    let mut code = mov_edx(0x402);
    code.extend_from_slice(&[0xb0, 0x01, 0xee, 0xb0, 0x02, 0xee, HLT]);
    let mut m = machine(code, 1, false, Capture::default());
    m.start().unwrap();
    assert_eq!(m.wait_for_exit(Some(TIMEOUT)), Some(MachineExit::AllHalted));
    let port = m.debug_port();
    let marks = port.lock().unwrap().marks().to_vec();
    assert_eq!(marks.iter().map(|(v, _)| *v).collect::<Vec<_>>(), vec![1, 2]);
    assert!(marks[0].1 <= marks[1].1);
}

/// KVM emulates the TSC-deadline timer but leaves announcing it to the VMM; the guest
/// CPUID must carry it exactly when KVM has it, and a processor name.
#[test]
fn guest_cpuid_announces_tsc_deadline_and_a_processor_name() {
    let kvm = kvm();
    let cpuid = vmm::cpuid::supported_cpuid(&kvm).unwrap();
    let leaf = |f: u32| cpuid.as_slice().iter().find(|e| e.function == f).copied();
    let leaf1 = leaf(1).expect("leaf 1");
    let has_cap = kvm.check_extension(kvm_ioctls::Cap::TscDeadlineTimer);
    assert_eq!(leaf1.ecx & (1 << 24) != 0, has_cap);
    if let Some(name) = leaf(0x8000_0002) {
        assert_ne!([name.eax, name.ebx, name.ecx, name.edx], [0; 4], "processor name filled in");
    }
}

// Reboots: a tiny guest marks each boot with a 'B' on COM1, then powers off if the
// UART has input waiting and otherwise asks for a reset its own way. The test queues
// that input when the Nth reboot is built, so it sees N+1 boots, then a power-off.

/// `mov edx, 0xcf9; mov al, 2; out dx, al; mov al, 6; out dx, al` (Linux `reboot=pci`).
fn reset_by_cf9() -> Vec<u8> {
    let mut code = mov_edx(0xcf9);
    code.extend_from_slice(&[0xb0, 0x02, 0xee, 0xb0, 0x06, 0xee]);
    code
}

/// `mov al, 0xfe; out 0x64, al` (Linux `reboot=kbd`).
fn reset_by_keyboard_controller() -> Vec<u8> {
    vec![0xb0, 0xfe, 0xe6, 0x64]
}

/// `mov edx, 0x602; mov al, 1; out dx, al`: the FADT's reset register (`reboot=acpi`).
fn reset_by_acpi() -> Vec<u8> {
    let mut code = mov_edx(0x602);
    code.extend_from_slice(&[0xb0, 0x01, 0xee]);
    code
}

/// `lidt [0x600]` (zero bytes: an empty IDT); `ud2` (Linux `reboot=triple`).
fn reset_by_triple_fault() -> Vec<u8> {
    vec![0x0f, 0x01, 0x1d, 0x00, 0x06, 0x00, 0x00, 0x0f, 0x0b]
}

/// Marks the boot, then powers off if COM1 has input, else runs `reset` and spins
/// (a reset request does not stop the vCPU by itself: the machine does).
fn rebooting_guest(reset: Vec<u8>) -> Vec<u8> {
    let mut code = mov_edx(0x3f8);
    code.extend_from_slice(&[0xb0, b'B', 0xee]);
    code.extend(mov_edx(0x3fd));
    code.extend_from_slice(&[0xec, 0xa8, 0x01]); // in al, dx; test al, 1
    code.extend_from_slice(&[0x75, reset.len() as u8 + 2]); // jnz power_off
    code.extend(reset);
    code.extend_from_slice(&[0xeb, 0xfe]); // jmp $
    code.extend(mov_edx(0x600)); // power_off:
    code.extend_from_slice(&[0xb0, (5 << 2) | (1 << 5), 0xee, HLT]);
    code
}

/// Runs `code` with `--on-reboot restart` until it powers off, queuing the "stop"
/// input when reboot `reboots` is built; returns the reboots seen and the console.
fn run_rebooting(code: Vec<u8>, reboots: u32) -> (Vec<vmm::reboot::Rebooted>, Option<MachineExit>, String) {
    let out = Capture::default();
    let m = machine(code, 1, false, out.clone());
    let serial = m.serial();
    let mut seen = Vec::new();
    let exit = vmm::reboot::run(&kvm(), m, vmm::OnReboot::Restart, false, Some(TIMEOUT), |next| {
        seen.push(next.clone());
        if seen.len() as u32 == reboots {
            serial.lock().unwrap().enqueue_input(b"x").unwrap();
        }
    })
    .expect("every boot builds");
    let console = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    (seen, exit, console)
}

fn assert_rebooted(code: Vec<u8>, reason: &str) {
    let (seen, exit, console) = run_rebooting(code, 3);
    assert_eq!(exit, Some(MachineExit::PowerOff), "the fourth boot powers off");
    assert_eq!(console, "BBBB", "one mark per boot");
    assert_eq!(seen.iter().map(|r| r.boot).collect::<Vec<_>>(), vec![2, 3, 4]);
    for r in &seen {
        assert!(r.reason.contains(reason), "{r:?}");
    }
}

#[test]
fn a_write_of_6_to_port_cf9_boots_the_machine_again() {
    assert_rebooted(rebooting_guest(reset_by_cf9()), "reset control register (port 0xCF9)");
}

#[test]
fn the_keyboard_controller_reset_boots_the_machine_again() {
    assert_rebooted(rebooting_guest(reset_by_keyboard_controller()), "i8042 keyboard controller");
}

#[test]
fn the_acpi_reset_register_boots_the_machine_again() {
    assert_rebooted(rebooting_guest(reset_by_acpi()), "ACPI reset register");
}

#[test]
fn a_triple_fault_boots_the_machine_again_and_says_where_the_guest_was() {
    assert_rebooted(rebooting_guest(reset_by_triple_fault()), "triple fault: vCPU 0 triple fault (KVM_EXIT_SHUTDOWN) [");
}

#[test]
fn with_on_reboot_exit_a_reset_or_a_triple_fault_ends_the_run() {
    for (reset, triple) in [(reset_by_cf9(), false), (reset_by_acpi(), false), (reset_by_triple_fault(), true)] {
        let out = Capture::default();
        let m = machine(rebooting_guest(reset), 1, false, out.clone());
        // With exit the calling thread owns the machine and confines itself: one
        // thread per run.
        let exit = std::thread::spawn(move || {
            vmm::reboot::run(&kvm(), m, vmm::OnReboot::Exit, false, Some(TIMEOUT), |r| panic!("no reboot with exit: {r:?}")).unwrap()
        })
        .join()
        .unwrap();
        match exit {
            Some(MachineExit::Reset { .. }) if !triple => {}
            Some(MachineExit::TripleFault { .. }) if triple => {}
            other => panic!("expected the reset to end the run, got {other:?}"),
        }
        assert_eq!(&*out.0.lock().unwrap(), b"B", "one boot only");
    }
}

#[test]
fn the_control_api_follows_the_machine_across_a_reboot() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::net::UnixStream;

    // Boot 1 resets through 0xCF9; boot 2 finds input and counts forever.
    let mut code = mov_edx(0x3f8);
    code.extend_from_slice(&[0xb0, b'B', 0xee]);
    code.extend(mov_edx(0x3fd));
    code.extend_from_slice(&[0xec, 0xa8, 0x01]);
    let reset = reset_by_cf9();
    code.extend_from_slice(&[0x75, reset.len() as u8 + 2]);
    code.extend(reset);
    code.extend_from_slice(&[0xeb, 0xfe]);
    code.extend(counting_loop());
    let m = machine(code, 1, false, Capture::default());
    let serial = m.serial();
    let dir = std::env::temp_dir().join(format!("tern-host-kvm-reboot-api-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("api.sock");
    let _socket = vmm::api::serve(&path, m.event_sender()).unwrap();
    let (boots_tx, boots_rx) = std::sync::mpsc::channel();
    let owner = std::thread::spawn(move || {
        vmm::reboot::run(&kvm(), m, vmm::OnReboot::Restart, false, Some(TIMEOUT), |next| {
            serial.lock().unwrap().enqueue_input(b"x").unwrap();
            boots_tx.send(next.boot).unwrap();
        })
        .unwrap()
    });
    assert_eq!(boots_rx.recv_timeout(TIMEOUT), Ok(2));
    let conn = UnixStream::connect(&path).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut ask = |request: &str| -> String {
        (&conn).write_all(format!("{request}\n").as_bytes()).unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        line
    };
    let info = ask(r#"{"command":"info"}"#);
    assert!(info.contains(r#""state":"running""#) && info.contains(r#""boot":2"#), "{info}");
    assert!(ask(r#"{"command":"pause"}"#).contains(r#""ok":true"#));
    assert!(ask(r#"{"command":"info"}"#).contains(r#""state":"paused""#));
    assert!(ask(r#"{"command":"resume"}"#).contains(r#""ok":true"#));
    assert!(ask(r#"{"command":"shutdown"}"#).contains(r#""ok":true"#));
    assert_eq!(owner.join().unwrap(), Some(MachineExit::UserQuit));
}

/// Prints the 16 bytes of the VM generation ID (0xfe000) on COM1, then as
/// [`rebooting_guest`]: resets, or powers off once COM1 has input.
fn id_printing_rebooting_guest() -> Vec<u8> {
    let mut code = vec![0xbe, 0x00, 0xe0, 0x0f, 0x00]; // mov esi, 0xfe000
    code.extend(mov_edx(0x3f8));
    code.extend_from_slice(&[0xb9, 0x10, 0x00, 0x00, 0x00]); // mov ecx, 16
    code.extend_from_slice(&[0x8a, 0x06, 0xee, 0xff, 0xc6, 0xff, 0xc9, 0x75, 0xf7]); // mov al, [esi]; out; inc esi; dec ecx; jnz
    code.extend(rebooting_guest(reset_by_cf9()));
    code
}

#[test]
fn every_cold_boot_draws_a_vm_generation_id_and_reboots_keep_it() {
    let run = || {
        let out = Capture::default();
        let m = machine(id_printing_rebooting_guest(), 1, false, out.clone());
        let serial = m.serial();
        let mut boots = 0;
        let exit = vmm::reboot::run(&kvm(), m, vmm::OnReboot::Restart, false, Some(TIMEOUT), |_| {
            boots += 1;
            if boots == 2 {
                serial.lock().unwrap().enqueue_input(b"x").unwrap();
            }
        })
        .expect("every boot builds");
        assert_eq!(exit, Some(MachineExit::PowerOff));
        let console = out.0.lock().unwrap().clone();
        assert_eq!(console.len(), 3 * 17, "three boots, each the ID and a mark");
        let ids: Vec<&[u8]> = console.chunks(17).map(|boot| &boot[..16]).collect();
        assert!(console.chunks(17).all(|boot| boot[16] == b'B'));
        assert!(ids.iter().all(|id| id == &ids[0]), "the ID outlives reboots: {ids:x?}");
        assert_ne!(ids[0], [0u8; 16]);
        ids[0].to_vec()
    };
    assert_ne!(run(), run(), "each cold boot draws its own");
}
