//! What a received or restored guest boots at its next reset: this side's `--kernel`
//! (with `--initrd`, `--cmdline`) when given, else the boot source the source machine
//! recorded when it can be found here (its kernel and initrd at the same paths; for a
//! disk boot, this side's disk of the same index), else nothing: a reset then ends
//! tern with a line saying why.

use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use migration::messages::{BootRecord, BootSourceRecord};
use vmm::boot::BootProvider;
use vmm::OnReboot;

use crate::disk_boot::{self, DiskBoot};
use crate::run::{self, DEFAULT_CMDLINE};
use crate::session::Reboots;

/// Flags of `tern receive` and `tern restore` for the guest's next boot.
#[derive(Args, Debug, Default, Clone)]
pub struct NextBootArgs {
    /// The kernel the guest boots at its next reset [default: the one the source
    /// machine booted, if that path exists here; a disk boot boots this side's disk].
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// Initial ramdisk for --kernel.
    #[arg(long, value_name = "PATH", requires = "kernel")]
    pub initrd: Option<PathBuf>,
    /// Command line for --kernel [default: the source's, else console=ttyS0].
    #[arg(long, value_name = "STR", requires = "kernel")]
    pub cmdline: Option<String>,
    /// What a guest reset does: restart boots the guest again in this process, exit
    /// ends tern [default: what the source machine was told].
    #[arg(long, value_name = "restart|exit", value_parser = run::parse_on_reboot)]
    pub on_reboot: Option<OnReboot>,
}

/// What the guest boots at its next reset, as resolved here.
pub struct NextBoot {
    /// How to boot it (`None`: nothing found; a reset ends tern).
    pub provider: Option<BootProvider>,
    /// What this machine records in turn for a later migration or snapshot.
    pub record: Option<BootRecord>,
    /// What a reset does.
    pub on_reboot: OnReboot,
    /// Why the guest is not booted again, when it is not.
    pub not_booted_again: Option<String>,
}

impl NextBoot {
    /// What a reset does, for `session::serve`.
    pub fn reboots(self) -> Reboots {
        match self.not_booted_again {
            Some(why) => Reboots::NotBootedAgain(why),
            None => Reboots::Do(self.on_reboot),
        }
    }
}

impl NextBootArgs {
    /// Checks --kernel and --initrd before anything waits or is built.
    pub fn validate(&self) -> Result<()> {
        if let Some(kernel) = &self.kernel {
            run::check_kernel(kernel)?;
        }
        if let Some(initrd) = &self.initrd {
            run::check_readable_file(initrd, "initrd")?;
        }
        Ok(())
    }

    /// Resolves the next boot from these flags, the source's `recorded` boot source and
    /// this side's disk images (in the guest's order).
    pub fn resolve(&self, recorded: Option<&BootRecord>, disks: &[PathBuf]) -> NextBoot {
        let restart = match self.on_reboot {
            Some(choice) => choice == OnReboot::Restart,
            None => recorded.is_none_or(|r| r.restart),
        };
        let found = match (&self.kernel, recorded) {
            (Some(kernel), _) => {
                let cmdline = match (&self.cmdline, recorded.map(|r| &r.source)) {
                    (Some(cmdline), _) => cmdline.clone(),
                    (None, Some(BootSourceRecord::Kernel { cmdline, .. })) => cmdline.clone(),
                    (None, _) => DEFAULT_CMDLINE.to_string(),
                };
                kernel_boot(kernel.clone(), self.initrd.clone(), cmdline)
            }
            (None, Some(record)) => recorded_boot(&record.source, disks),
            (None, None) => Err("the source machine recorded no boot source; give --kernel".to_string()),
        };
        match found {
            Ok((provider, source)) => NextBoot {
                provider: Some(provider),
                record: Some(BootRecord { source, restart }),
                on_reboot: if restart { OnReboot::Restart } else { OnReboot::Exit },
                not_booted_again: None,
            },
            // The source's record is kept for a later hop, where the files may be.
            Err(why) => NextBoot { provider: None, record: recorded.cloned(), on_reboot: OnReboot::Exit, not_booted_again: Some(why) },
        }
    }
}

/// A kernel boot (paths made absolute, so another host or directory finds them).
fn kernel_boot(kernel: PathBuf, initrd: Option<PathBuf>, cmdline: String) -> Result<(BootProvider, BootSourceRecord), String> {
    let absolute = |p: &Path| std::path::absolute(p).map_err(|e| format!("{}: {e}", p.display()));
    let (kernel, initrd) = (absolute(&kernel)?, initrd.as_deref().map(absolute).transpose()?);
    let record = BootSourceRecord::Kernel {
        kernel: kernel.as_os_str().as_bytes().to_vec(),
        initrd: initrd.as_ref().map(|p| p.as_os_str().as_bytes().to_vec()),
        cmdline: cmdline.clone(),
    };
    Ok((run::boot_provider(kernel, initrd, cmdline), record))
}

/// The recorded boot source, if its files are here.
fn recorded_boot(source: &BootSourceRecord, disks: &[PathBuf]) -> Result<(BootProvider, BootSourceRecord), String> {
    match source {
        BootSourceRecord::Kernel { kernel, initrd, cmdline } => {
            let path = |bytes: &Vec<u8>| PathBuf::from(std::ffi::OsString::from_vec(bytes.clone()));
            let (kernel, initrd) = (path(kernel), initrd.as_ref().map(path));
            for (what, file) in [("kernel", Some(&kernel)), ("initrd", initrd.as_ref())] {
                if let Some(file) = file {
                    if !file.is_file() {
                        return Err(format!("the {what} the source booted, {}, is not on this host; give --kernel", file.display()));
                    }
                }
            }
            kernel_boot(kernel, initrd, cmdline.clone())
        }
        BootSourceRecord::Disk { disk, entry, cmdline, append } => {
            let image = usize::try_from(*disk).ok().and_then(|i| disks.get(i)).ok_or_else(|| {
                format!("the source booted from its disk {disk}, and this guest has {} disks; give --kernel", disks.len())
            })?;
            let boot = DiskBoot { disk: image.clone(), entry: entry.clone(), cmdline: cmdline.clone(), append: append.clone() };
            Ok((disk_boot::provider(boot), source.clone()))
        }
    }
}

/// The record of `tern run`'s own boot source: its kernel, or its boot disk (by index).
pub fn record_of_run(kernel: Option<(&Path, Option<&Path>, &str)>, disk: Option<(usize, &DiskBoot)>, restart: bool) -> Result<Option<BootRecord>> {
    let source = match (kernel, disk) {
        (Some((kernel, initrd, cmdline)), _) => {
            let absolute = |p: &Path| std::path::absolute(p).with_context(|| format!("{}", p.display()));
            BootSourceRecord::Kernel {
                kernel: absolute(kernel)?.as_os_str().as_bytes().to_vec(),
                initrd: initrd.map(absolute).transpose()?.map(|p| p.as_os_str().as_bytes().to_vec()),
                cmdline: cmdline.to_string(),
            }
        }
        (None, Some((index, boot))) => BootSourceRecord::Disk {
            disk: u32::try_from(index).context("disk index")?,
            entry: boot.entry.clone(),
            cmdline: boot.cmdline.clone(),
            append: boot.append.clone(),
        },
        (None, None) => return Ok(None),
    };
    Ok(Some(BootRecord { source, restart }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tern-next-boot-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn kernel_record(kernel: &Path, restart: bool) -> BootRecord {
        BootRecord {
            source: BootSourceRecord::Kernel { kernel: kernel.as_os_str().as_bytes().to_vec(), initrd: None, cmdline: "console=ttyS0 x".into() },
            restart,
        }
    }

    #[test]
    fn the_recorded_kernel_boots_when_it_is_here_and_flags_win() {
        let dir = scratch("recorded");
        let (kernel, other) = (dir.join("vmlinux"), dir.join("other"));
        std::fs::write(&kernel, b"k").unwrap();
        std::fs::write(&other, b"o").unwrap();
        let next = NextBootArgs::default().resolve(Some(&kernel_record(&kernel, false)), &[]);
        assert!(next.provider.is_some() && next.not_booted_again.is_none());
        assert_eq!(next.on_reboot, OnReboot::Exit, "the source's --on-reboot carries over");
        assert_eq!(next.record, Some(kernel_record(&kernel, false)));
        let source = (next.provider.unwrap())().unwrap();
        assert_eq!((source.kernel.label, source.cmdline), (kernel.display().to_string(), "console=ttyS0 x".to_string()));

        let flags = NextBootArgs { kernel: Some(other.clone()), on_reboot: Some(OnReboot::Restart), ..Default::default() };
        let next = flags.resolve(Some(&kernel_record(&kernel, false)), &[]);
        assert_eq!(next.on_reboot, OnReboot::Restart);
        let source = (next.provider.unwrap())().unwrap();
        assert_eq!(source.kernel.label, other.display().to_string());
        assert_eq!(source.cmdline, "console=ttyS0 x", "the source's command line unless --cmdline");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_kernel_or_no_record_means_no_reboot_with_the_reason() {
        let dir = scratch("missing");
        let gone = dir.join("gone");
        let next = NextBootArgs::default().resolve(Some(&kernel_record(&gone, true)), &[]);
        assert!(next.provider.is_none());
        assert_eq!(next.on_reboot, OnReboot::Exit);
        let why = next.not_booted_again.unwrap();
        assert!(why.contains(&gone.display().to_string()) && why.contains("give --kernel"), "{why}");
        assert_eq!(next.record, Some(kernel_record(&gone, true)), "kept for a later hop");
        let next = NextBootArgs::default().resolve(None, &[]);
        assert!(next.provider.is_none() && next.not_booted_again.unwrap().contains("recorded no boot source"));
        let disk = BootRecord { source: BootSourceRecord::Disk { disk: 1, entry: None, cmdline: None, append: None }, restart: true };
        let next = NextBootArgs::default().resolve(Some(&disk), &[dir.join("a.img")]);
        assert!(next.provider.is_none() && next.not_booted_again.unwrap().contains("disk 1"));
        let next = NextBootArgs::default().resolve(Some(&disk), &[dir.join("a.img"), dir.join("b.img")]);
        assert!(next.provider.is_some() && next.record == Some(disk));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn run_records_absolute_paths_or_the_disk_index() {
        let record = record_of_run(Some((Path::new("k"), Some(Path::new("/i")), "c")), None, true).unwrap().unwrap();
        let BootSourceRecord::Kernel { kernel, initrd, cmdline } = record.source else { panic!("{record:?}") };
        assert!(kernel.starts_with(b"/") && kernel.ends_with(b"/k"));
        assert_eq!((initrd, cmdline.as_str()), (Some(b"/i".to_vec()), "c"));
        let boot = DiskBoot { disk: "/d.img".into(), entry: Some("2".into()), cmdline: None, append: Some("quiet".into()) };
        let record = record_of_run(None, Some((1, &boot)), false).unwrap().unwrap();
        assert_eq!(record.source, BootSourceRecord::Disk { disk: 1, entry: Some("2".into()), cmdline: None, append: Some("quiet".into()) });
        assert!(!record.restart);
    }
}
