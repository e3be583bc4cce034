//! The auto-converge throttle: parks and releases the vCPUs on a schedule.

use seccompiler::BackendError;

use crate::rules::Rules;

pub(crate) fn rules() -> Result<Rules, BackendError> {
    let mut r = Rules::new();
    // Kicking vCPUs out of KVM_RUN (pthread_kill is tgkill on getpid()).
    r.allow(libc::SYS_tgkill);
    r.allow(libc::SYS_getpid);
    Ok(r)
}
