//! What a destination accepts: the source's machine description checked against this
//! side's flags, its devices and the host, before anything is allocated for it.

use kvm_ioctls::Kvm;
use migration::messages::VmDescription;

use super::cpuid_to_wire;
use crate::cpuid::incompatible_features;

/// What the destination was told to accept (flags of `tern receive`).
#[derive(Clone, Debug, Default)]
pub struct Expectations {
    /// Largest guest memory accepted (`--memory`).
    pub memory: Option<u64>,
    /// Most vCPUs accepted (`--cpus`).
    pub cpus: Option<u8>,
}

/// Longest device description a source may send (real ones are under 200 bytes).
const MAX_DEVICE_DESCRIPTION: usize = 1024;
/// Most devices a source may describe (PCI slots on bus 0).
const MAX_DEVICES: usize = 32;
/// Most CPUID entries a source may send (KVM's own limit).
const MAX_CPUID_ENTRIES: usize = kvm_bindings::KVM_MAX_CPUID_ENTRIES;

/// This host's physical RAM in bytes (0 if the kernel will not say).
pub fn host_memory_bytes() -> u64 {
    // SAFETY: sysinfo fills the struct it is given and touches nothing else.
    let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid, writable sysinfo struct.
    if unsafe { libc::sysinfo(&mut info) } != 0 {
        return 0;
    }
    info.totalram.saturating_mul(u64::from(info.mem_unit))
}

/// The host and KVM limits a description is checked against.
#[derive(Clone, Copy, Debug)]
pub struct HostLimits {
    pub memory_bytes: u64,
    pub max_vcpus: usize,
}

impl HostLimits {
    /// This host's RAM and KVM's vCPU limit.
    pub fn of(kvm: &Kvm) -> Self {
        Self { memory_bytes: host_memory_bytes(), max_vcpus: kvm.get_max_vcpus() }
    }
}

/// Checks the shape of a description (sizes and counts) against the flags and the
/// host. Pure: the first thing done with a Config, before any allocation.
pub fn check_shape(desc: &VmDescription, expect: &Expectations, host: HostLimits, local_devices: &[String]) -> Result<(), String> {
    let mib = |b: u64| b >> 20;
    if desc.memory_bytes == 0 || desc.memory_bytes % migration::PAGE_SIZE as u64 != 0 {
        return Err(format!("the source's guest memory size {} bytes is not a whole number of pages", desc.memory_bytes));
    }
    if let Some(limit) = expect.memory {
        if desc.memory_bytes > limit {
            return Err(format!(
                "the source's guest has {} MiB of memory, more than --memory {} MiB allows",
                mib(desc.memory_bytes),
                mib(limit)
            ));
        }
    }
    if host.memory_bytes != 0 && desc.memory_bytes > host.memory_bytes {
        return Err(format!(
            "the source's guest has {} MiB of memory, more than this host's {} MiB of RAM",
            mib(desc.memory_bytes),
            mib(host.memory_bytes)
        ));
    }
    if desc.cpus == 0 {
        return Err("the source describes a guest with 0 vCPUs".into());
    }
    if let Some(limit) = expect.cpus {
        if desc.cpus > limit {
            return Err(format!("the source's guest has {} vCPUs, more than --cpus {limit} allows", desc.cpus));
        }
    }
    if usize::from(desc.cpus) > host.max_vcpus {
        return Err(format!("the source's guest has {} vCPUs, more than KVM's limit of {} here", desc.cpus, host.max_vcpus));
    }
    if desc.cpuid.len() > MAX_CPUID_ENTRIES {
        return Err(format!("the source sent {} CPUID entries (at most {MAX_CPUID_ENTRIES})", desc.cpuid.len()));
    }
    if desc.devices.len() > MAX_DEVICES || desc.devices.iter().any(|d| d.len() > MAX_DEVICE_DESCRIPTION) {
        return Err("the source's device list is malformed (too many or too long)".into());
    }
    if desc.devices != local_devices {
        return Err(format!("devices differ: source {:?}, destination {:?}", desc.devices, local_devices));
    }
    if let Some(boot) = &desc.boot {
        boot.check().map_err(|e| format!("the source's boot record is malformed: {e}"))?;
    }
    Ok(())
}

/// Checks a description in full: its shape, then the CPU features the guest uses
/// against what this host's KVM offers. Returns the reason for refusing.
pub fn check(desc: &VmDescription, expect: &Expectations, local_devices: &[String], kvm: &Kvm) -> Result<(), String> {
    check_shape(desc, expect, HostLimits::of(kvm), local_devices)?;
    let supported = crate::cpuid::supported_cpuid(kvm).map_err(|e| e.to_string())?;
    let missing = incompatible_features(&desc.cpuid, &cpuid_to_wire(supported.as_slice()));
    if !missing.is_empty() {
        return Err(format!("this host lacks CPU features the guest uses: {}", missing.join(", ")));
    }
    Ok(())
}

/// [`check`] against this host's KVM (opened for the purpose).
pub fn check_here(desc: &VmDescription, expect: &Expectations, local_devices: &[String]) -> Result<(), String> {
    let kvm = Kvm::new().map_err(|e| format!("cannot open /dev/kvm: {e}"))?;
    check(desc, expect, local_devices, &kvm)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(memory_bytes: u64, cpus: u8) -> VmDescription {
        VmDescription { version: migration::PROTOCOL_VERSION, memory_bytes, cpus, cpuid: Vec::new(), devices: vec!["virtio-blk".into()], boot: None }
    }

    const HOST: HostLimits = HostLimits { memory_bytes: 4 << 30, max_vcpus: 8 };

    fn shape(d: &VmDescription, e: &Expectations) -> Result<(), String> {
        check_shape(d, e, HOST, &["virtio-blk".to_string()])
    }

    #[test]
    fn a_fitting_description_passes() {
        assert_eq!(shape(&desc(512 << 20, 2), &Expectations { memory: Some(512 << 20), cpus: Some(2) }), Ok(()));
        assert_eq!(shape(&desc(256 << 20, 1), &Expectations { memory: Some(512 << 20), cpus: Some(2) }), Ok(()));
        assert_eq!(shape(&desc(256 << 20, 1), &Expectations::default()), Ok(()));
    }

    #[test]
    fn hostile_sizes_are_refused_with_the_reason() {
        let none = Expectations::default();
        let e = shape(&desc(768 << 20, 1), &Expectations { memory: Some(512 << 20), cpus: None }).unwrap_err();
        assert!(e.contains("768 MiB") && e.contains("--memory 512 MiB"), "{e}");
        let e = shape(&desc(64 << 40, 1), &none).unwrap_err();
        assert!(e.contains("more than this host's 4096 MiB"), "{e}");
        let e = shape(&desc(512 << 20, 254), &none).unwrap_err();
        assert!(e.contains("KVM's limit of 8"), "{e}");
        let e = shape(&desc(512 << 20, 4), &Expectations { memory: None, cpus: Some(2) }).unwrap_err();
        assert!(e.contains("--cpus 2"), "{e}");
        assert!(shape(&desc(0, 1), &none).unwrap_err().contains("pages"));
        assert!(shape(&desc(4097, 1), &none).unwrap_err().contains("pages"));
        assert!(shape(&desc(512 << 20, 0), &none).unwrap_err().contains("0 vCPUs"));
    }

    #[test]
    fn devices_must_match() {
        let mut d = desc(512 << 20, 1);
        d.devices = vec!["virtio-net".into()];
        assert!(shape(&d, &Expectations::default()).unwrap_err().contains("devices differ"));
        d.devices = vec!["x".repeat(5000)];
        assert!(shape(&d, &Expectations::default()).unwrap_err().contains("malformed"));
    }

    #[test]
    fn a_malformed_boot_record_is_refused() {
        use migration::messages::{BootRecord, BootSourceRecord};
        let mut d = desc(512 << 20, 1);
        let kernel = |path: &[u8]| BootRecord {
            source: BootSourceRecord::Kernel { kernel: path.to_vec(), initrd: None, cmdline: String::new() },
            restart: true,
        };
        d.boot = Some(kernel(b"/boot/vmlinuz"));
        assert_eq!(shape(&d, &Expectations::default()), Ok(()));
        d.boot = Some(kernel(b"vmlinuz"));
        assert!(shape(&d, &Expectations::default()).unwrap_err().contains("boot record is malformed"));
    }

    #[test]
    fn host_memory_is_known() {
        assert!(host_memory_bytes() > 0);
    }
}
