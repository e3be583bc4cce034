//! A disk image from an untrusted source, as `tern` inspects it before booting: the
//! input is the whole image, in memory. `partitions_reader`, `inspect_reader`, then
//! `select` (default, "0", "1", a title) and `load_reader` of what was selected.
//!
//! Asserts: no panic, no hang (libFuzzer's -timeout), no allocation beyond the image's
//! own size for kernel and initrds; every error is one line starting with the disk name;
//! a menu has entries and its default is one of them; what loads is no larger than the image.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use tern_bootdisk::{inspect_reader, load_reader, partitions_reader, BootDiskError, ReadAt};

const NAME: &str = "fuzz.img";

fn check(e: &BootDiskError) {
    let text = e.to_string();
    assert!(text.starts_with("fuzz.img: "), "{text}");
    assert!(!text.contains('\n') && !text.contains('\r'), "{text:?}");
}

fuzz_target!(|data: &[u8]| {
    let len = data.len() as u64;
    let image: Arc<dyn ReadAt> = Arc::new(data.to_vec());
    if let Err(e) = partitions_reader(NAME, image.clone(), len) {
        check(&e);
    }
    let menu = match inspect_reader(NAME, image.clone(), len) {
        Ok(menu) => menu,
        Err(e) => return check(&e),
    };
    assert!(menu.default < menu.entries.len());
    let first_title = menu.entries[0].title.clone();
    for choice in [None, Some("0"), Some("1"), Some(first_title.as_str())] {
        let entry = match menu.select(choice) {
            Ok(entry) => entry,
            Err(e) => {
                check(&e);
                continue;
            }
        };
        match load_reader(&menu, entry, image.clone(), len) {
            Ok(boot) => {
                assert!(boot.kernel.len() as u64 <= len);
                assert!(boot.initrd.as_ref().map_or(0, Vec::len) as u64 <= len.saturating_mul(entry.initrds.len() as u64));
                assert_eq!(boot.cmdline, entry.cmdline);
            }
            Err(e) => check(&e),
        }
    }
});
