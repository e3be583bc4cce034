//! A VM definition file (`tern run --config FILE`, and each definition `tern listen`
//! loads for an incoming migration) through `tern::definition::Loaded::parse`: TOML,
//! strict keys and types, every value's own check (sizes, names, MACs, TAP and bridge
//! names, serial and reboot settings) and the combination rules.
//!
//! Asserts: no panic; every refusal is one line naming the file; an accepted
//! definition's relative paths resolve under the file's directory.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tern::definition::Loaded;

const FILE: &str = "/etc/tern/fuzz.toml";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data).into_owned();
    match Loaded::parse(Path::new(FILE), text) {
        Ok(loaded) => {
            let _ = loaded.serial();
            for disk in &loaded.def.disks {
                let path = loaded.resolve(disk.path.get_ref());
                assert!(path.is_absolute(), "{} resolved to {}", disk.path.get_ref().display(), path.display());
            }
        }
        Err(e) => {
            let line = e.to_string();
            assert!(!line.contains('\n'), "a refusal of more than one line: {line:?}");
            assert!(line.contains(FILE), "a refusal that does not name the file: {line}");
        }
    }
});
