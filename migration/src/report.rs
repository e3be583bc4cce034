//! What `tern migrate` shows: live progress and the final report (also as JSON).

use serde::{Deserialize, Serialize};

/// A progress sample, sent after every round.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub round: u32,
    /// Pages dirty and still to send.
    pub pages_left: u64,
    /// Dirty rate over the last round, MiB/s.
    pub dirty_rate_mib_s: f64,
    /// Measured bandwidth, MiB/s.
    pub bandwidth_mib_s: f64,
    /// Estimated downtime if the migration stopped now, ms.
    pub estimated_downtime_ms: f64,
    /// vCPU throttle, percent.
    pub throttle_percent: u8,
}

/// The final report of a successful migration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// From the start of the migration to the destination's resume ack, ms.
    pub total_ms: f64,
    /// From pausing the guest on the source to the destination's resume ack, ms.
    pub downtime_ms: f64,
    /// Memory rounds before the stop-and-copy.
    pub rounds: u32,
    /// Bytes written to the connection.
    pub bytes_sent: u64,
    /// Pages sent with contents.
    pub pages_sent: u64,
    /// Zero pages sent as markers only.
    pub zero_pages: u64,
    /// Pages sent during the stop-and-copy.
    pub final_pages: u64,
    /// Highest vCPU throttle applied, percent.
    pub max_throttle_percent: u8,
    /// Where the downtime went.
    pub downtime_breakdown: DowntimeBreakdown,
}

/// The downtime of a migration step by step, ms (source-side steps measured on the
/// source, the destination's from its acks; `transfer_ms` is what is left of waiting
/// for the acks once the destination's own work is taken out: the network, the last
/// bytes in flight, both sides' scheduling). The steps add up to the downtime, except
/// where the destination's work overlapped the source's own last steps (a restore
/// during the disk flush): that wait's transfer is then 0 and the steps add up to more.
/// `dest_last_pages_ms` and `dest_last_read_ms` overlap the source's sending and are
/// not part of the sum. Fields a destination of an earlier build does not report are 0.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DowntimeBreakdown {
    /// Parking the vCPUs and the device workers.
    pub pause_ms: f64,
    /// Of `pause_ms`: parking the device workers.
    #[serde(default)]
    pub pause_devices_ms: f64,
    /// Harvesting the dirty log and sending the last pages.
    pub last_pages_ms: f64,
    /// Capturing, encoding and sending the machine state.
    pub state_ms: f64,
    /// Of `state_ms`: reading it from KVM and the devices.
    #[serde(default)]
    pub state_capture_ms: f64,
    /// Flushing the disks (fdatasync of every image).
    pub disk_flush_ms: f64,
    /// Destination: decoding the machine state.
    pub decode_ms: f64,
    /// Destination: loading the machine state.
    pub restore_ms: f64,
    /// Source: releasing the disk locks and TAPs and sending the hand-over.
    pub release_ms: f64,
    /// Destination: taking the disk locks and TAPs.
    pub take_over_ms: f64,
    /// Destination: starting the vCPUs.
    pub start_ms: f64,
    /// Destination: the devices' announcements.
    pub announce_ms: f64,
    /// Destination: passing the state and the hand-over between its reader and the
    /// machine's owner, and their answers back.
    pub handoff_ms: f64,
    /// Waiting for the two acks beyond the destination's own work.
    pub transfer_ms: f64,
    /// Destination, not in the sum: writing the final copy's pages into guest memory.
    pub dest_last_pages_ms: f64,
    /// Destination, not in the sum: reading the final copy's frames off the connection
    /// (waiting for them, TLS decryption).
    pub dest_last_read_ms: f64,
}

impl DowntimeBreakdown {
    /// One line: each step's share.
    pub fn render(&self) -> String {
        format!(
            "pause {:.1} (devices {:.1}), last pages {:.1}, state {:.1} (capture {:.1}), disk flush {:.1}, decode (dest) {:.1}, restore (dest) {:.1}, release {:.1}, take-over (dest) {:.1}, vCPU start (dest) {:.1}, announce (dest) {:.1}, hand-off (dest) {:.1}, transfer {:.1} ms (the destination wrote the last pages in {:.1} ms, read them in {:.1})",
            self.pause_ms,
            self.pause_devices_ms,
            self.last_pages_ms,
            self.state_ms,
            self.state_capture_ms,
            self.disk_flush_ms,
            self.decode_ms,
            self.restore_ms,
            self.release_ms,
            self.take_over_ms,
            self.start_ms,
            self.announce_ms,
            self.handoff_ms,
            self.transfer_ms,
            self.dest_last_pages_ms,
            self.dest_last_read_ms
        )
    }
}

impl Report {
    /// Human-readable multi-line summary.
    pub fn render(&self) -> String {
        format!(
            "migration complete\n  total time     {:.0} ms\n  downtime       {:.1} ms\n    {}\n  rounds         {}\n  bytes sent     {} ({:.1} MiB)\n  pages sent     {} (+{} in the final copy)\n  zero pages     {} (skipped, marker only)\n  max throttle   {}%",
            self.total_ms,
            self.downtime_ms,
            self.downtime_breakdown.render(),
            self.rounds,
            self.bytes_sent,
            self.bytes_sent as f64 / (1 << 20) as f64,
            self.pages_sent,
            self.final_pages,
            self.zero_pages,
            self.max_throttle_percent
        )
    }
}

impl Progress {
    /// One status line.
    pub fn render(&self) -> String {
        format!(
            "round {:>3}  pages left {:>8}  dirty {:>8.1} MiB/s  bandwidth {:>8.1} MiB/s  est. downtime {:>7.1} ms  throttle {:>2}%",
            self.round, self.pages_left, self.dirty_rate_mib_s, self.bandwidth_mib_s, self.estimated_downtime_ms, self.throttle_percent
        )
    }
}
