//! `tern list`, `tern info|pause|resume|shutdown|stop NAME` (or `--api-socket PATH`):
//! the control API's requests (vmm/src/api.rs) without hand-written JSON. A NAME is
//! found in the runtime directory (`runtime_dir.rs`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use vmm::events::{ApiCommand, ApiReply};

use crate::runtime_dir;

/// How long one request may take to be answered.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `stop` (and `shutdown` after its hard stop) waits for tern to be gone.
const GONE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `shutdown --timeout`, seconds.
pub const DEFAULT_SHUTDOWN_TIMEOUT: u64 = 60;

/// Which VM: by name, or by its API socket.
#[derive(Args, Debug)]
pub struct Target {
    /// The VM's name (as given to `tern run --name`).
    #[arg(value_name = "NAME", required_unless_present = "api_socket", conflicts_with = "api_socket",
          value_parser = crate::vm_name::parse_name)]
    pub name: Option<String>,
    /// The VM's control socket, for a VM started without a name.
    #[arg(long, value_name = "PATH")]
    pub api_socket: Option<PathBuf>,
}

impl Target {
    /// The control socket's path, and how to call the VM in messages.
    pub fn socket(&self) -> Result<(PathBuf, String)> {
        if let Some(path) = &self.api_socket {
            return Ok((path.clone(), path.display().to_string()));
        }
        let name = self
            .name
            .as_deref()
            .ok_or_else(|| anyhow!("give a NAME or --api-socket PATH"))?;
        let dir = runtime_dir::vm_dir(&runtime_dir::base()?, name);
        if !runtime_dir::is_claimed(&dir) {
            bail!(
                "no VM named {name} is running on this host (nothing holds {})",
                dir.display()
            );
        }
        Ok((dir.join(runtime_dir::API_SOCKET), format!("VM {name}")))
    }
}

/// `tern info`.
#[derive(Args, Debug)]
pub struct InfoArgs {
    #[command(flatten)]
    pub target: Target,
    /// The API's reply as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `tern shutdown`.
#[derive(Args, Debug)]
pub struct ShutdownArgs {
    #[command(flatten)]
    pub target: Target,
    /// Seconds the guest has to power off after the power button before it is stopped.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_SHUTDOWN_TIMEOUT,
          value_parser = clap::value_parser!(u64).range(0..=86400))]
    pub timeout: u64,
}

/// `tern list`.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// One JSON object per VM, one per line.
    #[arg(long)]
    pub json: bool,
}

/// Sends one request and reads its one reply.
fn request(socket: &Path, command: &ApiCommand) -> Result<ApiReply> {
    let conn = UnixStream::connect(socket)
        .with_context(|| format!("cannot reach the control socket {}", socket.display()))?;
    conn.set_read_timeout(Some(REPLY_TIMEOUT))
        .context("control socket")?;
    let line = serde_json::to_string(command).context("encoding the request")?;
    (&conn)
        .write_all(format!("{line}\n").as_bytes())
        .context("sending the request")?;
    let mut reply = String::new();
    // A reply line is short; a peer that sends an endless line is cut off.
    BufReader::new(std::io::Read::take(&conn, 64 << 10))
        .read_line(&mut reply)
        .context("reading the reply")?;
    if reply.is_empty() {
        bail!(
            "the control socket {} closed without a reply",
            socket.display()
        );
    }
    serde_json::from_str(&reply).with_context(|| {
        format!(
            "the control socket {} sent a reply that is not JSON",
            socket.display()
        )
    })
}

/// A request that must succeed.
fn checked(socket: &Path, who: &str, command: &ApiCommand) -> Result<ApiReply> {
    let reply = request(socket, command)?;
    if !reply.ok {
        bail!(
            "{who}: {}",
            reply.error.unwrap_or_else(|| "request refused".into())
        );
    }
    Ok(reply)
}

/// Whether nothing serves `socket` any more (the tern behind it ended).
fn gone(socket: &Path) -> bool {
    UnixStream::connect(socket).is_err()
}

/// Waits until `socket` is gone; false if `timeout` passed first.
fn wait_gone(socket: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while !gone(socket) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// `tern info`.
pub fn info(args: InfoArgs) -> Result<ExitCode> {
    let (socket, who) = args.target.socket()?;
    let reply = checked(&socket, &who, &ApiCommand::Info)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&reply).context("encoding the reply")?
        );
    } else {
        let name = args.target.name.as_deref().unwrap_or("-");
        println!("name:    {name}");
        for line in describe(&reply) {
            println!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `info`'s fields as `key: value` lines.
fn describe(reply: &ApiReply) -> Vec<String> {
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    vec![
        format!("state:   {}", or_dash(reply.state.clone())),
        format!("vcpus:   {}", or_dash(reply.cpus.map(|c| c.to_string()))),
        format!("memory:  {}", or_dash(reply.memory_bytes.map(memory))),
        format!("uptime:  {}", or_dash(reply.uptime_ms.map(uptime))),
        format!("boot:    {}", or_dash(reply.boot.map(|b| b.to_string()))),
        format!("pid:     {}", or_dash(reply.pid.map(|p| p.to_string()))),
    ]
}

/// Memory in MiB or GiB.
fn memory(bytes: u64) -> String {
    if bytes >= 1 << 30 && bytes % (1 << 30) == 0 {
        format!("{}G", bytes >> 30)
    } else {
        format!("{}M", bytes >> 20)
    }
}

/// Uptime as `1d02h03m`, `2h03m04s`, `3m04s` or `5s`.
fn uptime(ms: u64) -> String {
    let s = ms / 1000;
    let (d, h, m, sec) = (s / 86400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) => format!("{m}m{sec:02}s"),
        (0, _, _) => format!("{h}h{m:02}m{sec:02}s"),
        _ => format!("{d}d{h:02}h{m:02}m"),
    }
}

/// `tern pause` and `tern resume`.
pub fn simple(target: Target, command: ApiCommand) -> Result<ExitCode> {
    let (socket, who) = target.socket()?;
    checked(&socket, &who, &command)?;
    Ok(ExitCode::SUCCESS)
}

/// `tern stop`: ends the VM at once and waits for tern to be gone.
pub fn stop(target: Target) -> Result<ExitCode> {
    let (socket, who) = target.socket()?;
    checked(&socket, &who, &ApiCommand::Shutdown)?;
    if !wait_gone(&socket, GONE_TIMEOUT) {
        bail!(
            "{who} was told to stop but still answers after {} s",
            GONE_TIMEOUT.as_secs()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `tern shutdown`: the ACPI power button, then up to `--timeout` for the guest to
/// power off, then a hard stop (one line, status 1).
pub fn shutdown(args: ShutdownArgs) -> Result<ExitCode> {
    let (socket, who) = args.target.socket()?;
    checked(&socket, &who, &ApiCommand::PowerButton)?;
    if wait_gone(&socket, Duration::from_secs(args.timeout)) {
        return Ok(ExitCode::SUCCESS);
    }
    // Gone in the meantime is fine too: it powered off at the last moment.
    match request(&socket, &ApiCommand::Shutdown) {
        Ok(_) => {}
        Err(_) if gone(&socket) => return Ok(ExitCode::SUCCESS),
        Err(e) => return Err(e),
    }
    if !wait_gone(&socket, GONE_TIMEOUT) {
        bail!(
            "{who} did not power off within {} s, and still answers after a stop",
            args.timeout
        );
    }
    bail!(
        "{who} did not power off within {} s of the power button; stopped it",
        args.timeout
    )
}

/// `tern list`: the named VMs running on this host.
pub fn list(args: ListArgs) -> Result<ExitCode> {
    let base = runtime_dir::base()?;
    let mut rows = Vec::new();
    for name in runtime_dir::names(&base) {
        let dir = runtime_dir::vm_dir(&base, &name);
        if !runtime_dir::is_claimed(&dir) {
            continue;
        }
        let reply = request(&dir.join(runtime_dir::API_SOCKET), &ApiCommand::Info)
            .unwrap_or_else(|e| ApiReply::error(format!("{e:#}")));
        rows.push((name, reply));
    }
    if args.json {
        for (name, reply) in &rows {
            let mut value = serde_json::to_value(reply).context("encoding a reply")?;
            if let Some(object) = value.as_object_mut() {
                object.insert("name".into(), serde_json::Value::String(name.clone()));
            }
            println!("{value}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{}",
        list_line(["NAME", "STATE", "VCPUS", "MEMORY", "UPTIME", "PID"].map(String::from))
    );
    for (name, reply) in rows {
        let dash = || "-".to_string();
        let state = if reply.ok {
            reply.state.clone().unwrap_or_else(dash)
        } else {
            "unreachable".into()
        };
        println!(
            "{}",
            list_line([
                name,
                state,
                reply.cpus.map(|c| c.to_string()).unwrap_or_else(dash),
                reply.memory_bytes.map(memory).unwrap_or_else(dash),
                reply.uptime_ms.map(uptime).unwrap_or_else(dash),
                reply.pid.map(|p| p.to_string()).unwrap_or_else(dash),
            ])
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn list_line(cols: [String; 6]) -> String {
    format!(
        "{:<20} {:<10} {:>5} {:>7} {:>10} {:>8}",
        cols[0], cols[1], cols[2], cols[3], cols[4], cols[5]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_well() {
        assert_eq!(memory(512 << 20), "512M");
        assert_eq!(memory(2 << 30), "2G");
        assert_eq!(memory(1536 << 20), "1536M");
        assert_eq!(uptime(5_400), "5s");
        assert_eq!(uptime(65_000), "1m05s");
        assert_eq!(uptime(3_723_000), "1h02m03s");
        assert_eq!(uptime(90_061_000), "1d01h01m");
        let reply = ApiReply {
            state: Some("paused".into()),
            cpus: Some(2),
            memory_bytes: Some(64 << 20),
            pid: Some(7),
            uptime_ms: Some(1000),
            boot: Some(1),
            ..ApiReply::ok()
        };
        assert_eq!(
            describe(&reply),
            [
                "state:   paused",
                "vcpus:   2",
                "memory:  64M",
                "uptime:  1s",
                "boot:    1",
                "pid:     7"
            ]
        );
        assert_eq!(
            list_line(["a", "b", "1", "2", "3", "4"].map(String::from)),
            format!(
                "{:<20} {:<10} {:>5} {:>7} {:>10} {:>8}",
                "a", "b", "1", "2", "3", "4"
            )
        );
    }

    #[test]
    fn a_socket_nobody_serves_is_one_line() {
        let e = request(Path::new("/nonexistent/api.sock"), &ApiCommand::Info).unwrap_err();
        assert!(
            format!("{e:#}").starts_with("cannot reach the control socket /nonexistent/api.sock: "),
            "{e:#}"
        );
    }
}
