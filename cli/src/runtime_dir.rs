//! Where named VMs live on this host: `/run/tern/NAME/` for root, else
//! `$XDG_RUNTIME_DIR/tern/NAME/` (`$TERN_RUNTIME_DIR/NAME/` when that is set), each
//! directory owner-only (0700), holding the VM's
//! `api.sock` and (by default) `console.sock`, and a `lock` file the running tern
//! holds `flock`ed, so a second `tern run --name NAME` is refused at once while the
//! first runs and a crashed one leaves nothing that blocks a restart (stale sockets
//! are replaced by `owner_socket`).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of the runtime directories.
pub const DIR_MODE: u32 = 0o700;
/// The API socket's file name in a VM's directory.
pub const API_SOCKET: &str = "api.sock";
/// The console socket's file name in a VM's directory.
pub const CONSOLE_SOCKET: &str = "console.sock";
/// The file a running tern holds locked.
const LOCK_FILE: &str = "lock";
/// The file naming the VM's migration TLS directory (its definition's
/// `[migration] tls-dir`), which `tern migrate NAME` uses when given no `--tls-dir`.
const TLS_DIR_FILE: &str = "migration-tls-dir";
/// The longest path that file may hold.
const MAX_RECORDED_PATH: u64 = 4096;

/// Why a VM's runtime directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeDirError {
    /// Not root and no `$XDG_RUNTIME_DIR`.
    #[error("no runtime directory for named VMs: XDG_RUNTIME_DIR is not set (run as root for /run/tern, or set it)")]
    NoBase,
    /// A directory could not be made or checked.
    #[error("runtime directory {path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The path exists but is not a directory of ours.
    #[error("runtime directory {path} is not a directory owned by this user; refusing to use it")]
    NotOurs {
        /// The path.
        path: PathBuf,
    },
    /// Another tern holds the lock.
    #[error("VM {name} is already running (runtime directory {dir})")]
    Running {
        /// The VM's name.
        name: String,
        /// Its directory.
        dir: PathBuf,
    },
}

/// The variable that, set to an absolute path, replaces the runtime directory (for
/// several "hosts" on one machine, as the tests run a source and a destination).
pub const OVERRIDE_VAR: &str = "TERN_RUNTIME_DIR";

/// The directory all named VMs of this user are under.
pub fn base() -> Result<PathBuf, RuntimeDirError> {
    if let Some(dir) = std::env::var_os(OVERRIDE_VAR).filter(|d| Path::new(d).is_absolute()) {
        return Ok(PathBuf::from(dir));
    }
    // SAFETY: geteuid only reads the process's credentials.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(PathBuf::from("/run/tern"));
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => Ok(Path::new(&dir).join("tern")),
        _ => Err(RuntimeDirError::NoBase),
    }
}

/// A named VM's directory (not created).
pub fn vm_dir(base: &Path, name: &str) -> PathBuf {
    base.join(name)
}

/// A running VM's claim on its directory: the lock is held until the process ends.
#[derive(Debug)]
pub struct VmDir {
    /// The directory.
    pub dir: PathBuf,
    _lock: File,
}

impl VmDir {
    /// Its API socket's path.
    pub fn api_socket(&self) -> PathBuf {
        self.dir.join(API_SOCKET)
    }

    /// Its console socket's path.
    pub fn console_socket(&self) -> PathBuf {
        self.dir.join(CONSOLE_SOCKET)
    }

    /// Records the VM's migration TLS directory for `tern migrate NAME` (`None`:
    /// removes an earlier run's record).
    pub fn record_tls_dir(&self, tls_dir: Option<&Path>) -> Result<(), RuntimeDirError> {
        let path = self.dir.join(TLS_DIR_FILE);
        let io_err = |source| RuntimeDirError::Io {
            path: path.clone(),
            source,
        };
        let Some(tls_dir) = tls_dir else {
            return match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(e)),
                _ => Ok(()),
            };
        };
        // An absolute path: `tern migrate` may run in any directory.
        let tls_dir = fs::canonicalize(tls_dir).map_err(io_err)?;
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io_err)?;
        io::Write::write_all(&mut file, tls_dir.as_os_str().as_bytes()).map_err(io_err)
    }
}

/// The migration TLS directory the VM in `dir` recorded, if any.
pub fn recorded_tls_dir(dir: &Path) -> Option<PathBuf> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(dir.join(TLS_DIR_FILE))
        .ok()?;
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut io::Read::take(file, MAX_RECORDED_PATH), &mut bytes).ok()?;
    (!bytes.is_empty()).then(|| PathBuf::from(std::ffi::OsString::from_vec(bytes)))
}

/// Makes `dir` (mode 0700) if missing, and checks an existing one is a real
/// directory (not a symlink) owned by this user, tightening its mode to 0700.
fn ensure_dir(dir: &Path) -> Result<(), RuntimeDirError> {
    let io_err = |source| RuntimeDirError::Io {
        path: dir.to_path_buf(),
        source,
    };
    match fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err(e)),
    }
    let meta = fs::symlink_metadata(dir).map_err(io_err)?;
    // SAFETY: geteuid only reads the process's credentials.
    let uid = unsafe { libc::geteuid() };
    if !meta.file_type().is_dir() || meta.uid() != uid {
        return Err(RuntimeDirError::NotOurs {
            path: dir.to_path_buf(),
        });
    }
    if meta.mode() & 0o777 != DIR_MODE {
        fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE)).map_err(io_err)?;
    }
    Ok(())
}

/// Claims `base/NAME` for this process: makes the directories and takes the lock, or
/// says the VM is already running.
pub fn claim(base: &Path, name: &str) -> Result<VmDir, RuntimeDirError> {
    if let Some(parent) = base.parent() {
        if !parent.as_os_str().is_empty() && !parent.is_dir() {
            return Err(RuntimeDirError::Io {
                path: parent.to_path_buf(),
                source: io::ErrorKind::NotFound.into(),
            });
        }
    }
    ensure_dir(base)?;
    let dir = vm_dir(base, name);
    ensure_dir(&dir)?;
    let lock_path = dir.join(LOCK_FILE);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&lock_path)
        .map_err(|source| RuntimeDirError::Io {
            path: lock_path.clone(),
            source,
        })?;
    // SAFETY: flock on a descriptor we own; no memory is passed.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(RuntimeDirError::Running {
                name: name.to_string(),
                dir,
            });
        }
        return Err(RuntimeDirError::Io {
            path: lock_path,
            source: e,
        });
    }
    Ok(VmDir { dir, _lock: lock })
}

/// Whether a tern holds `dir`'s lock (the VM is running).
pub fn is_claimed(dir: &Path) -> bool {
    let Ok(lock) = File::open(dir.join(LOCK_FILE)) else {
        return false;
    };
    // SAFETY: flock on a descriptor we own; no memory is passed.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } < 0 {
        return true;
    }
    false
}

/// The names of the VMs with a directory under `base`, sorted.
pub fn names(base: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(base)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| crate::vm_name::validate_name(n).is_ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_claimed_once_and_free_again_when_dropped() {
        let base = std::env::temp_dir()
            .join(format!("tern-rundir-{}", std::process::id()))
            .join("tern");
        let _ = fs::remove_dir_all(base.parent().unwrap());
        fs::create_dir_all(base.parent().unwrap()).unwrap();
        let first = claim(&base, "vm1").unwrap();
        assert_eq!(first.api_socket(), base.join("vm1/api.sock"));
        assert_eq!(first.console_socket(), base.join("vm1/console.sock"));
        assert_eq!(fs::metadata(&base).unwrap().mode() & 0o777, 0o700);
        assert_eq!(
            fs::metadata(base.join("vm1")).unwrap().mode() & 0o777,
            0o700
        );
        assert!(is_claimed(&first.dir));
        // The migration TLS directory is recorded as an absolute path, and removed.
        assert_eq!(recorded_tls_dir(&first.dir), None);
        first.record_tls_dir(Some(&base)).unwrap();
        assert_eq!(
            recorded_tls_dir(&first.dir),
            Some(fs::canonicalize(&base).unwrap())
        );
        first.record_tls_dir(None).unwrap();
        assert_eq!(recorded_tls_dir(&first.dir), None);
        let e = claim(&base, "vm1").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "VM vm1 is already running (runtime directory {})",
                base.join("vm1").display()
            )
        );
        assert_eq!(names(&base), vec!["vm1".to_string()]);
        drop(first);
        assert!(!is_claimed(&base.join("vm1")));
        // A loose mode is tightened; a symlink is refused.
        fs::set_permissions(base.join("vm1"), fs::Permissions::from_mode(0o755)).unwrap();
        let again = claim(&base, "vm1").unwrap();
        assert_eq!(fs::metadata(&again.dir).unwrap().mode() & 0o777, 0o700);
        std::os::unix::fs::symlink("/tmp", base.join("evil")).unwrap();
        assert!(matches!(
            claim(&base, "evil"),
            Err(RuntimeDirError::NotOurs { .. })
        ));
        let _ = fs::remove_dir_all(base.parent().unwrap());
    }
}
