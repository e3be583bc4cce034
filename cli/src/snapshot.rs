//! `tern snapshot NAME|--api-socket PATH`: ask a running tern (through its control
//! socket) to write a snapshot of its guest to a directory, show progress, print the
//! summary.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::api_client;
use crate::control::Target;

/// Flags of `tern snapshot`.
#[derive(Args, Debug)]
pub struct SnapshotArgs {
    /// The VM: its name, or its control socket (`--api-socket PATH`).
    #[command(flatten)]
    pub target: Target,
    /// The snapshot directory to create (it must not exist; its parent must).
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
    /// End the VM once the snapshot is written (tern exits 0); if the snapshot fails
    /// the guest keeps running.
    #[arg(long)]
    pub stop: bool,
    /// Do not copy the disks: record each one's path, size and identity (for storage
    /// snapshotted by other means); a restore then runs on the images --disk or its
    /// definition names, of the same sizes.
    #[arg(long)]
    pub no_disks: bool,
}

/// `DIR` as the running tern must see it: its parent made absolute (the tern's
/// working directory may be another).
fn absolute_target(to: &Path) -> Result<PathBuf> {
    let name = to
        .file_name()
        .with_context(|| format!("--to {} names no directory", to.display()))?;
    let parent = match to.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let parent = std::fs::canonicalize(parent)
        .with_context(|| format!("--to {}: its directory {}", to.display(), parent.display()))?;
    Ok(parent.join(name))
}

/// Runs `tern snapshot`.
pub fn snapshot(args: SnapshotArgs) -> Result<ExitCode> {
    let to = absolute_target(&args.to)?;
    if to.symlink_metadata().is_ok() {
        bail!("snapshot target {} already exists", to.display());
    }
    let (socket, _) = args.target.socket()?;
    let request = serde_json::json!({ "command": "snapshot", "to": to, "stop": args.stop, "no_disks": args.no_disks });
    let tty = std::io::stderr().is_terminal();
    let reply = api_client::request(&socket, "the VM's", &request, |reply| {
        if let Some(p) = &reply.snapshot_progress {
            if tty {
                eprint!("\r{}", p.render());
            } else {
                eprintln!("{}", p.render());
            }
        }
    })?;
    if tty {
        eprint!("\r\x1b[K");
    }
    if !reply.ok {
        bail!(
            "{}",
            reply.error.unwrap_or_else(|| "snapshot failed".into())
        );
    }
    let report = reply
        .snapshot
        .context("the VM answered without a snapshot summary")?;
    println!("{}", report.render());
    Ok(ExitCode::SUCCESS)
}
