//! The snapshot directory's manifest: which sections it holds, each with its own
//! version, length and CRC32, and the disks the guest had. The manifest is JSON
//! followed by one line `crc32 XXXXXXXX` over the JSON, so a torn or edited manifest
//! is refused like a corrupt section. Reading checks everything against bounds
//! before it is used: the directory is user input.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::SnapshotError;

/// The manifest's `format` field.
pub const FORMAT_NAME: &str = "tern-snapshot";
/// Version of the directory layout and manifest.
pub const FORMAT_VERSION: u32 = 1;
/// The manifest's file name; written last, so a directory without it is no snapshot.
pub const MANIFEST_FILE: &str = "manifest";
/// Largest manifest accepted.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// Most disks a snapshot may record (PCI slots of bus 0).
pub const MAX_DISKS: usize = 31;

/// The sections and their files.
pub const CONFIG: &str = "config";
pub const STATE: &str = "state";
pub const MEMORY: &str = "memory";
/// Version of the memory section's layout (guest RAM regions back to back, 4 KiB
/// pages, zero pages may be holes).
pub const MEMORY_VERSION: u32 = 1;
/// Version of a disk copy section (a raw image).
pub const DISK_VERSION: u32 = 1;

/// The file a section is stored in. Names are fixed here, never taken from the
/// manifest, so a manifest cannot point outside the directory.
pub fn section_file(name: &str) -> Result<String, SnapshotError> {
    match name {
        CONFIG => Ok("config.bin".into()),
        STATE => Ok("state.bin".into()),
        MEMORY => Ok("memory.bin".into()),
        _ => match name.strip_prefix("disk").map(str::parse::<usize>) {
            Some(Ok(n)) if n < MAX_DISKS && name == disk_section(n) => Ok(format!("{name}.img")),
            _ => Err(SnapshotError::Malformed(format!("unknown section `{}`", name.escape_debug()))),
        },
    }
}

/// The section name of disk `index`.
pub fn disk_section(index: usize) -> String {
    format!("disk{index}")
}

/// One section of the snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Section {
    pub name: String,
    /// Version of the section's own encoding.
    pub version: u32,
    /// Length of its file in bytes.
    pub length: u64,
    /// CRC32 (IEEE) of the whole file, holes read as zeros.
    pub crc32: u32,
}

/// Which file a disk was: enough to tell whether a `--no-disks` restore is given
/// the same image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIdentity {
    pub dev: u64,
    pub ino: u64,
    pub mtime_s: i64,
    pub mtime_ns: i64,
}

/// A disk the guest had.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskRecord {
    /// The image the guest ran on when the snapshot was taken.
    pub path: PathBuf,
    pub size_bytes: u64,
    pub read_only: bool,
    pub serial: Option<String>,
    pub identity: FileIdentity,
    /// The section holding the copy; `None` with `--no-disks`.
    pub copy: Option<String>,
}

/// The manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    /// When the snapshot was taken (seconds since the epoch).
    pub created_unix_s: u64,
    pub sections: Vec<Section>,
    pub disks: Vec<DiskRecord>,
}

impl Manifest {
    /// The section `name`, or why the snapshot lacks it.
    pub fn section(&self, name: &str) -> Result<&Section, SnapshotError> {
        self.sections.iter().find(|s| s.name == name).ok_or_else(|| SnapshotError::Malformed(format!("the manifest lists no `{name}` section")))
    }

    /// The manifest file's bytes: JSON, then the CRC32 line.
    pub fn encode(&self) -> Vec<u8> {
        let json = serde_json::to_vec_pretty(self).unwrap_or_default();
        let mut out = json.clone();
        out.extend_from_slice(format!("\ncrc32 {:08x}\n", crc32fast::hash(&json)).as_bytes());
        out
    }

    /// Parses and checks a manifest file's bytes: its CRC, format name and version,
    /// and that every section and disk is one this tern knows, once.
    pub fn decode(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let text = std::str::from_utf8(bytes).map_err(|_| SnapshotError::Malformed("the manifest is not text".into()))?;
        let (json, trailer) = text
            .trim_end_matches('\n')
            .rsplit_once("\ncrc32 ")
            .ok_or_else(|| SnapshotError::Malformed("the manifest has no crc32 line (truncated?)".into()))?;
        let stored = u32::from_str_radix(trailer.trim(), 16)
            .map_err(|_| SnapshotError::Malformed(format!("the manifest's crc32 line `{}` is not a checksum", trailer.escape_debug())))?;
        let actual = crc32fast::hash(json.as_bytes());
        if stored != actual {
            return Err(SnapshotError::Checksum { what: MANIFEST_FILE.into(), stored, actual });
        }
        // The format and version first: another version's manifest may not parse.
        #[derive(Deserialize)]
        struct Head {
            format: String,
            version: u32,
        }
        let head: Head = serde_json::from_str(json).map_err(|e| SnapshotError::Malformed(format!("manifest: {e}")))?;
        if head.format != FORMAT_NAME {
            return Err(SnapshotError::Malformed(format!("the manifest is not a {FORMAT_NAME} manifest (format `{}`)", head.format.escape_debug())));
        }
        if head.version != FORMAT_VERSION {
            return Err(SnapshotError::Version { what: "snapshot format".into(), found: head.version, ours: FORMAT_VERSION });
        }
        let manifest: Manifest = serde_json::from_str(json).map_err(|e| SnapshotError::Malformed(format!("manifest: {e}")))?;
        manifest.check()?;
        Ok(manifest)
    }

    fn check(&self) -> Result<(), SnapshotError> {
        if self.disks.len() > MAX_DISKS {
            return Err(SnapshotError::Malformed(format!("the manifest lists {} disks (at most {MAX_DISKS})", self.disks.len())));
        }
        let mut seen = Vec::new();
        for s in &self.sections {
            section_file(&s.name)?;
            if seen.contains(&&s.name) {
                return Err(SnapshotError::Malformed(format!("section `{}` is listed twice", s.name)));
            }
            seen.push(&s.name);
        }
        for name in [CONFIG, STATE, MEMORY] {
            self.section(name)?;
        }
        for (index, disk) in self.disks.iter().enumerate() {
            if let Some(copy) = &disk.copy {
                if *copy != disk_section(index) {
                    return Err(SnapshotError::Malformed(format!("disk {index}'s copy is section `{}`, expected `{}`", copy.escape_debug(), disk_section(index))));
                }
                let section = self.section(copy)?;
                if section.length != disk.size_bytes {
                    return Err(SnapshotError::Malformed(format!(
                        "disk {index} is {} bytes but its copy is {} bytes",
                        disk.size_bytes, section.length
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Checks a section's recorded version against the one this tern reads.
pub fn check_version(section: &Section, ours: u32) -> Result<(), SnapshotError> {
    if section.version != ours {
        return Err(SnapshotError::Version { what: format!("section `{}`", section.name), found: section.version, ours });
    }
    Ok(())
}

/// Checks that the file at `path` has the section's length.
pub fn check_length(section: &Section, path: &Path) -> Result<(), SnapshotError> {
    let meta = std::fs::metadata(path).map_err(|e| SnapshotError::io(format!("section `{}`", section.name), path, e))?;
    if meta.len() != section.length {
        return Err(SnapshotError::Truncated { path: path.to_path_buf(), found: meta.len(), expected: section.length });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        let section = |name: &str, length| Section { name: name.into(), version: 1, length, crc32: 7 };
        Manifest {
            format: FORMAT_NAME.into(),
            version: FORMAT_VERSION,
            created_unix_s: 1,
            sections: vec![section(CONFIG, 10), section(STATE, 20), section(MEMORY, 4096), section("disk0", 512)],
            disks: vec![DiskRecord {
                path: "/d.img".into(),
                size_bytes: 512,
                read_only: false,
                serial: None,
                identity: FileIdentity { dev: 1, ino: 2, mtime_s: 3, mtime_ns: 4 },
                copy: Some("disk0".into()),
            }],
        }
    }

    #[test]
    fn a_manifest_round_trips() {
        assert_eq!(Manifest::decode(&manifest().encode()).unwrap(), manifest());
    }

    #[test]
    fn every_flipped_byte_and_every_truncation_is_refused() {
        let bytes = manifest().encode();
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x20;
            // A flip in the trailing newline or a hex digit's case may still decode to
            // the same manifest; it must never decode to a different one.
            if let Ok(m) = Manifest::decode(&flipped) {
                assert_eq!(m, manifest(), "byte {i}");
            }
        }
        for cut in 0..bytes.len() - 1 {
            assert!(Manifest::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn another_version_is_named() {
        let m = Manifest { version: 9, ..manifest() };
        let e = Manifest::decode(&m.encode()).unwrap_err().to_string();
        assert_eq!(e, "snapshot format version 9, this tern reads version 1");
        let s = Section { name: "state".into(), version: 3, length: 0, crc32: 0 };
        assert_eq!(check_version(&s, 2).unwrap_err().to_string(), "section `state` version 3, this tern reads version 2");
    }

    #[test]
    fn sections_name_only_known_files() {
        assert_eq!(section_file("disk3").unwrap(), "disk3.img");
        for bad in ["../etc", "disk", "disk03", "disk99", "disk-1", "other"] {
            assert!(section_file(bad).is_err(), "{bad}");
        }
        let mut m = manifest();
        m.sections.push(m.sections[0].clone());
        assert!(Manifest::decode(&m.encode()).unwrap_err().to_string().contains("twice"));
        let mut m = manifest();
        m.sections.retain(|s| s.name != STATE);
        assert!(Manifest::decode(&m.encode()).unwrap_err().to_string().contains("no `state` section"));
        let mut m = manifest();
        m.disks[0].size_bytes = 1024;
        assert!(Manifest::decode(&m.encode()).unwrap_err().to_string().contains("its copy is 512 bytes"));
    }
}
