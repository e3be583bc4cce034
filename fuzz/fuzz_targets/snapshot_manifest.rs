//! The snapshot manifest as `tern restore` reads it (`vmm::snapshot::format::Manifest::
//! decode`): the input as the manifest file's bytes, and the input as the manifest's
//! JSON with a correct `crc32` line appended, so the fuzzer also reaches the JSON, the
//! format and version checks and the section and disk rules behind the checksum.
//!
//! Asserts: no panic; every refusal is one line; a manifest that is accepted encodes
//! to bytes that decode to the same manifest.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmm::snapshot::format::Manifest;

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut framed = data.to_vec();
    framed.extend_from_slice(format!("\ncrc32 {:08x}\n", crc32fast::hash(data)).as_bytes());
    check(&framed);
});

fn check(bytes: &[u8]) {
    match Manifest::decode(bytes) {
        Ok(manifest) => {
            let again = Manifest::decode(&manifest.encode()).expect("an accepted manifest re-encodes to one that decodes");
            assert_eq!(again, manifest);
        }
        Err(e) => assert!(!e.to_string().contains('\n'), "a refusal of more than one line: {e}"),
    }
}
