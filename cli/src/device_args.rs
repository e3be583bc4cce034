//! The `--disk` and `--net` option syntax, parsed into the devices' configurations:
//! `path=FILE[,readonly=on|off][,serial=ID][,boot=on|off]` and
//! `tap=NAME[,mac=AA:BB:CC:DD:EE:FF]` or `bridge=BRIDGE[,mac=AA:BB:CC:DD:EE:FF]`.
//! Items are comma-separated `key=value` pairs in any order, each key at most once.
//! Paths containing commas cannot be expressed in this syntax.

use std::path::PathBuf;

use devices::virtio::block::{validate_serial, BlockConfig, SerialTooLong};
use devices::virtio::net::{parse_mac, validate_tap_name, MacError, NetConfig, TapNameError};

/// Errors in a `--disk` option value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiskArgError {
    /// No `path=` item.
    #[error("disk option needs path=FILE")]
    MissingPath,
    /// An item without `=`.
    #[error("disk option item '{0}' is not key=value")]
    NotKeyValue(String),
    /// A key that is not `path`, `readonly`, `serial` or `boot`.
    #[error("unknown disk option '{0}' (expected path, readonly, serial, boot)")]
    UnknownKey(String),
    /// The same key twice.
    #[error("disk option '{0}' given twice")]
    DuplicateKey(String),
    /// `key=` with nothing after it.
    #[error("disk option '{0}' has an empty value")]
    EmptyValue(String),
    /// `readonly=` or `boot=` with something other than on/off.
    #[error("disk option {0}='{1}' must be on or off")]
    NotOnOff(&'static str, String),
    /// A serial longer than the device's GET_ID answer.
    #[error(transparent)]
    SerialTooLong(#[from] SerialTooLong),
}

/// Errors in a `--net` option value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetArgError {
    /// Neither `tap=` nor `bridge=`.
    #[error("net option needs tap=NAME or bridge=BRIDGE")]
    MissingTap,
    /// Both `tap=` and `bridge=`.
    #[error("net option takes tap=NAME or bridge=BRIDGE, not both")]
    TapAndBridge,
    /// An item without `=`.
    #[error("net option item '{0}' is not key=value")]
    NotKeyValue(String),
    /// A key that is not `tap`, `bridge` or `mac`.
    #[error("unknown net option '{0}' (expected tap, bridge, mac)")]
    UnknownKey(String),
    /// The same key twice.
    #[error("net option '{0}' given twice")]
    DuplicateKey(String),
    /// `key=` with nothing after it.
    #[error("net option '{0}' has an empty value")]
    EmptyValue(String),
    /// A MAC that does not parse or cannot belong to a NIC.
    #[error("net option mac: {0}")]
    BadMac(#[from] MacError),
    /// A TAP name the kernel would refuse.
    #[error(transparent)]
    BadTapName(#[from] TapNameError),
    /// A bridge name the kernel would refuse.
    #[error("net option bridge: {0}")]
    BadBridgeName(String),
}

/// A `--net` value: an existing (or created) TAP by name, or a bridge to put a new
/// TAP on (created at start, removed at exit: see `bridge_tap.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetArg {
    /// `tap=NAME[,mac=..]`.
    Tap(NetConfig),
    /// `bridge=BRIDGE[,mac=..]`.
    Bridge {
        /// The bridge the new TAP joins.
        bridge: String,
        /// Guest MAC address; `None` generates one.
        mac: Option<[u8; 6]>,
    },
}

/// One item of an option value.
enum Item<'a> {
    /// `key=value` with a non-empty value.
    Pair(&'a str, &'a str),
    /// No `=` in the item.
    NotKeyValue(&'a str),
    /// `key=` with nothing after it.
    EmptyValue(&'a str),
}

/// Splits `s` into its comma-separated items.
fn items(s: &str) -> impl Iterator<Item = Item<'_>> {
    s.split(',').map(|item| match item.split_once('=') {
        None => Item::NotKeyValue(item),
        Some((key, "")) => Item::EmptyValue(key),
        Some((key, value)) => Item::Pair(key, value),
    })
}

/// A `--disk` value: the device's configuration, and whether it is the disk to boot
/// from when no `--kernel` is given (`boot=on`; otherwise the first disk is).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskArg {
    pub config: BlockConfig,
    pub boot: bool,
}

/// Parses a `--disk` value: `path=FILE[,readonly=on|off][,serial=ID][,boot=on|off]`.
pub fn parse_disk(s: &str) -> Result<DiskArg, DiskArgError> {
    let mut path: Option<PathBuf> = None;
    let mut read_only: Option<bool> = None;
    let mut serial: Option<String> = None;
    let mut boot: Option<bool> = None;

    for item in items(s) {
        let (key, value) = match item {
            Item::Pair(key, value) => (key, value),
            Item::NotKeyValue(item) => return Err(DiskArgError::NotKeyValue(item.to_string())),
            Item::EmptyValue(key) => return Err(DiskArgError::EmptyValue(key.to_string())),
        };
        let duplicate = match key {
            "path" => path.replace(PathBuf::from(value)).is_some(),
            "readonly" => read_only.replace(parse_on_off("readonly", value)?).is_some(),
            "boot" => boot.replace(parse_on_off("boot", value)?).is_some(),
            "serial" => {
                validate_serial(value)?;
                serial.replace(value.to_string()).is_some()
            }
            _ => return Err(DiskArgError::UnknownKey(key.to_string())),
        };
        if duplicate {
            return Err(DiskArgError::DuplicateKey(key.to_string()));
        }
    }

    let config = BlockConfig { path: path.ok_or(DiskArgError::MissingPath)?, read_only: read_only.unwrap_or(false), serial };
    Ok(DiskArg { config, boot: boot.unwrap_or(false) })
}

/// Parses a `--net` value: `tap=NAME[,mac=AA:BB:CC:DD:EE:FF]` or
/// `bridge=BRIDGE[,mac=AA:BB:CC:DD:EE:FF]`.
pub fn parse_net(s: &str) -> Result<NetArg, NetArgError> {
    let mut tap: Option<String> = None;
    let mut bridge: Option<String> = None;
    let mut mac: Option<[u8; 6]> = None;

    for item in items(s) {
        let (key, value) = match item {
            Item::Pair(key, value) => (key, value),
            Item::NotKeyValue(item) => return Err(NetArgError::NotKeyValue(item.to_string())),
            Item::EmptyValue(key) => return Err(NetArgError::EmptyValue(key.to_string())),
        };
        let duplicate = match key {
            "tap" => {
                validate_tap_name(value)?;
                tap.replace(value.to_string()).is_some()
            }
            "bridge" => {
                validate_bridge_name(value)?;
                bridge.replace(value.to_string()).is_some()
            }
            "mac" => mac.replace(parse_mac(value)?).is_some(),
            _ => return Err(NetArgError::UnknownKey(key.to_string())),
        };
        if duplicate {
            return Err(NetArgError::DuplicateKey(key.to_string()));
        }
    }

    match (tap, bridge) {
        (Some(tap), None) => Ok(NetArg::Tap(NetConfig { tap, mac })),
        (None, Some(bridge)) => Ok(NetArg::Bridge { bridge, mac }),
        (Some(_), Some(_)) => Err(NetArgError::TapAndBridge),
        (None, None) => Err(NetArgError::MissingTap),
    }
}

/// A bridge is an interface: the kernel's naming rules are the TAP's.
pub fn validate_bridge_name(name: &str) -> Result<(), NetArgError> {
    validate_tap_name(name)
        .map_err(|e| NetArgError::BadBridgeName(e.to_string().replacen("TAP name", "name", 1)))
}

/// `on` or `off`, for `readonly=`.
fn parse_on_off(key: &'static str, value: &str) -> Result<bool, DiskArgError> {
    match value {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(DiskArgError::NotOnOff(key, value.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_option_full_and_defaults() {
        assert_eq!(
            parse_disk("path=/var/lib/disk.img,readonly=on,serial=abc123").expect("parse").config,
            BlockConfig {
                path: PathBuf::from("/var/lib/disk.img"),
                read_only: true,
                serial: Some("abc123".into())
            }
        );
        assert_eq!(parse_disk("path=disk.img").expect("parse").config, BlockConfig::new("disk.img"));
        assert_eq!(parse_disk("readonly=off,path=d").expect("parse").config, BlockConfig::new("d"));
        let twenty = "s".repeat(20);
        assert_eq!(
            parse_disk(&format!("path=d,serial={twenty}")).expect("parse").config.serial,
            Some(twenty)
        );
    }

    #[test]
    fn disk_option_combinations() {
        let disk = |path: &str, read_only: bool, serial: Option<&str>| BlockConfig {
            path: PathBuf::from(path),
            read_only,
            serial: serial.map(String::from),
        };
        for (text, want) in [
            ("path=/a/b.img", disk("/a/b.img", false, None)),
            ("path=x,readonly=on", disk("x", true, None)),
            ("path=x,serial=S1", disk("x", false, Some("S1"))),
            ("path=x,readonly=on,serial=q", disk("x", true, Some("q"))),
            ("serial=q,readonly=on,path=x", disk("x", true, Some("q"))),
        ] {
            assert_eq!(parse_disk(text).expect(text).config, want, "{text}");
        }
    }

    #[test]
    fn disk_option_boot_marks_the_disk_to_boot_from() {
        assert!(!parse_disk("path=a").unwrap().boot);
        assert!(parse_disk("path=a,boot=on").unwrap().boot);
        assert!(!parse_disk("boot=off,path=a").unwrap().boot);
        assert_eq!(parse_disk("path=a,boot=yes"), Err(DiskArgError::NotOnOff("boot", "yes".into())));
        assert_eq!(parse_disk("path=a,boot=on,boot=on"), Err(DiskArgError::DuplicateKey("boot".into())));
    }

    #[test]
    fn disk_option_errors() {
        use DiskArgError as E;
        assert_eq!(parse_disk("readonly=on"), Err(E::MissingPath));
        assert_eq!(parse_disk("path=a,size=1"), Err(E::UnknownKey("size".into())));
        assert_eq!(parse_disk("path=a,readonly=yes"), Err(E::NotOnOff("readonly", "yes".into())));
        assert_eq!(parse_disk("path=a,readonly"), Err(E::NotKeyValue("readonly".into())));
        assert_eq!(parse_disk("/disk.img"), Err(E::NotKeyValue("/disk.img".into())));
        assert_eq!(parse_disk(""), Err(E::NotKeyValue(String::new())));
        assert_eq!(parse_disk("path="), Err(E::EmptyValue("path".into())));
        assert_eq!(parse_disk("path=a,serial="), Err(E::EmptyValue("serial".into())));
        assert_eq!(parse_disk("path=a,path=b"), Err(E::DuplicateKey("path".into())));
        assert_eq!(parse_disk("path=a,"), Err(E::NotKeyValue(String::new())));
        let long = "z".repeat(21);
        assert_eq!(
            parse_disk(&format!("path=a,serial={long}")),
            Err(E::SerialTooLong(SerialTooLong { serial: long.clone(), len: 21 }))
        );
        // Multi-byte characters count in bytes.
        assert!(matches!(
            parse_disk(&format!("path=a,serial={}", "é".repeat(11))),
            Err(E::SerialTooLong(SerialTooLong { len: 22, .. }))
        ));
    }

    #[test]
    fn disk_option_messages() {
        use DiskArgError as E;
        let msg = |e: E| e.to_string();
        assert_eq!(msg(E::MissingPath), "disk option needs path=FILE");
        assert_eq!(msg(E::NotKeyValue("x".into())), "disk option item 'x' is not key=value");
        assert_eq!(
            msg(E::UnknownKey("k".into())),
            "unknown disk option 'k' (expected path, readonly, serial, boot)"
        );
        assert_eq!(msg(E::DuplicateKey("path".into())), "disk option 'path' given twice");
        assert_eq!(msg(E::EmptyValue("path".into())), "disk option 'path' has an empty value");
        assert_eq!(
            msg(E::NotOnOff("boot", "v".into())),
            "disk option boot='v' must be on or off"
        );
        let long = "z".repeat(21);
        let err = parse_disk(&format!("path=a,serial={long}")).expect_err("too long");
        assert_eq!(err.to_string(), format!("disk serial '{long}' is 21 bytes, at most 20 allowed"));
    }

    #[test]
    fn net_options_parse() {
        let tap = |s: &str| match parse_net(s).expect(s) {
            NetArg::Tap(config) => config,
            other => panic!("{s}: {other:?}"),
        };
        let c = tap("tap=tap0");
        assert_eq!(c, NetConfig { tap: "tap0".into(), mac: None });
        let c = tap("tap=tern-net1,mac=52:54:00:aB:cd:EF");
        assert_eq!(c.tap, "tern-net1");
        assert_eq!(c.mac, Some([0x52, 0x54, 0x00, 0xab, 0xcd, 0xef]));
        // Any order.
        let d = tap("mac=52:54:00:ab:cd:ef,tap=tern-net1");
        assert_eq!(c, d);
        // 15 bytes is the longest name.
        let c = tap("tap=abcdefghijklmno");
        assert_eq!(c.tap.len(), 15);
        assert_eq!(
            tap("tap=t1,mac=02:00:00:00:00:01"),
            NetConfig { tap: "t1".into(), mac: Some([2, 0, 0, 0, 0, 1]) }
        );
    }

    #[test]
    fn net_options_errors() {
        use NetArgError as E;
        let err = |s: &str| parse_net(s).expect_err(s);
        assert_eq!(err("mac=52:54:00:00:00:01"), E::MissingTap);
        assert_eq!(err(""), E::NotKeyValue(String::new()));
        assert_eq!(err("tap0"), E::NotKeyValue("tap0".into()));
        assert_eq!(err("tap=a,queues=2"), E::UnknownKey("queues".into()));
        assert_eq!(err("tap=a,tap=b"), E::DuplicateKey("tap".into()));
        assert_eq!(
            err("tap=a,mac=52:54:00:00:00:01,mac=52:54:00:00:00:02"),
            E::DuplicateKey("mac".into())
        );
        assert_eq!(err("tap="), E::EmptyValue("tap".into()));
        assert_eq!(err("tap=a,mac="), E::EmptyValue("mac".into()));
        assert_eq!(
            err("tap=abcdefghijklmnop"),
            E::BadTapName(TapNameError::TooLong { name: "abcdefghijklmnop".into(), len: 16 })
        );
        for bad in ["tap=a/b", "tap=a b", "tap=..", "tap=a:1"] {
            assert!(matches!(err(bad), E::BadTapName(TapNameError::Invalid { .. })), "{bad}");
        }
        // Messages name the culprit.
        let msg = err("tap=abcdefghijklmnop").to_string();
        assert_eq!(msg, "TAP name 'abcdefghijklmnop' is 16 bytes, at most 15 allowed");
        assert_eq!(err("tap=a,queues=2").to_string(), "unknown net option 'queues' (expected tap, bridge, mac)");
        assert_eq!(err("mac=52:54:00:00:00:01").to_string(), "net option needs tap=NAME or bridge=BRIDGE");
    }

    #[test]
    fn net_bridge_options() {
        assert_eq!(parse_net("bridge=br0"), Ok(NetArg::Bridge { bridge: "br0".into(), mac: None }));
        assert_eq!(
            parse_net("mac=52:54:00:00:00:07,bridge=public"),
            Ok(NetArg::Bridge { bridge: "public".into(), mac: Some([0x52, 0x54, 0, 0, 0, 7]) })
        );
        assert_eq!(parse_net("bridge=br0,tap=t0"), Err(NetArgError::TapAndBridge));
        assert_eq!(parse_net("bridge=br0,bridge=br1"), Err(NetArgError::DuplicateKey("bridge".into())));
        assert_eq!(parse_net("bridge="), Err(NetArgError::EmptyValue("bridge".into())));
        let msg = parse_net("bridge=a/b").unwrap_err().to_string();
        assert_eq!(msg, "net option bridge: name 'a/b' is not a valid interface name: it contains '/', ':', ',', NUL or whitespace");
        let msg = parse_net("bridge=abcdefghijklmnop").unwrap_err().to_string();
        assert!(msg.starts_with("net option bridge: ") && msg.contains("at most 15"), "{msg}");
    }

    #[test]
    fn net_options_bad_mac() {
        use NetArgError as E;
        let err = |s: &str| parse_net(s).expect_err(s);
        for bad in [
            "52:54:00:00:00",
            "52:54:00:00:00:01:02",
            "52-54-00-00-00-01",
            "52:54:00:00:00:1",
            "52:54:00:00:00:001",
            "52:54:00:00:00:0g",
            "+2:54:00:00:00:01",
            "52:54:00:00:00:",
        ] {
            assert_eq!(
                err(&format!("tap=a,mac={bad}")),
                E::BadMac(MacError::Syntax(bad.into())),
                "{bad}"
            );
        }
        assert!(matches!(err("tap=a,mac=01:00:5e:00:00:01"), E::BadMac(MacError::Multicast(_))));
        assert_eq!(err("tap=a,mac=00:00:00:00:00:00"), E::BadMac(MacError::Zero));
        let msg = err("tap=a,mac=zz:54:00:00:00:01").to_string();
        assert!(msg.starts_with("net option mac: ") && msg.contains("zz:54:00:00:00:01"), "{msg}");
    }
}
