//! Decoding and checking a machine state as a destination receives it from its peer:
//! corrupt, truncated, oversized and inconsistent states are refused with a reason,
//! never a panic.

use kvm_bindings::{kvm_cpuid_entry2, kvm_irqchip, kvm_lapic_state, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE};

use super::vcpu::VcpuState;
use super::vm::VmState;
use super::xsave::{XsaveIoctls, LEGACY_SIZE};
use super::*;

fn vcpu() -> VcpuState {
    let mut lapic = kvm_lapic_state::default();
    lapic.regs.fill(0x5a);
    VcpuState {
        cpuid: vec![kvm_cpuid_entry2 { function: 1, eax: 0x806f8, ..Default::default() }; 3],
        regs: Default::default(),
        sregs: Default::default(),
        xsave: vec![0; LEGACY_SIZE],
        xcrs: Default::default(),
        lapic,
        msrs: vec![kvm_bindings::kvm_msr_entry { index: 0x10, data: 1234, ..Default::default() }; 4],
        debugregs: Default::default(),
        events: Default::default(),
        mp_state: Default::default(),
    }
}

fn state(vcpus: usize) -> MachineState {
    MachineState {
        version: STATE_VERSION,
        vcpus: (0..vcpus).map(|_| vcpu()).collect(),
        vm: VmState {
            pic_master: kvm_irqchip { chip_id: KVM_IRQCHIP_PIC_MASTER, ..Default::default() },
            pic_slave: kvm_irqchip { chip_id: KVM_IRQCHIP_PIC_SLAVE, ..Default::default() },
            ioapic: kvm_irqchip { chip_id: KVM_IRQCHIP_IOAPIC, ..Default::default() },
            pit: Default::default(),
            clock: Default::default(),
        },
        serial: Default::default(),
        virtio: Vec::new(),
    }
}

fn decode_err(bytes: &[u8]) -> String {
    match MachineState::decode(bytes) {
        Ok(_) => panic!("decoded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_good_state_round_trips_and_checks() {
    let bytes = state(2).encode();
    let decoded = MachineState::decode(&bytes).unwrap();
    assert_eq!(decoded.vcpus.len(), 2);
    assert_eq!(decoded.vcpus[1].msrs[3].data, 1234);
    assert_eq!(decoded.vcpus[0].lapic.regs[7], 0x5a);
    decoded.check(2, 0, XsaveIoctls::Legacy).unwrap();
    assert_eq!(decoded.encode(), bytes);
}

#[test]
fn other_versions_are_refused() {
    let mut old = state(1);
    old.version = 1;
    assert_eq!(decode_err(&old.encode()), "state version 1, this tern reads version 2");
}

#[test]
fn truncated_and_trailing_bytes_are_refused() {
    let bytes = state(1).encode();
    for cut in [0, 1, 2, 100, bytes.len() / 2, bytes.len() - 1] {
        assert!(decode_err(&bytes[..cut]).starts_with("undecodable state"), "cut at {cut}");
    }
    let mut long = bytes.clone();
    long.push(0);
    assert_eq!(decode_err(&long), "undecodable state: 1 trailing bytes after the state");
}

#[test]
fn oversized_states_are_refused_before_decoding() {
    let huge = vec![0u8; MAX_STATE_BYTES + 1];
    assert_eq!(decode_err(&huge), format!("state of {} bytes is larger than the 16777216-byte limit", MAX_STATE_BYTES + 1));
}

#[test]
fn a_kvm_structure_of_the_wrong_size_is_refused() {
    let bytes = state(1).encode();
    // The LAPIC travels as varint(1024) = 80 08, then its 1024 bytes of 0x5a.
    let mut needle = vec![0x80, 0x08];
    needle.extend_from_slice(&[0x5a; 16]);
    let at = bytes.windows(needle.len()).position(|w| w == needle.as_slice()).expect("LAPIC in the encoding");
    let mut short = bytes[..at].to_vec();
    short.extend_from_slice(&[0xff, 0x07]); // 1023
    short.extend_from_slice(&bytes[at + 3..]);
    assert_eq!(decode_err(&short), "undecodable state: kvm_lapic_state is 1023 bytes, expected 1024");
    // One input byte may not stand for a whole zero-padded structure either.
    let mut tiny = bytes[..at].to_vec();
    tiny.push(0x01);
    tiny.push(0x5a);
    tiny.extend_from_slice(&bytes[at + 2 + 1024..]);
    assert_eq!(decode_err(&tiny), "undecodable state: kvm_lapic_state is 1 bytes, expected 1024");
}

#[test]
fn too_many_vcpus_msrs_or_cpuid_entries_are_refused_while_decoding() {
    assert_eq!(decode_err(&state(MAX_VCPUS + 1).encode()), "undecodable state: 257 elements where at most 256 are allowed");
    let mut s = state(1);
    s.vcpus[0].msrs = vec![Default::default(); 257];
    assert_eq!(decode_err(&s.encode()), "undecodable state: 257 kvm_msr_entry where at most 256 are allowed");
    let mut s = state(1);
    s.vcpus[0].cpuid = vec![Default::default(); 257];
    assert_eq!(decode_err(&s.encode()), "undecodable state: 257 kvm_cpuid_entry2 where at most 256 are allowed");
}

#[test]
fn corrupt_bytes_never_panic() {
    let bytes = state(2).encode();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..2000 {
        let mut corrupt = bytes.clone();
        for _ in 0..4 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let at = (seed as usize) % corrupt.len();
            corrupt[at] = (seed >> 32) as u8;
        }
        if let Ok(s) = MachineState::decode(&corrupt) {
            let _ = s.check(2, 0, XsaveIoctls::Xsave2 { size: 8192 });
        }
    }
}

#[test]
fn a_state_for_another_machine_is_refused() {
    let s = state(2);
    assert_eq!(s.check(1, 0, XsaveIoctls::Legacy).unwrap_err().to_string(), "state has 2 vCPUs, machine has 1");
    assert_eq!(s.check(2, 1, XsaveIoctls::Legacy).unwrap_err().to_string(), "state has 0 virtio devices, machine has 1");
    let mut big = state(1);
    big.vcpus[0].xsave = vec![0; 8192];
    assert_eq!(
        big.check(1, 0, XsaveIoctls::Legacy).unwrap_err().to_string(),
        "vCPU 0 state: XSAVE area of 8192 bytes is larger than this host's 4096 bytes"
    );
    big.check(1, 0, XsaveIoctls::Xsave2 { size: 8192 }).unwrap();
    let mut swapped = state(1);
    swapped.vm.pic_master.chip_id = KVM_IRQCHIP_IOAPIC;
    assert_eq!(
        swapped.check(1, 0, XsaveIoctls::Legacy).unwrap_err().to_string(),
        "machine state refused: PIC master state carries chip id 2, expected 0"
    );
    let mut halted = state(1);
    halted.vcpus[0].mp_state.mp_state = 99;
    assert_eq!(halted.check(1, 0, XsaveIoctls::Legacy).unwrap_err().to_string(), "vCPU 0 state: unknown MP state 99");
    let mut xcrs = state(1);
    xcrs.vcpus[0].xcrs.nr_xcrs = 17;
    assert_eq!(xcrs.check(1, 0, XsaveIoctls::Legacy).unwrap_err().to_string(), "vCPU 0 state: 17 XCRs, at most 16");
}
