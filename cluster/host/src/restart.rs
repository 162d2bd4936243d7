//! What a replica server does after its mutation log failed (ENOSPC past the reserve, EIO): its
//! replicas stop at once (a server whose log refuses appends would hold its partitions hostage
//! while it kept beaconing), its port closes so the meta moves its partitions at once, and it
//! starts again from its disk the way a process restart does — replay the log, reopen every
//! replica, beacon as restarted — with no operator. It starts again
//! - once every directory is above its reserve plus the hysteresis (`DiskWatch`): a log that
//!   failed for want of space would fail again at once;
//! - and not before a pause that doubles with each failure of the last hour (1 s, 2 s, … at most
//!   5 min), so a disk that keeps failing (EIO) costs a restart every few minutes, each one
//!   logged with its error, not a loop.

use std::collections::VecDeque;

/// The first pause after a failure; each failure within `WINDOW_MS` doubles it.
pub const PAUSE_MIN_MS: u64 = 1_000;
pub const PAUSE_MAX_MS: u64 = 5 * 60_000;
const WINDOW_MS: u64 = 60 * 60_000;

#[derive(Clone, Debug, Default)]
pub struct Restarts {
    /// When the log failed, within the last `WINDOW_MS`.
    failures: VecDeque<u64>,
    not_before_ms: u64,
}

impl Restarts {
    /// The log failed at `now_ms`: the pause before the next start.
    pub fn on_failure(&mut self, now_ms: u64) -> u64 {
        while self.failures.front().is_some_and(|at| now_ms.saturating_sub(*at) > WINDOW_MS) {
            self.failures.pop_front();
        }
        let pause = PAUSE_MIN_MS.saturating_mul(1 << self.failures.len().min(20)).min(PAUSE_MAX_MS);
        self.failures.push_back(now_ms);
        self.not_before_ms = now_ms + pause;
        pause
    }

    /// Whether the server starts again now: the pause is over and no directory is short.
    pub fn may_start(&self, now_ms: u64, disk_short: bool) -> bool {
        now_ms >= self.not_before_ms && !disk_short
    }

    /// Failures within the last hour (for the log line).
    pub fn recent(&self) -> usize {
        self.failures.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_doubles_within_the_hour_and_waits_for_disk_room() {
        let mut r = Restarts::default();
        assert_eq!(r.on_failure(0), 1_000);
        assert!(!r.may_start(999, false));
        assert!(!r.may_start(1_000, true), "a short disk holds the start");
        assert!(r.may_start(1_000, false));
        assert_eq!(r.on_failure(10_000), 2_000);
        assert_eq!(r.on_failure(20_000), 4_000);
        assert_eq!(r.recent(), 3);
        for i in 0..20 {
            r.on_failure(30_000 + i);
        }
        assert_eq!(r.on_failure(40_000), PAUSE_MAX_MS, "at most five minutes");
        // An hour without failures: back to the first pause.
        assert_eq!(r.on_failure(40_000 + WINDOW_MS + 1), 1_000);
        assert_eq!(r.recent(), 1);
    }
}
