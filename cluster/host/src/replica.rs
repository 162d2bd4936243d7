//! One replica as its server hosts it: the PacificA core plus what lies between it and the
//! runtime's IO. The replica server runs one of these per replica on its own task; the simulator
//! runs the same code on its simulated queue, disk and network.
//!
//! ```text
//!  runtime queue ──ReplicaEvent──▶ step ─┬─▶ core.step ─▶ core actions ─┐   (tokens ↔ carriers,
//!     (up to STEPS_PER_TURN_MAX)         └─▶ host rules ──────────────────┤    appends merged)
//!                                 end_turn ─▶ reads, Configured, AppendLog, SetReadGate ──┴─▶ Vec<ReplicaAction>
//! ```
//!
//! What this layer decides, so that the simulator exercises it too:
//! - **Turns.** Events queued together are stepped together, up to `STEPS_PER_TURN_MAX`; their
//!   log appends leave as one `AppendLog` at the end of the turn, and reads that had to wait are
//!   answered then, against the state the whole turn produced.
//! - **Request tokens.** Writes, prepares and learn requests carry the runtime's answer channel
//!   (`Carrier`); the core sees only a token.
//! - **The read gate.** Whether reads may skip the queue is refreshed once per turn.
//! - **Installing a learned checkpoint**: the reset record is logged first, then the fetched
//!   database is activated, then the core takes the engine and the old databases are deleted.
//!   Nothing else reaches the core meanwhile (events wait in order), as a record appended after
//!   the reset but before the switch would be replayed on the wrong engine.
//! - **Checkpoints served to learners**: their ids, how many are kept, and that one being read
//!   is never deleted (`CheckpointRetention`).

use crate::checkpoints::CheckpointRetention;
use crate::duplication::{DupConfig, DupId, DupWork, Duplications};
use crate::options::HostOptions;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use tandem_core::replica::{
    Action, ConfigProposal, Ctx, Input, LearnReply, LearnRequest, PrepareMsg, PrepareReply, Replica, ReplicaState, RequestId, WriteRequest,
    WriteResponse,
};
use tandem_core::storage::KvEngine;
use tandem_core::{Ballot, Decree, Error, Gpid, Mutation, NodeAddr, PartitionConfig, PartitionStatus};

/// Events a turn takes at most before its actions run (a queue holding more runs several turns).
pub const STEPS_PER_TURN_MAX: usize = 256;

/// What a runtime attaches to a request so that its answer finds the caller: a reply channel in
/// the server, an RPC id in the simulator.
pub trait Carrier {
    type Write;
    type Prepare;
    type Learn;
    type Read;
}

pub enum ReplicaEvent<C: Carrier> {
    /// The core's timers; `log_cache_bytes_max` is this replica's share of the server's budget.
    Tick { log_cache_bytes_max: usize },
    /// A configuration from the meta; answered by `Configured` at the end of the turn.
    Configure { config: PartitionConfig },
    Write { request: WriteRequest, reply: C::Write },
    Prepare { from: NodeAddr, msg: PrepareMsg, reply: C::Prepare },
    Learn { request: LearnRequest, reply: C::Learn },
    /// A read the read gate did not let through; answered by `ServeRead` at the end of the turn.
    Read { reply: C::Read },
    /// One `AppendLog` is durable: the (ballot, decree) of each of its mutations, in order.
    LogAppended { ids: Vec<(Ballot, Decree)> },
    /// A log append (mutations or reset) failed: the log takes nothing any more.
    LogFailed { error: String },
    PrepareReply { from: NodeAddr, reply: PrepareReply },
    /// The prepare to `to` failed (unreachable, timed out, answered with an error).
    PrepareFailed { to: NodeAddr, refused: bool },
    /// The answer to `SendLearnRequest` (None: the RPC failed).
    LearnReply { reply: Option<LearnReply> },
    ProposalReply { result: Result<PartitionConfig, String> },
    /// `MakeCheckpoint { id }` finished: state up to `decree`, or why it failed.
    CheckpointMade { id: String, result: Result<Decree, String> },
    /// A learner (or an upload) read checkpoint `id`: it is in use.
    CheckpointRead { id: String },
    /// `FetchCheckpoint` finished: the verified files are database directory `db` of this
    /// replica, holding state up to `decree`; or why it failed.
    CheckpointFetched { result: Result<(String, Decree), String> },
    /// `AppendReset` is durable.
    ResetLogged,
    /// `ActivateCheckpoint` finished: the engine opened on the checkpoint, or why it failed.
    CheckpointActivated { result: Result<Box<dyn KvEngine>, String> },
    /// The duplications of this replica's table, from the meta (the whole list each time).
    Duplications { configs: Vec<DupConfig> },
    /// The answer to a `Dup` action of duplication `dup_id`.
    Dup { dup_id: DupId, input: tandem_dup_core::Input },
}

impl<C: Carrier> std::fmt::Debug for ReplicaEvent<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind())
    }
}

impl<C: Carrier> ReplicaEvent<C> {
    pub fn kind(&self) -> &'static str {
        match self {
            ReplicaEvent::Tick { .. } => "tick",
            ReplicaEvent::Configure { .. } => "configure",
            ReplicaEvent::Write { .. } => "write",
            ReplicaEvent::Prepare { .. } => "prepare",
            ReplicaEvent::Learn { .. } => "learn",
            ReplicaEvent::Read { .. } => "read",
            ReplicaEvent::LogAppended { .. } => "log-appended",
            ReplicaEvent::LogFailed { .. } => "log-failed",
            ReplicaEvent::PrepareReply { .. } => "prepare-reply",
            ReplicaEvent::PrepareFailed { .. } => "prepare-failed",
            ReplicaEvent::LearnReply { .. } => "learn-reply",
            ReplicaEvent::ProposalReply { .. } => "proposal-reply",
            ReplicaEvent::CheckpointMade { .. } => "checkpoint-made",
            ReplicaEvent::CheckpointRead { .. } => "checkpoint-read",
            ReplicaEvent::CheckpointFetched { .. } => "checkpoint-fetched",
            ReplicaEvent::ResetLogged => "reset-logged",
            ReplicaEvent::CheckpointActivated { .. } => "checkpoint-activated",
            ReplicaEvent::Duplications { .. } => "duplications",
            ReplicaEvent::Dup { .. } => "dup",
        }
    }
}

/// What the runtime must do, in the order given. Each says what to report back, and when.
/// Requests still unanswered when a replica is dropped are dropped with it: a runtime's carrier
/// answers "dropped" from its own `Drop`.
pub enum ReplicaAction<C: Carrier> {
    /// Append these mutations to the shared log, after every earlier append of this replica;
    /// report `LogAppended` with their ids once durable, or `LogFailed`. At most one per turn.
    AppendLog { mutations: Vec<Arc<Mutation>> },
    /// Append a reset record of this partition at `decree` (a replay ignores this partition's
    /// earlier records); report `ResetLogged` once durable, or `LogFailed`.
    AppendReset { decree: Decree },
    /// Send to `to`; report `PrepareReply`, or `PrepareFailed`.
    SendPrepare { to: NodeAddr, msg: PrepareMsg },
    ReplyPrepare { to: C::Prepare, reply: PrepareReply },
    ReplyWrite { to: C::Write, result: Result<WriteResponse, Error> },
    ReplyLearn { to: C::Learn, reply: LearnReply },
    /// Answer a read: on Ok, read the engine now (it holds what this turn applied).
    ServeRead { to: C::Read, result: Result<(), Error> },
    /// Ask the meta; report `ProposalReply`.
    ProposeConfig { proposal: ConfigProposal },
    /// Report `LearnReply`.
    SendLearnRequest { to: NodeAddr, request: LearnRequest },
    /// Make checkpoint `id` of the engine (flushed, at its last applied decree) that learners
    /// fetch by id; report `CheckpointMade`.
    MakeCheckpoint { id: String },
    /// Delete checkpoint `id`: nobody reads it and newer ones replace it.
    DeleteCheckpoint { id: String },
    /// Fetch checkpoint `checkpoint_id` from `from` into a new database directory of this
    /// replica and verify every file; report `CheckpointFetched`.
    FetchCheckpoint { from: NodeAddr, checkpoint_id: String, decree: Decree },
    /// The reset record is durable: open database `db` as this replica's engine and make it the
    /// one a restart opens (check that it holds `decree`); report `CheckpointActivated`.
    ActivateCheckpoint { db: String, decree: Decree },
    /// Delete this replica's database directories other than `keep` (the core let go of them).
    DeleteDatabasesExcept { keep: String },
    /// Delete database directory `db`, fetched but not installed.
    DeleteDatabase { db: String },
    /// Open (or close) the read gate: while open, reads may skip the queue, the server's lease
    /// checked at read time.
    SetReadGate { open: bool },
    /// The `Configure` of this turn is taken; the replica's status now. Report it to the host
    /// only after every earlier action of the turn (the read gate above all) took effect: the
    /// host may extend the server's lease at once.
    Configured { status: PartitionStatus },
    /// The core's configuration is no longer the one the host gave last: it did not take it (it
    /// holds a newer one), or it moved since by another way (a proposal's answer, a prepare).
    /// Pass it to the host (`HostInput::ConfigMoved`), which then gives the next answer's again.
    ConfigMoved,
    /// The engine or log failed; the replica stopped serving.
    Failed { error: String },
    /// Work for duplication `dup_id`; report `ReplicaEvent::Dup` (see `DupWork`).
    Dup { dup_id: DupId, work: DupWork },
    /// The shared log must keep this partition's decrees after `keep_after` for its
    /// duplications (None: nothing): pass it to the host as `HostInput::HoldLog`.
    HoldLog { keep_after: Option<Decree> },
}

/// A learned checkpoint on its way in.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Install {
    Idle,
    /// The reset record of `decree` is being logged.
    LoggingReset { db: String, decree: Decree },
    /// The fetched database is being opened and made current.
    Activating { db: String, decree: Decree },
}

pub struct HostedReplica<C: Carrier> {
    core: Replica,
    /// Unique per process, so checkpoint ids of an earlier process are never reused.
    incarnation: u64,
    checkpoints_per_partition_max: usize,
    checkpoint_hold_ms: u64,
    next_token: RequestId,
    writes: BTreeMap<RequestId, C::Write>,
    prepares: BTreeMap<RequestId, C::Prepare>,
    learns: BTreeMap<RequestId, C::Learn>,
    /// Reads of this turn, answered at its end.
    reads: Vec<C::Read>,
    /// A `Configure` was stepped this turn.
    configured: bool,
    /// The configuration the host gave last, while the core holds exactly it.
    given: Option<PartitionConfig>,
    steps: usize,
    /// Mutations of this turn's `AppendLog`s, merged.
    appends: Vec<Arc<Mutation>>,
    actions: Vec<ReplicaAction<C>>,
    read_gate_open: bool,
    /// The log cache share last given to the core (None: the one it was opened with).
    log_cache_share: Option<usize>,
    install: Install,
    /// Events that arrived while a checkpoint was being installed, in order.
    deferred: VecDeque<ReplicaEvent<C>>,
    retention: CheckpointRetention,
    checkpoint_seq: u64,
    /// Checkpoints being made, with the learn token of the core that asked.
    making: BTreeMap<String, RequestId>,
    dups: Duplications,
    /// When the replica took its last tick, and how often it needs one at least
    /// (`next_tick_ms`).
    last_tick_ms: Option<u64>,
    group_check_interval_ms: u64,
}

impl<C: Carrier> HostedReplica<C> {
    pub fn new(core: Replica, incarnation: u64, options: &HostOptions) -> Self {
        HostedReplica {
            core,
            incarnation,
            checkpoints_per_partition_max: options.checkpoints_per_partition_max,
            checkpoint_hold_ms: options.checkpoint_hold_ms,
            next_token: 0,
            writes: BTreeMap::new(),
            prepares: BTreeMap::new(),
            learns: BTreeMap::new(),
            reads: Vec::new(),
            configured: false,
            given: None,
            steps: 0,
            appends: Vec::new(),
            actions: Vec::new(),
            read_gate_open: false,
            log_cache_share: None,
            install: Install::Idle,
            deferred: VecDeque::new(),
            retention: CheckpointRetention::default(),
            checkpoint_seq: 0,
            making: BTreeMap::new(),
            dups: Duplications::new(tandem_dup_core::DuplicatorOptions {
                cluster_id: options.replica.cluster_id,
                max_clock_offset_us: options.replica.max_clock_offset_ms * 1000,
                ..options.duplicator.clone()
            }),
            last_tick_ms: None,
            group_check_interval_ms: options.replica.group_check_interval_ms,
        }
    }

    /// The earliest time this replica wants its next tick (the runtime skips ticks before it).
    /// A learner, a replica installing a checkpoint or running a duplicator takes every tick
    /// (learning, shipping); a primary when its core's next timer is due (`next_timer_ms`:
    /// prepare retries and timeouts, commit points, group checks); any replica at least once per
    /// group check interval, for what the host does then (checkpoint retention, the log cache
    /// share). On a server of a thousand idle replicas that is one wake-up per replica per
    /// interval instead of ten (issue 15).
    pub fn next_tick_ms(&self) -> u64 {
        let every_tick = self.install != Install::Idle || self.dups.is_running();
        match self.last_tick_ms {
            Some(at) if !every_tick => self.core.next_timer_ms().min(at.saturating_add(self.group_check_interval_ms)),
            _ => 0,
        }
    }

    pub fn duplications(&self) -> &Duplications {
        &self.dups
    }

    pub fn core(&self) -> &Replica {
        &self.core
    }

    pub fn gpid(&self) -> Gpid {
        self.core.gpid()
    }

    pub fn state(&self) -> ReplicaState {
        self.core.state()
    }

    /// Whether reads may skip the queue now (the lease apart): as of the end of the last turn.
    pub fn read_gate_open(&self) -> bool {
        self.read_gate_open
    }

    /// The turn has taken `STEPS_PER_TURN_MAX` events: run its actions before taking more.
    pub fn turn_full(&self) -> bool {
        self.steps >= STEPS_PER_TURN_MAX
    }

    pub fn checkpoints(&self) -> &CheckpointRetention {
        &self.retention
    }

    /// Takes one event into the current turn.
    pub fn step(&mut self, ctx: &Ctx, event: ReplicaEvent<C>) {
        self.steps += 1;
        if self.install != Install::Idle {
            match event {
                ReplicaEvent::ResetLogged | ReplicaEvent::CheckpointActivated { .. } | ReplicaEvent::LogFailed { .. } => {}
                other => {
                    self.deferred.push_back(other);
                    return;
                }
            }
        }
        self.handle(ctx, event);
    }

    fn token(&mut self) -> RequestId {
        self.next_token += 1;
        self.next_token
    }

    fn core_step(&mut self, ctx: &Ctx, input: Input) {
        self.core.step(ctx, input);
        for action in self.core.take_actions() {
            self.translate(action);
        }
    }

    fn handle(&mut self, ctx: &Ctx, event: ReplicaEvent<C>) {
        match event {
            ReplicaEvent::Tick { log_cache_bytes_max } => {
                self.last_tick_ms = Some(ctx.now_ms);
                if self.log_cache_share != Some(log_cache_bytes_max) {
                    self.core.set_log_cache_bytes_max(log_cache_bytes_max);
                    self.log_cache_share = Some(log_cache_bytes_max);
                }
                for id in self.retention.evict(ctx.now_ms, self.checkpoints_per_partition_max) {
                    self.actions.push(ReplicaAction::DeleteCheckpoint { id });
                }
                self.core_step(ctx, Input::Tick);
                self.dups.tick(dup_now(ctx));
            }
            ReplicaEvent::Duplications { configs } => self.dups.configure(dup_now(ctx), configs),
            ReplicaEvent::Dup { dup_id, input } => self.dups.step(dup_now(ctx), dup_id, input),
            ReplicaEvent::Configure { config } => {
                self.configured = true;
                self.given = Some(config.clone());
                self.core_step(ctx, Input::ConfigUpdate { config });
            }
            ReplicaEvent::Write { request, reply } => {
                let request_id = self.token();
                self.writes.insert(request_id, reply);
                self.core_step(ctx, Input::ClientWrite { request_id, request });
            }
            ReplicaEvent::Prepare { from, msg, reply } => {
                let token = self.token();
                self.prepares.insert(token, reply);
                self.core_step(ctx, Input::Prepare { token, from, msg });
            }
            ReplicaEvent::Learn { request, reply } => {
                let token = self.token();
                self.learns.insert(token, reply);
                self.core_step(ctx, Input::LearnRequest { token, request });
            }
            ReplicaEvent::Read { reply } => self.reads.push(reply),
            ReplicaEvent::LogAppended { ids } => {
                for (ballot, decree) in ids {
                    self.core_step(ctx, Input::LogAppended { ballot, decree });
                }
            }
            ReplicaEvent::LogFailed { error } => {
                if let Install::LoggingReset { db, .. } | Install::Activating { db, .. } = std::mem::replace(&mut self.install, Install::Idle) {
                    self.actions.push(ReplicaAction::DeleteDatabase { db });
                    self.core_step(ctx, Input::CheckpointFailed { error: format!("mutation log failed: {error}") });
                }
                self.core_step(ctx, Input::LogFailed { error });
                self.release_deferred(ctx);
            }
            ReplicaEvent::PrepareReply { from, reply } => self.core_step(ctx, Input::PrepareReply { from, reply }),
            ReplicaEvent::PrepareFailed { to, refused } => self.core_step(ctx, Input::PrepareFailed { to, refused }),
            ReplicaEvent::LearnReply { reply } => self.core_step(ctx, Input::LearnReply { reply }),
            ReplicaEvent::ProposalReply { result } => self.core_step(ctx, Input::ProposalReply { result }),
            ReplicaEvent::CheckpointMade { id, result } => {
                let Some(token) = self.making.remove(&id) else { return };
                let result = match result {
                    Ok(decree) => {
                        let deleted = self.retention.on_made(id.clone(), decree, ctx.now_ms, self.checkpoint_hold_ms, self.checkpoints_per_partition_max);
                        for old in deleted {
                            self.actions.push(ReplicaAction::DeleteCheckpoint { id: old });
                        }
                        Ok((id, decree))
                    }
                    Err(e) => Err(e),
                };
                self.core_step(ctx, Input::CheckpointReady { token, result });
            }
            ReplicaEvent::CheckpointRead { id } => {
                self.retention.on_read(&id, ctx.now_ms, self.checkpoint_hold_ms);
            }
            ReplicaEvent::CheckpointFetched { result } => match result {
                Ok((db, decree)) if self.core.status() == PartitionStatus::Learner => {
                    // Log the reset before anything else of this partition: from here until the
                    // engine is switched, nothing reaches the core.
                    self.flush_appends();
                    self.actions.push(ReplicaAction::AppendReset { decree });
                    self.install = Install::LoggingReset { db, decree };
                }
                Ok((db, _)) => {
                    // No longer a learner (the configuration moved on while fetching).
                    self.actions.push(ReplicaAction::DeleteDatabase { db });
                    self.core_step(ctx, Input::CheckpointFailed { error: "no longer a learner".into() });
                }
                Err(error) => self.core_step(ctx, Input::CheckpointFailed { error }),
            },
            ReplicaEvent::ResetLogged => {
                if let Install::LoggingReset { db, decree } = &self.install {
                    let (db, decree) = (db.clone(), *decree);
                    self.actions.push(ReplicaAction::ActivateCheckpoint { db: db.clone(), decree });
                    self.install = Install::Activating { db, decree };
                }
            }
            ReplicaEvent::CheckpointActivated { result } => {
                let Install::Activating { db, decree } = &self.install else { return };
                let (db, decree) = (db.clone(), *decree);
                self.install = Install::Idle;
                match result {
                    Ok(engine) => {
                        assert_eq!(engine.last_applied_decree(), decree, "{}: the runtime checks the activated decree", self.gpid());
                        // The gate may still hold the old engine: close it before the switch.
                        if self.read_gate_open {
                            self.read_gate_open = false;
                            self.actions.push(ReplicaAction::SetReadGate { open: false });
                        }
                        self.core_step(ctx, Input::CheckpointInstalled { engine });
                        self.actions.push(ReplicaAction::DeleteDatabasesExcept { keep: db });
                    }
                    Err(error) => {
                        self.actions.push(ReplicaAction::DeleteDatabase { db });
                        self.core_step(ctx, Input::CheckpointFailed { error });
                    }
                }
                self.release_deferred(ctx);
            }
        }
    }

    /// Steps the events held back while a checkpoint was installed (unless another install
    /// starts among them).
    fn release_deferred(&mut self, ctx: &Ctx) {
        while self.install == Install::Idle {
            let Some(event) = self.deferred.pop_front() else { break };
            self.handle(ctx, event);
        }
    }

    /// Turns a core action into this layer's: tokens become carriers, appends are merged.
    fn translate(&mut self, action: Action) {
        let action = match action {
            Action::AppendLog { mutations } => {
                self.appends.extend(mutations);
                return;
            }
            Action::SendPrepare { to, msg } => ReplicaAction::SendPrepare { to, msg },
            Action::ReplyPrepare { token, reply } => match self.prepares.remove(&token) {
                Some(to) => ReplicaAction::ReplyPrepare { to, reply },
                None => return,
            },
            Action::ReplyClient { request_id, result } => match self.writes.remove(&request_id) {
                Some(to) => ReplicaAction::ReplyWrite { to, result },
                None => return,
            },
            Action::ProposeConfig { proposal } => ReplicaAction::ProposeConfig { proposal },
            Action::SendLearnRequest { to, request } => ReplicaAction::SendLearnRequest { to, request },
            Action::ReplyLearn { token, reply } => match self.learns.remove(&token) {
                Some(to) => ReplicaAction::ReplyLearn { to, reply },
                None => return,
            },
            Action::ServeCheckpoint { token } => {
                self.checkpoint_seq += 1;
                let g = self.gpid();
                let id = format!("{}-{}.{}-{}", self.incarnation, g.table_id, g.partition, self.checkpoint_seq);
                self.making.insert(id.clone(), token);
                ReplicaAction::MakeCheckpoint { id }
            }
            Action::FetchCheckpoint { from, checkpoint_id, decree } => ReplicaAction::FetchCheckpoint { from, checkpoint_id, decree },
            Action::Failed { error } => ReplicaAction::Failed { error },
        };
        self.actions.push(action);
    }

    fn flush_appends(&mut self) {
        if !self.appends.is_empty() {
            let mutations = std::mem::take(&mut self.appends);
            self.actions.push(ReplicaAction::AppendLog { mutations });
        }
    }

    /// Ends the turn: answers its reads and its configuration, sends its log append, refreshes
    /// the read gate; returns every action of the turn in order.
    pub fn end_turn(&mut self, ctx: &Ctx) -> Vec<ReplicaAction<C>> {
        for to in std::mem::take(&mut self.reads) {
            let result = self.core.check_read(ctx);
            self.actions.push(ReplicaAction::ServeRead { to, result });
        }
        self.flush_appends();
        let ready = self.install == Install::Idle && self.core.read_ready().is_ok();
        if ready != self.read_gate_open {
            self.read_gate_open = ready;
            self.actions.push(ReplicaAction::SetReadGate { open: ready });
        }
        if self.install == Install::Idle {
            let now = dup_now(ctx);
            for (dup_id, work) in self.dups.end_turn(now, &self.core) {
                self.actions.push(ReplicaAction::Dup { dup_id, work });
            }
            if let Some(keep_after) = self.dups.take_hold_change(now, self.core.last_committed()) {
                self.actions.push(ReplicaAction::HoldLog { keep_after });
            }
        }
        // Last: the host may extend the lease as soon as it hears this, so a replica the
        // configuration demoted must have closed its read gate before.
        if std::mem::take(&mut self.configured) {
            self.actions.push(ReplicaAction::Configured { status: self.core.status() });
        }
        if self.given.as_ref().is_some_and(|given| given != self.core.config()) {
            self.given = None;
            self.actions.push(ReplicaAction::ConfigMoved);
        }
        self.steps = 0;
        std::mem::take(&mut self.actions)
    }
}

fn dup_now(ctx: &Ctx) -> tandem_dup_core::Now {
    tandem_dup_core::Now { now_ms: ctx.now_ms, wall_us: ctx.wall_us }
}

/// Carriers print as `_`: a runtime's are closures and channels.
impl<C: Carrier> std::fmt::Debug for ReplicaAction<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplicaAction::AppendLog { mutations } => {
                let decrees: Vec<(Ballot, Decree)> = mutations.iter().map(|m| (m.ballot, m.decree)).collect();
                write!(f, "AppendLog {decrees:?}")
            }
            ReplicaAction::AppendReset { decree } => write!(f, "AppendReset {decree}"),
            ReplicaAction::SendPrepare { to, msg } => {
                let first = msg.mutations.first().map_or(0, |m| m.decree);
                let last = msg.mutations.last().map_or(0, |m| m.decree);
                write!(f, "SendPrepare {to} b{} [{first}..={last}] committed {}", msg.config.ballot, msg.last_committed)
            }
            ReplicaAction::ReplyPrepare { reply, .. } => write!(f, "ReplyPrepare {reply:?}"),
            ReplicaAction::ReplyWrite { result, .. } => write!(f, "ReplyWrite {result:?}"),
            ReplicaAction::ReplyLearn { reply, .. } => write!(f, "ReplyLearn {reply:?}"),
            ReplicaAction::ServeRead { result, .. } => write!(f, "ServeRead {result:?}"),
            ReplicaAction::ProposeConfig { proposal } => write!(f, "ProposeConfig {proposal:?}"),
            ReplicaAction::SendLearnRequest { to, request } => write!(f, "SendLearnRequest {to} {request:?}"),
            ReplicaAction::MakeCheckpoint { id } => write!(f, "MakeCheckpoint {id}"),
            ReplicaAction::DeleteCheckpoint { id } => write!(f, "DeleteCheckpoint {id}"),
            ReplicaAction::FetchCheckpoint { from, checkpoint_id, decree } => write!(f, "FetchCheckpoint {from} {checkpoint_id} {decree}"),
            ReplicaAction::ActivateCheckpoint { db, decree } => write!(f, "ActivateCheckpoint {db} {decree}"),
            ReplicaAction::DeleteDatabasesExcept { keep } => write!(f, "DeleteDatabasesExcept {keep}"),
            ReplicaAction::DeleteDatabase { db } => write!(f, "DeleteDatabase {db}"),
            ReplicaAction::SetReadGate { open } => write!(f, "SetReadGate {open}"),
            ReplicaAction::Configured { status } => write!(f, "Configured {status:?}"),
            ReplicaAction::ConfigMoved => write!(f, "ConfigMoved"),
            ReplicaAction::Failed { error } => write!(f, "Failed {error}"),
            ReplicaAction::Dup { dup_id, work: DupWork::ReadLog { read, from, to, .. } } => {
                write!(f, "Dup {dup_id} ReadLog #{read} {from}..={to}")
            }
            ReplicaAction::Dup { dup_id, work: DupWork::Ship { remote_site, batch, records, .. } } => {
                write!(f, "Dup {dup_id} Ship #{batch} to {remote_site}: {} records", records.len())
            }
            ReplicaAction::HoldLog { keep_after } => write!(f, "HoldLog {keep_after:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_core::replica::{DupWatermark, LearnReply};
    use tandem_core::storage::MemEngine;

    /// Carriers are numbers the test can follow.
    struct T;
    impl Carrier for T {
        type Write = u32;
        type Prepare = u32;
        type Learn = u32;
        type Read = u32;
    }

    fn ctx(now_ms: u64) -> Ctx {
        Ctx { now_ms, wall_us: 1_700_000_000_000_000 + now_ms * 1_000, lease_until_ms: now_ms + 5_000, disk_low: None }
    }

    fn gpid() -> Gpid {
        Gpid::new(1, 0)
    }

    fn config(ballot: u64, primary: &str, secondaries: &[&str], learners: &[&str]) -> PartitionConfig {
        PartitionConfig {
            gpid: gpid(),
            ballot,
            primary: Some(primary.into()),
            secondaries: secondaries.iter().map(|s| s.to_string()).collect(),
            learners: learners.iter().map(|s| s.to_string()).collect(),
            last_drops: vec![],
        }
    }

    fn hosted(options: &HostOptions) -> HostedReplica<T> {
        let core = Replica::open(gpid(), "a".into(), options.replica.clone(), Box::new(MemEngine::default()), vec![]);
        HostedReplica::new(core, 7, options)
    }

    fn set(key: &str) -> WriteRequest {
        WriteRequest::Set { hash_key: key.as_bytes().to_vec(), sort_key: vec![], value: b"v".to_vec(), ttl_s: 0 }
    }

    fn debug(actions: &[ReplicaAction<T>]) -> Vec<String> {
        actions.iter().map(|a| format!("{a:?}")).collect()
    }

    #[test]
    fn a_turn_merges_its_appends_and_answers_reads_with_what_it_applied() {
        let mut r = hosted(&HostOptions::default());
        r.step(&ctx(0), ReplicaEvent::Configure { config: config(1, "a", &[], &[]) });
        assert_eq!(debug(&r.end_turn(&ctx(0))), vec!["SetReadGate true", "Configured Primary"]);
        r.step(&ctx(1), ReplicaEvent::Write { request: set("x"), reply: 10 });
        r.step(&ctx(1), ReplicaEvent::Write { request: set("y"), reply: 11 });
        r.step(&ctx(1), ReplicaEvent::Read { reply: 12 });
        assert_eq!(debug(&r.end_turn(&ctx(1))), vec!["ServeRead Ok(())", "AppendLog [(1, 1), (1, 2)]"]);
        r.step(&ctx(2), ReplicaEvent::LogAppended { ids: vec![(1, 1), (1, 2)] });
        let actions = r.end_turn(&ctx(2));
        assert!(matches!(actions[..], [ReplicaAction::ReplyWrite { to: 10, result: Ok(_) }, ReplicaAction::ReplyWrite { to: 11, result: Ok(_) }]));
        assert_eq!(r.core().last_committed(), 2);
    }

    /// The lease follows `Configured` at once: a primary the configuration demotes must have
    /// closed its read gate before, or a read through the gate could be served under the
    /// renewed lease while the new primary commits.
    #[test]
    fn a_demoted_primary_closes_its_read_gate_before_it_reports_its_configuration() {
        let mut r = hosted(&HostOptions::default());
        r.step(&ctx(0), ReplicaEvent::Configure { config: config(1, "a", &[], &[]) });
        r.end_turn(&ctx(0));
        assert!(r.read_gate_open());
        r.step(&ctx(1), ReplicaEvent::Configure { config: config(2, "b", &["a"], &[]) });
        assert_eq!(debug(&r.end_turn(&ctx(1))), vec!["SetReadGate false", "Configured Secondary"]);
    }

    #[test]
    fn only_learners_and_primaries_with_a_timer_due_take_every_tick() {
        let mut r = hosted(&HostOptions::default());
        assert_eq!(r.next_tick_ms(), 0, "never ticked: at once");
        r.step(&ctx(0), ReplicaEvent::Configure { config: config(1, "b", &["a"], &[]) });
        r.step(&ctx(100), ReplicaEvent::Tick { log_cache_bytes_max: 1 << 20 });
        r.end_turn(&ctx(100));
        assert_eq!(r.core().status(), PartitionStatus::Secondary);
        assert_eq!(r.next_tick_ms(), 1_100, "a secondary: a group check interval after its last tick");
        r.step(&ctx(200), ReplicaEvent::Configure { config: config(2, "a", &["b"], &[]) });
        r.end_turn(&ctx(200));
        assert_eq!(r.core().status(), PartitionStatus::Primary);
        assert_eq!(r.next_tick_ms(), 1_000, "a new primary with nothing to send: its core's first group check");
        let mut alone = hosted(&HostOptions::default());
        alone.step(&ctx(0), ReplicaEvent::Configure { config: config(1, "a", &[], &[]) });
        alone.step(&ctx(100), ReplicaEvent::Tick { log_cache_bytes_max: 1 << 20 });
        alone.end_turn(&ctx(100));
        assert_eq!(alone.core().status(), PartitionStatus::Primary);
        assert_eq!(alone.next_tick_ms(), 1_100, "a primary with no timer of its core: a group check interval after its last tick");
        r.step(&ctx(300), ReplicaEvent::Configure { config: config(3, "b", &[], &["a"]) });
        r.step(&ctx(300), ReplicaEvent::Tick { log_cache_bytes_max: 1 << 20 });
        r.end_turn(&ctx(300));
        assert_eq!(r.core().status(), PartitionStatus::Learner);
        assert_eq!(r.next_tick_ms(), 0, "a learner: every tick");
    }

    /// The host gives a configuration again only when the core no longer holds the one it gave
    /// last: not taken (the core holds a newer one), or moved since by another way.
    #[test]
    fn a_configuration_not_taken_or_moved_since_is_reported_once() {
        let mut r = hosted(&HostOptions::default());
        r.step(&ctx(0), ReplicaEvent::Configure { config: config(2, "a", &["b"], &["c"]) });
        assert_eq!(debug(&r.end_turn(&ctx(0))), vec!["SetReadGate true", "Configured Primary"]);
        r.step(&ctx(1), ReplicaEvent::Configure { config: config(1, "a", &["b"], &[]) });
        assert_eq!(debug(&r.end_turn(&ctx(1))), vec!["Configured Primary", "ConfigMoved"], "an older one is not taken");
        r.step(&ctx(2), ReplicaEvent::Configure { config: config(2, "a", &["b"], &["c"]) });
        assert_eq!(debug(&r.end_turn(&ctx(2))), vec!["Configured Primary"], "the one it holds");
        // A proposal's answer (here a late one) takes the core to another configuration of the
        // same ballot, by no Configure.
        r.step(&ctx(3), ReplicaEvent::ProposalReply { result: Ok(config(2, "a", &["b"], &[])) });
        assert_eq!(debug(&r.end_turn(&ctx(3))), vec!["ConfigMoved"]);
        r.step(&ctx(4), ReplicaEvent::ProposalReply { result: Ok(config(2, "a", &["b"], &["c"])) });
        assert_eq!(debug(&r.end_turn(&ctx(4))), Vec::<String>::new(), "said once, until the next Configure");
    }

    #[test]
    fn a_full_turn_says_so() {
        let mut r = hosted(&HostOptions::default());
        for i in 0..STEPS_PER_TURN_MAX {
            assert!(!r.turn_full());
            r.step(&ctx(0), ReplicaEvent::Tick { log_cache_bytes_max: 1 << 20 + i % 2 });
        }
        assert!(r.turn_full());
        r.end_turn(&ctx(0));
        assert!(!r.turn_full());
    }

    #[test]
    fn a_learned_checkpoint_is_logged_then_activated_and_nothing_reaches_the_core_in_between() {
        let mut r = hosted(&HostOptions::default());
        r.step(&ctx(0), ReplicaEvent::Configure { config: config(3, "b", &[], &["a"]) });
        assert_eq!(
            debug(&r.end_turn(&ctx(0))),
            vec!["SendLearnRequest b LearnRequest { ballot: 3, learner: \"a\", last_committed: 0 }", "Configured Learner"]
        );
        let reply = LearnReply::Checkpoint { checkpoint_id: "cp".into(), decree: 5 };
        r.step(&ctx(1), ReplicaEvent::LearnReply { reply: Some(reply) });
        assert_eq!(debug(&r.end_turn(&ctx(1))), vec!["FetchCheckpoint b cp 5"]);
        r.step(&ctx(2), ReplicaEvent::CheckpointFetched { result: Ok(("db-cp".into(), 5)) });
        // A prepare arriving now waits: it would be logged before the switch.
        let m = Arc::new(Mutation { ballot: 3, decree: 6, timestamp_us: 1, ops: vec![] });
        let msg = PrepareMsg { config: config(3, "b", &[], &["a"]), mutations: vec![m], last_committed: 5 };
        r.step(&ctx(2), ReplicaEvent::Prepare { from: "b".into(), msg, reply: 20 });
        assert_eq!(debug(&r.end_turn(&ctx(2))), vec!["AppendReset 5"]);
        r.step(&ctx(3), ReplicaEvent::ResetLogged);
        assert_eq!(debug(&r.end_turn(&ctx(3))), vec!["ActivateCheckpoint db-cp 5"]);
        let engine = MemEngine::from_parts(Default::default(), 5, 0);
        r.step(&ctx(4), ReplicaEvent::CheckpointActivated { result: Ok(Box::new(engine)) });
        // The core learns again from its new commit point, then takes the held prepare (which it
        // refuses until the primary streams to it again): nothing was logged between the reset
        // and the switch.
        assert_eq!(
            debug(&r.end_turn(&ctx(4))),
            vec![
                "SendLearnRequest b LearnRequest { ballot: 3, learner: \"a\", last_committed: 5 }",
                "DeleteDatabasesExcept db-cp",
                "ReplyPrepare PrepareReply { ballot: 3, outcome: NotMember }"
            ]
        );
        assert_eq!(r.core().last_committed(), 5);
    }

    #[test]
    fn a_failed_activation_deletes_the_fetched_database() {
        let mut r = hosted(&HostOptions::default());
        r.step(&ctx(0), ReplicaEvent::Configure { config: config(3, "b", &[], &["a"]) });
        r.step(&ctx(0), ReplicaEvent::LearnReply { reply: Some(LearnReply::Checkpoint { checkpoint_id: "cp".into(), decree: 5 }) });
        r.step(&ctx(0), ReplicaEvent::CheckpointFetched { result: Ok(("db-cp".into(), 5)) });
        r.step(&ctx(0), ReplicaEvent::ResetLogged);
        r.end_turn(&ctx(0));
        r.step(&ctx(1), ReplicaEvent::CheckpointActivated { result: Err("corrupt".into()) });
        assert_eq!(debug(&r.end_turn(&ctx(1))), vec!["DeleteDatabase db-cp"]);
        assert_eq!(r.core().last_committed(), 0);
    }

    #[test]
    fn checkpoints_for_learners_are_named_kept_and_held() {
        let options = HostOptions { checkpoints_per_partition_max: 1, checkpoint_hold_ms: 100, ..HostOptions::default() };
        let mut r = hosted(&options);
        r.step(&ctx(0), ReplicaEvent::Configure { config: config(2, "a", &[], &[]) });
        r.step(&ctx(1), ReplicaEvent::Write { request: set("x"), reply: 1 });
        r.end_turn(&ctx(1));
        r.step(&ctx(2), ReplicaEvent::LogAppended { ids: vec![(2, 1)] });
        // A log cache of nothing: a learner that arrives now is too far behind to learn by log.
        r.step(&ctx(2), ReplicaEvent::Tick { log_cache_bytes_max: 0 });
        r.step(&ctx(2), ReplicaEvent::Configure { config: config(2, "a", &[], &["l"]) });
        r.end_turn(&ctx(2));
        let learn = |r: &mut HostedReplica<T>, now, token| {
            let request = LearnRequest { ballot: 2, learner: "l".into(), last_committed: 0 };
            r.step(&ctx(now), ReplicaEvent::Learn { request, reply: token });
            debug(&r.end_turn(&ctx(now)))
        };
        assert_eq!(learn(&mut r, 3, 30), vec!["MakeCheckpoint 7-1.0-1"]);
        r.step(&ctx(4), ReplicaEvent::CheckpointMade { id: "7-1.0-1".into(), result: Ok(1) });
        assert_eq!(debug(&r.end_turn(&ctx(4))), vec!["ReplyLearn Checkpoint { checkpoint_id: \"7-1.0-1\", decree: 1 }"]);
        assert_eq!(learn(&mut r, 50, 31), vec!["MakeCheckpoint 7-1.0-2"]);
        // The first one is still being fetched: it survives the second.
        r.step(&ctx(90), ReplicaEvent::CheckpointRead { id: "7-1.0-1".into() });
        r.step(&ctx(95), ReplicaEvent::CheckpointMade { id: "7-1.0-2".into(), result: Ok(1) });
        assert_eq!(debug(&r.end_turn(&ctx(95))), vec!["ReplyLearn Checkpoint { checkpoint_id: \"7-1.0-2\", decree: 1 }"]);
        r.step(&ctx(189), ReplicaEvent::Tick { log_cache_bytes_max: 0 });
        assert!(!debug(&r.end_turn(&ctx(189))).iter().any(|a| a.starts_with("DeleteCheckpoint")));
        r.step(&ctx(190), ReplicaEvent::Tick { log_cache_bytes_max: 0 });
        assert!(debug(&r.end_turn(&ctx(190))).contains(&"DeleteCheckpoint 7-1.0-1".to_string()));
    }

    fn dup(confirmed: Option<Decree>) -> DupConfig {
        DupConfig {
            dup_id: 1,
            table: "t".into(),
            remote_site: "b".into(),
            paused: false,
            fail_mode: tandem_dup_core::FailMode::Slow,
            sync_existing: false,
            confirmed,
            watermark_us: 0,
            heartbeats: false,
        }
    }

    /// Writes `key` on a single-replica primary and commits it; returns the commit turn's actions.
    fn commit_one(r: &mut HostedReplica<T>, now: u64, key: &str, decree: Decree) -> Vec<String> {
        r.step(&ctx(now), ReplicaEvent::Write { request: set(key), reply: decree as u32 });
        r.end_turn(&ctx(now));
        r.step(&ctx(now), ReplicaEvent::LogAppended { ids: vec![(1, decree)] });
        debug(&r.end_turn(&ctx(now)))
    }

    #[test]
    fn a_primary_ships_what_commits_and_the_log_is_held_until_the_remote_applied_it() {
        let mut r = hosted(&HostOptions::default());
        r.step(&ctx(0), ReplicaEvent::Configure { config: config(1, "a", &[], &[]) });
        r.step(&ctx(0), ReplicaEvent::Duplications { configs: vec![dup(Some(0))] });
        assert_eq!(debug(&r.end_turn(&ctx(0))), vec!["SetReadGate true", "HoldLog Some(0)", "Configured Primary"]);
        // Read from the in-memory log at once, in the turn that committed it.
        assert_eq!(commit_one(&mut r, 1, "x", 1), vec!["ReplyWrite Ok(Done)", "Dup 1 Ship #4294967296 to b: 1 records"]);
        let progress = r.duplications().progress(dup_now(&ctx(1)));
        assert_eq!((progress[0].1.confirmed, progress[0].1.lag_decrees), (0, 1));
        // A late answer meant for an earlier duplicator of this duplication is not this one's.
        r.step(&ctx(2), ReplicaEvent::Dup { dup_id: 1, input: tandem_dup_core::Input::Shipped { batch: 1 } });
        assert_eq!(r.duplications().progress(dup_now(&ctx(2)))[0].1.confirmed, 0);
        r.step(&ctx(2), ReplicaEvent::Dup { dup_id: 1, input: tandem_dup_core::Input::Shipped { batch: 1 << 32 } });
        // Confirmed, but the log is held from what the meta persisted until it says more.
        assert_eq!(debug(&r.end_turn(&ctx(2))), Vec::<String>::new());
        assert_eq!(r.duplications().progress(dup_now(&ctx(2)))[0].1.confirmed, 1);
        r.step(&ctx(2), ReplicaEvent::Duplications { configs: vec![dup(Some(1))] });
        assert_eq!(debug(&r.end_turn(&ctx(2))), vec!["HoldLog Some(1)"]);
        // Removed by the meta: nothing is held any more.
        r.step(&ctx(3), ReplicaEvent::Duplications { configs: vec![] });
        assert_eq!(debug(&r.end_turn(&ctx(3))), vec!["HoldLog None"]);
    }

    #[test]
    fn an_idle_heartbeat_primary_sends_the_tables_watermark_and_reports_its_own() {
        let mut r = hosted(&HostOptions::default());
        r.step(&ctx(0), ReplicaEvent::Configure { config: config(1, "a", &[], &[]) });
        let beating = |watermark_us| DupConfig { watermark_us, heartbeats: true, ..dup(Some(0)) };
        r.step(&ctx(0), ReplicaEvent::Duplications { configs: vec![beating(77)] });
        let actions = r.end_turn(&ctx(0));
        let ships: Vec<_> = actions
            .iter()
            .filter_map(|a| match a {
                ReplicaAction::Dup { work: DupWork::Ship { records, watermark, .. }, .. } => Some((records.len(), *watermark)),
                _ => None,
            })
            .collect();
        assert_eq!(ships, vec![(0, Some(DupWatermark { origin: 1, watermark_us: 77 }))]);
        // Caught up, nothing prepared: its own watermark is the clock less twice the offset.
        let progress = r.duplications().progress(dup_now(&ctx(1)));
        assert_eq!(progress[0].1.watermark_us, ctx(1).wall_us - 1_000_000);
        // A write prepared but not committed holds it at the write's timestamp.
        r.step(&ctx(2), ReplicaEvent::Write { request: set("k"), reply: 9 });
        r.end_turn(&ctx(2));
        let w = r.duplications().progress(dup_now(&ctx(3_000)))[0].1.watermark_us;
        assert!(w <= ctx(2).wall_us && w > ctx(2).wall_us - 1_000, "{w}");
    }

    #[test]
    fn a_secondary_ships_nothing_and_holds_the_log_after_the_persisted_confirmed_decree() {
        let mut r = hosted(&HostOptions::default());
        r.step(&ctx(0), ReplicaEvent::Configure { config: config(1, "b", &["a"], &[]) });
        r.step(&ctx(0), ReplicaEvent::Duplications { configs: vec![dup(Some(5))] });
        assert_eq!(debug(&r.end_turn(&ctx(0))), vec!["HoldLog Some(5)", "Configured Secondary"]);
        // A duplication never started holds nothing: its first primary starts from its own
        // committed decree.
        r.step(&ctx(1), ReplicaEvent::Duplications { configs: vec![dup(None)] });
        assert_eq!(debug(&r.end_turn(&ctx(1))), vec!["HoldLog None"]);
    }

    #[test]
    fn what_the_log_cache_lost_is_read_from_disk_and_a_demoted_primary_stops_shipping() {
        let mut r = hosted(&HostOptions::default());
        r.step(&ctx(0), ReplicaEvent::Configure { config: config(1, "a", &[], &[]) });
        r.end_turn(&ctx(0));
        commit_one(&mut r, 1, "x", 1);
        commit_one(&mut r, 2, "y", 2);
        r.step(&ctx(3), ReplicaEvent::Tick { log_cache_bytes_max: 0 });
        r.step(&ctx(3), ReplicaEvent::Duplications { configs: vec![dup(Some(0))] });
        assert_eq!(debug(&r.end_turn(&ctx(3))), vec!["Dup 1 ReadLog #4294967296 1..=2", "HoldLog Some(0)"]);
        r.step(&ctx(4), ReplicaEvent::Configure { config: config(2, "b", &["a"], &[]) });
        assert_eq!(debug(&r.end_turn(&ctx(4))), vec!["SetReadGate false", "Configured Secondary"]);
        assert!(r.duplications().progress(dup_now(&ctx(4))).is_empty());
        // The disk read's late answer finds no duplicator: ignored.
        r.step(&ctx(5), ReplicaEvent::Dup { dup_id: 1, input: tandem_dup_core::Input::LogGap { read: 1 } });
        assert_eq!(debug(&r.end_turn(&ctx(5))), Vec::<String>::new());
    }
}
