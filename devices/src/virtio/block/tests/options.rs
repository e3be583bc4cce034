//! The `--disk` option syntax.

use std::path::PathBuf;

use crate::virtio::block::{BlockConfig, BlockConfigParseError as E};

fn parse(s: &str) -> Result<BlockConfig, E> {
    s.parse()
}

#[test]
fn block_option_full_and_defaults() {
    assert_eq!(
        parse("path=/var/lib/disk.img,readonly=on,serial=abc123").expect("parse"),
        BlockConfig {
            path: PathBuf::from("/var/lib/disk.img"),
            read_only: true,
            serial: Some("abc123".into())
        }
    );
    assert_eq!(parse("path=disk.img").expect("parse"), BlockConfig::new("disk.img"));
    assert_eq!(parse("readonly=off,path=d").expect("parse"), BlockConfig::new("d"));
    let twenty = "s".repeat(20);
    assert_eq!(parse(&format!("path=d,serial={twenty}")).expect("parse").serial, Some(twenty));
}

#[test]
fn block_option_round_trips_through_display() {
    for s in
        ["path=/a/b.img", "path=x,readonly=on", "path=x,serial=S1", "path=x,readonly=on,serial=q"]
    {
        assert_eq!(parse(s).expect("parse").to_string(), s);
    }
}

#[test]
fn block_option_errors() {
    assert_eq!(parse("readonly=on"), Err(E::MissingPath));
    assert_eq!(parse("path=a,size=1"), Err(E::UnknownKey("size".into())));
    assert_eq!(parse("path=a,readonly=yes"), Err(E::BadReadOnly("yes".into())));
    assert_eq!(parse("path=a,readonly"), Err(E::NotKeyValue("readonly".into())));
    assert_eq!(parse("/disk.img"), Err(E::NotKeyValue("/disk.img".into())));
    assert_eq!(parse(""), Err(E::NotKeyValue(String::new())));
    assert_eq!(parse("path="), Err(E::EmptyValue("path".into())));
    assert_eq!(parse("path=a,serial="), Err(E::EmptyValue("serial".into())));
    assert_eq!(parse("path=a,path=b"), Err(E::DuplicateKey("path".into())));
    assert_eq!(parse("path=a,"), Err(E::NotKeyValue(String::new())));
    let long = "z".repeat(21);
    assert_eq!(
        parse(&format!("path=a,serial={long}")),
        Err(E::SerialTooLong { serial: long.clone(), len: 21 })
    );
    // Multi-byte characters count in bytes.
    assert!(matches!(
        parse(&format!("path=a,serial={}", "é".repeat(11))),
        Err(E::SerialTooLong { len: 22, .. })
    ));
    for err in [E::MissingPath, E::UnknownKey("k".into()), E::BadReadOnly("v".into())] {
        assert!(!err.to_string().is_empty());
    }
}
