//! When to stop iterating and how hard to throttle.
//!
//! After each round the policy estimates the final downtime: the pages dirtied during
//! the round (which the next round, or the stop-and-copy, must send) divided by the
//! bandwidth measured over the round, plus a fixed allowance for device state. Under
//! the limit: stop and copy, unless the final copy can still be made smaller: while
//! its memory part is over a small target and each round leaves a dirty set at least
//! a fifth smaller than what it sent, a few extra rounds run first (the limit is a
//! ceiling, not a target; the guest pauses for as little as it allows). When the guest
//! dirties memory about as fast as the link drains it, the dirty set stops shrinking;
//! then the vCPUs are throttled, harder each round the set fails to shrink, so every
//! migration ends.

use std::time::Duration;

use crate::PAGE_SIZE;

/// Tunables.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// Target for the final pause.
    pub max_downtime: Duration,
    /// Time the stop-and-copy needs besides memory (state capture, transfer, restore).
    pub state_allowance: Duration,
    /// After this many rounds, stop and copy regardless (throttling should have made
    /// that unnecessary).
    pub max_rounds: u32,
    /// Throttle step, in percent of vCPU time, each time the dirty set fails to shrink.
    pub throttle_step: u8,
    /// Highest throttle.
    pub throttle_max: u8,
    /// Rounds run beyond the first whose estimate fits, while the final copy shrinks.
    pub extra_rounds: u32,
    /// A final copy whose memory part is estimated at or under this is small enough:
    /// no extra round for it.
    pub final_copy_target: Duration,
}

impl Policy {
    /// Defaults for a given downtime limit.
    pub fn with_max_downtime(max_downtime: Duration) -> Self {
        Self {
            max_downtime,
            state_allowance: Duration::from_millis(30),
            max_rounds: 40,
            throttle_step: 20,
            throttle_max: 95,
            extra_rounds: 5,
            final_copy_target: Duration::from_millis(5),
        }
    }
}

/// What one round did.
#[derive(Clone, Copy, Debug, Default)]
pub struct RoundStats {
    pub round: u32,
    pub pages_sent: u64,
    pub bytes_sent: u64,
    pub duration: Duration,
    /// Pages found dirty at the end of the round.
    pub dirty_pages: u64,
}

/// The policy's answer after a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Another round, with vCPUs throttled by this many percent.
    Continue { throttle_percent: u8 },
    /// Pause and send the rest.
    StopAndCopy,
}

/// Running estimates across rounds.
#[derive(Clone, Debug)]
pub struct Convergence {
    policy: Policy,
    bandwidth: Option<f64>,
    throttle: u8,
    last_dirty: Option<u64>,
    estimate: Duration,
    dirty_rate: f64,
    /// Extra rounds run so far (estimate already under the limit).
    extra: u32,
}

impl Convergence {
    /// Starts with no measurements.
    pub fn new(policy: Policy) -> Self {
        Self { policy, bandwidth: None, throttle: 0, last_dirty: None, estimate: Duration::ZERO, dirty_rate: 0.0, extra: 0 }
    }

    /// Bytes per second over the last measured round.
    pub fn bandwidth(&self) -> Option<f64> {
        self.bandwidth
    }

    /// Dirty bytes per second over the last round.
    pub fn dirty_rate(&self) -> f64 {
        self.dirty_rate
    }

    /// Estimated downtime if we stopped now.
    pub fn estimated_downtime(&self) -> Duration {
        self.estimate
    }

    /// Current throttle in percent.
    pub fn throttle(&self) -> u8 {
        self.throttle
    }

    /// Feeds a finished round; decides what comes next.
    pub fn after_round(&mut self, stats: RoundStats) -> Decision {
        let secs = stats.duration.as_secs_f64();
        // A round too small to measure keeps the previous bandwidth estimate.
        if secs > 0.0005 && stats.bytes_sent >= 64 * 1024 {
            self.bandwidth = Some(stats.bytes_sent as f64 / secs);
        }
        let dirty_bytes = stats.dirty_pages as f64 * PAGE_SIZE as f64;
        if secs > 0.0 {
            self.dirty_rate = dirty_bytes / secs;
        }
        self.estimate = match self.bandwidth {
            Some(bw) if bw > 0.0 => Duration::from_secs_f64(dirty_bytes / bw) + self.policy.state_allowance,
            _ if stats.dirty_pages == 0 => self.policy.state_allowance,
            _ => Duration::MAX,
        };
        if stats.round + 1 >= self.policy.max_rounds {
            return Decision::StopAndCopy;
        }
        if self.estimate <= self.policy.max_downtime {
            if !self.worth_another_round(&stats) {
                return Decision::StopAndCopy;
            }
            self.extra += 1;
            self.last_dirty = Some(stats.dirty_pages);
            return Decision::Continue { throttle_percent: self.throttle };
        }
        // Round 0 sends everything; judging shrinkage starts from round 1.
        if stats.round >= 1 {
            let shrinking = self.last_dirty.is_some_and(|prev| (stats.dirty_pages as f64) < prev as f64 * 0.8);
            if !shrinking {
                self.throttle = (self.throttle.saturating_add(self.policy.throttle_step)).min(self.policy.throttle_max);
            }
        }
        self.last_dirty = Some(stats.dirty_pages);
        Decision::Continue { throttle_percent: self.throttle }
    }

    /// With an estimate that fits: whether one more round makes the final copy
    /// smaller (its memory part is over the target and the round left a dirty set at
    /// least a fifth smaller than what it sent), within the extra rounds allowed.
    fn worth_another_round(&self, stats: &RoundStats) -> bool {
        let memory_part = self.estimate.saturating_sub(self.policy.state_allowance);
        let shrinking = (stats.dirty_pages as f64) < stats.pages_sent as f64 * 0.8;
        self.extra < self.policy.extra_rounds && memory_part > self.policy.final_copy_target && shrinking
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(round: u32, bytes: u64, ms: u64, dirty: u64) -> RoundStats {
        RoundStats { round, pages_sent: bytes / 4096, bytes_sent: bytes, duration: Duration::from_millis(ms), dirty_pages: dirty }
    }

    #[test]
    fn stops_when_the_estimate_fits() {
        let policy = Policy { extra_rounds: 0, ..Policy::with_max_downtime(Duration::from_millis(300)) };
        let mut c = Convergence::new(policy);
        // 100 MB/s; 1000 dirty pages = 4 MB -> 41 ms + 30 ms allowance.
        assert_eq!(c.after_round(round(0, 100_000_000, 1000, 1000)), Decision::StopAndCopy);
        assert!(c.estimated_downtime() < Duration::from_millis(100));
    }

    #[test]
    fn a_final_copy_already_small_stops_at_once() {
        let mut c = Convergence::new(Policy::with_max_downtime(Duration::from_millis(300)));
        // 100 MB/s; 100 dirty pages: 4 ms of memory, under the 5 ms target.
        assert_eq!(c.after_round(round(0, 100_000_000, 1000, 100)), Decision::StopAndCopy);
    }

    #[test]
    fn keeps_shrinking_the_final_copy_while_it_fits_and_shrinks() {
        let mut c = Convergence::new(Policy::with_max_downtime(Duration::from_millis(300)));
        // 100 MB/s. Round 0 sent 24414 pages and left 1000 dirty: 41 ms of memory,
        // within the limit, but a much smaller set than it sent: another round.
        assert_eq!(c.after_round(round(0, 100_000_000, 1000, 1000)), Decision::Continue { throttle_percent: 0 });
        // 1000 pages sent in 41 ms left 300: 12 ms of memory, still shrinking.
        assert_eq!(c.after_round(round(1, 4_096_000, 41, 300)), Decision::Continue { throttle_percent: 0 });
        // 300 pages left 100: 4 ms, under the target: stop.
        assert_eq!(c.after_round(round(2, 1_228_800, 12, 100)), Decision::StopAndCopy);
        assert!(c.estimated_downtime() < Duration::from_millis(35));
    }

    #[test]
    fn stops_once_the_dirty_set_no_longer_shrinks_by_a_fifth() {
        let mut c = Convergence::new(Policy::with_max_downtime(Duration::from_millis(300)));
        assert_eq!(c.after_round(round(0, 100_000_000, 1000, 1000)), Decision::Continue { throttle_percent: 0 });
        // A hot set: 1000 pages sent, 850 dirty again (41 ms -> 35 ms of memory, not a
        // fifth less): another round would not help.
        assert_eq!(c.after_round(round(1, 4_096_000, 41, 850)), Decision::StopAndCopy);
    }

    #[test]
    fn extra_rounds_are_bounded() {
        let policy = Policy { extra_rounds: 2, ..Policy::with_max_downtime(Duration::from_millis(300)) };
        let mut c = Convergence::new(policy);
        // 1 MB/s and a set that halves each round: every round fits and is worth
        // another (memory part well over the target), but only two extra run.
        let mut decisions = vec![c.after_round(round(0, 1_000_000, 1000, 40))];
        decisions.push(c.after_round(round(1, 163_840, 160, 20)));
        decisions.push(c.after_round(round(2, 81_920, 80, 10)));
        assert_eq!(
            decisions,
            [Decision::Continue { throttle_percent: 0 }, Decision::Continue { throttle_percent: 0 }, Decision::StopAndCopy]
        );
    }

    #[test]
    fn extra_rounds_never_go_past_the_round_limit() {
        let policy = Policy { max_rounds: 2, ..Policy::with_max_downtime(Duration::from_millis(300)) };
        let mut c = Convergence::new(policy);
        assert_eq!(c.after_round(round(0, 100_000_000, 1000, 1000)), Decision::Continue { throttle_percent: 0 });
        assert_eq!(c.after_round(round(1, 4_096_000, 41, 300)), Decision::StopAndCopy);
    }

    #[test]
    fn keeps_going_while_the_dirty_set_shrinks() {
        // Without extra rounds: the first estimate that fits ends the rounds.
        let policy = Policy { extra_rounds: 0, ..Policy::with_max_downtime(Duration::from_millis(300)) };
        let mut c = Convergence::new(policy);
        // 100 MB/s, 100k dirty pages (410 MB): ~4 s estimate.
        assert_eq!(c.after_round(round(0, 100_000_000, 1000, 100_000)), Decision::Continue { throttle_percent: 0 });
        assert_eq!(c.after_round(round(1, 400_000_000, 4000, 50_000)), Decision::Continue { throttle_percent: 0 });
        assert_eq!(c.after_round(round(2, 200_000_000, 2000, 5_000)), Decision::StopAndCopy);
    }

    #[test]
    fn throttles_harder_while_the_guest_outruns_the_link() {
        let mut c = Convergence::new(Policy::with_max_downtime(Duration::from_millis(300)));
        c.after_round(round(0, 100_000_000, 1000, 100_000));
        let mut last = 0;
        for r in 1..5 {
            match c.after_round(round(r, 400_000_000, 4000, 100_000)) {
                Decision::Continue { throttle_percent } => {
                    assert!(throttle_percent > last);
                    last = throttle_percent;
                }
                d => panic!("unexpected {d:?}"),
            }
        }
        assert_eq!(last, 80);
    }

    #[test]
    fn always_ends_within_max_rounds() {
        let policy = Policy { max_rounds: 5, ..Policy::with_max_downtime(Duration::from_millis(1)) };
        let mut c = Convergence::new(policy);
        let mut decisions = vec![];
        for r in 0..10 {
            let d = c.after_round(round(r, 1_000_000, 1000, 1_000_000));
            decisions.push(d);
            if d == Decision::StopAndCopy {
                break;
            }
        }
        assert_eq!(decisions.len(), 5);
    }

    #[test]
    fn clean_memory_stops_even_without_a_bandwidth_figure() {
        let mut c = Convergence::new(Policy::with_max_downtime(Duration::from_millis(300)));
        assert_eq!(c.after_round(round(0, 10, 0, 0)), Decision::StopAndCopy);
    }
}
