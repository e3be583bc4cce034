//! The `--net` option syntax and MAC addresses.

use crate::virtio::net::{
    parse_mac, validate_tap_name, MacDisplay, MacError, NetConfig, NetConfigParseError,
    GENERATED_MAC_PREFIX,
};

#[test]
fn net_options_parse() {
    let c: NetConfig = "tap=tap0".parse().expect("parse");
    assert_eq!(c, NetConfig { tap: "tap0".into(), mac: None });
    let c: NetConfig = "tap=tern-net1,mac=52:54:00:aB:cd:EF".parse().expect("parse");
    assert_eq!(c.tap, "tern-net1");
    assert_eq!(c.mac, Some([0x52, 0x54, 0x00, 0xab, 0xcd, 0xef]));
    // Any order.
    let d: NetConfig = "mac=52:54:00:ab:cd:ef,tap=tern-net1".parse().expect("parse");
    assert_eq!(c, d);
    // 15 bytes is the longest name.
    let c: NetConfig = "tap=abcdefghijklmno".parse().expect("parse");
    assert_eq!(c.tap.len(), 15);
}

#[test]
fn net_options_round_trip_through_display() {
    for text in ["tap=tap0", "tap=t1,mac=02:00:00:00:00:01"] {
        let c: NetConfig = text.parse().expect("parse");
        assert_eq!(c.to_string(), text);
        assert_eq!(c.to_string().parse::<NetConfig>().expect("reparse"), c);
    }
}

#[test]
fn net_options_errors() {
    use NetConfigParseError as E;
    let err = |s: &str| s.parse::<NetConfig>().expect_err(s);
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
        E::TapNameTooLong { name: "abcdefghijklmnop".into(), len: 16 }
    );
    assert!(matches!(err("tap=a/b"), E::BadTapName { .. }));
    assert!(matches!(err("tap=a b"), E::BadTapName { .. }));
    assert!(matches!(err("tap=.."), E::BadTapName { .. }));
    assert!(matches!(err("tap=a:1"), E::BadTapName { .. }));
    // Messages name the culprit.
    let msg = err("tap=abcdefghijklmnop").to_string();
    assert!(msg.contains("abcdefghijklmnop") && msg.contains("15"), "{msg}");
}

#[test]
fn net_options_bad_mac() {
    use NetConfigParseError as E;
    let err = |s: &str| s.parse::<NetConfig>().expect_err(s);
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
    assert!(msg.contains("zz:54:00:00:00:01"), "{msg}");
}

#[test]
fn net_mac_parse_and_display() {
    let mac = parse_mac("02:AB:cd:00:ff:10").expect("parse");
    assert_eq!(mac, [0x02, 0xab, 0xcd, 0x00, 0xff, 0x10]);
    assert_eq!(MacDisplay(&mac).to_string(), "02:ab:cd:00:ff:10");
}

#[test]
fn net_generated_macs_are_local_unicast_and_differ() {
    let a = crate::virtio::net::mac::generate_mac("tap0");
    let b = crate::virtio::net::mac::generate_mac("tap0");
    assert_eq!(a[..3], GENERATED_MAC_PREFIX);
    assert_eq!(a[0] & 1, 0, "unicast");
    assert_eq!(a[0] & 2, 2, "locally administered");
    assert_ne!(a, b, "randomly keyed");
}

#[test]
fn net_tap_name_validation() {
    assert!(validate_tap_name("tap0").is_ok());
    assert!(validate_tap_name("tap%d").is_ok(), "kernel name templates are allowed");
    assert!(validate_tap_name("").is_err());
    assert!(validate_tap_name(".").is_err());
    assert!(validate_tap_name("a\0b").is_err());
    assert!(validate_tap_name("a,b").is_err());
}
