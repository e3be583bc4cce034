//! Which configuration a disk boots by: grub.cfg, else BLS entries, else Debian's links.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::bls;
use crate::debian_links;
use crate::error::{Fault, Problem};
use crate::grub::{self, GrubPath, RootSpec};
use crate::volumes::{exists, read_file, Scan, Volume};
use crate::{BootEntry, BootMenu, ConfigSource, FileRef, MAX_CONFIG, MAX_ENTRIES};

/// grub.cfg locations, in order: on a root filesystem, on a separate /boot, grub2 naming.
const GRUB_CFGS: [&str; 4] = ["/boot/grub/grub.cfg", "/grub/grub.cfg", "/boot/grub2/grub.cfg", "/grub2/grub.cfg"];
/// BLS entry directories: on a root filesystem, on a separate /boot.
const BLS_DIRS: [&str; 2] = ["/boot/loader/entries", "/loader/entries"];
/// grubenv locations tried for BLS's `$kernelopts` and `saved_entry`.
const GRUBENVS: [&str; 4] = ["/boot/grub2/grubenv", "/grub2/grubenv", "/boot/grub/grubenv", "/grub/grubenv"];

fn fault(v: &Volume, p: Problem) -> Fault {
    Fault::on(v.partition, p)
}

/// Read a small file if it is there (None if not); a symlink loop or damage is an error.
fn read_optional(v: &Volume, path: &str, what: &str) -> Result<Option<Vec<u8>>, Fault> {
    if !exists(&v.fs, path, what).map_err(|p| fault(v, p))? {
        return Ok(None);
    }
    read_file(&v.fs, v.len, path, MAX_CONFIG, what).map(Some).map_err(|p| fault(v, p))
}

fn grubenv(v: &Volume, paths: &[String]) -> Result<HashMap<String, String>, Fault> {
    for p in paths {
        if let Some(bytes) = read_optional(v, p, "grubenv")? {
            return Ok(grub::parse_grubenv(&bytes));
        }
    }
    Ok(HashMap::new())
}

/// The boot menu of a scanned disk.
pub(crate) fn menu(name: &str, scan: &Scan) -> Result<BootMenu, Fault> {
    let disk = PathBuf::from(name);
    let mut empty_grub = None;
    for v in &scan.volumes {
        for path in GRUB_CFGS {
            let Some(bytes) = read_optional(v, path, "grub.cfg")? else { continue };
            match from_grub(scan, v, path, &bytes)? {
                Some((entries, default)) => {
                    let source = ConfigSource::Grub { path: path.to_string(), partition: v.partition };
                    return Ok(BootMenu { disk, entries, default, source });
                }
                None => {
                    empty_grub.get_or_insert((v.partition, path));
                }
            }
        }
    }
    for v in &scan.volumes {
        for dir in BLS_DIRS {
            if let Some((entries, default)) = from_bls(v, dir)? {
                return Ok(BootMenu { disk, entries, default, source: ConfigSource::Bls { partition: v.partition } });
            }
        }
    }
    for v in &scan.volumes {
        if let Some(entry) = from_links(v)? {
            return Ok(BootMenu { disk, entries: vec![entry], default: 0, source: ConfigSource::DebianLinks { partition: v.partition } });
        }
    }
    if let Some((partition, path)) = empty_grub {
        return Err(Fault::on(partition, Problem::NoEntries(path.to_string())));
    }
    Err(nothing_found(scan))
}

/// The most useful error when no configuration was found.
fn nothing_found(scan: &Scan) -> Fault {
    if !scan.volumes.is_empty() {
        let list: Vec<String> = scan.volumes.iter().map(|v| if v.partition == 0 { "the whole disk".into() } else { format!("partition {}", v.partition) }).collect();
        return Problem::NoBootConfig(list.join(", ")).into();
    }
    if let Some(f) = &scan.unreadable {
        return Fault { partition: f.partition, problem: Problem::Ext4(problem_text(&f.problem)) };
    }
    if let Some((index, kind)) = scan.unsupported {
        return Fault::on(index, Problem::UnsupportedFs(kind.name()));
    }
    if scan.infos.len() == 1 && scan.infos[0].partition.index == 0 {
        return Problem::NoFilesystem.into();
    }
    let list: Vec<String> = scan.infos.iter().map(|i| format!("{} {}", i.partition.index, i.filesystem)).collect();
    Problem::NoExtFilesystem(if list.is_empty() { "none".into() } else { list.join(", ") }).into()
}

fn problem_text(p: &Problem) -> String {
    match p {
        Problem::Ext4(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The partition a grub path is on.
fn resolve(scan: &Scan, cfg: &Volume, p: &GrubPath, what: &str) -> Result<FileRef, Fault> {
    let not_found = |key: String| fault(cfg, Problem::SearchNotFound { what: what.to_string(), key });
    let partition = match &p.root {
        RootSpec::Config => cfg.partition,
        RootSpec::Partition(n) => match scan.volumes.iter().find(|v| v.partition == *n) {
            Some(v) => v.partition,
            None => return Err(fault(cfg, Problem::NotExtPartition { what: what.to_string(), partition: *n })),
        },
        RootSpec::Uuid(u) => scan.volumes.iter().find(|v| v.uuid.eq_ignore_ascii_case(u)).ok_or_else(|| not_found(format!("UUID {u}")))?.partition,
        RootSpec::Label(l) => scan.volumes.iter().find(|v| &v.label == l).ok_or_else(|| not_found(format!("label {l}")))?.partition,
        RootSpec::File(f) => {
            let mut found = None;
            for v in &scan.volumes {
                if exists(&v.fs, f, what).map_err(|p| fault(v, p))? {
                    found = Some(v.partition);
                    break;
                }
            }
            found.ok_or_else(|| not_found(format!("with file {f}")))?
        }
    };
    Ok(FileRef { partition, path: p.path.clone() })
}

fn from_grub(scan: &Scan, v: &Volume, path: &str, bytes: &[u8]) -> Result<Option<(Vec<BootEntry>, usize)>, Fault> {
    let text = String::from_utf8_lossy(bytes);
    let dir = path.trim_end_matches("grub.cfg");
    let env = grubenv(v, &[format!("{dir}grubenv")])?;
    let menu = grub::parse_menu(&text, &env)
        .map_err(|(line, what)| fault(v, Problem::Syntax { path: path.to_string(), line, what }))?;
    let mut entries = Vec::new();
    let mut default = 0;
    for (i, e) in menu.entries.iter().enumerate() {
        let Some(kernel) = &e.kernel else { continue };
        let what = format!("grub.cfg entry '{}'", e.title);
        if i == menu.default {
            default = entries.len();
        }
        entries.push(BootEntry {
            title: e.title.clone(),
            id: e.id.clone(),
            kernel: resolve(scan, v, kernel, &what)?,
            initrds: e.initrds.iter().map(|p| resolve(scan, v, p, &what)).collect::<Result<_, _>>()?,
            cmdline: e.cmdline.clone(),
        });
    }
    Ok((!entries.is_empty()).then_some((entries, default)))
}

fn from_bls(v: &Volume, dir: &str) -> Result<Option<(Vec<BootEntry>, usize)>, Fault> {
    if !exists(&v.fs, dir, "BLS directory").map_err(|p| fault(v, p))? {
        return Ok(None);
    }
    let listing = v.fs.read_dir(dir).map_err(|e| fault(v, Problem::File { what: "BLS directory".into(), path: dir.into(), reason: e.to_string() }))?;
    let mut names = Vec::new();
    for item in listing {
        let item = item.map_err(|e| fault(v, Problem::File { what: "BLS directory".into(), path: dir.into(), reason: e.to_string() }))?;
        let name = item.file_name().as_str().unwrap_or("").to_string();
        if let Some(id) = name.strip_suffix(".conf") {
            if names.len() == MAX_ENTRIES {
                return Err(fault(v, Problem::TooManyEntries { what: dir.to_string(), limit: MAX_ENTRIES }));
            }
            names.push(id.to_string());
        }
    }
    if names.is_empty() {
        return Ok(None);
    }
    let env = grubenv(v, &GRUBENVS.map(String::from))?;
    let mut parsed = Vec::new();
    let mut total = 0u64;
    for id in &names {
        let path = format!("{dir}/{id}.conf");
        let bytes = read_file(&v.fs, v.len, &path, MAX_CONFIG, "BLS entry").map_err(|p| fault(v, p))?;
        total += bytes.len() as u64;
        if total > MAX_CONFIG * 16 {
            return Err(fault(v, Problem::File { what: "BLS entries".into(), path: dir.into(), reason: format!("more than {} MiB together", (MAX_CONFIG * 16) >> 20) }));
        }
        let e = bls::parse_entry(id, &String::from_utf8_lossy(&bytes), &env)
            .map_err(|what| fault(v, Problem::Syntax { path: path.clone(), line: 0, what }))?;
        if e.linux.is_some() {
            parsed.push(e);
        }
    }
    bls::sort(&mut parsed);
    // Entries under /boot/loader name paths relative to /boot when /boot is not separate.
    let on_root = dir.starts_with("/boot/");
    let locate = |p: &str| -> Result<String, Fault> {
        let p = if p.starts_with('/') { p.to_string() } else { format!("/{p}") };
        if on_root && !p.starts_with("/boot/") && !exists(&v.fs, &p, "BLS entry").map_err(|x| fault(v, x))? {
            return Ok(format!("/boot{p}"));
        }
        Ok(p)
    };
    let mut entries = Vec::new();
    for e in &parsed {
        let Some(linux) = &e.linux else { continue };
        entries.push(BootEntry {
            title: e.title.clone(),
            id: Some(e.id.clone()),
            kernel: FileRef { partition: v.partition, path: locate(linux)? },
            initrds: e.initrds.iter().map(|i| Ok(FileRef { partition: v.partition, path: locate(i)? })).collect::<Result<_, Fault>>()?,
            cmdline: e.options.clone(),
        });
    }
    if entries.is_empty() {
        return Ok(None);
    }
    let default = env.get("saved_entry").and_then(|s| entries.iter().position(|e| e.id.as_deref() == Some(s.as_str()))).unwrap_or(0);
    Ok(Some((entries, default)))
}

fn from_links(v: &Volume) -> Result<Option<BootEntry>, Fault> {
    for (kernel, initrd) in debian_links::LINKS {
        if !exists(&v.fs, kernel, "link").map_err(|p| fault(v, p))? {
            continue;
        }
        let initrds = if exists(&v.fs, initrd, "link").map_err(|p| fault(v, p))? {
            vec![FileRef { partition: v.partition, path: initrd.to_string() }]
        } else {
            Vec::new()
        };
        return Ok(Some(BootEntry {
            title: format!("Debian links ({kernel})"),
            id: None,
            kernel: FileRef { partition: v.partition, path: kernel.to_string() },
            initrds,
            cmdline: debian_links::cmdline(&v.uuid),
        }));
    }
    Ok(None)
}
