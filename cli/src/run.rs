//! `tern run`: build a VM from flags, boot the kernel, serve the console, exit with
//! the guest.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use kvm_ioctls::Kvm;
use devices::virtio::block::{Block, BlockConfig};
use devices::virtio::VirtioDevice;
use vmm::boot::{kernel, BootSource};
use vmm::host_check::{host_kvm, HostKvm, EMULATED_KVM_MESSAGE};
use vmm::{Boot, Machine, MachineConfig, MachineExit};

use crate::console;
use crate::size::parse_size;

/// Command line used when none is given.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0";

/// Where the guest's serial console goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SerialArg {
    /// The terminal (raw mode when stdin is a TTY).
    Stdio,
    /// Discarded.
    Null,
    /// Written to a file (truncated).
    File(PathBuf),
}

impl FromStr for SerialArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "stdio" => Ok(SerialArg::Stdio),
            "null" => Ok(SerialArg::Null),
            _ => match s.strip_prefix("file=") {
                Some(p) if !p.is_empty() => Ok(SerialArg::File(PathBuf::from(p))),
                _ => Err(format!("`{s}` is not a serial destination (stdio, null, file=PATH)")),
            },
        }
    }
}

/// Flags of `tern run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Kernel image: uncompressed ELF vmlinux (PVH entry used when present) or bzImage.
    #[arg(long, value_name = "PATH")]
    pub kernel: PathBuf,
    /// Initial ramdisk (initramfs) image.
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<PathBuf>,
    /// Kernel command line [default: console=ttyS0].
    #[arg(long, value_name = "STR")]
    pub cmdline: Option<String>,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub cpus: u8,
    /// Guest memory size, e.g. 512M or 2G.
    #[arg(long, default_value = "512M", value_name = "SIZE", value_parser = parse_size)]
    pub memory: u64,
    /// Serial console: stdio, null, or file=PATH.
    #[arg(long, default_value = "stdio", value_name = "DEST")]
    pub serial: SerialArg,
    /// Attach a raw disk image as virtio-blk: path=FILE[,readonly=on][,serial=ID]
    /// (repeatable; the first is /dev/vda in the guest).
    #[arg(long = "disk", value_name = "path=FILE[,readonly=on][,serial=ID]")]
    pub disks: Vec<BlockConfig>,
    /// Serve the control API (JSON over this Unix socket; see README).
    #[arg(long, value_name = "PATH")]
    pub api_socket: Option<PathBuf>,
    /// Run even where /dev/kvm is software-emulated (kvm_pvm) and Linux cannot boot.
    #[arg(long)]
    pub allow_emulated_kvm: bool,
}

fn check_readable_file(path: &Path, what: &str) -> Result<()> {
    let meta = std::fs::metadata(path).with_context(|| format!("{what} {}", path.display()))?;
    if !meta.is_file() {
        bail!("{what} {} is not a regular file", path.display());
    }
    File::open(path).with_context(|| format!("{what} {}", path.display()))?;
    Ok(())
}

/// Checks flags and files before touching KVM, so bad input fails fast and clearly.
fn validate(args: &RunArgs) -> Result<()> {
    check_readable_file(&args.kernel, "kernel")?;
    let mut file = File::open(&args.kernel).with_context(|| format!("kernel {}", args.kernel.display()))?;
    kernel::detect_format(&mut file, &args.kernel)?;
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

/// Physical RAM of the host in bytes (0 if unknown).
fn host_memory_bytes() -> u64 {
    // SAFETY: sysconf only reads system configuration values.
    let (pages, page_size) = unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
    if pages > 0 && page_size > 0 { pages as u64 * page_size as u64 } else { 0 }
}

/// Opens (and locks) every disk image; errors name the disk.
fn open_disks(configs: &[BlockConfig]) -> Result<Vec<Box<dyn VirtioDevice>>> {
    let mut seen = Vec::new();
    let mut disks: Vec<Box<dyn VirtioDevice>> = Vec::new();
    for config in configs {
        let canonical = std::fs::canonicalize(&config.path).unwrap_or_else(|_| config.path.clone());
        if seen.contains(&canonical) {
            bail!("disk {} is given more than once", config.path.display());
        }
        seen.push(canonical);
        disks.push(Box::new(Block::new(config.clone())?));
    }
    Ok(disks)
}

fn serial_output(arg: &SerialArg) -> Result<Box<dyn std::io::Write + Send>> {
    Ok(match arg {
        SerialArg::Stdio => Box::new(console::RawStdout),
        SerialArg::Null => Box::new(std::io::sink()),
        SerialArg::File(path) => Box::new(
            File::create(path).with_context(|| format!("cannot create serial output file {}", path.display()))?,
        ),
    })
}

fn open_kvm() -> Result<Kvm> {
    Kvm::new().map_err(|e| {
        let hint = match e.errno() {
            libc::ENOENT => " (no /dev/kvm: is the kvm module loaded?)",
            libc::EACCES | libc::EPERM => " (permission denied: add yourself to the kvm group or run as root)",
            _ => "",
        };
        anyhow::anyhow!("cannot open /dev/kvm: {e}{hint}")
    })
}

/// Runs `tern run`.
pub fn run(args: RunArgs) -> Result<ExitCode> {
    let started = Instant::now();
    validate(&args)?;
    let virtio_devices = open_disks(&args.disks)?;
    if host_kvm() == HostKvm::Emulated && !args.allow_emulated_kvm {
        bail!("{EMULATED_KVM_MESSAGE}");
    }
    let kvm = open_kvm()?;
    let config = MachineConfig {
        cpus: args.cpus,
        memory: args.memory,
        boot: Boot::Linux(BootSource {
            kernel: args.kernel.clone(),
            initrd: args.initrd.clone(),
            cmdline: args.cmdline.clone().unwrap_or_else(|| DEFAULT_CMDLINE.to_string()),
        }),
        serial_output: serial_output(&args.serial)?,
        in_kernel_irqchip: true,
        track_dirty_pages: false,
        virtio_devices,
    };
    let mut machine = Machine::new(&kvm, config, started)?;

    let interactive = args.serial == SerialArg::Stdio && console::stdin_is_tty();
    let _raw_guard = if interactive {
        console::enter_raw_mode().context("cannot put the terminal in raw mode")?;
        Some(console::RawModeGuard)
    } else {
        None
    };
    if args.serial == SerialArg::Stdio {
        console::spawn_stdin_forwarder(machine.serial(), machine.event_sender(), interactive)
            .context("cannot start the console input thread")?;
    }
    let _api = match &args.api_socket {
        Some(path) => Some(vmm::api::serve(path, machine.event_sender())?),
        None => None,
    };
    machine.start()?;
    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "vCPUs started");
    let exit = machine.wait_for_exit(None);
    drop(_raw_guard);
    match exit {
        Some(MachineExit::PowerOff) => {
            eprintln!("tern: guest powered off after {} ms", started.elapsed().as_millis());
            Ok(ExitCode::SUCCESS)
        }
        Some(MachineExit::Reset { reason }) => {
            eprintln!("tern: guest reset ({reason}); exiting");
            Ok(ExitCode::SUCCESS)
        }
        Some(MachineExit::UserQuit) => {
            eprintln!("tern: quit from the console");
            Ok(ExitCode::SUCCESS)
        }
        Some(MachineExit::AllHalted) => {
            eprintln!("tern: all vCPUs halted");
            Ok(ExitCode::SUCCESS)
        }
        Some(MachineExit::VcpuFailed { vcpu, reason }) => bail!("vCPU {vcpu} stopped: {reason}"),
        None => bail!("the machine ended without a reason (event channel closed)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_args() {
        assert_eq!("stdio".parse(), Ok(SerialArg::Stdio));
        assert_eq!("null".parse(), Ok(SerialArg::Null));
        assert_eq!("file=/tmp/x".parse(), Ok(SerialArg::File("/tmp/x".into())));
        assert!("file=".parse::<SerialArg>().is_err());
        assert!("tty".parse::<SerialArg>().is_err());
    }
}
