//! One simulated site: a meta, several replica servers and clients on one thread, a virtual
//! clock and one seeded RNG that decides every latency, interleaving and fault.
//!
//! ```text
//!   queue (time, seq) ──▶ handle event ──▶ node (production core inside) ──▶ sends, timers
//!        ▲                                                                      │
//!        └──── network (latency, loss, dup, partitions, clogs) ◀────────────────┘
//!   after every event: single-primary, decree-agreement, bank-read and linearizability checks
//!   phases: setup → faults → healing (probes within 30 s) → final reads → convergence → checks
//!   crash faults: 30 % at a random moment, 70 % armed for the next log write in flight
//! ```

use crate::backup::{BackupParams, ObjectFaults, Oracle};
use crate::check::availability::Availability;
use crate::check::decree_agreement::DecreeAgreement;
use crate::check::linearizable_online::OnlineLinearizable;
use crate::check::single_primary::SinglePrimary;
use crate::check::{bank, convergence, linearizable, no_lost_writes};
use crate::client::{SimClient, Workload};
use crate::event::{Event, Io, Out, TraceLine};
use crate::faults::{FaultKind, FaultPlan, FaultSet};
use crate::hash::Fnv64;
use crate::history::{History, OpKind, Outcome, Output};
use crate::meta::SimMeta;
use crate::site::Site;
use crate::msg::{Endpoint, Envelope, Msg};
use crate::network::{Fate, Network};
use crate::clock::NodeClock;
use crate::replica_server::{ReplicaServer, ServerOptions};
use crate::rng::Rng;
use crate::stats::Stats;
use std::collections::BTreeMap;
use tandem_core::partition::partition_index;
use tandem_core::{Gpid, PartitionStatus};
use tandem_meta_core::store::MemStore;
use crate::stats::path;
use tandem_meta_core::duplication::{DupStatus, Site as PeerSite};
use tandem_meta_core::{MetaOptions, MetaReply, MetaRequest};

/// The table the workload runs on (the first table the store creates).
pub const TABLE_ID: u32 = 1;
pub const TABLE_NAME: &str = "sim";
/// The table that is created, dropped, recalled and purged (`Params::table_churn`).
pub const SCRATCH_TABLE: &str = "scratch";

/// When the table is created and clients start (simulated).
const CREATE_TABLE_US: u64 = 2_000_000;
const CLIENTS_START_US: u64 = 3_000_000;
/// Every partition must take a write this long after healing starts.
pub const RECOVERY_DEADLINE_US: u64 = 30_000_000;
/// Replicas must converge this long after the final reads.
pub const CONVERGENCE_DEADLINE_US: u64 = 30_000_000;
const CHECK_PROGRESS_US: u64 = 250_000;
/// The disk-full fault's disk: 100 GiB, whose reserve under the default options is 2 GiB.
const SIM_DISK_BYTES: u64 = 100 << 30;
const SIM_DISK_RESERVE: u64 = 2 << 30;
/// Steps of the linearizability search per key before it gives up.
const LINEARIZABILITY_BUDGET: u64 = 3_000_000;
/// Share of crash faults aimed at a log write in flight (written, fsync not returned) rather
/// than at a random moment, and how long such a crash waits for a write before it hits anyway.
const CRASH_AT_LOG_WRITE_SHARE: f64 = 0.7;
const CRASH_ARM_TIMEOUT_US: u64 = 2_000_000;

/// The shape of one run, drawn from the seed (or written by a scenario script).
#[derive(Clone, Debug)]
pub struct Params {
    /// Meta servers sharing the store (one leads).
    pub metas: usize,
    /// Their leader lease's time to live.
    pub meta_lease_ttl_ms: u64,
    /// A store call takes up to this long each way.
    pub store_latency_us_max: u64,
    pub servers: usize,
    pub partitions: u32,
    pub replica_count: u32,
    pub clients: usize,
    pub register_keys: usize,
    pub log_cache_bytes_max: usize,
    /// The operator changes the workload table's replica count now and then (`policy set`).
    pub policy_changes: bool,
    /// A second table is created, dropped, recalled and purged over and over.
    pub table_churn: bool,
    /// How long a dropped table can be recalled before the meta purges it.
    pub recall_window_ms: u64,
    /// The host's deletion of left-out replicas and its checkpoint retention, shortened so
    /// that a run of a minute reaches them.
    pub inactive_replica_gc_delay_ms: u64,
    pub checkpoints_per_partition_max: usize,
    pub checkpoint_hold_ms: u64,
    /// How long faults are injected, from the start.
    pub fault_time_us: u64,
    /// This site's part in a two-site run (`crate::world`); None: a one-site run.
    pub site: Option<SiteParams>,
    /// The run takes backups of the workload table and restores them (one-site runs).
    pub backup: Option<BackupParams>,
}

/// One site of a two-site run: who it is, who the other site is, and how the operator
/// duplicates the workload table there.
#[derive(Clone, Debug)]
pub struct SiteParams {
    pub name: String,
    pub peer: String,
    pub cluster_id: u8,
    /// The other site's meta servers (this site's replica servers ship through them).
    pub peer_metas: usize,
    /// Put before this site's own keys (`Workload::prefix`).
    pub key_prefix: String,
    /// Keys both sites write.
    pub shared_keys: usize,
    /// Every clock of this site is off true time by this much (the skew between sites).
    pub wall_offset_us: i64,
    /// The duplication is added with `--sync-existing` while clients write (else before they
    /// start, so that it ships everything they write).
    pub sync_existing: bool,
    pub dup_add_at_us: u64,
    /// The operator pauses and resumes the duplication while faults go on.
    pub pause_toggles: bool,
    /// A small `max_value_bytes` at this site (batches over 4 × it are refused as too large, so
    /// the other site's duplicators halve them down to single records).
    pub value_bytes_max: Option<usize>,
    /// The servers compact with this tombstone retention, shorter than the cuts between sites.
    pub tombstone_retention_ms: u64,
}

impl Params {
    pub fn draw(rng: &mut Rng, fault_time_us: u64) -> Params {
        let servers = rng.range(3, 5) as usize;
        Params {
            metas: *rng.pick(&[1, 1, 2, 2, 3]),
            meta_lease_ttl_ms: rng.range(2_000, 12_000),
            // Now and then a slow store: beacons must not wait behind it.
            store_latency_us_max: if rng.chance(0.2) { rng.range(50_000, 400_000) } else { 3_000 },
            servers,
            partitions: 1 << rng.range(0, 2),
            replica_count: (*rng.pick(&[1, 2, 3, 3, 3, 3]) as usize).min(servers) as u32,
            clients: rng.range(2, 4) as usize,
            register_keys: rng.range(2, 6) as usize,
            // A small log cache sends learners to checkpoints.
            log_cache_bytes_max: if rng.chance(0.4) { rng.range(512, 8_192) as usize } else { 64 << 20 },
            policy_changes: rng.chance(0.5),
            table_churn: rng.chance(0.5),
            recall_window_ms: rng.range(2_000, 20_000),
            inactive_replica_gc_delay_ms: rng.range(3_000, 30_000),
            checkpoints_per_partition_max: rng.range(1, 3) as usize,
            checkpoint_hold_ms: rng.range(500, 20_000),
            fault_time_us,
            site: None,
            backup: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Running,
    Healing { heal_us: u64 },
    FinalReads { from_op: usize, deadline_us: u64 },
    Converging { from_op: usize, deadline_us: u64 },
    Done,
}

/// Why a seed failed.
#[derive(Clone, Debug)]
pub struct Failure {
    pub at_us: u64,
    pub message: String,
}

pub struct Sim {
    pub seed: u64,
    pub params: Params,
    pub plan: FaultPlan,
    pub rng: Rng,
    pub now_us: u64,
    queue: BTreeMap<(u64, u64), Event>,
    seq: u64,
    pub net: Network,
    /// The site: its meta servers, their store and its replica servers.
    pub site: Site,
    /// The table creation asked of meta `.0` as request `.1`, until it is answered.
    create_table: Option<(usize, u64)>,
    pub clients: Vec<SimClient>,
    pub history: History,
    pub stats: Stats,
    next_rpc: u64,
    pub trace: Option<Vec<TraceLine>>,
    hash: Fnv64,
    pub workload: Workload,
    faults_active: bool,
    partition_active: bool,
    /// Trace every message, not only the lost and blocked ones (`TANDEM_SIM_TRACE_MESSAGES=1`).
    trace_messages: bool,
    pub phase: Phase,
    single_primary: SinglePrimary,
    pub decree_agreement: DecreeAgreement,
    availability: Availability,
    /// Checks each key's history as its operations complete (the end-of-run search checks
    /// the whole history again).
    online_linearizable: OnlineLinearizable,
    /// A crash waiting for the next log write in flight (its arm number), see `CRASH_AT_LOG_WRITE_SHARE`.
    crash_armed: Option<u64>,
    arm_seq: u64,
    pub failure: Option<Failure>,
    /// Messages to the other site, for the world to carry (a two-site run).
    pub outbox: Vec<Envelope>,
    /// The duplication to the other site exists in the store.
    pub dup_ready: bool,
    /// When the last batch of the other site's records arrived (a two-site run): writes too, so
    /// the replicas' convergence is judged from the later of it and the clients' end (seed 2355:
    /// a backlog drained in small batches past this site's own 30 s).
    last_incoming_dup_us: u64,
    /// The operator wants the duplication paused.
    dup_pause_wanted: bool,
    /// Clients wait for the duplication (a two-site run without `sync_existing`).
    clients_gated: bool,
    /// The LWW oracle's view of this site: for each stored key of the workload table, the
    /// stored value with the largest timetag any replica here applied.
    pub oracle: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Runs that take backups: every decree of the workload table, to check restored data.
    pub backup_oracle: Oracle,
    /// Restores the operator asked for: (meta, token, backup), until answered.
    restore_asks: Vec<(usize, u64, u64)>,
    restores_asked: u32,
    /// Every table manifest the metas wrote, by its SHA-256: a restore's record names the one
    /// it read, whose objects retention may collect after the restore finished.
    table_manifests: BTreeMap<String, Vec<u8>>,
    /// Per backup of the workload table, each partition's highest decree applied anywhere when
    /// its record was stored: the backup must hold at least that (every acknowledged write).
    backup_floors: BTreeMap<u64, Vec<tandem_core::Decree>>,
}

/// What the trace shows of a message besides its kind.
fn message_detail(msg: &crate::msg::Msg) -> String {
    match msg {
        crate::msg::Msg::Prepare { msg, .. } => format!(
            " {} b{} [{}..={}] committed {}",
            msg.config.gpid,
            msg.config.ballot,
            msg.mutations.first().map_or(0, |m| m.decree),
            msg.mutations.last().map_or(0, |m| m.decree),
            msg.last_committed
        ),
        crate::msg::Msg::PrepareResp { reply, .. } => format!(" {reply:?}"),
        _ => String::new(),
    }
}

/// How a crash left the log, for the trace.
fn describe_crash(outcome: crate::disk::CrashOutcome) -> String {
    match (outcome.unsynced_lost, outcome.torn) {
        (0, _) => String::new(),
        (n, false) => format!(" (lost {n} unsynced log records)"),
        (n, true) => format!(" (lost {n} unsynced log records, the first one torn)"),
    }
}

/// Borrows the parts of the simulation a node may use while handling one event.
macro_rules! io {
    ($sim:ident, $out:expr) => {
        Io {
            now_us: $sim.now_us,
            rng: &mut $sim.rng,
            out: $out,
            stats: &mut $sim.stats,
            next_rpc: &mut $sim.next_rpc,
            trace: $sim.trace.as_mut(),
        }
    };
}

impl Sim {
    /// A run of `seed`: the seed draws the cluster's shape, the fault plan and everything after.
    pub fn new(seed: u64, fault_time_us: u64, allowed: &FaultSet, trace: bool) -> Sim {
        let mut rng = Rng::new(seed);
        let mut params = Params::draw(&mut rng, fault_time_us);
        params.backup = BackupParams::draw(seed);
        let plan = FaultPlan::draw(allowed, &mut rng, &mut FaultPlan::late_rng(seed));
        Sim::with(seed, rng, params, plan, trace)
    }

    pub fn with(seed: u64, mut rng: Rng, params: Params, plan: FaultPlan, trace: bool) -> Sim {
        let site_offset_us = params.site.as_ref().map_or(0, |s| s.wall_offset_us);
        let clock = |rng: &mut Rng| {
            let mut c = if plan.on(FaultKind::Drift) {
                let d = plan.drift_ppm_max;
                NodeClock { rate_ppm: rng.range(0, 2 * d) as i64 - d as i64, wall_offset_us: rng.range(0, 1_000_000) as i64 - 500_000 }
            } else {
                NodeClock::default()
            };
            c.wall_offset_us += site_offset_us;
            c
        };
        let metas_count = params.metas;
        let mut meta_options = MetaOptions { lease_ttl_ms: params.meta_lease_ttl_ms, recall_window_ms: params.recall_window_ms, ..MetaOptions::default() };
        if let Some(site) = &params.site {
            meta_options.site = site.name.clone();
            meta_options.peer_sites = vec![site.peer.clone()];
        }
        if params.backup.is_some() {
            meta_options.backup_target = crate::backup::TARGET.into();
            // A run lasts about a minute: an attempt is given up after 10 s of silence.
            meta_options.backup_job = tandem_backup_core::JobOptions { silence_ms: 10_000, attempts_max: 3, deadline_ms: 60_000 };
        }
        let metas = (0..params.metas)
            .map(|i| {
                let mut m = SimMeta::new(i, meta_options.clone(), clock(&mut rng));
                m.store_latency_us_max = params.store_latency_us_max;
                m
            })
            .collect();
        let mut opts = ServerOptions::default();
        // The server's log cache is shared among its replicas: a small one sends learners to
        // checkpoints.
        opts.host.log_cache_bytes_max = params.log_cache_bytes_max * params.partitions as usize;
        opts.host.inactive_replica_gc_delay_ms = params.inactive_replica_gc_delay_ms;
        opts.host.checkpoints_per_partition_max = params.checkpoints_per_partition_max;
        opts.host.checkpoint_hold_ms = params.checkpoint_hold_ms;
        if let Some(site) = &params.site {
            opts.host.replica.cluster_id = site.cluster_id;
            if let Some(v) = site.value_bytes_max {
                opts.host.replica.limits.value_bytes_max = v;
            }
            opts.compaction_retention_ms = Some(site.tombstone_retention_ms);
            // Heartbeats often enough that watermarks pass tombstones within a run.
            opts.host.duplicator.heartbeat_ms = Some(1_000);
        }
        let servers = (0..params.servers)
            .map(|i| {
                let mut opts = opts.clone();
                // The log is collected at a different pace on each server, and holds a different
                // amount before its engines are flushed (from the same draw, so that each seed's
                // other draws stay as they were).
                opts.host.log_gc_interval_ms = rng.range(1_000, 10_000);
                opts.host.log_retain_bytes = [0, 2_000, 20_000, u64::MAX][opts.host.log_gc_interval_ms as usize % 4];
                ReplicaServer::new(i, opts, clock(&mut rng), params.metas)
            })
            .collect();
        let clients = (0..params.clients).map(|c| SimClient::new(c, params.metas)).collect();
        let net = Network::new(plan.loss, plan.duplicate, plan.jitter_us);
        // Scenario scripts (no register keys) drive the clients themselves.
        let mut workload = Workload { register_keys: params.register_keys, active: params.register_keys > 0, ..Default::default() };
        if let Some(site) = &params.site {
            workload.prefix = site.key_prefix.clone();
            workload.shared_keys = site.shared_keys;
        }
        let clients_gated = params.site.as_ref().is_some_and(|s| !s.sync_existing) && workload.active;
        let mut sim = Sim {
            seed,
            stats: Stats { seed, ..Default::default() },
            params,
            plan,
            rng,
            now_us: 0,
            queue: BTreeMap::new(),
            seq: 0,
            net,
            site: Site { metas, store: MemStore::default(), servers, store_clogs: vec![0; metas_count], objects: Default::default() },
            create_table: None,
            clients,
            history: History::default(),
            next_rpc: 0,
            trace: trace.then(Vec::new),
            hash: Fnv64::default(),
            workload,
            faults_active: true,
            partition_active: false,
            trace_messages: std::env::var_os("TANDEM_SIM_TRACE_MESSAGES").is_some(),
            phase: Phase::Running,
            single_primary: SinglePrimary::default(),
            decree_agreement: DecreeAgreement::default(),
            availability: Availability::default(),
            online_linearizable: OnlineLinearizable::default(),
            crash_armed: None,
            arm_seq: 0,
            failure: None,
            outbox: Vec::new(),
            dup_ready: false,
            last_incoming_dup_us: 0,
            dup_pause_wanted: false,
            clients_gated,
            oracle: BTreeMap::new(),
            backup_oracle: Oracle::default(),
            restore_asks: Vec::new(),
            restores_asked: 0,
            table_manifests: BTreeMap::new(),
            backup_floors: BTreeMap::new(),
        };
        sim.stats.enabled = sim.plan.enabled.kinds().iter().map(|k| k.name()).collect();
        // Continuous kinds are properties of the whole run: count them once.
        for k in [FaultKind::Drift, FaultKind::Reorder] {
            if sim.plan.on(k) {
                sim.stats.fault(k.name());
            }
        }
        sim.start();
        sim
    }

    fn schedule(&mut self, at_us: u64, event: Event) {
        self.seq += 1;
        self.queue.insert((at_us.max(self.now_us), self.seq), event);
    }

    fn start(&mut self) {
        let mut out = Vec::new();
        let mut io = io!(self, &mut out);
        for m in &mut self.site.metas {
            m.boot(&mut io);
        }
        for s in &mut self.site.servers {
            // Staggered starts, as real servers never start at the same instant.
            s.boot(&mut io);
        }
        self.apply(out);
        self.schedule(CREATE_TABLE_US, Event::CreateTable);
        if !self.clients_gated {
            self.start_clients(CLIENTS_START_US);
        }
        if self.workload.active {
            // Client 0 opens the bank first.
            self.clients[0].queue.push_back((self.workload.bank_key(), OpKind::BankInit));
        }
        if let Some(site) = self.params.site.clone()
            && self.workload.active
        {
            self.schedule(site.dup_add_at_us, Event::DupSetup);
            if site.pause_toggles {
                let at = site.dup_add_at_us + self.rng.range(2_000_000, 10_000_000);
                self.schedule(at, Event::DupToggle);
            }
        }
        if !self.plan.enabled.kinds().is_empty() {
            let first = self.next_fault_delay();
            self.schedule(CLIENTS_START_US + first, Event::Fault);
        }
        if self.workload.active {
            self.schedule(self.params.fault_time_us.max(CLIENTS_START_US + 1_000_000), Event::Heal);
            if self.params.policy_changes {
                let at = CLIENTS_START_US + self.rng.range(1_000_000, 10_000_000);
                self.schedule(at, Event::PolicyChange);
            }
            if self.params.table_churn {
                let at = CLIENTS_START_US + self.rng.range(500_000, 5_000_000);
                self.schedule(at, Event::TableChurn);
            }
            if let Some(b) = &self.params.backup {
                let at = CLIENTS_START_US + self.rng.range(b.now_every_us.0, b.now_every_us.1);
                self.schedule(at, Event::BackupOperator);
            }
        }
    }

    fn start_clients(&mut self, at_us: u64) {
        for c in 0..self.clients.len() {
            self.clients[c].wake_scheduled = true;
            self.schedule(at_us + c as u64 * 1_000, Event::ClientWake { client: c });
        }
    }

    fn next_fault_delay(&mut self) -> u64 {
        let i = self.plan.fault_interval_ms * 1_000;
        self.rng.range(i / 2, i * 3 / 2)
    }

    /// Routes a node's sends through the network and queues its timers.
    fn apply(&mut self, out: Vec<Out>) {
        for o in out {
            match o {
                Out::Send(env) => self.send(env),
                Out::Timer { at_us, event } => self.schedule(at_us, event),
            }
        }
    }

    fn send(&mut self, env: Envelope) {
        if env.to.is_peer() {
            // The world carries it over the link between the sites.
            self.outbox.push(env);
            return;
        }
        let kind = env.msg.kind();
        self.hash.bytes(kind.as_bytes()).u64(env.from.code()).u64(env.to.code());
        let (from, to) = (env.from, env.to);
        let detail = if self.trace.is_some() { message_detail(&env.msg) } else { String::new() };
        let (fate, deliveries) = self.net.send(env, self.now_us, &mut self.rng);
        match fate {
            Fate::Lost => self.stats.fault("loss"),
            Fate::Duplicated => self.stats.fault("duplicate"),
            _ => {}
        }
        if let Some(t) = self.trace.as_mut()
            && (fate != Fate::Delivered || self.trace_messages)
        {
            let text = format!("{} -> {} {kind}{detail}: {fate:?}", from.name(), to.name());
            t.push(TraceLine { at_us: self.now_us, text, message: fate == Fate::Delivered });
        }
        for (at, env) in deliveries {
            self.schedule(at, Event::Deliver(env));
        }
    }

    pub fn fail(&mut self, message: String) {
        if self.failure.is_none() {
            self.failure = Some(Failure { at_us: self.now_us, message });
        }
    }

    /// Runs events up to `until_us` (inclusive), or until a checker fails or the run is done.
    pub fn run_until(&mut self, until_us: u64) {
        while self.failure.is_none() && self.phase != Phase::Done {
            match self.next_event_at() {
                Some(at) if at <= until_us => self.step_one(),
                _ => break,
            }
        }
        self.now_us = self.now_us.max(until_us.min(self.queue.first_key_value().map_or(until_us, |(k, _)| k.0)));
    }

    /// When the next event is due.
    pub fn next_event_at(&self) -> Option<u64> {
        self.queue.first_key_value().map(|(k, _)| k.0)
    }

    /// Handles the next event and runs the checkers after it.
    pub fn step_one(&mut self) {
        let Some(((at, _), event)) = self.queue.pop_first() else { return };
        self.now_us = at;
        self.stats.events += 1;
        self.hash.u64(at).u64(event.code());
        self.handle(event);
        self.check_step();
    }

    /// A message from the other site arrives at `at_us` (the world decided its fate).
    pub fn receive(&mut self, at_us: u64, env: Envelope) {
        if let crate::msg::Msg::ClientWrite { request: tandem_core::replica::WriteRequest::Duplicate { .. }, .. } = &env.msg {
            self.last_incoming_dup_us = self.last_incoming_dup_us.max(at_us);
        }
        self.schedule(at_us, Event::Deliver(env));
    }

    fn handle(&mut self, event: Event) {
        let mut out = Vec::new();
        match event {
            Event::Deliver(env) => {
                match (&env.msg, env.to) {
                    (_, Endpoint::Replica(i)) if !self.site.servers[i].up => {
                        self.refuse(i, env, &mut out);
                        self.apply(out);
                        return;
                    }
                    // Accepted by the host of a live server: the probe is answered there.
                    (Msg::Probe { node, probe }, Endpoint::Replica(i)) => {
                        let answer = Msg::ProbeAnswer { node: node.clone(), probe: *probe, refused: false };
                        out.push(Out::Send(Envelope { from: Endpoint::Replica(i), to: env.from, msg: answer }));
                        self.apply(out);
                        return;
                    }
                    _ => {}
                }
                let mut io = io!(self, &mut out);
                match env.to {
                    Endpoint::Meta(i) if self.site.metas[i].up => self.site.metas[i].on_message(&mut io, env.from, env.msg),
                    Endpoint::Replica(i) if self.site.servers[i].up => self.site.servers[i].on_message(&mut io, env.from, env.msg),
                    Endpoint::Client(i) => {
                        if let crate::msg::Msg::ClientReadResp { result: Ok(values), .. } = &env.msg
                            && values.len() > 1
                            && let Err(e) = bank::check_read(values)
                        {
                            self.failure.get_or_insert(Failure { at_us: self.now_us, message: e });
                        }
                        self.clients[i].on_message(&mut io, &mut self.history, env.msg);
                    }
                    _ => {}
                }
            }
            Event::HostTick { node, incarnation } => {
                if self.site.servers[node].incarnation == incarnation && self.site.servers[node].up {
                    self.site.servers[node].on_host_tick(&mut io!(self, &mut out));
                }
            }
            Event::ReplicaTurn { node, incarnation, gpid } => {
                if self.site.servers[node].incarnation == incarnation && self.site.servers[node].up {
                    self.site.servers[node].on_turn(&mut io!(self, &mut out), gpid);
                }
            }
            Event::LogWrite { node, incarnation } => {
                if self.site.servers[node].incarnation == incarnation && self.site.servers[node].up {
                    let write_fails = self.faults_active && self.rng.chance(self.plan.disk_write_fail);
                    let sync_at = self.site.servers[node].on_log_write(&mut io!(self, &mut out), write_fails);
                    if let Some(sync_at) = sync_at
                        && self.faults_active
                        && self.crash_armed.take().is_some()
                    {
                        // The armed crash hits while this fsync is in flight.
                        let at = self.rng.range(self.now_us, sync_at - 1);
                        self.schedule(at, Event::CrashReplica { node, incarnation });
                    }
                }
            }
            Event::LogSync { node, incarnation } => {
                if self.site.servers[node].incarnation == incarnation && self.site.servers[node].up {
                    let sync_fails = self.faults_active && self.rng.chance(self.plan.disk_sync_fail);
                    self.site.servers[node].on_log_sync(&mut io!(self, &mut out), sync_fails);
                }
            }
            Event::CheckpointMade { node, incarnation, gpid, id } => {
                if self.site.servers[node].incarnation == incarnation && self.site.servers[node].up {
                    self.site.servers[node].on_checkpoint_made(&mut io!(self, &mut out), gpid, id);
                }
            }
            Event::CheckpointActivated { node, incarnation, gpid, db, decree } => {
                if self.site.servers[node].incarnation == incarnation && self.site.servers[node].up {
                    self.site.servers[node].on_checkpoint_activated(&mut io!(self, &mut out), gpid, db, decree);
                }
            }
            Event::ReplicaDeleted { node, incarnation, gpid } => {
                if self.site.servers[node].incarnation == incarnation && self.site.servers[node].up {
                    self.site.servers[node].on_replica_deleted(&mut io!(self, &mut out), gpid);
                }
            }
            Event::SupervisorRestart { node, incarnation } => {
                if self.site.servers[node].incarnation == incarnation && self.site.servers[node].up {
                    self.site.servers[node].crash(&mut io!(self, &mut out), false);
                    // Its replicas stopped and its port closed until it starts again.
                    self.killed(node, &mut out);
                    let name = self.site.servers[node].me.clone();
                    let pause_ms = self.site.servers[node].restarts.on_failure(self.now_us / 1_000);
                    self.note(|| format!("{name}: its log failed; it starts again from its disk in {pause_ms} ms at the earliest"));
                    self.schedule(self.now_us + pause_ms * 1_000, Event::StartAfterLogFailure { node });
                }
            }
            Event::ShipRetry { node, incarnation, ship } => {
                if self.site.servers[node].incarnation == incarnation && self.site.servers[node].up {
                    self.site.servers[node].on_ship_retry(&mut io!(self, &mut out), ship);
                }
            }
            Event::DupSetup => self.dup_setup(&mut out),
            Event::DupToggle => self.dup_toggle(),
            Event::RpcTimeout { at, incarnation, rpc } => match at {
                Endpoint::Replica(i) => {
                    if self.site.servers[i].incarnation == incarnation && self.site.servers[i].up {
                        self.site.servers[i].on_rpc_failed(&mut io!(self, &mut out), rpc, false);
                    }
                }
                Endpoint::Client(i) => self.clients[i].on_timeout(&mut io!(self, &mut out), &mut self.history, rpc),
                Endpoint::Meta(_) | Endpoint::PeerMeta(_) | Endpoint::PeerReplica(_) => {}
            },
            Event::MetaTick { meta, incarnation } => {
                if self.site.metas[meta].up && self.site.metas[meta].incarnation == incarnation {
                    self.site.metas[meta].on_tick(&mut io!(self, &mut out));
                }
            }
            Event::MetaClaim { meta, incarnation } => {
                if self.site.metas[meta].up && self.site.metas[meta].incarnation == incarnation {
                    self.site.metas[meta].claim(&mut io!(self, &mut out));
                }
            }
            Event::MetaStoreApply { meta, incarnation, call } => {
                // A call from a process that crashed meanwhile dies with its connection.
                if self.site.store_clogs[meta] > self.now_us && self.faults_active {
                    let at = self.site.store_clogs[meta] + self.rng.range(0, 1_000);
                    self.schedule(at, Event::MetaStoreApply { meta, incarnation, call });
                } else if self.site.metas[meta].up && self.site.metas[meta].incarnation == incarnation {
                    let adds_backup = matches!(&call, crate::meta::StoreCall::Persist { write: tandem_meta_core::store::StoreWrite::AddBackup { table_id: TABLE_ID, .. }, .. });
                    self.site.metas[meta].apply_at_store(&mut io!(self, &mut out), &mut self.site.store, call);
                    if adds_backup && self.params.backup.is_some()
                        && let Some(b) = self.site.store.load().backups.last().filter(|b| b.table_id == TABLE_ID)
                        && !self.backup_floors.contains_key(&b.id)
                    {
                        let floors = (0..self.params.partitions).map(|p| self.decree_agreement.committed(Gpid::new(TABLE_ID, p))).collect();
                        self.backup_floors.insert(b.id, floors);
                    }
                }
            }
            Event::MetaStoreDone { meta, incarnation, answer } => {
                if self.site.metas[meta].up && self.site.metas[meta].incarnation == incarnation {
                    self.site.metas[meta].on_store_answer(&mut io!(self, &mut out), answer);
                }
            }
            Event::CreateTable => self.create_table(&mut out),
            Event::ClientWake { client } => {
                let w = self.workload.clone();
                self.clients[client].wake(&mut io!(self, &mut out), &mut self.history, &w);
            }
            Event::Fault => {
                if self.faults_active {
                    self.inject_fault(&mut out);
                    let next = self.next_fault_delay();
                    self.schedule(self.now_us + next, Event::Fault);
                }
            }
            Event::CrashReplica { node, incarnation } => {
                if self.faults_active && self.site.servers[node].incarnation == incarnation && self.site.servers[node].up {
                    self.crash_replica(node, &mut out);
                }
            }
            Event::CrashArmExpired { arm } => {
                if self.faults_active && self.crash_armed == Some(arm) {
                    self.crash_armed = None;
                    self.crash_random_replica(&mut out);
                }
            }
            Event::Restart(ep) => {
                let mut io = io!(self, &mut out);
                match ep {
                    Endpoint::Meta(i) if !self.site.metas[i].up => self.site.metas[i].boot(&mut io),
                    Endpoint::Replica(i) if !self.site.servers[i].up => self.site.servers[i].boot(&mut io),
                    _ => {}
                }
            }
            Event::Unblock { links } => {
                for (a, b) in links {
                    self.net.unblock(a, b);
                }
                self.partition_active = false;
            }
            Event::DiskRoom { node } => self.disk_room(node),
            // `tandem_host::Restarts` decides, as in the server: after the pause, with disk room.
            Event::StartAfterLogFailure { node } => {
                let server = &self.site.servers[node];
                if !server.up {
                    let now_ms = self.now_us / 1_000;
                    let short = server.disk_space.is_some_and(|(free, total)| {
                        tandem_core::disk::DiskWatch::new(server.opts.host.disk_reserve_bytes, server.opts.host.disk_reserve_percent)
                            .on_space(&[tandem_core::disk::DirSpace { dir: "data".into(), free_bytes: free, total_bytes: total }])
                            .is_some()
                    });
                    if server.restarts.may_start(now_ms, short) {
                        self.site.servers[node].boot(&mut io!(self, &mut out));
                    } else {
                        self.schedule(self.now_us + 100_000, Event::StartAfterLogFailure { node });
                    }
                }
            }
            Event::Heal => self.heal(&mut out),
            Event::PolicyChange => self.change_policy(&mut out),
            Event::TableChurn => self.churn_table(&mut out),
            Event::CheckProgress => self.check_progress(&mut out),
            Event::BackupOperator => self.backup_operator(&mut out),
            Event::MetaObjects { meta, incarnation, work } => {
                if self.site.metas[meta].up && self.site.metas[meta].incarnation == incarnation {
                    let faults = self.object_faults();
                    let manifest = match &work {
                        crate::meta::ObjectWork::Manifest { key, bytes, .. } => Some((key.clone(), bytes.clone())),
                        crate::meta::ObjectWork::Collect { .. } => None,
                    };
                    self.site.metas[meta].on_objects(&mut io!(self, &mut out), &mut self.site.objects, faults, work);
                    if let Some((key, bytes)) = manifest
                        && tandem_backup_core::ObjectStore::get(&self.site.objects, &key).ok().flatten().as_ref() == Some(&bytes)
                    {
                        self.table_manifests.insert(tandem_backup_core::manifest::sha256_hex(&bytes), bytes);
                    }
                }
            }
            Event::ReplicaObjects { node, incarnation, work } => {
                if self.site.servers[node].incarnation == incarnation && self.site.servers[node].up {
                    let faults = self.object_faults();
                    let crash_after = match &work {
                        crate::replica_server::ObjectWork::Upload { files, .. }
                            if self.faults_active && self.params.backup.as_ref().is_some_and(|b| self.rng.chance(b.crash_mid_upload)) =>
                        {
                            Some(self.rng.range(0, files.len() as u64) as usize)
                        }
                        _ => None,
                    };
                    if self.site.servers[node].on_objects(&mut io!(self, &mut out), &mut self.site.objects, faults, crash_after, work) {
                        self.stats.path(path::BACKUP_CRASH_MID_UPLOAD);
                        self.note(|| "fault: the next crash cuts an upload".into());
                        self.crash_replica(node, &mut out);
                    }
                }
            }
        }
        self.apply(out);
    }

    fn endpoints(&self) -> Vec<Endpoint> {
        self.site.endpoints()
    }

    fn inject_fault(&mut self, out: &mut Vec<Out>) {
        let discrete = [FaultKind::Crash, FaultKind::MetaCrash, FaultKind::Partition, FaultKind::AsymPartition, FaultKind::Clog, FaultKind::StoreClog, FaultKind::DiskFull];
        let kinds: Vec<FaultKind> = discrete.into_iter().filter(|k| self.plan.on(*k)).collect();
        if kinds.is_empty() {
            return;
        }
        let kind = *self.rng.pick(&kinds);
        match kind {
            FaultKind::Crash => {
                if self.crash_armed.is_none() && self.rng.chance(CRASH_AT_LOG_WRITE_SHARE) {
                    // Aim at the moment a server has written log records and waits for their
                    // fsync: what a crash loses or tears there is what the protocol must survive.
                    self.arm_seq += 1;
                    self.crash_armed = Some(self.arm_seq);
                    self.schedule(self.now_us + CRASH_ARM_TIMEOUT_US, Event::CrashArmExpired { arm: self.arm_seq });
                } else {
                    self.crash_random_replica(out);
                }
            }
            FaultKind::MetaCrash => {
                let up: Vec<usize> = (0..self.site.metas.len()).filter(|i| self.site.metas[*i].up).collect();
                if up.is_empty() {
                    return;
                }
                let i = *self.rng.pick(&up);
                self.site.metas[i].crash(&mut self.site.store);
                self.stats.fault("meta-crash");
                let name = Endpoint::Meta(i).name();
                self.note(|| format!("fault: crash {name}"));
                let back = self.rng.range(500_000, 10_000_000);
                self.schedule(self.now_us + back, Event::Restart(Endpoint::Meta(i)));
            }
            FaultKind::Partition => {
                if self.partition_active {
                    return;
                }
                let all = self.endpoints();
                let side: Vec<bool> = all.iter().map(|_| self.rng.chance(0.5)).collect();
                if side.iter().all(|s| *s) || side.iter().all(|s| !*s) {
                    return;
                }
                let mut links = Vec::new();
                for (i, a) in all.iter().enumerate() {
                    for (j, b) in all.iter().enumerate() {
                        if side[i] != side[j] {
                            self.net.block(*a, *b);
                            links.push((*a, *b));
                        }
                    }
                }
                self.partition_active = true;
                self.stats.fault("partition");
                let names: Vec<String> = all.iter().zip(&side).filter(|(_, s)| **s).map(|(e, _)| e.name()).collect();
                self.note(|| format!("fault: partition {names:?} from the rest"));
                let heal = self.rng.range(1_000_000, 12_000_000);
                self.schedule(self.now_us + heal, Event::Unblock { links });
            }
            FaultKind::AsymPartition => {
                let all = self.endpoints();
                let a = *self.rng.pick(&all);
                let b = *self.rng.pick(&all);
                if a == b {
                    return;
                }
                self.net.block(a, b);
                self.stats.fault("asym-partition");
                self.note(|| format!("fault: block {} -> {}", a.name(), b.name()));
                let heal = self.rng.range(500_000, 6_000_000);
                self.schedule(self.now_us + heal, Event::Unblock { links: vec![(a, b)] });
            }
            FaultKind::Clog => {
                let all = self.endpoints();
                let e = *self.rng.pick(&all);
                let until = self.now_us + self.rng.range(300_000, 4_000_000);
                self.net.clog(e, until);
                self.stats.fault("clog");
                self.note(|| format!("fault: clog {} until {until}µs", e.name()));
            }
            FaultKind::StoreClog => {
                let m = self.rng.range(0, self.site.metas.len() as u64 - 1) as usize;
                // Longer than most lease TTLs now and then, so a standby takes over.
                let until = self.now_us + self.rng.range(500_000, 15_000_000);
                self.site.store_clogs[m] = self.site.store_clogs[m].max(until);
                self.stats.fault("store-clog");
                let name = Endpoint::Meta(m).name();
                self.note(|| format!("fault: {name}'s store calls hang until {until}µs"));
                // The store may also end the session of a meta it cannot reach (keepalive) while
                // that meta lives on, or restart and end every session: a standby can then take
                // the lease early from a leader that still answers beacons.
                let r = self.rng.range(0, 99);
                if r < 30 {
                    self.end_store_session(m);
                    self.stats.path(path::STORE_SESSION_LOST);
                } else if r < 40 {
                    self.site.store.restart(self.now_us / 1_000);
                    self.stats.path(path::STORE_RESTARTED);
                    self.note(|| "fault: the store restarted (every session ended)".to_string());
                }
            }
            FaultKind::DiskFull => {
                let i = self.rng.index(self.site.servers.len());
                let free = self.rng.range(0, SIM_DISK_RESERVE);
                self.site.servers[i].disk_space = Some((free, SIM_DISK_BYTES));
                self.stats.fault("disk-full");
                let name = self.site.servers[i].me.clone();
                self.note(|| format!("fault: {name}'s disk below its reserve ({free} bytes free)"));
                let room = self.rng.range(300_000, 6_000_000);
                self.schedule(self.now_us + room, Event::DiskRoom { node: i });
            }
            _ => unreachable!("only discrete kinds are drawn"),
        }
    }

    /// Replica server `node`'s disk has room again (the disk-full fault ends, or heal).
    fn disk_room(&mut self, node: usize) {
        let server = &mut self.site.servers[node];
        if server.disk_space.is_some_and(|(free, _)| free < SIM_DISK_RESERVE) {
            server.disk_space = Some((SIM_DISK_BYTES / 2, SIM_DISK_BYTES));
            let name = server.me.clone();
            self.note(|| format!("{name}'s disk has room again"));
        }
    }

    fn crash_random_replica(&mut self, out: &mut Vec<Out>) {
        let up: Vec<usize> = (0..self.site.servers.len()).filter(|i| self.site.servers[*i].up).collect();
        if up.is_empty() {
            return;
        }
        let i = *self.rng.pick(&up);
        self.crash_replica(i, out);
    }

    /// The crash fault: server `i` stops, and restarts 0.5–10 s later.
    fn crash_replica(&mut self, i: usize, out: &mut Vec<Out>) {
        let torn_allowed = self.plan.on(FaultKind::TornTail);
        let outcome = self.site.servers[i].crash(&mut io!(self, out), torn_allowed);
        self.stats.fault("crash");
        if outcome.torn {
            self.stats.fault("torn-tail");
        }
        // Half the crashes kill the process on a live host (its port refuses), half take the
        // machine (silence, as a partition).
        let killed = self.rng.chance(0.5);
        let name = self.site.servers[i].me.clone();
        self.note(|| format!("fault: {} {name}{}", if killed { "kill" } else { "crash" }, describe_crash(outcome)));
        if killed {
            self.killed(i, out);
        }
        let back = self.rng.range(500_000, 10_000_000);
        self.schedule(self.now_us + back, Event::Restart(Endpoint::Replica(i)));
    }

    fn note(&mut self, line: impl FnOnce() -> String) {
        if let Some(t) = self.trace.as_mut() {
            t.push(TraceLine { at_us: self.now_us, text: line(), message: false });
        }
    }

    /// Faults stop: everything restarts and reconnects; then every partition must take a write.
    fn heal(&mut self, out: &mut Vec<Out>) {
        self.faults_active = false;
        self.crash_armed = None;
        self.workload.active = false;
        self.dup_pause_wanted = false;
        self.net.heal();
        self.net.loss = 0.0;
        self.net.duplicate = 0.0;
        self.partition_active = false;
        self.note(|| "heal: faults stop".into());
        for node in 0..self.site.servers.len() {
            self.disk_room(node);
        }
        let mut io = io!(self, out);
        for m in &mut self.site.metas {
            if !m.up {
                m.boot(&mut io);
            }
        }
        for s in &mut self.site.servers {
            if !s.up {
                s.boot(&mut io);
            }
        }
        self.phase = Phase::Healing { heal_us: self.now_us };
        self.enqueue_probes(out);
        self.schedule(self.now_us + CHECK_PROGRESS_US, Event::CheckProgress);
    }

    /// A key of partition `p` that no workload touches.
    fn probe_key(&self, p: u32) -> Vec<u8> {
        (0..)
            .map(|i| format!("{}probe{i}", self.workload.prefix).into_bytes())
            .find(|k| partition_index(k, self.params.partitions) == p)
            .expect("some key lands in p")
    }

    fn enqueue_probes(&mut self, out: &mut Vec<Out>) {
        for p in 0..self.params.partitions {
            if self.availability.acked_at_us.contains_key(&p) {
                continue;
            }
            let key = self.probe_key(p);
            let pending = self.history.ops.iter().any(|o| o.key == key && o.outcome == Outcome::Pending)
                || self.clients.iter().any(|c| c.queue.iter().any(|(k, _)| *k == key));
            if pending {
                continue;
            }
            let c = p as usize % self.clients.len();
            let value = format!("probe-{}", self.now_us).into_bytes();
            self.clients[c].queue.push_back((key, OpKind::Set { value }));
            self.clients[c].schedule_wake(&mut io!(self, out), 0);
        }
    }

    fn check_progress(&mut self, out: &mut Vec<Out>) {
        let now = self.now_us;
        match self.phase {
            Phase::Healing { heal_us } => {
                for p in 0..self.params.partitions {
                    let key = self.probe_key(p);
                    if let Some(t) = self
                        .history
                        .ops
                        .iter()
                        .filter(|o| o.key == key && matches!(o.outcome, Outcome::Ok(_)))
                        .filter_map(|o| o.return_us)
                        .min()
                    {
                        self.availability.acked(p, t);
                    }
                }
                match self.availability.check(self.params.partitions, heal_us, now) {
                    Ok(recovery) => {
                        self.stats.recovery_ms = recovery / 1_000;
                        self.phase = Phase::FinalReads { from_op: usize::MAX, deadline_us: now + RECOVERY_DEADLINE_US };
                    }
                    Err(e) if now >= heal_us + RECOVERY_DEADLINE_US => return self.fail(e),
                    Err(_) => self.enqueue_probes(out),
                }
            }
            Phase::FinalReads { from_op, deadline_us } => {
                if self.clients.iter().any(SimClient::busy) {
                    if now > deadline_us {
                        return self.fail("final reads did not finish within 30 s".into());
                    }
                } else if from_op == usize::MAX {
                    // Every workload op has finished: now read every key once more.
                    let from_op = self.history.ops.len();
                    for k in 0..self.params.register_keys {
                        let c = k % self.clients.len();
                        self.clients[c].queue.push_back((self.workload.register_key(k), OpKind::Get));
                    }
                    self.clients[0].queue.push_back((self.workload.bank_key(), OpKind::BankRead));
                    for c in 0..self.clients.len() {
                        self.clients[c].schedule_wake(&mut io!(self, out), 0);
                    }
                    self.phase = Phase::FinalReads { from_op, deadline_us };
                } else {
                    let failed: Vec<(Vec<u8>, OpKind)> = self.history.ops[from_op..]
                        .iter()
                        .filter(|o| o.outcome == Outcome::Failed)
                        .map(|o| (o.key.clone(), o.kind.clone()))
                        .collect();
                    let answered =
                        |key: &[u8]| self.history.ops[from_op..].iter().any(|o| o.key == key && matches!(o.outcome, Outcome::Ok(_)));
                    let retry: Vec<(Vec<u8>, OpKind)> = failed.into_iter().filter(|(k, _)| !answered(k)).collect();
                    if retry.is_empty() {
                        self.phase = Phase::Converging { from_op, deadline_us: now + CONVERGENCE_DEADLINE_US };
                    } else {
                        for (k, kind) in retry {
                            self.clients[0].queue.push_back((k, kind));
                        }
                        self.clients[0].schedule_wake(&mut io!(self, out), 0);
                    }
                }
            }
            Phase::Converging { from_op, deadline_us } => match self.check_convergence() {
                Ok(()) => {
                    self.phase = Phase::Done;
                    self.final_checks(from_op);
                    return;
                }
                Err(e) if now > deadline_us.max(self.last_incoming_dup_us + CONVERGENCE_DEADLINE_US) => {
                    return self.fail(format!("replicas did not converge within 30 s: {e}"));
                }
                Err(_) => {}
            },
            Phase::Running | Phase::Done => return,
        }
        self.schedule(now + CHECK_PROGRESS_US, Event::CheckProgress);
    }

    pub fn check_convergence(&self) -> Result<(), String> {
        // The replica count the policy asks for now (it may have changed during the run).
        let replica_count = self.site.store.load().tables.iter().find(|t| t.id == TABLE_ID).map_or(self.params.replica_count, |t| t.replica_count);
        for p in 0..self.params.partitions {
            let gpid = Gpid::new(TABLE_ID, p);
            let config = self.site.store.partition(gpid).ok_or_else(|| format!("the store has no partition {gpid}"))?;
            let members: Vec<convergence::MemberView> = self
                .site
                .servers
                .iter()
                .filter(|s| s.up && config.members().any(|m| *m == s.me))
                .filter_map(|s| {
                    let r = s.replica(gpid)?;
                    Some(convergence::MemberView {
                        node: s.me.clone(),
                        status: r.status().as_str(),
                        last_committed: r.last_committed(),
                        last_prepared: r.last_prepared(),
                        data: s.engine(gpid)?.data(),
                    })
                })
                .collect();
            convergence::check_partition(config, replica_count as usize, &members)?;
            for m in &members {
                bank::check_engine(&m.data, &self.workload.bank_key()).map_err(|e| format!("{} {gpid}: {e}", m.node))?;
            }
        }
        Ok(())
    }

    fn final_checks(&mut self, from_op: usize) {
        let final_ops = &self.history.ops[from_op..];
        let mut reads: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        let mut bank_version = None;
        let mut bank_read = false;
        for o in final_ops {
            match (&o.kind, &o.outcome) {
                (OpKind::Get, Outcome::Ok(Output::Value(v))) if !reads.iter().any(|(k, _)| *k == o.key) => {
                    reads.push((o.key.clone(), v.clone()))
                }
                (OpKind::BankRead, Outcome::Ok(Output::Bank(values))) => {
                    bank_read = true;
                    bank_version = crate::history::parse_bank(values).map(|(v, _)| v);
                }
                _ => {}
            }
        }
        let result = (|| {
            assert!(bank_read, "the final bank read is retried until it answers");
            self.online_linearizable.finish(&self.history)?;
            self.stats.lin_online_gave_up = self.online_linearizable.gave_up;
            self.stats.lin_online_widened = self.online_linearizable.widened();
            no_lost_writes::check_registers(&self.history, &reads)?;
            no_lost_writes::check_bank(&self.history, bank_version)?;
            let inconclusive = linearizable::check_history(&self.history, LINEARIZABILITY_BUDGET)?;
            self.stats.lin_inconclusive += inconclusive;
            if self.params.backup.is_some() {
                self.check_backups()?;
            }
            Ok::<(), String>(())
        })();
        if let Err(e) = result {
            self.fail(e);
        }
    }

    /// The checkers that run after every event: single primary, decree agreement, and the
    /// linearizability of each key whose operations returned since.
    fn check_step(&mut self) {
        let mut serving = Vec::new();
        for (i, s) in self.site.servers.iter().enumerate() {
            if !s.up {
                continue;
            }
            for (gpid, slot) in &s.replicas {
                if slot.hosted.core().status() == PartitionStatus::Primary && s.serving(*gpid, self.now_us) {
                    serving.push((*gpid, (i, *gpid)));
                }
            }
        }
        let now = self.now_us;
        let describe = |(i, gpid): (usize, Gpid)| {
            let s = &self.site.servers[i];
            let ctx = s.ctx(now);
            let ballot = s.replica(gpid).map_or(0, |r| r.ballot());
            format!("{} (ballot {ballot}, lease until {} ms, its clock {} ms)", s.me, ctx.lease_until_ms, ctx.now_ms)
        };
        if let Err(e) = self.single_primary.check(now, &serving, describe) {
            return self.fail(e);
        }
        // Two metas may both serve for a moment (a standby took the lease early from a leader that
        // lived on), but never under one epoch: the store's takeovers are what leaders answer by.
        let mut epochs = BTreeMap::new();
        for m in self.site.metas.iter().filter(|m| m.up && m.machine.state().is_some()) {
            if let Some(epoch) = m.machine.epoch()
                && let Some(other) = epochs.insert(epoch, m.name())
            {
                return self.fail(format!("{other} and {} both lead at epoch {epoch}", m.name()));
            }
        }
        let two_sites = self.params.site.is_some();
        for s in &self.site.servers {
            for (gpid, e) in s.engines() {
                let puts = e.take_puts();
                if two_sites && gpid.table_id == TABLE_ID {
                    for (key, value) in puts {
                        if let Err(message) = crate::check::lww::observe(&mut self.oracle, key, value) {
                            self.failure.get_or_insert(Failure { at_us: self.now_us, message });
                            return;
                        }
                    }
                }
                for a in e.take_applied() {
                    if let Err(msg) = self.decree_agreement.observe(&s.me, *gpid, a.decree, a.fingerprint) {
                        self.failure.get_or_insert(Failure { at_us: self.now_us, message: msg });
                        return;
                    }
                    if self.params.backup.is_some() && gpid.table_id == TABLE_ID {
                        self.backup_oracle.observe(*gpid, a.decree, a.timestamp_us, a.ops);
                    }
                }
            }
        }
        if let Err(e) = self.online_linearizable.observe(&self.history, self.now_us) {
            self.fail(e);
        }
    }

    /// Runs the whole seed: faults, healing, checks. Returns the stats, or the failure.
    pub fn run(mut self) -> (Stats, Option<Failure>, Option<Vec<String>>) {
        // Generous bound: healing, final reads and convergence each have their own deadline.
        let end = self.params.fault_time_us + RECOVERY_DEADLINE_US * 2 + CONVERGENCE_DEADLINE_US + 10_000_000;
        self.run_until(end);
        if self.failure.is_none() && self.phase != Phase::Done {
            self.fail(format!("the run did not finish by {}s (phase {:?})", end / 1_000_000, self.phase));
        }
        self.stats.sim_time_us = self.now_us;
        self.stats.trace_hash = self.hash.finish();
        let trace = self.trace.map(|t| t.iter().map(TraceLine::to_string).collect());
        (self.stats, self.failure, trace)
    }

    pub fn trace_hash(&self) -> u64 {
        self.hash.finish()
    }

    /// Crashes a node now (scripts); `torn`: the log may keep a torn last record.
    /// Crashes a node now (scripts). `kill`: a replica server's process dies on a live host,
    /// which refuses connections to its port; else the machine goes silent.
    pub fn crash(&mut self, ep: Endpoint, torn: bool, kill: bool) {
        let mut out = Vec::new();
        match ep {
            Endpoint::Meta(i) if self.site.metas[i].up => {
                self.site.metas[i].crash(&mut self.site.store);
                let name = ep.name();
                self.note(|| format!("crash {name}"));
            }
            Endpoint::Replica(i) if self.site.servers[i].up => {
                let outcome = self.site.servers[i].crash(&mut io!(self, &mut out), torn);
                let name = self.site.servers[i].me.clone();
                self.note(|| format!("{} {name}{}", if kill { "kill" } else { "crash" }, describe_crash(outcome)));
                if kill {
                    self.killed(i, &mut out);
                }
            }
            _ => {}
        }
        self.apply(out);
    }

    /// Replica server `i`'s process was killed: its port refuses from now until it restarts,
    /// and its host closes its connections, which breaks the watch streams it held.
    fn killed(&mut self, i: usize, out: &mut Vec<Out>) {
        self.stats.path(path::KILLED);
        let server = &mut self.site.servers[i];
        server.port_refuses = true;
        let node = server.me.clone();
        for (m, meta) in self.site.metas.iter_mut().enumerate() {
            if meta.watchers.contains(&node) {
                out.push(Out::Send(Envelope { from: Endpoint::Replica(i), to: Endpoint::Meta(m), msg: Msg::WatchBroken { node: node.clone() } }));
            }
        }
    }

    /// A message reached replica server `i`'s host while the server is down: a killed process's
    /// host refuses the connection (requests fail at once, probes are refused); a machine that is
    /// gone says nothing.
    fn refuse(&mut self, i: usize, env: Envelope, out: &mut Vec<Out>) {
        if !self.site.servers[i].port_refuses {
            return;
        }
        let from = Endpoint::Replica(i);
        let msg = match env.msg {
            Msg::Probe { node, probe } => Msg::ProbeAnswer { node, probe, refused: true },
            msg => match msg.request_rpc() {
                Some(rpc) => Msg::RpcFailed { rpc, not_sent: true, refused: true },
                None => return,
            },
        };
        out.push(Out::Send(Envelope { from, to: env.from, msg }));
    }

    /// Restarts a crashed node now (scripts).
    pub fn restart(&mut self, ep: Endpoint) {
        let mut out = Vec::new();
        let mut io = io!(self, &mut out);
        match ep {
            Endpoint::Meta(i) if !self.site.metas[i].up => self.site.metas[i].boot(&mut io),
            Endpoint::Replica(i) if !self.site.servers[i].up => self.site.servers[i].boot(&mut io),
            _ => {}
        }
        self.apply(out);
    }

    /// Queues an operation on client 0 (scripts).
    pub fn client_op(&mut self, key: Vec<u8>, kind: OpKind) {
        let mut out = Vec::new();
        self.clients[0].queue.push_back((key, kind));
        self.clients[0].schedule_wake(&mut io!(self, &mut out), 0);
        self.apply(out);
    }

    /// A proposal handed to the leading meta server as if `from` sent it (scripts): the answer,
    /// once the store write it waits for is done.
    pub fn propose(
        &mut self,
        gpid: Gpid,
        from: &str,
        proposal: &tandem_core::replica::ConfigProposal,
    ) -> Result<tandem_core::PartitionConfig, String> {
        let request = MetaRequest::Propose { gpid, from: from.to_string(), proposal: proposal.clone() };
        match self.admin(request, 10_000_000)? {
            MetaReply::Proposed { config } => Ok(config),
            other => Err(format!("the meta answered {other:?}")),
        }
    }

    /// Asks the leading meta server as an operator would and runs the simulation until it
    /// answers (scripts), at most `within_us`.
    pub fn admin(&mut self, request: MetaRequest, within_us: u64) -> Result<MetaReply, String> {
        let i = self.leading_meta().ok_or("no meta server leads")?;
        let mut out = Vec::new();
        let token = self.site.metas[i].admin(&mut io!(self, &mut out), request);
        self.apply(out);
        let deadline = self.now_us + within_us;
        loop {
            if let Some(answer) = self.site.metas[i].admin_answers.remove(&token) {
                return answer.map_err(|e| e.to_string());
            }
            let next = self.queue.first_key_value().map(|(k, _)| k.0);
            match next {
                Some(at) if at <= deadline && self.failure.is_none() => self.run_until(at),
                _ => return Err("the meta did not answer in time".into()),
            }
        }
    }

    /// Meta server `i`'s store calls hang until `until_us`, then go through (scripts).
    pub fn hang_store(&mut self, i: usize, until_us: u64) {
        self.site.store_clogs[i] = self.site.store_clogs[i].max(until_us);
        let name = Endpoint::Meta(i).name();
        self.note(|| format!("{name}'s store calls hang until {until_us}µs"));
    }

    /// The store ends meta server `i`'s session (and frees its lock) while the meta lives on.
    pub fn end_store_session(&mut self, i: usize) {
        let holder = self.site.metas[i].holder();
        self.site.store.session_closed(&holder);
        let name = Endpoint::Meta(i).name();
        self.note(|| format!("the store ended {name}'s session"));
    }

    /// The meta server that leads with its store loaded, if one does.
    pub fn leading_meta(&self) -> Option<usize> {
        self.site.leading_meta()
    }

    /// The configuration of `gpid` the store holds (what the leading meta answers with).
    pub fn config(&self, gpid: Gpid) -> Option<&tandem_core::PartitionConfig> {
        self.site.config(gpid)
    }

    /// The operator sets the workload table's replica count (1 to the servers there are, at most
    /// 5), while faults go on; the meta reconciles it.
    fn change_policy(&mut self, out: &mut Vec<Out>) {
        if !self.faults_active {
            return;
        }
        if let Some(i) = self.leading_meta() {
            let max = self.params.servers.min(5) as u64;
            let replicas = self.rng.range(1, max) as u32;
            let change = tandem_meta_core::policy::PolicyChange { replicas: Some(replicas), ..Default::default() };
            self.site.metas[i].admin_ignored(&mut io!(self, out), MetaRequest::SetPolicy { table: TABLE_NAME.into(), change, who: "sim".into() });
            self.note(|| format!("operator: policy set {TABLE_NAME} --replicas {replicas}"));
        }
        let next = self.rng.range(3_000_000, 15_000_000);
        self.schedule(self.now_us + next, Event::PolicyChange);
    }

    /// A second table comes and goes: created, dropped, sometimes recalled, purged once its
    /// recall window passes (and its replicas deleted by their servers).
    fn churn_table(&mut self, out: &mut Vec<Out>) {
        if !self.faults_active {
            return;
        }
        let tables = self.site.store.load().tables;
        // The workload's table comes first: it is the store's table 1.
        let workload_table = tables.iter().any(|t| t.id == TABLE_ID && t.name == TABLE_NAME);
        if let Some(i) = self.leading_meta().filter(|_| workload_table) {
            let scratch: Vec<&tandem_meta_core::TableInfo> = tables.iter().filter(|t| t.name == SCRATCH_TABLE).collect();
            let available = scratch.iter().any(|t| t.status == tandem_meta_core::TableStatus::Available);
            let (request, what) = if available {
                (MetaRequest::DropTable { name: SCRATCH_TABLE.into() }, "table drop")
            } else if !scratch.is_empty() && self.rng.chance(0.3) {
                (MetaRequest::RecallTable { name: SCRATCH_TABLE.into() }, "table recall")
            } else {
                let replicas = self.rng.range(1, self.params.servers.min(3) as u64) as u32;
                let change = tandem_meta_core::policy::PolicyChange { replicas: Some(replicas), ..Default::default() };
                (MetaRequest::CreateTable { name: SCRATCH_TABLE.into(), partition_count: 2, change, owner: "sim".into(), who: "sim".into() }, "table create")
            };
            self.site.metas[i].admin_ignored(&mut io!(self, out), request);
            self.note(|| format!("operator: {what} {SCRATCH_TABLE}"));
        }
        let next = self.rng.range(1_000_000, 8_000_000);
        self.schedule(self.now_us + next, Event::TableChurn);
    }

    /// Creates the workload's table through the leading meta, as `tandem table create` would,
    /// until it exists.
    fn create_table(&mut self, out: &mut Vec<Out>) {
        if let Some((i, token)) = self.create_table
            && let Some(answer) = self.site.metas[i].admin_answers.remove(&token)
        {
            self.create_table = None;
            if answer.is_ok() || self.site.store.load().tables.iter().any(|t| t.id == TABLE_ID) {
                return;
            }
        }
        if self.site.store.load().tables.iter().any(|t| t.id == TABLE_ID) {
            return;
        }
        if self.create_table.is_none()
            && let Some(i) = self.leading_meta()
        {
            let mut change = tandem_meta_core::policy::PolicyChange { replicas: Some(self.params.replica_count), ..Default::default() };
            if let Some(b) = &self.params.backup {
                // The schedule's shortest interval: its first backup comes at once, the next
                // after the run; the operator's `backup now` takes the others.
                change.backup_every_ms = Some(tandem_meta_core::policy::Toggle::On(60_000));
                change.backup_keep = Some(b.keep);
                change.backup_target = Some(crate::backup::TARGET.into());
            }
            let request = MetaRequest::CreateTable { name: TABLE_NAME.into(), partition_count: self.params.partitions, change, owner: "sim".into(), who: "sim".into() };
            let token = self.site.metas[i].admin(&mut io!(self, out), request);
            self.create_table = Some((i, token));
        }
        self.schedule(self.now_us + 500_000, Event::CreateTable);
    }

    /// The operator's side of duplication in a two-site run, every 500 ms: name the other site,
    /// add the workload table's duplication to it, and pause or resume it as wanted, each
    /// through the leading meta until the store shows it. Gated clients start once the
    /// duplication exists.
    fn dup_setup(&mut self, out: &mut Vec<Out>) {
        let Some(site) = self.params.site.clone() else { return };
        self.schedule(self.now_us + 500_000, Event::DupSetup);
        let snapshot = self.site.store.load();
        let dup = snapshot.dups.iter().find(|d| d.table_id == TABLE_ID && d.remote_site == site.peer && d.status != DupStatus::Removed);
        if dup.is_some() && !self.dup_ready {
            self.dup_ready = true;
            self.note(|| format!("operator: the duplication of {TABLE_NAME} to {} is in place", site.peer));
            if std::mem::take(&mut self.clients_gated) {
                self.start_clients(self.now_us);
            }
        }
        let Some(i) = self.leading_meta() else { return };
        let request = match dup {
            _ if !snapshot.tables.iter().any(|t| t.id == TABLE_ID) => return,
            None if !snapshot.sites.iter().any(|s| s.name == site.peer) => {
                // As `tandem site add` takes them: HOST:PORT (the port means nothing here).
                let metas = (0..site.peer_metas).map(|m| format!("{}:34601", Endpoint::Meta(m).name())).collect();
                MetaRequest::SiteAdd { site: PeerSite { name: site.peer.clone(), metas } }
            }
            None => MetaRequest::DupAdd {
                table: TABLE_NAME.into(),
                remote_site: site.peer.clone(),
                fail_mode: tandem_dup_core::FailMode::Slow,
                sync_existing: site.sync_existing,
            },
            Some(d) if (d.status == DupStatus::Pause) != self.dup_pause_wanted => {
                let status = if self.dup_pause_wanted { DupStatus::Pause } else { DupStatus::Start };
                MetaRequest::DupSetStatus { dup_id: d.id, status }
            }
            Some(_) => return,
        };
        self.site.metas[i].admin_ignored(&mut io!(self, out), request);
    }

    /// The operator pauses or resumes the duplication while faults go on.
    fn dup_toggle(&mut self) {
        if !self.faults_active {
            return;
        }
        self.dup_pause_wanted = !self.dup_pause_wanted;
        if self.dup_pause_wanted {
            self.stats.path(path::DUP_PAUSED);
        }
        let what = if self.dup_pause_wanted { "pause" } else { "resume" };
        self.note(|| format!("operator: dup {what} {TABLE_NAME}"));
        let next = self.rng.range(1_000_000, 8_000_000);
        self.schedule(self.now_us + next, Event::DupToggle);
    }

    /// The object store's faults now: the run's while faults are injected, none after.
    fn object_faults(&self) -> ObjectFaults {
        match &self.params.backup {
            Some(b) if self.faults_active && !self.plan.enabled.kinds().is_empty() => b.faults,
            _ => ObjectFaults::default(),
        }
    }

    /// The operator, while faults go on: `backup now` of the workload table (refused while
    /// one runs), or a restore of one of its backups into a new table — mostly a complete one,
    /// sometimes whatever record there is, which the meta must refuse unless it is complete.
    fn backup_operator(&mut self, out: &mut Vec<Out>) {
        let Some(b) = self.params.backup.clone() else { return };
        if !self.faults_active {
            return;
        }
        if let Err(e) = self.check_restore_answers() {
            return self.fail(e);
        }
        if let Some(i) = self.leading_meta() {
            let backups: Vec<(u64, bool)> =
                self.site.store.load().backups.iter().filter(|r| r.table_id == TABLE_ID).map(|r| (r.id, r.state == tandem_backup_core::BackupState::Complete)).collect();
            let complete: Vec<u64> = backups.iter().filter(|(_, c)| *c).map(|(id, _)| *id).collect();
            if self.restores_asked < b.restores_max && !backups.is_empty() && self.rng.chance(0.4) {
                let backup_id = if !complete.is_empty() && self.rng.chance(0.7) { *self.rng.pick(&complete) } else { self.rng.pick(&backups).0 };
                self.restores_asked += 1;
                let table = format!("restored{}", self.restores_asked);
                self.note(|| format!("operator: restore {backup_id} --table {table}"));
                let request = MetaRequest::Restore { backup_id, table: Some(table), as_original: false, who: "sim".into() };
                let token = self.site.metas[i].admin(&mut io!(self, out), request);
                self.restore_asks.push((i, token, backup_id));
            } else {
                self.note(|| format!("operator: backup now {TABLE_NAME}"));
                self.site.metas[i].admin_ignored(&mut io!(self, out), MetaRequest::BackupNow { table: TABLE_NAME.into(), target: None, who: "sim".into() });
            }
        }
        let next = self.rng.range(b.now_every_us.0, b.now_every_us.1);
        self.schedule(self.now_us + next, Event::BackupOperator);
    }

    /// A restore the meta accepted names a backup whose record says complete (or deleted
    /// since: deleted backups were complete).
    fn check_restore_answers(&mut self) -> Result<(), String> {
        if self.restore_asks.is_empty() {
            return Ok(());
        }
        let backups = self.site.store.load().backups;
        let mut pending = Vec::new();
        for (meta, token, backup_id) in std::mem::take(&mut self.restore_asks) {
            match self.site.metas[meta].admin_answers.remove(&token) {
                None => pending.push((meta, token, backup_id)),
                Some(Err(_)) => {}
                Some(Ok(_)) => {
                    let state = backups.iter().find(|r| r.id == backup_id).map(|r| r.state);
                    if !matches!(state, Some(tandem_backup_core::BackupState::Complete | tandem_backup_core::BackupState::Deleted)) {
                        return Err(format!("the meta accepted a restore of backup {backup_id}, whose record says {state:?}"));
                    }
                }
            }
        }
        self.restore_asks = pending;
        Ok(())
    }

    /// The drills at the end of a run that took backups: every complete backup restores to
    /// exactly what was committed at its decrees; every restore came from a complete backup;
    /// every member of a restored table's partitions holds exactly that state.
    fn check_backups(&mut self) -> Result<(), String> {
        self.check_restore_answers()?;
        let snapshot = self.site.store.load();
        let drilled = crate::backup::check_complete_backups(&self.site.objects, &snapshot.backups, TABLE_ID, &self.backup_oracle, &self.backup_floors)?;
        for _ in 0..drilled {
            self.stats.path(path::BACKUP_DRILLED);
        }
        for r in &snapshot.restores {
            let fail = |what: String| format!("restore {} of backup {} into {}: {what}", r.id, r.backup_id, r.table_name);
            let b = snapshot.backups.iter().find(|b| b.id == r.backup_id).ok_or_else(|| fail("no such backup record".into()))?;
            let was_complete = matches!(b.state, tandem_backup_core::BackupState::Complete | tandem_backup_core::BackupState::Deleted) && !b.manifest_sha256.is_empty();
            if !was_complete || b.manifest_sha256 != r.manifest_sha256 {
                return Err(fail(format!("the backup's record says {:?} with manifest {:?}, the restore's {:?}", b.state, b.manifest_sha256, r.manifest_sha256)));
            }
            if r.state != tandem_meta_core::backup::RestoreState::Complete || r.source_table_id != TABLE_ID {
                continue;
            }
            let bytes = self.table_manifests.get(&r.manifest_sha256).ok_or_else(|| fail("no table manifest was written with the checksum its record names".into()))?;
            let key = tandem_backup_core::layout::table_manifest_key(r.source_table_id, r.backup_id);
            let table = tandem_backup_core::TableManifest::decode(&key, bytes, r.source_table_id, r.backup_id).map_err(|e| fail(e.to_string()))?;
            for entry in &table.partitions {
                let want = self.backup_oracle.state_at(Gpid::new(TABLE_ID, entry.partition), entry.decree).map_err(fail)?;
                let gpid = Gpid::new(r.table_id, entry.partition);
                let Some(config) = self.site.store.partition(gpid) else { continue };
                for s in self.site.servers.iter().filter(|s| s.up && (config.primary.as_ref() == Some(&s.me) || config.secondaries.contains(&s.me))) {
                    let serving = s.replica(gpid).is_some_and(|r| matches!(r.status(), PartitionStatus::Primary | PartitionStatus::Secondary));
                    let Some(engine) = s.engine(gpid).filter(|_| serving) else { continue };
                    let got = engine.data();
                    if got != want {
                        return Err(fail(format!("{} {gpid} does not hold partition {}'s state at decree {}: {}", s.me, entry.partition, entry.decree, crate::backup::describe_difference(&got, &want))));
                    }
                    self.stats.path(path::RESTORE_CHECKED);
                }
            }
        }
        Ok(())
    }

    /// Number of servers that are up.
    pub fn up_count(&self) -> usize {
        self.site.up_count()
    }
}
