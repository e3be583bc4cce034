//! What `tern snapshot` shows: progress while guest memory and disks are written, and
//! the summary a snapshot ends with (size, pages, and where the time went).

use serde::{Deserialize, Serialize};

/// A progress sample while a snapshot is written.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotProgress {
    /// What is being written: "memory" or "disk N".
    pub phase: String,
    pub done_bytes: u64,
    pub total_bytes: u64,
}

impl SnapshotProgress {
    /// One status line.
    pub fn render(&self) -> String {
        let pct = if self.total_bytes == 0 { 100.0 } else { self.done_bytes as f64 * 100.0 / self.total_bytes as f64 };
        format!("{:<8} {:>9.1} / {:.1} MiB ({pct:>5.1}%)", self.phase, mib(self.done_bytes), mib(self.total_bytes))
    }
}

/// The summary of a written snapshot.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotReport {
    /// The snapshot directory.
    pub dir: String,
    /// From the request to the committed directory, ms.
    pub total_ms: f64,
    /// From the pause request to every vCPU and device worker parked and disks flushed, ms.
    pub pause_ms: f64,
    /// Writing guest memory, ms.
    pub memory_ms: f64,
    /// Capturing and writing the machine state, ms.
    pub state_ms: f64,
    /// Copying the disks (or recording them, `--no-disks`), ms.
    pub disk_ms: f64,
    /// Resuming devices and vCPUs, ms (0 with `--stop`).
    pub resume_ms: f64,
    /// The guest was paused (pause to resume), ms.
    pub downtime_ms: f64,
    /// Space the snapshot takes on the filesystem (allocated blocks), bytes.
    pub bytes_on_disk: u64,
    /// Guest memory size, bytes.
    pub memory_bytes: u64,
    /// Guest pages written with contents.
    pub pages_written: u64,
    /// Zero pages left as holes in the memory file.
    pub zero_pages: u64,
    /// Disks copied (0 with `--no-disks`).
    pub disks_copied: u32,
    /// How disks were copied: "reflink", "copy", "mixed", "none".
    pub disk_copy: String,
    /// The guest was stopped after the snapshot (`--stop`).
    pub stopped: bool,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

impl SnapshotReport {
    /// Human-readable summary: what was written, then the timing breakdown in one line.
    pub fn render(&self) -> String {
        format!(
            "snapshot written to {}\n  size on disk   {:.1} MiB (guest memory {:.1} MiB)\n  pages written  {} ({} zero pages skipped as holes)\n  disks          {} copied ({})\n  guest paused   {:.1} ms{}\n  time           total {:.0} ms: pause {:.1}, memory write {:.1}, state capture {:.1}, disk copy {:.1}, resume {:.1} ms",
            self.dir,
            mib(self.bytes_on_disk),
            mib(self.memory_bytes),
            self.pages_written,
            self.zero_pages,
            self.disks_copied,
            self.disk_copy,
            self.downtime_ms,
            if self.stopped { " (then stopped: --stop)" } else { "" },
            self.total_ms,
            self.pause_ms,
            self.memory_ms,
            self.state_ms,
            self.disk_ms,
            self.resume_ms
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_every_timing_phase() {
        let r = SnapshotReport { dir: "/s".into(), pages_written: 3, zero_pages: 5, disk_copy: "reflink".into(), ..Default::default() };
        let text = r.render();
        for word in ["pause", "memory write", "state capture", "disk copy", "resume", "5 zero pages", "/s"] {
            assert!(text.contains(word), "{word}: {text}");
        }
        assert!(SnapshotProgress { phase: "memory".into(), done_bytes: 1 << 20, total_bytes: 4 << 20 }.render().contains("25.0%"));
    }
}
