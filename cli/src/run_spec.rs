//! What `tern run` runs: its flags over the VM definition (`--config`) over the
//! defaults, resolved into one [`RunSpec`], so a definition and flags take the same
//! path into the machine.
//!
//! How they combine:
//! - a single-valued flag given on the command line replaces the file's value
//!   (`--cpus`, `--memory`, `--serial`, `--api-socket`, `--name`, `--cmdline`,
//!   `--seccomp`, `--on-reboot`); `--allow-emulated-kvm` can only turn it on;
//! - any `--disk` on the command line replaces the file's whole disk list, any `--net`
//!   its whole NIC list (the file's are kept when the command line has none);
//! - the boot method is the command line's when it names one: `--kernel` replaces the
//!   file's `[boot]` kernel, initrd and disk-boot keys (its initrd is `--initrd`'s);
//!   `--boot-entry` or `--cmdline-append` make it a disk boot, dropping the file's
//!   kernel and initrd; otherwise the file's boot is used (`--initrd` alone replaces
//!   its initrd).
//!
//! Files the definition names (kernel, initrd, disk images, the TLS directory) are
//! checked to exist when they are used, with an error at their line in the file.

use std::path::PathBuf;

use anyhow::{bail, Result};
use devices::virtio::block::BlockConfig;
use devices::virtio::net::NetConfig;
use vmm::OnReboot;

use crate::definition::{Definition, Loaded};
use crate::device_args::{DiskArg, NetArg};
use crate::run::RunArgs;
use crate::session::SerialArg;

/// Default `--cpus`.
pub const DEFAULT_CPUS: u8 = 1;
/// Default `--memory`.
pub const DEFAULT_MEMORY: u64 = 512 << 20;

/// Everything `tern run` needs, flags and definition combined.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    pub name: Option<String>,
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub cmdline: Option<String>,
    pub boot_entry: Option<String>,
    pub cmdline_append: Option<String>,
    pub cpus: u8,
    pub memory: u64,
    /// `None`: the default (stdio; with a name, a console socket in its directory).
    pub serial: Option<SerialArg>,
    pub disks: Vec<DiskArg>,
    pub nets: Vec<NetArg>,
    pub api_socket: Option<PathBuf>,
    pub allow_emulated_kvm: bool,
    pub seccomp: tern_seccomp::Mode,
    pub on_reboot: OnReboot,
    /// The definition's `[migration] tls-dir`.
    pub migration_tls_dir: Option<PathBuf>,
}

impl RunSpec {
    /// The flags over `--config`'s definition (when given) over the defaults.
    pub fn resolve(args: RunArgs) -> Result<Self> {
        let Some(path) = &args.config else {
            return Self::merge(args, None);
        };
        let loaded = Loaded::load(path)?;
        Self::merge(args, Some(&loaded))
    }

    fn merge(args: RunArgs, file: Option<&Loaded>) -> Result<Self> {
        let empty = Definition::default();
        let def = file.map(|f| &f.def).unwrap_or(&empty);
        let boot = def.boot.as_ref().map(|b| b.get_ref());

        // The boot method: the command line's when it names one.
        let disk_boot_flags = args.boot_entry.is_some() || args.cmdline_append.is_some();
        let (kernel, initrd, boot_entry, cmdline_append) = if args.kernel.is_some() {
            (args.kernel, args.initrd, None, None)
        } else if disk_boot_flags {
            if args.initrd.is_some() {
                bail!("--initrd needs a kernel (--kernel), not a disk boot");
            }
            let entry = args
                .boot_entry
                .or_else(|| boot.and_then(|b| b.boot_entry.clone()));
            let append = args
                .cmdline_append
                .or_else(|| boot.and_then(|b| b.cmdline_append.clone()));
            (None, None, entry, append)
        } else {
            let (mut kernel, mut initrd) = (None, None);
            if let (Some(file), Some(b)) = (file, boot) {
                if let Some(k) = &b.kernel {
                    kernel = Some(file.existing(k, "boot.kernel", false)?);
                }
                if args.initrd.is_none() {
                    if let Some(i) = &b.initrd {
                        initrd = Some(file.existing(i, "boot.initrd", false)?);
                    }
                }
            }
            if args.initrd.is_some() {
                if kernel.is_none() {
                    bail!(
                        "--initrd needs a kernel (--kernel, or kernel in the definition's [boot])"
                    );
                }
                initrd = args.initrd;
            }
            (
                kernel,
                initrd,
                boot.and_then(|b| b.boot_entry.clone()),
                boot.and_then(|b| b.cmdline_append.clone()),
            )
        };

        let disks = match (args.disks.is_empty(), file) {
            (false, _) | (true, None) => args.disks,
            (true, Some(file)) => definition_disks(file)?,
        };
        let nets = if args.nets.is_empty() {
            definition_nets(def)
        } else {
            args.nets
        };
        let api_socket = args
            .api_socket
            .or_else(|| file.and_then(|f| def.api_socket.as_ref().map(|s| f.resolve(s.get_ref()))));
        let migration_tls_dir = match file {
            Some(file) => file.tls_dir()?,
            None => None,
        };
        Ok(Self {
            name: args.name.or_else(|| def.name.clone()),
            kernel,
            initrd,
            cmdline: args
                .cmdline
                .or_else(|| boot.and_then(|b| b.cmdline.clone())),
            boot_entry,
            cmdline_append,
            cpus: args.cpus.or(def.cpus).unwrap_or(DEFAULT_CPUS),
            memory: args.memory.or(def.memory).unwrap_or(DEFAULT_MEMORY),
            serial: args.serial.or_else(|| file.and_then(|f| f.serial())),
            disks,
            nets,
            api_socket,
            allow_emulated_kvm: args.allow_emulated_kvm || def.allow_emulated_kvm.unwrap_or(false),
            seccomp: args
                .seccomp
                .or(def.seccomp)
                .unwrap_or(tern_seccomp::Mode::On),
            on_reboot: args
                .on_reboot
                .or(def.on_reboot)
                .unwrap_or(OnReboot::Restart),
            migration_tls_dir,
        })
    }
}

/// The definition's `[[disk]]`s, each image checked to exist.
pub fn definition_disks(file: &Loaded) -> Result<Vec<DiskArg>> {
    file.def
        .disks
        .iter()
        .map(|d| {
            let path = file.existing(&d.path, "disk.path", false)?;
            Ok(DiskArg {
                config: BlockConfig {
                    path,
                    read_only: d.readonly,
                    serial: d.serial.clone(),
                },
                boot: d.boot,
            })
        })
        .collect()
}

/// The definition's `[[net]]`s.
pub fn definition_nets(def: &Definition) -> Vec<NetArg> {
    def.nets
        .iter()
        .map(|n| {
            let n = n.get_ref();
            match (&n.tap, &n.bridge) {
                (Some(tap), _) => NetArg::Tap(NetConfig {
                    tap: tap.clone(),
                    mac: n.mac,
                }),
                (None, Some(bridge)) => NetArg::Bridge {
                    bridge: bridge.clone(),
                    mac: n.mac,
                },
                // Refused when the file was loaded.
                (None, None) => NetArg::Bridge {
                    bridge: String::new(),
                    mac: n.mac,
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::device_args::{parse_disk, parse_net};

    /// A directory with a definition and the files it names.
    fn fixture(name: &str, text: &str) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("tern-run-spec-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["vmlinux", "initrd", "root.img", "data.img", "other-kernel"] {
            std::fs::write(dir.join(f), b"x").unwrap();
        }
        let file = dir.join("vm.toml");
        std::fs::write(&file, text).unwrap();
        (dir, file)
    }

    fn args(config: &Path) -> RunArgs {
        RunArgs {
            config: Some(config.to_path_buf()),
            ..RunArgs::default()
        }
    }

    const FILE: &str = r#"
name = "vm1"
cpus = 2
memory = "1G"
on-reboot = "exit"
[boot]
kernel = "vmlinux"
initrd = "initrd"
cmdline = "console=ttyS0 quiet"
[[disk]]
path = "root.img"
serial = "root"
[[disk]]
path = "data.img"
readonly = true
[[net]]
tap = "tap9"
"#;

    #[test]
    fn flags_alone_take_the_defaults() {
        let spec = RunSpec::resolve(RunArgs {
            kernel: Some("k".into()),
            ..RunArgs::default()
        })
        .unwrap();
        assert_eq!(
            (spec.cpus, spec.memory, spec.serial.clone()),
            (1, 512 << 20, None)
        );
        assert_eq!(
            (spec.seccomp, spec.on_reboot, spec.name.clone()),
            (tern_seccomp::Mode::On, OnReboot::Restart, None)
        );
        assert!(spec.disks.is_empty() && spec.nets.is_empty() && spec.api_socket.is_none());
    }

    #[test]
    fn the_file_gives_values_with_paths_relative_to_it() {
        let (dir, file) = fixture("file", FILE);
        let spec = RunSpec::resolve(args(&file)).unwrap();
        assert_eq!(spec.name.as_deref(), Some("vm1"));
        assert_eq!(
            (spec.cpus, spec.memory, spec.on_reboot),
            (2, 1 << 30, OnReboot::Exit)
        );
        assert_eq!(spec.kernel, Some(dir.join("vmlinux")));
        assert_eq!(spec.initrd, Some(dir.join("initrd")));
        assert_eq!(spec.cmdline.as_deref(), Some("console=ttyS0 quiet"));
        assert_eq!(spec.disks.len(), 2);
        assert_eq!(
            spec.disks[0].config,
            BlockConfig {
                path: dir.join("root.img"),
                read_only: false,
                serial: Some("root".into())
            }
        );
        assert!(spec.disks[1].config.read_only);
        assert_eq!(spec.nets, vec![NetArg::Tap(NetConfig::new("tap9"))]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn flags_override_the_file() {
        let (dir, file) = fixture("override", FILE);
        let mut a = args(&file);
        a.cpus = Some(4);
        a.memory = Some(256 << 20);
        a.name = Some("other".into());
        a.on_reboot = Some(OnReboot::Restart);
        a.cmdline = Some("console=hvc0".into());
        a.disks = vec![parse_disk("path=/x.img").unwrap()];
        a.nets = vec![
            parse_net("bridge=br0").unwrap(),
            parse_net("tap=t1").unwrap(),
        ];
        let spec = RunSpec::resolve(a).unwrap();
        assert_eq!(
            (spec.cpus, spec.memory, spec.name.as_deref()),
            (4, 256 << 20, Some("other"))
        );
        assert_eq!(spec.on_reboot, OnReboot::Restart);
        assert_eq!(spec.cmdline.as_deref(), Some("console=hvc0"));
        // Any --disk replaces the file's disk list; any --net its NIC list.
        assert_eq!(spec.disks, vec![parse_disk("path=/x.img").unwrap()]);
        assert_eq!(
            spec.nets,
            vec![
                NetArg::Bridge {
                    bridge: "br0".into(),
                    mac: None
                },
                NetArg::Tap(NetConfig::new("t1"))
            ]
        );
        // Still the file's kernel and initrd.
        assert_eq!(
            (spec.kernel, spec.initrd),
            (Some(dir.join("vmlinux")), Some(dir.join("initrd")))
        );

        // --kernel replaces the file's kernel and initrd.
        let mut a = args(&file);
        a.kernel = Some(dir.join("other-kernel"));
        let spec = RunSpec::resolve(a).unwrap();
        assert_eq!(
            (spec.kernel, spec.initrd),
            (Some(dir.join("other-kernel")), None)
        );
        // --initrd alone replaces the file's initrd.
        let mut a = args(&file);
        a.initrd = Some("/new-initrd".into());
        let spec = RunSpec::resolve(a).unwrap();
        assert_eq!(
            (spec.kernel, spec.initrd),
            (Some(dir.join("vmlinux")), Some("/new-initrd".into()))
        );
        // --boot-entry makes it a disk boot.
        let mut a = args(&file);
        a.boot_entry = Some("1".into());
        let spec = RunSpec::resolve(a).unwrap();
        assert_eq!(
            (spec.kernel, spec.initrd, spec.boot_entry.as_deref()),
            (None, None, Some("1"))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_named_file_is_an_error_at_its_line_unless_overridden() {
        let (dir, file) = fixture("missing", FILE);
        std::fs::remove_file(dir.join("data.img")).unwrap();
        let e = RunSpec::resolve(args(&file)).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{}:14:8: disk.path: {}: No such file or directory (os error 2)",
                file.display(),
                dir.join("data.img").display()
            )
        );
        // The command line's disks replace the file's: no error then.
        let mut a = args(&file);
        a.disks = vec![parse_disk("path=/x.img").unwrap()];
        assert!(RunSpec::resolve(a).is_ok());
        std::fs::remove_file(dir.join("vmlinux")).unwrap();
        let mut a = args(&file);
        a.disks = vec![parse_disk("path=/x.img").unwrap()];
        let e = RunSpec::resolve(a).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}:7:10: boot.kernel: ", file.display())),
            "{e}"
        );
        let mut a = args(&file);
        a.disks = vec![parse_disk("path=/x.img").unwrap()];
        a.kernel = Some("/k".into());
        assert!(RunSpec::resolve(a).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_initrd_without_a_kernel_is_refused() {
        let e = RunSpec::resolve(RunArgs {
            initrd: Some("i".into()),
            ..RunArgs::default()
        })
        .unwrap_err();
        assert!(e.to_string().starts_with("--initrd needs a kernel"), "{e}");
        let e = RunSpec::resolve(RunArgs {
            initrd: Some("i".into()),
            boot_entry: Some("1".into()),
            ..RunArgs::default()
        })
        .unwrap_err();
        assert!(e.to_string().starts_with("--initrd needs a kernel"), "{e}");
    }
}
