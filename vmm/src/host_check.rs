//! Can this host's KVM run an unmodified Linux guest? Detects the software-emulated
//! `kvm_pvm` KVM (no vmx/svm), which runs tiny guests but not Linux.

use std::path::Path;

/// What kind of KVM this host offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostKvm {
    /// Hardware virtualization (vmx or svm) behind /dev/kvm.
    Hardware,
    /// kvm_pvm or no vmx/svm: Linux guests cannot boot here.
    Emulated,
}

/// Inspects /sys/module and /proc/cpuinfo.
pub fn host_kvm() -> HostKvm {
    let pvm = Path::new("/sys/module/kvm_pvm").exists();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    classify(pvm, &cpuinfo)
}

fn classify(pvm_loaded: bool, cpuinfo: &str) -> HostKvm {
    let has_hw = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    if pvm_loaded || !has_hw { HostKvm::Emulated } else { HostKvm::Hardware }
}

/// The message shown when a Linux guest is asked for on an emulated-KVM host.
pub const EMULATED_KVM_MESSAGE: &str = "this host's /dev/kvm is kvm_pvm (no vmx/svm in /proc/cpuinfo): it runs tiny test guests but cannot boot an unmodified Linux kernel. Run Linux guests through the nested rig (tests/rig/rig.py, see README.md), or pass --allow-emulated-kvm to try anyway";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert_eq!(classify(false, "flags\t: fpu vme svm sse\n"), HostKvm::Hardware);
        assert_eq!(classify(false, "flags\t: fpu vmx\n"), HostKvm::Hardware);
        assert_eq!(classify(true, "flags\t: fpu vmx\n"), HostKvm::Emulated);
        assert_eq!(classify(false, "flags\t: fpu sse\n"), HostKvm::Emulated);
    }
}
