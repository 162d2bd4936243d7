//! The host of one replica server: the decisions that span its replicas. The server runtime
//! feeds it ticks, beacon answers and IO completions and carries out its actions; the simulator
//! runs the same code.
//!
//! ```text
//!  Tick ─────────────▶ TickReplicas{share} · SendBeacon (when due, one in flight) · ReadDurable (log GC due)
//!  BeaconAnswered ───▶ OpenReplica / Configure (each config the replica does not hold) · RemoveReplica (purged tables)
//!  ConfigMoved ──────▶ (the replica's next configuration is given even if unchanged)
//!  Configured (all) ─▶ ExtendLease · RemoveReplica (left out of its configuration long enough)
//!  DurableRead ──────▶ CollectLog{keep_after: min(durable, holds), retain_bytes}
//!  LogCollected ─────▶ FlushEngine (each replica holding the log over retain_bytes by its engine)
//!  PrepareForUnknown ▶ OpenReplica (a new partition of a table an answer named: its prepare
//!                      can beat the answer that configures it)
//!  LogFailed ────────▶ Stop
//! ```
//!
//! Rules kept here, each with its reason:
//! - **Configurations before the lease.** A beacon's lease (`sent_at + lease_period`) is granted
//!   only after every replica it configured has taken its configuration, so a primary the meta
//!   replaced never sees a renewed lease before it sees that it was replaced.
//! - **When replica data is deleted.** A replica of a purged table at once; a replica its
//!   partition's configuration leaves out only after `inactive_replica_gc_delay`, only while that
//!   configuration has a primary (its members then hold every committed write; without one the
//!   meta may revive this copy), and only if the replica itself agrees it has no role. A replica
//!   being deleted is not created again until its data is gone.
//! - **What the shared log keeps** for each replica: everything after the decree its engine
//!   holds durably, and after every hold (a duplication that has not shipped it yet). A replica
//!   whose durable decree is unknown (not read, or opened or removed since) keeps everything.
//! - **Which engines are flushed**: RocksDB flushes the engines being written on its own, when
//!   the shared memtable budget is reached. The host flushes only the engines that hold the log
//!   over `log_retain_bytes` (0 while a disk is short): those with records in the oldest
//!   segments that their engine does not hold yet, and whose holds would let them go. Flushing
//!   every engine every round cost a server of a thousand replicas half its writes.

use crate::backup::{BackupCommand, Backups};
use crate::duplication::{config_for, DupConfig};
use tandem_backup_core::{BackupId, BackupTask, BackupTaskReport, RestoreFailure, RestoreSource};
use tandem_dup_core::TableDup;
use crate::options::HostOptions;
use std::collections::{BTreeMap, BTreeSet};
use tandem_core::replica::ReplicaOptions;
use tandem_core::{Decree, Gpid, NodeAddr, PartitionConfig, PartitionStatus};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostInput {
    /// Time passes (every `tick_interval_ms`).
    Tick { now_ms: u64 },
    /// The meta answered the beacon sent at `sent_at_ms`: the configurations of the partitions
    /// this server hosts or reported, the partition count of their tables, and the reported
    /// partitions whose table is gone.
    /// Also the duplications of their tables.
    /// Also the duplications of their tables, and each table's tombstone retention (ms).
    BeaconAnswered {
        sent_at_ms: u64,
        configs: Vec<PartitionConfig>,
        partition_counts: Vec<(u32, u32)>,
        tombstone_retention: Vec<(u32, u64)>,
        gone: Vec<Gpid>,
        dups: Vec<TableDup>,
        /// The backup uploads the meta hands this server (`Backups`).
        backups: Vec<BackupTask>,
        /// The tables being restored, and from which backup.
        restores: Vec<RestoreSource>,
        /// The meta's configurations for this server are the ones the beacon's `configs_digest`
        /// named (the last answer's): `configs`, `partition_counts` and `tombstone_retention`
        /// are left out, and the host takes the last answer's again.
        configs_unchanged: bool,
        /// The meta's view of this server's replicas did not add up to the beacon's digest (a
        /// new meta leader, a purged table): the answer may lack the configuration of a replica
        /// the meta did not know was here, so it grants nothing; the next beacon, with every
        /// report, goes at the next tick.
        resend_reports: bool,
    },
    /// `RestoreReplica` is done: the replica's database is in place.
    ReplicaRestored { gpid: Gpid },
    /// `RestoreReplica` failed and left nothing behind. `permanent`: the backup itself is
    /// damaged (a missing or corrupt object, a manifest that does not check), so trying again
    /// cannot help; otherwise (the target unreachable) the next answer tries again.
    RestoreFailed { gpid: Gpid, error: String, permanent: bool },
    /// An upload `BackupPartition` started reported progress, its entry or its failure.
    BackupReported(BackupTaskReport),
    /// A replica's read gate opened or closed (`ReplicaAction::SetReadGate`): open means a
    /// primary that reconciled what it inherited, the only kind that takes a backup.
    ReadGate { gpid: Gpid, open: bool },
    BeaconFailed { now_ms: u64 },
    /// The meta asks for a beacon now: a configuration this server hosts changed (a promotion
    /// waits for it). Sent at once, or as soon as the beacon in flight is done.
    BeaconNow { now_ms: u64 },
    /// Free space on each of the server's directories (data, log), read about every tick.
    DiskSpace { dirs: Vec<crate::disk::DirSpace> },
    /// The replica took the configuration `Configure` gave it; its status now (None: it is gone).
    Configured { gpid: Gpid, status: Option<PartitionStatus> },
    /// The replica's configuration is no longer the one it took last (`ReplicaAction::ConfigMoved`):
    /// the next answer's is given to it even if unchanged.
    ConfigMoved { gpid: Gpid },
    /// A prepare arrived for a partition this server does not host.
    PrepareForUnknown { config: PartitionConfig },
    /// `OpenReplica` failed (the replica is not hosted).
    OpenFailed { gpid: Gpid, error: String },
    /// `RemoveReplica` is done: the replica stopped and its data is deleted.
    ReplicaRemoved { gpid: Gpid },
    /// `ReadDurable` is done: the decree each replica's engine holds durably (one missing: not
    /// read, it keeps its whole log).
    DurableRead { decrees: BTreeMap<Gpid, Decree> },
    /// `CollectLog` is done: the replicas that still hold the log over `retain_bytes`, and up to
    /// which decree (`tandem_core::log_read::holding_back`; empty when collecting failed).
    LogCollected { holding_back: BTreeMap<Gpid, Decree> },
    /// Keep the log of `gpid` after `keep_after` for `holder` (None releases the hold).
    HoldLog { gpid: Gpid, holder: String, keep_after: Option<Decree> },
    /// The shared mutation log failed.
    LogFailed { error: String },
}

/// What the runtime must do, in order. Each says what to report back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostAction {
    /// Create an empty replica of `gpid` (or open it, if its data exists) with these options, and
    /// route its requests to it. Before the next input: a prepare may be waiting for it. Report
    /// `OpenFailed` if it cannot be opened.
    OpenReplica { gpid: Gpid, options: ReplicaOptions },
    /// Give the replica its configuration; report `Configured` once it took it.
    Configure { gpid: Gpid, config: PartitionConfig },
    /// Give the replica its table's duplications (`ReplicaEvent::Duplications`); they changed.
    Duplications { gpid: Gpid, configs: Vec<DupConfig> },
    /// Tick every replica, each with its share of the log cache.
    TickReplicas { log_cache_bytes_max: usize },
    /// Beacon to the meta with every replica's state and these reports of backup uploads;
    /// report `BeaconAnswered` or `BeaconFailed`.
    SendBeacon {
        sent_at_ms: u64,
        restarted: bool,
        lease_period_ms: u64,
        backup_reports: Vec<BackupTaskReport>,
        restore_failures: Vec<RestoreFailure>,
        /// The directory below its reserve: the meta shows it and places no replica here.
        disk_short: Option<crate::disk::DiskShort>,
        /// The most replicas this server hosts; the meta places no more here.
        replicas_max: usize,
        /// Replicas a configuration names this server for that it refused to open (it hosts
        /// `replicas_max`): the meta moves them elsewhere.
        refused: Vec<Gpid>,
        /// The digest of the last answer's configurations (`digest::answer_digest`): the meta
        /// leaves them out of its answer when its own are the same (None: send them).
        configs_digest: Option<tandem_core::digest::Digest>,
    },
    /// Checkpoint the replica of `task.gpid` and upload it as the task says, reporting with
    /// `BackupReported` as it goes and when it is done or failed.
    BackupPartition { task: BackupTask },
    /// Stop that upload; its reports are no longer wanted.
    CancelBackup { backup_id: BackupId, gpid: Gpid, attempt: u32 },
    /// Build the database of `gpid`, which this server does not host yet, from `source` (the
    /// backup's partition of the same index), then report `ReplicaRestored`, or `OpenFailed`
    /// (nothing is left behind; the next beacon answer tries again).
    RestoreReplica { gpid: Gpid, source: RestoreSource },
    /// Primaries of this server may serve until `until_ms` (server clock).
    ExtendLease { until_ms: u64 },
    /// From now, primaries take only writes that delete (`Some`: a directory is below its
    /// reserve; `Ctx::disk_low`), or every write again (`None`). Repeated with fresh figures
    /// while short.
    SetDiskShort { short: Option<crate::disk::DiskShort> },
    /// Requests for `table_id` must route with this partition count.
    SetPartitionCount { table_id: u32, partition_count: u32 },
    /// Compaction of `table_id`'s replicas (those open now and those opened later) drops a
    /// tombstone once it is older than this.
    SetTombstoneRetention { table_id: u32, retention_ms: u64 },
    /// Compaction of `table_id`'s replicas keeps tombstones and expired values stamped at or
    /// after `hold_us`: the smallest watermark of the table's own duplications (`u64::MAX`: it
    /// has none). The watermarks of the sites shipping here are each engine's own. Until the
    /// first one for a table, the runtime holds everything (0).
    SetTombstoneHold { table_id: u32, hold_us: u64 },
    /// Stop the replica and delete its data (database, checkpoints); report `ReplicaRemoved`.
    RemoveReplica { gpid: Gpid, why: String },
    /// Read the decree each replica's engine holds durably (in its files, whoever flushed
    /// them), without flushing; report `DurableRead`.
    ReadDurable { gpids: Vec<Gpid> },
    /// Ask the replica's engine to flush, without waiting for it and without holding up the
    /// replica's writes. Nothing is reported: the next `ReadDurable` shows it.
    FlushEngine { gpid: Gpid },
    /// Drop log records no replica needs: a partition's records at or before `keep_after[gpid]`
    /// go; those of a partition not in the map all go. Then report `LogCollected` with what
    /// holds the log over `retain_bytes`.
    CollectLog { keep_after: BTreeMap<Gpid, Decree>, retain_bytes: u64 },
    /// The server cannot go on: stop it (the meta moves its partitions; a restart replays).
    Stop { error: String },
    /// A configuration names this server for `gpid`, but it hosts `replicas_max` replicas
    /// already: it is not opened (log `why`; the beacons tell the meta). Once per refusal.
    RefuseReplica { gpid: Gpid, why: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Beacon {
    Idle { next_due_ms: u64 },
    InFlight { sent_at_ms: u64 },
    /// Answered; waiting for replicas to take their configurations before the lease.
    /// `waiting`: the replicas given a configuration, and which.
    Configuring { sent_at_ms: u64, waiting: BTreeMap<Gpid, PartitionConfig>, statuses: BTreeMap<Gpid, PartitionStatus>, seen: Vec<PartitionConfig> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Gc {
    Idle { next_due_ms: u64 },
    /// `ReadDurable` is out; `changed` were opened or removed since (their answers, if any, may
    /// be of another engine).
    Reading { started_ms: u64, changed: BTreeSet<Gpid> },
    /// `CollectLog` is out; `durable` is what the round read.
    Collecting { started_ms: u64, durable: BTreeMap<Gpid, Decree> },
}

pub struct Host {
    me: NodeAddr,
    options: HostOptions,
    replicas: BTreeSet<Gpid>,
    removing: BTreeSet<Gpid>,
    /// Since when each local replica has been outside its partition's configuration while that
    /// configuration had a primary.
    outside_since: BTreeMap<Gpid, u64>,
    partition_counts: BTreeMap<u32, u32>,
    /// The configuration each hosted replica took last (`Configured`) and holds still (no
    /// `ConfigMoved` since); forgotten with the replica (`forget`). An answer naming the same one again does not give it again: on a
    /// server of a thousand idle replicas that is a thousand task wake-ups a beacon fewer, and as
    /// many reports back (issue 15).
    taken: BTreeMap<Gpid, PartitionConfig>,
    /// The duplications last handed to each replica.
    dups_sent: BTreeMap<Gpid, Vec<DupConfig>>,
    /// The tombstone retention last given for each table.
    tombstone_retention: BTreeMap<u32, u64>,
    /// The tombstone hold last given for each table. Until given, the runtime holds every
    /// tombstone: after a restart, nothing is compacted away before the meta has said how far
    /// the table's duplications got.
    tombstone_hold: BTreeMap<u32, u64>,
    lease_until_ms: u64,
    /// No beacon of this process has been answered yet.
    restarted: bool,
    beacon: Beacon,
    /// The meta asked for a beacon while one was in flight: the next is due at once.
    beacon_asked: bool,
    disk: crate::disk::DiskWatch,
    gc: Gc,
    log_holds: BTreeMap<Gpid, BTreeMap<String, Decree>>,
    backups: Backups,
    /// The tables being restored, as the last beacon answer named them.
    restoring_tables: BTreeMap<u32, RestoreSource>,
    /// Hosted replicas whose read gate is open (reconciled primaries): backups start only there.
    read_ready: BTreeSet<Gpid>,
    /// Replicas whose database is being built from a backup (`RestoreReplica` in flight).
    restoring: BTreeSet<Gpid>,
    /// Replicas whose database was built and that open next without a restore.
    restored: BTreeSet<Gpid>,
    /// The last failure of each replica's restore, reported with every beacon while its table
    /// is being restored; a permanent one is not tried again.
    restore_failures: BTreeMap<Gpid, RestoreFailure>,
    /// Replicas refused for want of room, while a configuration still names this server.
    refused: BTreeSet<Gpid>,
    /// The last answer's configurations, partition counts and retentions, and their digest: an
    /// answer that says they did not change means these.
    last_answer: Option<(Vec<PartitionConfig>, Vec<(u32, u32)>, Vec<(u32, u64)>, tandem_core::digest::Digest)>,
    stopped: bool,
    actions: Vec<HostAction>,
}

impl Host {
    /// A server that opened `replicas` from its disk. The first tick beacons.
    pub fn new(me: NodeAddr, options: HostOptions, replicas: impl IntoIterator<Item = Gpid>, now_ms: u64) -> Host {
        assert!(options.validate().is_ok(), "host options not validated: {:?}", options.validate());
        let gc_first = now_ms + options.log_gc_interval_ms;
        let disk = crate::disk::DiskWatch::new(options.disk_reserve_bytes, options.disk_reserve_percent);
        let uploads_max = options.backup_uploads_max;
        Host {
            me,
            options,
            replicas: replicas.into_iter().collect(),
            removing: BTreeSet::new(),
            outside_since: BTreeMap::new(),
            taken: BTreeMap::new(),
            partition_counts: BTreeMap::new(),
            dups_sent: BTreeMap::new(),
            tombstone_retention: BTreeMap::new(),
            tombstone_hold: BTreeMap::new(),
            lease_until_ms: 0,
            restarted: true,
            beacon: Beacon::Idle { next_due_ms: now_ms },
            beacon_asked: false,
            disk,
            gc: Gc::Idle { next_due_ms: gc_first },
            log_holds: BTreeMap::new(),
            backups: Backups::new(uploads_max),
            restoring_tables: BTreeMap::new(),
            read_ready: BTreeSet::new(),
            restoring: BTreeSet::new(),
            restored: BTreeSet::new(),
            restore_failures: BTreeMap::new(),
            refused: BTreeSet::new(),
            last_answer: None,
            stopped: false,
            actions: Vec::new(),
        }
    }

    pub fn options(&self) -> &HostOptions {
        &self.options
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    /// Until when (server clock) this server's primaries may serve.
    pub fn lease_until_ms(&self) -> u64 {
        self.lease_until_ms
    }

    pub fn hosts(&self, gpid: Gpid) -> bool {
        self.replicas.contains(&gpid)
    }

    pub fn hosted(&self) -> impl Iterator<Item = Gpid> + '_ {
        self.replicas.iter().copied()
    }

    pub fn is_removing(&self, gpid: Gpid) -> bool {
        self.removing.contains(&gpid)
    }

    pub fn partition_count(&self, table_id: u32) -> Option<u32> {
        self.partition_counts.get(&table_id).copied()
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    pub fn take_actions(&mut self) -> Vec<HostAction> {
        std::mem::take(&mut self.actions)
    }

    pub fn step(&mut self, input: HostInput) {
        if self.stopped {
            return;
        }
        match input {
            HostInput::Tick { now_ms } => self.on_tick(now_ms),
            HostInput::BeaconAnswered { sent_at_ms, resend_reports: true, .. } => {
                // Found by the simulator (seed 43): a new meta leader answered a beacon that
                // carried only changed reports without the configuration of a replica whose
                // partition had replaced this server as primary; the lease it granted let that
                // replica serve beside the new primary.
                if matches!(self.beacon, Beacon::InFlight { sent_at_ms: s } if s == sent_at_ms) {
                    self.beacon = Beacon::Idle { next_due_ms: sent_at_ms };
                }
            }
            HostInput::BeaconAnswered { sent_at_ms, configs, partition_counts, tombstone_retention, gone, dups, backups, restores, configs_unchanged, resend_reports: false } => {
                // What did not change comes from the last answer; what did is kept for the next.
                // Only the answer to the beacon in flight counts (a late one's configurations are
                // not taken either): the cache is then exactly what that beacon's digest named.
                let current = matches!(self.beacon, Beacon::InFlight { sent_at_ms: s } if s == sent_at_ms);
                let (configs, partition_counts, tombstone_retention) = match &self.last_answer {
                    Some((c, p, t, _)) if current && configs_unchanged => (c.clone(), p.clone(), t.clone()),
                    _ => {
                        if current {
                            let digest = tandem_core::digest::answer_digest(&configs, &partition_counts, &tombstone_retention);
                            self.last_answer = Some((configs.clone(), partition_counts.clone(), tombstone_retention.clone(), digest));
                        }
                        (configs, partition_counts, tombstone_retention)
                    }
                };
                self.restoring_tables = restores.into_iter().map(|r| (r.table_id, r)).collect();
                let restoring = &self.restoring_tables;
                self.restore_failures.retain(|gpid, _| restoring.contains_key(&gpid.table_id));
                let commands = self.backups.on_answer(backups, &self.replicas, &self.read_ready);
                self.push_backup_commands(commands);
                // The hold before the retention: a shorter retention must never meet a hold
                // that does not yet know of a lagging duplication.
                self.set_tombstone_holds(&dups);
                for (table_id, retention_ms) in tombstone_retention {
                    if self.tombstone_retention.insert(table_id, retention_ms) != Some(retention_ms) {
                        self.actions.push(HostAction::SetTombstoneRetention { table_id, retention_ms });
                    }
                }
                self.on_beacon_answered(sent_at_ms, configs, partition_counts, gone, dups)
            }
            HostInput::BackupReported(report) => {
                let commands = self.backups.on_report(report, &self.read_ready);
                self.push_backup_commands(commands);
            }
            HostInput::ReadGate { gpid, open } => {
                if open && self.replicas.contains(&gpid) {
                    self.read_ready.insert(gpid);
                    let commands = self.backups.start_queued(&self.read_ready);
                    self.push_backup_commands(commands);
                } else {
                    self.read_ready.remove(&gpid);
                }
            }
            HostInput::RestoreFailed { gpid, error, permanent } => {
                if self.restoring.remove(&gpid) {
                    self.restore_failures.insert(gpid, RestoreFailure { gpid, error, permanent });
                }
            }
            HostInput::ReplicaRestored { gpid } => {
                self.restore_failures.remove(&gpid);
                if self.restoring.remove(&gpid) {
                    self.restored.insert(gpid);
                    self.open(gpid);
                }
            }
            HostInput::BeaconFailed { now_ms } => {
                if let Beacon::InFlight { sent_at_ms } = self.beacon {
                    self.beacon = Beacon::Idle { next_due_ms: self.next_beacon_due_ms(sent_at_ms).max(now_ms) };
                }
            }
            HostInput::DiskSpace { dirs } => {
                let was_short = self.disk.short().is_some();
                let short = self.disk.on_space(&dirs).cloned();
                if was_short != short.is_some() {
                    // The meta learns at the next tick, not a beacon period later: it stops
                    // placing replicas here (or starts again) and shows it.
                    self.beacon_due_at(0);
                }
                if was_short || short.is_some() {
                    self.actions.push(HostAction::SetDiskShort { short });
                }
            }
            HostInput::BeaconNow { now_ms } => {
                self.beacon_due_at(now_ms);
                self.beacon_if_due(now_ms);
            }
            HostInput::Configured { gpid, status } => {
                if let Beacon::Configuring { waiting, statuses, .. } = &mut self.beacon
                    && let Some(config) = waiting.remove(&gpid)
                {
                    match status {
                        Some(s) => {
                            statuses.insert(gpid, s);
                            if self.replicas.contains(&gpid) {
                                self.taken.insert(gpid, config);
                            }
                        }
                        None => {
                            self.taken.remove(&gpid);
                        }
                    }
                }
                self.finish_beacon_if_configured();
            }
            HostInput::ConfigMoved { gpid } => {
                self.taken.remove(&gpid);
            }
            HostInput::PrepareForUnknown { config } => {
                // Only for a table a beacon answer named: one that did not yet may be a table
                // being restored, whose replicas must build their database from the backup
                // before they open (found by the simulator: a secondary of a restored table
                // opened empty on the primary's first prepare, before its server's answer
                // named the restore). The answer that names the table configures it anyway.
                if config.hosts(&self.me) && self.partition_counts.contains_key(&config.gpid.table_id) {
                    self.open(config.gpid);
                }
            }
            HostInput::OpenFailed { gpid, .. } => {
                self.restoring.remove(&gpid);
                self.replicas.remove(&gpid);
                self.forget(gpid);
            }
            HostInput::ReplicaRemoved { gpid } => {
                self.removing.remove(&gpid);
                // A replica created again later starts without its predecessor's holds.
                self.log_holds.remove(&gpid);
                self.forget(gpid);
            }
            HostInput::DurableRead { decrees } => self.collect_log(decrees),
            HostInput::LogCollected { holding_back } => self.flush_holding_back(holding_back),
            HostInput::HoldLog { gpid, holder, keep_after } => {
                let holds = self.log_holds.entry(gpid).or_default();
                match keep_after {
                    Some(d) => {
                        holds.insert(holder, d);
                    }
                    None => {
                        holds.remove(&holder);
                    }
                }
                if holds.is_empty() {
                    self.log_holds.remove(&gpid);
                }
            }
            HostInput::LogFailed { error } => {
                self.stopped = true;
                self.actions.push(HostAction::Stop { error });
            }
        }
    }

    /// A replica is gone (not opened, removed): nothing waits for it any more.
    fn push_backup_commands(&mut self, commands: Vec<BackupCommand>) {
        for command in commands {
            self.actions.push(match command {
                BackupCommand::Start(task) => HostAction::BackupPartition { task },
                BackupCommand::Cancel { backup_id, gpid, attempt } => HostAction::CancelBackup { backup_id, gpid, attempt },
            });
        }
    }

    fn forget(&mut self, gpid: Gpid) {
        self.outside_since.remove(&gpid);
        self.read_ready.remove(&gpid);
        self.taken.remove(&gpid);
        if let Beacon::Configuring { waiting, .. } = &mut self.beacon {
            waiting.remove(&gpid);
        }
        if let Gc::Reading { changed, .. } = &mut self.gc {
            changed.insert(gpid);
        }
        self.finish_beacon_if_configured();
    }

    /// Opens `gpid` unless it is hosted already or still being deleted.
    fn open(&mut self, gpid: Gpid) -> bool {
        if self.replicas.contains(&gpid) {
            return true;
        }
        if self.removing.contains(&gpid) || self.restoring.contains(&gpid) {
            return false;
        }
        // Replicas being restored or deleted still hold their files.
        let holding = self.replicas.len() + self.restoring.len() + self.removing.len();
        if holding >= self.options.replicas_max {
            if self.refused.insert(gpid) {
                let max = self.options.replicas_max;
                let why = format!(
                    "this server holds {holding} replicas and its open-files limit allows {max}: raise the limit (ulimit -n) or add \
                     servers; the meta places the replica elsewhere"
                );
                self.actions.push(HostAction::RefuseReplica { gpid, why });
            }
            return false;
        }
        self.refused.remove(&gpid);
        // A table being restored: the replica's first database comes from the backup. It is
        // not hosted (configured, leased, beaconed) until that is in place.
        if let Some(source) = self.restoring_tables.get(&gpid.table_id)
            && !self.restored.remove(&gpid)
        {
            // A damaged backup is not downloaded again; the replica stays closed (it never
            // opens empty) until the table is dropped.
            if self.restore_failures.get(&gpid).is_some_and(|f| f.permanent) {
                return false;
            }
            self.restoring.insert(gpid);
            self.actions.push(HostAction::RestoreReplica { gpid, source: source.clone() });
            return false;
        }
        self.restored.remove(&gpid);
        self.replicas.insert(gpid);
        // A new replica has been given no duplications yet (found in review: a replica removed
        // and opened again between two beacons kept its predecessor's entry and got nothing).
        self.dups_sent.remove(&gpid);
        let options = self.options.replica_options(self.replicas.len());
        self.actions.push(HostAction::OpenReplica { gpid, options });
        true
    }

    fn remove(&mut self, gpid: Gpid, why: String) {
        if self.replicas.remove(&gpid) {
            self.dups_sent.remove(&gpid);
            self.read_ready.remove(&gpid);
            self.removing.insert(gpid);
            self.actions.push(HostAction::RemoveReplica { gpid, why });
        }
    }

    fn on_tick(&mut self, now_ms: u64) {
        self.actions.push(HostAction::TickReplicas { log_cache_bytes_max: self.options.log_cache_share(self.replicas.len()) });
        self.beacon_if_due(now_ms);
        if let Gc::Idle { next_due_ms } = self.gc
            && now_ms >= next_due_ms
        {
            self.gc = Gc::Reading { started_ms: now_ms, changed: BTreeSet::new() };
            self.actions.push(HostAction::ReadDurable { gpids: self.replicas.iter().copied().collect() });
        }
    }

    /// The next beacon goes at `due_ms` (at the latest), or right after the one in flight.
    fn beacon_due_at(&mut self, due_ms: u64) {
        match &mut self.beacon {
            Beacon::Idle { next_due_ms } => *next_due_ms = (*next_due_ms).min(due_ms),
            Beacon::InFlight { .. } | Beacon::Configuring { .. } => self.beacon_asked = true,
        }
    }

    fn beacon_if_due(&mut self, now_ms: u64) {
        if let Beacon::Idle { next_due_ms } = self.beacon
            && now_ms >= next_due_ms
        {
            self.beacon = Beacon::InFlight { sent_at_ms: now_ms };
            self.beacon_asked = false;
            self.actions.push(HostAction::SendBeacon {
                sent_at_ms: now_ms,
                restarted: self.restarted,
                lease_period_ms: self.options.lease_period_ms,
                backup_reports: self.backups.reports(),
                restore_failures: self.restore_failures.values().cloned().collect(),
                disk_short: self.disk.short().cloned(),
                replicas_max: self.options.replicas_max,
                refused: self.refused.iter().copied().collect(),
                configs_digest: self.last_answer.as_ref().map(|(.., d)| *d),
            });
        }
    }

    /// When the next beacon is due after the one sent at `sent_at_ms`: at once if the meta asked
    /// for one meanwhile (the answer may predate the change it announced).
    fn next_beacon_due_ms(&self, sent_at_ms: u64) -> u64 {
        if self.beacon_asked { sent_at_ms } else { sent_at_ms + self.options.beacon_interval_ms }
    }

    fn on_beacon_answered(&mut self, sent_at_ms: u64, configs: Vec<PartitionConfig>, counts: Vec<(u32, u32)>, gone: Vec<Gpid>, dups: Vec<TableDup>) {
        let Beacon::InFlight { sent_at_ms: in_flight } = self.beacon else { return };
        if in_flight != sent_at_ms {
            return;
        }
        self.restarted = false;
        for (table_id, partition_count) in counts {
            if partition_count > 0 && self.partition_counts.insert(table_id, partition_count) != Some(partition_count) {
                self.actions.push(HostAction::SetPartitionCount { table_id, partition_count });
            }
        }
        let mut waiting = BTreeMap::new();
        let mut seen = Vec::new();
        let named: BTreeSet<Gpid> = configs.iter().filter(|c| c.hosts(&self.me)).map(|c| c.gpid).collect();
        for config in configs {
            let gpid = config.gpid;
            let hosted = self.replicas.contains(&gpid) || (config.hosts(&self.me) && self.open(gpid));
            if !hosted {
                continue;
            }
            seen.push(config.clone());
            // A replica left out is given its configuration every time: its status, reported
            // back, decides when it is deleted.
            if config.hosts(&self.me) && self.taken.get(&gpid) == Some(&config) {
                continue;
            }
            waiting.insert(gpid, config.clone());
            self.actions.push(HostAction::Configure { gpid, config });
        }
        for gpid in gone {
            self.remove(gpid, "its table was purged".into());
        }
        // A refusal is reported until the meta moved the replica elsewhere.
        self.refused.retain(|gpid| named.contains(gpid));
        self.hand_out_duplications(&dups);
        self.beacon = Beacon::Configuring { sent_at_ms, waiting, statuses: BTreeMap::new(), seen };
        self.finish_beacon_if_configured();
    }

    /// Each hosted replica gets its table's duplications, with its partition's confirmed decree,
    /// when they differ from what it was given last.
    fn hand_out_duplications(&mut self, dups: &[TableDup]) {
        self.dups_sent.retain(|gpid, _| self.replicas.contains(gpid));
        for gpid in self.replicas.iter().copied().filter(|g| !self.removing.contains(g)) {
            let configs: Vec<DupConfig> = dups.iter().filter(|d| d.table_id == gpid.table_id).map(|d| config_for(d, gpid.partition)).collect();
            let last = self.dups_sent.get(&gpid);
            if last != Some(&configs) && (last.is_some() || !configs.is_empty()) {
                self.actions.push(HostAction::Duplications { gpid, configs: configs.clone() });
                self.dups_sent.insert(gpid, configs);
            }
        }
    }

    /// Each hosted table's tombstone hold, when it changed or was never given.
    fn set_tombstone_holds(&mut self, dups: &[TableDup]) {
        let tables: BTreeSet<u32> = self.replicas.iter().map(|g| g.table_id).collect();
        self.tombstone_hold.retain(|t, _| tables.contains(t));
        for table_id in tables {
            let hold_us = dups.iter().filter(|d| d.table_id == table_id).map(|d| d.watermark_us).min().unwrap_or(u64::MAX);
            if self.tombstone_hold.insert(table_id, hold_us) != Some(hold_us) {
                self.actions.push(HostAction::SetTombstoneHold { table_id, hold_us });
            }
        }
    }

    /// Every replica took its configuration: grant the lease, then delete replicas left out.
    fn finish_beacon_if_configured(&mut self) {
        let Beacon::Configuring { sent_at_ms, waiting, .. } = &self.beacon else { return };
        if !waiting.is_empty() {
            return;
        }
        let sent_at_ms = *sent_at_ms;
        let next_due_ms = self.next_beacon_due_ms(sent_at_ms);
        let Beacon::Configuring { statuses, seen, .. } = std::mem::replace(&mut self.beacon, Beacon::Idle { next_due_ms })
        else {
            unreachable!("matched above")
        };
        let until_ms = sent_at_ms + self.options.lease_period_ms;
        if until_ms > self.lease_until_ms {
            self.lease_until_ms = until_ms;
            self.actions.push(HostAction::ExtendLease { until_ms });
        }
        // The clock of a left-out replica runs from the beacon that first showed it.
        for config in &seen {
            if config.hosts(&self.me) || config.primary.is_none() {
                self.outside_since.remove(&config.gpid);
            } else {
                self.outside_since.entry(config.gpid).or_insert(sent_at_ms);
            }
        }
        let delay = self.options.inactive_replica_gc_delay_ms;
        let due: Vec<Gpid> = self
            .outside_since
            .iter()
            .filter(|(gpid, since)| sent_at_ms.saturating_sub(**since) >= delay && statuses.get(gpid) == Some(&PartitionStatus::Inactive))
            .map(|(gpid, _)| *gpid)
            .collect();
        for gpid in due {
            self.remove(gpid, format!("outside its partition's configuration for {delay} ms"));
        }
    }

    /// The smallest hold on `gpid`'s log (`Decree::MAX`: none).
    fn held(&self, gpid: Gpid) -> Decree {
        self.log_holds.get(&gpid).and_then(|h| h.values().min().copied()).unwrap_or(Decree::MAX)
    }

    /// The round's durable decrees are read: collect what no replica needs.
    fn collect_log(&mut self, mut decrees: BTreeMap<Gpid, Decree>) {
        let Gc::Reading { started_ms, changed } = &self.gc else { return };
        decrees.retain(|gpid, _| !changed.contains(gpid) && self.replicas.contains(gpid));
        let started_ms = *started_ms;
        let keep_after = self.replicas.iter().map(|gpid| (*gpid, decrees.get(gpid).copied().unwrap_or(0).min(self.held(*gpid)))).collect();
        // While a disk is short, every engine that holds the log is flushed: space first.
        let retain_bytes = if self.disk.short().is_some() { 0 } else { self.options.log_retain_bytes };
        self.gc = Gc::Collecting { started_ms, durable: decrees };
        self.actions.push(HostAction::CollectLog { keep_after, retain_bytes });
    }

    /// The log is collected: flush the engines that hold it over its room and that a flush
    /// lets go (a hold below the decree keeps the log whatever the engine holds).
    fn flush_holding_back(&mut self, holding_back: BTreeMap<Gpid, Decree>) {
        let Gc::Collecting { started_ms, durable } = &self.gc else { return };
        for (gpid, decree) in holding_back {
            if self.replicas.contains(&gpid) && durable.get(&gpid).copied().unwrap_or(0) < decree && self.held(gpid) >= decree {
                self.actions.push(HostAction::FlushEngine { gpid });
            }
        }
        self.gc = Gc::Idle { next_due_ms: started_ms + self.options.log_gc_interval_ms };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> HostOptions {
        HostOptions { inactive_replica_gc_delay_ms: 5_000, log_gc_interval_ms: 30_000, log_cache_bytes_max: 1_000, ..HostOptions::default() }
    }

    fn cfg(partition: u32, ballot: u64, primary: Option<&str>, secondaries: &[&str]) -> PartitionConfig {
        PartitionConfig {
            gpid: Gpid::new(1, partition),
            ballot,
            primary: primary.map(String::from),
            secondaries: secondaries.iter().map(|s| s.to_string()).collect(),
            learners: vec![],
            last_drops: vec![],
        }
    }

    fn g(p: u32) -> Gpid {
        Gpid::new(1, p)
    }

    /// The beacon of a server with no reports, room or disk trouble to tell.
    fn send_beacon(sent_at_ms: u64, restarted: bool, configs_digest: Option<tandem_core::digest::Digest>) -> HostAction {
        HostAction::SendBeacon {
            sent_at_ms,
            restarted,
            lease_period_ms: 6_000,
            backup_reports: vec![],
            restore_failures: vec![],
            disk_short: None,
            replicas_max: usize::MAX,
            refused: vec![],
            configs_digest,
        }
    }

    fn answer(host: &mut Host, sent_at_ms: u64, configs: Vec<PartitionConfig>, gone: Vec<Gpid>) -> Vec<HostAction> {
        host.step(HostInput::BeaconAnswered { sent_at_ms, configs, partition_counts: vec![(1, 4)], tombstone_retention: vec![], gone, dups: vec![], backups: vec![], restores: vec![], configs_unchanged: false, resend_reports: false });
        host.take_actions()
    }

    #[test]
    fn a_replica_of_a_table_being_restored_opens_only_on_its_restored_database() {
        let mut host = Host::new("a".into(), options(), [], 0);
        let source = RestoreSource { restore_id: 1, table_id: 1, backup_id: 4, source_table_id: 9, target: "file:///bk".into(), manifest_sha256: "ab".repeat(32) };
        let restoring_answer = |host: &mut Host, sent_at_ms: u64| {
            host.step(HostInput::Tick { now_ms: sent_at_ms });
            host.take_actions();
            let configs = vec![cfg(0, 1, Some("a"), &["b"])];
            host.step(HostInput::BeaconAnswered { sent_at_ms, configs, partition_counts: vec![(1, 4)], tombstone_retention: vec![], gone: vec![], dups: vec![], backups: vec![], restores: vec![source.clone()], configs_unchanged: false, resend_reports: false });
            host.take_actions()
        };
        // The primary's prepare can come before any answer names the table: it opens nothing.
        host.step(HostInput::PrepareForUnknown { config: cfg(0, 1, Some("b"), &["a"]) });
        assert_eq!(host.take_actions(), vec![], "a table no answer named may be a restore: never opened empty");
        let actions = restoring_answer(&mut host, 0);
        assert!(actions.contains(&HostAction::RestoreReplica { gpid: g(0), source: source.clone() }), "{actions:?}");
        assert!(!actions.iter().any(|a| matches!(a, HostAction::OpenReplica { .. } | HostAction::Configure { .. })), "not hosted before its data is in place: {actions:?}");
        assert!(actions.iter().any(|a| matches!(a, HostAction::ExtendLease { .. })), "the lease does not wait for a restore");
        // Still restoring at the next answer: not asked for twice.
        let actions = restoring_answer(&mut host, 1_000);
        assert!(!actions.iter().any(|a| matches!(a, HostAction::RestoreReplica { .. })), "{actions:?}");
        // A failed restore is tried again by the next answer, and reported meanwhile.
        host.step(HostInput::RestoreFailed { gpid: g(0), error: "target down".into(), permanent: false });
        host.step(HostInput::Tick { now_ms: 2_000 });
        let beacon = host.take_actions();
        let actions = restoring_answer(&mut host, 2_000);
        assert!(actions.contains(&HostAction::RestoreReplica { gpid: g(0), source: source.clone() }));
        let reported = beacon.iter().find_map(|a| match a {
            HostAction::SendBeacon { restore_failures, .. } => Some(restore_failures.clone()),
            _ => None,
        });
        assert_eq!(reported, Some(vec![RestoreFailure { gpid: g(0), error: "target down".into(), permanent: false }]));
        // In place: it opens, and the next answer configures it without restoring again.
        host.step(HostInput::ReplicaRestored { gpid: g(0) });
        assert_eq!(host.take_actions(), vec![HostAction::OpenReplica { gpid: g(0), options: options().replica_options(1) }]);
        let actions = restoring_answer(&mut host, 3_000);
        assert!(actions.contains(&HostAction::Configure { gpid: g(0), config: cfg(0, 1, Some("a"), &["b"]) }), "{actions:?}");
        assert!(!actions.iter().any(|a| matches!(a, HostAction::RestoreReplica { .. })));
        // A damaged backup: not downloaded again, never opened empty, reported until dropped.
        let g1 = Gpid::new(1, 1);
        let mut host = Host::new("a".into(), options(), [], 0);
        host.step(HostInput::Tick { now_ms: 0 });
        host.take_actions();
        let damaged_answer = |host: &mut Host, sent_at_ms: u64| {
            let configs = vec![PartitionConfig { gpid: g1, ..cfg(1, 1, Some("a"), &[]) }];
            host.step(HostInput::BeaconAnswered { sent_at_ms, configs, partition_counts: vec![(1, 4)], tombstone_retention: vec![], gone: vec![], dups: vec![], backups: vec![], restores: vec![source.clone()], configs_unchanged: false, resend_reports: false });
            host.take_actions()
        };
        assert!(damaged_answer(&mut host, 0).contains(&HostAction::RestoreReplica { gpid: g1, source: source.clone() }));
        host.step(HostInput::RestoreFailed { gpid: g1, error: "object x is missing".into(), permanent: true });
        host.step(HostInput::Tick { now_ms: 1_000 });
        let beacon = host.take_actions();
        assert!(beacon.iter().any(|a| matches!(a, HostAction::SendBeacon { restore_failures, .. } if restore_failures.len() == 1 && restore_failures[0].permanent)), "{beacon:?}");
        let actions = damaged_answer(&mut host, 1_000);
        assert!(!actions.iter().any(|a| matches!(a, HostAction::RestoreReplica { .. } | HostAction::OpenReplica { .. })), "{actions:?}");
    }

    #[test]
    fn the_meta_asking_for_a_beacon_gets_one_at_once_or_right_after_the_one_in_flight() {
        // After the first answer, its digest.
        let empty = tandem_core::digest::answer_digest(&[], &[(1, 4)], &[]);
        let beacon = |sent_at_ms, restarted: bool| send_beacon(sent_at_ms, restarted, (!restarted).then_some(empty));
        let mut host = Host::new("a".into(), options(), [], 0);
        host.step(HostInput::Tick { now_ms: 0 });
        host.take_actions();
        host.step(HostInput::BeaconFailed { now_ms: 10 });
        host.step(HostInput::BeaconNow { now_ms: 20 });
        assert_eq!(host.take_actions(), vec![beacon(20, true)], "idle: at once, not a beacon interval after the last");
        host.step(HostInput::BeaconNow { now_ms: 30 });
        assert_eq!(host.take_actions(), vec![], "one beacon in flight");
        // Its answer may predate the change the meta announced: the next is due at once.
        answer(&mut host, 20, vec![], vec![]);
        host.step(HostInput::Tick { now_ms: 40 });
        assert!(host.take_actions().contains(&beacon(40, false)));
        // Not asked again: the usual interval.
        answer(&mut host, 40, vec![], vec![]);
        host.step(HostInput::Tick { now_ms: 500 });
        assert_eq!(host.take_actions(), vec![HostAction::TickReplicas { log_cache_bytes_max: 1_000 }]);
    }

    /// A disk going below its reserve (or back) is told to the replicas at once and to the meta
    /// at the next tick, not a beacon interval later; every beacon while short carries it.
    #[test]
    fn a_disk_short_or_back_beacons_at_the_next_tick() {
        use crate::disk::{DirSpace, DiskShort};
        let mut host = Host::new("a".into(), options(), [], 0);
        host.step(HostInput::Tick { now_ms: 0 });
        host.take_actions();
        answer(&mut host, 0, vec![], vec![]);
        let space = |free_bytes| HostInput::DiskSpace { dirs: vec![DirSpace { dir: "/data".into(), free_bytes, total_bytes: 1_000 }] };
        let short = DiskShort { dir: "/data".into(), free_bytes: 40, reserve_bytes: 50 };
        host.step(space(40));
        assert_eq!(host.take_actions(), vec![HostAction::SetDiskShort { short: Some(short.clone()) }]);
        host.step(HostInput::Tick { now_ms: 10 });
        let actions = host.take_actions();
        assert!(actions.iter().any(|a| matches!(a, HostAction::SendBeacon { sent_at_ms: 10, disk_short: Some(s), .. } if *s == short)), "{actions:?}");
        answer(&mut host, 10, vec![], vec![]);
        host.step(space(45));
        host.step(HostInput::Tick { now_ms: 20 });
        let actions = host.take_actions();
        assert!(!actions.iter().any(|a| matches!(a, HostAction::SendBeacon { .. })), "still short: the usual interval {actions:?}");
        host.step(space(100));
        assert_eq!(host.take_actions(), vec![HostAction::SetDiskShort { short: None }]);
        host.step(HostInput::Tick { now_ms: 30 });
        let actions = host.take_actions();
        assert!(actions.iter().any(|a| matches!(a, HostAction::SendBeacon { sent_at_ms: 30, disk_short: None, .. })), "{actions:?}");
    }

    #[test]
    fn the_lease_waits_until_every_replica_took_its_configuration() {
        let mut host = Host::new("a".into(), options(), [g(0)], 0);
        host.step(HostInput::Tick { now_ms: 0 });
        assert_eq!(
            host.take_actions(),
            vec![
                HostAction::TickReplicas { log_cache_bytes_max: 1_000 },
                send_beacon(0, true, None),
            ]
        );
        host.step(HostInput::Tick { now_ms: 1_500 });
        assert_eq!(host.take_actions(), vec![HostAction::TickReplicas { log_cache_bytes_max: 1_000 }], "one beacon in flight");
        let actions = answer(&mut host, 0, vec![cfg(0, 2, Some("a"), &["b"]), cfg(1, 1, Some("b"), &["a"])], vec![]);
        assert_eq!(
            actions,
            vec![
                // The first answer tells the hosted table's hold (it ships nowhere).
                HostAction::SetTombstoneHold { table_id: 1, hold_us: u64::MAX },
                HostAction::SetPartitionCount { table_id: 1, partition_count: 4 },
                HostAction::Configure { gpid: g(0), config: cfg(0, 2, Some("a"), &["b"]) },
                HostAction::OpenReplica { gpid: g(1), options: options().replica_options(2) },
                HostAction::Configure { gpid: g(1), config: cfg(1, 1, Some("b"), &["a"]) },
            ]
        );
        host.step(HostInput::Configured { gpid: g(0), status: Some(PartitionStatus::Primary) });
        assert_eq!(host.take_actions(), vec![]);
        assert_eq!(host.lease_until_ms(), 0, "g(1) has not taken its configuration");
        host.step(HostInput::Configured { gpid: g(1), status: Some(PartitionStatus::Secondary) });
        assert_eq!(host.take_actions(), vec![HostAction::ExtendLease { until_ms: 6_000 }]);
        // The next beacon is due a beacon interval after the last was sent, and no longer says
        // the server restarted.
        host.step(HostInput::Tick { now_ms: 999 });
        assert_eq!(host.take_actions(), vec![HostAction::TickReplicas { log_cache_bytes_max: 500 }]);
        host.step(HostInput::Tick { now_ms: 1_000 });
        assert_eq!(
            host.take_actions(),
            vec![
                HostAction::TickReplicas { log_cache_bytes_max: 500 },
                send_beacon(1_000, false, Some(tandem_core::digest::answer_digest(&[cfg(0, 2, Some("a"), &["b"]), cfg(1, 1, Some("b"), &["a"])], &[(1, 4)], &[]))),
            ]
        );
        // A late answer to an older beacon grants nothing.
        assert_eq!(answer(&mut host, 0, vec![], vec![]), vec![]);
        host.step(HostInput::BeaconFailed { now_ms: 1_200 });
        host.step(HostInput::Tick { now_ms: 1_900 });
        assert_eq!(host.take_actions(), vec![HostAction::TickReplicas { log_cache_bytes_max: 500 }]);
        host.step(HostInput::Tick { now_ms: 2_000 });
        assert!(matches!(host.take_actions()[1], HostAction::SendBeacon { sent_at_ms: 2_000, .. }));
    }

    /// An answer that leaves the configurations out means the last answer's: a replica that took
    /// its configuration and holds it still is not given it again, and the lease follows at once.
    /// One whose meta asks for every report grants nothing, and the next beacon goes at the next
    /// tick.
    #[test]
    fn an_unchanged_answer_reuses_the_last_configurations_and_a_resend_grants_nothing() {
        let mut host = Host::new("a".into(), options(), [g(0)], 0);
        let configs = vec![cfg(0, 2, Some("a"), &["b"])];
        let digest = tandem_core::digest::answer_digest(&configs, &[(1, 4)], &[]);
        host.step(HostInput::Tick { now_ms: 0 });
        host.take_actions();
        answer(&mut host, 0, configs.clone(), vec![]);
        host.step(HostInput::Configured { gpid: g(0), status: Some(PartitionStatus::Primary) });
        assert_eq!(host.take_actions(), vec![HostAction::ExtendLease { until_ms: 6_000 }]);
        host.step(HostInput::Tick { now_ms: 1_000 });
        assert!(host.take_actions().contains(&send_beacon(1_000, false, Some(digest))));
        let unchanged = |sent_at_ms, resend_reports| HostInput::BeaconAnswered {
            sent_at_ms,
            configs: vec![],
            partition_counts: vec![],
            tombstone_retention: vec![],
            gone: vec![],
            dups: vec![],
            backups: vec![],
            restores: vec![],
            configs_unchanged: true,
            resend_reports,
        };
        host.step(unchanged(1_000, false));
        assert_eq!(host.take_actions(), vec![HostAction::ExtendLease { until_ms: 7_000 }], "the last answer's, which g0 holds");
        // The meta's view did not add up: nothing configured, no lease; the next tick beacons.
        host.step(HostInput::Tick { now_ms: 2_000 });
        host.take_actions();
        host.step(unchanged(2_000, true));
        assert_eq!(host.take_actions(), vec![]);
        assert_eq!(host.lease_until_ms(), 7_000);
        host.step(HostInput::Tick { now_ms: 2_100 });
        assert!(host.take_actions().contains(&send_beacon(2_100, false, Some(digest))));
    }

    /// A configuration a replica took and holds is not given again; a new one is, and so is one
    /// the replica did not report taking (its task had stopped) or whose configuration moved
    /// since (`ConfigMoved`: a proposal's late answer can take a core back to an earlier
    /// configuration of the same ballot, simulator seed 453), and every one of a replica left
    /// out of its configuration (its status decides its deletion).
    #[test]
    fn only_configurations_a_replica_does_not_hold_are_given() {
        let mut host = Host::new("a".into(), HostOptions { inactive_replica_gc_delay_ms: 60_000, ..options() }, [g(0), g(1), g(2)], 0);
        let mut configs = vec![cfg(0, 1, Some("a"), &["b"]), cfg(1, 1, Some("b"), &["a"]), cfg(2, 1, Some("b"), &["c"])];
        let mut sent_at = 0;
        let mut round = |host: &mut Host, configs: &Vec<PartitionConfig>, statuses: &[(Gpid, Option<PartitionStatus>)]| {
            host.step(HostInput::Tick { now_ms: sent_at });
            host.take_actions();
            let given: Vec<Gpid> = answer(host, sent_at, configs.clone(), vec![])
                .iter()
                .filter_map(|a| if let HostAction::Configure { gpid, .. } = a { Some(*gpid) } else { None })
                .collect();
            for (gpid, status) in statuses {
                host.step(HostInput::Configured { gpid: *gpid, status: *status });
            }
            assert!(host.take_actions().iter().any(|a| matches!(a, HostAction::ExtendLease { .. })), "the lease follows");
            sent_at += 1_000;
            given
        };
        let (primary, secondary, inactive) = (Some(PartitionStatus::Primary), Some(PartitionStatus::Secondary), Some(PartitionStatus::Inactive));
        assert_eq!(round(&mut host, &configs, &[(g(0), primary), (g(1), secondary), (g(2), inactive)]), vec![g(0), g(1), g(2)]);
        assert_eq!(round(&mut host, &configs, &[(g(2), inactive)]), vec![g(2)], "only the one left out, again");
        configs[1] = cfg(1, 2, Some("a"), &["b"]);
        assert_eq!(round(&mut host, &configs, &[(g(1), primary), (g(2), inactive)]), vec![g(1), g(2)], "a new ballot");
        assert_eq!(round(&mut host, &configs, &[(g(2), inactive)]), vec![g(2)]);
        host.step(HostInput::ConfigMoved { gpid: g(1) });
        assert_eq!(round(&mut host, &configs, &[(g(1), primary), (g(2), inactive)]), vec![g(1), g(2)], "its configuration moved");
        configs[0] = cfg(0, 2, Some("b"), &["a"]);
        assert_eq!(round(&mut host, &configs, &[(g(0), None), (g(2), inactive)]), vec![g(0), g(2)]);
        assert_eq!(round(&mut host, &configs, &[(g(0), secondary), (g(2), inactive)]), vec![g(0), g(2)], "its task had stopped: not taken");
        assert_eq!(round(&mut host, &configs, &[(g(2), inactive)]), vec![g(2)]);
    }

    #[test]
    fn a_full_server_refuses_new_replicas_says_so_until_moved_and_keeps_its_own() {
        let mut host = Host::new("a".into(), HostOptions { replicas_max: 2, ..options() }, [g(0)], 0);
        host.step(HostInput::Tick { now_ms: 0 });
        host.take_actions();
        let three = vec![cfg(0, 1, Some("a"), &["b"]), cfg(1, 1, Some("b"), &["a"]), cfg(2, 1, Some("a"), &["b"])];
        let actions = answer(&mut host, 0, three.clone(), vec![]);
        let opened: Vec<Gpid> = actions.iter().filter_map(|a| if let HostAction::OpenReplica { gpid, .. } = a { Some(*gpid) } else { None }).collect();
        assert_eq!(opened, vec![g(1)], "one more fits: {actions:?}");
        let refused: Vec<&HostAction> = actions.iter().filter(|a| matches!(a, HostAction::RefuseReplica { .. })).collect();
        assert!(matches!(refused[..], [HostAction::RefuseReplica { gpid, why }] if *gpid == g(2) && why.contains("allows 2") && why.contains("ulimit -n")), "{actions:?}");
        assert!(!actions.iter().any(|a| matches!(a, HostAction::Configure { gpid, .. } if *gpid == g(2))), "not hosted: {actions:?}");
        assert!(host.hosts(g(0)) && host.hosts(g(1)) && !host.hosts(g(2)));
        for gpid in [g(0), g(1)] {
            host.step(HostInput::Configured { gpid, status: Some(PartitionStatus::Primary) });
        }
        assert!(host.take_actions().iter().any(|a| matches!(a, HostAction::ExtendLease { .. })), "the lease does not wait for a refused replica");
        // Every beacon tells the meta, and a second answer does not log it again.
        let beacon = |host: &mut Host, now_ms| {
            host.step(HostInput::Tick { now_ms });
            host.take_actions().into_iter().find_map(|a| if let HostAction::SendBeacon { replicas_max, refused, .. } = a { Some((replicas_max, refused)) } else { None })
        };
        assert_eq!(beacon(&mut host, 1_000), Some((2, vec![g(2)])));
        let actions = answer(&mut host, 1_000, three, vec![]);
        assert!(!actions.iter().any(|a| matches!(a, HostAction::RefuseReplica { .. } | HostAction::OpenReplica { .. })), "{actions:?}");
        // The meta moved it: no longer reported.
        for gpid in [g(0), g(1)] {
            host.step(HostInput::Configured { gpid, status: Some(PartitionStatus::Primary) });
        }
        host.take_actions();
        assert_eq!(beacon(&mut host, 2_000), Some((2, vec![g(2)])));
        answer(&mut host, 2_000, vec![cfg(0, 1, Some("a"), &["b"]), cfg(1, 1, Some("b"), &["a"]), cfg(2, 2, Some("c"), &["b"])], vec![]);
        for gpid in [g(0), g(1)] {
            host.step(HostInput::Configured { gpid, status: Some(PartitionStatus::Primary) });
        }
        host.take_actions();
        assert_eq!(beacon(&mut host, 3_000), Some((2, vec![])));
    }

    #[test]
    fn a_left_out_replica_is_deleted_after_the_delay_only_while_its_partition_has_a_primary() {
        let mut host = Host::new("a".into(), options(), [g(0)], 0);
        let mut now = 0;
        let mut beacon = |host: &mut Host, config: PartitionConfig, status: PartitionStatus| {
            host.step(HostInput::Tick { now_ms: now });
            host.take_actions();
            let actions = answer(host, now, vec![config.clone()], vec![]);
            assert!(actions.contains(&HostAction::Configure { gpid: g(0), config }));
            host.step(HostInput::Configured { gpid: g(0), status: Some(status) });
            now += 1_000;
            host.take_actions()
        };
        let outside = cfg(0, 3, Some("b"), &["c"]);
        let mut all = beacon(&mut host, outside.clone(), PartitionStatus::Inactive);
        // No primary for a while: the clock stops and starts again.
        all.extend(beacon(&mut host, cfg(0, 4, None, &[]), PartitionStatus::Inactive));
        for _ in 0..5 {
            all.extend(beacon(&mut host, outside.clone(), PartitionStatus::Inactive));
        }
        assert!(!all.iter().any(|a| matches!(a, HostAction::RemoveReplica { .. })), "{all:?}");
        let last = beacon(&mut host, outside.clone(), PartitionStatus::Inactive);
        assert!(last.contains(&HostAction::RemoveReplica { gpid: g(0), why: "outside its partition's configuration for 5000 ms".into() }));
        assert!(host.is_removing(g(0)) && !host.hosts(g(0)));
        // Being deleted: a prepare for it does not recreate it until the data is gone.
        host.step(HostInput::PrepareForUnknown { config: cfg(0, 5, Some("b"), &["a"]) });
        assert_eq!(host.take_actions(), vec![]);
        host.step(HostInput::ReplicaRemoved { gpid: g(0) });
        host.step(HostInput::PrepareForUnknown { config: cfg(0, 5, Some("b"), &["a"]) });
        assert_eq!(host.take_actions(), vec![HostAction::OpenReplica { gpid: g(0), options: options().replica_options(1) }]);
    }

    #[test]
    fn a_replica_that_still_has_a_role_is_kept() {
        let mut host = Host::new("a".into(), options(), [g(0)], 0);
        for i in 0..8 {
            let now = i * 1_000;
            host.step(HostInput::Tick { now_ms: now });
            answer(&mut host, now, vec![cfg(0, 3, Some("b"), &["c"])], vec![]);
            // The replica has not heard (it is a learner of an older configuration, say).
            host.step(HostInput::Configured { gpid: g(0), status: Some(PartitionStatus::Learner) });
            assert!(!host.take_actions().iter().any(|a| matches!(a, HostAction::RemoveReplica { .. })));
        }
    }

    #[test]
    fn purged_tables_go_at_once() {
        let mut host = Host::new("a".into(), options(), [g(0), g(1)], 0);
        host.step(HostInput::Tick { now_ms: 0 });
        host.take_actions();
        let actions = answer(&mut host, 0, vec![cfg(1, 1, Some("a"), &[])], vec![g(0)]);
        assert!(actions.contains(&HostAction::RemoveReplica { gpid: g(0), why: "its table was purged".into() }));
        host.step(HostInput::Configured { gpid: g(1), status: Some(PartitionStatus::Primary) });
        assert_eq!(host.take_actions(), vec![HostAction::ExtendLease { until_ms: 6_000 }]);
    }

    #[test]
    fn the_log_keeps_what_engines_do_not_hold_and_only_engines_holding_it_over_its_room_flush() {
        let mut host = Host::new("a".into(), options(), [g(0), g(1), g(2)], 0);
        // An answer names table 1 (a prepare opens only replicas of tables an answer named).
        host.step(HostInput::Tick { now_ms: 0 });
        host.take_actions();
        answer(&mut host, 0, vec![cfg(0, 1, Some("a"), &[]), cfg(1, 1, Some("a"), &[]), cfg(2, 1, Some("a"), &[])], vec![]);
        host.step(HostInput::HoldLog { gpid: g(1), holder: "dup".into(), keep_after: Some(7) });
        host.step(HostInput::Tick { now_ms: 30_000 });
        let actions = host.take_actions();
        assert!(actions.contains(&HostAction::ReadDurable { gpids: vec![g(0), g(1), g(2)] }));
        assert!(!actions.iter().any(|a| matches!(a, HostAction::FlushEngine { .. })), "a round reads, it does not flush");
        // A replica created meanwhile keeps everything; one removed meanwhile needs nothing.
        host.step(HostInput::PrepareForUnknown { config: cfg(3, 1, Some("b"), &["a"]) });
        host.step(HostInput::OpenFailed { gpid: g(2), error: "gone".into() });
        host.take_actions();
        host.step(HostInput::DurableRead { decrees: [(g(0), 10), (g(1), 10), (g(2), 10)].into() });
        let keep: BTreeMap<Gpid, Decree> = [(g(0), 10), (g(1), 7), (g(3), 0)].into();
        assert_eq!(host.take_actions(), vec![HostAction::CollectLog { keep_after: keep, retain_bytes: 1 << 30 }]);
        // Flushed: an engine behind what holds the log (g0), one whose durable decree is unknown
        // (g3). Not: one a hold keeps the log for anyway (g1), one not hosted (g9).
        let holding_back: BTreeMap<Gpid, Decree> = [(g(0), 12), (g(1), 9), (g(3), 4), (g(9), 5)].into();
        host.step(HostInput::LogCollected { holding_back });
        assert_eq!(host.take_actions(), vec![HostAction::FlushEngine { gpid: g(0) }, HostAction::FlushEngine { gpid: g(3) }]);
        // The next round is due an interval after this one started.
        host.step(HostInput::Tick { now_ms: 59_999 });
        assert!(!host.take_actions().iter().any(|a| matches!(a, HostAction::ReadDurable { .. })));
        host.step(HostInput::HoldLog { gpid: g(1), holder: "dup".into(), keep_after: None });
        host.step(HostInput::Tick { now_ms: 60_000 });
        assert!(host.take_actions().contains(&HostAction::ReadDurable { gpids: vec![g(0), g(1), g(3)] }));
        // Removed and created again while the round read: the answer may be of the old engine.
        host.step(HostInput::OpenFailed { gpid: g(3), error: "gone".into() });
        host.step(HostInput::PrepareForUnknown { config: cfg(3, 1, Some("b"), &["a"]) });
        host.take_actions();
        // A disk short: every engine that holds the log is flushed.
        host.step(HostInput::DiskSpace { dirs: vec![crate::disk::DirSpace { dir: "/log".into(), free_bytes: 1, total_bytes: 1 << 40 }] });
        host.take_actions();
        host.step(HostInput::DurableRead { decrees: [(g(0), 20), (g(3), 15)].into() });
        let keep: BTreeMap<Gpid, Decree> = [(g(0), 20), (g(1), 0), (g(3), 0)].into();
        assert_eq!(host.take_actions(), vec![HostAction::CollectLog { keep_after: keep, retain_bytes: 0 }], "an unread engine keeps everything");
        host.step(HostInput::LogCollected { holding_back: BTreeMap::new() });
        assert!(host.take_actions().is_empty());
    }

    #[test]
    fn a_failed_log_stops_the_server() {
        let mut host = Host::new("a".into(), options(), [], 0);
        host.step(HostInput::LogFailed { error: "EIO".into() });
        assert_eq!(host.take_actions(), vec![HostAction::Stop { error: "EIO".into() }]);
        host.step(HostInput::Tick { now_ms: 1 });
        assert_eq!(host.take_actions(), vec![], "a stopped server beacons no more");
    }

    #[test]
    fn each_replica_is_handed_its_tables_duplications_when_they_change() {
        let mut host = Host::new("a".into(), options(), [g(0), g(1)], 0);
        let dup = |confirmed: Vec<(u32, Decree)>| TableDup {
            table_id: 1,
            dup_id: 3,
            table: "t".into(),
            remote_site: "b".into(),
            paused: false,
            fail_mode: tandem_dup_core::FailMode::Slow,
            sync_existing: false,
            confirmed,
            watermark_us: 0,
        };
        let mut beacon = |now_ms: u64, dups: Vec<TableDup>| {
            host.step(HostInput::Tick { now_ms });
            host.take_actions();
            host.step(HostInput::BeaconAnswered { sent_at_ms: now_ms, configs: vec![], partition_counts: vec![], tombstone_retention: vec![], gone: vec![], dups, backups: vec![], restores: vec![], configs_unchanged: false, resend_reports: false });
            host.take_actions().into_iter().filter(|a| matches!(a, HostAction::Duplications { .. })).collect::<Vec<_>>()
        };
        let first = dup(vec![(0, 7)]);
        assert_eq!(beacon(0, vec![first.clone()]), vec![
            HostAction::Duplications { gpid: g(0), configs: vec![config_for(&first, 0)] },
            HostAction::Duplications { gpid: g(1), configs: vec![config_for(&first, 1)] },
        ]);
        assert_eq!(config_for(&first, 1).confirmed, None, "partition 1 has no confirmed decree yet");
        assert_eq!(beacon(1_000, vec![first.clone()]), vec![], "unchanged: nothing handed out again");
        let moved = dup(vec![(0, 7), (1, 2)]);
        assert_eq!(beacon(2_000, vec![moved.clone()]), vec![HostAction::Duplications { gpid: g(1), configs: vec![config_for(&moved, 1)] }]);
        assert_eq!(beacon(3_000, vec![]), vec![
            HostAction::Duplications { gpid: g(0), configs: vec![] },
            HostAction::Duplications { gpid: g(1), configs: vec![] },
        ]);
    }

    #[test]
    fn a_tables_tombstone_retention_is_passed_on_when_it_changes() {
        let mut host = Host::new("a".into(), options(), [g(0)], 0);
        let mut beacon = |now_ms: u64, retention: u64| {
            host.step(HostInput::Tick { now_ms });
            host.take_actions();
            let tombstone_retention = vec![(1, retention)];
            host.step(HostInput::BeaconAnswered { sent_at_ms: now_ms, configs: vec![], partition_counts: vec![], tombstone_retention, gone: vec![], dups: vec![], backups: vec![], restores: vec![], configs_unchanged: false, resend_reports: false });
            host.take_actions().into_iter().filter(|a| matches!(a, HostAction::SetTombstoneRetention { .. })).collect::<Vec<_>>()
        };
        assert_eq!(beacon(0, 5_000), vec![HostAction::SetTombstoneRetention { table_id: 1, retention_ms: 5_000 }]);
        assert_eq!(beacon(1_000, 5_000), vec![]);
        assert_eq!(beacon(2_000, 9_000), vec![HostAction::SetTombstoneRetention { table_id: 1, retention_ms: 9_000 }]);
    }

    #[test]
    fn a_tables_tombstone_hold_is_the_smallest_watermark_of_its_duplications() {
        let mut host = Host::new("a".into(), options(), [g(0)], 0);
        let dup = |dup_id, watermark_us| TableDup {
            table_id: 1,
            dup_id,
            table: "t".into(),
            remote_site: format!("s{dup_id}"),
            paused: false,
            fail_mode: tandem_dup_core::FailMode::Slow,
            sync_existing: false,
            confirmed: vec![],
            watermark_us,
        };
        let mut beacon = |now_ms: u64, dups: Vec<TableDup>| {
            host.step(HostInput::Tick { now_ms });
            host.take_actions();
            host.step(HostInput::BeaconAnswered { sent_at_ms: now_ms, configs: vec![], partition_counts: vec![], tombstone_retention: vec![], gone: vec![], dups, backups: vec![], restores: vec![], configs_unchanged: false, resend_reports: false });
            host.take_actions().into_iter().filter(|a| matches!(a, HostAction::SetTombstoneHold { .. })).collect::<Vec<_>>()
        };
        // Held until the meta speaks; then a table that ships nowhere holds nothing.
        assert_eq!(beacon(0, vec![]), vec![HostAction::SetTombstoneHold { table_id: 1, hold_us: u64::MAX }]);
        assert_eq!(beacon(500, vec![]), vec![]);
        assert_eq!(beacon(1_000, vec![dup(1, 50), dup(2, 30)]), vec![HostAction::SetTombstoneHold { table_id: 1, hold_us: 30 }]);
        assert_eq!(beacon(2_000, vec![dup(1, 50), dup(2, 30)]), vec![]);
        assert_eq!(beacon(3_000, vec![dup(1, 60)]), vec![HostAction::SetTombstoneHold { table_id: 1, hold_us: 60 }]);
        assert_eq!(beacon(4_000, vec![]), vec![HostAction::SetTombstoneHold { table_id: 1, hold_us: u64::MAX }]);
    }
}
