//! A simulated replica server: the same plumbing as `cluster/replica` (`node.rs`,
//! `replica_task.rs`, `checkpoint.rs`) around the production `Replica`, with the simulated log,
//! engines, clock and network. It makes no protocol decision: it feeds inputs and executes
//! actions, and every IO completion (log append, RPC answer or failure, checkpoint) comes back as
//! an input.
//!
//! What survives a crash is what is on the simulated disk: the log (`SimLog`, synced part and
//! whatever of the rest the crash kept) and each replica's flushed engine state.

use crate::disk::{CrashOutcome, SimLog};
use crate::engine::SimEngine;
use crate::event::{Event, Io};
use crate::msg::{Checkpoint, Endpoint, Msg, RpcId, replica_index};
use crate::stats::path;
use std::collections::BTreeMap;
use tandem_core::replica::{Action, Ctx, Input, LearnReply, PrepareOutcome, PrepareReply, Replica, ReplicaOptions, RequestId, read};
use tandem_core::{Ballot, Decree, Error, Gpid, LogRecord, Mutation, NodeAddr, PartitionConfig, PartitionStatus};

/// Wall clock of the simulated world at true time zero (2023-11-14).
pub const EPOCH_US: u64 = 1_700_000_000_000_000;

#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub beacon_interval_ms: u64,
    pub lease_period_ms: u64,
    pub tick_interval_ms: u64,
    pub rpc_timeout_ms: u64,
    /// Engines are flushed (and the log collected) at a random interval up to this.
    pub flush_interval_ms_max: u64,
    pub replica: ReplicaOptions,
}

impl Default for ServerOptions {
    fn default() -> Self {
        // The production defaults (ops/src/config.rs).
        ServerOptions {
            beacon_interval_ms: 1_000,
            lease_period_ms: 6_000,
            tick_interval_ms: 100,
            rpc_timeout_ms: 5_000,
            flush_interval_ms_max: 10_000,
            replica: ReplicaOptions::default(),
        }
    }
}

/// A node's clocks: a rate error (drift) and, for the wall clock, an offset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeClock {
    pub rate_ppm: i64,
    pub wall_offset_us: i64,
}

impl NodeClock {
    fn scale(&self, us: u64) -> u64 {
        (us as i128 * (1_000_000 + self.rate_ppm as i128) / 1_000_000) as u64
    }

    /// Monotonic milliseconds since `boot_us` (an `Instant` taken at process start).
    pub fn mono_ms(&self, boot_us: u64, now_us: u64) -> u64 {
        self.scale(now_us - boot_us) / 1_000
    }

    pub fn wall_us(&self, now_us: u64) -> u64 {
        (EPOCH_US as i64 + self.scale(now_us) as i64 + self.wall_offset_us) as u64
    }
}

/// What a log append was for, to route its completion.
#[derive(Debug)]
pub enum Waiter {
    Mutations {
        gpid: Gpid,
        ids: Vec<(Ballot, Decree)>,
    },
    /// The reset record before a learned checkpoint is installed.
    Reset {
        gpid: Gpid,
        engine: SimEngine,
    },
}

/// An RPC this server is waiting on.
#[derive(Clone, Debug)]
enum Outgoing {
    Prepare { gpid: Gpid, to: NodeAddr },
    Learn { gpid: Gpid },
    FetchCheckpoint { gpid: Gpid, decree: Decree },
    Propose { gpid: Gpid },
}

/// An RPC this server must answer when the replica says so (by token or request id).
#[derive(Clone, Copy, Debug)]
struct Incoming {
    from: Endpoint,
    rpc: RpcId,
}

pub struct ReplicaServer {
    pub index: usize,
    pub me: NodeAddr,
    pub opts: ServerOptions,
    pub clock: NodeClock,
    pub up: bool,
    pub incarnation: u64,
    /// No beacon of this process has been answered yet.
    restarted: bool,
    // On disk.
    pub log: SimLog<Waiter>,
    disk_engines: BTreeMap<Gpid, SimEngine>,
    // In the process.
    pub replicas: BTreeMap<Gpid, Replica>,
    engines: BTreeMap<Gpid, SimEngine>,
    boot_us: u64,
    lease_until_ms: u64,
    next_id: RequestId,
    incoming: BTreeMap<(Gpid, RequestId), Incoming>,
    outgoing: BTreeMap<RpcId, Outgoing>,
    checkpoints: BTreeMap<Gpid, Vec<(String, Checkpoint)>>,
    checkpoint_seq: u64,
    /// Fail the next log write / sync (scripts).
    pub fail_next_write: bool,
    pub fail_next_sync: bool,
}

/// Checkpoints kept per partition, as `checkpoint.rs` keeps them.
const CHECKPOINTS_PER_PARTITION_MAX: usize = 2;

impl ReplicaServer {
    pub fn new(index: usize, opts: ServerOptions, clock: NodeClock) -> ReplicaServer {
        ReplicaServer {
            index,
            me: crate::msg::replica_addr(index),
            opts,
            clock,
            up: false,
            incarnation: 0,
            restarted: true,
            log: SimLog::default(),
            disk_engines: BTreeMap::new(),
            replicas: BTreeMap::new(),
            engines: BTreeMap::new(),
            boot_us: 0,
            lease_until_ms: 0,
            next_id: 0,
            incoming: BTreeMap::new(),
            outgoing: BTreeMap::new(),
            checkpoints: BTreeMap::new(),
            checkpoint_seq: 0,
            fail_next_write: false,
            fail_next_sync: false,
        }
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint::Replica(self.index)
    }

    pub fn ctx(&self, now_us: u64) -> Ctx {
        Ctx { now_ms: self.clock.mono_ms(self.boot_us, now_us), wall_us: self.clock.wall_us(now_us), lease_until_ms: self.lease_until_ms }
    }

    pub fn engine(&self, gpid: Gpid) -> Option<&SimEngine> {
        self.engines.get(&gpid)
    }

    pub fn engines(&self) -> impl Iterator<Item = (&Gpid, &SimEngine)> {
        self.engines.iter()
    }

    /// Whether this server's replica of `gpid` serves as primary now: primary status and a
    /// valid lease, by its own clock.
    pub fn serving(&self, gpid: Gpid, now_us: u64) -> bool {
        self.up && self.replicas.get(&gpid).is_some_and(|r| r.status() == PartitionStatus::Primary) && self.ctx(now_us).lease_valid()
    }

    /// Process start: replay the log into fresh replicas, as `node::run` does.
    pub fn boot(&mut self, io: &mut Io<'_>) {
        assert!(!self.up, "{} is already up", self.me);
        self.up = true;
        self.incarnation += 1;
        self.restarted = true;
        self.boot_us = io.now_us;
        self.lease_until_ms = 0;
        let (records, cut) = self.log.replay();
        if cut {
            io.stats.path(path::TORN_TAIL_CUT);
        }
        let mut replayed: BTreeMap<Gpid, Vec<Mutation>> = BTreeMap::new();
        for rec in records {
            match rec {
                LogRecord::Mutation { gpid, mutation } => replayed.entry(gpid).or_default().push(mutation),
                LogRecord::Reset { gpid, .. } => {
                    replayed.remove(&gpid);
                }
            }
        }
        if self.incarnation > 1 {
            let (me, n) = (self.me.clone(), replayed.values().map(Vec::len).sum::<usize>());
            io.note(|| format!("{me}: restarted, its log replays {n} mutations{}", if cut { " (a torn tail cut)" } else { "" }));
        }
        let gpids: Vec<Gpid> = self.disk_engines.keys().copied().collect();
        for gpid in gpids {
            let engine = self.disk_engines[&gpid].reopen();
            self.disk_engines.insert(gpid, engine.clone());
            let mutations = replayed.remove(&gpid).unwrap_or_default();
            if !mutations.is_empty() {
                io.stats.path(path::LOG_REPLAY);
            }
            let replica = Replica::open(gpid, self.me.clone(), self.opts.replica.clone(), Box::new(engine.clone()), mutations);
            let (me, committed, prepared) = (self.me.clone(), replica.last_committed(), replica.last_prepared());
            io.note(|| format!("{me} {gpid}: reopened, committed {committed} prepared {prepared}"));
            self.engines.insert(gpid, engine);
            self.replicas.insert(gpid, replica);
        }
        let inc = self.incarnation;
        let node = self.index;
        io.timer(self.opts.tick_interval_ms * 1_000, Event::ReplicaTick { node, incarnation: inc });
        let first_beacon = io.rng.range(0, self.opts.beacon_interval_ms * 1_000);
        io.timer(first_beacon, Event::Beacon { node, incarnation: inc });
        let flush = io.rng.range(1_000_000, self.opts.flush_interval_ms_max * 1_000);
        io.timer(flush, Event::Flush { node, incarnation: inc });
    }

    /// The machine stops. Returns what the crash did to the log.
    pub fn crash(&mut self, io: &mut Io<'_>, torn_allowed: bool) -> CrashOutcome {
        assert!(self.up, "{} is already down", self.me);
        self.up = false;
        self.incarnation += 1;
        let outcome = self.log.crash(io.rng, torn_allowed);
        self.replicas.clear();
        self.engines.clear();
        self.incoming.clear();
        self.outgoing.clear();
        self.checkpoints.clear();
        self.lease_until_ms = 0;
        if outcome.unsynced_lost > 0 {
            io.stats.path(path::UNSYNCED_LOST);
        }
        outcome
    }

    fn create_replica(&mut self, gpid: Gpid) {
        let engine = SimEngine::default();
        self.disk_engines.insert(gpid, engine.clone());
        self.engines.insert(gpid, engine.clone());
        let replica = Replica::open(gpid, self.me.clone(), self.opts.replica.clone(), Box::new(engine), vec![]);
        self.replicas.insert(gpid, replica);
    }

    fn next_id(&mut self) -> RequestId {
        self.next_id += 1;
        self.next_id
    }

    /// Feeds one input to a replica and executes its actions.
    pub fn step(&mut self, io: &mut Io<'_>, gpid: Gpid, input: Input) {
        let ctx = self.ctx(io.now_us);
        let Some(r) = self.replicas.get_mut(&gpid) else { return };
        let before = (r.status(), r.ballot());
        let reconcile = r.last_prepared() > r.last_committed();
        let (committed, prepared) = (r.last_committed(), r.last_prepared());
        let me = self.me.clone();
        match &input {
            Input::LearnReply { reply: Some(LearnReply::Log { start }) } if r.status() == PartitionStatus::Learner => {
                io.stats.path(path::LEARN_BY_LOG);
                io.note(|| format!("{me} {gpid}: learns by log from decree {start}"));
            }
            Input::LearnReply { reply: Some(LearnReply::Checkpoint { decree, .. }) } => {
                io.note(|| format!("{me} {gpid}: learns by checkpoint up to decree {decree}"));
            }
            Input::CheckpointInstalled { .. } => {
                io.stats.path(path::LEARN_BY_CHECKPOINT);
                io.note(|| format!("{me} {gpid}: checkpoint installed after its reset record"));
            }
            Input::CheckpointFailed { error } => {
                io.stats.path(path::CHECKPOINT_FAILED);
                io.note(|| format!("{me} {gpid}: checkpoint failed: {error}"));
            }
            _ => {}
        }
        r.step(&ctx, input);
        let after = (r.status(), r.ballot());
        if after.0 == PartitionStatus::Primary && before.0 != PartitionStatus::Primary && reconcile {
            io.stats.path(path::RECONCILE);
            io.note(|| format!("{me} {gpid}: promoted with decrees {}..={prepared} prepared, not committed: reconciles them", committed + 1));
        }
        if before.0 == PartitionStatus::Primary && after == (PartitionStatus::Inactive, before.1) {
            io.stats.path(path::STEP_DOWN);
        }
        if before != after {
            io.note(|| format!("{me} {gpid}: {:?}@{} -> {:?}@{}", before.0, before.1, after.0, after.1));
        }
        let actions = r.take_actions();
        self.execute(io, gpid, actions);
    }

    fn execute(&mut self, io: &mut Io<'_>, gpid: Gpid, actions: Vec<Action>) {
        let me = self.endpoint();
        for action in actions {
            match action {
                Action::AppendLog { mutations } => {
                    let ids = mutations.iter().map(|m| (m.ballot, m.decree)).collect();
                    let records: Vec<LogRecord> =
                        mutations.iter().map(|m| LogRecord::Mutation { gpid, mutation: Mutation::clone(m) }).collect();
                    if self.log.append(&records, Waiter::Mutations { gpid, ids }) {
                        self.schedule_log_write(io);
                    }
                }
                Action::SendPrepare { to, msg } => {
                    let Some(i) = replica_index(&to) else { continue };
                    let rpc = self.call(io, Outgoing::Prepare { gpid, to });
                    io.send(me, Endpoint::Replica(i), Msg::Prepare { rpc, msg });
                }
                Action::ReplyPrepare { token, reply } => {
                    if let Some(inc) = self.incoming.remove(&(gpid, token)) {
                        io.send(me, inc.from, Msg::PrepareResp { rpc: inc.rpc, reply });
                    }
                }
                Action::ReplyClient { request_id, result } => {
                    if let Some(inc) = self.incoming.remove(&(gpid, request_id)) {
                        io.send(me, inc.from, Msg::ClientWriteResp { rpc: inc.rpc, result });
                    }
                }
                Action::ProposeConfig { proposal } => {
                    let rpc = self.call(io, Outgoing::Propose { gpid });
                    let from = self.me.clone();
                    io.send(me, Endpoint::Meta, Msg::Propose { rpc, gpid, proposal, from });
                }
                Action::SendLearnRequest { to, request } => {
                    let Some(i) = replica_index(&to) else { continue };
                    let rpc = self.call(io, Outgoing::Learn { gpid });
                    io.send(me, Endpoint::Replica(i), Msg::Learn { rpc, gpid, request });
                }
                Action::ReplyLearn { token, reply } => {
                    if let Some(inc) = self.incoming.remove(&(gpid, token)) {
                        io.send(me, inc.from, Msg::LearnResp { rpc: inc.rpc, reply });
                    }
                }
                Action::ServeCheckpoint { token } => {
                    let delay = io.rng.range(1_000, 20_000);
                    io.timer(delay, Event::CheckpointMade { node: self.index, incarnation: self.incarnation, gpid, token });
                }
                Action::FetchCheckpoint { from, checkpoint_id, decree } => {
                    let Some(i) = replica_index(&from) else { continue };
                    let rpc = self.call(io, Outgoing::FetchCheckpoint { gpid, decree });
                    io.send(me, Endpoint::Replica(i), Msg::FetchCheckpoint { rpc, gpid, checkpoint_id });
                }
                Action::Failed { error } => {
                    io.stats.path(path::REPLICA_ERROR);
                    let who = self.me.clone();
                    io.note(|| format!("{who} {gpid}: failed: {error}"));
                }
            }
        }
    }

    /// Opens an outgoing RPC with its timeout.
    fn call(&mut self, io: &mut Io<'_>, what: Outgoing) -> RpcId {
        let rpc = io.rpc_id();
        // As the real server: a prepare attempt gets a quarter of prepare_timeout (at least
        // 200 ms), so a lost prepare is sent again before the member would be removed.
        let timeout_ms = match what {
            Outgoing::Prepare { .. } => (self.opts.replica.prepare_timeout_ms / 4).max(200),
            _ => self.opts.rpc_timeout_ms,
        };
        self.outgoing.insert(rpc, what);
        let at = self.endpoint();
        io.timer(timeout_ms * 1_000, Event::RpcTimeout { at, incarnation: self.incarnation, rpc });
        rpc
    }

    /// An outgoing RPC failed (timeout or transport): its caller gets the failure input.
    pub fn on_rpc_failed(&mut self, io: &mut Io<'_>, rpc: RpcId) {
        let Some(what) = self.outgoing.remove(&rpc) else { return };
        match what {
            Outgoing::Prepare { gpid, to } => self.step(io, gpid, Input::PrepareFailed { to }),
            Outgoing::Learn { gpid } => self.step(io, gpid, Input::LearnReply { reply: None }),
            Outgoing::FetchCheckpoint { gpid, .. } => {
                self.step(io, gpid, Input::CheckpointFailed { error: "fetching the checkpoint failed".into() })
            }
            Outgoing::Propose { gpid } => self.step(io, gpid, Input::ProposalReply { result: Err("proposal RPC failed".into()) }),
        }
    }

    pub fn on_tick(&mut self, io: &mut Io<'_>) {
        let gpids: Vec<Gpid> = self.replicas.keys().copied().collect();
        for gpid in gpids {
            self.step(io, gpid, Input::Tick);
        }
        io.timer(self.opts.tick_interval_ms * 1_000, Event::ReplicaTick { node: self.index, incarnation: self.incarnation });
    }

    pub fn send_beacon(&mut self, io: &mut Io<'_>) {
        let sent_at_ms = self.ctx(io.now_us).now_ms;
        let reports = self.replicas.values().map(Replica::state).collect();
        let msg = Msg::Beacon {
            node: self.me.clone(),
            incarnation: self.incarnation,
            reports,
            sent_at_ms,
            lease_period_ms: self.opts.lease_period_ms,
            restarted: self.restarted,
        };
        io.send(self.endpoint(), Endpoint::Meta, msg);
        io.timer(self.opts.beacon_interval_ms * 1_000, Event::Beacon { node: self.index, incarnation: self.incarnation });
    }

    /// The meta acked a beacon: configurations to adopt, and a lease counted from the send.
    fn on_beacon_reply(&mut self, io: &mut Io<'_>, sent_at_ms: u64, configs: Vec<PartitionConfig>) {
        // Configurations first, lease second: a replica the meta no longer names primary must not
        // see a fresh lease before it sees that configuration.
        for config in configs {
            let gpid = config.gpid;
            if !self.replicas.contains_key(&gpid) {
                if !config.hosts(&self.me) {
                    continue;
                }
                self.create_replica(gpid);
            }
            self.step(io, gpid, Input::ConfigUpdate { config });
        }
        self.lease_until_ms = self.lease_until_ms.max(sent_at_ms + self.opts.lease_period_ms);
    }

    /// Group commit: the writer thread wakes a little later, and every append queued until
    /// then rides on the same write and fsync.
    fn schedule_log_write(&mut self, io: &mut Io<'_>) {
        let delay = io.rng.range(50, 1_000);
        io.timer(delay, Event::LogWrite { node: self.index, incarnation: self.incarnation });
    }

    /// The log failed for the first time: the replica server's supervisor restarts it.
    fn on_log_failed(&mut self, io: &mut Io<'_>, kind: &'static str) {
        io.stats.fault(kind);
        let delay = io.rng.range(500_000, 3_000_000);
        io.timer(delay, Event::SupervisorRestart { node: self.index, incarnation: self.incarnation });
    }

    /// The writer writes the queued appends out. Returns when their fsync will return, if one
    /// was started: until then a crash may lose or tear what was written.
    pub fn on_log_write(&mut self, io: &mut Io<'_>, write_fails: bool) -> Option<u64> {
        let write_fails = write_fails || std::mem::take(&mut self.fail_next_write);
        let was_failed = self.log.failed();
        let done = self.log.write(write_fails);
        if !was_failed && self.log.failed() {
            self.on_log_failed(io, "disk-write");
        }
        let sync_at = self.log.syncing.then(|| {
            let latency = io.rng.range(200, 3_000);
            io.timer(latency, Event::LogSync { node: self.index, incarnation: self.incarnation });
            io.now_us + latency
        });
        self.complete(io, done);
        sync_at
    }

    /// The fsync returns: every written append completes; the writer takes the next group.
    pub fn on_log_sync(&mut self, io: &mut Io<'_>, sync_fails: bool) {
        let sync_fails = sync_fails || std::mem::take(&mut self.fail_next_sync);
        let was_failed = self.log.failed();
        let done = self.log.sync(sync_fails);
        if !was_failed && self.log.failed() {
            self.on_log_failed(io, "disk-sync");
        }
        if self.log.has_pending() && !self.log.write_scheduled {
            self.log.write_scheduled = true;
            self.schedule_log_write(io);
        }
        self.complete(io, done);
    }

    fn complete(&mut self, io: &mut Io<'_>, done: Vec<crate::disk::Completion<Waiter>>) {
        for (waiter, result) in done {
            match (waiter, result) {
                (Waiter::Mutations { gpid, ids }, Ok(())) => {
                    for (ballot, decree) in ids {
                        self.step(io, gpid, Input::LogAppended { ballot, decree });
                    }
                }
                (Waiter::Mutations { gpid, .. }, Err(error)) => self.step(io, gpid, Input::LogFailed { error }),
                (Waiter::Reset { gpid, engine }, Ok(())) => {
                    // The reset is durable: switch the replica's directory to the checkpoint.
                    self.disk_engines.insert(gpid, engine.clone());
                    self.engines.insert(gpid, engine.clone());
                    self.step(io, gpid, Input::CheckpointInstalled { engine: Box::new(engine) });
                }
                (Waiter::Reset { gpid, .. }, Err(error)) => self.step(io, gpid, Input::CheckpointFailed { error }),
            }
        }
    }

    /// Flushes every engine and collects the log, as `node.rs` does every `log_gc_interval`.
    pub fn on_flush(&mut self, io: &mut Io<'_>) {
        let mut flushed = BTreeMap::new();
        for (gpid, e) in &self.engines {
            flushed.insert(*gpid, e.flush());
        }
        self.log.gc(&|g| flushed.get(&g).copied());
        let next = io.rng.range(1_000_000, self.opts.flush_interval_ms_max * 1_000);
        io.timer(next, Event::Flush { node: self.index, incarnation: self.incarnation });
    }

    /// The runtime made the checkpoint a learner asked for.
    pub fn on_checkpoint_made(&mut self, io: &mut Io<'_>, gpid: Gpid, token: RequestId) {
        let Some(engine) = self.engines.get(&gpid) else { return };
        let (data, decree) = engine.checkpoint();
        self.checkpoint_seq += 1;
        let id = format!("{}-{}-{}", self.me, self.incarnation, self.checkpoint_seq);
        let list = self.checkpoints.entry(gpid).or_default();
        list.push((id.clone(), (data, decree)));
        while list.len() > CHECKPOINTS_PER_PARTITION_MAX {
            list.remove(0);
        }
        self.step(io, gpid, Input::CheckpointReady { token, result: Ok((id, decree)) });
    }

    pub fn on_message(&mut self, io: &mut Io<'_>, from: Endpoint, msg: Msg) {
        let me = self.endpoint();
        match msg {
            Msg::Prepare { rpc, msg } => {
                let gpid = msg.config.gpid;
                if !self.replicas.contains_key(&gpid) {
                    if !msg.config.hosts(&self.me) {
                        let reply = PrepareReply { ballot: 0, outcome: PrepareOutcome::NotMember };
                        io.send(me, from, Msg::PrepareResp { rpc, reply });
                        return;
                    }
                    // A new partition's first prepare may beat the meta's beacon reply.
                    self.create_replica(gpid);
                }
                let token = self.next_id();
                self.incoming.insert((gpid, token), Incoming { from, rpc });
                let sender = from.name();
                self.step(io, gpid, Input::Prepare { token, from: sender, msg });
            }
            Msg::Learn { rpc, gpid, request } => {
                if !self.replicas.contains_key(&gpid) {
                    io.send(me, from, Msg::RpcFailed { rpc, not_sent: false });
                    return;
                }
                let token = self.next_id();
                self.incoming.insert((gpid, token), Incoming { from, rpc });
                self.step(io, gpid, Input::LearnRequest { token, request });
            }
            Msg::FetchCheckpoint { rpc, gpid, checkpoint_id } => {
                let found = self.checkpoints.get(&gpid).and_then(|l| l.iter().find(|(id, _)| *id == checkpoint_id)).map(|(_, c)| c.clone());
                let result = found.ok_or_else(|| format!("no checkpoint {checkpoint_id} of {gpid} (expired?)"));
                io.send(me, from, Msg::FetchCheckpointResp { rpc, result });
            }
            Msg::ClientWrite { rpc, gpid, request } => {
                if !self.replicas.contains_key(&gpid) {
                    let err = Error::NotPrimary { gpid, status: "absent", ballot: 0 };
                    io.send(me, from, Msg::ClientWriteResp { rpc, result: Err(err) });
                    return;
                }
                let request_id = self.next_id();
                self.incoming.insert((gpid, request_id), Incoming { from, rpc });
                self.step(io, gpid, Input::ClientWrite { request_id, request });
            }
            Msg::ClientRead { rpc, gpid, hash_key, sort_keys } => {
                let ctx = self.ctx(io.now_us);
                let result = match self.replicas.get(&gpid) {
                    None => Err(Error::NotPrimary { gpid, status: "absent", ballot: 0 }),
                    Some(r) => r.check_read(&ctx).and_then(|()| {
                        sort_keys.iter().map(|sk| read::get(r.engine(), &hash_key, sk, ctx.now_s())).collect::<Result<Vec<_>, _>>()
                    }),
                };
                io.send(me, from, Msg::ClientReadResp { rpc, result });
            }
            Msg::BeaconResp { incarnation, sent_at_ms, result } => {
                // `sent_at_ms` is on the clock of the process that sent the beacon.
                if let Ok(configs) = result
                    && incarnation == self.incarnation
                {
                    self.restarted = false;
                    self.on_beacon_reply(io, sent_at_ms, configs);
                }
            }
            Msg::PrepareResp { rpc, reply } => {
                if let Some(Outgoing::Prepare { gpid, to }) = self.outgoing.remove(&rpc) {
                    self.step(io, gpid, Input::PrepareReply { from: to, reply });
                }
            }
            Msg::LearnResp { rpc, reply } => {
                if let Some(Outgoing::Learn { gpid }) = self.outgoing.remove(&rpc) {
                    self.step(io, gpid, Input::LearnReply { reply: Some(reply) });
                }
            }
            Msg::ProposeResp { rpc, result } => {
                if let Some(Outgoing::Propose { gpid }) = self.outgoing.remove(&rpc) {
                    self.step(io, gpid, Input::ProposalReply { result });
                }
            }
            Msg::FetchCheckpointResp { rpc, result } => {
                let Some(Outgoing::FetchCheckpoint { gpid, decree }) = self.outgoing.remove(&rpc) else { return };
                match result {
                    Ok((data, d)) if d == decree => self.install_checkpoint(io, gpid, data, decree),
                    Ok((_, d)) => {
                        let error = format!("checkpoint holds decree {d}, expected {decree}");
                        self.step(io, gpid, Input::CheckpointFailed { error });
                    }
                    Err(error) => self.step(io, gpid, Input::CheckpointFailed { error }),
                }
            }
            Msg::RpcFailed { rpc, .. } => self.on_rpc_failed(io, rpc),
            Msg::Beacon { .. } | Msg::Propose { .. } | Msg::QueryConfig { .. } => {}
            Msg::QueryConfigResp { .. } | Msg::ClientWriteResp { .. } | Msg::ClientReadResp { .. } => {}
        }
    }

    /// Logs the reset and switches the engine. The runtime does this inside the replica's task,
    /// awaiting the append, so nothing else reaches the replica meanwhile: here the log is
    /// synced at once (a group commit of its own).
    fn install_checkpoint(&mut self, io: &mut Io<'_>, gpid: Gpid, data: BTreeMap<Vec<u8>, Vec<u8>>, decree: Decree) {
        let engine = SimEngine::from_checkpoint(data, decree);
        self.log.append(&[LogRecord::Reset { gpid, decree }], Waiter::Reset { gpid, engine });
        let write_fails = std::mem::take(&mut self.fail_next_write);
        let sync_fails = std::mem::take(&mut self.fail_next_sync);
        let was_failed = self.log.failed();
        let done = self.log.write_and_sync(write_fails, sync_fails);
        if !was_failed && self.log.failed() {
            self.on_log_failed(io, if write_fails { "disk-write" } else { "disk-sync" });
        }
        self.complete(io, done);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_scales_the_clocks() {
        let fast = NodeClock { rate_ppm: 50_000, wall_offset_us: -1_000 };
        assert_eq!(fast.mono_ms(1_000_000, 11_000_000), 10_500);
        assert_eq!(fast.wall_us(0), EPOCH_US - 1_000);
        assert_eq!(NodeClock::default().mono_ms(0, 2_000), 2);
    }
}
