//! `tern boot-entries`: list what a disk image can boot (grub.cfg, BLS entries or
//! Debian's /vmlinuz links), read-only, without starting a guest.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use tern_bootdisk::{BootMenu, ConfigSource, FileRef, PartitionInfo};

/// Flags of `tern boot-entries` (-v, global, adds the partitions and their filesystems).
#[derive(Args, Debug)]
pub struct BootEntriesArgs {
    /// Raw disk image to inspect (opened read-only).
    #[arg(long, value_name = "PATH")]
    pub disk: PathBuf,
}

/// Runs `tern boot-entries`.
pub fn boot_entries(args: BootEntriesArgs, verbose: bool) -> Result<ExitCode> {
    if verbose {
        for p in tern_bootdisk::partitions(&args.disk)? {
            println!("{}", partition_line(&p));
        }
    }
    let menu = tern_bootdisk::inspect(&args.disk)?;
    print!("{}", render(&menu));
    Ok(ExitCode::SUCCESS)
}

fn partition_line(info: &PartitionInfo) -> String {
    let p = &info.partition;
    let kind = match &p.kind {
        tern_bootdisk::partitions::PartitionType::Gpt(g) => format!("GPT type {g}"),
        tern_bootdisk::partitions::PartitionType::Mbr(t) => format!("MBR type {t:#04x}"),
        tern_bootdisk::partitions::PartitionType::WholeDisk => "no partition table".to_string(),
    };
    let name = if p.index == 0 { "whole disk".to_string() } else { format!("partition {}", p.index) };
    let uuid = info.uuid.as_deref().map(|u| format!(", UUID {u}")).unwrap_or_default();
    format!("{name}: bytes {}..{} ({kind}): {}{uuid}", p.start, p.start + p.len, info.filesystem)
}

fn file(f: &FileRef) -> String {
    if f.partition == 0 {
        f.path.clone()
    } else {
        format!("(partition {}){}", f.partition, f.path)
    }
}

/// The source line, then one line per entry: index, `*` for the default, title, kernel,
/// initrds, command line.
pub fn render(menu: &BootMenu) -> String {
    let mut out = match &menu.source {
        ConfigSource::Grub { path, partition } => format!("grub.cfg on {} ({path})\n", place(*partition)),
        ConfigSource::Bls { partition } => format!("Boot Loader Specification entries on {}\n", place(*partition)),
        ConfigSource::DebianLinks { partition } => format!("/vmlinuz and /initrd.img links on {}\n", place(*partition)),
    };
    for (i, e) in menu.entries.iter().enumerate() {
        let mark = if i == menu.default { '*' } else { ' ' };
        let initrds = if e.initrds.is_empty() { "-".to_string() } else { e.initrds.iter().map(file).collect::<Vec<_>>().join(" + ") };
        out.push_str(&format!("{i:>3} {mark} {}  kernel {}  initrd {}  cmdline \"{}\"\n", e.title, file(&e.kernel), initrds, e.cmdline));
    }
    out
}

fn place(partition: u32) -> String {
    if partition == 0 {
        "the whole disk".to_string()
    } else {
        format!("partition {partition}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_entry_with_the_default_marked() {
        let f = |p: &str| FileRef { partition: 1, path: p.into() };
        let menu = BootMenu {
            disk: "d.img".into(),
            entries: vec![
                tern_bootdisk::BootEntry { title: "A".into(), id: None, kernel: f("/k"), initrds: vec![f("/u"), f("/i")], cmdline: "ro".into() },
                tern_bootdisk::BootEntry { title: "B".into(), id: None, kernel: f("/k2"), initrds: vec![], cmdline: String::new() },
            ],
            default: 1,
            source: ConfigSource::Grub { path: "/boot/grub/grub.cfg".into(), partition: 1 },
        };
        assert_eq!(
            render(&menu),
            "grub.cfg on partition 1 (/boot/grub/grub.cfg)\n  0   A  kernel (partition 1)/k  initrd (partition 1)/u + (partition 1)/i  cmdline \"ro\"\n  1 * B  kernel (partition 1)/k2  initrd -  cmdline \"\"\n"
        );
    }
}
