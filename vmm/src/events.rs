//! What the machine's owner thread receives: [`VmEvent`]s from vCPUs, devices, the
//! console and the migration thread, and the control requests ([`ApiRequest`]) the API
//! threads forward, with their replies. Plain data: this module depends on no other
//! module of the crate, so every producer and the owner can share it without cycles.

use std::sync::mpsc::Sender;

use serde::{Deserialize, Serialize};

/// Something that ends (or may end) the machine, or a request for it, delivered to
/// the thread that owns the machine.
#[derive(Debug)]
pub enum VmEvent {
    /// The guest powered off (ACPI S5 or a KVM shutdown system event).
    PowerOff,
    /// The guest asked for a reset (keyboard controller, ACPI reset register, the 0xCF9
    /// reset control, KVM reset event).
    Reset { reason: String },
    /// A vCPU triple-faulted (`KVM_EXIT_SHUTDOWN`): the guest crashed; `reason` says
    /// which vCPU and where it was.
    TripleFault { vcpu: u8, reason: String },
    /// A vCPU executed HLT with no in-kernel irqchip to wake it (tiny test guests).
    Halted { vcpu: u8 },
    /// A vCPU hit an exit it cannot continue from.
    VcpuFailed { vcpu: u8, reason: String },
    /// The user asked to quit (console escape, API).
    UserQuit,
    /// A control-API request.
    Api(ApiRequest),
    /// The guest now runs on a migration destination: this machine is done.
    MigratedAway,
    /// An outgoing migration failed and the guest runs here again.
    MigrationFailed,
    /// A snapshot ended (written or not); `stopped`: it was written with `--stop`
    /// and the machine ends.
    SnapshotEnded { stopped: bool },
}

/// A request the machine's owner executes.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum ApiCommand {
    /// Machine description and state.
    Info,
    /// Park every vCPU.
    Pause,
    /// Un-park the vCPUs.
    Resume,
    /// Stop the VM; tern exits.
    Shutdown,
    /// Press the ACPI power button: the guest's ACPI driver is told, and a guest
    /// that handles it powers off (tern then exits as for any power-off).
    PowerButton,
    /// Live-migrate to a `tern receive` at `to` (HOST:PORT). Progress replies carry
    /// `progress`; the last reply carries `report` (or `error`) and `done: true`.
    Migrate {
        to: String,
        #[serde(default = "default_max_downtime_ms")]
        max_downtime_ms: u64,
        /// Bandwidth cap in MiB/s (absent or 0: unlimited).
        #[serde(default)]
        max_bandwidth_mib_s: u64,
        /// Mutual TLS with the certificates in this directory (absent: plaintext).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tls_dir: Option<std::path::PathBuf>,
        /// The VM's name, told to the destination in the hello (a host's migration
        /// listener picks that VM's definition by it); absent: not told.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vm_name: Option<String>,
    },
    /// Write a snapshot to the directory `to` (which must not exist). Progress
    /// replies carry `snapshot_progress`; the last reply carries `snapshot` (or
    /// `error`). `stop`: end the VM once it is written; `no_disks`: record the disks
    /// instead of copying them.
    Snapshot {
        to: std::path::PathBuf,
        #[serde(default)]
        stop: bool,
        #[serde(default)]
        no_disks: bool,
    },
}

fn default_max_downtime_ms() -> u64 {
    300
}

/// A reply: `ok` plus either fields or an error.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ApiReply {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Which boot of the guest this is (1, then one more at every reboot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<u32>,
    /// tern's process id (`info`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Milliseconds since the VM was first started, across reboots (`info`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_ms: Option<u64>,
    /// Migration progress sample (more replies follow).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<migration::report::Progress>,
    /// Final migration report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<migration::report::Report>,
    /// Snapshot progress sample (more replies follow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_progress: Option<migration::snapshot_report::SnapshotProgress>,
    /// Final snapshot summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<migration::snapshot_report::SnapshotReport>,
    /// False on a progress reply: more replies follow for this request.
    #[serde(default = "done_default", skip_serializing_if = "is_true")]
    pub done: bool,
}

fn done_default() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

impl ApiReply {
    /// A success with no fields.
    pub fn ok() -> Self {
        Self { ok: true, done: true, ..Default::default() }
    }
    /// A failure with a reason.
    pub fn error(reason: impl Into<String>) -> Self {
        Self { ok: false, done: true, error: Some(reason.into()), ..Default::default() }
    }
}

/// A request on its way to the machine, with where to send the reply.
#[derive(Debug)]
pub struct ApiRequest {
    pub command: ApiCommand,
    pub reply: Sender<ApiReply>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_and_garbage_is_refused() {
        assert_eq!(serde_json::from_str::<ApiCommand>(r#"{"command":"pause"}"#).unwrap(), ApiCommand::Pause);
        assert!(serde_json::from_str::<ApiCommand>(r#"{"command":"explode"}"#).is_err());
        assert!(serde_json::from_str::<ApiCommand>("not json").is_err());
    }
}
