//! Errors: every one is a single line that starts with the disk it is about.

use thiserror::Error;

/// What went wrong while looking for something to boot on a disk image.
///
/// Display: `DISK: [partition N: ]PROBLEM`, one line: control characters that came
/// from the image (titles, paths) are escaped, and the line is at most 1000 characters.
#[derive(Debug, Error)]
#[error("{}", one_line(&format!("{disk}: {}{problem}", place(*.partition))))]
pub struct BootDiskError {
    /// The disk image, as the caller named it.
    pub disk: String,
    /// The partition the problem is on (0: the whole-disk filesystem), if any.
    pub partition: Option<u32>,
    /// The problem itself.
    pub problem: Problem,
}

/// Longest error line.
const MAX_LINE: usize = 1000;

/// `text` with control characters escaped, cut to `MAX_LINE` characters.
fn one_line(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if out.chars().count() >= MAX_LINE {
            out.push_str("...");
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn at_line(line: u32) -> String {
    if line == 0 {
        String::new()
    } else {
        format!(" line {line}")
    }
}

fn place(partition: Option<u32>) -> String {
    match partition {
        None => String::new(),
        Some(0) => "whole-disk filesystem: ".to_string(),
        Some(n) => format!("partition {n}: "),
    }
}

/// The problems an image (or a caller's choice) can have.
#[derive(Debug, Error)]
pub enum Problem {
    #[error("cannot open it read-only: {0}")]
    Open(String),
    #[error("cannot read {len} bytes at offset {offset}: {reason}")]
    Io { offset: u64, len: u64, reason: String },
    #[error("the image is empty")]
    Empty,
    #[error("GPT: {0}")]
    Gpt(String),
    #[error("MBR: {0}")]
    Mbr(String),
    #[error("partition {index} (bytes {start}..{end}) ends past the end of the image ({disk_len} bytes)")]
    PastEnd { index: u32, start: u64, end: u64, disk_len: u64 },
    #[error("holds {0}: unsupported (tern reads /boot from ext2/3/4)")]
    UnsupportedFs(&'static str),
    #[error("no partition table and no filesystem tern can read (tern reads /boot from ext2/3/4)")]
    NoFilesystem,
    #[error("no partition holds an ext2/3/4 filesystem (partitions: {0})")]
    NoExtFilesystem(String),
    #[error("ext2/3/4 filesystem: {0}")]
    Ext4(String),
    #[error("no /boot/grub/grub.cfg, /boot/grub2/grub.cfg, /boot/loader/entries/*.conf or /vmlinuz link on any ext2/3/4 filesystem (searched {0})")]
    NoBootConfig(String),
    #[error("{path}{}: {what}", at_line(*.line))]
    Syntax { path: String, line: u32, what: String },
    #[error("{0} has no boot entry with a kernel")]
    NoEntries(String),
    #[error("{what} has more than {limit} boot entries")]
    TooManyEntries { what: String, limit: usize },
    #[error("{what} {path}: {reason}")]
    File { what: String, path: String, reason: String },
    #[error("{what} names {path}, which does not exist")]
    Missing { what: String, path: String },
    #[error("{what} {path} is {size} bytes, more than {limit}")]
    TooLarge { what: String, path: String, size: u64, limit: String },
    #[error("{what} searches for filesystem {key}, which no partition holds")]
    SearchNotFound { what: String, key: String },
    #[error("{what} names partition {partition}, which holds no ext2/3/4 filesystem on this disk")]
    NotExtPartition { what: String, partition: u32 },
    #[error("no boot entry {choice:?} (choose an index 0..{count}, a title or an id)")]
    NoSuchEntry { choice: String, count: usize },
    #[error("the disk has no partition {0}")]
    PartitionGone(u32),
}

/// A problem located on a partition (or not), before the disk name is known.
#[derive(Debug)]
pub(crate) struct Fault {
    pub partition: Option<u32>,
    pub problem: Problem,
}

impl Fault {
    /// The problem on partition `n`.
    pub fn on(n: u32, problem: Problem) -> Self {
        Fault { partition: Some(n), problem }
    }

    /// The public error, naming `disk`.
    pub fn for_disk(self, disk: &str) -> BootDiskError {
        BootDiskError { disk: disk.to_string(), partition: self.partition, problem: self.problem }
    }
}

impl From<Problem> for Fault {
    fn from(problem: Problem) -> Self {
        Fault { partition: None, problem }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untrusted_text_cannot_break_the_line() {
        let e = Fault::on(2, Problem::Missing { what: "grub.cfg entry 'a\nb'".into(), path: "/k\r".into() }).for_disk("d.img");
        assert_eq!(e.to_string(), "d.img: partition 2: grub.cfg entry 'a\\nb' names /k\\r, which does not exist");
        let long = Fault::from(Problem::Missing { what: "x".repeat(5000), path: "/k".into() }).for_disk("d.img");
        assert_eq!(long.to_string().chars().count(), MAX_LINE + 3);
    }
}
