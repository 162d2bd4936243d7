//! A simulated meta server: glue that runs the production meta state machine
//! (`tandem_meta_core::MetaMachine`) over the simulated store, clock and network, as
//! `meta/server` runs it over SQL and gRPC. Several may run at once: they claim the shared
//! store's lease row, the winner loads the store and leads, and every write it makes is fenced
//! by its epoch, so leader failover is simulated with the production rules.
//!
//! A store call takes a simulated latency each way: a write is applied when it reaches the
//! store (if the meta is still up), and its answer can be lost to a crash after that, leaving a
//! durable change its meta never learned of.

use crate::event::{Event, Io};
use crate::msg::{BeaconAnswer, Endpoint, Msg, RpcId, meta_index};
use crate::clock::NodeClock;
use crate::stats::path;
use std::collections::BTreeMap;
use tandem_core::PartitionConfig;
use tandem_meta_core::cure::ReplicaReport;
use tandem_meta_core::leadership::ClaimOutcome;
use tandem_meta_core::machine::{Cause, MetaEvent};
use tandem_meta_core::request::{BeaconRequest, Token};
use tandem_meta_core::store::{MemStore, StoreResult, StoreWrite};
use tandem_meta_core::{MetaAction, MetaError, MetaInput, MetaMachine, MetaOptions, MetaReply, MetaRequest, MetaSnapshot, Now};

/// What a store call carries back.
#[derive(Clone, Debug)]
pub enum StoreCall {
    Claim { sent_at_ms: u64 },
    Load { epoch: u64, load: u64 },
    Persist { op: u64, epoch: u64, write: StoreWrite },
}

/// What a store call returned.
#[derive(Clone, Debug)]
pub enum StoreAnswer {
    Claimed { sent_at_ms: u64, outcome: ClaimOutcome },
    Loaded { epoch: u64, load: u64, snapshot: MetaSnapshot },
    Stored { op: u64, result: StoreResult },
}

/// A call of the meta server to the backup target, carried out after a store latency
/// (`on_objects`).
#[derive(Clone, Debug)]
pub enum ObjectWork {
    /// The table manifest, the last object of a backup.
    Manifest { backup_id: u64, key: String, bytes: Vec<u8> },
    /// Garbage collection of a table's objects.
    Collect { table_id: u32, target: String },
}

/// Who waits for an answer of the machine.
#[derive(Clone, Copy, Debug)]
enum Waiting {
    Rpc { to: Endpoint, rpc: RpcId },
    /// The simulation itself (table creation, scripts): the answer is kept for it.
    Admin,
    /// The simulation as an operator that does not wait for the answer.
    Ignored,
}

pub struct SimMeta {
    pub index: usize,
    pub clock: NodeClock,
    pub up: bool,
    pub incarnation: u64,
    boot_us: u64,
    options: MetaOptions,
    pub tick_interval_ms: u64,
    /// A store call takes up to this long each way.
    pub store_latency_us_max: u64,
    pub machine: MetaMachine,
    next_token: Token,
    waiting: BTreeMap<Token, Waiting>,
    /// Answers to admin requests, by token.
    pub admin_answers: BTreeMap<Token, Result<MetaReply, MetaError>>,
    /// The replica servers whose watch stream this process holds: each server opens one to the
    /// meta it beacons to (modelled as opened with its first beacon here).
    pub watchers: std::collections::BTreeSet<tandem_core::NodeAddr>,
}

impl SimMeta {
    pub fn new(index: usize, options: MetaOptions, clock: NodeClock) -> SimMeta {
        SimMeta {
            index,
            clock,
            up: false,
            incarnation: 0,
            boot_us: 0,
            machine: MetaMachine::new(options.clone()),
            options,
            tick_interval_ms: 500,
            store_latency_us_max: 3_000,
            next_token: 0,
            waiting: BTreeMap::new(),
            admin_answers: BTreeMap::new(),
            watchers: Default::default(),
        }
    }

    pub fn name(&self) -> String {
        Endpoint::Meta(self.index).name()
    }

    /// The lease row's holder: unique per process.
    pub fn holder(&self) -> String {
        format!("{}#{}", self.name(), self.incarnation)
    }

    fn now(&self, now_us: u64) -> Now {
        let wall_us = self.clock.wall_us(now_us);
        Now { mono_ms: self.clock.mono_ms(self.boot_us, now_us), wall_ms: wall_us / 1_000 }
    }

    /// Process start: nothing in memory; the claim loop and the tick begin.
    pub fn boot(&mut self, io: &mut Io<'_>) {
        assert!(!self.up, "{} is already up", self.name());
        self.up = true;
        self.incarnation += 1;
        self.boot_us = io.now_us;
        self.machine = MetaMachine::new(self.options.clone());
        self.waiting.clear();
        self.watchers.clear();
        if self.incarnation > 1 {
            let name = self.name();
            io.note(|| format!("{name}: restarted"));
        }
        // The first claim goes out before the first request is served, as in `meta/server`.
        self.claim(io);
        io.timer(self.tick_interval_ms * 1_000, Event::MetaTick { meta: self.index, incarnation: self.incarnation });
    }

    /// The process dies; the store sees its session end at once (the connection closes), which
    /// frees its advisory lock.
    pub fn crash(&mut self, store: &mut MemStore) {
        assert!(self.up, "{} is already down", self.name());
        store.session_closed(&self.holder());
        self.up = false;
        self.incarnation += 1;
        self.waiting.clear();
        self.watchers.clear();
    }

    /// A claim of the lease row leaves now; the next one after the machine's claim interval.
    pub fn claim(&mut self, io: &mut Io<'_>) {
        let sent_at_ms = self.now(io.now_us).mono_ms;
        self.store_call(io, StoreCall::Claim { sent_at_ms });
        let every_us = self.machine.claim_interval_ms() * 1_000;
        io.timer(every_us, Event::MetaClaim { meta: self.index, incarnation: self.incarnation });
    }

    fn store_call(&mut self, io: &mut Io<'_>, call: StoreCall) {
        let latency = io.rng.range(100, self.store_latency_us_max);
        io.timer(latency, Event::MetaStoreApply { meta: self.index, incarnation: self.incarnation, call });
    }

    /// The call reaches the store: carry it out there (the store outlives this process).
    pub fn apply_at_store(&self, io: &mut Io<'_>, store: &mut MemStore, call: StoreCall) {
        let store_now_ms = io.now_us / 1_000;
        let answer = match call {
            StoreCall::Claim { sent_at_ms } => {
                let outcome = store.claim_round(&self.holder(), &self.name(), self.options.lease_ttl_ms, store_now_ms);
                if let ClaimOutcome::WonEarly { epoch, predecessor_ms } = &outcome {
                    io.stats.path(path::META_EARLY_TAKEOVER);
                    let name = self.name();
                    io.note(|| format!("{name}: took the meta lease at epoch {epoch} early, {predecessor_ms} ms before its holder's ran out (its session is gone)"));
                }
                StoreAnswer::Claimed { sent_at_ms, outcome }
            }
            StoreCall::Load { epoch, load } => StoreAnswer::Loaded { epoch, load, snapshot: store.load() },
            StoreCall::Persist { op, epoch, write } => {
                let result = store.write(&self.holder(), epoch, &write);
                if result.as_ref().is_err_and(|e| e.kind == tandem_meta_core::store::StoreFailureKind::Fenced) {
                    io.stats.path(path::FENCED_WRITE);
                }
                StoreAnswer::Stored { op, result }
            }
        };
        let latency = io.rng.range(100, self.store_latency_us_max);
        io.timer(latency, Event::MetaStoreDone { meta: self.index, incarnation: self.incarnation, answer });
    }

    fn objects_call(&mut self, io: &mut Io<'_>, work: ObjectWork) {
        let latency = io.rng.range(100, self.store_latency_us_max.max(20_000));
        io.timer(latency, Event::MetaObjects { meta: self.index, incarnation: self.incarnation, work });
    }

    /// A call to the backup target, as `meta/server` makes it: the manifest's put answers
    /// `BackupManifestWritten`; a collection reads the records from the machine between its
    /// listing and its deletes, as `tandem_backup_core::collect` asks.
    pub fn on_objects(&mut self, io: &mut Io<'_>, objects: &mut tandem_backup_core::MemObjectStore, faults: crate::backup::ObjectFaults, work: ObjectWork) {
        let name = self.name();
        match work {
            ObjectWork::Manifest { backup_id, key, bytes } => {
                let mut reach = crate::backup::Reach::new(objects, io.rng, faults, None);
                let result = tandem_backup_core::ObjectStore::put(&mut reach, &key, bytes).map_err(|e| e.to_string());
                if reach.faulted.get() > 0 {
                    io.stats.path(path::OBJECT_FAULT);
                }
                io.note(|| format!("{name}: backup {backup_id}: table manifest {}", result.as_ref().err().map_or("written".to_string(), |e| format!("failed: {e}"))));
                self.step(io, MetaInput::BackupManifestWritten { backup_id, result });
            }
            ObjectWork::Collect { table_id, target } => {
                let machine = &self.machine;
                let mut reach = crate::backup::Reach::new(objects, io.rng, faults, None);
                let result = tandem_backup_core::collect(&mut reach, table_id, &mut || machine.backup_records_for(table_id, &target));
                if reach.faulted.get() > 0 {
                    io.stats.path(path::OBJECT_FAULT);
                }
                match result {
                    Ok(r) => {
                        if r.deleted > 0 {
                            io.stats.path(path::BACKUP_COLLECTED);
                        }
                        io.note(|| format!("{name}: collected table {table_id}'s backups: {} objects deleted of {} listed", r.deleted, r.listed));
                    }
                    Err(e) => io.note(|| format!("{name}: collecting table {table_id}'s backups failed: {e}")),
                }
            }
        }
    }

    /// The store's answer is back.
    pub fn on_store_answer(&mut self, io: &mut Io<'_>, answer: StoreAnswer) {
        let input = match answer {
            StoreAnswer::Claimed { sent_at_ms, outcome } => MetaInput::Claimed { sent_at_ms, outcome },
            StoreAnswer::Loaded { epoch, load, snapshot } => MetaInput::Loaded { epoch, load, result: Ok(snapshot) },
            StoreAnswer::Stored { op, result } => MetaInput::Stored { op, result },
        };
        self.step(io, input);
    }

    pub fn on_tick(&mut self, io: &mut Io<'_>) {
        self.step(io, MetaInput::Tick);
        io.timer(self.tick_interval_ms * 1_000, Event::MetaTick { meta: self.index, incarnation: self.incarnation });
    }

    /// A request from the simulation itself; its answer lands in `admin_answers`.
    pub fn admin(&mut self, io: &mut Io<'_>, request: MetaRequest) -> Token {
        self.request(io, Waiting::Admin, request)
    }

    /// A request from the simulation whose answer nobody waits for.
    pub fn admin_ignored(&mut self, io: &mut Io<'_>, request: MetaRequest) {
        self.request(io, Waiting::Ignored, request);
    }

    fn request(&mut self, io: &mut Io<'_>, waiting: Waiting, request: MetaRequest) -> Token {
        self.next_token += 1;
        let token = self.next_token;
        self.waiting.insert(token, waiting);
        self.step(io, MetaInput::Request { token, request });
        token
    }

    fn step(&mut self, io: &mut Io<'_>, input: MetaInput) {
        let me = Endpoint::Meta(self.index);
        let was_leading = self.machine.state().is_some();
        self.machine.step(self.now(io.now_us), input);
        for action in self.machine.take_actions() {
            match action {
                MetaAction::Load { epoch, load } => self.store_call(io, StoreCall::Load { epoch, load }),
                MetaAction::Persist { op, epoch, write } => self.store_call(io, StoreCall::Persist { op, epoch, write }),
                MetaAction::Reply { token, result } => self.answer(io, token, result),
                MetaAction::Event(e) => self.note_event(io, e),
                // The target is reached after a latency, like the store (one target per run).
                MetaAction::WriteBackupManifest { backup_id, target: _, key, bytes } => self.objects_call(io, ObjectWork::Manifest { backup_id, key, bytes }),
                MetaAction::CollectBackupGarbage { table_id, target } => self.objects_call(io, ObjectWork::Collect { table_id, target }),
                MetaAction::Probe { node, probe } => {
                    if let Some(i) = crate::msg::replica_index(&node) {
                        io.send(me, Endpoint::Replica(i), Msg::Probe { node, probe });
                    }
                }
                MetaAction::AskBeacon { nodes } => {
                    for node in nodes.iter().filter(|n| self.watchers.contains(*n)) {
                        if let Some(i) = crate::msg::replica_index(node) {
                            io.stats.path(path::BEACON_ASKED);
                            io.send(me, Endpoint::Replica(i), Msg::BeaconNow);
                        }
                    }
                }
            }
        }
        if was_leading && self.machine.state().is_none() {
            io.stats.path(path::META_STEPPED_DOWN);
        }
    }

    fn answer(&mut self, io: &mut Io<'_>, token: Token, result: Result<MetaReply, MetaError>) {
        let me = Endpoint::Meta(self.index);
        match self.waiting.remove(&token) {
            Some(Waiting::Admin) => {
                self.admin_answers.insert(token, result);
            }
            Some(Waiting::Ignored) | None => {}
            Some(Waiting::Rpc { to, rpc }) => {
                let msg = match result {
                    Ok(MetaReply::Beacon { configs, partition_counts, tombstone_retention, gone, dups, sites, backups, restores, configs_unchanged, resend_reports }) => {
                        let answer = BeaconAnswer { configs, partition_counts, gone, tombstone_retention, dups, sites, backups, restores, configs_unchanged, resend_reports };
                        Msg::BeaconResp { rpc, answer }
                    }
                    Ok(MetaReply::Proposed { config }) => Msg::ProposeResp { rpc, config },
                    Ok(MetaReply::Config { partitions, .. }) => Msg::QueryConfigResp { rpc, configs: partitions },
                    Ok(other) => unreachable!("no RPC of the simulation asks for {other:?}"),
                    Err(error) => Msg::MetaError { rpc, error },
                };
                io.send(me, to, msg);
            }
        }
    }

    pub fn on_message(&mut self, io: &mut Io<'_>, from: Endpoint, msg: Msg) {
        let (rpc, request) = match msg {
            Msg::WatchBroken { node } => {
                if self.watchers.remove(&node) {
                    self.step(io, MetaInput::WatchBroken { node });
                }
                return;
            }
            Msg::ProbeAnswer { node, probe, refused } => return self.step(io, MetaInput::Probed { node, probe, refused }),
            Msg::Beacon { rpc, node, incarnation, reports, lease_period_ms, restarted, dup_reports, backup_reports, restore_failures, disk_short, replicas_max, refused, reports_delta, reports_gone, reports_digest, configs_digest } => {
                self.watchers.insert(node.clone());
                let reports = reports
                    .iter()
                    .map(|s| {
                        let report = ReplicaReport { ballot: s.ballot, status: s.status.as_str().to_string(), last_committed: s.last_committed, last_prepared: s.last_prepared };
                        (s.gpid, report)
                    })
                    .collect();
                (rpc, MetaRequest::Beacon(BeaconRequest { node, incarnation, restarted, lease_period_ms, reports, dup_reports, backup_reports, restore_failures, disk_short, replicas_max, refused, reports_delta, reports_gone, reports_digest: Some(reports_digest), configs_digest }))
            }
            Msg::Propose { rpc, gpid, proposal, from: proposer } => (rpc, MetaRequest::Propose { gpid, from: proposer, proposal }),
            Msg::QueryConfig { rpc } => (rpc, MetaRequest::QueryConfig { table: crate::sim::TABLE_NAME.into() }),
            _ => return,
        };
        self.request(io, Waiting::Rpc { to: from, rpc }, request);
    }

    /// Trace lines and path counts of what the machine reports.
    fn note_event(&self, io: &mut Io<'_>, e: MetaEvent) {
        let name = self.name();
        match e {
            MetaEvent::Leading { epoch, partitions, .. } => {
                if epoch > 1 {
                    io.stats.path(path::META_RELOAD);
                }
                io.note(|| format!("{name}: leads at epoch {epoch}, {partitions} partition(s) loaded from the store"));
            }
            MetaEvent::DiskShort { node, short } => {
                io.stats.path(if short.is_some() { path::DISK_SHORT_SEEN } else { path::DISK_ROOM_SEEN });
                io.note(|| format!("{name}: {node}'s disk {}", if short.is_some() { "is below its reserve: nothing is placed there" } else { "has room again" }))
            }
            MetaEvent::ReplicasRefused { node, gpids, .. } => {
                io.stats.path(path::REPLICA_REFUSED_SEEN);
                io.note(|| format!("{name}: {node} refused {} replica(s) for want of room: moved elsewhere", gpids.len()))
            }
            MetaEvent::SteppedDown { leader } => io.note(|| format!("{name}: stepped down, {leader} leads")),
            MetaEvent::NodeDead { node, refused: false } => io.note(|| format!("{name}: {node} declared dead")),
            MetaEvent::NodeDead { node, refused: true } => {
                io.stats.path(path::DEAD_ON_REFUSED_PROBE);
                io.note(|| format!("{name}: {node} declared dead (its port refused the probe)"))
            }
            MetaEvent::Committed { previous, config, cause } => {
                note_config_paths(io, &previous, &config, &cause);
                io.note(|| {
                    format!(
                        "{name}: {} ballot {}: primary {}, secondaries [{}], learners [{}]",
                        config.gpid,
                        config.ballot,
                        config.primary.as_deref().unwrap_or("none"),
                        config.secondaries.join(" "),
                        config.learners.join(" ")
                    )
                });
            }
            MetaEvent::ProposalRefused { from, proposal, reason, .. } => {
                io.stats.path(path::PROPOSAL_REFUSED);
                io.note(|| format!("{name}: proposal {proposal:?} from {from} refused: {reason}"));
            }
            MetaEvent::ChangeFailed { gpid, cause, error } => {
                if cause == Cause::Restart {
                    io.stats.path(path::REBALLOT_FAILED);
                }
                io.note(|| format!("{name}: {cause:?} of {gpid} failed: {error}"))
            }
            MetaEvent::TablePurged { table_id } => {
                io.stats.path(path::TABLE_PURGED);
                io.note(|| format!("{name}: purged table {table_id}"));
            }
            MetaEvent::PolicyChanged { table, new, .. } => {
                io.stats.path(path::POLICY_CHANGED);
                io.note(|| format!("{name}: policy of {table} now {} replicas", new.replicas));
            }
            MetaEvent::TableCreated { table, .. } => io.note(|| format!("{name}: created table {} (id {})", table.name, table.id)),
            MetaEvent::TableDropped { table_id } => {
                io.stats.path(path::TABLE_DROPPED);
                io.note(|| format!("{name}: dropped table {table_id}"));
            }
            MetaEvent::TableRecalled { table_id } => {
                io.stats.path(path::TABLE_RECALLED);
                io.note(|| format!("{name}: recalled table {table_id}"));
            }
            MetaEvent::Reloading { why, .. } => {
                io.stats.path(path::META_RELOAD_STALE);
                io.note(|| format!("{name}: reloads the store: {why}"));
            }
            MetaEvent::LoadFailed { .. } | MetaEvent::StoreDiskShort { .. } | MetaEvent::NodeAlive { .. } | MetaEvent::PurgeFailed { .. } | MetaEvent::Backup { .. } => {}
        }
    }
}

fn note_config_paths(io: &mut Io<'_>, previous: &PartitionConfig, config: &PartitionConfig, cause: &Cause) {
    if previous.primary.is_some() && config.primary != previous.primary {
        io.stats.path(path::PROMOTION);
    }
    if config.learners.len() > previous.learners.len() {
        io.stats.path(path::LEARNER_ADDED);
    }
    match cause {
        Cause::Cure => {
            let removed = previous.secondaries.iter().any(|s| !config.secondaries.contains(s) && config.primary.as_ref() != Some(s));
            if removed && config.primary == previous.primary {
                io.stats.path(path::SECONDARY_REMOVED_BY_CURE);
            }
        }
        Cause::Proposal(tandem_core::replica::ConfigProposal::RemoveSecondary { .. }) => io.stats.path(path::SECONDARY_REMOVED_BY_PRIMARY),
        Cause::Proposal(tandem_core::replica::ConfigProposal::UpgradeLearner { .. }) => io.stats.path(path::LEARNER_UPGRADED),
        Cause::Restart => io.stats.path(path::RESTARTED_PRIMARY_REBALLOT),
        Cause::Placement => {}
    }
}

/// The meta a leader hint names.
pub fn hinted(error: &MetaError) -> Option<usize> {
    match error {
        MetaError::NotLeader { leader: Some(leader), .. } => meta_index(leader),
        _ => None,
    }
}
