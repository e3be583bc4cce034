//! `tern run`: build a VM from flags, boot the kernel, serve the console, exit with
//! the guest.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use devices::virtio::block::BlockConfig;
use vmm::boot::{kernel, BootImage, BootProvider, BootSource};
use vmm::host_check::{host_kvm, HostKvm, EMULATED_KVM_MESSAGE};
use vmm::{Boot, Machine, MachineConfig, OnReboot};

use crate::bridge_tap;
use crate::device_args;
use crate::disk_boot::{self, DiskBoot};
use crate::next_boot;
use migration::messages::BootRecord;
use crate::guest_devices;
use crate::run_spec::RunSpec;
use crate::runtime_dir;
use crate::session::{self, SerialArg};
use crate::size::parse_size;

/// Command line used when none is given.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0";

/// Flags of `tern run`. Options without a value here take the definition's
/// (`--config`), else the default named in their help; see `run_spec.rs` for how the
/// two combine.
#[derive(Args, Debug, Default)]
pub struct RunArgs {
    /// VM definition (TOML): every key is the flag of the same name; flags given here
    /// override its values, and any --disk (or --net) replaces its disk (or NIC) list.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The VM's name: its API and console sockets go under the runtime directory
    /// (/run/tern/NAME/ as root, else $XDG_RUNTIME_DIR/tern/NAME/), where `tern list`
    /// and `tern info NAME` find it. Letters, digits, '.', '_', '-'; at most 64 bytes.
    #[arg(long, value_name = "NAME", value_parser = crate::vm_name::parse_name)]
    pub name: Option<String>,
    /// Kernel image: uncompressed ELF vmlinux (PVH entry used when present) or bzImage.
    /// Without it, tern boots the disk marked boot=on (or the first --disk) by its own
    /// boot configuration: grub.cfg, BLS entries or Debian's /vmlinuz links (see
    /// `tern boot-entries`); the image is read again at every guest reboot.
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// Initial ramdisk (initramfs) image (with a kernel).
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<PathBuf>,
    /// Kernel command line [default: console=ttyS0; for a disk boot: the entry's].
    #[arg(long, value_name = "STR")]
    pub cmdline: Option<String>,
    /// Disk boot: the entry to boot, by index (as `tern boot-entries` numbers them),
    /// title or id [default: the boot configuration's default].
    #[arg(long, value_name = "N|TITLE", conflicts_with = "kernel")]
    pub boot_entry: Option<String>,
    /// Disk boot: words added to the entry's command line. When the result names no
    /// console, tern adds console=ttyS0.
    #[arg(long, value_name = "STR", conflicts_with = "kernel")]
    pub cmdline_append: Option<String>,
    /// Number of vCPUs [default: 1].
    #[arg(long, value_name = "N")]
    pub cpus: Option<u8>,
    /// Guest memory size, e.g. 512M or 2G [default: 512M].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub memory: Option<u64>,
    /// Serial console: stdio, null, file=PATH, or socket=PATH (attach with
    /// `tern console PATH`; recent output is kept for whoever attaches) [default:
    /// stdio; with a name: socket in the runtime directory].
    #[arg(long, value_name = "DEST")]
    pub serial: Option<SerialArg>,
    /// Attach a raw disk image as virtio-blk: path=FILE[,readonly=on][,serial=ID][,boot=on]
    /// (repeatable; the first is /dev/vda in the guest; boot=on: the disk to boot from
    /// when no --kernel is given, else the first).
    #[arg(long = "disk", value_name = "path=FILE[,readonly=on][,serial=ID][,boot=on]",
          value_parser = device_args::parse_disk)]
    pub disks: Vec<device_args::DiskArg>,
    /// Attach a virtio-net interface: tap=NAME (an existing TAP is used, a missing one
    /// created when permitted) or bridge=BRIDGE (a new TAP on that bridge, removed at
    /// exit), with [,mac=AA:BB:CC:DD:EE:FF] (repeatable).
    #[arg(long = "net", value_name = "tap=NAME|bridge=BR[,mac=MAC]", value_parser = device_args::parse_net)]
    pub nets: Vec<device_args::NetArg>,
    /// Serve the control API (JSON over this Unix socket; see README) [default: none;
    /// with a name: api.sock in the runtime directory].
    #[arg(long, value_name = "PATH")]
    pub api_socket: Option<PathBuf>,
    /// Run even where /dev/kvm is software-emulated (kvm_pvm) and Linux cannot boot.
    #[arg(long)]
    pub allow_emulated_kvm: bool,
    /// Syscall filters per thread: on (a call off its list kills tern), log (the
    /// kernel logs it instead), off [default: on].
    #[arg(long, value_name = "on|log|off")]
    pub seccomp: Option<tern_seccomp::Mode>,
    /// What a guest reboot (reset request or triple fault) does: restart boots the
    /// guest again in this process (same disks, TAPs, console and API socket; the
    /// kernel and initrd are read again), exit ends tern (status 0 for a requested
    /// reset, 3 for a triple fault) [default: restart].
    #[arg(long, value_name = "restart|exit", value_parser = parse_on_reboot)]
    pub on_reboot: Option<OnReboot>,
    /// Check the flags and definition (keys, values, the files they name, the kernel's
    /// format), print the VM's name (an empty line without one) and exit, starting
    /// nothing.
    #[arg(long)]
    pub check: bool,
}

/// `--on-reboot` values.
pub fn parse_on_reboot(s: &str) -> Result<OnReboot, String> {
    match s {
        "restart" => Ok(OnReboot::Restart),
        "exit" => Ok(OnReboot::Exit),
        _ => Err(format!("`{s}` is not a reboot action (restart, exit)")),
    }
}

/// The boot source of `tern run`: --kernel and --initrd opened again at every boot,
/// so a kernel replaced on disk boots at the next reboot, as on a real machine.
pub(crate) fn boot_provider(kernel: PathBuf, initrd: Option<PathBuf>, cmdline: String) -> BootProvider {
    Arc::new(move || {
        let open = |path: &Path, what: &str| BootImage::open(path).map_err(|e| format!("cannot open {what} {}: {e}", path.display()));
        Ok(BootSource {
            kernel: open(&kernel, "kernel")?,
            initrd: initrd.as_deref().map(|path| open(path, "initrd")).transpose()?,
            cmdline: cmdline.clone(),
        })
    })
}

pub(crate) fn check_readable_file(path: &Path, what: &str) -> Result<()> {
    let meta = std::fs::metadata(path).with_context(|| format!("{what} {}", path.display()))?;
    if !meta.is_file() {
        bail!("{what} {} is not a regular file", path.display());
    }
    File::open(path).with_context(|| format!("{what} {}", path.display()))?;
    Ok(())
}

/// Checks that `kernel` is a readable kernel image of a format tern boots.
pub(crate) fn check_kernel(kernel: &Path) -> Result<()> {
    check_readable_file(kernel, "kernel")?;
    let mut file = File::open(kernel).with_context(|| format!("kernel {}", kernel.display()))?;
    kernel::detect_format(&mut file, &kernel.display().to_string())?;
    Ok(())
}

/// Checks flags and files before touching KVM, so bad input fails fast and clearly.
fn validate(args: &RunSpec) -> Result<()> {
    if let Some(kernel) = &args.kernel {
        check_kernel(kernel)?;
    }
    if let Some(initrd) = &args.initrd {
        check_readable_file(initrd, "initrd")?;
    }
    if args.cpus == 0 {
        bail!("--cpus must be at least 1");
    }
    let host_ram = host_memory_bytes();
    if host_ram > 0 && args.memory > host_ram {
        bail!("--memory {} MiB is more than this host's {} MiB of RAM", args.memory >> 20, host_ram >> 20);
    }
    Ok(())
}

/// What this run boots: --kernel's files, or the boot disk's own configuration; and
/// its record for a migration destination or a snapshot (next_boot.rs).
fn boot(args: &RunSpec) -> Result<(BootProvider, Option<BootRecord>)> {
    let restart = args.on_reboot == OnReboot::Restart;
    if let Some(kernel) = &args.kernel {
        let cmdline = args.cmdline.clone().unwrap_or_else(|| DEFAULT_CMDLINE.to_string());
        let record = next_boot::record_of_run(Some((kernel, args.initrd.as_deref(), &cmdline)), None, restart)?;
        return Ok((boot_provider(kernel.clone(), args.initrd.clone(), cmdline), record));
    }
    let marked: Vec<usize> = args.disks.iter().enumerate().filter(|(_, d)| d.boot).map(|(i, _)| i).collect();
    let index = match (marked.as_slice(), args.disks.is_empty()) {
        ([one], _) => *one,
        ([], false) => 0,
        ([], true) => bail!("nothing to boot: give --kernel PATH, or a --disk whose image holds a boot configuration"),
        _ => bail!("more than one --disk is marked boot=on"),
    };
    let disk = &args.disks[index];
    let boot = DiskBoot {
        disk: disk.config.path.clone(),
        entry: args.boot_entry.clone(),
        cmdline: args.cmdline.clone(),
        append: args.cmdline_append.clone(),
    };
    let record = next_boot::record_of_run(None, Some((index, &boot)), restart)?;
    Ok((disk_boot::provider(boot), record))
}

/// For a named VM: claims its runtime directory and puts its API socket (and, unless
/// --serial says otherwise, its console socket) there.
fn claim_name(mut spec: RunSpec) -> Result<(RunSpec, Option<runtime_dir::VmDir>)> {
    let Some(name) = spec.name.clone() else { return Ok((spec, None)) };
    let dir = runtime_dir::claim(&runtime_dir::base()?, &name)?;
    if let Some(path) = &spec.api_socket {
        bail!("VM {name} has its API socket at {}; --api-socket {} cannot be given with a name", dir.api_socket().display(), path.display());
    }
    spec.api_socket = Some(dir.api_socket());
    if spec.serial.is_none() {
        spec.serial = Some(SerialArg::Socket(dir.console_socket()));
    }
    Ok((spec, Some(dir)))
}

/// Physical RAM of the host in bytes (0 if unknown).
pub fn host_memory_bytes() -> u64 {
    // SAFETY: sysconf only reads system configuration values.
    let (pages, page_size) = unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
    if pages > 0 && page_size > 0 { pages as u64 * page_size as u64 } else { 0 }
}

/// Runs `tern run`.
pub fn run(args: RunArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let check = args.check;
    let args = RunSpec::resolve(args)?;
    if check {
        validate(&args)?;
        boot(&args)?;
        println!("{}", args.name.as_deref().unwrap_or(""));
        return Ok(ExitCode::SUCCESS);
    }
    // A named VM claims its runtime directory first: a second one is refused at once.
    let (args, vm_dir) = claim_name(args)?;
    if let Some(dir) = &vm_dir {
        // `tern migrate NAME` uses the definition's TLS directory by default.
        dir.record_tls_dir(args.migration_tls_dir.as_deref())?;
    }
    tern_seccomp::set_mode(args.seccomp)?;
    validate(&args)?;
    let (boot, boot_record) = boot(&args)?;
    let disks: Vec<BlockConfig> = args.disks.iter().map(|d| d.config.clone()).collect();
    // Bridge TAPs are removed when tern ends, however it ends (bridge_tap.rs).
    let (nets, _bridge_taps) = bridge_tap::attach(&args.nets)?;
    let virtio_devices = guest_devices::open(&disks, &nets, guest_devices::Locking::Now)?;
    if host_kvm() == HostKvm::Emulated && !args.allow_emulated_kvm {
        bail!("{EMULATED_KVM_MESSAGE}");
    }
    let kvm = session::open_kvm()?;
    let serial_arg = args.serial.clone().unwrap_or(SerialArg::Stdio);
    let serial = session::serial_output(&serial_arg)?;
    let config = MachineConfig {
        cpus: args.cpus,
        memory: args.memory,
        boot: Boot::Linux(boot),
        serial_output: serial.output,
        in_kernel_irqchip: true,
        track_dirty_pages: false,
        virtio_devices,
    };
    let mut machine = Machine::new(&kvm, config, started)?;
    machine.set_boot_source(boot_record, None);
    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "machine built (kernel and initrd loaded)");

    let status = session::serve(&kvm, machine, &serial_arg, serial.socket, args.api_socket.as_deref(), started, false, session::Reboots::Do(args.on_reboot));
    drop(vm_dir);
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_reboot_values() {
        assert_eq!(parse_on_reboot("restart"), Ok(OnReboot::Restart));
        assert_eq!(parse_on_reboot("exit"), Ok(OnReboot::Exit));
        assert!(parse_on_reboot("reboot").unwrap_err().contains("restart, exit"));
    }

    #[test]
    fn the_provider_opens_the_files_again_at_every_call() {
        let dir = std::env::temp_dir().join(format!("tern-boot-provider-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let kernel = dir.join("kernel");
        std::fs::write(&kernel, b"first").unwrap();
        let provider = boot_provider(kernel.clone(), None, "console=ttyS0".into());
        let read = |source: BootSource| {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut &source.kernel.file, &mut text).unwrap();
            (source.kernel.label, text, source.cmdline)
        };
        assert_eq!(read(provider().unwrap()), (kernel.display().to_string(), "first".into(), "console=ttyS0".into()));
        // Replaced on disk (a new inode, as a package upgrade does): the next boot reads it.
        std::fs::write(dir.join("new"), b"second").unwrap();
        std::fs::rename(dir.join("new"), &kernel).unwrap();
        assert_eq!(read(provider().unwrap()).1, "second");
        std::fs::remove_file(&kernel).unwrap();
        let missing = provider().unwrap_err();
        assert!(missing.starts_with("cannot open kernel ") && missing.contains(&kernel.display().to_string()), "{missing}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

