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
    // No file opens. The one openat seen here in the rig, once per receive, was
    // glibc's malloc reading /proc/sys/vm/overcommit_memory before shrinking a thread
    // heap; set_mode settles malloc so that it never does (mode.rs, settle_malloc).
    Ok(r)
}
