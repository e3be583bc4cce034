//! The console's stdin forwarder: keystrokes into the UART's receive FIFO.

use seccompiler::BackendError;

use crate::rules::{arg_eq, Rules};

pub(crate) fn rules() -> Result<Rules, BackendError> {
    let mut r = Rules::new();
    // Keystrokes, from stdin only.
    r.allow_when(libc::SYS_read, vec![arg_eq(0, libc::STDIN_FILENO as u64)?])?;
    // The UART's interrupt (irqfd write) when input arrives.
    r.allow(libc::SYS_write);
    Ok(r)
}
