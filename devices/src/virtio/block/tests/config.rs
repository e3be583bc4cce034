//! The device's own checks on a disk configuration.

use crate::virtio::block::{validate_serial, BlockConfig, SerialTooLong, SERIAL_LEN};

#[test]
fn block_config_new_is_writable_without_serial() {
    let c = BlockConfig::new("disk.img");
    assert_eq!(c.path, std::path::PathBuf::from("disk.img"));
    assert!(!c.read_only);
    assert_eq!(c.serial, None);
}

#[test]
fn block_serial_fits_get_id() {
    assert_eq!(SERIAL_LEN, 20);
    assert_eq!(validate_serial(""), Ok(()));
    assert_eq!(validate_serial(&"s".repeat(20)), Ok(()));
    let long = "z".repeat(21);
    assert_eq!(validate_serial(&long), Err(SerialTooLong { serial: long.clone(), len: 21 }));
    // Multi-byte characters count in bytes.
    assert!(matches!(validate_serial(&"é".repeat(11)), Err(SerialTooLong { len: 22, .. })));
    let msg = validate_serial(&long).expect_err("too long").to_string();
    assert!(msg.contains(&long) && msg.contains("21") && msg.contains("20"), "{msg}");
}
