//! Sections as files: written with their CRC32 and made durable, read back with
//! their length, version and CRC32 checked; the temporary directory a snapshot is
//! written into, removed on failure and renamed into place (without replacing
//! anything) once everything, the manifest last, is on disk.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::format::{self, Section};
use super::SnapshotError;

/// Mode of every file and directory a snapshot creates (guest memory is private).
pub const MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;

/// Creates `path` (it must not exist), owner-only.
pub fn create_new(path: &Path) -> Result<File, SnapshotError> {
    OpenOptions::new().read(true).write(true).create_new(true).mode(MODE).open(path).map_err(|e| SnapshotError::io("cannot create", path, e))
}

/// Writes `bytes` as section `name` into `dir`; returns its manifest entry.
pub fn write_section(dir: &Path, name: &str, version: u32, bytes: &[u8]) -> Result<Section, SnapshotError> {
    let path = dir.join(format::section_file(name)?);
    let file = create_new(&path)?;
    file.write_all_at(bytes, 0).map_err(|e| SnapshotError::io("cannot write", &path, e))?;
    file.sync_all().map_err(|e| SnapshotError::io("cannot sync", &path, e))?;
    Ok(Section { name: name.into(), version, length: bytes.len() as u64, crc32: crc32fast::hash(bytes) })
}

/// Reads small section `name` (at most `limit` bytes) from `dir`, checking its
/// version, length and CRC32 against the manifest's entry.
pub fn read_section(dir: &Path, section: &Section, ours: u32, limit: u64) -> Result<Vec<u8>, SnapshotError> {
    format::check_version(section, ours)?;
    if section.length > limit {
        return Err(SnapshotError::Malformed(format!("section `{}` is {} bytes (at most {limit})", section.name, section.length)));
    }
    let path = dir.join(format::section_file(&section.name)?);
    format::check_length(section, &path)?;
    let mut bytes = Vec::with_capacity(section.length as usize);
    let file = File::open(&path).map_err(|e| SnapshotError::io("cannot open", &path, e))?;
    file.take(section.length + 1).read_to_end(&mut bytes).map_err(|e| SnapshotError::io("cannot read", &path, e))?;
    if bytes.len() as u64 != section.length {
        return Err(SnapshotError::Truncated { path, found: bytes.len() as u64, expected: section.length });
    }
    let actual = crc32fast::hash(&bytes);
    if actual != section.crc32 {
        return Err(SnapshotError::Checksum { what: format!("section `{}` ({})", section.name, path.display()), stored: section.crc32, actual });
    }
    Ok(bytes)
}

/// CRC32 of a whole file read in 1 MiB pieces (holes read as zeros).
pub fn crc32_of(file: &File, path: &Path, length: u64, mut progress: impl FnMut(u64)) -> Result<u32, SnapshotError> {
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    while offset < length {
        let n = (length - offset).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], offset).map_err(|e| SnapshotError::io("cannot read", path, e))?;
        hasher.update(&buf[..n]);
        offset += n as u64;
        progress(offset);
    }
    Ok(hasher.finalize())
}

/// Checks a large section (memory, a disk copy): version and length always, its
/// CRC32 only when `verify` (it reads the whole file).
pub fn check_large_section(dir: &Path, section: &Section, ours: u32, verify: bool) -> Result<PathBuf, SnapshotError> {
    format::check_version(section, ours)?;
    let path = dir.join(format::section_file(&section.name)?);
    format::check_length(section, &path)?;
    if verify {
        let file = File::open(&path).map_err(|e| SnapshotError::io("cannot open", &path, e))?;
        let actual = crc32_of(&file, &path, section.length, |_| {})?;
        if actual != section.crc32 {
            return Err(SnapshotError::Checksum { what: format!("section `{}` ({})", section.name, path.display()), stored: section.crc32, actual });
        }
    }
    Ok(path)
}

/// The directory a snapshot is written into before it is committed: a hidden
/// sibling of the target, so the rename stays on one filesystem. Removed with
/// everything in it unless [`Staging::commit`] renamed it into place.
pub struct Staging {
    pub dir: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl Staging {
    /// Checks the target (must not exist; its parent must be a writable directory)
    /// and creates the staging directory beside it.
    pub fn create(target: &Path) -> Result<Self, SnapshotError> {
        let name = target
            .file_name()
            .ok_or_else(|| SnapshotError::Target(format!("snapshot target {} names no directory", target.display())))?;
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        match std::fs::symlink_metadata(target) {
            Ok(_) => return Err(SnapshotError::Target(format!("snapshot target {} already exists", target.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(SnapshotError::io("snapshot target", target, e)),
        }
        let meta = std::fs::metadata(&parent).map_err(|e| SnapshotError::io("snapshot target's directory", &parent, e))?;
        if !meta.is_dir() {
            return Err(SnapshotError::Target(format!("snapshot target's parent {} is not a directory", parent.display())));
        }
        let mut staging = name.to_os_string();
        staging.push(format!(".tern-partial-{}", std::process::id()));
        let mut dot = std::ffi::OsString::from(".");
        dot.push(staging);
        let dir = parent.join(dot);
        std::fs::DirBuilder::new()
            .mode(DIR_MODE)
            .create(&dir)
            .map_err(|e| SnapshotError::io("cannot create the snapshot's staging directory", &dir, e))?;
        Ok(Self { dir, target: target.to_path_buf(), committed: false })
    }

    /// Makes the directory's entries durable and renames it to the target, failing
    /// (and replacing nothing) if the target appeared meanwhile.
    pub fn commit(mut self) -> Result<PathBuf, SnapshotError> {
        sync_dir(&self.dir)?;
        rename_noreplace(&self.dir, &self.target)?;
        self.committed = true;
        if let Some(parent) = self.target.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        Ok(self.target.clone())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                tracing::warn!("removing the partial snapshot {}: {e}", self.dir.display());
            }
        }
    }
}

fn sync_dir(dir: &Path) -> Result<(), SnapshotError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| SnapshotError::io("cannot sync directory", dir, e))
}

fn cstring(path: &Path) -> Result<CString, SnapshotError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| SnapshotError::Target(format!("{} contains a NUL byte", path.display())))
}

/// `renameat2(RENAME_NOREPLACE)`: never replaces an existing target.
fn rename_noreplace(from: &Path, to: &Path) -> Result<(), SnapshotError> {
    let (f, t) = (cstring(from)?, cstring(to)?);
    // SAFETY: both paths are NUL-terminated strings that live across the call.
    let rc = unsafe { libc::renameat2(libc::AT_FDCWD, f.as_ptr(), libc::AT_FDCWD, t.as_ptr(), libc::RENAME_NOREPLACE) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EEXIST) {
            return Err(SnapshotError::Target(format!("snapshot target {} appeared while the snapshot was written", to.display())));
        }
        return Err(SnapshotError::io("cannot move the snapshot into place at", to, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tern-snapshot-files-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_section_reads_back_and_damage_is_named() {
        let dir = scratch("section");
        let s = write_section(&dir, "state", 2, b"machine state").unwrap();
        assert_eq!(read_section(&dir, &s, 2, 1024).unwrap(), b"machine state");
        let e = read_section(&dir, &s, 3, 1024).unwrap_err().to_string();
        assert_eq!(e, "section `state` version 2, this tern reads version 3");
        assert!(read_section(&dir, &s, 2, 4).unwrap_err().to_string().contains("at most 4"));
        let path = dir.join("state.bin");
        // One flipped byte.
        std::fs::write(&path, b"machine stbte").unwrap();
        let e = read_section(&dir, &s, 2, 1024).unwrap_err().to_string();
        assert!(e.contains("is corrupt: its CRC32"), "{e}");
        // Truncated.
        std::fs::write(&path, b"machine").unwrap();
        let e = read_section(&dir, &s, 2, 1024).unwrap_err().to_string();
        assert!(e.contains("is 7 bytes, the manifest says 13"), "{e}");
        // Missing.
        std::fs::remove_file(&path).unwrap();
        let e = read_section(&dir, &s, 2, 1024).unwrap_err().to_string();
        assert!(e.contains("state.bin") && e.contains("No such file"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn staging_is_removed_unless_committed_and_never_replaces() {
        let dir = scratch("staging");
        let target = dir.join("snap");
        let staging = Staging::create(&target).unwrap();
        std::fs::write(staging.dir.join("memory.bin"), b"x").unwrap();
        let partial = staging.dir.clone();
        drop(staging);
        assert!(!partial.exists() && !target.exists());

        let staging = Staging::create(&target).unwrap();
        std::fs::write(staging.dir.join("manifest"), b"x").unwrap();
        assert_eq!(staging.commit().unwrap(), target);
        assert!(target.join("manifest").exists());
        let e = Staging::create(&target).err().unwrap().to_string();
        assert!(e.contains("already exists"), "{e}");

        let other = dir.join("other");
        let staging = Staging::create(&other).unwrap();
        std::fs::create_dir(&other).unwrap();
        let e = staging.commit().unwrap_err().to_string();
        assert!(e.contains("appeared"), "{e}");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2, "the partial directory is gone");
        let e = Staging::create(&dir.join("missing/snap")).err().unwrap().to_string();
        assert!(e.contains("No such file"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
