//! The meta server's state machine: leadership, the metadata it leads with, and every decision
//! the meta makes — beacon answers and leases, failure detection, cure, placement, proposals,
//! table and policy changes. The meta runtime (`meta/server`) and the simulator run it alike; it
//! does no IO: store writes leave as `Persist` actions and come back as `Stored` inputs.
//!
//! ```text
//!  Claimed ───────▶ leadership ─▶ Load / drop state           Loaded ─▶ serve
//!  Request ───────▶ answered now (reads, beacons that change nothing)
//!            └────▶ queue ─▶ one write at a time: Persist ─▶ Stored ─▶ adopt ─▶ Reply
//!  Tick ──────────▶ failure detector · queue Cure and Purge
//! ```
//!
//! Rules, each with its reason:
//! - **Write first, act after.** A change is adopted in memory and answered only once the store
//!   holds it (the partition's ballot compared and set). Decisions are made when a queued item
//!   reaches the head of the queue, on the state as it is then, so no decision is made on a
//!   state that a write in flight is about to change.
//! - **No lock across the store.** One write is in flight at a time; reads and beacons that need
//!   no write are answered at once, so a slow store delays changes, not beacons.
//! - **A beacon never outruns a configuration change.** A beacon whose answer would carry a
//!   partition whose write is in flight waits for that write: answered before it, the old
//!   configuration would grant a lease to a primary the write is replacing.
//! - **A server is registered before its first lease**, because a new leader starts only the
//!   registered servers alive; an unregistered one would be taken for dead while it serves.
//! - **Serving is checked again when answering**: a leader whose own lease lapsed while a write
//!   was in flight grants nothing.

use crate::backup::{partition_views, BackupInfo, BackupTask, BackupView, RestoreInfo, RestoreState, RestoreView, FAILED_BY_TAKEOVER};
use crate::beacon::{check_lease, configs_for_node, reassign_restarted_primary};
use crate::cure::{apply_proposal_from, cure, CureView, ReplicaReport};
use crate::duplication::{DupInfo, DupPartitionView, DupStatus, DupView, Site};
use tandem_dup_core::{FailMode, TableDup};
use crate::failure_detector::FailureDetector;
use crate::leadership::{ClaimOutcome, Leadership, NotServing, Transition};
use crate::placement::{learner_placement, place_partition, place_table};
use crate::policy::{Policy, PolicyChange, PolicyContext};
use crate::request::{BeaconRequest, MetaError, MetaReply, MetaRequest, Token};
use crate::status::MetaState;
use crate::store::{StoreDone, StoreFailure, StoreFailureKind, StoreResult, StoreWrite};
use crate::table::{MetaSnapshot, TableInfo, TableStatus};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use tandem_core::disk::{DirSpace, DiskShort, DiskWatch};
use tandem_core::replica::ConfigProposal;
use tandem_backup_core::{BackupId, BackupJob, BackupState, JobAction, JobInput, JobOptions, JobState};
use tandem_core::{Gpid, NodeAddr, PartitionConfig};

pub type OpId = u64;

pub const PARTITION_COUNT_MAX: u32 = 1024;
pub const TABLE_NAME_BYTES_MAX: usize = 128;

/// Both clocks, read once per input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Now {
    /// Monotonic (timeouts, leases, liveness).
    pub mono_ms: u64,
    /// Wall clock, ms since the Unix epoch (drop times, the recall window).
    pub wall_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaOptions {
    /// A replica server silent for this long is declared dead (must exceed its lease).
    pub grace_period_ms: u64,
    /// A replica server whose port refuses connections is declared dead at once (docs/meta.md,
    /// "A crashed server"). Only where nothing between the meta and the servers answers for a
    /// live one with a refusal (a firewall REJECT rule would): there, turn this off.
    pub refused_connection_means_dead: bool,
    /// A server's port is probed once its beacons are this late (and when its watch stream
    /// breaks).
    pub probe_after_silence_ms: u64,
    /// How long a dropped table can be recalled before it is purged.
    pub recall_window_ms: u64,
    /// The leader lease's time to live.
    pub lease_ttl_ms: u64,
    /// This site's name, and the sites tables can be duplicated to.
    pub site: String,
    pub peer_sites: Vec<String>,
    /// Where level-3 policies back up when no target is given ("" = none).
    pub backup_target: String,
    /// Backups that run at once, at most.
    pub backup_jobs_max: usize,
    /// When a backup's partition attempt is given up, how often, and the whole job's deadline.
    pub backup_job: JobOptions,
    /// The reserve under a store on this machine's disk (SQLite): below it, the admin requests
    /// that write are refused (`tandem_core::disk`).
    pub disk_reserve_bytes: u64,
    pub disk_reserve_percent: u64,
}

impl Default for MetaOptions {
    fn default() -> Self {
        MetaOptions {
            grace_period_ms: 8_000,
            refused_connection_means_dead: true,
            probe_after_silence_ms: 2_000,
            recall_window_ms: 7 * 24 * 3_600_000,
            lease_ttl_ms: 30_000,
            site: "local".into(),
            peer_sites: Vec::new(),
            backup_target: String::new(),
            backup_jobs_max: 2,
            backup_job: JobOptions::default(),
            disk_reserve_bytes: 2 << 30,
            disk_reserve_percent: 5,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetaInput {
    /// Failure detection, cure, purges (every `tick_interval`).
    Tick,
    /// The free space under the store's files, when they are on this machine's disk (SQLite).
    StoreDiskSpace { dirs: Vec<DirSpace> },
    /// The claim of the lease row sent at `sent_at_ms` returned.
    Claimed { sent_at_ms: u64, outcome: ClaimOutcome },
    /// `Load { epoch, load }` finished.
    Loaded { epoch: u64, load: u64, result: Result<MetaSnapshot, String> },
    Request { token: Token, request: MetaRequest },
    /// `Persist { op }` finished.
    Stored { op: OpId, result: StoreResult },
    /// `WriteBackupManifest { backup_id }` finished.
    BackupManifestWritten { backup_id: BackupId, result: Result<(), String> },
    /// The watch stream of replica server `node` broke (`MetaAction::AskBeacon` goes over it).
    WatchBroken { node: NodeAddr },
    /// The answer to `MetaAction::Probe`: whether the connection was refused (false: it was
    /// accepted, timed out, or failed otherwise).
    Probed { node: NodeAddr, probe: u64, refused: bool },
}

/// Why a configuration changed, for the log and the simulator's path counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cause {
    Placement,
    Cure,
    Proposal(ConfigProposal),
    /// The primary's server restarted: same members, new ballot.
    Restart,
}

/// What an operator should see in the server's log (and the simulator in its trace).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetaEvent {
    Leading { epoch: u64, tables: usize, partitions: usize, nodes: usize },
    LoadFailed { epoch: u64, error: String },
    /// The state in memory may be stale: it is loaded again.
    Reloading { epoch: u64, why: String },
    SteppedDown { leader: String },
    NodeAlive { node: NodeAddr },
    /// `refused`: declared dead because its port refused a connection, not after the grace
    /// period.
    NodeDead { node: NodeAddr, refused: bool },
    /// The disk under the store went below its reserve (`Some`: admin requests that write are
    /// refused), or has room again.
    StoreDiskShort { short: Option<DiskShort> },
    /// A server's disk went below its reserve (`Some`), or has room again (`None`).
    DiskShort { node: NodeAddr, short: Option<DiskShort> },
    /// A server refused replicas for want of room (it hosts `replicas_max`); announced when
    /// the set it reports changes.
    ReplicasRefused { node: NodeAddr, gpids: Vec<Gpid>, replicas_max: Option<u32> },
    Committed { previous: PartitionConfig, config: PartitionConfig, cause: Cause },
    ChangeFailed { gpid: Gpid, cause: Cause, error: String },
    ProposalRefused { gpid: Gpid, from: NodeAddr, proposal: ConfigProposal, reason: String },
    TableCreated { table: TableInfo, who: String },
    PolicyChanged { table: String, old: Policy, new: Policy, who: String },
    TableDropped { table_id: u32 },
    TableRecalled { table_id: u32 },
    TablePurged { table_id: u32 },
    PurgeFailed { table_id: u32, error: String },
    /// A step of backup `id` of `table`.
    Backup { id: BackupId, table: String, what: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetaAction {
    /// Read the whole store (one snapshot) and report `Loaded { epoch, load }`. Only the answer
    /// to the latest load is taken: an earlier one may have read the store before a write.
    Load { epoch: u64, load: u64 },
    /// Carry out `write` in one transaction that first checks this process still holds the
    /// lease row at `epoch` (else it fails as `Fenced`); report `Stored { op }`.
    Persist { op: OpId, epoch: u64, write: StoreWrite },
    /// Answer request `token`.
    Reply { token: Token, result: Result<MetaReply, MetaError> },
    Event(MetaEvent),
    /// Write `bytes` (a backup's table manifest) at `key` in `target`; report
    /// `BackupManifestWritten`. The backup is complete only once its record says so.
    WriteBackupManifest { backup_id: BackupId, target: String, key: String, bytes: Vec<u8> },
    /// Collect table `table_id`'s garbage in `target` (`tandem_backup_core::collect`): list,
    /// then read this machine's records of the table on that target (`backup_records_for`),
    /// then delete. Nothing reports back; the next collection picks up what this one left.
    CollectBackupGarbage { table_id: u32, target: String },
    /// Connect to replica server `node`'s address and report `Probed { node, probe }`: refused
    /// only for a connection refused outright (ECONNREFUSED). An accepted connection is tried
    /// again shortly (a killed process lets go of its port a moment after its connections
    /// broke); within about a second (`failure_detector::PROBE_ANSWER_MS`) report not refused.
    Probe { node: NodeAddr, probe: u64 },
    /// Ask these servers, over their watch streams, to beacon now: a configuration they host
    /// changed (servers without a stream learn it at their next beacon).
    AskBeacon { nodes: BTreeSet<NodeAddr> },
}

/// A request (or a tick's job) that may write, in the order it arrived.
#[derive(Clone, Debug)]
enum Work {
    Beacon { token: Token, request: BeaconRequest, reballot: bool, done: BTreeSet<Gpid> },
    Propose { token: Token, gpid: Gpid, from: NodeAddr, proposal: ConfigProposal },
    CreateTable { token: Token, name: String, partition_count: u32, change: PolicyChange, owner: String, who: String, placing: Option<(TableInfo, VecDeque<PartitionConfig>)> },
    SetPolicy { token: Token, table: String, change: PolicyChange, who: String },
    DropTable { token: Token, name: String },
    RecallTable { token: Token, name: String },
    /// One pass of cure over the partitions from `from` on.
    Cure { from: Gpid },
    Purge { table_id: u32 },
    SiteAdd { token: Token, site: Site },
    SiteRemove { token: Token, name: String },
    DupAdd { token: Token, table: String, remote_site: String, fail_mode: FailMode, sync_existing: bool },
    DupSetStatus { token: Token, dup_id: u32, status: DupStatus },
    /// Persists the confirmed decrees primaries reported since the last time.
    SaveDupProgress,
    /// Brings a table's duplications to what its policy names (`old_site`: the site it named
    /// before a change).
    /// Adds the duplication the table's policy names, if it has none there yet.
    ReconcileDup { table_id: u32 },
    BackupNow { token: Token, table: String, target: Option<String>, who: String },
    /// A backup the table's policy says is due.
    ScheduledBackup { table_id: u32 },
    BackupDelete { token: Token, id: BackupId, who: String },
    Restore { token: Token, backup_id: BackupId, table: Option<String>, as_original: bool, who: String },
    /// Marks a restore complete or failed.
    RecordRestore { write: StoreWrite },
    /// Writes a backup record's change (`CompleteBackup` or `FailBackups`) a job decided.
    RecordBackup { write: StoreWrite },
}

/// A write in flight and what to do when it returns.
#[derive(Clone, Debug)]
struct InFlight {
    op: OpId,
    write: StoreWrite,
    work: Work,
}

pub struct MetaMachine {
    options: MetaOptions,
    leadership: Leadership,
    /// Some while leading with the store loaded.
    state: Option<MetaState>,
    queue: VecDeque<Work>,
    in_flight: Option<InFlight>,
    /// Beacons waiting for the write in flight (it changes a partition their answer carries):
    /// answered right after it, ahead of the queue.
    parked: Vec<Work>,
    /// A write this machine had stopped waiting for succeeded while a load was under way: that
    /// load may have missed it, so its snapshot is not taken.
    load_stale: bool,
    /// Writes in flight when the state was dropped, not answered yet. A load waits for them:
    /// one that landed after the load would leave the loaded state stale, and until the late
    /// success said so the machine would answer beacons from it — granting a lease to a primary
    /// the late write had replaced (found by the two-site simulator, seed 1820: the leader lapsed
    /// behind a hung store, won its lease back at the same epoch, loaded, and its cure from
    /// before the lapse landed after).
    abandoned: BTreeSet<OpId>,
    /// The epoch of a load waiting for `abandoned`.
    load_waiting: Option<u64>,
    /// The load whose answer is taken (the latest asked for); answers to earlier ones are
    /// ignored: their snapshots may predate a write (found with seed 5227 of the two-site
    /// simulator: loads sent before a store hang answered after a write that came back first,
    /// and the machine took one, losing a duplication's resume).
    load_out: Option<u64>,
    next_load: u64,
    next_op: OpId,
    now: Now,
    actions: Vec<MetaAction>,
    /// The free space under the store, when it is on this machine's disk.
    store_disk: DiskWatch,
}

impl MetaMachine {
    pub fn new(options: MetaOptions) -> MetaMachine {
        let leadership = Leadership::new(options.lease_ttl_ms);
        MetaMachine {
            leadership,
            state: None,
            queue: VecDeque::new(),
            in_flight: None,
            parked: Vec::new(),
            load_stale: false,
            abandoned: BTreeSet::new(),
            load_waiting: None,
            load_out: None,
            next_load: 0,
            next_op: 0,
            now: Now::default(),
            actions: Vec::new(),
            store_disk: DiskWatch::new(options.disk_reserve_bytes, options.disk_reserve_percent),
            options,
        }
    }

    pub fn options(&self) -> &MetaOptions {
        &self.options
    }

    /// The disk under the store is below its reserve (`StoreDiskSpace`).
    pub fn store_disk_short(&self) -> bool {
        self.store_disk.short().is_some()
    }

    /// How often the runtime claims the lease row: renewing while leading, polling otherwise
    /// (at least every second, so a standby takes over soon after the lease expires).
    pub fn claim_interval_ms(&self) -> u64 {
        self.leadership.claim_interval_ms()
    }

    pub fn is_leader(&self) -> bool {
        self.leadership.is_leader()
    }

    /// The lease epoch while leading.
    pub fn epoch(&self) -> Option<u64> {
        self.leadership.epoch()
    }

    /// The loaded metadata, while leading.
    pub fn state(&self) -> Option<&MetaState> {
        self.state.as_ref()
    }

    /// Whether a write is in flight or waits.
    pub fn busy(&self) -> bool {
        self.in_flight.is_some() || !self.queue.is_empty()
    }

    pub fn take_actions(&mut self) -> Vec<MetaAction> {
        std::mem::take(&mut self.actions)
    }

    pub fn step(&mut self, now: Now, input: MetaInput) {
        self.now = now;
        match input {
            MetaInput::Tick => self.on_tick(),
            MetaInput::StoreDiskSpace { dirs } => {
                let was_short = self.store_disk.short().is_some();
                let short = self.store_disk.on_space(&dirs).cloned();
                if was_short != short.is_some() {
                    self.event(MetaEvent::StoreDiskShort { short });
                }
            }
            MetaInput::Claimed { sent_at_ms, outcome } => self.on_claimed(sent_at_ms, outcome),
            MetaInput::Loaded { epoch, load, result } => self.on_loaded(epoch, load, result),
            MetaInput::Request { token, request } => self.on_request(token, request),
            MetaInput::Stored { op, result } => self.on_stored(op, result),
            MetaInput::BackupManifestWritten { backup_id, result } => self.on_backup_manifest_written(backup_id, result),
            MetaInput::WatchBroken { node } => self.probe(&node),
            MetaInput::Probed { node, probe, refused } => self.on_probed(&node, probe, refused),
        }
        self.pump();
    }

    fn reply(&mut self, token: Token, result: Result<MetaReply, MetaError>) {
        self.actions.push(MetaAction::Reply { token, result });
    }

    fn reply_to(&mut self, work: &Work, result: Result<MetaReply, MetaError>) {
        if let Some(token) = work.token() {
            self.reply(token, result);
        }
    }

    fn event(&mut self, e: MetaEvent) {
        self.actions.push(MetaAction::Event(e));
    }

    /// The epoch this machine serves under at `now`, with loaded state, or why not (the error
    /// names the leader when known).
    pub fn serving_at(&self, now: Now) -> Result<u64, MetaError> {
        let epoch = self.leadership.serving(now.mono_ms).map_err(not_serving)?;
        if self.state.is_none() {
            return Err(MetaError::NotLeader { leader: None, message: "this meta server is loading the metadata store; retry".into() });
        }
        Ok(epoch)
    }

    /// The epoch to serve under with loaded state, or why not.
    fn serving(&self) -> Result<u64, MetaError> {
        self.serving_at(self.now)
    }

    fn on_claimed(&mut self, sent_at_ms: u64, outcome: ClaimOutcome) {
        match self.leadership.on_claim(sent_at_ms, outcome, self.now.mono_ms) {
            Transition::SteppedDown { leader } => {
                self.drop_state(MetaError::NotLeader { leader: Some(leader.clone()), message: format!("this meta server does not lead; {leader} does") });
                self.event(MetaEvent::SteppedDown { leader });
            }
            Transition::BecameLeader { epoch } => {
                self.drop_state(MetaError::NotLeader { leader: None, message: "this meta server is loading the metadata store; retry".into() });
                self.load(epoch);
            }
            Transition::Unchanged => {
                // A load after an earlier takeover failed: try again (unless one is on its way).
                if let Ok(epoch) = self.leadership.serving(self.now.mono_ms)
                    && self.state.is_none()
                    && self.load_out.is_none()
                {
                    self.load(epoch);
                }
                // The early takeover's answer can come after a renewal's at the same epoch, so
                // after the load: its hold still applies (simulator seed 4270: a standby's
                // claims hung in the store, then went through together; the renewal's answer
                // came first, the state loaded without the hold, and a server the old leader
                // still leased was declared dead 8.6 s early).
                let hold_until_ms = self.leadership.hold_until_ms();
                if let Some(state) = self.state.as_mut() {
                    state.fd.hold_at_least(hold_until_ms);
                }
            }
        }
    }

    /// Drops the state and loads the store again under the same epoch.
    fn reload(&mut self, why: &str) {
        let Ok(epoch) = self.leadership.serving(self.now.mono_ms) else { return };
        self.drop_state(MetaError::NotLeader { leader: None, message: format!("this meta server is reloading the metadata store ({why}); retry") });
        self.event(MetaEvent::Reloading { epoch, why: why.to_string() });
        self.load(epoch);
    }

    /// Loads the store under `epoch`, once no write from before is in flight; the answer to any
    /// earlier load is ignored from now on.
    fn load(&mut self, epoch: u64) {
        if self.abandoned.is_empty() {
            self.next_load += 1;
            self.load_out = Some(self.next_load);
            self.actions.push(MetaAction::Load { epoch, load: self.next_load });
        } else {
            self.load_out = None;
            self.load_waiting = Some(epoch);
        }
    }

    /// Forgets everything in memory (it may be stale) and refuses what waited.
    fn drop_state(&mut self, why: MetaError) {
        self.state = None;
        self.load_out = None;
        let in_flight = self.in_flight.take();
        if let Some(f) = &in_flight {
            self.abandoned.insert(f.op);
        }
        let waiting: Vec<Work> = in_flight.map(|f| f.work).into_iter().chain(self.parked.drain(..)).chain(self.queue.drain(..)).collect();
        for work in waiting {
            if let Some(token) = work.token() {
                self.reply(token, Err(why.clone()));
            }
        }
    }

    fn on_loaded(&mut self, epoch: u64, load: u64, result: Result<MetaSnapshot, String>) {
        if self.load_out != Some(load) {
            return;
        }
        self.load_out = None;
        if self.leadership.serving(self.now.mono_ms) != Ok(epoch) || self.state.is_some() {
            return;
        }
        if std::mem::take(&mut self.load_stale) {
            self.event(MetaEvent::Reloading { epoch, why: "a write from before this load went through while it ran".into() });
            self.load(epoch);
            return;
        }
        match result {
            Ok(snapshot) => {
                let registered: BTreeSet<NodeAddr> = snapshot.nodes.iter().map(|(n, _)| n.clone()).collect();
                let state = MetaState {
                    tables: snapshot.tables.into_iter().map(|t| (t.id, t)).collect(),
                    partitions: snapshot.partitions.into_iter().map(|c| (c.gpid, c)).collect(),
                    // Every registered server starts alive with a full grace period: a new leader
                    // causes no failover by itself, and a lease granted by a previous leader has
                    // run out before anyone is declared dead — counted from when that leader's own
                    // lease ends if this one took over early (`ClaimOutcome::WonEarly`).
                    fd: FailureDetector::new(self.options.grace_period_ms, registered.iter().cloned(), self.now.mono_ms)
                        .holding_until(self.leadership.hold_until_ms()),
                    reports: BTreeMap::new(),
                    registered,
                    disk_short: BTreeMap::new(),
                    replicas_max: BTreeMap::new(),
                    refused: BTreeMap::new(),
                    sites: snapshot.sites.into_iter().map(|s| (s.name.clone(), s)).collect(),
                    dups: snapshot.dups.into_iter().map(|d| (d.id, d)).collect(),
                    dup_confirmed: snapshot.dup_confirmed.into_iter().map(|(d, p, c)| ((d, p), c)).collect(),
                    dup_unsaved: BTreeMap::new(),
                    dup_reports: BTreeMap::new(),
                    dup_watermarks: BTreeMap::new(),
                    backups: snapshot.backups.into_iter().map(|b| (b.id, b)).collect(),
                    backup_jobs: BTreeMap::new(),
                    backup_manifests: BTreeMap::new(),
                    backup_manifests_writing: BTreeSet::new(),
                    restores: snapshot.restores.into_iter().map(|r| (r.id, r)).collect(),
                    restore_errors: BTreeMap::new(),
                };
                self.event(MetaEvent::Leading { epoch, tables: state.tables.len(), partitions: state.partitions.len(), nodes: state.registered.len() });
                self.state = Some(state);
            }
            Err(error) => self.event(MetaEvent::LoadFailed { epoch, error }),
        }
    }

    fn on_tick(&mut self) {
        if self.serving().is_err() {
            return;
        }
        let now = self.now;
        let state = self.state.as_mut().expect("serving");
        let dead = state.fd.tick(now.mono_ms);
        let expired: Vec<u32> = state
            .tables
            .values()
            .filter(|t| matches!(t.status, TableStatus::Dropped { drop_time_ms } if now.wall_ms > drop_time_ms + self.options.recall_window_ms))
            .map(|t| t.id)
            .collect();
        let unsaved = !state.dup_unsaved.is_empty();
        let unreconciled: Vec<u32> = state.tables.values().filter(|t| dup_reconcile(state, t).is_some()).map(|t| t.id).collect();
        let silent = if self.options.refused_connection_means_dead { state.fd.silent(now.mono_ms, self.options.probe_after_silence_ms) } else { Vec::new() };
        for node in dead {
            self.event(MetaEvent::NodeDead { node, refused: false });
        }
        for node in silent {
            self.probe(&node);
        }
        self.queue_once(Work::Cure { from: Gpid::default() }, |w| matches!(w, Work::Cure { .. }));
        for table_id in unreconciled {
            self.queue_once(Work::ReconcileDup { table_id }, |w| matches!(w, Work::ReconcileDup { table_id: t } if *t == table_id));
        }
        if unsaved {
            self.queue_once(Work::SaveDupProgress, |w| matches!(w, Work::SaveDupProgress));
        }
        for table_id in expired {
            self.queue_once(Work::Purge { table_id }, |w| matches!(w, Work::Purge { table_id: t } if *t == table_id));
        }
        self.tick_backups();
    }

    /// Probes `node`'s port, if that can declare it dead and no probe of it is in flight.
    fn probe(&mut self, node: &str) {
        if !self.options.refused_connection_means_dead || self.serving().is_err() {
            return;
        }
        let now_ms = self.now.mono_ms;
        if let Some(probe) = self.state.as_mut().expect("serving").fd.start_probe(node, now_ms) {
            self.actions.push(MetaAction::Probe { node: node.to_string(), probe });
        }
    }

    /// A refused probe declares the server dead (`FailureDetector::on_probe` says when that is
    /// safe), and the cure moves its partitions at once.
    fn on_probed(&mut self, node: &str, probe: u64, refused: bool) {
        if self.serving().is_err() {
            return;
        }
        if self.state.as_mut().expect("serving").fd.on_probe(node, probe, refused) {
            self.event(MetaEvent::NodeDead { node: node.to_string(), refused: true });
            // A cure in flight may be past some of its partitions: a whole pass follows it.
            if !self.queue.iter().any(|w| matches!(w, Work::Cure { .. })) {
                self.queue.push_back(Work::Cure { from: Gpid::default() });
            }
        }
    }

    /// Whether work that `same` recognizes is queued or in flight.
    fn has_work(&self, same: impl Fn(&Work) -> bool) -> bool {
        self.queue.iter().chain(self.in_flight.as_ref().map(|f| &f.work)).any(same)
    }

    /// Queues `work` unless work that `same` recognizes is queued or in flight already (a tick
    /// finds the same thing to do again until it is done).
    fn queue_once(&mut self, work: Work, same: impl Fn(&Work) -> bool) {
        if !self.has_work(same) {
            self.queue.push_back(work);
        }
    }

    /// Whether a write of backup `id`'s record is queued or in flight.
    fn backup_write_queued(&self, id: BackupId) -> bool {
        self.has_work(|w| matches!(w, Work::RecordBackup { write } if backup_write_ids(write).contains(&id)))
    }

    /// Queues restore `id`'s `FinishRestore` unless one is queued or in flight.
    fn queue_finish_restore(&mut self, write: StoreWrite) {
        let StoreWrite::FinishRestore { id, .. } = &write else { unreachable!("a restore is finished by FinishRestore") };
        let id = *id;
        self.queue_once(Work::RecordRestore { write }, |w| matches!(w, Work::RecordRestore { write: StoreWrite::FinishRestore { id: i, .. } } if *i == id));
    }

    /// Each job learns the partitions' primaries and the time; records running without a job
    /// (their job lived in a previous leader, or its failure could not be written) fail.
    fn tick_backups(&mut self) {
        let now = self.now;
        let state = self.state.as_mut().expect("serving");
        let ids: Vec<BackupId> = state.backup_jobs.keys().copied().collect();
        for id in &ids {
            let job = state.backup_jobs.get_mut(id).expect("listed");
            for p in 0..job.phases().len() as u32 {
                let primary = state.partitions.get(&Gpid::new(job.table_id, p)).and_then(|c| c.primary.clone()).filter(|n| state.fd.is_alive(n));
                job.step(now.wall_ms, JobInput::Primary { partition: p, primary });
            }
            job.step(now.wall_ms, JobInput::Tick);
        }
        for id in ids {
            self.drive_backup(id);
        }
        let state = self.state.as_ref().expect("serving");
        let orphans: Vec<BackupId> = state
            .backups
            .values()
            .filter(|b| b.state == BackupState::Running && state.backup_jobs.get(&b.id).is_none_or(|j| matches!(j.state(), JobState::Failed(_))))
            .map(|b| b.id)
            .collect();
        let (taken_over, failed): (Vec<BackupId>, Vec<BackupId>) =
            orphans.into_iter().filter(|id| !self.backup_write_queued(*id)).partition(|id| !state.backup_jobs.contains_key(id));
        if !taken_over.is_empty() {
            let write = StoreWrite::FailBackups { ids: taken_over, at_ms: now.wall_ms, reason: FAILED_BY_TAKEOVER.into() };
            self.queue.push_back(Work::RecordBackup { write });
        }
        for id in failed {
            let state = self.state.as_ref().expect("serving");
            if let Some(JobState::Failed(reason)) = state.backup_jobs.get(&id).map(|j| j.state().clone()) {
                self.queue.push_back(Work::RecordBackup { write: StoreWrite::FailBackups { ids: vec![id], at_ms: now.wall_ms, reason } });
            }
        }
        self.schedule_backups();
        self.finish_restores();
    }

    /// A replica's restore that cannot succeed (the backup is damaged) fails the restore, with
    /// the server's reason; other failures are kept for `restore list` while the servers retry.
    fn on_restore_failures(&mut self, node: &str, failures: &[crate::backup::RestoreFailure]) {
        let now = self.now;
        let state = self.state.as_mut().expect("serving");
        let mut fail = Vec::new();
        for f in failures {
            let Some(r) = state.restores.values().find(|r| r.table_id == f.gpid.table_id && r.state == RestoreState::Running) else { continue };
            let reason = format!("partition {} on {node}: {}", f.gpid.partition, f.error);
            state.restore_errors.insert(r.id, reason.clone());
            if f.permanent {
                fail.push(StoreWrite::FinishRestore { id: r.id, state: RestoreState::Failed, at_ms: now.wall_ms, reason });
            }
        }
        for write in fail {
            self.queue_finish_restore(write);
        }
    }

    /// A running restore is complete once every partition of its table has every member of its
    /// configuration reporting (a replica reports only once it opened, and a replica of a table
    /// being restored opens only on the restored data); it fails if its table is dropped.
    fn finish_restores(&mut self) {
        let now = self.now;
        let state = self.state.as_ref().expect("serving");
        let mut writes = Vec::new();
        for r in state.restores.values().filter(|r| r.state == RestoreState::Running) {
            let available = state.tables.get(&r.table_id).is_some_and(|t| t.status == TableStatus::Available);
            if !available {
                writes.push(StoreWrite::FinishRestore { id: r.id, state: RestoreState::Failed, at_ms: now.wall_ms, reason: format!("table {} was dropped", r.table_name) });
            } else if restored_partitions(state, r) == r.partition_count {
                writes.push(StoreWrite::FinishRestore { id: r.id, state: RestoreState::Complete, at_ms: now.wall_ms, reason: String::new() });
            }
        }
        for write in writes {
            self.queue_finish_restore(write);
        }
    }

    /// The policies' schedules and retention: a table whose last backup on its policy's target
    /// started `every` ago — with a start time (`--backup-at`), before the latest slot — (a
    /// failed one: `BACKUP_RETRY_MS` ago, or `every` if shorter) gets one, and a table with none
    /// at once, as long as fewer than `backup_jobs_max` run; its complete backups beyond the newest
    /// `keep` are deleted, never while one of its backups runs nor while a restore reads them.
    fn schedule_backups(&mut self) {
        let now = self.now;
        let state = self.state.as_ref().expect("serving");
        let running_tables: BTreeSet<u32> = state.backups.values().filter(|b| b.state == BackupState::Running).map(|b| b.table_id).collect();
        let mut running = state.backups.values().filter(|b| b.state == BackupState::Running).count();
        let mut on_target: BTreeMap<(u32, &str), Vec<&BackupInfo>> = BTreeMap::new();
        for b in state.backups.values() {
            on_target.entry((b.table_id, b.target.as_str())).or_default().push(b);
        }
        let mut due = Vec::new();
        let mut expired = Vec::new();
        // Backups running restores read are kept until those finish.
        let restoring: BTreeSet<BackupId> = state.restores.values().filter(|r| r.state == RestoreState::Running).map(|r| r.backup_id).collect();
        for t in state.tables.values().filter(|t| t.status == TableStatus::Available) {
            let Some(policy) = &t.policy.backup else { continue };
            let records = on_target.get(&(t.id, policy.target.as_str())).map_or(&[][..], Vec::as_slice);
            let plain: Vec<tandem_backup_core::BackupRecord> =
                records.iter().map(|b| tandem_backup_core::BackupRecord { id: b.id, state: b.state, started_ms: b.started_ms }).collect();
            expired.extend(tandem_backup_core::expired(&plain, policy.keep).into_iter().filter(|id| !restoring.contains(id)).map(|id| (id, policy.keep)));
            if running_tables.contains(&t.id) {
                continue;
            }
            let last = records.iter().max_by_key(|b| (b.started_ms, b.id));
            let is_due = match (last, &policy.at) {
                (None, _) => true,
                (Some(b), _) if b.state == BackupState::Failed => now.wall_ms >= b.started_ms.saturating_add(policy.every_ms.min(BACKUP_RETRY_MS)),
                (Some(b), None) => now.wall_ms >= b.started_ms.saturating_add(policy.every_ms),
                // A start time: due once the latest slot passed since the last backup started.
                (Some(b), Some(at)) => at.latest_slot_ms(policy.every_ms, now.wall_ms).is_some_and(|slot| b.started_ms < slot),
            };
            if is_due && running < self.options.backup_jobs_max {
                running += 1;
                due.push(t.id);
            }
        }
        for table_id in due {
            self.queue_once(Work::ScheduledBackup { table_id }, |w| matches!(w, Work::ScheduledBackup { table_id: t } if *t == table_id));
        }
        for (id, keep) in expired {
            if !self.backup_write_queued(id) {
                let write = StoreWrite::DeleteBackup { id, reason: format!("retention: the policy keeps the newest {keep}") };
                self.queue.push_back(Work::RecordBackup { write });
            }
        }
    }

    /// The records of table `table_id` on `target`, as garbage collection reads them after its
    /// listing (`MetaAction::CollectBackupGarbage`); None while not leading.
    pub fn backup_records_for(&self, table_id: u32, target: &str) -> Option<Vec<tandem_backup_core::CollectRecord>> {
        self.leadership.serving(self.now.mono_ms).ok()?;
        let state = self.state.as_ref()?;
        Some(
            state
                .backups
                .values()
                .filter(|b| b.table_id == table_id && b.target == target)
                .map(|b| tandem_backup_core::CollectRecord {
                    record: tandem_backup_core::BackupRecord { id: b.id, state: b.state, started_ms: b.started_ms },
                    manifest_sha256: b.manifest_sha256.clone(),
                })
                .collect(),
        )
    }

    /// Carries out what backup `id`'s job decided.
    fn drive_backup(&mut self, id: BackupId) {
        let now = self.now;
        let state = self.state.as_mut().expect("serving");
        let Some(job) = state.backup_jobs.get_mut(&id) else { return };
        let actions = job.take_actions();
        let table = job.table_name.clone();
        let target = state.backups.get(&id).map(|b| b.target.clone()).unwrap_or_default();
        for action in actions {
            match action {
                JobAction::Assign { partition, primary, attempt } => {
                    self.event(MetaEvent::Backup { id, table: table.clone(), what: format!("partition {partition} attempt {attempt} handed to {primary}") });
                }
                JobAction::WriteTableManifest { manifest } => {
                    let bytes = manifest.encode();
                    let key = tandem_backup_core::layout::table_manifest_key(manifest.table_id, id);
                    let state = self.state.as_mut().expect("serving");
                    // One write at a time: the job asks again on every tick until one succeeds.
                    if !state.backup_manifests_writing.insert(id) {
                        continue;
                    }
                    state.backup_manifests.insert(id, tandem_backup_core::manifest::sha256_hex(&bytes));
                    self.actions.push(MetaAction::WriteBackupManifest { backup_id: id, target: target.clone(), key, bytes });
                }
                JobAction::RecordComplete { sha256, bytes, new_bytes } => {
                    if !self.backup_write_queued(id) {
                        let write = StoreWrite::CompleteBackup { id, at_ms: now.wall_ms, manifest_sha256: sha256, bytes, new_bytes };
                        self.queue.push_back(Work::RecordBackup { write });
                    }
                }
                JobAction::RecordFailed { reason } => {
                    self.event(MetaEvent::Backup { id, table: table.clone(), what: format!("failed: {reason}") });
                    // Written by the next tick (`tick_backups`), which retries it until it holds.
                }
            }
        }
    }

    fn on_backup_manifest_written(&mut self, backup_id: BackupId, result: Result<(), String>) {
        if self.serving().is_err() {
            return;
        }
        let now = self.now;
        let state = self.state.as_mut().expect("serving");
        state.backup_manifests_writing.remove(&backup_id);
        let Some(job) = state.backup_jobs.get_mut(&backup_id) else { return };
        let result = result.and_then(|()| state.backup_manifests.get(&backup_id).cloned().ok_or_else(|| "no manifest was written".to_string()));
        let (failed, table) = (result.as_ref().err().cloned(), job.table_name.clone());
        job.step(now.wall_ms, JobInput::ManifestWritten { result });
        if let Some(e) = failed {
            self.event(MetaEvent::Backup { id: backup_id, table, what: format!("could not write the table manifest (retried): {e}") });
        }
        self.drive_backup(backup_id);
    }

    fn on_request(&mut self, token: Token, request: MetaRequest) {
        if let Err(e) = self.serving() {
            return self.reply(token, Err(e));
        }
        if let Some(short) = self.store_disk.short()
            && adds_metadata(&request)
        {
            let message = format!(
                "the metadata store's {short}; requests that add metadata are refused until space is freed there \
                 (reads, beacons, configuration changes, drops and deletes go on)"
            );
            return self.reply(token, Err(MetaError::DiskFull(message)));
        }
        let state = self.state.as_ref().expect("serving");
        let not_found = |name: &str| MetaError::NotFound(format!("table {name:?} does not exist"));
        let result = match request {
            MetaRequest::Beacon(request) => return self.on_beacon(token, request),
            MetaRequest::QueryConfig { table } => state
                .available_table(&table)
                .map(|t| MetaReply::Config { table: t.clone(), partitions: state.table_partitions(t.id).map(|(_, c)| c.clone()).collect() })
                .ok_or_else(|| not_found(&table)),
            MetaRequest::ListTables { include_dropped } => Ok(MetaReply::Tables {
                tables: state.tables.values().filter(|t| include_dropped || t.status == TableStatus::Available).cloned().collect(),
            }),
            MetaRequest::ShowTable { name } => {
                state.available_table(&name).map(|t| MetaReply::Table { table: t.clone(), partitions: state.partition_views(t) }).ok_or_else(|| not_found(&name))
            }
            MetaRequest::ListNodes => Ok(MetaReply::Nodes { nodes: state.node_views(self.now.mono_ms) }),
            MetaRequest::ClusterStatus => {
                let mut status = state.cluster_status();
                if let Some(short) = self.store_disk.short() {
                    status.problems.push(format!("the metadata store's {short}: tables, policies, sites, duplications and backups cannot be added or changed"));
                }
                Ok(MetaReply::Status(status))
            }
            MetaRequest::PolicyStatus { table } => state.available_table(&table).map(|t| MetaReply::PolicyStatus(state.policy_status(t, self.now.wall_ms))).ok_or_else(|| not_found(&table)),
            MetaRequest::PolicyHistory { table } => state.available_table(&table).map(|t| MetaReply::History { table: t.clone() }).ok_or_else(|| not_found(&table)),
            MetaRequest::Propose { gpid, from, proposal } => return self.queue.push_back(Work::Propose { token, gpid, from, proposal }),
            MetaRequest::CreateTable { name, partition_count, change, owner, who } => {
                if let Err(e) = validate_table_name(&name) {
                    return self.reply(token, Err(MetaError::InvalidArgument(e)));
                }
                if !partition_count.is_power_of_two() || partition_count > PARTITION_COUNT_MAX {
                    return self.reply(
                        token,
                        Err(MetaError::InvalidArgument(format!("partition count {partition_count} must be a power of two from 1 to {PARTITION_COUNT_MAX} (e.g. 8)"))),
                    );
                }
                return self.queue.push_back(Work::CreateTable { token, name, partition_count, change, owner, who, placing: None });
            }
            MetaRequest::SetPolicy { table, change, who } => {
                if change.is_empty() {
                    return self.reply(
                        token,
                        Err(MetaError::InvalidArgument(
                            "nothing to change: give --level, --replicas, --dup, --backup, --backup-keep, --backup-target or --tombstone-retention".into(),
                        )),
                    );
                }
                return self.queue.push_back(Work::SetPolicy { token, table, change, who });
            }
            MetaRequest::SiteList => Ok(MetaReply::Sites { sites: state.sites.values().cloned().collect() }),
            MetaRequest::DupList { table, include_removed } => {
                let table_id = match &table {
                    Some(name) => match state.available_table(name) {
                        Some(t) => Some(t.id),
                        None => return self.reply(token, Err(not_found(name))),
                    },
                    None => None,
                };
                let dups = state
                    .dups
                    .values()
                    .filter(|d| table_id.is_none_or(|id| d.table_id == id) && (include_removed || d.status != DupStatus::Removed))
                    .map(|d| dup_view(state, d))
                    .collect();
                Ok(MetaReply::Dups { dups })
            }
            MetaRequest::SiteAdd { site } => {
                if let Err(e) = site.validate(&self.options.site) {
                    return self.reply(token, Err(MetaError::InvalidArgument(e)));
                }
                return self.queue.push_back(Work::SiteAdd { token, site });
            }
            MetaRequest::SiteRemove { name } => return self.queue.push_back(Work::SiteRemove { token, name }),
            MetaRequest::DupAdd { table, remote_site, fail_mode, sync_existing } => {
                return self.queue.push_back(Work::DupAdd { token, table, remote_site, fail_mode, sync_existing });
            }
            MetaRequest::DupSetStatus { dup_id, status } => return self.queue.push_back(Work::DupSetStatus { token, dup_id, status }),
            MetaRequest::BackupNow { table, target, who } => return self.queue.push_back(Work::BackupNow { token, table, target, who }),
            MetaRequest::BackupDelete { id, who } => return self.queue.push_back(Work::BackupDelete { token, id, who }),
            MetaRequest::Restore { backup_id, table, as_original, who } => return self.queue.push_back(Work::Restore { token, backup_id, table, as_original, who }),
            MetaRequest::RestoreList => Ok(MetaReply::Restores {
                restores: state
                    .restores
                    .values()
                    .map(|r| RestoreView { info: r.clone(), partitions_ready: restored_partitions(state, r), last_error: state.restore_errors.get(&r.id).cloned() })
                    .collect(),
            }),
            MetaRequest::BackupList { table } => {
                let backups = state.backups.values().filter(|b| table.as_ref().is_none_or(|t| b.table_name == *t)).cloned().collect();
                Ok(MetaReply::Backups { backups })
            }
            MetaRequest::BackupShow { id } => match state.backups.get(&id) {
                Some(info) => {
                    let partitions = state.backup_jobs.get(&id).map(partition_views).unwrap_or_default();
                    Ok(MetaReply::Backup(BackupView { info: info.clone(), partitions }))
                }
                None => Err(MetaError::NotFound(format!("no backup {id} (tandem backup list shows them)"))),
            },
            MetaRequest::DropTable { name } => return self.queue.push_back(Work::DropTable { token, name }),
            MetaRequest::RecallTable { name } => return self.queue.push_back(Work::RecallTable { token, name }),
        };
        self.reply(token, result);
    }

    fn on_beacon(&mut self, token: Token, request: BeaconRequest) {
        if request.node.is_empty() {
            return self.reply(token, Err(MetaError::InvalidArgument("beacon without a node address".into())));
        }
        if let Err(e) = check_lease(&request.node, request.lease_period_ms, self.options.grace_period_ms) {
            return self.reply(token, Err(MetaError::InvalidArgument(e)));
        }
        let now = self.now.mono_ms;
        let state = self.state.as_mut().expect("serving");
        let node = request.node.clone();
        let alive_again = state.fd.on_beacon(&node, now);
        let reballot = state.fd.on_incarnation(&node, request.incarnation, request.restarted);
        if request.reports_delta {
            // Only what changed since the server's last answered beacon; the digest checks the
            // rest when the beacon is answered.
            for gpid in &request.reports_gone {
                if let Some(reports) = state.reports.get_mut(gpid) {
                    reports.remove(&node);
                }
            }
        } else {
            for reports in state.reports.values_mut() {
                reports.remove(&node);
            }
        }
        for (gpid, report) in &request.reports {
            state.reports.entry(*gpid).or_default().insert(node.clone(), report.clone());
        }
        let was_short = match &request.disk_short {
            Some(short) => state.disk_short.insert(node.clone(), short.clone()).is_some(),
            None => state.disk_short.remove(&node).is_some(),
        };
        let disk_event = (was_short != request.disk_short.is_some()).then(|| MetaEvent::DiskShort { node: node.clone(), short: request.disk_short.clone() });
        match request.replicas_max {
            Some(max) => state.replicas_max.insert(node.clone(), max),
            None => state.replicas_max.remove(&node),
        };
        let refused: BTreeSet<Gpid> = request.refused.iter().copied().collect();
        let refused_event = (state.refused.get(&node).is_none_or(|r| *r != refused) && !refused.is_empty())
            .then(|| MetaEvent::ReplicasRefused { node: node.clone(), gpids: request.refused.clone(), replicas_max: request.replicas_max });
        if refused.is_empty() {
            state.refused.remove(&node);
        } else {
            state.refused.insert(node.clone(), refused);
        }
        for (gpid, dup_id, report) in &request.dup_reports {
            // Only the partition's primary ships; a report of a deposed one is stale.
            let from_primary = state.partitions.get(gpid).is_some_and(|c| c.primary.as_deref() == Some(node.as_str()));
            let live = state.dups.get(dup_id).is_some_and(|d| d.table_id == gpid.table_id && d.status != DupStatus::Removed);
            if !from_primary || !live {
                continue;
            }
            let key = (*dup_id, gpid.partition);
            if state.dup_confirmed.get(&key).is_none_or(|c| report.confirmed > *c) {
                let unsaved = state.dup_unsaved.entry(key).or_insert(report.confirmed);
                *unsaved = (*unsaved).max(report.confirmed);
            }
            // Each report holds for good (docs/duplication.md, "Tombstones"): keep the largest.
            let w = state.dup_watermarks.entry(key).or_default();
            *w = (*w).max(report.watermark_us);
            state.dup_reports.insert(key, report.clone());
        }
        let mut reported_backups = BTreeSet::new();
        for r in &request.backup_reports {
            if let Some(job) = state.backup_jobs.get_mut(&r.backup_id).filter(|j| j.table_id == r.gpid.table_id) {
                job.step(self.now.wall_ms, JobInput::Report { partition: r.gpid.partition, attempt: r.attempt, report: r.report.clone() });
                reported_backups.insert(r.backup_id);
            }
        }
        for id in reported_backups {
            self.drive_backup(id);
        }
        self.on_restore_failures(&request.node, &request.restore_failures);
        let state = self.state.as_mut().expect("serving");
        let registered = state.registered.contains(&node);
        let touched = self.in_flight.as_ref().and_then(|f| f.write.partition()).is_some_and(|gpid| {
            state.partitions.get(&gpid).is_some_and(|c| c.hosts(&node) || state.reports.get(&gpid).is_some_and(|r| r.contains_key(&node)))
        });
        if alive_again {
            self.event(MetaEvent::NodeAlive { node });
        }
        for e in disk_event.into_iter().chain(refused_event) {
            self.event(e);
        }
        let work = Work::Beacon { token, request, reballot, done: BTreeSet::new() };
        if touched {
            self.parked.push(work);
        } else if reballot || !registered {
            // Ahead of queued changes: its lease waits for it, and a cure pass can be long.
            self.queue.push_front(work);
        } else {
            self.run(work);
        }
    }

    fn on_stored(&mut self, op: OpId, result: StoreResult) {
        if self.abandoned.remove(&op) {
            // The load that waited for it goes now, and sees it if it went through.
            if self.abandoned.is_empty()
                && let Some(epoch) = self.load_waiting.take()
                && self.leadership.serving(self.now.mono_ms) == Ok(epoch)
                && self.state.is_none()
            {
                self.load(epoch);
            }
            return;
        }
        let Some(f) = self.in_flight.take_if(|f| f.op == op) else {
            // A write this machine stopped waiting for (its state was dropped and loaded again
            // meanwhile) went through: the snapshot loaded since may lack it (found by the
            // simulator, seed 3025).
            if result.is_ok() {
                if self.state.is_some() {
                    self.reload("a write from before the last load went through after it");
                } else {
                    self.load_stale = true;
                }
            }
            return;
        };
        if matches!(&result, Err(StoreFailure { kind: StoreFailureKind::Fenced, .. })) {
            // Another meta server took over: the claim loop will say so; nothing more is
            // written under this epoch.
            self.leadership_lost_to_fencing(&f, &result);
            return;
        }
        self.resume(f, result);
        // The beacons that waited for this write go first.
        for work in self.parked.drain(..).rev() {
            self.queue.push_front(work);
        }
    }

    fn leadership_lost_to_fencing(&mut self, f: &InFlight, result: &StoreResult) {
        let message = match result {
            Err(e) => format!("this meta server lost its leadership: {}", e.message),
            Ok(_) => unreachable!("a fenced write failed"),
        };
        let error = MetaError::NotLeader { leader: None, message };
        if let Some(token) = f.work.token() {
            self.reply(token, Err(error.clone()));
        }
        self.drop_state(error);
    }

    /// Runs queued work until a write is in flight or nothing waits.
    fn pump(&mut self) {
        while self.in_flight.is_none() && self.serving().is_ok() {
            let Some(work) = self.queue.pop_front() else { break };
            self.run(work);
        }
    }

    /// Starts a write for `work` (it continues in `resume`).
    fn persist(&mut self, write: StoreWrite, work: Work) {
        let epoch = self.serving().expect("persist only while serving");
        self.next_op += 1;
        let op = self.next_op;
        self.actions.push(MetaAction::Persist { op, epoch, write: write.clone() });
        self.in_flight = Some(InFlight { op, write, work });
    }

    /// Takes `work` as far as it goes now: answered, or waiting for a write.
    fn run(&mut self, work: Work) {
        if let Err(e) = self.serving() {
            if let Some(token) = work.token() {
                self.reply(token, Err(e));
            }
            return;
        }
        let now = self.now;
        let state = self.state.as_mut().expect("serving");
        match work {
            Work::Beacon { token, request, reballot, mut done } => {
                if !state.registered.contains(&request.node) {
                    let write = StoreWrite::RegisterNode { address: request.node.clone(), at_ms: now.wall_ms };
                    return self.persist(write, Work::Beacon { token, request, reballot, done });
                }
                // Another beacon of the same process may have had its new ballots written first.
                if reballot && (!done.is_empty() || !state.fd.reballoted_already(&request.node, request.incarnation)) {
                    // A restarted server lost its unsynced log tail: its primaries continue under
                    // a new ballot, so members can tell its new stream from its previous life's.
                    let next = state.partitions.values().filter(|c| !done.contains(&c.gpid)).find_map(|c| reassign_restarted_primary(c, &request.node));
                    if let Some(next) = next {
                        done.insert(next.gpid);
                        let write = StoreWrite::UpdatePartition { expected_ballot: next.ballot - 1, config: next };
                        return self.persist(write, Work::Beacon { token, request, reballot, done });
                    }
                    state.fd.reballoted(&request.node, request.incarnation);
                    // Its uploads died with its predecessor: each is assigned again under a new
                    // attempt (`JobInput::UploaderRestarted`), before this answer hands them out.
                    let jobs: Vec<u64> = state.backup_jobs.keys().copied().collect();
                    for id in jobs {
                        if let Some(job) = self.state.as_mut().expect("serving").backup_jobs.get_mut(&id) {
                            job.step(now.wall_ms, JobInput::UploaderRestarted { node: request.node.clone() });
                        }
                        self.drive_backup(id);
                    }
                }
                let state = self.state.as_mut().expect("serving");
                // Every replica the server reports, as this meta has them (a beacon may carry only
                // what changed), and their digest.
                let node_reports: Vec<(Gpid, &ReplicaReport)> = state.reports.iter().filter_map(|(g, rs)| rs.get(&request.node).map(|r| (*g, r))).collect();
                let reported: BTreeSet<Gpid> = node_reports.iter().map(|(g, _)| *g).collect();
                let resend_reports = request.reports_digest.is_some_and(|d| {
                    d != tandem_core::digest::reports_digest(node_reports.iter().map(|(g, r)| (*g, r.ballot, r.status.as_str(), r.last_committed, r.last_prepared)))
                });
                let mut configs: Vec<PartitionConfig> = configs_for_node(state.partitions.values(), &request.node, &reported).into_iter().cloned().collect();
                let mut tables: Vec<u32> = configs.iter().map(|c| c.gpid.table_id).collect();
                tables.dedup();
                let mut partition_counts: Vec<(u32, u32)> = tables.iter().filter_map(|id| state.tables.get(id).map(|t| (*id, t.partition_count))).collect();
                let mut tombstone_retention: Vec<(u32, u64)> =
                    tables.iter().filter_map(|id| state.tables.get(id).map(|t| (*id, t.policy.tombstone_retention_ms))).collect();
                let gone = reported.into_iter().filter(|g| !state.tables.contains_key(&g.table_id)).collect();
                let dups: Vec<TableDup> = state
                    .dups
                    .values()
                    .filter(|d| d.status != DupStatus::Removed && tables.contains(&d.table_id))
                    .map(|d| dup_for_server(state, d))
                    .collect();
                let sites = state.sites.values().filter(|s| dups.iter().any(|d| d.remote_site == s.name)).cloned().collect();
                let backups = backup_tasks(state, &request.node);
                // A failed restore's table keeps its source too: its replicas never open empty.
                let restores = state.restores.values().filter(|r| r.state != RestoreState::Complete && tables.contains(&r.table_id)).map(RestoreInfo::source).collect();
                // What the server holds from its last answer is not sent again: a server of a
                // thousand idle replicas gets a few bytes, not every configuration.
                let configs_unchanged = request.configs_digest.is_some_and(|d| d == tandem_core::digest::answer_digest(&configs, &partition_counts, &tombstone_retention));
                if configs_unchanged {
                    (configs, partition_counts, tombstone_retention) = (vec![], vec![], vec![]);
                }
                self.reply(
                    token,
                    Ok(MetaReply::Beacon { configs, partition_counts, tombstone_retention, gone, dups, sites, backups, restores, configs_unchanged, resend_reports }),
                );
            }
            Work::Propose { token, gpid, from, proposal } => {
                let Some(config) = state.partitions.get(&gpid).cloned() else {
                    return self.reply(token, Err(MetaError::NotFound(format!("no partition {gpid}"))));
                };
                let replica_count = state.tables.get(&gpid.table_id).map_or(0, |t| t.replica_count) as usize;
                match apply_proposal_from(&config, &from, &proposal, replica_count) {
                    Ok(next) => self.persist(StoreWrite::UpdatePartition { config: next, expected_ballot: config.ballot }, Work::Propose { token, gpid, from, proposal }),
                    Err(reason) => {
                        self.event(MetaEvent::ProposalRefused { gpid, from, proposal, reason: reason.clone() });
                        self.reply(token, Err(MetaError::InvalidArgument(reason)));
                    }
                }
            }
            Work::CreateTable { token, name, partition_count, change, owner, who, placing: None } => {
                let mut change = change;
                let peers = peer_sites(&self.options, state);
                let cx = policy_context(&self.options, state, &peers);
                // Validated as a change from "no replicas": the count must fit the live servers.
                let policy = match Policy::with_replicas(0).apply(&change, &cx) {
                    Ok(p) => p,
                    Err(e) => return self.reply(token, Err(MetaError::InvalidArgument(e))),
                };
                change.replicas = Some(policy.replicas);
                if state.available_table(&name).is_some() {
                    return self.reply(token, Err(MetaError::AlreadyExists(format!("table {name:?} already exists"))));
                }
                if let Err(e) = state.check_room(partition_count, policy.replicas) {
                    return self.reply(token, Err(MetaError::InvalidArgument(format!("table {name:?} does not fit: {e}"))));
                }
                let write = StoreWrite::CreateTable { name: name.clone(), partition_count, policy, owner: owner.clone(), who: who.clone(), at_ms: now.wall_ms };
                self.persist(write, Work::CreateTable { token, name, partition_count, change, owner, who, placing: None });
            }
            Work::CreateTable { token, name, partition_count, change, owner, who, placing: Some((table, left)) } => match left.is_empty() {
                false => {
                    // Every partition in one write: a table of 1,024 partitions is one
                    // transaction, not 1,024.
                    let write = StoreWrite::PlacePartitions { configs: left.into_iter().collect() };
                    self.persist(write, Work::CreateTable { token, name, partition_count, change, owner, who, placing: Some((table, VecDeque::new())) });
                }
                true => {
                    self.event(MetaEvent::TableCreated { table: table.clone(), who });
                    self.reply(token, Ok(MetaReply::Created { table }));
                }
            },
            Work::SetPolicy { token, table, change, who } => {
                let Some(t) = state.available_table(&table).cloned() else {
                    return self.reply(token, Err(MetaError::NotFound(format!("table {table:?} does not exist"))));
                };
                let peers = peer_sites(&self.options, state);
                let cx = policy_context(&self.options, state, &peers);
                let more = |next: &Policy| next.replicas.saturating_sub(t.replica_count);
                let hosting = |n: &NodeAddr| state.table_partitions(t.id).filter(|(_, c)| c.hosts(n) || c.learners.contains(n)).count();
                match t.policy.apply(&change, &cx) {
                    Ok(next) if next == t.policy => self.reply(token, Ok(MetaReply::PolicySet { old: t.policy.clone(), table: t, changed: false })),
                    Ok(next) if more(&next) > 0 && let Err(e) = state.check_room_beside(t.partition_count, more(&next), hosting) => {
                        let why = format!("raising table {:?} from {} to {} replicas does not fit: {e}", t.name, t.replica_count, next.replicas);
                        self.reply(token, Err(MetaError::InvalidArgument(why)))
                    }
                    Ok(next) => {
                        let write = StoreWrite::SetPolicy { table_id: t.id, old: t.policy.clone(), new: next, who: who.clone(), at_ms: now.wall_ms };
                        self.persist(write, Work::SetPolicy { token, table, change, who });
                    }
                    Err(e) => self.reply(token, Err(MetaError::InvalidArgument(e))),
                }
            }
            Work::DropTable { token, name } => match state.available_table(&name) {
                Some(t) => {
                    let write = StoreWrite::DropTable { table_id: t.id, at_ms: now.wall_ms };
                    self.persist(write, Work::DropTable { token, name });
                }
                None => self.reply(token, Err(MetaError::NotFound(format!("table {name:?} does not exist")))),
            },
            Work::RecallTable { token, name } => {
                let latest = state
                    .tables
                    .values()
                    .filter(|t| t.name == name && matches!(t.status, TableStatus::Dropped { .. }))
                    .max_by_key(|t| match t.status {
                        TableStatus::Dropped { drop_time_ms } => drop_time_ms,
                        TableStatus::Available => 0,
                    });
                match latest {
                    Some(t) => {
                        let write = StoreWrite::RecallTable { table_id: t.id };
                        self.persist(write, Work::RecallTable { token, name });
                    }
                    None => self.reply(token, Err(MetaError::NotFound(format!("no dropped table {name:?} to recall (its recall window may have passed)")))),
                }
            }
            Work::Cure { from } => {
                // The load of every server, once per pass: it was counted for each partition
                // looked at (every configuration's members, each time), which at 1,024
                // partitions took most of an idle meta's CPU, and at a few thousand seconds.
                let load = state.load();
                let placement = learner_placement(&load);
                let next = state.partitions.range(from..).find_map(|(gpid, config)| {
                    let table = state.tables.get(&gpid.table_id)?;
                    if config.ballot == 0 {
                        // Created, never placed: its meta stopped halfway through placing the
                        // table (found by the simulator with meta crashes, seed 765).
                        if table.status != TableStatus::Available {
                            return None;
                        }
                        let placed = place_partition(*gpid, table.replica_count as usize, &load, state.partitions.values())?;
                        return Some((0, placed));
                    }
                    let empty = BTreeMap::new();
                    let reports: &BTreeMap<NodeAddr, ReplicaReport> = state.reports.get(gpid).unwrap_or(&empty);
                    let fd = &state.fd;
                    // A server that refused this replica for want of room is out of it, as if dead.
                    let refused = &state.refused;
                    let alive = |n: &str| fd.is_alive(n) && !refused.get(n).is_some_and(|r| r.contains(gpid));
                    let view = CureView { replica_count: table.replica_count as usize, alive: &alive, reports, placement: &placement };
                    cure(config, &view).map(|next| (config.ballot, next))
                });
                if let Some((expected_ballot, next)) = next {
                    let from = next.gpid;
                    self.persist(StoreWrite::UpdatePartition { config: next, expected_ballot }, Work::Cure { from });
                }
            }
            Work::Purge { table_id } => {
                if state.tables.get(&table_id).is_some_and(|t| t.status != TableStatus::Available) {
                    self.persist(StoreWrite::PurgeTable { table_id }, Work::Purge { table_id });
                }
            }
            Work::SiteAdd { token, site } => {
                if state.sites.contains_key(&site.name) {
                    return self.reply(token, Err(MetaError::AlreadyExists(format!("site {:?} already exists; remove it first to change it", site.name))));
                }
                self.persist(StoreWrite::AddSite { site: site.clone() }, Work::SiteAdd { token, site });
            }
            Work::SiteRemove { token, name } => {
                if !state.sites.contains_key(&name) {
                    return self.reply(token, Err(MetaError::NotFound(format!("no site {name:?} (tandem site list shows the known ones)"))));
                }
                if let Some(d) = state.dups.values().find(|d| d.remote_site == name && d.status != DupStatus::Removed) {
                    let table = state.tables.get(&d.table_id).map_or_else(|| d.table_id.to_string(), |t| t.name.clone());
                    let message = format!("site {name:?} is used by duplication {} of table {table:?}; remove that first (tandem dup remove {table} {})", d.id, d.id);
                    return self.reply(token, Err(MetaError::InvalidArgument(message)));
                }
                self.persist(StoreWrite::RemoveSite { name: name.clone() }, Work::SiteRemove { token, name });
            }
            Work::DupAdd { token, table, remote_site, fail_mode, sync_existing } => {
                let Some(t) = state.available_table(&table) else {
                    return self.reply(token, Err(MetaError::NotFound(format!("table {table:?} does not exist"))));
                };
                if !state.sites.contains_key(&remote_site) {
                    let message = format!("no site {remote_site:?}; add it first with: tandem site add {remote_site} --meta HOST:PORT");
                    return self.reply(token, Err(MetaError::NotFound(message)));
                }
                if let Some(d) = state.dups.values().find(|d| d.table_id == t.id && d.remote_site == remote_site && d.status != DupStatus::Removed) {
                    let message = format!("table {table:?} is already duplicated to {remote_site:?} (duplication {})", d.id);
                    return self.reply(token, Err(MetaError::AlreadyExists(message)));
                }
                // Without --sync-existing a duplication ships what commits from now on: every
                // partition starts confirmed at what its replicas last reported committed (the
                // lowest, so a write acknowledged before this request is at worst shipped again).
                // Left to its primary's first turn instead, the writes committed until the next
                // beacon handed it out would never ship (found by ops/tests/duplicate.rs).
                let start = if sync_existing { Vec::new() } else { dup_start(state, t) };
                let write = StoreWrite::AddDuplication { table_id: t.id, remote_site: remote_site.clone(), fail_mode, sync_existing, at_ms: now.wall_ms, start };
                self.persist(write, Work::DupAdd { token, table, remote_site, fail_mode, sync_existing });
            }
            Work::DupSetStatus { token, dup_id, status } => match state.dups.get(&dup_id) {
                None => self.reply(token, Err(MetaError::NotFound(format!("no duplication {dup_id} (tandem dup list shows them)")))),
                Some(d) if d.status == DupStatus::Removed => {
                    self.reply(token, Err(MetaError::InvalidArgument(format!("duplication {dup_id} was removed; add a new one with tandem dup add"))))
                }
                Some(d) if d.status == status => {
                    let dup = d.clone();
                    self.reply(token, Ok(MetaReply::DupStatusSet { dup, changed: false }))
                }
                Some(d)
                    if status == DupStatus::Removed
                        && state.tables.get(&d.table_id).is_some_and(|t| t.policy.duplication.as_deref() == Some(d.remote_site.as_str())) =>
                {
                    let table = state.tables.get(&d.table_id).map_or_else(String::new, |t| t.name.clone());
                    let message = format!(
                        "the policy of table {table:?} duplicates it to {:?}; change the policy instead: tandem policy set {table} --dup off",
                        d.remote_site
                    );
                    self.reply(token, Err(MetaError::InvalidArgument(message)))
                }
                Some(_) => self.persist(StoreWrite::SetDupStatus { dup_id, status }, Work::DupSetStatus { token, dup_id, status }),
            },
            Work::ReconcileDup { table_id } => {
                let Some(table) = state.tables.get(&table_id) else { return };
                if let Some(mut write) = dup_reconcile(state, table) {
                    if let StoreWrite::AddDuplication { at_ms, .. } = &mut write {
                        *at_ms = now.wall_ms;
                    }
                    self.persist(write, Work::ReconcileDup { table_id });
                }
            }
            Work::BackupNow { token, table, target, who } => match start_backup(&self.options, state, &table, target, &who, now.wall_ms) {
                Ok(write) => self.persist(write, Work::BackupNow { token, table, target: None, who }),
                Err(e) => self.reply(token, Err(e)),
            },
            Work::ScheduledBackup { table_id } => {
                let Some(t) = state.tables.get(&table_id).filter(|t| t.status == TableStatus::Available) else { return };
                let name = t.name.clone();
                // Whatever stopped it (a backup already running, the most at once) is checked
                // again at the next tick.
                if let Ok(write) = start_backup(&self.options, state, &name, None, "schedule", now.wall_ms) {
                    self.persist(write, Work::ScheduledBackup { table_id });
                }
            }
            Work::BackupDelete { token, id, who } => {
                let Some(b) = state.backups.get(&id) else {
                    return self.reply(token, Err(MetaError::NotFound(format!("no backup {id} (tandem backup list shows them)"))));
                };
                if b.state != BackupState::Complete {
                    let message = format!("backup {id} is {}; only complete backups are deleted (what others left on the target is collected by itself)", b.state.as_str());
                    return self.reply(token, Err(MetaError::InvalidArgument(message)));
                }
                // A running backup of the table may reuse this one's files (docs/backup.md).
                if let Some(running) = state.backups.values().find(|r| r.table_id == b.table_id && r.state == BackupState::Running) {
                    let message = format!("backup {} of table {:?} is running and may reuse this one's files; delete it once that one finished", running.id, b.table_name);
                    return self.reply(token, Err(MetaError::Busy(message)));
                }
                // A running restore reads its files (found wiring the simulator's restore drills).
                if let Some(r) = state.restores.values().find(|r| r.backup_id == id && r.state == RestoreState::Running) {
                    let message = format!("restore {} into table {:?} is reading backup {id}; delete it once that restore finished (tandem restore list)", r.id, r.table_name);
                    return self.reply(token, Err(MetaError::Busy(message)));
                }
                let write = StoreWrite::DeleteBackup { id, reason: format!("deleted by {who}") };
                self.persist(write, Work::BackupDelete { token, id, who });
            }
            Work::Restore { token, backup_id, table, as_original, who } => {
                let Some(b) = state.backups.get(&backup_id).cloned() else {
                    return self.reply(token, Err(MetaError::NotFound(format!("no backup {backup_id} (tandem backup list shows them)"))));
                };
                if b.state != BackupState::Complete {
                    let message = format!("backup {backup_id} is {}; only a complete backup can be restored (tandem backup list shows them)", b.state.as_str());
                    return self.reply(token, Err(MetaError::InvalidArgument(message)));
                }
                let name = match (table, as_original) {
                    (Some(name), false) => name,
                    (None, true) => b.table_name.clone(),
                    _ => return self.reply(token, Err(MetaError::InvalidArgument("give --table NEW_NAME, or --as-original to recreate the backed-up table under its own name".into()))),
                };
                if let Err(e) = validate_table_name(&name) {
                    return self.reply(token, Err(MetaError::InvalidArgument(e)));
                }
                if let Some(t) = state.available_table(&name) {
                    let message = if as_original {
                        format!("table {name:?} exists (id {}); restore into a new name with --table NEW_NAME, or drop it first", t.id)
                    } else {
                        format!("table {name:?} exists (id {}); a restore creates a new table: pick another name", t.id)
                    };
                    return self.reply(token, Err(MetaError::AlreadyExists(message)));
                }
                // The backed-up table's policy when the store still knows it, its replica count
                // bounded by the live servers.
                let live = state.placeable_nodes().len() as u32;
                let mut policy = state.tables.get(&b.table_id).map_or_else(|| Policy::with_replicas(3), |t| t.policy.clone());
                policy.replicas = policy.replicas.min(live.max(1));
                policy.duplication = None;
                if let Err(e) = state.check_room(b.partition_count, policy.replicas) {
                    return self.reply(token, Err(MetaError::InvalidArgument(format!("the restored table does not fit: {e}"))));
                }
                let owner = state.tables.get(&b.table_id).map_or_else(|| who.clone(), |t| t.owner.clone());
                let write = StoreWrite::RestoreTable { name: name.clone(), policy, owner, who: who.clone(), at_ms: now.wall_ms, backup: b };
                self.persist(write, Work::Restore { token, backup_id, table: Some(name), as_original, who });
            }
            Work::RecordRestore { write } => {
                let running = matches!(&write, StoreWrite::FinishRestore { id, .. } if state.restores.get(id).is_some_and(|r| r.state == RestoreState::Running));
                if running {
                    self.persist(write.clone(), Work::RecordRestore { write });
                }
            }
            Work::RecordBackup { write } => {
                if backup_write_allowed(state, &write) {
                    self.persist(write.clone(), Work::RecordBackup { write });
                }
            }
            Work::SaveDupProgress => {
                let confirmed: Vec<(u32, u32, tandem_core::Decree)> = state.dup_unsaved.iter().map(|(&(d, p), &c)| (d, p, c)).collect();
                if !confirmed.is_empty() {
                    self.persist(StoreWrite::SaveDupProgress { confirmed }, Work::SaveDupProgress);
                }
            }
        }
    }

    /// The write of `f` returned: adopt it and continue its work.
    fn resume(&mut self, f: InFlight, result: StoreResult) {
        let InFlight { write, work, .. } = f;
        let state = self.state.as_mut().expect("a write in flight implies state");
        let error = match (&write, result) {
            (StoreWrite::UpdatePartition { config, .. }, Ok(StoreDone::Compared { updated: true })) => {
                let previous = state.partitions.insert(config.gpid, config.clone()).unwrap_or_default();
                if previous.primary != config.primary {
                    // The former primary's duplicators stopped: their last reports say nothing
                    // about the new one's (found in review).
                    let gpid = config.gpid;
                    let dups = &state.dups;
                    state.dup_reports.retain(|(d, p), _| !(*p == gpid.partition && dups.get(d).is_some_and(|d| d.table_id == gpid.table_id)));
                }
                let cause = match &work {
                    Work::Propose { proposal, .. } => Cause::Proposal(proposal.clone()),
                    Work::Beacon { .. } => Cause::Restart,
                    Work::CreateTable { .. } => Cause::Placement,
                    _ => Cause::Cure,
                };
                let nodes: BTreeSet<NodeAddr> =
                    previous.members().chain(&previous.learners).chain(config.members()).chain(&config.learners).cloned().collect();
                self.event(MetaEvent::Committed { previous, config: config.clone(), cause });
                self.actions.push(MetaAction::AskBeacon { nodes });
                None
            }
            (StoreWrite::PlacePartitions { configs }, Ok(StoreDone::Compared { updated: true })) => {
                let mut nodes = BTreeSet::new();
                for config in configs {
                    let previous = state.partitions.insert(config.gpid, config.clone()).unwrap_or_default();
                    nodes.extend(config.members().cloned());
                    self.actions.push(MetaAction::Event(MetaEvent::Committed { previous, config: config.clone(), cause: Cause::Placement }));
                }
                self.actions.push(MetaAction::AskBeacon { nodes });
                None
            }
            (StoreWrite::PlacePartitions { configs }, Ok(_)) => {
                // A partition was placed behind this meta server: its state is stale.
                let error = MetaError::Busy(format!("table {} was placed in the store behind this meta server; it reloads the store", configs.first().map_or(0, |c| c.gpid.table_id)));
                if let Some(token) = work.token() {
                    self.reply(token, Err(error));
                }
                self.reload("a new table's partitions in the store differ from this meta server's");
                return;
            }
            (StoreWrite::UpdatePartition { config, .. }, Ok(_)) => {
                // The store holds another ballot: this state is stale. Load it again, or every
                // later change of the partition would fail the same way.
                let gpid = config.gpid;
                let error = MetaError::Busy(format!("partition {gpid} changed in the store behind this meta server; it reloads the store"));
                if let Some(token) = work.token() {
                    self.reply(token, Err(error.clone()));
                }
                if matches!(work, Work::Cure { .. } | Work::Beacon { .. }) {
                    self.event(MetaEvent::ChangeFailed { gpid, cause: if matches!(work, Work::Cure { .. }) { Cause::Cure } else { Cause::Restart }, error: error.to_string() });
                }
                self.reload("a partition's ballot in the store differs from this meta server's");
                return;
            }
            (StoreWrite::RegisterNode { address, .. }, Ok(_)) => {
                state.registered.insert(address.clone());
                None
            }
            (StoreWrite::CreateTable { .. }, Ok(StoreDone::Created { table })) => {
                for p in 0..table.partition_count {
                    state.partitions.insert(Gpid::new(table.id, p), PartitionConfig { gpid: Gpid::new(table.id, p), ..Default::default() });
                }
                state.tables.insert(table.id, table.clone());
                // Servers may have died since the policy was checked: with too few alive, the
                // partitions stay unplaced and cure places them once enough are back (found by
                // the simulator, seed 3957, where place_table's assertion stopped the meta).
                let load = state.load();
                let configs = place_table(table.id, table.partition_count, table.replica_count as usize, &load, &state.room(&load)).into();
                let Work::CreateTable { token, name, partition_count, change, owner, who, .. } = work else { unreachable!("a table is created by CreateTable") };
                return self.run(Work::CreateTable { token, name, partition_count, change, owner, who, placing: Some((table, configs)) });
            }
            (StoreWrite::SetPolicy { table_id, old, new, who, .. }, Ok(_)) => {
                let t = state.tables.get_mut(table_id).expect("the table exists");
                t.replica_count = new.replicas;
                t.policy = new.clone();
                let table = t.clone();
                // The store removed the duplication to a site the policy no longer names in the
                // same write; a site it names now gets one.
                if let Some(site) = crate::store::policy_dup_removed(old, new) {
                    for d in state.dups.values_mut().filter(|d| d.table_id == table.id && d.remote_site == site) {
                        d.status = DupStatus::Removed;
                    }
                }
                self.event(MetaEvent::PolicyChanged { table: table.name.clone(), old: old.clone(), new: new.clone(), who: who.clone() });
                if old.duplication != new.duplication && new.duplication.is_some() {
                    self.queue.push_back(Work::ReconcileDup { table_id: table.id });
                }
                if let Some(token) = work.token() {
                    self.reply(token, Ok(MetaReply::PolicySet { table, old: old.clone(), changed: true }));
                }
                return;
            }
            (StoreWrite::DropTable { table_id, at_ms }, Ok(_)) => {
                let t = state.tables.get_mut(table_id).expect("the table exists");
                t.status = TableStatus::Dropped { drop_time_ms: *at_ms };
                let reply = MetaReply::Dropped { table: t.clone(), recall_until_ms: at_ms + self.options.recall_window_ms };
                self.event(MetaEvent::TableDropped { table_id: *table_id });
                if let Some(token) = work.token() {
                    self.reply(token, Ok(reply));
                }
                return;
            }
            (StoreWrite::RecallTable { table_id }, Ok(_)) => {
                let t = state.tables.get_mut(table_id).expect("the table exists");
                t.status = TableStatus::Available;
                let reply = MetaReply::Recalled { table: t.clone() };
                self.event(MetaEvent::TableRecalled { table_id: *table_id });
                if let Some(token) = work.token() {
                    self.reply(token, Ok(reply));
                }
                return;
            }
            (StoreWrite::AddSite { site }, Ok(_)) => {
                state.sites.insert(site.name.clone(), site.clone());
                return self.reply_to(&work, Ok(MetaReply::SiteAdded { site: site.clone() }));
            }
            (StoreWrite::RemoveSite { name }, Ok(_)) => {
                state.sites.remove(name);
                return self.reply_to(&work, Ok(MetaReply::SiteRemoved { name: name.clone() }));
            }
            (StoreWrite::AddDuplication { start, .. }, Ok(StoreDone::DupAdded { dup })) => {
                state.dups.insert(dup.id, dup.clone());
                for &(partition, decree) in start {
                    state.dup_confirmed.insert((dup.id, partition), decree);
                }
                return self.reply_to(&work, Ok(MetaReply::DupAdded { dup }));
            }
            (StoreWrite::SetDupStatus { dup_id, status }, Ok(_)) => {
                let d = state.dups.get_mut(dup_id).expect("the duplication exists");
                d.status = *status;
                if *status == DupStatus::Removed {
                    state.dup_unsaved.retain(|(id, _), _| id != dup_id);
                    state.dup_reports.retain(|(id, _), _| id != dup_id);
                    state.dup_watermarks.retain(|(id, _), _| id != dup_id);
                }
                let dup = d.clone();
                return self.reply_to(&work, Ok(MetaReply::DupStatusSet { dup, changed: true }));
            }
            (StoreWrite::SaveDupProgress { confirmed }, Ok(_)) => {
                for &(dup_id, partition, decree) in confirmed {
                    let c = state.dup_confirmed.entry((dup_id, partition)).or_insert(decree);
                    *c = (*c).max(decree);
                    if state.dup_unsaved.get(&(dup_id, partition)).is_some_and(|u| *u <= *c) {
                        state.dup_unsaved.remove(&(dup_id, partition));
                    }
                }
                return;
            }
            (StoreWrite::AddBackup { .. }, Ok(StoreDone::BackupAdded { backup })) => {
                let job = BackupJob::new(backup.id, backup.table_id, backup.table_name.clone(), backup.partition_count, backup.started_ms, self.options.backup_job);
                state.backups.insert(backup.id, backup.clone());
                state.backup_jobs.insert(backup.id, job);
                self.event(MetaEvent::Backup { id: backup.id, table: backup.table_name.clone(), what: format!("started by {} to {}", backup.who, backup.target) });
                self.tick_backups();
                return self.reply_to(&work, Ok(MetaReply::BackupStarted { backup }));
            }
            (StoreWrite::CompleteBackup { id, at_ms, manifest_sha256, bytes, new_bytes }, Ok(_)) => {
                if let Some(b) = state.backups.get_mut(id) {
                    b.state = BackupState::Complete;
                    b.finished_ms = *at_ms;
                    b.manifest_sha256 = manifest_sha256.clone();
                    (b.bytes, b.new_bytes) = (*bytes, *new_bytes);
                    let what = format!("complete: {bytes} bytes, {new_bytes} of them new");
                    let table = b.table_name.clone();
                    state.backup_jobs.remove(id);
                    state.backup_manifests.remove(id);
                    self.event(MetaEvent::Backup { id: *id, table, what });
                }
                return;
            }
            (StoreWrite::FailBackups { ids, at_ms, reason }, Ok(_)) => {
                let mut collect = BTreeSet::new();
                for id in ids {
                    if let Some(b) = state.backups.get_mut(id) {
                        b.state = BackupState::Failed;
                        b.finished_ms = *at_ms;
                        b.reason = reason.clone();
                        collect.insert((b.table_id, b.target.clone()));
                    }
                    state.backup_jobs.remove(id);
                    state.backup_manifests.remove(id);
                }
                // What the failed backups uploaded is garbage now.
                for (table_id, target) in collect {
                    self.actions.push(MetaAction::CollectBackupGarbage { table_id, target });
                }
                return;
            }
            (StoreWrite::DeleteBackup { id, reason }, Ok(_)) => {
                let Some(b) = state.backups.get_mut(id) else { return };
                b.state = BackupState::Deleted;
                b.reason = reason.clone();
                let info = b.clone();
                self.event(MetaEvent::Backup { id: *id, table: info.table_name.clone(), what: reason.clone() });
                self.actions.push(MetaAction::CollectBackupGarbage { table_id: info.table_id, target: info.target.clone() });
                return self.reply_to(&work, Ok(MetaReply::BackupDeleted { backup: info }));
            }
            (StoreWrite::CompleteBackup { id, .. }, Err(e)) if !matches!(e.kind, StoreFailureKind::AlreadyExists | StoreFailureKind::NotFound | StoreFailureKind::Invalid) => {
                // The job writes it again at the next tick.
                if let Some(job) = state.backup_jobs.get_mut(id) {
                    job.step(self.now.wall_ms, JobInput::Recorded { result: Err(e.message.clone()) });
                }
                return;
            }
            (StoreWrite::RestoreTable { .. }, Ok(StoreDone::Restored { table, restore })) => {
                for p in 0..table.partition_count {
                    state.partitions.insert(Gpid::new(table.id, p), PartitionConfig { gpid: Gpid::new(table.id, p), ..Default::default() });
                }
                state.tables.insert(table.id, table.clone());
                state.restores.insert(restore.id, restore.clone());
                let load = state.load();
                let configs = place_table(table.id, table.partition_count, table.replica_count as usize, &load, &state.room(&load)).into();
                self.event(MetaEvent::Backup { id: restore.backup_id, table: table.name.clone(), what: format!("restore {} into table {} (id {}) started by {}", restore.id, table.name, table.id, restore.who) });
                let Work::Restore { token, who, .. } = work else { unreachable!("a table is restored by Restore") };
                let (name, partition_count, owner) = (table.name.clone(), table.partition_count, table.owner.clone());
                return self.run(Work::CreateTable { token, name, partition_count, change: PolicyChange::default(), owner, who, placing: Some((table, configs)) });
            }
            (StoreWrite::FinishRestore { id, state: next, at_ms, reason }, Ok(_)) => {
                if let Some(r) = state.restores.get_mut(id) {
                    r.state = *next;
                    r.finished_ms = *at_ms;
                    r.reason = reason.clone();
                    let what = format!("restore {id} into table {} is {}{}", r.table_name, next.as_str(), if reason.is_empty() { String::new() } else { format!(": {reason}") });
                    let (backup, table) = (r.backup_id, r.table_name.clone());
                    self.event(MetaEvent::Backup { id: backup, table, what });
                }
                return;
            }
            (StoreWrite::PurgeTable { table_id }, Ok(_)) => {
                for d in state.dups.values_mut().filter(|d| d.table_id == *table_id) {
                    d.status = DupStatus::Removed;
                }
                state.tables.remove(table_id);
                state.partitions.retain(|g, _| g.table_id != *table_id);
                state.reports.retain(|g, _| g.table_id != *table_id);
                self.event(MetaEvent::TablePurged { table_id: *table_id });
                return;
            }
            (_, Ok(done)) => Some(MetaError::Internal(format!("the store answered {done:?} to {write:?}"))),
            (_, Err(e)) => Some(store_error(e)),
        };
        match (work, error) {
            (work @ (Work::Beacon { .. } | Work::CreateTable { .. }), None) => self.run(work),
            (Work::Propose { token, .. }, None) => {
                let StoreWrite::UpdatePartition { config, .. } = write else { unreachable!("a proposal writes a partition") };
                self.reply(token, Ok(MetaReply::Proposed { config }));
            }
            (Work::Cure { from }, error) => {
                if let Some(e) = error {
                    self.event(MetaEvent::ChangeFailed { gpid: from, cause: Cause::Cure, error: e.to_string() });
                }
                // The rest of the pass, after this partition, behind what waits meanwhile.
                let next = Gpid::new(from.table_id, from.partition + 1);
                self.queue.push_back(Work::Cure { from: next });
            }
            (Work::Purge { table_id }, error) => {
                let error = error.map_or_else(|| "unexpected answer".to_string(), |e| e.to_string());
                self.event(MetaEvent::PurgeFailed { table_id, error });
            }
            (Work::Beacon { token, request, .. }, Some(e)) => {
                if matches!(write, StoreWrite::UpdatePartition { .. }) {
                    // The next beacon tries again; until then the answer carries the old
                    // configurations, which the restarted server holds inactive replicas of.
                    self.state.as_mut().expect("state").fd.forget_incarnation(&request.node);
                    self.event(MetaEvent::ChangeFailed { gpid: write.partition().expect("a partition"), cause: Cause::Restart, error: e.to_string() });
                }
                self.reply(token, Err(e));
            }
            (work, Some(e)) => {
                let disagrees = matches!(e, MetaError::AlreadyExists(_) | MetaError::NotFound(_) | MetaError::InvalidArgument(_));
                if let Some(token) = work.token() {
                    self.reply(token, Err(e));
                }
                // This state said the write would go through and the store refused it: the
                // state is stale (a write it had stopped waiting for went through).
                if disagrees {
                    self.reload("the store refused a change this meta server's state allowed");
                }
            }
            (work, None) => unreachable!("{work:?} finished above"),
        }
    }
}

impl Work {
    fn token(&self) -> Option<Token> {
        match self {
            Work::Beacon { token, .. }
            | Work::Propose { token, .. }
            | Work::CreateTable { token, .. }
            | Work::SetPolicy { token, .. }
            | Work::DropTable { token, .. }
            | Work::RecallTable { token, .. }
            | Work::SiteAdd { token, .. }
            | Work::SiteRemove { token, .. }
            | Work::DupAdd { token, .. }
            | Work::DupSetStatus { token, .. } => Some(*token),
            Work::BackupNow { token, .. } | Work::BackupDelete { token, .. } | Work::Restore { token, .. } => Some(*token),
            Work::Cure { .. }
            | Work::Purge { .. }
            | Work::SaveDupProgress
            | Work::ReconcileDup { .. }
            | Work::RecordBackup { .. }
            | Work::ScheduledBackup { .. }
            | Work::RecordRestore { .. } => None,
        }
    }
}

/// The partitions of restore `r`'s table whose every member reported (opened the restored data).
fn restored_partitions(state: &MetaState, r: &RestoreInfo) -> u32 {
    state
        .table_partitions(r.table_id)
        .filter(|(gpid, c)| {
            let reports = state.reports.get(gpid);
            c.ballot > 0 && c.primary.is_some() && c.members().all(|n| reports.is_some_and(|rs| rs.contains_key(n)))
        })
        .count() as u32
}

/// A failed scheduled backup is tried again this soon (or at its interval, if shorter).
pub const BACKUP_RETRY_MS: u64 = 10 * 60_000;

/// Whether the records `write` changes may still take it (a job's write can be overtaken by a
/// reload that found them changed).
fn backup_write_allowed(state: &MetaState, write: &StoreWrite) -> bool {
    let next = match write {
        StoreWrite::CompleteBackup { .. } => BackupState::Complete,
        StoreWrite::FailBackups { .. } => BackupState::Failed,
        StoreWrite::DeleteBackup { .. } => BackupState::Deleted,
        _ => return false,
    };
    backup_write_ids(write).iter().all(|id| state.backups.get(id).is_some_and(|b| b.state.may_become(next)))
}

/// Checks a backup asked for now (by `who`, or by the schedule) and answers its record's write.
fn start_backup(options: &MetaOptions, state: &MetaState, table: &str, target: Option<String>, who: &str, now_ms: u64) -> Result<StoreWrite, MetaError> {
    let Some(t) = state.available_table(table) else {
        return Err(MetaError::NotFound(format!("table {table:?} does not exist")));
    };
    let policy_target = t.policy.backup.as_ref().map(|b| b.target.clone());
    let default_target = (!options.backup_target.is_empty()).then(|| options.backup_target.clone());
    let Some(target) = target.or(policy_target).or(default_target) else {
        let message = format!("table {table:?} has no backup target: give --target s3://BUCKET/PREFIX (or file:///PATH), or set one with tandem policy set {table} --backup-target URL");
        return Err(MetaError::InvalidArgument(message));
    };
    crate::policy::validate_backup_target(&target).map_err(MetaError::InvalidArgument)?;
    if let Some(running) = state.backups.values().find(|b| b.table_id == t.id && b.state == BackupState::Running) {
        let message = format!("backup {} of table {table:?} is running; wait for it (tandem backup show {})", running.id, running.id);
        return Err(MetaError::AlreadyExists(message));
    }
    let running = state.backups.values().filter(|b| b.state == BackupState::Running).count();
    if running >= options.backup_jobs_max {
        let message = format!("{running} backups are running, the most this meta server runs at once (backup.jobs_max); try again when one finishes");
        return Err(MetaError::Busy(message));
    }
    Ok(StoreWrite::AddBackup { table_id: t.id, table_name: t.name.clone(), partition_count: t.partition_count, target, who: who.to_string(), at_ms: now_ms })
}

/// The backup records a write changes.
fn backup_write_ids(write: &StoreWrite) -> Vec<BackupId> {
    match write {
        StoreWrite::CompleteBackup { id, .. } | StoreWrite::DeleteBackup { id, .. } => vec![*id],
        StoreWrite::FailBackups { ids, .. } => ids.clone(),
        _ => Vec::new(),
    }
}

/// The partitions of running backups `node` is to upload: those whose current attempt its
/// job handed to it. Each names the table's newest complete backups on the same target, whose
/// SST files it reuses (retention deletes none of them while the backup runs).
fn backup_tasks(state: &MetaState, node: &str) -> Vec<BackupTask> {
    let mut tasks = Vec::new();
    for (id, job) in &state.backup_jobs {
        if *job.state() != JobState::Running {
            continue;
        }
        let Some(info) = state.backups.get(id) else { continue };
        let mut kept: Vec<&BackupInfo> =
            state.backups.values().filter(|b| b.table_id == info.table_id && b.target == info.target && b.state == BackupState::Complete).collect();
        kept.sort_by_key(|b| std::cmp::Reverse((b.started_ms, b.id)));
        let kept: Vec<(BackupId, String)> = kept.into_iter().take(BACKUP_REUSE_FROM_MAX).map(|b| (b.id, b.manifest_sha256.clone())).collect();
        for (p, phase) in job.phases().iter().enumerate() {
            if let tandem_backup_core::job::Phase::Uploading { primary, attempt, .. } = phase
                && primary == node
            {
                tasks.push(BackupTask { backup_id: *id, gpid: Gpid::new(info.table_id, p as u32), attempt: *attempt, target: info.target.clone(), kept: kept.clone() });
            }
        }
    }
    tasks
}

/// How many of a table's newest complete backups a partition's upload reuses files from: SST
/// files are immutable, so what an older backup holds and the newest does not was compacted
/// away and will not come back.
pub const BACKUP_REUSE_FROM_MAX: usize = 2;

/// A duplication as `dup list` shows it.
fn dup_view(state: &MetaState, d: &DupInfo) -> DupView {
    let partition_count = state.tables.get(&d.table_id).map_or(0, |t| t.partition_count);
    DupView {
        info: d.clone(),
        table: state.tables.get(&d.table_id).map_or_else(String::new, |t| t.name.clone()),
        partitions: (0..partition_count)
            .map(|p| DupPartitionView {
                partition: p,
                confirmed: state.dup_confirmed.get(&(d.id, p)).copied(),
                report: state.dup_reports.get(&(d.id, p)).cloned(),
            })
            .collect(),
    }
}

/// A duplication as a replica server is handed it: the persisted confirmed decrees only (a new
/// primary resumes from what is persisted; the log is held from there).
fn dup_for_server(state: &MetaState, d: &DupInfo) -> TableDup {
    TableDup {
        dup_id: d.id,
        table_id: d.table_id,
        table: state.tables.get(&d.table_id).map_or_else(String::new, |t| t.name.clone()),
        remote_site: d.remote_site.clone(),
        paused: d.status == DupStatus::Pause,
        fail_mode: d.fail_mode,
        sync_existing: d.sync_existing,
        confirmed: state.dup_confirmed.range((d.id, 0)..(d.id + 1, 0)).map(|(&(_, p), &c)| (p, c)).collect(),
        watermark_us: table_watermark_us(state, d),
    }
}

/// The smallest of the partitions' watermarks: every record the table made before it is
/// applied at the remote (0 until every partition reported one).
fn table_watermark_us(state: &MetaState, d: &DupInfo) -> u64 {
    let partitions = state.tables.get(&d.table_id).map_or(0, |t| t.partition_count);
    (0..partitions).map(|p| state.dup_watermarks.get(&(d.id, p)).copied().unwrap_or(0)).min().unwrap_or(0)
}

/// The sites a policy may duplicate to: those of the configuration and those added since.
fn peer_sites(options: &MetaOptions, state: &MetaState) -> Vec<String> {
    let mut peers: Vec<String> = options.peer_sites.iter().chain(state.sites.keys()).cloned().collect();
    peers.sort();
    peers.dedup();
    peers
}

/// The duplication a table's policy asks for and lacks: to a known site the policy names that
/// none ships to. (The one to a site the policy stopped naming is removed by the policy's own
/// write, `store::policy_dup_removed`.)
fn dup_reconcile(state: &MetaState, table: &TableInfo) -> Option<StoreWrite> {
    let live = |site: &str| state.dups.values().find(|d| d.table_id == table.id && d.remote_site == site && d.status != DupStatus::Removed);
    let site = table.policy.duplication.as_deref()?;
    if table.status != TableStatus::Available || !state.sites.contains_key(site) || live(site).is_some() {
        return None;
    }
    Some(StoreWrite::AddDuplication {
        table_id: table.id,
        remote_site: site.to_string(),
        fail_mode: FailMode::Slow,
        sync_existing: false,
        at_ms: 0,
        start: dup_start(state, table),
    })
}

/// Each partition of a new duplication starts at the lowest decree its replicas reported
/// committed: what commits after it is shipped.
fn dup_start(state: &MetaState, table: &TableInfo) -> Vec<(u32, tandem_core::Decree)> {
    (0..table.partition_count)
        .map(|p| {
            let reported = state.reports.get(&Gpid::new(table.id, p)).and_then(|r| r.values().map(|r| r.last_committed).min());
            (p, reported.unwrap_or(0))
        })
        .collect()
}

/// The admin requests refused while the disk under the store is below its reserve: those that
/// add metadata. Beacons, proposals (configuration changes keep partitions served), reads,
/// drops and deletes (they free space) are taken: the reserve is room for them.
fn adds_metadata(request: &MetaRequest) -> bool {
    matches!(
        request,
        MetaRequest::CreateTable { .. }
            | MetaRequest::SetPolicy { .. }
            | MetaRequest::RecallTable { .. }
            | MetaRequest::SiteAdd { .. }
            | MetaRequest::DupAdd { .. }
            | MetaRequest::DupSetStatus { status: DupStatus::Start | DupStatus::Pause, .. }
            | MetaRequest::BackupNow { .. }
            | MetaRequest::Restore { .. }
    )
}

fn policy_context<'a>(options: &'a MetaOptions, state: &MetaState, peers: &'a [String]) -> PolicyContext<'a> {
    let (disk_short, room): (Vec<NodeAddr>, Vec<NodeAddr>) = state.fd.alive_nodes().into_iter().partition(|n| state.disk_short.contains_key(n));
    PolicyContext {
        live_nodes: room.len(),
        disk_short,
        site: &options.site,
        peer_sites: peers,
        default_backup_target: &options.backup_target,
    }
}

fn not_serving(why: NotServing) -> MetaError {
    match why {
        NotServing::Follower { leader: Some(leader) } => MetaError::NotLeader { message: format!("this meta server does not lead; {leader} does"), leader: Some(leader) },
        NotServing::Follower { leader: None } => MetaError::NotLeader { leader: None, message: "no meta server leads yet (an election is under way); retry".into() },
        NotServing::Lapsed => MetaError::NotLeader { leader: None, message: "this meta server's leader lease lapsed (the metadata store is unreachable); retry".into() },
    }
}

fn store_error(e: StoreFailure) -> MetaError {
    match e.kind {
        StoreFailureKind::Fenced => MetaError::NotLeader { leader: None, message: e.message },
        StoreFailureKind::Unreachable => MetaError::Busy(e.message),
        StoreFailureKind::AlreadyExists => MetaError::AlreadyExists(e.message),
        StoreFailureKind::NotFound => MetaError::NotFound(e.message),
        StoreFailureKind::Invalid => MetaError::InvalidArgument(e.message),
        StoreFailureKind::Other => MetaError::Internal(e.message),
    }
}

pub fn validate_table_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > TABLE_NAME_BYTES_MAX {
        return Err(format!("table name must be 1 to {TABLE_NAME_BYTES_MAX} characters"));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.') {
        return Err(format!("table name {name:?} may contain only letters, digits, '_', '-' and '.'"));
    }
    Ok(())
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
