//! `tern migrate`: ask a running tern (by name or control socket) to live-migrate its
//! guest, show progress, and print the report. A VM migrated by name tells the
//! destination its name (a host's `tern listen` picks the definition by it) and, given
//! no `--tls-dir`, uses its definition's `[migration] tls-dir`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::api_client;
use crate::control::Target;
use crate::runtime_dir;

/// Flags of `tern migrate`.
#[derive(Args, Debug)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub target: Target,
    /// Address of the `tern receive` or `tern listen` destination.
    #[arg(long, value_name = "ADDR:PORT")]
    pub to: String,
    /// Target for the guest's pause, in milliseconds.
    #[arg(long, default_value_t = 300, value_name = "MS")]
    pub max_downtime: u64,
    /// Cap on the bandwidth used while the guest runs, MiB/s (0: unlimited). The final
    /// copy, with the guest paused, always goes at full speed.
    #[arg(long, default_value_t = 0, value_name = "MIB_S")]
    pub max_bandwidth: u64,
    /// Print the final report as one JSON object (and no progress lines).
    #[arg(long)]
    pub json: bool,
    /// Mutual TLS 1.3: DIR holds ca.pem, cert.pem and key.pem of this host (read by the
    /// running source tern). The destination's certificate must be signed by the CA and
    /// name the host in --to (DNS name or IP address) [default for a VM given by NAME:
    /// its definition's [migration] tls-dir, if any; else plaintext].
    #[arg(long, value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
}

/// Runs `tern migrate`.
pub fn migrate(args: MigrateArgs) -> Result<ExitCode> {
    if args.max_downtime == 0 {
        bail!("--max-downtime must be at least 1 ms");
    }
    // The source tern reads the directory: give it a path that does not depend on
    // this command's working directory.
    let (socket, _) = args.target.socket()?;
    let vm_name = args.target.name.clone();
    let tls_dir = match (&args.tls_dir, &vm_name) {
        (Some(dir), _) => Some(std::fs::canonicalize(dir).with_context(|| format!("--tls-dir {}", dir.display()))?),
        (None, Some(name)) => runtime_dir::recorded_tls_dir(&runtime_dir::vm_dir(&runtime_dir::base()?, name)),
        (None, None) => None,
    };
    let request = serde_json::json!({
        "command": "migrate",
        "to": args.to,
        "max_downtime_ms": args.max_downtime,
        "max_bandwidth_mib_s": args.max_bandwidth,
        "tls_dir": tls_dir,
        "vm_name": vm_name,
    });
    let tty = std::io::stderr().is_terminal();
    let reply = api_client::request(&socket, "the source's", &request, |reply| {
        if let (Some(p), false) = (&reply.progress, args.json) {
            if tty {
                eprint!("\r{}", p.render());
            } else {
                eprintln!("{}", p.render());
            }
        }
    })?;
    if tty && !args.json {
        eprintln!();
    }
    if !reply.ok {
        bail!("{}", reply.error.unwrap_or_else(|| "migration failed".into()));
    }
    let report = reply.report.context("the source answered without a report")?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", report.render());
    }
    Ok(ExitCode::SUCCESS)
}
