//! The snapshot thread: writes a snapshot directory (guest memory, machine state,
//! disk copies, the manifest) while the machine is paused, and parks and restarts
//! the device workers as a migration's stop-and-copy does. Unlike the migration
//! source it opens no sockets, but it creates, writes and renames files.

use seccompiler::BackendError;

use crate::ioctls::FICLONE;
use crate::rules::{arg_eq, Rules};

pub(crate) fn rules() -> Result<Rules, BackendError> {
    let mut r = Rules::new();
    // The staging directory (mkdir), the files in it and the disks to copy (openat
    // with O_CREAT | O_EXCL for new files, read-only for disks), their sizes and
    // identities (fstat/statx, lseek to the end), and the canonical disk paths
    // (realpath: readlink, getcwd).
    r.allow(libc::SYS_mkdir);
    r.allow(libc::SYS_mkdirat);
    r.allow(libc::SYS_openat);
    r.allow(libc::SYS_fstat);
    r.allow(libc::SYS_newfstatat);
    r.allow(libc::SYS_statx);
    r.allow(libc::SYS_lseek);
    r.allow(libc::SYS_readlink);
    r.allow(libc::SYS_readlinkat);
    r.allow(libc::SYS_getcwd);
    // Guest memory, the state and the manifest written at offsets; disks and the
    // copies read for copying and checksumming; the memory file sized (its trailing
    // zero pages a hole); everything made durable.
    r.allow(libc::SYS_pwrite64);
    r.allow(libc::SYS_pread64);
    r.allow(libc::SYS_read);
    r.allow(libc::SYS_write);
    r.allow(libc::SYS_ftruncate);
    r.allow(libc::SYS_fsync);
    r.allow(libc::SYS_fdatasync);
    // The commit: renameat2(RENAME_NOREPLACE); on failure the staging directory is
    // removed (getdents64, unlinkat, rmdir).
    r.allow(libc::SYS_renameat2);
    r.allow(libc::SYS_getdents64);
    r.allow(libc::SYS_unlinkat);
    r.allow(libc::SYS_unlink);
    r.allow(libc::SYS_rmdir);
    // std's remove_dir_all reads each directory through glibc's fdopendir, which
    // checks the descriptor's access mode (F_GETFL) and marks it close-on-exec
    // (F_SETFD); nothing else of fcntl.
    r.allow_when(libc::SYS_fcntl, vec![arg_eq(1, libc::F_GETFL as u64)?])?;
    r.allow_when(libc::SYS_fcntl, vec![arg_eq(1, libc::F_SETFD as u64)?])?;
    // Disk copies as reflinks where the filesystem can.
    r.allow_ioctls(&[FICLONE])?;
    // State capture, vCPU kicks, workers parked and restarted.
    r.merge(super::state_capture::rules()?);
    Ok(r)
}
