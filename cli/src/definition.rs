//! VM definitions: one TOML file per VM (`tern run --config FILE`). Every key is the
//! `tern run` flag of the same name; the file is parsed strictly (an unknown key, a
//! wrong type or a bad value is one error naming the file, line, column and key), and
//! relative paths in it are relative to the file's directory.
//!
//! ```toml
//! name = "web1"
//! cpus = 2
//! memory = "1G"
//! serial = "socket=console.sock"
//! [boot]
//! kernel = "vmlinux"
//! cmdline = "console=ttyS0 root=/dev/vda"
//! [[disk]]
//! path = "web1.img"
//! [[net]]
//! bridge = "br0"
//! ```

use std::fmt::Display;
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use devices::virtio::block::validate_serial;
use devices::virtio::net::{parse_mac, validate_tap_name};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use toml::Spanned;
use vmm::OnReboot;

use crate::device_args::validate_bridge_name;
use crate::session::SerialArg;
use crate::size::parse_size;
use crate::vm_name::validate_name;

/// A definition larger than this is refused before it is read.
pub const MAX_DEFINITION_BYTES: u64 = 1 << 20;

/// Why a definition could not be used: every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    /// The file could not be read.
    #[error("cannot read VM definition {path}: {source}")]
    Read {
        /// The definition.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_DEFINITION_BYTES`].
    #[error("VM definition {path} is {len} bytes, at most {MAX_DEFINITION_BYTES} allowed")]
    TooLarge {
        /// The definition.
        path: PathBuf,
        /// Its size.
        len: u64,
    },
    /// A syntax error, unknown key, wrong type, bad value, or a file it names that
    /// cannot be used: at a place in the file.
    #[error("{path}:{line}:{column}: {key_part}{message}", key_part = key.as_deref().map(|k| format!("{k}: ")).unwrap_or_default())]
    At {
        /// The definition.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The key, with its table (`boot.kernel`, `disk.readonly`), where known.
        key: Option<String>,
        /// What is wrong.
        message: String,
    },
}

/// A definition as written: every value optional (flags and defaults fill the rest).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Definition {
    /// `--name`.
    #[serde(default, deserialize_with = "checked_name")]
    pub name: Option<String>,
    /// `--kernel`, `--initrd`, `--cmdline`, `--boot-entry`, `--cmdline-append`.
    #[serde(default)]
    pub boot: Option<Spanned<BootSection>>,
    /// `--cpus`.
    pub cpus: Option<u8>,
    /// `--memory`: a size such as "512M".
    #[serde(default, deserialize_with = "size")]
    pub memory: Option<u64>,
    /// `--disk`, one `[[disk]]` table each.
    #[serde(default, rename = "disk")]
    pub disks: Vec<DiskEntry>,
    /// `--net`, one `[[net]]` table each.
    #[serde(default, rename = "net")]
    pub nets: Vec<Spanned<NetEntry>>,
    /// `--serial`: "stdio", "null", "file=PATH", "socket=PATH".
    #[serde(default, deserialize_with = "from_str")]
    pub serial: Option<SerialArg>,
    /// `--api-socket`.
    pub api_socket: Option<Spanned<PathBuf>>,
    /// `--seccomp`: "on", "log", "off".
    #[serde(default, deserialize_with = "from_str")]
    pub seccomp: Option<tern_seccomp::Mode>,
    /// `--on-reboot`: "restart", "exit".
    #[serde(default, deserialize_with = "on_reboot")]
    pub on_reboot: Option<OnReboot>,
    /// `--allow-emulated-kvm`.
    pub allow_emulated_kvm: Option<bool>,
    /// Live migration settings.
    #[serde(default)]
    pub migration: Option<MigrationSection>,
}

/// `[boot]`: a kernel (with initrd and command line), or a disk boot.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BootSection {
    pub kernel: Option<Spanned<PathBuf>>,
    pub initrd: Option<Spanned<PathBuf>>,
    pub cmdline: Option<String>,
    pub boot_entry: Option<String>,
    pub cmdline_append: Option<String>,
}

/// `[[disk]]`: one virtio-blk disk.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DiskEntry {
    pub path: Spanned<PathBuf>,
    #[serde(default)]
    pub readonly: bool,
    #[serde(default, deserialize_with = "disk_serial")]
    pub serial: Option<String>,
    #[serde(default)]
    pub boot: bool,
}

/// `[[net]]`: one NIC, on a TAP or on a bridge.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NetEntry {
    #[serde(default, deserialize_with = "tap_name")]
    pub tap: Option<String>,
    #[serde(default, deserialize_with = "bridge_name")]
    pub bridge: Option<String>,
    #[serde(default, deserialize_with = "mac")]
    pub mac: Option<[u8; 6]>,
}

/// `[migration]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MigrationSection {
    /// The TLS directory (ca.pem, cert.pem, key.pem) for migrating this VM.
    pub tls_dir: Option<Spanned<PathBuf>>,
}

/// Files a TLS directory must hold.
pub const TLS_FILES: [&str; 3] = ["ca.pem", "cert.pem", "key.pem"];

/// A parsed definition, with what is needed to point into its file.
#[derive(Debug)]
pub struct Loaded {
    /// The file as given.
    pub path: PathBuf,
    /// Its text (for line numbers).
    text: String,
    /// The values.
    pub def: Definition,
}

impl Loaded {
    /// Reads and parses `path`, checking what the file alone can tell: keys, types,
    /// values, and combinations (kernel with a disk boot, a NIC with tap and bridge).
    pub fn load(path: &Path) -> Result<Self, DefinitionError> {
        let read = |source| DefinitionError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read)?;
        let len = file.metadata().map_err(read)?.len();
        if len > MAX_DEFINITION_BYTES {
            return Err(DefinitionError::TooLarge {
                path: path.to_path_buf(),
                len,
            });
        }
        let mut text = String::with_capacity(len as usize);
        file.take(MAX_DEFINITION_BYTES)
            .read_to_string(&mut text)
            .map_err(read)?;
        Self::parse(path, text)
    }

    /// Parses `text` as the definition at `path`.
    pub fn parse(path: &Path, text: String) -> Result<Self, DefinitionError> {
        let def: Definition = match toml::from_str(&text) {
            Ok(def) => def,
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                let key = key_at(&text, &span);
                let message = e.message().trim().to_string();
                return Err(at(path, &text, span.start, key, message));
            }
        };
        let loaded = Self {
            path: path.to_path_buf(),
            text,
            def,
        };
        loaded.check_combinations()?;
        Ok(loaded)
    }

    fn check_combinations(&self) -> Result<(), DefinitionError> {
        if let Some(boot) = &self.def.boot {
            let b = boot.get_ref();
            if b.kernel.is_some() && (b.boot_entry.is_some() || b.cmdline_append.is_some()) {
                return Err(self.error(boot.span(), "boot", "kernel boots a kernel; boot-entry and cmdline-append are for a disk boot: give one or the other"));
            }
            if let (None, Some(initrd)) = (&b.kernel, &b.initrd) {
                return Err(self.error(initrd.span(), "boot.initrd", "an initrd needs a kernel"));
            }
        }
        for net in &self.def.nets {
            let n = net.get_ref();
            if n.tap.is_some() == n.bridge.is_some() {
                return Err(self.error(
                    net.span(),
                    "net",
                    "a [[net]] takes tap or bridge, exactly one",
                ));
            }
        }
        if self.def.disks.iter().filter(|d| d.boot).count() > 1 {
            let second = self
                .def
                .disks
                .iter()
                .filter(|d| d.boot)
                .nth(1)
                .map(|d| d.path.span())
                .unwrap_or(0..0);
            return Err(self.error(
                second,
                "disk.boot",
                "more than one disk is marked boot = true",
            ));
        }
        Ok(())
    }

    /// An error at `span` of the file, for `key`.
    pub fn error(&self, span: Range<usize>, key: &str, message: impl Display) -> DefinitionError {
        at(
            &self.path,
            &self.text,
            span.start,
            Some(key.to_string()),
            message.to_string(),
        )
    }

    /// A path from the file, relative to the file's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            return path.to_path_buf();
        }
        match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.join(path),
            _ => path.to_path_buf(),
        }
    }

    /// The resolved path of `value` if it names an existing file of the right kind
    /// (`dir`: a directory), else an error at its key.
    pub fn existing(
        &self,
        value: &Spanned<PathBuf>,
        key: &str,
        dir: bool,
    ) -> Result<PathBuf, DefinitionError> {
        let path = self.resolve(value.get_ref());
        let fail = |message: String| Err(self.error(value.span(), key, message));
        match std::fs::metadata(&path) {
            Err(e) => fail(format!("{}: {e}", path.display())),
            Ok(meta) if dir && !meta.is_dir() => {
                fail(format!("{} is not a directory", path.display()))
            }
            Ok(meta) if !dir && meta.is_dir() => fail(format!("{} is a directory", path.display())),
            Ok(_) => Ok(path),
        }
    }

    /// `[migration] tls-dir`, checked to hold the TLS files.
    pub fn tls_dir(&self) -> Result<Option<PathBuf>, DefinitionError> {
        let Some(value) = self.def.migration.as_ref().and_then(|m| m.tls_dir.as_ref()) else {
            return Ok(None);
        };
        let dir = self.existing(value, "migration.tls-dir", true)?;
        for file in TLS_FILES {
            if !dir.join(file).is_file() {
                return Err(self.error(
                    value.span(),
                    "migration.tls-dir",
                    format!("{} has no {file}", dir.display()),
                ));
            }
        }
        Ok(Some(dir))
    }

    /// The serial destination with a relative file or socket path resolved.
    pub fn serial(&self) -> Option<SerialArg> {
        self.def.serial.clone().map(|serial| match serial {
            SerialArg::File(p) => SerialArg::File(self.resolve(&p)),
            SerialArg::Socket(p) => SerialArg::Socket(self.resolve(&p)),
            other => other,
        })
    }
}

/// The error at byte `offset` of `text`.
fn at(
    path: &Path,
    text: &str,
    offset: usize,
    key: Option<String>,
    message: String,
) -> DefinitionError {
    let (line, column) = line_column(text, offset);
    DefinitionError::At {
        path: path.to_path_buf(),
        line,
        column,
        key,
        message,
    }
}

/// 1-based line and column (in characters) of byte `offset`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    (line, before[line_start..].chars().count() + 1)
}

/// The key a parse error at `span` is about, with its table: the key under the span
/// (an unknown key), or the key the span's line assigns (a bad value).
fn key_at(text: &str, span: &Range<usize>) -> Option<String> {
    let start = span.start.min(text.len());
    let line_start = text.get(..start)?.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line_end = text[start..]
        .find('\n')
        .map(|i| start + i)
        .unwrap_or(text.len());
    let line = &text[line_start..line_end];
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    let (lhs, _) = line.split_once('=')?;
    let key = lhs.trim().trim_matches('"');
    if key.is_empty() || key.starts_with('[') || key.contains(char::is_whitespace) {
        return None;
    }
    Some(match table {
        Some(table) if !table.is_empty() => format!("{table}.{key}"),
        _ => key.to_string(),
    })
}

fn from_str<'de, D: Deserializer<'de>, T: FromStr>(d: D) -> Result<Option<T>, D::Error>
where
    T::Err: Display,
{
    let text = String::deserialize(d)?;
    text.parse().map(Some).map_err(D::Error::custom)
}

fn size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let text = String::deserialize(d)?;
    parse_size(&text).map(Some).map_err(D::Error::custom)
}

fn on_reboot<'de, D: Deserializer<'de>>(d: D) -> Result<Option<OnReboot>, D::Error> {
    let text = String::deserialize(d)?;
    crate::run::parse_on_reboot(&text)
        .map(Some)
        .map_err(D::Error::custom)
}

fn checked_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(d)?;
    validate_name(&text).map_err(D::Error::custom)?;
    Ok(Some(text))
}

fn disk_serial<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(d)?;
    validate_serial(&text).map_err(D::Error::custom)?;
    Ok(Some(text))
}

fn tap_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(d)?;
    validate_tap_name(&text).map_err(D::Error::custom)?;
    Ok(Some(text))
}

fn bridge_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(d)?;
    validate_bridge_name(&text).map_err(D::Error::custom)?;
    Ok(Some(text))
}

fn mac<'de, D: Deserializer<'de>>(d: D) -> Result<Option<[u8; 6]>, D::Error> {
    let text = String::deserialize(d)?;
    parse_mac(&text).map(Some).map_err(D::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Loaded, DefinitionError> {
        Loaded::parse(Path::new("/etc/tern/vm1.toml"), text.to_string())
    }

    fn message(text: &str) -> String {
        parse(text).expect_err(text).to_string()
    }

    const GOOD: &str = r#"
name = "vm1"
cpus = 2
memory = "1G"
serial = "socket=vm1.console"
api-socket = "/run/vm1.sock"
seccomp = "log"
on-reboot = "exit"
allow-emulated-kvm = true

[boot]
kernel = "vmlinux"
initrd = "/boot/initrd.img"
cmdline = "console=ttyS0 root=/dev/vda"

[[disk]]
path = "vm1.img"
serial = "root"

[[disk]]
path = "/srv/data.img"
readonly = true

[[net]]
tap = "tap0"
mac = "52:54:00:00:00:01"

[[net]]
bridge = "br0"

[migration]
tls-dir = "tls"
"#;

    #[test]
    fn a_good_file_gives_every_value() {
        let loaded = parse(GOOD).unwrap();
        let d = &loaded.def;
        assert_eq!(d.name.as_deref(), Some("vm1"));
        assert_eq!(d.cpus, Some(2));
        assert_eq!(d.memory, Some(1 << 30));
        assert_eq!(
            loaded.serial(),
            Some(SerialArg::Socket("/etc/tern/vm1.console".into()))
        );
        assert_eq!(
            d.api_socket.as_ref().map(|s| s.get_ref().clone()),
            Some(PathBuf::from("/run/vm1.sock"))
        );
        assert_eq!(d.seccomp, Some(tern_seccomp::Mode::Log));
        assert_eq!(d.on_reboot, Some(OnReboot::Exit));
        assert_eq!(d.allow_emulated_kvm, Some(true));
        let boot = d.boot.as_ref().unwrap().get_ref();
        assert_eq!(
            loaded.resolve(boot.kernel.as_ref().unwrap().get_ref()),
            PathBuf::from("/etc/tern/vmlinux")
        );
        assert_eq!(
            loaded.resolve(boot.initrd.as_ref().unwrap().get_ref()),
            PathBuf::from("/boot/initrd.img")
        );
        assert_eq!(boot.cmdline.as_deref(), Some("console=ttyS0 root=/dev/vda"));
        assert_eq!(d.disks.len(), 2);
        assert_eq!(
            loaded.resolve(d.disks[0].path.get_ref()),
            PathBuf::from("/etc/tern/vm1.img")
        );
        assert_eq!(
            (d.disks[0].readonly, d.disks[0].serial.as_deref()),
            (false, Some("root"))
        );
        assert!(d.disks[1].readonly);
        assert_eq!(d.nets[0].get_ref().tap.as_deref(), Some("tap0"));
        assert_eq!(d.nets[0].get_ref().mac, Some([0x52, 0x54, 0, 0, 0, 1]));
        assert_eq!(d.nets[1].get_ref().bridge.as_deref(), Some("br0"));
        assert!(d.migration.as_ref().unwrap().tls_dir.is_some());
        // An empty file is a valid (empty) definition.
        assert!(parse("").unwrap().def.name.is_none());
    }

    #[test]
    fn an_unknown_key_names_file_line_and_key() {
        assert_eq!(
            message("name = \"vm1\"\ncpu = 2\n").lines().next().unwrap(),
            "/etc/tern/vm1.toml:2:1: cpu: unknown field `cpu`, expected one of `name`, `boot`, `cpus`, `memory`, `disk`, `net`, `serial`, `api-socket`, `seccomp`, `on-reboot`, `allow-emulated-kvm`, `migration`"
        );
        let m = message("[boot]\nkernel = \"k\"\ninitramfs = \"i\"\n");
        assert!(
            m.starts_with("/etc/tern/vm1.toml:3:1: boot.initramfs: unknown field `initramfs`"),
            "{m}"
        );
        let m = message("[[disk]]\npath = \"a\"\nsize = 1\n");
        assert!(
            m.starts_with("/etc/tern/vm1.toml:3:1: disk.size: unknown field `size`"),
            "{m}"
        );
    }

    #[test]
    fn a_wrong_type_names_the_line_and_key() {
        let m = message("name = \"vm1\"\n\ncpus = \"two\"\n");
        assert!(
            m.starts_with(
                "/etc/tern/vm1.toml:3:8: cpus: invalid type: string \"two\", expected u8"
            ),
            "{m}"
        );
        let m = message("[[disk]]\npath = \"a\"\nreadonly = \"yes\"\n");
        assert!(m.starts_with("/etc/tern/vm1.toml:3:12: disk.readonly: invalid type: string \"yes\", expected a boolean"), "{m}");
        let m = message("memory = 512\n");
        assert!(
            m.starts_with(
                "/etc/tern/vm1.toml:1:10: memory: invalid type: integer `512`, expected a string"
            ),
            "{m}"
        );
        let m = message("cpus = 300\n");
        assert!(m.starts_with("/etc/tern/vm1.toml:1:8: cpus: "), "{m}");
    }

    #[test]
    fn bad_values_name_the_line_and_key() {
        let cases = [
            (
                "memory = \"lots\"\n",
                "/etc/tern/vm1.toml:1:10: memory: `lots` is not a size",
            ),
            (
                "name = \"a/b\"\n",
                "/etc/tern/vm1.toml:1:8: name: VM name 'a/b' may hold only",
            ),
            (
                "seccomp = \"maybe\"\n",
                "/etc/tern/vm1.toml:1:11: seccomp: `maybe` is not a seccomp mode",
            ),
            (
                "on-reboot = \"reboot\"\n",
                "/etc/tern/vm1.toml:1:13: on-reboot: `reboot` is not a reboot action",
            ),
            (
                "serial = \"tty\"\n",
                "/etc/tern/vm1.toml:1:10: serial: `tty` is not a serial destination",
            ),
            (
                "[[net]]\ntap = \"a/b\"\n",
                "/etc/tern/vm1.toml:2:7: net.tap: TAP name 'a/b' is not a valid",
            ),
            (
                "[[net]]\nbridge = \"br0\"\nmac = \"01:00:5e:00:00:01\"\n",
                "/etc/tern/vm1.toml:3:7: net.mac: ",
            ),
            (
                "[[disk]]\npath = \"a\"\nserial = \"123456789012345678901\"\n",
                "/etc/tern/vm1.toml:3:10: disk.serial: disk serial",
            ),
            ("name = \n", "/etc/tern/vm1.toml:1:"),
        ];
        for (text, want) in cases {
            let m = message(text);
            assert!(m.starts_with(want), "{text:?}: {m}");
            assert_eq!(m.lines().count(), 1, "one line: {m}");
        }
    }

    #[test]
    fn combinations_the_file_cannot_have() {
        let m = message("[boot]\nkernel = \"k\"\nboot-entry = \"1\"\n");
        assert!(
            m.starts_with("/etc/tern/vm1.toml:1:1: boot: kernel boots a kernel"),
            "{m}"
        );
        let m = message("[boot]\ninitrd = \"i\"\n");
        assert!(
            m.starts_with("/etc/tern/vm1.toml:2:10: boot.initrd: an initrd needs a kernel"),
            "{m}"
        );
        let m = message("[[net]]\ntap = \"t\"\nbridge = \"b\"\n");
        assert!(
            m.starts_with(
                "/etc/tern/vm1.toml:1:1: net: a [[net]] takes tap or bridge, exactly one"
            ),
            "{m}"
        );
        let m = message("[[net]]\nmac = \"52:54:00:00:00:01\"\n");
        assert!(
            m.contains("net: a [[net]] takes tap or bridge, exactly one"),
            "{m}"
        );
        let m =
            message("[[disk]]\npath = \"a\"\nboot = true\n[[disk]]\npath = \"b\"\nboot = true\n");
        assert!(
            m.starts_with("/etc/tern/vm1.toml:5:8: disk.boot: more than one disk"),
            "{m}"
        );
    }

    #[test]
    fn a_missing_file_and_missing_named_files_are_one_line() {
        let dir = std::env::temp_dir().join(format!("tern-definition-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("tls")).unwrap();
        let m = Loaded::load(&dir.join("absent.toml"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            m,
            format!(
                "cannot read VM definition {}: No such file or directory (os error 2)",
                dir.join("absent.toml").display()
            )
        );

        let file = dir.join("vm.toml");
        std::fs::write(
            &file,
            "[boot]\nkernel = \"vmlinux\"\n[migration]\ntls-dir = \"tls\"\n",
        )
        .unwrap();
        let loaded = Loaded::load(&file).unwrap();
        let kernel = loaded
            .def
            .boot
            .as_ref()
            .unwrap()
            .get_ref()
            .kernel
            .as_ref()
            .unwrap();
        let m = loaded
            .existing(kernel, "boot.kernel", false)
            .unwrap_err()
            .to_string();
        assert_eq!(
            m,
            format!(
                "{}:2:10: boot.kernel: {}: No such file or directory (os error 2)",
                file.display(),
                dir.join("vmlinux").display()
            )
        );
        std::fs::write(dir.join("vmlinux"), b"k").unwrap();
        assert_eq!(
            loaded.existing(kernel, "boot.kernel", false).unwrap(),
            dir.join("vmlinux")
        );
        let m = loaded.tls_dir().unwrap_err().to_string();
        assert_eq!(
            m,
            format!(
                "{}:4:11: migration.tls-dir: {} has no ca.pem",
                file.display(),
                dir.join("tls").display()
            )
        );
        for f in TLS_FILES {
            std::fs::write(dir.join("tls").join(f), b"x").unwrap();
        }
        assert_eq!(loaded.tls_dir().unwrap(), Some(dir.join("tls")));

        std::fs::write(&file, vec![b'#'; MAX_DEFINITION_BYTES as usize + 1]).unwrap();
        assert!(Loaded::load(&file)
            .unwrap_err()
            .to_string()
            .contains("at most 1048576 allowed"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn line_and_column_count_characters() {
        assert_eq!(line_column("a\nbé = 1", 6), (2, 4));
        assert_eq!(line_column("", 0), (1, 1));
        assert_eq!(line_column("abc", 99), (1, 4));
    }
}
