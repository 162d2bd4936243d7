//! The duplications of one hosted replica: a `Duplicator` per duplication of its table while it
//! is the primary, what the shared log keeps for them on every replica, and the reads a
//! duplicator needs that the host can answer itself.
//!
//! Decisions made here, so that the simulator makes them too:
//! - **Who ships**: only a primary that has reconciled (it serves reads). A replica that stops
//!   being one drops its duplicators; the next primary starts from the confirmed decree the meta
//!   persisted (at-least-once; the apply at the remote is idempotent).
//! - **Reads**: from the core's in-memory log when it still starts at the decree asked for, else
//!   from the shared log on disk (an action for the runtime). A snapshot is read from the engine
//!   as it is (a scan in key order): every version it sees is at least as new as at its decree,
//!   and the log from that decree on ships again whatever changed after, so last-writer-wins ends
//!   at the same state as with a frozen checkpoint, without holding one.
//! - **What the log keeps**: on the primary, what its duplicators still need
//!   (`Duplicator::log_hold`); on every other replica, everything after the confirmed decree the
//!   meta persisted, so that a new primary finds what it must ship (a `skip` duplication
//!   lagging beyond its decree bound holds nothing).

use std::collections::BTreeMap;
use std::sync::Arc;
use tandem_core::replica::{DupRecord, DupWatermark, Replica};
use tandem_core::{Decree, Mutation};
use tandem_dup_core::duplicator::{Action, Input, Now, ReadId, Start};
use tandem_dup_core::{BatchId, Duplicator, DuplicatorOptions, DuplicatorState, FailMode, TableDup};

pub type DupId = u32;

/// Records read from the engine per scan while answering a snapshot read.
const SNAPSHOT_SCAN_CHUNK: usize = 256;

/// A duplication of the replica's table, as the meta hands it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DupConfig {
    pub dup_id: DupId,
    /// The table's name, the same at both sites.
    pub table: String,
    /// The site records are shipped to (the runtime knows its address).
    pub remote_site: String,
    pub paused: bool,
    pub fail_mode: FailMode,
    /// A new duplication ships a snapshot of each partition first.
    pub sync_existing: bool,
    /// This partition's confirmed decree as the meta persisted it; None: never started.
    pub confirmed: Option<Decree>,
    /// The table's watermark (`TableDup::watermark_us`), carried by what this partition ships.
    pub watermark_us: u64,
    /// This partition sends the table's watermark to every remote partition when idle
    /// (partition 0: one sender per duplication).
    pub heartbeats: bool,
}

/// A table's duplication as partition `partition`'s replica is given it.
pub fn config_for(dup: &TableDup, partition: u32) -> DupConfig {
    DupConfig {
        dup_id: dup.dup_id,
        table: dup.table.clone(),
        remote_site: dup.remote_site.clone(),
        paused: dup.paused,
        fail_mode: dup.fail_mode,
        sync_existing: dup.sync_existing,
        confirmed: dup.confirmed.iter().find(|(p, _)| *p == partition).map(|(_, c)| *c),
        watermark_us: dup.watermark_us,
        heartbeats: partition == 0,
    }
}

/// What the runtime must do for a duplicator; each reports back `ReplicaEvent::Dup`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DupWork {
    /// Read committed mutations `from..=to` of this partition from the shared log on disk, about
    /// `bytes_max` of them (never past `to`, which is committed); report `LogRead`, `LogGap` when
    /// the log no longer holds `from`, or `ReadFailed`.
    ReadLog { read: ReadId, from: Decree, to: Decree, bytes_max: usize },
    /// Send the records to `remote_site`, each to the partition that owns its key there, with
    /// the watermark; no records: the watermark alone to every partition there (a heartbeat).
    /// Report `Shipped` once all were applied or superseded, else `ShipFailed`.
    Ship { table: String, remote_site: String, batch: BatchId, records: Vec<DupRecord>, watermark: Option<DupWatermark> },
}

impl DupWork {
    /// What a `ReadLog` reports, given what the log returned for the partition from `from` on:
    /// the mutations `from..=to`, about `bytes_max` of them but at least one; `LogGap` when the
    /// log no longer starts at `from`; `ReadFailed` on an error. The server and the simulator
    /// both answer through this.
    pub fn log_read_answer(read: ReadId, from: Decree, to: Decree, bytes_max: usize, result: Result<Vec<Mutation>, String>) -> Input {
        match result {
            Ok(m) if m.first().is_some_and(|m| m.decree == from) => {
                let mut bytes = 0;
                let mutations = m
                    .into_iter()
                    .take_while(|m| m.decree <= to)
                    .take_while(|m| {
                        let first = bytes == 0;
                        bytes += m.encoded_bytes();
                        first || bytes <= bytes_max
                    })
                    .map(Arc::new)
                    .collect();
                Input::LogRead { read, mutations }
            }
            Ok(_) => Input::LogGap { read },
            Err(error) => Input::ReadFailed { read, error },
        }
    }
}

#[derive(Debug)]
pub struct Duplications {
    options: DuplicatorOptions,
    configs: Vec<DupConfig>,
    running: BTreeMap<DupId, Duplicator>,
    /// The committed decree and first uncommitted timestamp last fed to the running duplicators.
    fed_committed: Decree,
    fed_uncommitted: Option<u64>,
    /// The hold last reported to the host (a new replica holds nothing).
    hold_reported: Option<Decree>,
    /// Duplicators made so far: each numbers its reads and batches in a range of its own.
    made: u64,
}

impl Duplications {
    pub fn new(options: DuplicatorOptions) -> Self {
        Duplications {
            options,
            configs: Vec::new(),
            running: BTreeMap::new(),
            fed_committed: 0,
            fed_uncommitted: None,
            hold_reported: None,
            made: 0,
        }
    }

    pub fn configs(&self) -> &[DupConfig] {
        &self.configs
    }

    /// The meta's list for this table: duplications not in it are removed.
    pub fn configure(&mut self, now: Now, configs: Vec<DupConfig>) {
        self.running.retain(|id, _| configs.iter().any(|c| c.dup_id == *id));
        for c in &configs {
            if let Some(d) = self.running.get_mut(&c.dup_id) {
                d.step(now, if c.paused { Input::Pause } else { Input::Resume });
                d.step(now, Input::TableWatermark { watermark_us: c.watermark_us });
            }
        }
        self.configs = configs;
    }

    pub fn step(&mut self, now: Now, dup_id: DupId, input: Input) {
        if let Some(d) = self.running.get_mut(&dup_id) {
            d.step(now, input);
        }
    }

    pub fn tick(&mut self, now: Now) {
        for d in self.running.values_mut() {
            d.step(now, Input::Tick);
        }
    }

    /// The end of a turn: starts or stops the duplicators for the replica's role, feeds them the
    /// committed decree, answers the reads the host can, and returns what the runtime must do.
    pub fn end_turn(&mut self, now: Now, core: &Replica) -> Vec<(DupId, DupWork)> {
        if core.read_ready().is_err() {
            self.running.clear();
            return Vec::new();
        }
        let committed = core.last_committed();
        let uncommitted = core.first_uncommitted_timestamp_us();
        for c in &self.configs {
            if self.running.contains_key(&c.dup_id) {
                continue;
            }
            self.made += 1;
            let first_id = self.made << 32;
            let start = match (c.confirmed, c.sync_existing) {
                (Some(d), _) => Start::From(d),
                (None, true) => Start::Snapshot,
                (None, false) => Start::Now,
            };
            let heartbeat_ms = if c.heartbeats { self.options.heartbeat_ms } else { None };
            let options = DuplicatorOptions { fail_mode: c.fail_mode, heartbeat_ms, ..self.options.clone() };
            let mut d = Duplicator::new(options, start).with_first_id(first_id);
            if c.paused {
                d.step(now, Input::Pause);
            }
            d.step(now, Input::TableWatermark { watermark_us: c.watermark_us });
            d.step(now, Input::Uncommitted { timestamp_us: uncommitted });
            d.step(now, Input::Committed { decree: committed });
            self.running.insert(c.dup_id, d);
        }
        // Both before any state is reported: a prepared mutation either is committed (and
        // counts as unconfirmed) or bounds the watermark as uncommitted.
        if uncommitted != self.fed_uncommitted {
            self.fed_uncommitted = uncommitted;
            for d in self.running.values_mut() {
                d.step(now, Input::Uncommitted { timestamp_us: uncommitted });
            }
        }
        if committed != self.fed_committed {
            self.fed_committed = committed;
            for d in self.running.values_mut() {
                d.step(now, Input::Committed { decree: committed });
            }
        }
        let mut work = Vec::new();
        for (&dup_id, d) in self.running.iter_mut() {
            let (table, remote_site, watermark_us) = self
                .configs
                .iter()
                .find(|c| c.dup_id == dup_id)
                .map(|c| (c.table.clone(), c.remote_site.clone(), c.watermark_us))
                .unwrap_or_default();
            let origin = self.options.cluster_id;
            let ship = |batch, records, watermark_us: u64| DupWork::Ship {
                table: table.clone(),
                remote_site: remote_site.clone(),
                batch,
                records,
                watermark: (watermark_us > 0).then_some(DupWatermark { origin, watermark_us }),
            };
            // Reads answered here lead to more (ships, the next read) until the duplicator's
            // read-ahead is full or it read up to the committed decree.
            let mut actions = d.take_actions();
            while !actions.is_empty() {
                let mut again = Vec::new();
                for action in actions {
                    match action {
                        Action::ReadLog { read, from, to, bytes_max } => {
                            match core.committed_mutations(from, to, bytes_max) {
                                Some(mutations) => {
                                    d.step(now, Input::LogRead { read, mutations });
                                    again.extend(d.take_actions());
                                }
                                None => work.push((dup_id, DupWork::ReadLog { read, from, to, bytes_max })),
                            }
                        }
                        Action::ReadSnapshot { read, decree, after, bytes_max } => {
                            let input = snapshot_read(core, read, decree, after, bytes_max);
                            d.step(now, input);
                            again.extend(d.take_actions());
                        }
                        // Nothing is held for a snapshot read from the engine (see the module doc).
                        Action::ReleaseSnapshot => {}
                        Action::Ship { batch, records } => work.push((dup_id, ship(batch, records, watermark_us))),
                        // A heartbeat is a batch of no records with the watermark it names.
                        Action::Heartbeat { batch, watermark_us } => work.push((dup_id, ship(batch, Vec::new(), watermark_us))),
                    }
                }
                actions = again;
            }
        }
        work
    }

    /// What the shared log must keep for this replica's duplications: every decree above the
    /// returned one (None: nothing).
    pub fn log_hold(&self, now: Now, committed: Decree) -> Option<Decree> {
        self.configs
            .iter()
            .filter_map(|c| match self.running.get(&c.dup_id) {
                // Never above what the meta persisted: a new primary (maybe this replica again)
                // starts from there (found in review).
                Some(d) => d.log_hold(now).map(|h| c.confirmed.map_or(h, |p| h.min(p))),
                None => {
                    let confirmed = c.confirmed?;
                    let lagging = committed.saturating_sub(confirmed) > self.options.skip_lag_decrees_max;
                    (c.fail_mode == FailMode::Slow || !lagging).then_some(confirmed)
                }
            })
            .min()
    }

    /// The hold when it changed since last reported.
    pub fn take_hold_change(&mut self, now: Now, committed: Decree) -> Option<Option<Decree>> {
        let hold = self.log_hold(now, committed);
        (self.hold_reported != hold).then(|| {
            self.hold_reported = hold;
            hold
        })
    }

    /// Whether this replica runs any duplicator.
    pub fn is_running(&self) -> bool {
        !self.running.is_empty()
    }

    /// The progress of the duplicators this replica runs (it is the primary).
    pub fn progress(&self, now: Now) -> Vec<(DupId, DuplicatorState)> {
        self.running.iter().map(|(id, d)| (*id, d.state(now))).collect()
    }
}

/// Reads about `bytes_max` of stored records after `after` from the replica's engine; the
/// snapshot's decree is the committed one when it starts.
fn snapshot_read(core: &Replica, read: ReadId, decree: Option<Decree>, after: Option<Vec<u8>>, bytes_max: usize) -> Input {
    let decree = decree.unwrap_or(core.last_committed());
    let mut start = match &after {
        Some(k) => {
            let mut s = k.clone();
            s.push(0);
            s
        }
        None => Vec::new(),
    };
    let mut records = Vec::new();
    let mut bytes = 0;
    loop {
        let chunk = match core.engine().scan(&start, None, SNAPSHOT_SCAN_CHUNK) {
            Ok(chunk) => chunk,
            Err(e) => return Input::ReadFailed { read, error: e.to_string() },
        };
        let exhausted = chunk.len() < SNAPSHOT_SCAN_CHUNK;
        for (key, value) in chunk {
            bytes += key.len() + value.len();
            start = key.clone();
            start.push(0);
            records.push((key, value));
            if bytes >= bytes_max {
                let next = records.last().map(|(k, _)| k.clone());
                return Input::SnapshotRead { read, decree, records, next };
            }
        }
        if exhausted {
            return Input::SnapshotRead { read, decree, records, next: None };
        }
    }
}
