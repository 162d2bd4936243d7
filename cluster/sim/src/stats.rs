//! What one seed did: events, simulated time, operations, and which fault kinds and recovery
//! paths it hit. Summaries over many seeds print the share of seeds that hit each.

use std::collections::BTreeMap;

/// Recovery paths, as counted in `Stats::paths`.
pub mod path {
    pub const PROMOTION: &str = "promotion";
    pub const RECONCILE: &str = "reconcile-prepared";
    pub const SECONDARY_REMOVED_BY_PRIMARY: &str = "secondary-removed-by-primary";
    pub const SECONDARY_REMOVED_BY_CURE: &str = "secondary-removed-by-cure";
    pub const LEARNER_ADDED: &str = "learner-added";
    pub const LEARN_BY_LOG: &str = "learn-by-log";
    pub const LEARN_BY_CHECKPOINT: &str = "learn-by-checkpoint";
    pub const LEARNER_UPGRADED: &str = "learner-upgraded";
    pub const PROPOSAL_REFUSED: &str = "proposal-refused";
    pub const LOG_REPLAY: &str = "log-replay";
    pub const TORN_TAIL_CUT: &str = "torn-tail-cut";
    pub const REPLICA_ERROR: &str = "replica-error";
    pub const STEP_DOWN: &str = "step-down";
    pub const META_RELOAD: &str = "meta-reload";
    pub const WRITE_UNKNOWN: &str = "write-unknown-outcome";
    pub const CLIENT_REROUTE: &str = "client-reroute";
    pub const CHECKPOINT_FAILED: &str = "checkpoint-failed";
    pub const RESTARTED_PRIMARY_REBALLOT: &str = "restarted-primary-new-ballot";
}

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub seed: u64,
    pub events: u64,
    pub sim_time_us: u64,
    pub ops_ok: u64,
    pub ops_unknown: u64,
    pub ops_failed: u64,
    pub faults: BTreeMap<&'static str, u64>,
    pub paths: BTreeMap<&'static str, u64>,
    /// Simulated milliseconds from the start of healing until every partition took a write.
    pub recovery_ms: u64,
    pub trace_hash: u64,
    /// Linearizability searches given up for their size (the history was not judged).
    pub lin_inconclusive: u64,
}

impl Stats {
    pub fn fault(&mut self, kind: &'static str) {
        *self.faults.entry(kind).or_default() += 1;
    }

    pub fn path(&mut self, name: &'static str) {
        *self.paths.entry(name).or_default() += 1;
    }
}

/// Shares of seeds that hit each fault kind and path.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub seeds: u64,
    pub events: u64,
    pub sim_time_us: u64,
    pub faults: BTreeMap<&'static str, u64>,
    pub paths: BTreeMap<&'static str, u64>,
}

impl Summary {
    pub fn add(&mut self, s: &Stats) {
        self.seeds += 1;
        self.events += s.events;
        self.sim_time_us += s.sim_time_us;
        for k in s.faults.keys() {
            *self.faults.entry(k).or_default() += 1;
        }
        for k in s.paths.keys() {
            *self.paths.entry(k).or_default() += 1;
        }
    }

    /// A table of the share of seeds that hit each fault kind and recovery path.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{} seeds, {} events, {:.0} simulated seconds\n\n| fault kind / path | seeds | share |\n|---|---|---|\n",
            self.seeds,
            self.events,
            self.sim_time_us as f64 / 1e6
        );
        let share = |n: u64| if self.seeds == 0 { 0.0 } else { 100.0 * n as f64 / self.seeds as f64 };
        for (k, n) in &self.faults {
            out.push_str(&format!("| fault: {k} | {n} | {:.0}% |\n", share(*n)));
        }
        for (k, n) in &self.paths {
            out.push_str(&format!("| path: {k} | {n} | {:.0}% |\n", share(*n)));
        }
        out
    }
}
