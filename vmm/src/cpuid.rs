//! Guest CPUID: what KVM supports, plus the features KVM emulates but leaves for the
//! VMM to announce (the TSC-deadline timer), the host's processor name when KVM gives
//! none, per-vCPU APIC IDs and a one-socket topology of `cpus` cores (one thread
//! each), and the hypervisor bit. KVM's paravirtual leaves (0x4000_0000..) come from
//! KVM itself and carry kvmclock.

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::Kvm;

/// Error reading KVM's supported CPUID.
#[derive(Debug, thiserror::Error)]
#[error("cannot read KVM's supported CPUID: {0}")]
pub struct CpuidError(pub kvm_ioctls::Error);

/// What a guest may be given on this host: KVM's supported CPUID with the
/// TSC-deadline timer announced when KVM emulates it (KVM reports it only through
/// KVM_CAP_TSC_DEADLINE_TIMER; without it the guest programs the LAPIC timer the slow
/// way) and the host's processor name filled in where KVM left it empty.
pub fn supported_cpuid(kvm: &Kvm) -> Result<CpuId, CpuidError> {
    let mut cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(CpuidError)?;
    let tsc_deadline = kvm.check_extension(kvm_ioctls::Cap::TscDeadlineTimer);
    for entry in cpuid.as_mut_slice() {
        if entry.function == 0x1 && tsc_deadline {
            entry.ecx |= ECX_TSC_DEADLINE;
        }
        if (0x8000_0002..=0x8000_0004).contains(&entry.function)
            && [entry.eax, entry.ebx, entry.ecx, entry.edx] == [0; 4]
        {
            [entry.eax, entry.ebx, entry.ecx, entry.edx] = host_cpuid(entry.function);
        }
    }
    Ok(cpuid)
}

/// The host CPU's own answer for `leaf` (subleaf 0).
fn host_cpuid(leaf: u32) -> [u32; 4] {
    // CPUID exists on every x86_64 CPU and only reads identification registers.
    let r = std::arch::x86_64::__cpuid(leaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// Leaf 1 ECX bit 24: TSC-deadline mode of the LAPIC timer.
const ECX_TSC_DEADLINE: u32 = 1 << 24;

const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;
/// x2APIC topology level types in leaf 0xb ECX[15:8].
const LEVEL_TYPE_THREAD: u32 = 1;
const LEVEL_TYPE_CORE: u32 = 2;

/// Bits needed to number `n` items (ceil(log2 n)).
fn id_bits(n: u32) -> u32 {
    if n <= 1 { 0 } else { 32 - (n - 1).leading_zeros() }
}

/// Returns `base` specialised for vCPU `index` of `cpus`.
pub fn vcpu_cpuid(base: &CpuId, index: u8, cpus: u8) -> CpuId {
    let mut cpuid = base.clone();
    let apic_id = u32::from(index);
    let cpus = u32::from(cpus);
    let core_bits = id_bits(cpus);
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            0x1 => {
                entry.ebx = (entry.ebx & 0x0000_ffff) | (apic_id << 24) | (cpus.max(1) << 16);
                entry.ecx |= ECX_HYPERVISOR;
                if cpus > 1 {
                    entry.edx |= EDX_HTT;
                } else {
                    entry.edx &= !EDX_HTT;
                }
            }
            0x4 => {
                // Cores per package - 1 in EAX[31:26]; threads sharing this cache - 1
                // in EAX[25:14] (caches above L2 are shared by all cores).
                let level = (entry.eax >> 5) & 0x7;
                let sharing = if level >= 3 { cpus - 1 } else { 0 };
                entry.eax = (entry.eax & 0x3fff) | ((cpus - 1) << 26) | (sharing << 14);
            }
            0xb | 0x1f => {
                match entry.index {
                    0 => {
                        entry.eax = 0;
                        entry.ebx = 1;
                        entry.ecx = (LEVEL_TYPE_THREAD << 8) | entry.index;
                    }
                    1 => {
                        entry.eax = core_bits;
                        entry.ebx = cpus;
                        entry.ecx = (LEVEL_TYPE_CORE << 8) | entry.index;
                    }
                    _ => {
                        entry.eax = 0;
                        entry.ebx = 0;
                        entry.ecx = entry.index;
                    }
                }
                entry.edx = apic_id;
            }
            0x8000_0008 => {
                // AMD: NC = cores - 1, ApicIdSize = bits for the core id.
                entry.ecx = (entry.ecx & !0xf0ff) | (core_bits << 12) | (cpus - 1);
            }
            0x8000_001e => {
                // AMD extended APIC id, compute unit id, node id.
                entry.eax = apic_id;
                entry.ebx = (entry.ebx & !0xffff) | (apic_id & 0xff);
                entry.ecx &= !0xff;
            }
            _ => {}
        }
    }
    cpuid
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    fn base() -> CpuId {
        let entries = [
            kvm_cpuid_entry2 { function: 1, ebx: 0xff00_0800, ..Default::default() },
            kvm_cpuid_entry2 { function: 0xb, index: 0, ..Default::default() },
            kvm_cpuid_entry2 { function: 0xb, index: 1, ..Default::default() },
            kvm_cpuid_entry2 { function: 0x8000_0008, ecx: 0x7, ..Default::default() },
        ];
        CpuId::from_entries(&entries).unwrap()
    }

    #[test]
    fn apic_ids_and_counts_are_per_vcpu() {
        let c = vcpu_cpuid(&base(), 2, 4);
        let e = c.as_slice();
        assert_eq!(e[0].ebx >> 24, 2);
        assert_eq!((e[0].ebx >> 16) & 0xff, 4);
        assert_eq!(e[0].ebx & 0xffff, 0x0800, "low bits kept");
        assert_ne!(e[0].ecx & ECX_HYPERVISOR, 0);
        assert_ne!(e[0].edx & EDX_HTT, 0);
        assert_eq!((e[1].edx, e[2].edx), (2, 2));
        assert_eq!((e[2].eax, e[2].ebx), (2, 4));
        assert_eq!(e[3].ecx & 0xff, 3);
    }

    #[test]
    fn pae_nx_and_long_mode_pass_through_for_32_bit_pae_kernels() {
        // A 686-pae kernel needs PAE (leaf 1 EDX bit 6) and uses NX (0x8000_0001 EDX
        // bit 20); per-vCPU specialisation must keep what KVM supports.
        let entries = [
            kvm_cpuid_entry2 { function: 1, edx: 1 << 6 | 1 << 8 | 1 << 15, ..Default::default() },
            kvm_cpuid_entry2 { function: 0x8000_0001, edx: 1 << 20 | 1 << 29, ..Default::default() },
        ];
        let base = CpuId::from_entries(&entries).unwrap();
        for cpus in [1, 2] {
            let c = vcpu_cpuid(&base, 0, cpus);
            let e = c.as_slice();
            assert_eq!(e[0].edx & (1 << 6 | 1 << 8 | 1 << 15), 1 << 6 | 1 << 8 | 1 << 15, "PAE, CX8, CMOV");
            assert_eq!(e[1].edx, 1 << 20 | 1 << 29, "NX, LM");
        }
    }

    #[test]
    fn id_bits_rounds_up() {
        assert_eq!([id_bits(1), id_bits(2), id_bits(3), id_bits(4), id_bits(5)], [0, 1, 2, 2, 3]);
    }
}

/// Feature registers a guest can depend on: (leaf, subleaf, register, bits ignored).
const FEATURE_REGISTERS: &[(u32, u32, usize, u32)] = &[
    // Leaf 1 ECX without OSXSAVE (mirrors CR4) and the hypervisor bit tern sets itself.
    (0x1, 0, 2, (1 << 27) | ECX_HYPERVISOR),
    // Leaf 1 EDX without HTT (topology, set per machine).
    (0x1, 0, 3, EDX_HTT),
    (0x7, 0, 1, 0),
    (0x7, 0, 2, 0),
    (0x7, 0, 3, 0),
    (0xd, 1, 0, 0),
    (0x8000_0001, 0, 2, 0),
    (0x8000_0001, 0, 3, 0),
];

/// Features in `guest` (a migration source's CPUID) that `supported` (this host's)
/// lacks, named as `leaf.subleaf:reg bits`.
pub fn incompatible_features(guest: &[migration::messages::CpuidEntry], supported: &[migration::messages::CpuidEntry]) -> Vec<String> {
    let find = |set: &[migration::messages::CpuidEntry], leaf: u32, sub: u32| {
        set.iter().find(|e| e.function == leaf && (e.index == sub || (sub == 0 && e.index == 0))).copied()
    };
    let mut missing = Vec::new();
    for &(leaf, sub, reg, ignored) in FEATURE_REGISTERS {
        let Some(g) = find(guest, leaf, sub) else { continue };
        let s = find(supported, leaf, sub);
        let pick = |e: migration::messages::CpuidEntry| [e.eax, e.ebx, e.ecx, e.edx][reg];
        let lacking = pick(g) & !ignored & !s.map(pick).unwrap_or(0);
        if lacking != 0 {
            missing.push(format!("cpuid {leaf:#x}.{sub}:{} bits {lacking:#x}", ["eax", "ebx", "ecx", "edx"][reg]));
        }
    }
    missing
}

#[cfg(test)]
mod compat_tests {
    use super::*;
    use migration::messages::CpuidEntry;

    fn e(function: u32, ecx: u32) -> CpuidEntry {
        CpuidEntry { function, index: 0, flags: 0, eax: 0, ebx: 0, ecx, edx: 0 }
    }

    #[test]
    fn missing_features_are_named_and_tern_bits_ignored() {
        let guest = [e(1, (1 << 5) | ECX_HYPERVISOR), e(0x8000_0001, 1)];
        assert!(incompatible_features(&guest, &[e(1, 1 << 5), e(0x8000_0001, 1)]).is_empty());
        let missing = incompatible_features(&guest, &[e(1, 0), e(0x8000_0001, 1)]);
        assert_eq!(missing, vec!["cpuid 0x1.0:ecx bits 0x20".to_string()]);
    }
}
