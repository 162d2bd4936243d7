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
//!
//! - `glue.rs`: the host's and the replicas' actions, carried out (the glue proper);
//! - `io.rs`: the simulated disk under them (group commit, fsync, checkpoint files);
//! - `rpc.rs`: messages in and out (RPC ids, timeouts, leader hints);
//! - `trace.rs`: what the trace shows of a replica's steps.

pub use crate::clock::{EPOCH_US, NodeClock};
pub use backup::ObjectWork;
use crate::checkpoints::SimCheckpoints;
use crate::disk::{CrashOutcome, SimLog};
use crate::engine::SimEngine;
use crate::event::{Event, Io};
use crate::msg::{BeaconAnswer, Checkpoint, Endpoint, Msg, RpcId, replica_index};
use crate::stats::path;
use std::collections::{BTreeMap, VecDeque};
use tandem_core::replica::{Ctx, LearnReply, PrepareOutcome, PrepareReply, Replica, ReplicaOptions, read};
use tandem_core::storage::KvEngine;
use tandem_core::meta_route::MetaRoute;
use tandem_core::{Ballot, Decree, Error, Gpid, LogRecord, Mutation, NodeAddr, PartitionStatus};
use tandem_meta_core::MetaError;
use tandem_host::{Carrier, Host, HostAction, HostInput, HostOptions, HostedReplica, ReplicaAction, ReplicaEvent, STEPS_PER_TURN_MAX};

/// A replica's task wakes up to this long after an event reaches its empty queue.
const TURN_DELAY_US_MAX: u64 = 200;

#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub rpc_timeout_ms: u64,
    pub host: HostOptions,
    /// Compact engines at random moments with this tombstone retention (the policy's is at
    /// least a minute, longer than the sites stay cut; the hold is the meta's, as handed out).
    /// None: no compaction (one-site runs).
    pub compaction_retention_ms: Option<u64>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions { rpc_timeout_ms: 5_000, host: HostOptions::default(), compaction_retention_ms: None }
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
    /// The other site's route of the duplicated table.
    PeerRoute,
    /// One partition's group of a batch shipped to the other site.
    Ship { ship: u64, partition: u32 },
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
    /// While down: its process was killed and its host refuses connections to its port (else
    /// the machine is gone and connections time out).
    pub port_refuses: bool,
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
    /// Set while its disk is below the reserve, as its host decided.
    disk_low: Option<tandem_core::replica::DiskLow>,
    /// Its disk's free and total bytes, read by the host every tick (scripts: `disk r1 free=…
    /// total=…`); None: the simulated disk never fills.
    pub disk_space: Option<(u64, u64)>,
    /// When it may start again after its log failed (the server's own rule).
    pub restarts: tandem_host::Restarts,
    /// What the beacons say of the replicas: only what changed since the last answered one.
    beacon_reports: tandem_host::BeaconReports<tandem_core::replica::ReplicaState>,
    outgoing: BTreeMap<RpcId, Outgoing>,
    /// Which meta server to ask.
    meta: MetaRoute,
    checkpoints: SimCheckpoints,
    /// Fetched, verified checkpoint databases not installed yet.
    fetched: BTreeMap<(Gpid, String), Checkpoint>,
    /// Fail the next log write / sync (scripts).
    pub fail_next_write: bool,
    pub fail_next_sync: bool,
    /// Each table's tombstone hold (the smallest watermark of its own duplications), as the host
    /// last set it; in the process, so lost in a crash.
    tombstone_hold: BTreeMap<u32, u64>,
    /// The other site (a two-site run), and the batches on their way there.
    peer: ship::PeerSite,
    ships: BTreeMap<u64, ship::Ship>,
    next_ship: u64,
    /// Uploads running: `(backup, partition, attempt)` (`CancelBackup` removes one).
    uploads: std::collections::BTreeSet<(u64, Gpid, u32)>,
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

mod backup;
mod glue;
mod io;
mod rpc;
mod ship;
mod trace;

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
            port_refuses: false,
            incarnation: 0,
            log: SimLog::default(),
            disk_engines: BTreeMap::new(),
            replicas: BTreeMap::new(),
            engines: BTreeMap::new(),
            boot_us: 0,
            lease_until_ms: 0,
            disk_low: None,
            disk_space: None,
            restarts: tandem_host::Restarts::default(),
            beacon_reports: tandem_host::BeaconReports::default(),
            outgoing: BTreeMap::new(),
            meta: MetaRoute::new(metas),
            checkpoints: SimCheckpoints::default(),
            fetched: BTreeMap::new(),
            fail_next_write: false,
            fail_next_sync: false,
            peer: ship::PeerSite::default(),
            tombstone_hold: BTreeMap::new(),
            ships: BTreeMap::new(),
            next_ship: 0,
            uploads: Default::default(),
        }
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint::Replica(self.index)
    }

    pub fn ctx(&self, now_us: u64) -> Ctx {
        Ctx { now_ms: self.clock.mono_ms(self.boot_us, now_us), wall_us: self.clock.wall_us(now_us), lease_until_ms: self.lease_until_ms, disk_low: self.disk_low }
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
        self.port_refuses = false;
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
        self.beacon_reports = tandem_host::BeaconReports::default();
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
        self.ships.clear();
        self.uploads.clear();
        self.tombstone_hold.clear();
        self.peer = ship::PeerSite::default();
        self.lease_until_ms = 0;
        self.disk_low = None;
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
}
