//! A listening socket's file (the control API's, the console's): created owner-only,
//! never replacing anything but a stale socket, and removed at the end only while it
//! is still ours.
//!
//! Why a private directory: the socket file gets its mode at `bind`, from the process
//! umask. Changing the umask around `bind` would race with every other thread creating
//! files (it is process-wide), and `chmod` after `bind` leaves a moment where anyone
//! may connect. So the socket is bound inside a fresh directory that only we can enter
//! (0700, next to the final path, so on the same filesystem), set to 0600 there, and
//! then hard-linked to its final name. `link` never replaces an existing file, so a
//! file that appeared at the path meanwhile is never clobbered either. No one but us
//! can reach the socket before it is 0600.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use super::SocketFileError;

/// Mode of the socket file: read and write (connect) for tern's user only.
pub const SOCKET_MODE: u32 = 0o600;

/// The socket file; removed when dropped if the path still names the socket we made
/// (same device and inode), so a newer tern's socket at the same path survives.
#[derive(Debug)]
pub struct OwnedSocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl OwnedSocketFile {
    /// Where the socket is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for OwnedSocketFile {
    fn drop(&mut self) {
        if identity(&self.path) == Some((self.dev, self.ino)) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Device and inode of the file at `path` itself (a symlink is not followed).
fn identity(path: &Path) -> Option<(u64, u64)> {
    fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Creates the listening socket at `path` with mode [`SOCKET_MODE`]; see the module
/// docs. `what` names the socket in errors and logs ("API socket").
pub fn create(path: &Path, what: &'static str) -> Result<(UnixListener, OwnedSocketFile), SocketFileError> {
    let bind_error = |source| SocketFileError::Bind { what, path: path.to_path_buf(), source };
    let parent = parent_dir(path);
    if !parent.is_dir() {
        return Err(SocketFileError::NoParent { what, path: path.to_path_buf(), parent: parent.to_path_buf() });
    }
    clear_stale(path, what)?;
    let private = PrivateDir::create(path).map_err(bind_error)?;
    let staged = private.dir.join("s");
    let listener = UnixListener::bind(&staged).map_err(bind_error)?;
    fs::set_permissions(&staged, fs::Permissions::from_mode(SOCKET_MODE)).map_err(bind_error)?;
    let staged_meta = fs::symlink_metadata(&staged).map_err(bind_error)?;
    fs::hard_link(&staged, path).map_err(bind_error)?;
    drop(private);
    Ok((listener, OwnedSocketFile { path: path.to_path_buf(), dev: staged_meta.dev(), ino: staged_meta.ino() }))
}

/// The directory `path` is in ("." for a bare name).
fn parent_dir(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Makes way for a new socket at `path`: nothing there is fine; a socket nobody
/// listens on (left by a tern that died) is removed; a live socket is `InUse`; any
/// other kind of file is refused and left alone.
fn clear_stale(path: &Path, what: &'static str) -> Result<(), SocketFileError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(SocketFileError::Probe { what, path: path.to_path_buf(), source }),
    };
    let file_type = meta.file_type();
    if !file_type.is_socket() {
        return Err(SocketFileError::NotASocket { what, path: path.to_path_buf(), kind: kind_name(&file_type) });
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(SocketFileError::InUse { what, path: path.to_path_buf() }),
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
            // Remove it only if it is still the socket just probed; if it changed, the
            // link in `create` fails rather than replace whatever is there now.
            if identity(path) == Some((meta.dev(), meta.ino())) {
                fs::remove_file(path).map_err(|source| SocketFileError::RemoveStale { what, path: path.to_path_buf(), source })?;
                tracing::info!(path = %path.display(), "removed a stale {what}");
            }
            Ok(())
        }
        Err(source) => Err(SocketFileError::Probe { what, path: path.to_path_buf(), source }),
    }
}

fn kind_name(file_type: &fs::FileType) -> &'static str {
    if file_type.is_symlink() {
        "symbolic link"
    } else if file_type.is_dir() {
        "directory"
    } else if file_type.is_file() {
        "regular file"
    } else if file_type.is_fifo() {
        "FIFO"
    } else if file_type.is_block_device() || file_type.is_char_device() {
        "device node"
    } else {
        "file that is not a socket"
    }
}

/// A directory only tern's user can enter, next to the socket path; removed (with the
/// staged socket name in it) when dropped.
struct PrivateDir {
    dir: PathBuf,
}

impl PrivateDir {
    fn create(socket_path: &Path) -> std::io::Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = parent_dir(socket_path).join(format!(".tern-sock-{}-{n}", std::process::id()));
        // Created 0700 less the umask (never wider); then exactly 0700 so we can use it.
        fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let private = Self { dir };
        fs::set_permissions(&private.dir, fs::Permissions::from_mode(0o700))?;
        Ok(private)
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = fs::remove_file(self.dir.join("s"));
        let _ = fs::remove_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A fresh directory for one test.
    fn test_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tern-owner-sock-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn the_socket_is_owner_only_and_nothing_is_left_behind() {
        let dir = test_dir("mode");
        let path = dir.join("api.sock");
        let (_listener, socket) = create(&path, "API socket").unwrap();
        let meta = fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(entries(&dir), vec!["api.sock"], "the private staging directory was removed");
        drop(socket);
        assert!(!path.exists(), "our own socket is removed on drop");
    }

    #[test]
    fn a_regular_file_a_directory_or_a_symlink_at_the_path_is_refused_and_left_intact() {
        let dir = test_dir("not-socket");
        let file = dir.join("file");
        fs::write(&file, b"precious").unwrap();
        let err = create(&file, "API socket").unwrap_err();
        assert!(matches!(err, SocketFileError::NotASocket { kind: "regular file", .. }), "{err}");
        assert!(err.to_string().contains("regular file"), "{err}");
        assert_eq!(fs::read(&file).unwrap(), b"precious");

        let sub = dir.join("sub");
        fs::create_dir(&sub).unwrap();
        assert!(matches!(create(&sub, "API socket"), Err(SocketFileError::NotASocket { kind: "directory", .. })));
        assert!(sub.is_dir());

        // A symlink to a stale socket is still a symlink: not ours to replace.
        let stale = dir.join("stale.sock");
        drop(UnixListener::bind(&stale).unwrap());
        let link = dir.join("link.sock");
        symlink(&stale, &link).unwrap();
        assert!(matches!(create(&link, "API socket"), Err(SocketFileError::NotASocket { kind: "symbolic link", .. })));
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert!(fs::symlink_metadata(&stale).unwrap().file_type().is_socket());
        assert_eq!(entries(&dir), vec!["file", "link.sock", "stale.sock", "sub"]);
    }

    #[test]
    fn a_stale_socket_is_replaced_and_a_live_one_is_in_use() {
        let dir = test_dir("stale");
        let path = dir.join("api.sock");
        // A socket file nobody listens on, as a killed tern leaves behind.
        drop(UnixListener::bind(&path).unwrap());
        assert!(UnixStream::connect(&path).is_err());
        let (listener, _socket) = create(&path, "API socket").unwrap();
        let _client = UnixStream::connect(&path).expect("the replacement listens");
        listener.accept().unwrap();
        assert_eq!(fs::symlink_metadata(&path).unwrap().mode() & 0o777, 0o600);
        // Now it is live: a second server is refused, and the socket stays.
        assert!(matches!(create(&path, "API socket"), Err(SocketFileError::InUse { .. })));
        assert!(UnixStream::connect(&path).is_ok());
    }

    #[test]
    fn a_missing_parent_directory_is_one_clear_error() {
        let dir = test_dir("no-parent");
        let path = dir.join("nowhere").join("console.sock");
        let err = create(&path, "console socket").unwrap_err();
        assert!(matches!(err, SocketFileError::NoParent { .. }), "{err}");
        assert_eq!(err.to_string(), format!("cannot create console socket {}: directory {} does not exist", path.display(), dir.join("nowhere").display()));
        assert!(entries(&dir).is_empty());
    }

    #[test]
    fn dropping_leaves_a_newer_socket_at_the_same_path_alone() {
        let dir = test_dir("newer");
        let path = dir.join("api.sock");
        let (_old_listener, old) = create(&path, "API socket").unwrap();
        // A newer tern took the path over (after deciding ours was stale).
        fs::remove_file(&path).unwrap();
        let _newer = UnixListener::bind(&path).unwrap();
        drop(old);
        assert!(fs::symlink_metadata(&path).unwrap().file_type().is_socket(), "the newer socket was deleted");
        assert!(UnixStream::connect(&path).is_ok());
    }
}
