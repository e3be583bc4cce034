//! The destination's reader: the one thread that touches the source's bytes (the TLS
//! handshake and records, frames, messages, page batches, the machine state blob). It
//! reads and writes its socket and writes pages into guest memory (plain memory
//! stores); everything that needs KVM or files is done by the thread that owns the
//! machine, on the decoded messages the reader hands it.

use seccompiler::BackendError;

use crate::rules::Rules;

pub(crate) fn rules() -> Result<Rules, BackendError> {
    let mut r = Rules::new();
    // The connection (its options and timeouts were set before confinement).
    r.allow(libc::SYS_read);
    r.allow(libc::SYS_recvfrom);
    r.allow(libc::SYS_write);
    r.allow(libc::SYS_sendto);
    // rustls writes its records with vectored writes (and may read so).
    r.allow(libc::SYS_writev);
    r.allow(libc::SYS_readv);
    // In the rig's L1 this thread opens a file once per receive (seen with
    // --seccomp log, and again on 2026-12-02 as SIGSYS with the malloc arena limit
    // already fixed by set_mode, so it is not malloc's /sys/devices/system/cpu/online).
    // The SIGSYS report names the path of a forbidden open, to identify it. Read-only
    // opens only: no write access, no create, no truncate.
    r.allow_read_only_open()?;
    Ok(r)
}
