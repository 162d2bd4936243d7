//! A simulated replica server: glue that carries out what the production host decides
//! (`tandem_host::Host` for the server, `HostedReplica` per replica) on the simulated log,
//! engines, clock and network, as `cluster/replica` does on real ones. It makes no protocol
//! decision; every IO completion comes back as an input, after a simulated delay where the real
//! one is asynchronous.
//!
//! Each replica has its own queue, as each has its own task in the server: events wait there and
//! a turn takes a random number of them, so the turn batching of the server is explored.
//!
//! What survives a crash is what is on the simulated disk: the log (`SimLog`: synced part and
//! whatever of the rest the crash kept), each replica's flushed engine state (`disk_engines`, the
//! database `CURRENT` names), and replicas whose deletion had not finished.

use crate::disk::{CrashOutcome, SimLog};
use crate::engine::SimEngine;
use crate::event::{Event, Io};
use crate::msg::{BeaconAnswer, Checkpoint, Endpoint, Msg, RpcId, replica_index};
use crate::stats::path;
use std::collections::{BTreeMap, VecDeque};
use tandem_core::replica::{Ctx, LearnReply, PrepareOutcome, PrepareReply, Replica, ReplicaOptions, read};
use tandem_core::meta_route::MetaRoute;
use tandem_core::{Ballot, Decree, Error, Gpid, LogRecord, Mutation, NodeAddr, PartitionStatus};
use tandem_meta_core::MetaError;
use tandem_host::{Carrier, Host, HostAction, HostInput, HostOptions, HostedReplica, ReplicaAction, ReplicaEvent, STEPS_PER_TURN_MAX};

/// Wall clock of the simulated world at true time zero (2023-11-14).
pub const EPOCH_US: u64 = 1_700_000_000_000_000;
/// A replica's task wakes up to this long after an event reaches its empty queue.
const TURN_DELAY_US_MAX: u64 = 200;

#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub rpc_timeout_ms: u64,
    pub host: HostOptions,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions { rpc_timeout_ms: 5_000, host: HostOptions::default() }
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
    Mutations { gpid: Gpid, ids: Vec<(Ballot, Decree)> },
    Reset { gpid: Gpid },
}

/// An RPC this server is waiting on.
#[derive(Clone, Debug)]
enum Outgoing {
    Prepare { gpid: Gpid, to: NodeAddr },
    Learn { gpid: Gpid },
    FetchCheckpoint { gpid: Gpid, checkpoint_id: String, decree: Decree },
    Propose { gpid: Gpid },
    Beacon { sent_at_ms: u64 },
}

/// Who waits for an answer.
#[derive(Clone, Copy, Debug)]
pub struct Incoming {
    from: Endpoint,
    rpc: RpcId,
}

/// A read the read gate did not let through.
#[derive(Debug)]
pub struct ReadRequest {
    incoming: Incoming,
    hash_key: Vec<u8>,
    sort_keys: Vec<Vec<u8>>,
}

pub struct SimCarrier;

impl Carrier for SimCarrier {
    type Write = Incoming;
    type Prepare = Incoming;
    type Learn = Incoming;
    type Read = ReadRequest;
}

pub type SimEvent = ReplicaEvent<SimCarrier>;

/// One replica in the process: its hosted state machine and its task's queue.
pub struct Slot {
    pub hosted: HostedReplica<SimCarrier>,
    queue: VecDeque<SimEvent>,
    turn_scheduled: bool,
}

pub struct ReplicaServer {
    pub index: usize,
    pub me: NodeAddr,
    pub opts: ServerOptions,
    pub clock: NodeClock,
    pub up: bool,
    pub incarnation: u64,
    // On disk.
    pub log: SimLog<Waiter>,
    disk_engines: BTreeMap<Gpid, SimEngine>,
    // In the process.
    pub host: Host,
    pub replicas: BTreeMap<Gpid, Slot>,
    engines: BTreeMap<Gpid, SimEngine>,
    boot_us: u64,
    lease_until_ms: u64,
    outgoing: BTreeMap<RpcId, Outgoing>,
    /// Which meta server to ask.
    meta: MetaRoute,
    checkpoints: BTreeMap<(Gpid, String), Checkpoint>,
    /// Fetched, verified checkpoint databases not installed yet.
    fetched: BTreeMap<(Gpid, String), Checkpoint>,
    /// Fail the next log write / sync (scripts).
    pub fail_next_write: bool,
    pub fail_next_sync: bool,
}

/// Feeds a host input and carries out its actions (and the inputs they produce).
macro_rules! host_step {
    ($self:ident, $io:expr, $input:expr) => {{
        let mut inputs = VecDeque::from([$input]);
        while let Some(input) = inputs.pop_front() {
            $self.host.step(input);
            for action in $self.host.take_actions() {
                $self.execute_host($io, action, &mut inputs);
            }
        }
    }};
}

impl ReplicaServer {
    pub fn new(index: usize, opts: ServerOptions, clock: NodeClock, metas: usize) -> ReplicaServer {
        let me = crate::msg::replica_addr(index);
        ReplicaServer {
            index,
            host: Host::new(me.clone(), opts.host.clone(), [], 0),
            me,
            opts,
            clock,
            up: false,
            incarnation: 0,
            log: SimLog::default(),
            disk_engines: BTreeMap::new(),
            replicas: BTreeMap::new(),
            engines: BTreeMap::new(),
            boot_us: 0,
            lease_until_ms: 0,
            outgoing: BTreeMap::new(),
            meta: MetaRoute::new(metas),
            checkpoints: BTreeMap::new(),
            fetched: BTreeMap::new(),
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

    pub fn replica(&self, gpid: Gpid) -> Option<&Replica> {
        self.replicas.get(&gpid).map(|s| s.hosted.core())
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
        self.up && self.replica(gpid).is_some_and(|r| r.status() == PartitionStatus::Primary) && self.ctx(now_us).lease_valid()
    }

    /// Process start: replay the log into replicas of the engines on disk, as `node::run` does.
    pub fn boot(&mut self, io: &mut Io<'_>) {
        assert!(!self.up, "{} is already up", self.me);
        self.up = true;
        self.incarnation += 1;
        self.boot_us = io.now_us;
        self.lease_until_ms = 0;
        let (records, cut) = self.log.replay();
        if cut {
            io.stats.path(path::TORN_TAIL_CUT);
        }
        let mut replayed: BTreeMap<Gpid, Vec<Mutation>> =
            tandem_core::log_read::replay_all(records).into_iter().map(|(g, p)| (g, p.into_mutations())).collect();
        if self.incarnation > 1 {
            let (me, n) = (self.me.clone(), replayed.values().map(Vec::len).sum::<usize>());
            io.note(|| format!("{me}: restarted, its log replays {n} mutations{}", if cut { " (a torn tail cut)" } else { "" }));
        }
        let gpids: Vec<Gpid> = self.disk_engines.keys().copied().collect();
        let options = self.opts.host.replica_options(gpids.len());
        for &gpid in &gpids {
            let mutations = replayed.remove(&gpid).unwrap_or_default();
            if !mutations.is_empty() {
                io.stats.path(path::LOG_REPLAY);
            }
            self.open_replica(gpid, options.clone(), mutations);
            let r = self.replicas[&gpid].hosted.core();
            let (me, committed, prepared) = (self.me.clone(), r.last_committed(), r.last_prepared());
            io.note(|| format!("{me} {gpid}: reopened, committed {committed} prepared {prepared}"));
        }
        self.host = Host::new(self.me.clone(), self.opts.host.clone(), gpids, self.ctx(io.now_us).now_ms);
        let first_tick = io.rng.range(0, self.opts.host.tick_interval_ms * 1_000);
        io.timer(first_tick, Event::HostTick { node: self.index, incarnation: self.incarnation });
    }

    /// The machine stops. Returns what the crash did to the log.
    pub fn crash(&mut self, io: &mut Io<'_>, torn_allowed: bool) -> CrashOutcome {
        assert!(self.up, "{} is already down", self.me);
        self.up = false;
        self.incarnation += 1;
        let outcome = self.log.crash(io.rng, torn_allowed);
        self.replicas.clear();
        self.engines.clear();
        self.outgoing.clear();
        self.checkpoints.clear();
        self.fetched.clear();
        self.lease_until_ms = 0;
        if outcome.unsynced_lost > 0 {
            io.stats.path(path::UNSYNCED_LOST);
        }
        outcome
    }

    /// Opens the replica of `gpid`: its engine on disk (flushed state), or a new empty one.
    fn open_replica(&mut self, gpid: Gpid, options: ReplicaOptions, replayed: Vec<Mutation>) {
        let engine = match self.disk_engines.get(&gpid) {
            Some(e) => e.reopen(),
            None => SimEngine::default(),
        };
        self.disk_engines.insert(gpid, engine.clone());
        self.engines.insert(gpid, engine.clone());
        let core = Replica::open(gpid, self.me.clone(), options, Box::new(engine), replayed);
        let hosted = HostedReplica::new(core, self.incarnation, &self.opts.host);
        self.replicas.insert(gpid, Slot { hosted, queue: VecDeque::new(), turn_scheduled: false });
    }

    /// Queues an event for a replica's task (dropped if the replica is gone).
    pub fn deliver(&mut self, io: &mut Io<'_>, gpid: Gpid, event: SimEvent) {
        let Some(slot) = self.replicas.get_mut(&gpid) else { return };
        slot.queue.push_back(event);
        if !slot.turn_scheduled {
            slot.turn_scheduled = true;
            let delay = io.rng.range(0, TURN_DELAY_US_MAX);
            io.timer(delay, Event::ReplicaTurn { node: self.index, incarnation: self.incarnation, gpid });
        }
    }

    /// A replica's task runs a turn: a random number of its queued events, then their actions.
    pub fn on_turn(&mut self, io: &mut Io<'_>, gpid: Gpid) {
        let ctx = self.ctx(io.now_us);
        let me = self.me.clone();
        let Some(slot) = self.replicas.get_mut(&gpid) else { return };
        slot.turn_scheduled = false;
        let queued = slot.queue.len().min(STEPS_PER_TURN_MAX);
        let take = if queued <= 1 || io.rng.chance(0.5) { queued } else { io.rng.range(1, queued as u64) as usize };
        if take > 1 {
            io.stats.path(path::TURN_BATCHED);
        }
        for _ in 0..take {
            let event = slot.queue.pop_front().expect("counted");
            let before = (slot.hosted.core().status(), slot.hosted.core().ballot(), slot.hosted.core().last_committed(), slot.hosted.core().last_prepared());
            note_event(io, &me, gpid, &event, slot.hosted.core().status());
            slot.hosted.step(&ctx, event);
            note_change(io, &me, gpid, before, slot.hosted.core());
        }
        let actions = slot.hosted.end_turn(&ctx);
        if !slot.queue.is_empty() {
            slot.turn_scheduled = true;
            let delay = io.rng.range(0, TURN_DELAY_US_MAX);
            io.timer(delay, Event::ReplicaTurn { node: self.index, incarnation: self.incarnation, gpid });
        }
        for action in actions {
            self.execute(io, gpid, action);
        }
    }

    fn execute(&mut self, io: &mut Io<'_>, gpid: Gpid, action: ReplicaAction<SimCarrier>) {
        let me = self.endpoint();
        match action {
            ReplicaAction::AppendLog { mutations } => {
                let ids = mutations.iter().map(|m| (m.ballot, m.decree)).collect();
                let records: Vec<LogRecord> = mutations.iter().map(|m| LogRecord::Mutation { gpid, mutation: Mutation::clone(m) }).collect();
                self.append(io, &records, Waiter::Mutations { gpid, ids });
            }
            ReplicaAction::AppendReset { decree } => self.append(io, &[LogRecord::Reset { gpid, decree }], Waiter::Reset { gpid }),
            ReplicaAction::SendPrepare { to, msg } => {
                let Some(i) = replica_index(&to) else { return };
                let rpc = self.call(io, Outgoing::Prepare { gpid, to });
                io.send(me, Endpoint::Replica(i), Msg::Prepare { rpc, msg });
            }
            ReplicaAction::ReplyPrepare { to, reply } => io.send(me, to.from, Msg::PrepareResp { rpc: to.rpc, reply }),
            ReplicaAction::ReplyWrite { to, result } => io.send(me, to.from, Msg::ClientWriteResp { rpc: to.rpc, result }),
            ReplicaAction::ReplyLearn { to, reply } => io.send(me, to.from, Msg::LearnResp { rpc: to.rpc, reply }),
            ReplicaAction::ServeRead { to, result } => {
                io.stats.path(path::READ_THROUGH_TURN);
                let now_s = self.ctx(io.now_us).now_s();
                let engine = self.engines.get(&gpid).expect("a replica has an engine");
                let result = result.and_then(|()| to.sort_keys.iter().map(|sk| read::get(engine, &to.hash_key, sk, now_s)).collect());
                io.send(me, to.incoming.from, Msg::ClientReadResp { rpc: to.incoming.rpc, result });
            }
            ReplicaAction::ProposeConfig { proposal } => {
                let rpc = self.call(io, Outgoing::Propose { gpid });
                io.send(me, Endpoint::Meta(self.meta.current()), Msg::Propose { rpc, gpid, proposal, from: self.me.clone() });
            }
            ReplicaAction::SendLearnRequest { to, request } => {
                let Some(i) = replica_index(&to) else { return };
                let rpc = self.call(io, Outgoing::Learn { gpid });
                io.send(me, Endpoint::Replica(i), Msg::Learn { rpc, gpid, request });
            }
            ReplicaAction::MakeCheckpoint { id } => {
                let delay = io.rng.range(1_000, 20_000);
                io.timer(delay, Event::CheckpointMade { node: self.index, incarnation: self.incarnation, gpid, id });
            }
            ReplicaAction::DeleteCheckpoint { id } => {
                io.stats.path(path::CHECKPOINT_DELETED);
                self.checkpoints.remove(&(gpid, id));
            }
            ReplicaAction::FetchCheckpoint { from, checkpoint_id, decree } => {
                let Some(i) = replica_index(&from) else { return };
                let rpc = self.call(io, Outgoing::FetchCheckpoint { gpid, checkpoint_id: checkpoint_id.clone(), decree });
                io.send(me, Endpoint::Replica(i), Msg::FetchCheckpoint { rpc, gpid, checkpoint_id });
            }
            ReplicaAction::ActivateCheckpoint { db, decree } => {
                // Opening the database takes a while: a crash may come before it is current.
                let delay = io.rng.range(500, 5_000);
                io.timer(delay, Event::CheckpointActivated { node: self.index, incarnation: self.incarnation, gpid, db, decree });
            }
            ReplicaAction::DeleteDatabasesExcept { .. } => self.fetched.retain(|(g, _), _| *g != gpid),
            ReplicaAction::DeleteDatabase { db } => {
                self.fetched.remove(&(gpid, db));
            }
            ReplicaAction::SetReadGate { .. } => {}
            ReplicaAction::Configured { status } => host_step!(self, io, HostInput::Configured { gpid, status: Some(status) }),
            ReplicaAction::Failed { error } => {
                io.stats.path(path::REPLICA_ERROR);
                let who = self.me.clone();
                io.note(|| format!("{who} {gpid}: failed: {error}"));
            }
        }
    }

    fn execute_host(&mut self, io: &mut Io<'_>, action: HostAction, inputs: &mut VecDeque<HostInput>) {
        match action {
            HostAction::OpenReplica { gpid, options } => self.open_replica(gpid, options, vec![]),
            HostAction::Configure { gpid, config } => {
                if self.replicas.contains_key(&gpid) {
                    self.deliver(io, gpid, ReplicaEvent::Configure { config });
                } else {
                    inputs.push_back(HostInput::Configured { gpid, status: None });
                }
            }
            HostAction::TickReplicas { log_cache_bytes_max } => {
                for gpid in self.replicas.keys().copied().collect::<Vec<_>>() {
                    self.deliver(io, gpid, ReplicaEvent::Tick { log_cache_bytes_max });
                }
            }
            HostAction::SendBeacon { sent_at_ms, restarted, lease_period_ms } => {
                let rpc = self.call(io, Outgoing::Beacon { sent_at_ms });
                let reports = self.replicas.values().map(|s| s.hosted.state()).collect();
                let (node, incarnation) = (self.me.clone(), self.incarnation);
                io.send(self.endpoint(), Endpoint::Meta(self.meta.current()), Msg::Beacon { rpc, node, incarnation, reports, lease_period_ms, restarted });
            }
            HostAction::ExtendLease { until_ms } => self.lease_until_ms = self.lease_until_ms.max(until_ms),
            HostAction::SetPartitionCount { .. } => {}
            HostAction::RemoveReplica { gpid, why } => {
                io.stats.path(path::REPLICA_REMOVED);
                let me = self.me.clone();
                io.note(|| format!("{me} {gpid}: removed ({why})"));
                self.replicas.remove(&gpid);
                self.engines.remove(&gpid);
                self.checkpoints.retain(|(g, _), _| *g != gpid);
                self.fetched.retain(|(g, _), _| *g != gpid);
                // Deleting the files takes a while; a crash meanwhile leaves them.
                let delay = io.rng.range(1_000, 50_000);
                io.timer(delay, Event::ReplicaDeleted { node: self.index, incarnation: self.incarnation, gpid });
            }
            HostAction::FlushEngine { gpid } => {
                let decree = self.engines.get(&gpid).map(SimEngine::flush);
                inputs.push_back(HostInput::EngineFlushed { gpid, decree });
            }
            HostAction::CollectLog { keep_after } => {
                self.log.gc(&|g| keep_after.get(&g).copied());
            }
            HostAction::Stop { .. } => {
                // The server exits; its supervisor restarts it.
                let delay = io.rng.range(500_000, 3_000_000);
                io.timer(delay, Event::SupervisorRestart { node: self.index, incarnation: self.incarnation });
            }
        }
    }

    fn append(&mut self, io: &mut Io<'_>, records: &[LogRecord], waiter: Waiter) {
        if self.log.append(records, waiter) {
            self.schedule_log_write(io);
        }
    }

    /// Opens an outgoing RPC with its timeout.
    fn call(&mut self, io: &mut Io<'_>, what: Outgoing) -> RpcId {
        let rpc = io.rpc_id();
        // As the real server: a prepare attempt gets a quarter of prepare_timeout (at least
        // 200 ms), so a lost prepare is sent again before the member would be removed; a beacon
        // attempt a quarter of the lease.
        let timeout_ms = match what {
            Outgoing::Prepare { .. } => (self.opts.host.replica.prepare_timeout_ms / 4).max(200),
            Outgoing::Beacon { .. } => (self.opts.host.lease_period_ms / 4).max(200),
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
            Outgoing::Prepare { gpid, to } => self.deliver(io, gpid, ReplicaEvent::PrepareFailed { to }),
            Outgoing::Learn { gpid } => self.deliver(io, gpid, ReplicaEvent::LearnReply { reply: None }),
            Outgoing::FetchCheckpoint { gpid, .. } => {
                self.deliver(io, gpid, ReplicaEvent::CheckpointFetched { result: Err("fetching the checkpoint failed".into()) })
            }
            Outgoing::Propose { gpid } => {
                self.meta.unreachable();
                self.deliver(io, gpid, ReplicaEvent::ProposalReply { result: Err("proposal RPC failed".into()) })
            }
            Outgoing::Beacon { .. } => {
                self.meta.unreachable();
                let now_ms = self.ctx(io.now_us).now_ms;
                host_step!(self, io, HostInput::BeaconFailed { now_ms })
            }
        }
    }

    pub fn on_host_tick(&mut self, io: &mut Io<'_>) {
        let now_ms = self.ctx(io.now_us).now_ms;
        host_step!(self, io, HostInput::Tick { now_ms });
        io.timer(self.opts.host.tick_interval_ms * 1_000, Event::HostTick { node: self.index, incarnation: self.incarnation });
    }

    /// Group commit: the writer thread wakes a little later, and every append queued until
    /// then rides on the same write and fsync.
    fn schedule_log_write(&mut self, io: &mut Io<'_>) {
        let delay = io.rng.range(50, 1_000);
        io.timer(delay, Event::LogWrite { node: self.index, incarnation: self.incarnation });
    }

    /// The log failed for the first time: the host stops the server (its supervisor restarts it).
    fn on_log_failed(&mut self, io: &mut Io<'_>, kind: &'static str) {
        io.stats.fault(kind);
        host_step!(self, io, HostInput::LogFailed { error: format!("simulated {kind} failure") });
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
            let (gpid, event) = match (waiter, result) {
                (Waiter::Mutations { gpid, ids }, Ok(())) => (gpid, ReplicaEvent::LogAppended { ids }),
                (Waiter::Reset { gpid }, Ok(())) => (gpid, ReplicaEvent::ResetLogged),
                (Waiter::Mutations { gpid, .. } | Waiter::Reset { gpid }, Err(error)) => (gpid, ReplicaEvent::LogFailed { error }),
            };
            self.deliver(io, gpid, event);
        }
    }

    /// The runtime made the checkpoint a learner asked for.
    pub fn on_checkpoint_made(&mut self, io: &mut Io<'_>, gpid: Gpid, id: String) {
        let Some(engine) = self.engines.get(&gpid) else { return };
        let (data, decree) = engine.checkpoint();
        self.checkpoints.insert((gpid, id.clone()), (data, decree));
        self.deliver(io, gpid, ReplicaEvent::CheckpointMade { id, result: Ok(decree) });
    }

    /// The fetched database is open and current (the reset record was durable before).
    pub fn on_checkpoint_activated(&mut self, io: &mut Io<'_>, gpid: Gpid, db: String, decree: Decree) {
        let result = match self.fetched.remove(&(gpid, db)) {
            Some((data, d)) if d == decree => {
                let engine = SimEngine::from_checkpoint(data, decree);
                self.disk_engines.insert(gpid, engine.clone());
                self.engines.insert(gpid, engine.clone());
                Ok(Box::new(engine) as Box<dyn tandem_core::storage::KvEngine>)
            }
            _ => Err("the fetched database is gone".to_string()),
        };
        self.deliver(io, gpid, ReplicaEvent::CheckpointActivated { result });
    }

    /// A removed replica's files are gone.
    pub fn on_replica_deleted(&mut self, io: &mut Io<'_>, gpid: Gpid) {
        self.disk_engines.remove(&gpid);
        host_step!(self, io, HostInput::ReplicaRemoved { gpid });
    }

    pub fn on_message(&mut self, io: &mut Io<'_>, from: Endpoint, msg: Msg) {
        let me = self.endpoint();
        match msg {
            Msg::Prepare { rpc, msg } => {
                let gpid = msg.config.gpid;
                if !self.replicas.contains_key(&gpid) {
                    host_step!(self, io, HostInput::PrepareForUnknown { config: msg.config.clone() });
                }
                if self.replicas.contains_key(&gpid) {
                    self.deliver(io, gpid, ReplicaEvent::Prepare { from: from.name(), msg, reply: Incoming { from, rpc } });
                } else if self.host.is_removing(gpid) {
                    io.send(me, from, Msg::RpcFailed { rpc, not_sent: false });
                } else {
                    let reply = PrepareReply { ballot: 0, outcome: PrepareOutcome::NotMember };
                    io.send(me, from, Msg::PrepareResp { rpc, reply });
                }
            }
            Msg::Learn { rpc, gpid, request } => {
                if !self.replicas.contains_key(&gpid) {
                    io.send(me, from, Msg::RpcFailed { rpc, not_sent: false });
                    return;
                }
                self.deliver(io, gpid, ReplicaEvent::Learn { request, reply: Incoming { from, rpc } });
            }
            Msg::FetchCheckpoint { rpc, gpid, checkpoint_id } => {
                let found = self.checkpoints.get(&(gpid, checkpoint_id.clone())).cloned();
                let result = found.ok_or_else(|| format!("no checkpoint {checkpoint_id} of {gpid} (expired?)"));
                if result.is_ok() {
                    self.deliver(io, gpid, ReplicaEvent::CheckpointRead { id: checkpoint_id });
                }
                io.send(me, from, Msg::FetchCheckpointResp { rpc, result });
            }
            Msg::ClientWrite { rpc, gpid, request } => {
                if !self.replicas.contains_key(&gpid) {
                    let err = Error::NotPrimary { gpid, status: "absent", ballot: 0 };
                    io.send(me, from, Msg::ClientWriteResp { rpc, result: Err(err) });
                    return;
                }
                self.deliver(io, gpid, ReplicaEvent::Write { request, reply: Incoming { from, rpc } });
            }
            Msg::ClientRead { rpc, gpid, hash_key, sort_keys } => {
                let ctx = self.ctx(io.now_us);
                let Some(slot) = self.replicas.get(&gpid) else {
                    let result = Err(Error::NotPrimary { gpid, status: "absent", ballot: 0 });
                    io.send(me, from, Msg::ClientReadResp { rpc, result });
                    return;
                };
                // As the server's read path: through the gate while it is open and the lease
                // holds, else through the replica's queue.
                if slot.hosted.read_gate_open() && ctx.lease_valid() {
                    let engine = self.engines.get(&gpid).expect("a replica has an engine");
                    let result = sort_keys.iter().map(|sk| read::get(engine, &hash_key, sk, ctx.now_s())).collect();
                    io.send(me, from, Msg::ClientReadResp { rpc, result });
                } else {
                    let reply = ReadRequest { incoming: Incoming { from, rpc }, hash_key, sort_keys };
                    self.deliver(io, gpid, ReplicaEvent::Read { reply });
                }
            }
            Msg::BeaconResp { rpc, answer } => {
                let Some(Outgoing::Beacon { sent_at_ms }) = self.outgoing.remove(&rpc) else { return };
                let BeaconAnswer { configs, partition_counts, gone } = answer;
                host_step!(self, io, HostInput::BeaconAnswered { sent_at_ms, configs, partition_counts, gone });
            }
            Msg::MetaError { rpc, error } => {
                let Some(what) = self.outgoing.remove(&rpc) else { return };
                if matches!(error, MetaError::NotLeader { .. }) {
                    self.meta.not_leader(crate::meta::hinted(&error));
                }
                match what {
                    Outgoing::Beacon { .. } => {
                        let now_ms = self.ctx(io.now_us).now_ms;
                        host_step!(self, io, HostInput::BeaconFailed { now_ms });
                    }
                    Outgoing::Propose { gpid } => self.deliver(io, gpid, ReplicaEvent::ProposalReply { result: Err(error.to_string()) }),
                    _ => {}
                }
            }
            Msg::PrepareResp { rpc, reply } => {
                if let Some(Outgoing::Prepare { gpid, to }) = self.outgoing.remove(&rpc) {
                    self.deliver(io, gpid, ReplicaEvent::PrepareReply { from: to, reply });
                }
            }
            Msg::LearnResp { rpc, reply } => {
                if let Some(Outgoing::Learn { gpid }) = self.outgoing.remove(&rpc) {
                    self.deliver(io, gpid, ReplicaEvent::LearnReply { reply: Some(reply) });
                }
            }
            Msg::ProposeResp { rpc, config } => {
                if let Some(Outgoing::Propose { gpid }) = self.outgoing.remove(&rpc) {
                    self.deliver(io, gpid, ReplicaEvent::ProposalReply { result: Ok(config) });
                }
            }
            Msg::FetchCheckpointResp { rpc, result } => {
                let Some(Outgoing::FetchCheckpoint { gpid, checkpoint_id, decree }) = self.outgoing.remove(&rpc) else { return };
                let result = match result {
                    Ok((data, d)) if d == decree => {
                        let db = format!("db-{checkpoint_id}");
                        self.fetched.insert((gpid, db.clone()), (data, d));
                        Ok((db, decree))
                    }
                    Ok((_, d)) => Err(format!("checkpoint holds decree {d}, expected {decree}")),
                    Err(error) => Err(error),
                };
                self.deliver(io, gpid, ReplicaEvent::CheckpointFetched { result });
            }
            Msg::RpcFailed { rpc, .. } => self.on_rpc_failed(io, rpc),
            Msg::Beacon { .. } | Msg::Propose { .. } | Msg::QueryConfig { .. } => {}
            Msg::QueryConfigResp { .. } | Msg::ClientWriteResp { .. } | Msg::ClientReadResp { .. } => {}
        }
    }
}

/// Trace notes and path counts of what an event is about to do.
fn note_event(io: &mut Io<'_>, me: &str, gpid: Gpid, event: &SimEvent, status: PartitionStatus) {
    match event {
        ReplicaEvent::LearnReply { reply: Some(LearnReply::Log { start }) } if status == PartitionStatus::Learner => {
            io.stats.path(path::LEARN_BY_LOG);
            io.note(|| format!("{me} {gpid}: learns by log from decree {start}"));
        }
        ReplicaEvent::LearnReply { reply: Some(LearnReply::Checkpoint { decree, .. }) } => {
            io.note(|| format!("{me} {gpid}: learns by checkpoint up to decree {decree}"));
        }
        ReplicaEvent::CheckpointActivated { result: Ok(_) } => {
            io.stats.path(path::LEARN_BY_CHECKPOINT);
            io.note(|| format!("{me} {gpid}: checkpoint installed after its reset record"));
        }
        ReplicaEvent::CheckpointFetched { result: Err(error) } | ReplicaEvent::CheckpointActivated { result: Err(error) } => {
            io.stats.path(path::CHECKPOINT_FAILED);
            io.note(|| format!("{me} {gpid}: checkpoint failed: {error}"));
        }
        _ => {}
    }
}

/// Trace notes and path counts of what an event did to a replica's role.
fn note_change(io: &mut Io<'_>, me: &str, gpid: Gpid, before: (PartitionStatus, Ballot, Decree, Decree), r: &Replica) {
    let (status, ballot, committed, prepared) = before;
    let after = (r.status(), r.ballot());
    if after.0 == PartitionStatus::Primary && status != PartitionStatus::Primary && prepared > committed {
        io.stats.path(path::RECONCILE);
        io.note(|| format!("{me} {gpid}: promoted with decrees {}..={prepared} prepared, not committed: reconciles them", committed + 1));
    }
    if status == PartitionStatus::Primary && after == (PartitionStatus::Inactive, ballot) {
        io.stats.path(path::STEP_DOWN);
    }
    if (status, ballot) != after {
        io.note(|| format!("{me} {gpid}: {status:?}@{ballot} -> {:?}@{}", after.0, after.1));
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
