//! TAP names and MAC addresses: the device's own checks on a NIC configuration.

use crate::virtio::net::{
    parse_mac, validate_tap_name, MacDisplay, MacError, TapNameError, GENERATED_MAC_PREFIX,
};

#[test]
fn net_mac_parse_and_display() {
    let mac = parse_mac("02:AB:cd:00:ff:10").expect("parse");
    assert_eq!(mac, [0x02, 0xab, 0xcd, 0x00, 0xff, 0x10]);
    assert_eq!(MacDisplay(&mac).to_string(), "02:ab:cd:00:ff:10");
}

#[test]
fn net_mac_refusals() {
    for bad in ["52:54:00:00:00", "52-54-00-00-00-01", "52:54:00:00:00:0g", "+2:54:00:00:00:01"] {
        assert_eq!(parse_mac(bad), Err(MacError::Syntax(bad.into())), "{bad}");
    }
    assert!(matches!(parse_mac("01:00:5e:00:00:01"), Err(MacError::Multicast(_))));
    assert_eq!(parse_mac("00:00:00:00:00:00"), Err(MacError::Zero));
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
    assert!(validate_tap_name("abcdefghijklmno").is_ok(), "15 bytes is the longest name");
    assert_eq!(
        validate_tap_name("abcdefghijklmnop"),
        Err(TapNameError::TooLong { name: "abcdefghijklmnop".into(), len: 16 })
    );
    for bad in ["", ".", "..", "a/b", "a b", "a:1", "a\0b", "a,b"] {
        assert!(
            matches!(validate_tap_name(bad), Err(TapNameError::Invalid { .. })),
            "{bad:?}"
        );
    }
    // Messages name the culprit.
    let msg = validate_tap_name("abcdefghijklmnop").expect_err("too long").to_string();
    assert!(msg.contains("abcdefghijklmnop") && msg.contains("15"), "{msg}");
}
