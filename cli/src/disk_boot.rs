//! `tern run` without `--kernel`: boot what the disk image's own boot configuration
//! names (grub.cfg, BLS entries or Debian's /vmlinuz links, read by tern-bootdisk),
//! as pygrub does for Xen. The image is read again at every boot, so a kernel
//! upgraded inside the guest takes effect at its next reboot, as on a real machine.

use std::fs::File;
use std::io::{Seek, Write};
use std::os::fd::FromRawFd;
use std::path::PathBuf;
use std::sync::Arc;

use vmm::boot::{BootImage, BootProvider, BootSource};

/// What to boot from which disk.
#[derive(Clone, Debug)]
pub struct DiskBoot {
    /// The image (opened read-only at every boot).
    pub disk: PathBuf,
    /// `--boot-entry`: an index, a title or an id; `None`: the configuration's default.
    pub entry: Option<String>,
    /// `--cmdline`: replaces the entry's command line.
    pub cmdline: Option<String>,
    /// `--cmdline-append`: added to the entry's (or `--cmdline`'s) command line.
    pub append: Option<String>,
}

/// The serial console tern gives the guest when its command line names no console.
const SERIAL_CONSOLE: &str = "console=ttyS0";

/// The boot provider: inspects the disk, picks the entry, loads its kernel and
/// initrd into anonymous memory files. Errors are one line naming the disk.
pub fn provider(boot: DiskBoot) -> BootProvider {
    Arc::new(move || {
        let started = std::time::Instant::now();
        let menu = tern_bootdisk::inspect(&boot.disk).map_err(|e| e.to_string())?;
        let entry = menu.select(boot.entry.as_deref()).map_err(|e| e.to_string())?;
        let loaded = tern_bootdisk::load(&menu, entry).map_err(|e| e.to_string())?;
        let cmdline = command_line(boot.cmdline.as_deref().unwrap_or(&loaded.cmdline), boot.append.as_deref());
        let read_ms = started.elapsed().as_millis() as u64;
        tracing::info!(disk = %boot.disk.display(), entry = %loaded.title, kernel = %entry.kernel.path, %cmdline, read_ms,
            "booting from the disk's boot configuration");
        let label = |what: &str, path: &str| format!("{} ({what} {path} of '{}')", boot.disk.display(), loaded.title);
        let kernel = memory_file("tern-kernel", &loaded.kernel).map_err(|e| format!("cannot hold the kernel in memory: {e}"))?;
        let initrd = match &loaded.initrd {
            Some(bytes) => Some(memory_file("tern-initrd", bytes).map_err(|e| format!("cannot hold the initrd in memory: {e}"))?),
            None => None,
        };
        let initrd_path = entry.initrds.iter().map(|f| f.path.as_str()).collect::<Vec<_>>().join(" ");
        Ok(BootSource {
            kernel: BootImage { label: label("kernel", &entry.kernel.path), file: kernel },
            initrd: initrd.map(|file| BootImage { label: label("initrd", &initrd_path), file }),
            cmdline,
        })
    })
}

/// The entry's command line plus `append`, plus `console=ttyS0` when neither names a
/// console (a disk image's entry usually has none: its console is a screen).
pub fn command_line(base: &str, append: Option<&str>) -> String {
    let mut words: Vec<&str> = base.split_whitespace().collect();
    if let Some(extra) = append {
        words.extend(extra.split_whitespace());
    }
    if !words.iter().any(|w| w.starts_with("console=")) {
        words.push(SERIAL_CONSOLE);
    }
    words.join(" ")
}

/// An anonymous, unlinked memory file holding `bytes`, positioned at its start.
fn memory_file(name: &str, bytes: &[u8]) -> std::io::Result<File> {
    let cname = std::ffi::CString::new(name).map_err(std::io::Error::other)?;
    // SAFETY: a NUL-terminated name and valid flags; the result is checked.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: memfd_create just returned this descriptor, owned by nothing else.
    let mut file = unsafe { File::from_raw_fd(fd) };
    file.write_all(bytes)?;
    file.rewind()?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_console_is_added_only_when_none_is_named() {
        assert_eq!(command_line("root=UUID=x ro quiet", None), "root=UUID=x ro quiet console=ttyS0");
        assert_eq!(command_line("root=/dev/vda1 console=hvc0", None), "root=/dev/vda1 console=hvc0");
        assert_eq!(command_line("ro", Some("console=ttyS0,115200 tern.x=1")), "ro console=ttyS0,115200 tern.x=1");
        assert_eq!(command_line("  ro  ", Some("  a  ")), "ro a console=ttyS0");
        assert_eq!(command_line("", None), "console=ttyS0");
    }

    #[test]
    fn a_memory_file_reads_back_from_its_start() {
        let mut file = memory_file("t", b"kernel bytes").unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut file, &mut text).unwrap();
        assert_eq!(text, "kernel bytes");
    }
}
