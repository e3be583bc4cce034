//! virtio-blk workers: wait on the queue's ioeventfd, move data between the image
//! and guest memory, interrupt the driver.

use seccompiler::BackendError;

use crate::rules::Rules;

pub(crate) fn rules() -> Result<Rules, BackendError> {
    let mut r = Rules::new();
    // Waiting for a kick or the stop eventfd.
    r.allow(libc::SYS_epoll_wait);
    r.allow(libc::SYS_epoll_pwait);
    // Clearing the notification eventfd.
    r.allow(libc::SYS_read);
    // Signalling the irqfd.
    r.allow(libc::SYS_write);
    // Reads and writes straight into guest buffers.
    r.allow(libc::SYS_preadv);
    r.allow(libc::SYS_pwritev);
    // VIRTIO_BLK_T_FLUSH (sync_data), and fsync where a filesystem wants it.
    r.allow(libc::SYS_fdatasync);
    r.allow(libc::SYS_fsync);
    // DISCARD (punch hole) and WRITE_ZEROES (zero range).
    r.allow(libc::SYS_fallocate);
    // WRITE_ZEROES where the filesystem cannot fallocate: zeroes written in chunks.
    r.allow(libc::SYS_pwrite64);
    Ok(r)
}
