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
}

impl Report {
    /// Human-readable multi-line summary.
    pub fn render(&self) -> String {
        format!(
            "migration complete\n  total time     {:.0} ms\n  downtime       {:.1} ms\n  rounds         {}\n  bytes sent     {} ({:.1} MiB)\n  pages sent     {} (+{} in the final copy)\n  zero pages     {} (skipped, marker only)\n  max throttle   {}%",
            self.total_ms,
            self.downtime_ms,
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
