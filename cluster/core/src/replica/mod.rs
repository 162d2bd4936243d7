//! The PacificA replica state machine of one partition on one replica server.
//!
//! ```text
//!  inputs                                   actions
//!  ClientWrite ──▶ primary: effects, decree ──▶ AppendLog, SendPrepare(to every member)
//!  LogAppended ──▶ own ack ─┐
//!  PrepareReply ─▶ member ack ─┴▶ commit when all members logged ──▶ Apply (engine), ReplyClient
//!  Prepare ──▶ secondary/learner: accept contiguous ──▶ AppendLog, then (on LogAppended) ReplyPrepare
//!  Tick ──▶ group check, prepare timeout ──▶ ProposeConfig(RemoveSecondary) to the meta
//!  ConfigUpdate ──▶ become primary (reconcile) / secondary / learner / inactive
//!  LearnRequest/LearnReply ──▶ stream log from the learner's decree, or ServeCheckpoint/FetchCheckpoint
//! ```
//!
//! The replica owns its storage engine through the `KvEngine` trait (RocksDB in production, a
//! BTreeMap in the simulator) and applies committed mutations to it itself; every other effect
//! (log appends, messages, replies, checkpoints) leaves as an `Action` and comes back, when it
//! completes, as an `Input`.

mod group_check;
mod learn;
pub mod read;
mod reconfigure;
mod two_phase_commit;
pub mod write;

#[cfg(test)]
mod tests;

use crate::error::Error;
use crate::mutation::Mutation;
use crate::storage::KvEngine;
use crate::timetag::HybridClock;
use crate::types::{Ballot, Decree, Gpid, NodeAddr, PartitionConfig, PartitionStatus};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

pub use write::{CheckType, DupRecord, DupWatermark, MutateOp, WriteRequest, WriteResponse};

/// Knobs of the replica protocol. Validated by the server config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaOptions {
    /// A member that has not answered a prepare for this long is removed from the configuration.
    pub prepare_timeout_ms: u64,
    /// An idle primary sends an empty prepare (group check) to each member this often, carrying
    /// its commit point and detecting dead members. A commit point no data prepare carried goes
    /// alone after half of it.
    pub group_check_interval_ms: u64,
    /// Bytes of mutations in one prepare message.
    pub prepare_batch_bytes_max: usize,
    /// Committed mutations kept in memory for catching up members and learners by log; a learner
    /// further behind learns from a checkpoint.
    pub log_cache_bytes_max: usize,
    /// Client writes waiting for their commit; more are refused as busy.
    pub pending_writes_max: usize,
    /// A configuration proposal unanswered for this long is sent again.
    pub proposal_retry_ms: u64,
    /// A learn request unanswered for this long is sent again.
    pub learn_retry_ms: u64,
    /// This site's cluster id, stamped into every timetag.
    pub cluster_id: u8,
    /// Records from the other site stamped further ahead of the local wall clock are refused.
    pub max_clock_offset_ms: u64,
    pub limits: crate::limits::Limits,
}

impl Default for ReplicaOptions {
    fn default() -> Self {
        ReplicaOptions {
            prepare_timeout_ms: 5_000,
            group_check_interval_ms: 1_000,
            prepare_batch_bytes_max: 4 << 20,
            log_cache_bytes_max: 64 << 20,
            pending_writes_max: 10_000,
            proposal_retry_ms: 3_000,
            learn_retry_ms: 3_000,
            cluster_id: 1,
            max_clock_offset_ms: 500,
            limits: crate::limits::Limits::default(),
        }
    }
}

/// What the runtime knows about time when it feeds an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ctx {
    /// Monotonic milliseconds (timeouts).
    pub now_ms: u64,
    /// Wall clock microseconds since the Unix epoch (timetags, TTLs).
    pub wall_us: u64,
    /// Until when (monotonic ms) the meta granted this server's lease; a primary serves only
    /// before it.
    pub lease_until_ms: u64,
    /// Set while the server's disk is below its reserve (`tandem_host::disk`): a primary takes
    /// only writes that delete.
    pub disk_low: Option<DiskLow>,
}

pub use crate::disk::{DiskLow, DiskShort};

impl Ctx {
    pub fn now_s(&self) -> u32 {
        (self.wall_us / 1_000_000) as u32
    }

    pub fn lease_valid(&self) -> bool {
        self.now_ms < self.lease_until_ms
    }
}

/// A batch of contiguous mutations from a primary to a member, with the primary's commit point.
/// An empty batch is a group check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrepareMsg {
    pub config: PartitionConfig,
    pub mutations: Vec<Arc<Mutation>>,
    pub last_committed: Decree,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrepareOutcome {
    /// `prepared`: the member holds, durably and consistent with this ballot's stream, every
    /// decree up to here. Below what was sent means "resend from prepared + 1". `disk_low`: the
    /// member's disk is below its reserve, so its primary takes only deletes until it is not.
    Ok { prepared: Decree, disk_low: Option<DiskLow> },
    /// The member has a newer ballot; the sender is stale.
    StaleBallot { ballot: Ballot },
    /// The member is not in the sender's configuration as secondary or learner.
    NotMember,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrepareReply {
    pub ballot: Ballot,
    pub outcome: PrepareOutcome,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LearnRequest {
    pub ballot: Ballot,
    pub learner: NodeAddr,
    pub last_committed: Decree,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LearnReply {
    /// The primary streams prepares from `start`; wait for them.
    Log { start: Decree },
    /// Fetch checkpoint `checkpoint_id` (state up to `decree`) from the primary and install it.
    Checkpoint { checkpoint_id: String, decree: Decree },
    Refused { reason: String },
}

/// A configuration change a primary asks the meta for (compare-and-set on `ballot`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigProposal {
    RemoveSecondary { ballot: Ballot, node: NodeAddr },
    UpgradeLearner { ballot: Ballot, node: NodeAddr },
}

impl ConfigProposal {
    pub fn ballot(&self) -> Ballot {
        match self {
            ConfigProposal::RemoveSecondary { ballot, .. } | ConfigProposal::UpgradeLearner { ballot, .. } => *ballot,
        }
    }
}

pub type RequestId = u64;

#[derive(Debug)]
pub enum Input {
    /// Timers: group checks, prepare timeouts, learn and proposal retries.
    Tick,
    /// The meta's configuration of this partition (beacon reply, proposal reply).
    ConfigUpdate { config: PartitionConfig },
    ClientWrite { request_id: RequestId, request: WriteRequest },
    /// The log append of this replica's mutation `decree` (ballot `ballot`) is durable.
    LogAppended { ballot: Ballot, decree: Decree },
    /// The log refused an append: the replica can no longer guarantee durability.
    LogFailed { error: String },
    /// A prepare from the primary; answer with `Action::ReplyPrepare { token }`.
    Prepare { token: RequestId, from: NodeAddr, msg: PrepareMsg },
    PrepareReply { from: NodeAddr, reply: PrepareReply },
    /// The prepare RPC to `to` failed (unreachable, timed out). `refused`: the connection to its
    /// server was refused (nothing listens on its port), not merely lost or slow.
    PrepareFailed { to: NodeAddr, refused: bool },
    /// A learner asks to learn; answer with `Action::ReplyLearn { token }`.
    LearnRequest { token: RequestId, request: LearnRequest },
    /// The answer to this learner's learn request (`None`: the RPC failed).
    LearnReply { reply: Option<LearnReply> },
    /// The runtime installed a learned checkpoint (and logged a reset at its decree) into this
    /// engine; continue learning by log.
    CheckpointInstalled { engine: Box<dyn KvEngine> },
    /// Fetching or installing the checkpoint failed.
    CheckpointFailed { error: String },
    /// The checkpoint asked for by `Action::ServeCheckpoint { token }` is ready (or failed).
    CheckpointReady { token: RequestId, result: Result<(String, Decree), String> },
    /// The meta answered a proposal: the configuration now in force, or an error.
    ProposalReply { result: Result<PartitionConfig, String> },
}

#[derive(Debug, PartialEq)]
pub enum Action {
    /// Append these mutations to the mutation log; report `LogAppended` for each once durable.
    /// Must be appended in the order the actions are emitted.
    AppendLog { mutations: Vec<Arc<Mutation>> },
    /// Send to `to`; report the answer as `PrepareReply` or the failure as `PrepareFailed`.
    SendPrepare { to: NodeAddr, msg: PrepareMsg },
    /// Answer the prepare RPC `token`. Emitted only after the accepted mutations are durable.
    ReplyPrepare { token: RequestId, reply: PrepareReply },
    /// Answer client write `request_id`. Success is emitted only after the commit.
    ReplyClient { request_id: RequestId, result: Result<WriteResponse, Error> },
    /// Ask the meta to change the configuration; report the answer as `ProposalReply`.
    ProposeConfig { proposal: ConfigProposal },
    /// Send a learn request to the primary; report the answer as `LearnReply`.
    SendLearnRequest { to: NodeAddr, request: LearnRequest },
    /// Answer learn request `token`.
    ReplyLearn { token: RequestId, reply: LearnReply },
    /// Make a checkpoint of the engine (flushed, at `last_applied_decree`) that learners can
    /// fetch; report `CheckpointReady { token }`.
    ServeCheckpoint { token: RequestId },
    /// Fetch checkpoint `checkpoint_id` from `from`, verify it, log a reset of this partition at
    /// `decree`, open it as the new engine, and report `CheckpointInstalled` (or `CheckpointFailed`).
    FetchCheckpoint { from: NodeAddr, checkpoint_id: String, decree: Decree },
    /// The engine or log failed; the replica stopped serving. The runtime reports it to the meta.
    Failed { error: String },
}

/// A member (secondary, or learner being streamed) as the primary tracks it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct MemberProgress {
    /// Everything up to here is durable at the member (from this primary's stream).
    acked: Decree,
    /// Everything up to here was sent; the next prepare starts after it.
    sent: Decree,
    /// A prepare is in flight (at most one, so the stream stays ordered).
    in_flight: bool,
    /// Since when a reply has been missing; removal after `prepare_timeout_ms`.
    unanswered_since_ms: Option<u64>,
    /// The member's server refused the connection since its last answer: no process listens
    /// there, so it is removed without waiting for the timeout.
    refused: bool,
    last_send_ms: u64,
    /// The commit point last sent, to know when a group check is worth sending.
    committed_sent: Decree,
    learner: bool,
    /// The member's disk is below its reserve, as its last answer said.
    disk_low: Option<DiskLow>,
}

/// Learning progress of a learner.
#[derive(Clone, Debug, PartialEq, Eq)]
enum LearnState {
    Idle,
    Requested { since_ms: u64 },
    /// Receiving the prepare stream from the primary.
    Streaming,
    FetchingCheckpoint,
}

/// A client write waiting for its decree to commit.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PendingWrite {
    request_id: RequestId,
    response: WriteResponse,
}

pub struct Replica {
    gpid: Gpid,
    me: NodeAddr,
    options: ReplicaOptions,
    status: PartitionStatus,
    config: PartitionConfig,
    engine: Box<dyn KvEngine>,
    /// Mutations held in memory: committed ones (for catch-up, trimmed to the cache budget) and
    /// every prepared one above `last_committed`.
    log: BTreeMap<Decree, Arc<Mutation>>,
    log_cache_bytes: usize,
    last_committed: Decree,
    /// Every prepared decree up to here is durable in this server's log.
    durable: Decree,
    /// Secondary/learner: the highest decree accepted from the current ballot's stream; commits
    /// never go past it (older entries may be stale leftovers of a previous primary).
    stream_prepared: Decree,
    /// Secondary/learner: prepare replies waiting for their mutations to be durable.
    waiting_replies: VecDeque<(Decree, RequestId)>,
    /// Secondary/learner: the primary's commit point, as last heard in this ballot.
    primary_committed: Decree,
    clock: HybridClock,
    // primary state
    members: BTreeMap<NodeAddr, MemberProgress>,
    pending_writes: BTreeMap<Decree, PendingWrite>,
    /// Until this decree commits the new primary has not reconciled; it serves no reads.
    reconcile_until: Decree,
    proposal: Option<(ConfigProposal, u64)>,
    /// The meta refused the last proposal (or it failed): none is made again before this, or a
    /// primary whose reason to propose persists asks again on every tick. A new ballot clears it
    /// (found by the simulator with turns, scenario meta_restart_mid_reconfiguration).
    proposal_refused_until_ms: u64,
    /// The learners this primary proposed to upgrade under the current ballot. The meta may have
    /// made one a secondary already (its answer can be late or lost): from the proposal on, a
    /// commit waits for that learner's ack too, or a decree committed meanwhile would be missing
    /// from a member the meta may promote (found by the simulator, seed 5021). Every one counts,
    /// not only the latest: a proposal whose answer was lost may have been applied when the
    /// primary, retrying, proposes another learner (two-site simulator, seed 944). One leaves the
    /// set when the configuration moves on: a new ballot, or the same one without that learner.
    upgrading: BTreeSet<NodeAddr>,
    /// This replica knows the highest ballot it took part in: it was created empty, or the meta
    /// told it the configuration since it opened. A replica reopened from disk may have forgotten
    /// its ballot (the log records that carried it are collected once the engine is flushed);
    /// until the meta speaks, it adopts no configuration from a prepare, which may come from a
    /// deposed primary that would count its ack for decrees it committed differently under the
    /// newer ballot (found by the simulator, seed 13953).
    ballot_known: bool,
    // learner state
    learn: LearnState,
    /// When the last prepare arrived from the primary (a learner re-asks if the stream stops).
    last_prepare_ms: u64,
    actions: Vec<Action>,
}

/// A summary for beacons, status pages and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaState {
    pub gpid: Gpid,
    pub status: PartitionStatus,
    pub ballot: Ballot,
    pub last_committed: Decree,
    pub last_prepared: Decree,
    pub last_durable: Decree,
}

impl Replica {
    /// A replica opened from its engine and the mutations replayed from the log for this gpid
    /// (in log order, after its last reset: `log_read::replay_all`). It starts inactive; the
    /// meta's configuration gives it a role.
    pub fn open(
        gpid: Gpid,
        me: NodeAddr,
        options: ReplicaOptions,
        engine: Box<dyn KvEngine>,
        replayed: Vec<Mutation>,
    ) -> Replica {
        let last_committed = engine.last_applied_decree();
        let mut r = Replica {
            gpid,
            me,
            options,
            status: PartitionStatus::Inactive,
            config: PartitionConfig { gpid, ..Default::default() },
            engine,
            log: BTreeMap::new(),
            log_cache_bytes: 0,
            last_committed,
            durable: last_committed,
            stream_prepared: last_committed,
            waiting_replies: VecDeque::new(),
            primary_committed: 0,
            clock: HybridClock::default(),
            members: BTreeMap::new(),
            pending_writes: BTreeMap::new(),
            reconcile_until: 0,
            proposal: None,
            proposal_refused_until_ms: 0,
            upgrading: BTreeSet::new(),
            ballot_known: last_committed == 0 && replayed.is_empty(),
            learn: LearnState::Idle,
            last_prepare_ms: 0,
            actions: Vec::new(),
        };
        // The replay rule of every log reader (a later record for a decree replaces it and
        // everything after it, as it did live), then what the engine does not hold yet.
        r.clock.observe(r.engine.clock_bound_us());
        let mut history = crate::log_read::PartitionLog::default();
        for m in replayed {
            r.clock.observe(m.timestamp_us);
            history.push_mutation(m);
        }
        for m in history.into_mutations() {
            if m.decree > last_committed {
                r.insert_log(Arc::new(m));
            }
        }
        // Replayed entries must be contiguous after the engine's decree to be usable.
        let mut expect = last_committed + 1;
        let mut cut = None;
        for d in r.log.keys() {
            if *d > last_committed {
                if *d != expect {
                    cut = Some(expect);
                    break;
                }
                expect += 1;
            }
        }
        if let Some(from) = cut {
            r.truncate_from(from);
        }
        r.durable = r.last_prepared();
        r.config.ballot = r.log.values().map(|m| m.ballot).max().unwrap_or(0);
        r
    }

    pub fn gpid(&self) -> Gpid {
        self.gpid
    }

    pub fn status(&self) -> PartitionStatus {
        self.status
    }

    pub fn ballot(&self) -> Ballot {
        self.config.ballot
    }

    pub fn config(&self) -> &PartitionConfig {
        &self.config
    }

    pub fn last_committed(&self) -> Decree {
        self.last_committed
    }

    pub fn last_prepared(&self) -> Decree {
        self.log.keys().next_back().copied().unwrap_or(0).max(self.last_committed)
    }

    pub fn engine(&self) -> &dyn KvEngine {
        self.engine.as_ref()
    }

    pub fn state(&self) -> ReplicaState {
        ReplicaState {
            gpid: self.gpid,
            status: self.status,
            ballot: self.config.ballot,
            last_committed: self.last_committed,
            last_prepared: self.last_prepared(),
            last_durable: self.durable,
        }
    }

    /// Decrees the log of this server must keep for this replica: everything not yet durable in
    /// the engine is the engine's business (flushed decree), this is only what catch-up needs.
    pub fn log_cache_start(&self) -> Decree {
        self.log.keys().next().copied().unwrap_or(self.last_committed + 1)
    }

    /// Committed mutations `from..=to` (`to` capped at the committed decree) from the in-memory
    /// log, about `bytes_max` of them and at least one; None when the cache no longer starts at
    /// `from` (read the log on disk instead).
    pub fn committed_mutations(&self, from: Decree, to: Decree, bytes_max: usize) -> Option<Vec<Arc<Mutation>>> {
        let to = to.min(self.last_committed);
        if from > to || !self.log.contains_key(&from) {
            return None;
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        for (_, m) in self.log.range(from..=to) {
            if !out.is_empty() && bytes + m.encoded_bytes() > bytes_max {
                break;
            }
            bytes += m.encoded_bytes();
            out.push(m.clone());
        }
        Some(out)
    }

    /// The timestamp of the first mutation prepared here and not yet committed, if there is one:
    /// a duplicator's watermark may not pass it (it commits later, with this timestamp).
    pub fn first_uncommitted_timestamp_us(&self) -> Option<u64> {
        self.log.get(&(self.last_committed + 1)).map(|m| m.timestamp_us)
    }

    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    /// Feeds one input; the resulting actions are collected for `take_actions`.
    pub fn step(&mut self, ctx: &Ctx, input: Input) {
        if matches!(input, Input::ConfigUpdate { .. } | Input::ProposalReply { result: Ok(_) }) {
            self.ballot_known = true;
        }
        match input {
            Input::Tick => self.on_tick(ctx),
            Input::ConfigUpdate { config } => self.on_config_update(ctx, config),
            Input::ClientWrite { request_id, request } => self.on_client_write(ctx, request_id, request),
            Input::LogAppended { ballot, decree } => self.on_log_appended(ctx, ballot, decree),
            Input::LogFailed { error } => self.fail(format!("mutation log failed: {error}")),
            Input::Prepare { token, from, msg } => self.on_prepare(ctx, token, from, msg),
            Input::PrepareReply { from, reply } => self.on_prepare_reply(ctx, from, reply),
            Input::PrepareFailed { to, refused } => self.on_prepare_failed(ctx, to, refused),
            Input::LearnRequest { token, request } => self.on_learn(ctx, token, request),
            Input::LearnReply { reply } => self.on_learn_reply(ctx, reply),
            Input::CheckpointInstalled { engine } => self.on_checkpoint_installed(ctx, engine),
            Input::CheckpointFailed { error } => self.on_checkpoint_failed(ctx, error),
            Input::CheckpointReady { token, result } => self.on_checkpoint_ready(token, result),
            Input::ProposalReply { result } => self.on_proposal_reply(ctx, result),
        }
        self.check_invariants();
    }

    /// Whether reads may be served now, and why not.
    pub fn check_read(&self, ctx: &Ctx) -> Result<(), Error> {
        self.check_primary(ctx)?;
        self.read_ready()
    }

    /// Whether this replica's state may serve reads, the lease apart: it is the primary and has
    /// committed what it inherited. The lease is the server's and changes without a step, so a
    /// runtime that serves reads outside the replica's task keeps this answer after every step
    /// and checks `Ctx::lease_valid` at read time, which together are `check_read`.
    pub fn read_ready(&self) -> Result<(), Error> {
        if self.status != PartitionStatus::Primary {
            return Err(self.not_primary());
        }
        if self.last_committed < self.reconcile_until {
            return Err(Error::Busy {
                gpid: self.gpid,
                reason: format!("new primary reconciling up to decree {}", self.reconcile_until),
            });
        }
        Ok(())
    }

    /// Refusal of a request that needs the primary, naming the primary this replica knows.
    fn not_primary(&self) -> Error {
        Error::NotPrimary { gpid: self.gpid, status: self.status.as_str(), ballot: self.config.ballot, primary: self.config.primary.clone() }
    }

    fn check_primary(&self, ctx: &Ctx) -> Result<(), Error> {
        if self.status != PartitionStatus::Primary {
            return Err(self.not_primary());
        }
        if !ctx.lease_valid() {
            return Err(Error::NotPrimary { gpid: self.gpid, status: "primary without a lease", ballot: self.config.ballot, primary: None });
        }
        Ok(())
    }

    fn insert_log(&mut self, m: Arc<Mutation>) {
        self.log_cache_bytes += m.encoded_bytes();
        if let Some(old) = self.log.insert(m.decree, m) {
            self.log_cache_bytes -= old.encoded_bytes();
        }
    }

    /// Drops every uncommitted entry at or after `decree`.
    fn truncate_from(&mut self, decree: Decree) {
        assert!(decree > self.last_committed, "a committed decree is never truncated");
        let dropped = self.log.split_off(&decree);
        for m in dropped.values() {
            self.log_cache_bytes -= m.encoded_bytes();
        }
        self.durable = self.durable.min(decree - 1);
        self.stream_prepared = self.stream_prepared.min(decree - 1);
    }

    /// A new byte budget for the committed part of the in-memory log (the server divides its
    /// budget among its replicas as they come and go); a smaller one is enforced at once.
    pub fn set_log_cache_bytes_max(&mut self, bytes: usize) {
        self.options.log_cache_bytes_max = bytes;
        self.trim_log_cache();
    }

    /// Keeps the committed part of the in-memory log within its byte budget.
    fn trim_log_cache(&mut self) {
        while self.log_cache_bytes > self.options.log_cache_bytes_max {
            let Some((&first, _)) = self.log.first_key_value() else { break };
            if first > self.last_committed {
                break;
            }
            // A member still catching up from here keeps the entry.
            if self.members.values().any(|p| p.sent < first) {
                break;
            }
            let m = self.log.remove(&first).expect("first key exists");
            self.log_cache_bytes -= m.encoded_bytes();
        }
    }

    /// Applies every decree up to `to` that is durable here, in order.
    fn commit_to(&mut self, ctx: &Ctx, to: Decree) {
        let from = self.last_committed + 1;
        let mutations: Vec<Arc<Mutation>> = (from..=to)
            .map(|d| match self.log.get(&d) {
                Some(m) => m.clone(),
                None => panic!("{}: decree {d} to commit is not in the log (last prepared {})", self.gpid, self.last_prepared()),
            })
            .collect();
        if let Err(e) = self.engine.apply_many(&mutations) {
            self.fail(format!("applying decrees {from}..={to} failed: {e}"));
            return;
        }
        for d in from..=to {
            self.last_committed = d;
            if let Some(p) = self.pending_writes.remove(&d) {
                self.actions.push(Action::ReplyClient { request_id: p.request_id, result: Ok(p.response) });
            }
        }
        let _ = ctx;
        self.trim_log_cache();
    }

    fn fail(&mut self, error: String) {
        if self.status == PartitionStatus::Error {
            return;
        }
        self.status = PartitionStatus::Error;
        self.fail_pending_writes();
        self.members.clear();
        self.actions.push(Action::Failed { error });
    }

    /// Answers the writes waiting for a commit this replica will no longer make. Their mutations
    /// may still commit under a new primary, so the answer is "outcome unknown", never "not
    /// taken": clients must not blindly resend non-idempotent writes.
    fn fail_pending_writes(&mut self) {
        let reason = "the primary stepped down before the write committed".to_string();
        let err = Error::OutcomeUnknown { gpid: self.gpid, reason };
        for (_, p) in std::mem::take(&mut self.pending_writes) {
            self.actions.push(Action::ReplyClient { request_id: p.request_id, result: Err(err.clone()) });
        }
    }

    fn check_invariants(&self) {
        assert!(self.durable <= self.last_prepared(), "{}: durable {} beyond prepared", self.gpid, self.durable);
        assert!(self.engine.last_applied_decree() == self.last_committed || self.status == PartitionStatus::Error);
        if let Some((&first_pending, _)) = self.pending_writes.first_key_value() {
            assert!(first_pending > self.last_committed, "a committed write was not answered");
        }
    }
}
