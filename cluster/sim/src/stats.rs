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
    /// A crash lost log records that were written but not yet synced.
    pub const UNSYNCED_LOST: &str = "unsynced-log-lost";
    pub const REPLICA_ERROR: &str = "replica-error";
    pub const STEP_DOWN: &str = "step-down";
    /// A meta server took the lead at a later epoch (after a restart or a failover) and loaded
    /// the store.
    pub const META_RELOAD: &str = "meta-reload";
    /// A leading meta server dropped its state (stepped down, lapsed, or was fenced).
    pub const META_STEPPED_DOWN: &str = "meta-stepped-down";
    /// A store clog also ended the clogged meta's store session (its lock), or restarted the
    /// store (every session).
    pub const STORE_SESSION_LOST: &str = "store-session-lost";
    pub const STORE_RESTARTED: &str = "store-restarted";
    /// A standby took the meta lease before it expired, its holder's store session being gone.
    pub const META_EARLY_TAKEOVER: &str = "meta-early-takeover";
    /// A replica server declared dead at once: its port refused the meta's probe.
    pub const DEAD_ON_REFUSED_PROBE: &str = "dead-on-refused-probe";
    /// A primary proposed removing a secondary whose port refused its prepare.
    pub const PREPARE_REFUSED: &str = "prepare-refused";
    /// The meta learned from a beacon that a server's disk is below its reserve / has room again.
    pub const DISK_SHORT_SEEN: &str = "disk-short-seen";
    pub const DISK_ROOM_SEEN: &str = "disk-room-seen";
    /// A beacon's reports did not add up to the meta's view (a new leader, a purged table): the
    /// meta asked for every one. A beacon answer left the configurations out (unchanged).
    pub const REPORTS_RESENT: &str = "reports-resent";
    pub const CONFIGS_UNCHANGED: &str = "configs-unchanged";
    /// The meta learned from a beacon that a server refused replicas (it hosts its most).
    pub const REPLICA_REFUSED_SEEN: &str = "replica-refused-seen";
    /// An engine flushed on its own (RocksDB's memtable budget), or because the host asked: its
    /// records held the shared log over `log_retain_bytes`.
    pub const ENGINE_FLUSHED_ITSELF: &str = "engine-flushed-itself";
    pub const ENGINE_FLUSH_ASKED: &str = "engine-flush-asked";
    /// A primary refused a write because its own or a member's disk is below the reserve.
    pub const DISK_FULL_REFUSED: &str = "disk-full-refused";
    /// A meta asked a server over its watch stream to beacon now (a configuration changed).
    pub const BEACON_ASKED: &str = "beacon-asked";
    /// A replica server's process was killed: its host refuses connections to its port.
    pub const KILLED: &str = "server-killed";
    /// The store refused a write decided under an older epoch.
    pub const FENCED_WRITE: &str = "fenced-write";
    /// A leading meta found its state stale (a write it stopped waiting for went through after
    /// its load) and loaded the store again.
    pub const META_RELOAD_STALE: &str = "meta-reload-stale";
    /// The operator changed the workload table's replica count.
    pub const POLICY_CHANGED: &str = "policy-changed";
    pub const TABLE_DROPPED: &str = "table-dropped";
    pub const TABLE_RECALLED: &str = "table-recalled";
    pub const TABLE_PURGED: &str = "table-purged";
    pub const WRITE_UNKNOWN: &str = "write-unknown-outcome";
    pub const CLIENT_REROUTE: &str = "client-reroute";
    pub const CHECKPOINT_FAILED: &str = "checkpoint-failed";
    pub const RESTARTED_PRIMARY_REBALLOT: &str = "restarted-primary-new-ballot";
    /// The store write giving a restarted primary its new ballot failed: the meta forgot the
    /// server's incarnation, so its next beacon tries again.
    pub const REBALLOT_FAILED: &str = "restarted-primary-reballot-failed";
    /// A replica's turn stepped several queued events before running their actions.
    pub const TURN_BATCHED: &str = "turn-batched";
    /// A read waited for a turn (the read gate was closed or the lease had run out).
    pub const READ_THROUGH_TURN: &str = "read-through-turn";
    pub const CHECKPOINT_DELETED: &str = "checkpoint-deleted";
    /// The host deleted a replica (left out of its configuration, or of a purged table).
    pub const REPLICA_REMOVED: &str = "replica-removed";
    /// Two-site runs: a batch the other site applied; refused as too large (the duplicator
    /// halves it), as stamped too far ahead of the other site's clock, or not taken in time.
    pub const DUP_BATCH_SHIPPED: &str = "dup-batch-shipped";
    pub const DUP_TOO_LARGE: &str = "dup-too-large";
    pub const DUP_CLOCK_AHEAD: &str = "dup-clock-ahead";
    pub const DUP_SHIP_FAILED: &str = "dup-ship-failed";
    /// The operator paused or resumed a duplication.
    pub const DUP_PAUSED: &str = "dup-paused";
    /// The two sites were cut apart.
    pub const SITES_CUT: &str = "sites-cut";
    /// A compaction dropped tombstones or expired values (two-site runs).
    pub const COMPACTION_DROPPED: &str = "compaction-dropped";
    /// Backups (runs that take them): a partition uploaded; an upload cut by its server's
    /// crash; a call to the object store that failed or lost its answer; a collection that
    /// deleted objects; a replica built from a backup; complete backups restored and checked
    /// against the oracle at the end; members of restored tables checked.
    pub const BACKUP_PARTITION_UPLOADED: &str = "backup-partition-uploaded";
    pub const BACKUP_CRASH_MID_UPLOAD: &str = "backup-crash-mid-upload";
    pub const OBJECT_FAULT: &str = "object-store-fault";
    pub const BACKUP_COLLECTED: &str = "backup-garbage-collected";
    pub const REPLICA_RESTORED: &str = "replica-restored";
    pub const BACKUP_DRILLED: &str = "backup-drilled";
    pub const RESTORE_CHECKED: &str = "restore-checked";
}

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub seed: u64,
    pub events: u64,
    pub sim_time_us: u64,
    pub ops_ok: u64,
    pub ops_unknown: u64,
    pub ops_failed: u64,
    /// Fault kinds the seed's plan enabled (whether or not one was injected).
    pub enabled: Vec<&'static str>,
    pub faults: BTreeMap<&'static str, u64>,
    pub paths: BTreeMap<&'static str, u64>,
    /// Simulated milliseconds from the start of healing until every partition took a write.
    pub recovery_ms: u64,
    pub trace_hash: u64,
    /// Linearizability searches given up for their size (the history was not judged).
    pub lin_inconclusive: u64,
    /// Keys the online linearizability search gave up on (left to the end-of-run search), and
    /// keys it judged on widened configurations (it may miss a violation there, not invent one).
    pub lin_online_gave_up: u64,
    pub lin_online_widened: u64,
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
    /// Seeds whose plan enabled each fault kind, and seeds that hit it.
    pub enabled: BTreeMap<&'static str, u64>,
    pub faults: BTreeMap<&'static str, u64>,
    pub paths: BTreeMap<&'static str, u64>,
    /// Keys the linearizability searches gave up on: online (left to the end search), and at
    /// the end (not judged).
    pub lin_online_gave_up: u64,
    pub lin_online_widened: u64,
    pub lin_inconclusive: u64,
}

impl Summary {
    pub fn add(&mut self, s: &Stats) {
        self.seeds += 1;
        self.events += s.events;
        self.sim_time_us += s.sim_time_us;
        self.lin_online_gave_up += s.lin_online_gave_up;
        self.lin_online_widened += s.lin_online_widened;
        self.lin_inconclusive += s.lin_inconclusive;
        for k in &s.enabled {
            *self.enabled.entry(k).or_default() += 1;
        }
        for k in s.faults.keys() {
            *self.faults.entry(k).or_default() += 1;
        }
        for k in s.paths.keys() {
            *self.paths.entry(k).or_default() += 1;
        }
    }

    /// Tables of the share of seeds that hit each fault kind (of all seeds, and of the seeds
    /// whose plan enabled it) and each recovery path.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{} seeds, {} events, {:.0} simulated seconds; linearizability: {} key(s) widened online, {} left to the end search, {} inconclusive\n\n",
            self.seeds,
            self.events,
            self.sim_time_us as f64 / 1e6,
            self.lin_online_widened,
            self.lin_online_gave_up,
            self.lin_inconclusive
        );
        let share = |n: u64, of: u64| if of == 0 { 0.0 } else { 100.0 * n as f64 / of as f64 };
        out.push_str("| fault kind | enabled in | hit in | share of seeds | share of seeds enabling it |\n|---|---|---|---|---|\n");
        let kinds: std::collections::BTreeSet<&&str> = self.enabled.keys().chain(self.faults.keys()).collect();
        for k in kinds {
            let hit = self.faults.get(*k).copied().unwrap_or(0);
            let enabled = self.enabled.get(*k).copied().unwrap_or(0);
            out.push_str(&format!(
                "| {k} | {enabled} | {hit} | {:.0}% | {:.0}% |\n",
                share(hit, self.seeds),
                share(hit, enabled)
            ));
        }
        out.push_str("\n| path | seeds | share |\n|---|---|---|\n");
        for (k, n) in &self.paths {
            out.push_str(&format!("| {k} | {n} | {:.0}% |\n", share(*n, self.seeds)));
        }
        out
    }
}
