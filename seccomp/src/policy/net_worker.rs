//! virtio-net workers: frames between the TAP and guest buffers, the queue
//! notifications, the transmit poll timer.

use seccompiler::BackendError;

use crate::ioctls::TUNSETOFFLOAD;
use crate::rules::Rules;

pub(crate) fn rules() -> Result<Rules, BackendError> {
    let mut r = Rules::new();
    // Waiting on the TAP, the queue eventfds, the timer and the stop eventfd, and
    // keeping the TAP's poll interest in step (add/modify/delete).
    r.allow(libc::SYS_epoll_wait);
    r.allow(libc::SYS_epoll_pwait);
    r.allow(libc::SYS_epoll_ctl);
    // Frames from and to the TAP.
    r.allow(libc::SYS_readv);
    r.allow(libc::SYS_writev);
    // Eventfd and timerfd counters; irqfd writes.
    r.allow(libc::SYS_read);
    r.allow(libc::SYS_write);
    // Arming the transmit poll timer.
    r.allow(libc::SYS_timerfd_settime);
    // Offloads the driver changes through the control queue.
    r.allow_ioctls(&[TUNSETOFFLOAD()])?;
    Ok(r)
}
