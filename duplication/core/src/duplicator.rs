//! The duplicator of one partition's primary for one duplication: what to read, what to ship,
//! when a decree is confirmed, what the log must keep.
//!
//! Inputs, actions and invariants:
//! - `confirmed` only grows, and every record of every decree up to it was applied (or
//!   superseded) at the remote site. It is what the meta persists and a new primary resumes from.
//! - Records are shipped in decree order, one batch in flight; a failed batch is shipped again
//!   (at-least-once; the remote's apply is idempotent), after a back-off. Nothing is skipped.
//! - `log_hold` is the decree above which the shared log must keep everything: `confirmed` (or
//!   the snapshot's decree while a snapshot ships). In `skip` mode a duplication lagging beyond
//!   its bounds holds nothing; if the log then loses what it needs, the duplicator re-syncs from a
//!   snapshot instead of holding the log forever.
//! - A snapshot (initial sync, or recovery from a log gap) ships every record of a checkpoint at
//!   decree D that originated here; `confirmed` becomes D only when all of it is applied, then
//!   the log from D + 1 follows.

use std::collections::VecDeque;
use std::sync::Arc;
use tandem_core::replica::DupRecord;
use tandem_core::timetag::timetag_timestamp_us;
use tandem_core::{Decree, Mutation};

use crate::records::{records_of_mutation, snapshot_record};

pub type BatchId = u64;
pub type ReadId = u64;

/// Commits heard within this long of each other share one lag entry.
const HEARD_GRANULARITY_US: u64 = 10_000;
/// Lag entries kept before they are coarsened (bounded memory while far behind).
const HEARD_ENTRIES_MAX: usize = 1024;

/// What a duplication does when it cannot keep up (`tandem dup add --fail-mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailMode {
    /// Hold the log until every mutation is confirmed, however long that takes.
    Slow,
    /// Past the lag bounds, stop holding the log; re-sync from a snapshot if it lost what was
    /// not shipped.
    Skip,
}

impl FailMode {
    pub fn name(&self) -> &'static str {
        match self {
            FailMode::Slow => "slow",
            FailMode::Skip => "skip",
        }
    }

    pub fn from_name(name: &str) -> Option<FailMode> {
        match name {
            "slow" => Some(FailMode::Slow),
            "skip" => Some(FailMode::Skip),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DuplicatorOptions {
    /// This site's cluster id: only records stamped with it are shipped.
    pub cluster_id: u8,
    pub fail_mode: FailMode,
    /// Bytes of keys and values in one batch; at most the remote's limit (4 × max_value_bytes).
    /// A larger record still ships, alone. Halved while the remote refuses batches as too large.
    pub batch_bytes_max: usize,
    /// Bytes of records read ahead of what is shipped.
    pub read_ahead_bytes_max: usize,
    /// A batch smaller than `batch_bytes_max` waits this long for more records (0: ships as soon
    /// as nothing is in flight, so batches grow with the round trip).
    pub batch_delay_ms: u64,
    /// Back-off after a failed read or shipment: from the min, doubling to the max.
    pub retry_delay_min_ms: u64,
    pub retry_delay_max_ms: u64,
    /// `skip` mode: lag (decrees, or milliseconds behind the oldest unshipped write) beyond which
    /// the log is no longer held for this duplication.
    pub skip_lag_decrees_max: u64,
    pub skip_lag_ms_max: u64,
    /// How far apart this site's wall clocks may be (the replicas' `max_clock_offset`): a
    /// mutation not yet made may still be stamped this much before another server's clock.
    pub max_clock_offset_us: u64,
    /// The duplicator that sends the table's watermark to every remote partition while there
    /// is nothing to ship (one per duplication: partition 0's), this often at most; None: not
    /// this one.
    pub heartbeat_ms: Option<u64>,
}

impl Default for DuplicatorOptions {
    fn default() -> Self {
        DuplicatorOptions {
            cluster_id: 1,
            fail_mode: FailMode::Slow,
            batch_bytes_max: 1 << 20,
            read_ahead_bytes_max: 4 << 20,
            batch_delay_ms: 0,
            retry_delay_min_ms: 100,
            retry_delay_max_ms: 10_000,
            skip_lag_decrees_max: 1_000_000,
            skip_lag_ms_max: 3_600_000,
            max_clock_offset_us: 500_000,
            heartbeat_ms: Some(5_000),
        }
    }
}

/// Time as the runtime knows it when it feeds an input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Now {
    /// Monotonic milliseconds (delays, back-off).
    pub now_ms: u64,
    /// Wall clock microseconds since the Unix epoch (lag against origin timestamps).
    pub wall_us: u64,
}

/// Where a duplicator starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// Everything up to this decree is confirmed (persisted by the meta).
    From(Decree),
    /// A new duplication without `--sync-existing`: ships what commits from the first
    /// committed decree it hears of.
    Now,
    /// A new duplication with `--sync-existing`: a snapshot first.
    Snapshot,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Shipping a snapshot; `decree` is known once the first read answered.
    Snapshot { decree: Option<Decree>, after: Option<Vec<u8>>, read_all: bool },
    Log,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShipFailure {
    /// The remote refused the batch as over its size limit: ship smaller batches.
    TooLarge,
    /// The remote's clock is behind our records by more than its `max_clock_offset`.
    ClockAhead,
    /// Unreachable, not the primary, busy, timed out: the outcome may be unknown.
    Unavailable(String),
    /// Refused for another reason (for example the remote table is missing).
    Refused(String),
}

impl ShipFailure {
    /// How the other site's answer to one partition's `Duplicate` write reads to the duplicator:
    /// `None` when the write is sent again: it was not taken (not the primary, busy), or its
    /// outcome is unknown (sending records again is harmless). Else the failure that ends the
    /// batch.
    pub fn of_apply_error(error: &tandem_core::Error) -> Option<ShipFailure> {
        use tandem_core::Error;
        match error {
            Error::NotPrimary { .. } | Error::Busy { .. } | Error::OutcomeUnknown { .. } => None,
            Error::TooLarge(_) => Some(ShipFailure::TooLarge),
            Error::ClockAhead { .. } => Some(ShipFailure::ClockAhead),
            Error::Storage(m) => Some(ShipFailure::Unavailable(m.clone())),
            // The other site's disk: sent again after the pause an unavailable site gets.
            Error::DiskFull { .. } => Some(ShipFailure::Unavailable(error.to_string())),
            Error::InvalidArgument(_) | Error::Corrupt { .. } | Error::CheckFailed(_) => Some(ShipFailure::Refused(error.to_string())),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// The partition's committed decree (after each turn that moved it).
    Committed { decree: Decree },
    /// Time passed: delayed batches and retries are due.
    Tick,
    /// Answer to `ReadLog`: committed mutations from `from` on, contiguous, in decree order.
    LogRead { read: ReadId, mutations: Vec<Arc<Mutation>> },
    /// Answer to `ReadLog`: the log no longer holds its `from`.
    LogGap { read: ReadId },
    /// Answer to `ReadSnapshot`: stored records (key, value) of the checkpoint at `decree`, in
    /// key order; `next` is where the following read starts (None: this was the last).
    SnapshotRead { read: ReadId, decree: Decree, records: Vec<(Vec<u8>, Vec<u8>)>, next: Option<Vec<u8>> },
    ReadFailed { read: ReadId, error: String },
    Shipped { batch: BatchId },
    ShipFailed { batch: BatchId, failure: ShipFailure },
    Pause,
    Resume,
    /// The first mutation prepared and not yet committed on this primary (None: there is none),
    /// fed with `Committed` after each turn that changed it.
    Uncommitted { timestamp_us: Option<u64> },
    /// The table's watermark as the meta computed it from every partition's reports: what a
    /// heartbeat carries.
    TableWatermark { watermark_us: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Read this partition's committed mutations with decrees `from..=to`, in order, about
    /// `bytes_max` of them at least one, from the log cache or the log on disk. Answer
    /// `LogRead`, `LogGap` if the log no longer holds `from`, or `ReadFailed`.
    ReadLog { read: ReadId, from: Decree, to: Decree, bytes_max: usize },
    /// Read stored records of a snapshot after key `after` (None: from the first), about
    /// `bytes_max` of them. `decree` None: first take a checkpoint and keep it (a checkpoint
    /// hold) until `ReleaseSnapshot`; its decree comes back in the answer.
    ReadSnapshot { read: ReadId, decree: Option<Decree>, after: Option<Vec<u8>>, bytes_max: usize },
    /// The snapshot's checkpoint is no longer needed by this duplicator.
    ReleaseSnapshot,
    /// Send the records to the remote site, each to the partition that owns its key. Answer
    /// `Shipped` once every record was applied or superseded there, else `ShipFailed`.
    Ship { batch: BatchId, records: Vec<DupRecord> },
    /// Nothing to ship: send the table's watermark to every partition of the remote table, so
    /// that an idle sender still lets the other site compact its tombstones. Answered like
    /// `Ship`.
    Heartbeat { batch: BatchId, watermark_us: u64 },
}

/// A summary for beacons, `tandem dup list` and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DuplicatorState {
    pub phase: &'static str,
    pub paused: bool,
    pub committed: Decree,
    pub confirmed: Decree,
    pub lag_decrees: u64,
    pub lag_ms: u64,
    pub records_shipped: u64,
    pub bytes_shipped: u64,
    pub failures: u64,
    pub clock_ahead_refusals: u64,
    pub resyncs: u64,
    pub last_error: Option<String>,
    /// Every record this partition made before this time is applied at the remote, and every
    /// record it makes later is stamped at or after it (`Duplicator::watermark_us`).
    pub watermark_us: u64,
}

/// A record waiting to ship, with its decree and the origin timestamp that lag is measured by.
#[derive(Clone, Debug)]
struct Pending {
    decree: Decree,
    timestamp_us: u64,
    record: DupRecord,
}

#[derive(Debug)]
struct InFlight {
    batch: BatchId,
    records: Vec<Pending>,
}

#[derive(Debug)]
pub struct Duplicator {
    options: DuplicatorOptions,
    phase: Phase,
    /// `Start::Now` until the first committed decree is heard of.
    start_now: bool,
    paused: bool,
    committed: Decree,
    confirmed: Decree,
    /// Every decree up to here was read: its records are pending, in flight or applied.
    read_through: Decree,
    /// When committed decrees were first heard of: `(d, t)` means the decrees after the previous
    /// entry's, up to `d`, committed at about `t` (entries at least `HEARD_GRANULARITY_US`
    /// apart, at most `HEARD_ENTRIES_MAX`, coarsened when full). Only decrees above `confirmed`
    /// are kept. The lag of a decree not yet read comes from here.
    heard: VecDeque<(Decree, u64)>,
    /// The origin timestamp of the first unconfirmed decree, once read.
    oldest_open_us: Option<u64>,
    /// The timestamp of decree `read_through`, when it was read from the log.
    read_through_us: Option<u64>,
    /// See `Input::Uncommitted`.
    uncommitted_us: Option<u64>,
    table_watermark_us: u64,
    /// The watermark the last heartbeat carried, and when the next may go.
    heartbeat_sent_us: u64,
    heartbeat_at_ms: u64,
    pending: VecDeque<Pending>,
    pending_bytes: usize,
    /// When the oldest pending record was read (for `batch_delay_ms`).
    pending_since_ms: Option<u64>,
    reading: Option<ReadId>,
    next_read: ReadId,
    in_flight: Option<InFlight>,
    next_batch: BatchId,
    /// No read or shipment before this (back-off).
    retry_at_ms: u64,
    retry_delay_ms: u64,
    batch_bytes_limit: usize,
    /// The smallest batch the remote refused as too large: batches grow back after a success,
    /// but never to that size again (growing back to it cost every other round trip; the
    /// two-site simulator's small `max_value_bytes` drained a backlog at half speed, seed 2389).
    refused_bytes: Option<usize>,
    records_shipped: u64,
    bytes_shipped: u64,
    failures: u64,
    clock_ahead_refusals: u64,
    resyncs: u64,
    last_error: Option<String>,
    actions: Vec<Action>,
}

impl Duplicator {
    pub fn new(options: DuplicatorOptions, start: Start) -> Duplicator {
        let (phase, confirmed, start_now) = match start {
            Start::From(decree) => (Phase::Log, decree, false),
            Start::Now => (Phase::Log, 0, true),
            Start::Snapshot => (Phase::Snapshot { decree: None, after: None, read_all: false }, 0, false),
        };
        Duplicator {
            retry_delay_ms: options.retry_delay_min_ms,
            batch_bytes_limit: options.batch_bytes_max,
            refused_bytes: None,
            options,
            phase,
            start_now,
            paused: false,
            committed: confirmed,
            confirmed,
            read_through: confirmed,
            heard: VecDeque::new(),
            oldest_open_us: None,
            read_through_us: None,
            uncommitted_us: None,
            table_watermark_us: 0,
            heartbeat_sent_us: 0,
            heartbeat_at_ms: 0,
            pending: VecDeque::new(),
            pending_bytes: 0,
            pending_since_ms: None,
            reading: None,
            next_read: 1,
            in_flight: None,
            next_batch: 1,
            retry_at_ms: 0,
            records_shipped: 0,
            bytes_shipped: 0,
            failures: 0,
            clock_ahead_refusals: 0,
            resyncs: 0,
            last_error: None,
            actions: Vec::new(),
        }
    }

    /// Numbers this duplicator's reads and batches from `first` on, so that a runtime's late
    /// answer to an earlier duplicator of the same duplication (dropped when its replica stopped
    /// being the primary, then made again) is never taken for an answer to this one.
    pub fn with_first_id(mut self, first: u64) -> Duplicator {
        self.next_read = first;
        self.next_batch = first;
        self
    }

    pub fn confirmed(&self) -> Decree {
        self.confirmed
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// The shared log must keep every decree above this one for this duplication; None: it
    /// holds nothing (a `skip` duplication lagging beyond its bounds).
    pub fn log_hold(&self, now: Now) -> Option<Decree> {
        if self.options.fail_mode == FailMode::Skip
            && (self.lag_decrees() > self.options.skip_lag_decrees_max || self.lag_ms(now) > self.options.skip_lag_ms_max)
        {
            return None;
        }
        Some(match self.phase {
            Phase::Snapshot { decree: Some(d), .. } => d.max(self.confirmed),
            _ => self.confirmed,
        })
    }

    pub fn lag_decrees(&self) -> u64 {
        self.committed.saturating_sub(self.confirmed)
    }

    /// Milliseconds since the oldest write not yet confirmed was made (0 when caught up): its
    /// origin timestamp once read, else when its commit was first heard of.
    pub fn lag_ms(&self, now: Now) -> u64 {
        if self.committed <= self.confirmed {
            return 0;
        }
        let since = self.oldest_open_us.or_else(|| self.heard.front().map(|(_, t)| *t));
        since.map_or(0, |t| now.wall_us.saturating_sub(t) / 1000)
    }

    /// The origin time below which every record of this partition is applied at the remote:
    /// the timestamp of the first unconfirmed decree (timestamps grow with decrees, DESIGN.md
    /// §2), 0 while that is not known (a snapshot ships, or the log was not read yet), and never
    /// above what is still to come: a prepared mutation not committed yet, or one not made yet,
    /// which another server of this site (after a failover) may stamp up to twice the clock
    /// offset before this one's clock (docs/duplication.md, "Tombstones").
    pub fn watermark_us(&self, now: Now) -> u64 {
        let future = now.wall_us.saturating_sub(2 * self.options.max_clock_offset_us);
        let future = self.uncommitted_us.map_or(future, |u| future.min(u));
        let open = match self.phase {
            Phase::Snapshot { .. } => return 0,
            Phase::Log if self.start_now => return 0,
            Phase::Log if self.committed <= self.confirmed => None,
            Phase::Log => Some(match (self.oldest_open_us, self.read_through_us) {
                (Some(t), _) => t,
                (None, Some(t)) if self.read_through == self.confirmed => t + 1,
                _ => 0,
            }),
        };
        open.map_or(future, |o| o.min(future))
    }

    pub fn state(&self, now: Now) -> DuplicatorState {
        DuplicatorState {
            phase: match self.phase {
                Phase::Snapshot { .. } => "snapshot",
                Phase::Log => "log",
            },
            paused: self.paused,
            committed: self.committed,
            confirmed: self.confirmed,
            lag_decrees: self.lag_decrees(),
            lag_ms: self.lag_ms(now),
            records_shipped: self.records_shipped,
            bytes_shipped: self.bytes_shipped,
            failures: self.failures,
            clock_ahead_refusals: self.clock_ahead_refusals,
            resyncs: self.resyncs,
            last_error: self.last_error.clone(),
            watermark_us: self.watermark_us(now),
        }
    }

    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    pub fn step(&mut self, now: Now, input: Input) {
        match input {
            Input::Committed { decree } => self.on_committed(now, decree),
            Input::Tick => {}
            Input::LogRead { read, mutations } => self.on_log_read(now, read, mutations),
            Input::LogGap { read } => self.on_log_gap(read),
            Input::SnapshotRead { read, decree, records, next } => self.on_snapshot_read(now, read, decree, records, next),
            Input::ReadFailed { read, error } => {
                if self.reading == Some(read) {
                    self.reading = None;
                    self.fail(now, format!("reading the log: {error}"));
                }
            }
            Input::Shipped { batch } => self.on_shipped(batch),
            Input::ShipFailed { batch, failure } => self.on_ship_failed(now, batch, failure),
            Input::Pause => self.paused = true,
            Input::Resume => self.paused = false,
            Input::Uncommitted { timestamp_us } => self.uncommitted_us = timestamp_us,
            Input::TableWatermark { watermark_us } => self.table_watermark_us = watermark_us,
        }
        self.drive(now);
    }

    fn on_committed(&mut self, now: Now, decree: Decree) {
        if self.start_now {
            self.start_now = false;
            self.confirmed = decree;
            self.read_through = decree;
            self.committed = decree;
        }
        if decree <= self.committed {
            return;
        }
        self.committed = decree;
        match self.heard.back_mut() {
            Some((d, t)) if now.wall_us < *t + HEARD_GRANULARITY_US => *d = decree,
            _ => {
                if self.heard.len() == HEARD_ENTRIES_MAX {
                    // Coarsen: merge neighbours, keeping each pair's earlier time.
                    let merged: VecDeque<(Decree, u64)> = self
                        .heard
                        .iter()
                        .collect::<Vec<_>>()
                        .chunks(2)
                        .map(|pair| (pair[pair.len() - 1].0, pair[0].1))
                        .collect();
                    self.heard = merged;
                }
                self.heard.push_back((decree, now.wall_us));
            }
        }
    }

    fn on_log_read(&mut self, now: Now, read: ReadId, mutations: Vec<Arc<Mutation>>) {
        if self.reading != Some(read) || self.phase != Phase::Log {
            return;
        }
        self.reading = None;
        let mut progressed = false;
        for m in mutations {
            // Contiguous from read_through + 1 and committed; anything else is not what was asked.
            if m.decree != self.read_through + 1 || m.decree > self.committed {
                break;
            }
            for record in records_of_mutation(&m, self.options.cluster_id) {
                self.push_pending(now, Pending { decree: m.decree, timestamp_us: m.timestamp_us, record });
            }
            self.read_through = m.decree;
            self.read_through_us = Some(m.timestamp_us);
            progressed = true;
        }
        if !progressed {
            self.fail(now, format!("the log returned nothing from decree {}", self.read_through + 1));
            return;
        }
        self.confirm_read();
    }

    fn on_log_gap(&mut self, read: ReadId) {
        if self.reading != Some(read) || self.phase != Phase::Log {
            return;
        }
        self.reading = None;
        // The log lost decrees not yet shipped (a skip duplication released it, or this replica
        // learned from a checkpoint): ship a snapshot, which LWW makes safe at any time.
        self.resyncs += 1;
        self.last_error = Some(format!("the log no longer holds decree {}: re-syncing from a snapshot", self.read_through + 1));
        self.pending.clear();
        self.pending_bytes = 0;
        self.pending_since_ms = None;
        self.oldest_open_us = None;
        self.phase = Phase::Snapshot { decree: None, after: None, read_all: false };
    }

    fn on_snapshot_read(&mut self, now: Now, read: ReadId, decree: Decree, records: Vec<(Vec<u8>, Vec<u8>)>, next: Option<Vec<u8>>) {
        if self.reading != Some(read) {
            return;
        }
        let Phase::Snapshot { decree: known, .. } = self.phase else { return };
        self.reading = None;
        if known.is_some_and(|k| k != decree) {
            // A different checkpoint than the one being shipped: a runtime bug; start over.
            self.fail(now, format!("snapshot changed from decree {} to {decree}", known.unwrap_or(0)));
            self.phase = Phase::Snapshot { decree: None, after: None, read_all: false };
            self.actions.push(Action::ReleaseSnapshot);
            return;
        }
        self.phase = Phase::Snapshot { decree: Some(decree), read_all: next.is_none(), after: next };
        let cluster_id = self.options.cluster_id;
        for (key, value) in records {
            if let Some(record) = snapshot_record(&key, &value, cluster_id) {
                let timestamp_us = timetag_timestamp_us(record.timetag());
                self.push_pending(now, Pending { decree, timestamp_us, record });
            }
        }
        self.finish_snapshot_if_done();
    }

    fn on_shipped(&mut self, batch: BatchId) {
        let Some(flight) = self.in_flight.take_if(|f| f.batch == batch) else { return };
        self.records_shipped += flight.records.len() as u64;
        self.bytes_shipped += flight.records.iter().map(|p| p.record.bytes()).sum::<usize>() as u64;
        self.retry_delay_ms = self.options.retry_delay_min_ms;
        let ceiling = self.refused_bytes.map_or(self.options.batch_bytes_max, |r| r.saturating_sub(1).max(1));
        self.batch_bytes_limit = (self.batch_bytes_limit * 2).min(self.options.batch_bytes_max).min(ceiling);
        self.last_error = None;
        match self.phase {
            Phase::Log => self.confirm_read(),
            Phase::Snapshot { .. } => self.finish_snapshot_if_done(),
        }
    }

    fn on_ship_failed(&mut self, now: Now, batch: BatchId, failure: ShipFailure) {
        let Some(flight) = self.in_flight.take_if(|f| f.batch == batch) else { return };
        if flight.records.is_empty() {
            // A heartbeat: sent again when it is next due. A snapshot that finished reading
            // while it was in flight is done now (seed 483 of the two-site simulator: it waited
            // for a heartbeat that its own zero watermark kept from going).
            self.heartbeat_sent_us = 0;
            match failure {
                ShipFailure::Unavailable(e) | ShipFailure::Refused(e) => self.fail(now, format!("heartbeat: {e}")),
                _ => self.fail(now, "the remote refused a heartbeat".into()),
            }
            self.finish_snapshot_if_done();
            return;
        }
        let bytes: usize = flight.records.iter().map(|p| p.record.bytes()).sum();
        let several = flight.records.len() > 1;
        // Back in front, in order: shipped again, nothing skipped.
        for p in flight.records.into_iter().rev() {
            self.pending_bytes += p.record.bytes();
            self.pending.push_front(p);
        }
        match failure {
            ShipFailure::TooLarge if several => {
                // apache/incubator-pegasus#1840: a duplicator that cannot shrink its batch stalls.
                self.batch_bytes_limit = (bytes / 2).max(1);
                self.refused_bytes = Some(self.refused_bytes.map_or(bytes, |r| r.min(bytes)));
                self.last_error = Some(format!("the remote refused {bytes} bytes as too large: shipping smaller batches"));
                self.failures += 1;
            }
            ShipFailure::TooLarge => self.fail(now, "the remote refused a single record as too large".into()),
            ShipFailure::ClockAhead => {
                self.clock_ahead_refusals += 1;
                self.fail(now, "the remote's clock is behind this site's records by more than its max_clock_offset".into());
            }
            ShipFailure::Unavailable(e) => self.fail(now, format!("remote unavailable: {e}")),
            ShipFailure::Refused(e) => self.fail(now, format!("remote refused: {e}")),
        }
    }

    fn push_pending(&mut self, now: Now, p: Pending) {
        self.pending_bytes += p.record.bytes();
        self.pending_since_ms.get_or_insert(now.now_ms);
        self.pending.push_back(p);
    }

    /// Log phase: everything before the first record not yet applied is confirmed.
    fn confirm_read(&mut self) {
        let in_flight_first = self.in_flight.as_ref().and_then(|f| f.records.first());
        let first_open = in_flight_first.or(self.pending.front());
        let (confirmed, oldest_open_us) = match first_open {
            Some(p) => (p.decree - 1, Some(p.timestamp_us)),
            None => (self.read_through, None),
        };
        self.advance_confirmed(confirmed);
        // The open record's decree is the first unconfirmed one now.
        self.oldest_open_us = oldest_open_us;
    }

    fn finish_snapshot_if_done(&mut self) {
        let Phase::Snapshot { decree: Some(decree), read_all: true, .. } = self.phase else { return };
        if !self.pending.is_empty() || self.in_flight.is_some() {
            return;
        }
        self.phase = Phase::Log;
        self.actions.push(Action::ReleaseSnapshot);
        if decree > self.read_through {
            self.read_through_us = None;
        }
        self.read_through = self.read_through.max(decree);
        self.oldest_open_us = None;
        self.advance_confirmed(decree);
    }

    fn advance_confirmed(&mut self, confirmed: Decree) {
        self.confirmed = self.confirmed.max(confirmed);
        self.committed = self.committed.max(self.confirmed);
        // Decrees heard of that are confirmed now no longer count for lag.
        while self.heard.front().is_some_and(|(d, _)| *d <= self.confirmed) {
            self.heard.pop_front();
        }
    }

    fn fail(&mut self, now: Now, error: String) {
        self.failures += 1;
        self.last_error = Some(error);
        self.retry_at_ms = now.now_ms + self.retry_delay_ms;
        self.retry_delay_ms = (self.retry_delay_ms * 2).min(self.options.retry_delay_max_ms);
    }

    /// Starts the reads and the shipment that are due.
    fn drive(&mut self, now: Now) {
        if self.paused || now.now_ms < self.retry_at_ms {
            return;
        }
        self.read_if_due();
        self.ship_if_due(now);
    }

    fn read_if_due(&mut self) {
        if self.reading.is_some() || self.pending_bytes >= self.options.read_ahead_bytes_max {
            return;
        }
        let bytes_max = self.options.read_ahead_bytes_max - self.pending_bytes;
        let read = self.next_read;
        match &self.phase {
            Phase::Log => {
                if self.start_now || self.read_through >= self.committed {
                    return;
                }
                self.actions.push(Action::ReadLog { read, from: self.read_through + 1, to: self.committed, bytes_max });
            }
            Phase::Snapshot { read_all: true, .. } => return,
            Phase::Snapshot { decree, after, .. } => {
                self.actions.push(Action::ReadSnapshot { read, decree: *decree, after: after.clone(), bytes_max });
            }
        }
        self.next_read += 1;
        self.reading = Some(read);
    }

    fn ship_if_due(&mut self, now: Now) {
        if self.in_flight.is_some() {
            return;
        }
        if self.pending.is_empty() {
            self.heartbeat_if_due(now);
            return;
        }
        let full = self.pending_bytes >= self.batch_bytes_limit;
        let waited = self.pending_since_ms.is_some_and(|since| now.now_ms >= since + self.options.batch_delay_ms);
        let nothing_more = self.reading.is_none()
            && match &self.phase {
                Phase::Log => self.read_through >= self.committed,
                Phase::Snapshot { read_all, .. } => *read_all,
            };
        if !full && !waited && !nothing_more {
            return;
        }
        let mut records = Vec::new();
        let mut bytes = 0;
        while let Some(p) = self.pending.front() {
            let b = p.record.bytes();
            if !records.is_empty() && bytes + b > self.batch_bytes_limit {
                break;
            }
            bytes += b;
            self.pending_bytes -= b;
            records.push(self.pending.pop_front().expect("front exists"));
        }
        self.pending_since_ms = if self.pending.is_empty() { None } else { Some(now.now_ms) };
        let batch = self.next_batch;
        self.next_batch += 1;
        self.actions.push(Action::Ship { batch, records: records.iter().map(|p| p.record.clone()).collect() });
        self.in_flight = Some(InFlight { batch, records });
    }

    /// The heartbeat duplicator, with nothing to ship, sends the table's watermark once it moved.
    fn heartbeat_if_due(&mut self, now: Now) {
        let Some(every_ms) = self.options.heartbeat_ms else { return };
        if self.phase != Phase::Log || self.table_watermark_us <= self.heartbeat_sent_us || now.now_ms < self.heartbeat_at_ms {
            return;
        }
        let batch = self.next_batch;
        self.next_batch += 1;
        self.heartbeat_sent_us = self.table_watermark_us;
        self.heartbeat_at_ms = now.now_ms + every_ms;
        self.actions.push(Action::Heartbeat { batch, watermark_us: self.table_watermark_us });
        self.in_flight = Some(InFlight { batch, records: Vec::new() });
    }
}

#[cfg(test)]
#[path = "duplicator_tests.rs"]
mod tests;
