//! The VM on this side of `tern receive` and `tern restore`: their flags over a VM
//! definition (`--config FILE`, or for `tern receive` `--defs DIR` with the file the
//! source's hello names, as `tern listen` runs it): the disks, NICs, serial console,
//! control socket, seccomp mode and name of the VM here, the largest guest accepted,
//! and the definition's migration TLS directory. The boot keys of a definition are not
//! used (a received or restored guest is not booted), and its files (a kernel) need
//! not exist here.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::Args;

use crate::definition::Loaded;
use crate::device_args::{self, DiskArg, NetArg};
use crate::run_spec::{definition_disks, definition_nets};
use crate::runtime_dir::{self, VmDir};
use crate::session::SerialArg;
use crate::size::parse_size;

/// The flags `tern receive` and `tern restore` share: the VM on this side.
#[derive(Args, Debug)]
pub struct LocalArgs {
    /// VM definition (TOML, as `tern run --config`): its name, disks, NICs, serial,
    /// API socket, seccomp, `[migration] tls-dir` (receive: when --tls-dir is not
    /// given) and, as limits, its memory and cpus; flags given here override it. Its
    /// boot keys are not used. restore: a snapshot's disk copy goes over the
    /// definition's image only with --overwrite-disks.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The VM's name: sockets in its runtime directory, as `tern run --name`; refused
    /// if a VM of that name runs here.
    #[arg(long, value_name = "NAME", value_parser = crate::vm_name::parse_name)]
    pub name: Option<String>,
    /// The VM's disk images, in order: path=FILE[,readonly=on][,serial=ID]. receive:
    /// the source's images (shared storage), locked when the source hands them over.
    /// restore: one per snapshot disk: for a disk the snapshot copied, a new file that
    /// becomes a copy of it (default: DIR.restore-PID-diskN.img beside DIR; an existing
    /// file only with --overwrite-disks); for a disk recorded with --no-disks, the
    /// image to run on, of the recorded size.
    #[arg(long = "disk", value_name = "path=FILE[,readonly=on][,serial=ID]",
          value_parser = device_args::parse_disk)]
    pub disks: Vec<DiskArg>,
    /// Attach a virtio-net interface: tap=NAME (an existing TAP, or created) or
    /// bridge=BRIDGE (a new TAP on that bridge, removed at exit), [,mac=MAC] (repeatable;
    /// restore: the snapshot's MAC unless --clone).
    #[arg(long = "net", value_name = "tap=NAME|bridge=BR[,mac=MAC]", value_parser = device_args::parse_net)]
    pub nets: Vec<NetArg>,
    /// Serial console here: stdio, null, file=PATH, or socket=PATH (see `tern run`)
    /// [default: stdio; with a name: socket in the runtime directory].
    #[arg(long, value_name = "DEST")]
    pub serial: Option<SerialArg>,
    /// Refuse a guest with more memory than SIZE (always refused: more than this
    /// host's RAM).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub memory: Option<u64>,
    /// Refuse a guest with more vCPUs than N (always refused: more than KVM's limit).
    #[arg(long, value_name = "N")]
    pub cpus: Option<u8>,
    /// Serve the control API once the guest runs here.
    #[arg(long, value_name = "PATH")]
    pub api_socket: Option<PathBuf>,
    /// Run even where /dev/kvm is software-emulated (kvm_pvm).
    #[arg(long)]
    pub allow_emulated_kvm: bool,
    /// Syscall filters per thread: on (a call off its list kills tern), log (the
    /// kernel logs it instead), off [default: on].
    #[arg(long, value_name = "on|log|off")]
    pub seccomp: Option<tern_seccomp::Mode>,
}

/// The definition file of VM `name` in a definitions directory.
pub fn definition_path(defs: &Path, name: &str) -> PathBuf {
    defs.join(format!("{name}.toml"))
}

/// Everything the receiving (or restoring) side needs, flags and definition combined.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceiveSpec {
    pub name: Option<String>,
    pub disks: Vec<DiskArg>,
    /// Whether `disks` are the definition's (no `--disk` was given).
    pub disks_from_definition: bool,
    pub nets: Vec<NetArg>,
    /// `None`: the default (stdio; with a name, a console socket in its directory).
    pub serial: Option<SerialArg>,
    pub api_socket: Option<PathBuf>,
    /// The largest guest memory accepted (`--memory`, else the definition's `memory`).
    pub memory: Option<u64>,
    /// The most vCPUs accepted (`--cpus`, else the definition's `cpus`).
    pub cpus: Option<u8>,
    pub allow_emulated_kvm: bool,
    /// The definition's `seccomp` (the flag wins; `None`: neither).
    pub seccomp: Option<tern_seccomp::Mode>,
    /// The definition's `[migration] tls-dir`.
    pub tls_dir: Option<PathBuf>,
}

impl ReceiveSpec {
    /// The flags over `file` (when given).
    pub fn resolve(args: &LocalArgs, file: Option<&Loaded>) -> Result<Self> {
        let def = file.map(|f| &f.def);
        let disks = match (args.disks.is_empty(), file) {
            (true, Some(file)) => definition_disks(file)?,
            _ => args.disks.clone(),
        };
        let nets = match (args.nets.is_empty(), def) {
            (true, Some(def)) => definition_nets(def),
            _ => args.nets.clone(),
        };
        let api_socket = args.api_socket.clone().or_else(|| {
            file.and_then(|f| f.def.api_socket.as_ref().map(|s| f.resolve(s.get_ref())))
        });
        Ok(Self {
            name: args
                .name
                .clone()
                .or_else(|| def.and_then(|d| d.name.clone())),
            disks_from_definition: args.disks.is_empty()
                && file.is_some_and(|f| !f.def.disks.is_empty()),
            disks,
            nets,
            serial: args
                .serial
                .clone()
                .or_else(|| file.and_then(|f| f.serial())),
            api_socket,
            memory: args.memory.or_else(|| def.and_then(|d| d.memory)),
            cpus: args.cpus.or_else(|| def.and_then(|d| d.cpus)),
            allow_emulated_kvm: args.allow_emulated_kvm
                || def.and_then(|d| d.allow_emulated_kvm).unwrap_or(false),
            seccomp: args.seccomp.or_else(|| def.and_then(|d| d.seccomp)),
            tls_dir: match file {
                Some(file) => file.tls_dir()?,
                None => None,
            },
        })
    }

    /// For a named VM: claims its runtime directory (refused if the VM runs here
    /// already), puts its API socket (and, unless the serial says otherwise, its
    /// console socket) there, and records its migration TLS directory for `tern
    /// migrate NAME`.
    pub fn claim_name(&mut self) -> Result<Option<VmDir>> {
        let Some(name) = self.name.clone() else {
            return Ok(None);
        };
        let dir = runtime_dir::claim(&runtime_dir::base()?, &name)?;
        if let Some(path) = &self.api_socket {
            bail!(
                "VM {name} has its API socket at {}; --api-socket {} cannot be given with a name",
                dir.api_socket().display(),
                path.display()
            );
        }
        self.api_socket = Some(dir.api_socket());
        if self.serial.is_none() {
            self.serial = Some(SerialArg::Socket(dir.console_socket()));
        }
        dir.record_tls_dir(self.tls_dir.as_deref())?;
        Ok(Some(dir))
    }
}

/// The definition of the VM a source names, from a definitions directory: missing,
/// unreadable, or defining another name is one line for the source.
pub fn load_named(defs: &Path, name: &str) -> Result<Loaded> {
    crate::vm_name::validate_name(name)?;
    let path = definition_path(defs, name);
    if !path.exists() {
        bail!(
            "no VM named {name} is defined on this host (no {})",
            path.display()
        );
    }
    let loaded = Loaded::load(&path)?;
    if let Some(other) = loaded.def.name.as_deref().filter(|n| *n != name) {
        bail!(
            "{} defines VM {other}, not {name}; refusing it",
            path.display()
        );
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: LocalArgs,
    }

    fn args(flags: &[&str]) -> LocalArgs {
        let mut argv = vec!["receive"];
        argv.extend_from_slice(flags);
        Cli::parse_from(argv).args
    }

    fn fixture(name: &str, text: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("tern-receive-spec-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("tls")).unwrap();
        std::fs::write(dir.join("root.img"), b"x").unwrap();
        for f in crate::definition::TLS_FILES {
            std::fs::write(dir.join("tls").join(f), b"x").unwrap();
        }
        std::fs::write(dir.join(format!("{name}.toml")), text).unwrap();
        dir
    }

    #[test]
    fn the_definition_gives_devices_limits_and_tls_and_flags_win() {
        let text =
            "name = \"web1\"\ncpus = 2\nmemory = \"1G\"\nserial = \"null\"\nseccomp = \"log\"\n\
                    [boot]\nkernel = \"/nonexistent/vmlinux\"\n[[disk]]\npath = \"root.img\"\n\
                    [[net]]\ntap = \"tap7\"\n[migration]\ntls-dir = \"tls\"\n";
        let dir = fixture("web1", text);
        let loaded = load_named(&dir, "web1").unwrap();
        // The kernel the definition boots need not exist on the receiving host.
        let spec = ReceiveSpec::resolve(&args(&[]), Some(&loaded)).unwrap();
        assert_eq!(spec.name.as_deref(), Some("web1"));
        assert_eq!(spec.disks.len(), 1);
        assert_eq!(spec.disks[0].config.path, dir.join("root.img"));
        assert!(spec.disks_from_definition);
        assert_eq!(spec.nets.len(), 1);
        assert_eq!((spec.memory, spec.cpus), (Some(1 << 30), Some(2)));
        assert_eq!(spec.serial, Some(SerialArg::Null));
        assert_eq!(spec.seccomp, Some(tern_seccomp::Mode::Log));
        assert_eq!(spec.tls_dir, Some(dir.join("tls")));
        let spec = ReceiveSpec::resolve(
            &args(&[
                "--memory",
                "2G",
                "--serial",
                "stdio",
                "--name",
                "other",
                "--disk",
                "path=/x.img",
            ]),
            Some(&loaded),
        )
        .unwrap();
        assert_eq!(spec.memory, Some(2 << 30));
        assert!(!spec.disks_from_definition);
        assert_eq!(spec.serial, Some(SerialArg::Stdio));
        assert_eq!(spec.name.as_deref(), Some("other"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unknown_bad_and_mismatched_names_are_one_line() {
        let dir = fixture("db1", "name = \"db2\"\n");
        let e = load_named(&dir, "nosuch").unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "no VM named nosuch is defined on this host (no {})",
                dir.join("nosuch.toml").display()
            )
        );
        let e = load_named(&dir, "../etc/passwd").unwrap_err().to_string();
        assert!(
            e.starts_with("VM name '../etc/passwd' may hold only"),
            "{e}"
        );
        let e = load_named(&dir, "db1").unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{} defines VM db2, not db1; refusing it",
                dir.join("db1.toml").display()
            )
        );
        std::fs::write(dir.join("db1.toml"), "cpus = \"two\"\n").unwrap();
        let e = load_named(&dir, "db1").unwrap_err().to_string();
        assert!(e.contains("db1.toml:1:8: cpus: invalid type"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
