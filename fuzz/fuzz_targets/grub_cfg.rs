//! grub.cfg text (and a grubenv block) from an untrusted disk, through tern's grub.cfg
//! reader: the tokenizer, the block parser and the menu semantics. The input is split at
//! its first NUL byte: before it the grub.cfg, after it the grubenv block.
//!
//! Asserts: no panic, no hang, no stack overflow on deep nesting; a menu's default is
//! one of its entries (or 0 for an empty menu); at most `MAX_ENTRIES` entries.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_bootdisk::grub::{parse_grubenv, parse_menu, MAX_ENTRIES};

fuzz_target!(|data: &[u8]| {
    let (cfg, env) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let env = parse_grubenv(env);
    let text = String::from_utf8_lossy(cfg);
    if let Ok(menu) = parse_menu(&text, &env) {
        assert!(menu.entries.len() <= MAX_ENTRIES);
        assert!(menu.default < menu.entries.len().max(1));
    }
});
