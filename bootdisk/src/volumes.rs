//! The disk's partitions, what each holds, and the readable ext2/3/4 filesystems; reading
//! files from them within limits.

use std::sync::Arc;

use ext4_view::{Ext4, Ext4Error};

use crate::error::{Fault, Problem};
use crate::filesystem::{identify, open_ext, FsKind};
use crate::image::{ReadAt, Window};
use crate::partitions::{self, Partition};

/// A readable ext2/3/4 filesystem on the disk.
pub(crate) struct Volume {
    pub partition: u32,
    pub len: u64,
    pub fs: Ext4,
    pub uuid: String,
    pub label: String,
}

/// A partition and what it holds, as `tern boot-entries -v` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: Partition,
    /// "ext2/3/4", "xfs", ..., or "BIOS boot" / "EFI system" for firmware partitions.
    pub filesystem: String,
    /// The ext2/3/4 filesystem's UUID, when it could be read.
    pub uuid: Option<String>,
}

/// Everything found on the disk before looking for a boot configuration.
pub(crate) struct Scan {
    pub infos: Vec<PartitionInfo>,
    pub volumes: Vec<Volume>,
    /// The first partition with an unsupported filesystem (not firmware, not swap).
    pub unsupported: Option<(u32, FsKind)>,
    /// The first ext2/3/4 filesystem that could not be opened.
    pub unreadable: Option<Fault>,
}

/// Partition table, filesystems by magic, and every ext2/3/4 filesystem opened.
pub(crate) fn scan(image: &Arc<dyn ReadAt>, len: u64) -> Result<Scan, Fault> {
    let parts = partitions::read(&**image, len)?;
    let mut s = Scan { infos: Vec::new(), volumes: Vec::new(), unsupported: None, unreadable: None };
    for p in parts {
        let w = Window { image: image.clone(), start: p.start, len: p.len };
        let kind = identify(&w);
        let mut info = PartitionInfo { partition: p.clone(), filesystem: kind.name().to_string(), uuid: None };
        if p.is_firmware() {
            info.filesystem = match &p.kind {
                partitions::PartitionType::Gpt(g) if g == partitions::GPT_BIOS_BOOT => "BIOS boot".into(),
                _ => format!("EFI system ({})", kind.name()),
            };
        } else if kind == FsKind::Ext {
            match open_ext(&w) {
                Ok(fs) => {
                    let uuid = fs.uuid().to_string();
                    let label = fs.label().to_str().unwrap_or("").to_string();
                    info.uuid = Some(uuid.clone());
                    s.volumes.push(Volume { partition: p.index, len: p.len, fs, uuid, label });
                }
                Err(problem) => {
                    info.filesystem = format!("ext2/3/4, unreadable: {problem}");
                    if s.unreadable.is_none() {
                        s.unreadable = Some(Fault::on(p.index, problem));
                    }
                }
            }
        } else if !matches!(kind, FsKind::Swap | FsKind::Unknown) && s.unsupported.is_none() {
            s.unsupported = Some((p.index, kind));
        }
        s.infos.push(info);
    }
    Ok(s)
}

/// Open the ext2/3/4 filesystem on partition `index` (0: the whole disk).
pub(crate) fn open_partition(image: &Arc<dyn ReadAt>, len: u64, index: u32) -> Result<(Ext4, u64), Fault> {
    let parts = partitions::read(&**image, len)?;
    let p = parts.into_iter().find(|p| p.index == index).ok_or(Problem::PartitionGone(index))?;
    let w = Window { image: image.clone(), start: p.start, len: p.len };
    if identify(&w) != FsKind::Ext {
        return Err(Fault::on(index, Problem::UnsupportedFs(identify(&w).name())));
    }
    let fs = open_ext(&w).map_err(|e| Fault::on(index, e))?;
    Ok((fs, p.len))
}

/// Does `path` exist (following symlinks)? A symlink loop or a corrupt directory is an error.
pub(crate) fn exists(fs: &Ext4, path: &str, what: &str) -> Result<bool, Problem> {
    match fs.metadata(path) {
        Ok(_) => Ok(true),
        Err(Ext4Error::NotFound | Ext4Error::NotADirectory) => Ok(false),
        Err(e) => Err(Problem::File { what: what.to_string(), path: path.to_string(), reason: e.to_string() }),
    }
}

/// Why a file of `size` bytes may not be read: larger than its partition or the limit.
pub(crate) fn size_problem(size: u64, partition_len: u64, limit: u64) -> Option<String> {
    if size > partition_len {
        Some(format!("its partition ({partition_len} bytes)"))
    } else if size > limit {
        Some(format!("the {} MiB limit", limit >> 20))
    } else {
        None
    }
}

/// The size of the regular file at `path` (symlinks followed), checked against the limits.
pub(crate) fn file_size(fs: &Ext4, partition_len: u64, path: &str, limit: u64, what: &str) -> Result<u64, Problem> {
    let meta = fs.metadata(path).map_err(|e| match e {
        Ext4Error::NotFound | Ext4Error::NotADirectory => Problem::Missing { what: what.to_string(), path: path.to_string() },
        e => Problem::File { what: what.to_string(), path: path.to_string(), reason: e.to_string() },
    })?;
    if !meta.file_type().is_regular_file() {
        return Err(Problem::File { what: what.to_string(), path: path.to_string(), reason: "is not a regular file".into() });
    }
    let size = meta.len();
    if let Some(limit) = size_problem(size, partition_len, limit) {
        return Err(Problem::TooLarge { what: what.to_string(), path: path.to_string(), size, limit });
    }
    Ok(size)
}

/// Append the file at `path` (already sized by `file_size`) to `out`.
pub(crate) fn read_into(fs: &Ext4, path: &str, size: u64, what: &str, out: &mut Vec<u8>) -> Result<(), Problem> {
    let fail = |e: Ext4Error| Problem::File { what: what.to_string(), path: path.to_string(), reason: e.to_string() };
    let mut file = fs.open(path).map_err(fail)?;
    let start = out.len();
    let end = start + size as usize;
    out.resize(end, 0);
    let mut at = start;
    while at < end {
        let n = file.read_bytes(&mut out[at..end]).map_err(fail)?;
        if n == 0 {
            return Err(Problem::File { what: what.to_string(), path: path.to_string(), reason: "ends before its size".into() });
        }
        at += n;
    }
    Ok(())
}

/// The whole file at `path`, at most `limit` bytes and at most its partition.
pub(crate) fn read_file(fs: &Ext4, partition_len: u64, path: &str, limit: u64, what: &str) -> Result<Vec<u8>, Problem> {
    let size = file_size(fs, partition_len, path, limit, what)?;
    let mut out = Vec::new();
    read_into(fs, path, size, what, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_larger_than_its_partition_or_the_limit_is_refused() {
        assert_eq!(size_problem(100, 1000, 512 << 20), None);
        assert_eq!(size_problem(2000, 1000, 512 << 20).as_deref(), Some("its partition (1000 bytes)"));
        assert_eq!(size_problem(600 << 20, 1 << 40, 512 << 20).as_deref(), Some("the 512 MiB limit"));
    }
}
