//! One task per replica: receives events, feeds them to its `HostedReplica` (tandem-host) a turn
//! at a time, and carries out the actions of each turn. No protocol decision is made here: the
//! hosted replica decides; this file does the IO (log appends, RPCs, RocksDB, files).

use crate::error::Error as ServerError;
use crate::node::{active_db_dir, Node};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tandem_core::replica::{DiskLow, LearnReply, LearnRequest, PrepareMsg, PrepareOutcome, PrepareReply, ReplicaState, WriteResponse};
use tandem_core::storage::KvEngine;
use tandem_core::{Decree, Error, Gpid, LogRecord, Mutation, WriteOp};
use tandem_dup_core::{Input as DupInput, ShipFailure as DupFailure};
use tandem_host::{Carrier, DupWork, HostInput, HostedReplica, ReplicaAction, ReplicaEvent};
use tandem_proto::convert::config_to_wire;
use tandem_proto::v1;
use tandem_storage::{RocksEngine, TableCompaction};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

/// The RocksDB engine shared between the core (which applies to it), the runtime (which flushes
/// and checkpoints it) and the read path (which reads it outside the replica's task). Reads
/// share the lock; only applying a mutation takes it alone.
#[derive(Clone)]
pub struct SharedEngine(Arc<RwLock<RocksEngine>>);

impl SharedEngine {
    pub fn new(engine: RocksEngine) -> Self {
        SharedEngine(Arc::new(RwLock::new(engine)))
    }

    pub fn with<T>(&self, f: impl FnOnce(&RocksEngine) -> T) -> T {
        f(&self.0.read().expect("engine lock"))
    }
}

impl KvEngine for SharedEngine {
    fn get(&self, key: &[u8]) -> tandem_core::Result<Option<Vec<u8>>> {
        self.0.read().expect("engine lock").get(key)
    }

    fn scan(&self, start: &[u8], end: Option<&[u8]>, limit: usize) -> tandem_core::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.0.read().expect("engine lock").scan(start, end, limit)
    }

    fn apply(&mut self, decree: Decree, timestamp_us: u64, ops: &[WriteOp]) -> tandem_core::Result<()> {
        self.0.write().expect("engine lock").apply(decree, timestamp_us, ops)
    }

    fn apply_many(&mut self, mutations: &[Arc<Mutation>]) -> tandem_core::Result<()> {
        self.0.write().expect("engine lock").apply_many(mutations)
    }

    fn last_applied_decree(&self) -> Decree {
        self.0.read().expect("engine lock").last_applied_decree()
    }

    fn clock_bound_us(&self) -> u64 {
        self.0.read().expect("engine lock").clock_bound_us()
    }

    fn dup_watermarks(&self) -> std::collections::BTreeMap<u8, u64> {
        self.0.read().expect("engine lock").dup_watermarks()
    }
}

pub type ReadFn = Box<dyn FnOnce(Result<&dyn KvEngine, Error>, u32) + Send>;

/// Where the answer to a write or a prepare goes: called once, on the replica's task, with the
/// answer, or with None when the replica drops the request unanswered (it stopped). A caller on a
/// batch stream puts the reply straight into the stream's outgoing queue, without a task or a
/// channel of its own per call.
pub struct Reply<T: 'static>(Option<Box<dyn FnOnce(Option<T>) + Send>>);

impl<T: 'static> Reply<T> {
    pub fn new(f: impl FnOnce(Option<T>) + Send + 'static) -> Self {
        Reply(Some(Box::new(f)))
    }

    pub fn send(mut self, answer: T) {
        if let Some(f) = self.0.take() {
            f(Some(answer));
        }
    }
}

impl<T: 'static> Drop for Reply<T> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f(None);
        }
    }
}

/// The server's carriers: reply sinks and channels (dropped unanswered, they answer "dropped").
pub struct Rt;

impl Carrier for Rt {
    type Write = Reply<Result<WriteResponse, Error>>;
    type Prepare = Reply<PrepareReply>;
    type Learn = oneshot::Sender<LearnReply>;
    type Read = ReadFn;
}

pub enum Event {
    /// Stepped by the hosted replica, in turns.
    Replica(ReplicaEvent<Rt>),
    /// `ActivateCheckpoint` finished: the engine to switch to, or why not.
    Activated { result: Result<SharedEngine, String> },
    Stop { done: oneshot::Sender<()> },
}

impl From<ReplicaEvent<Rt>> for Event {
    fn from(e: ReplicaEvent<Rt>) -> Self {
        Event::Replica(e)
    }
}

#[derive(Clone)]
pub struct ReplicaHandle {
    gpid: Gpid,
    tx: mpsc::UnboundedSender<Event>,
    state: Arc<Mutex<ReplicaState>>,
    /// The progress of the duplicators this replica runs as primary, after its last turn.
    dups: Arc<Mutex<Vec<v1::DupProgress>>>,
    /// The engine while the hosted replica holds its read gate open (set at the end of each
    /// turn), else None: reads use it directly, without a trip through the task.
    read_gate: Arc<RwLock<Option<SharedEngine>>>,
    /// The engine the replica uses until it stops, whatever its role: for the server's figures
    /// (RocksDB properties) and the log GC's durable decrees and flushes, never for reads.
    engine: Arc<Mutex<Option<SharedEngine>>>,
    /// `HostedReplica::next_tick_ms` after the last turn.
    next_tick_ms: Arc<AtomicU64>,
}

impl ReplicaHandle {
    pub fn gpid(&self) -> Gpid {
        self.gpid
    }

    /// False when the replica's task has stopped.
    pub fn send(&self, event: impl Into<Event>) -> bool {
        self.tx.send(event.into()).is_ok()
    }

    pub fn is_stopped(&self) -> bool {
        self.tx.is_closed()
    }

    pub fn state(&self) -> ReplicaState {
        self.state.lock().expect("state lock").clone()
    }

    /// The engine to read from if the replica may serve reads (the server's lease apart, which
    /// the caller checks at read time).
    pub fn read_engine(&self) -> Option<SharedEngine> {
        self.read_gate.read().expect("read gate lock").clone()
    }

    /// Whether the replica wants a tick at `now_ms` (`HostedReplica::next_tick_ms`, as of the
    /// end of its last turn).
    pub fn tick_due(&self, now_ms: u64) -> bool {
        self.next_tick_ms.load(Ordering::Relaxed) <= now_ms
    }

    /// The replica's engine, for figures, durable decrees and flushes (None once it stopped).
    pub fn engine(&self) -> Option<SharedEngine> {
        self.engine.lock().expect("engine slot lock").clone()
    }

    pub fn dup_progress(&self) -> Vec<v1::DupProgress> {
        self.dups.lock().expect("dup progress lock").clone()
    }

    pub fn report(&self) -> v1::ReplicaReport {
        let s = self.state();
        v1::ReplicaReport {
            gpid: Some(s.gpid.into()),
            ballot: s.ballot,
            status: s.status.as_str().to_string(),
            last_committed: s.last_committed,
            last_prepared: s.last_prepared,
            last_durable: s.last_durable,
        }
    }
}

/// The ship task's own bound: the client's request timeout and a margin.
const SHIP_BOUND: std::time::Duration = crate::node::SHIP_REQUEST_TIMEOUT.saturating_add(crate::node::SHIP_TIMEOUT_MARGIN);

/// How the other site's refusal of a batch reads to the duplicator.
fn ship_failure(e: tandem_client::ClientError) -> DupFailure {
    use tandem_client::ClientError;
    match e {
        ClientError::TooLarge(_) => DupFailure::TooLarge,
        ClientError::ClockAhead(_) => DupFailure::ClockAhead,
        // A wrong route even after the client refreshed it: the other site's table changed
        // under the duplicator (recreated); it ships again with a fresh route.
        ClientError::Unavailable(m) | ClientError::Internal(m) | ClientError::WrongRoute(m) | ClientError::OutcomeUnknown(m) | ClientError::DiskFull(m) => {
            DupFailure::Unavailable(m)
        }
        ClientError::NotFound(m) | ClientError::InvalidArgument(m) | ClientError::AlreadyExists(m) => DupFailure::Refused(m),
    }
}

pub fn spawn(node: Arc<Node>, replica: HostedReplica<Rt>, engine: SharedEngine, dir: PathBuf) -> ReplicaHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let state = Arc::new(Mutex::new(replica.state()));
    let read_gate = Arc::new(RwLock::new(None));
    let dups = Arc::new(Mutex::new(Vec::new()));
    let engine_slot = Arc::new(Mutex::new(Some(engine.clone())));
    let next_tick_ms = Arc::new(AtomicU64::new(0));
    let handle = ReplicaHandle {
        gpid: replica.gpid(),
        tx: tx.clone(),
        state: state.clone(),
        dups: dups.clone(),
        read_gate: read_gate.clone(),
        engine: engine_slot.clone(),
        next_tick_ms: next_tick_ms.clone(),
    };
    let task = ReplicaTask {
        node,
        replica,
        engine,
        engine_slot,
        dir,
        tx,
        state,
        dups,
        read_gate,
        next_tick_ms,
        fetches: JoinSet::new(),
        disk_work: JoinSet::new(),
    };
    tokio::spawn(task.run(rx));
    handle
}

struct ReplicaTask {
    node: Arc<Node>,
    replica: HostedReplica<Rt>,
    engine: SharedEngine,
    engine_slot: Arc<Mutex<Option<SharedEngine>>>,
    dir: PathBuf,
    tx: mpsc::UnboundedSender<Event>,
    state: Arc<Mutex<ReplicaState>>,
    dups: Arc<Mutex<Vec<v1::DupProgress>>>,
    read_gate: Arc<RwLock<Option<SharedEngine>>>,
    next_tick_ms: Arc<AtomicU64>,
    /// Checkpoint fetches in flight: stopped with the replica.
    fetches: JoinSet<()>,
    /// IO on the replica's directory and checkpoints (make, activate, delete): the replica does
    /// not stop before it is done, so nothing writes into a directory being deleted.
    disk_work: JoinSet<()>,
}

impl ReplicaTask {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Event>) {
        let mut next = None;
        loop {
            let event = match next.take() {
                Some(e) => e,
                None => match rx.recv().await {
                    Some(e) => e,
                    None => break,
                },
            };
            match event {
                Event::Stop { done } => {
                    self.fetches.abort_all();
                    while self.fetches.join_next().await.is_some() {}
                    while self.disk_work.join_next().await.is_some() {}
                    let _ = done.send(());
                    break;
                }
                other => self.step(other),
            }
            // Events queued meanwhile join the turn, so the actions of many client writes leave
            // together (one log append for all their mutations, one prepare each).
            while !self.replica.turn_full() {
                match rx.try_recv() {
                    Ok(e @ Event::Stop { .. }) => {
                        next = Some(e);
                        break;
                    }
                    Ok(e) => self.step(e),
                    Err(_) => break,
                }
            }
            let actions = self.replica.end_turn(&self.node.ctx());
            self.execute(actions);
            while self.fetches.try_join_next().is_some() {}
            while self.disk_work.try_join_next().is_some() {}
            *self.state.lock().expect("state lock") = self.replica.state();
            self.next_tick_ms.store(self.replica.next_tick_ms(), Ordering::Relaxed);
            self.publish_dup_progress();
        }
        // Stopped: no more reads from this engine.
        *self.read_gate.write().expect("read gate lock") = None;
        *self.engine_slot.lock().expect("engine slot lock") = None;
    }

    fn step(&mut self, event: Event) {
        let ctx = self.node.ctx();
        match event {
            Event::Replica(e) => self.replica.step(&ctx, e),
            Event::Activated { result } => {
                let result = result.map(|engine| {
                    self.engine = engine.clone();
                    *self.engine_slot.lock().expect("engine slot lock") = Some(engine.clone());
                    Box::new(engine) as Box<dyn KvEngine>
                });
                self.replica.step(&ctx, ReplicaEvent::CheckpointActivated { result });
            }
            Event::Stop { .. } => unreachable!("handled by the loop"),
        }
    }

    fn publish_dup_progress(&self) {
        // Most replicas run no duplicator: nothing to build or lock for them, turn after turn.
        if !self.replica.duplications().is_running() && self.dups.lock().expect("dup progress lock").is_empty() {
            return;
        }
        let ctx = self.node.ctx();
        let gpid = self.replica.gpid();
        let now = tandem_dup_core::Now { now_ms: ctx.now_ms, wall_us: ctx.wall_us };
        let progress = self
            .replica
            .duplications()
            .progress(now)
            .into_iter()
            .map(|(dup_id, s)| v1::DupProgress {
                gpid: Some(gpid.into()),
                dup_id,
                confirmed: s.confirmed,
                lag_decrees: s.lag_decrees,
                lag_ms: s.lag_ms,
                phase: s.phase.to_string(),
                last_error: s.last_error.unwrap_or_default(),
                resyncs: s.resyncs,
                watermark_us: s.watermark_us,
            })
            .collect();
        *self.dups.lock().expect("dup progress lock") = progress;
    }

    fn send_later(&self, event: ReplicaEvent<Rt>) {
        let _ = self.tx.send(Event::Replica(event));
    }

    fn execute(&mut self, actions: Vec<ReplicaAction<Rt>>) {
        let gpid = self.replica.gpid();
        for action in actions {
            match action {
                ReplicaAction::AppendLog { mutations } => self.append_log(mutations),
                ReplicaAction::AppendReset { decree } => {
                    let tx = self.tx.clone();
                    self.node.log.append(
                        vec![LogRecord::Reset { gpid, decree }],
                        Box::new(move |result| {
                            let event = match result {
                                Ok(()) => ReplicaEvent::ResetLogged,
                                Err(e) => ReplicaEvent::LogFailed { error: e.to_string() },
                            };
                            let _ = tx.send(Event::Replica(event));
                        }),
                    );
                }
                ReplicaAction::SendPrepare { to, msg } => self.send_prepare(to, msg),
                ReplicaAction::ReplyPrepare { to, reply } => to.send(reply),
                ReplicaAction::ReplyWrite { to, result } => to.send(result),
                ReplicaAction::ReplyLearn { to, reply } => {
                    let _ = to.send(reply);
                }
                ReplicaAction::ServeRead { to, result } => {
                    let now_s = self.node.ctx().now_s();
                    match result {
                        Ok(()) => to(Ok(&self.engine), now_s),
                        Err(e) => to(Err(e), now_s),
                    }
                }
                ReplicaAction::ProposeConfig { proposal } => self.propose(proposal),
                ReplicaAction::SendLearnRequest { to, request } => self.send_learn(to, request),
                ReplicaAction::MakeCheckpoint { id } => {
                    let node = self.node.clone();
                    let engine = self.engine.clone();
                    let tx = self.tx.clone();
                    self.disk_work.spawn(async move {
                        let result = node.checkpoints.create(gpid, &id, engine).await.map_err(|e| e.to_string());
                        let _ = tx.send(Event::Replica(ReplicaEvent::CheckpointMade { id, result }));
                    });
                }
                ReplicaAction::DeleteCheckpoint { id } => self.node.checkpoints.delete(gpid, &id),
                ReplicaAction::FetchCheckpoint { from, checkpoint_id, decree } => {
                    let node = self.node.clone();
                    let tx = self.tx.clone();
                    let dir = self.dir.clone();
                    self.fetches.spawn(async move {
                        let result = match crate::checkpoint::fetch(&node, gpid, &from, &checkpoint_id, &dir).await {
                            Ok((db, fetched)) if fetched == decree => Ok((db, decree)),
                            Ok((db, fetched)) => {
                                let _ = std::fs::remove_dir_all(dir.join(db));
                                Err(format!("checkpoint holds decree {fetched}, expected {decree}"))
                            }
                            Err(e) => {
                                tracing::warn!("{gpid}: fetching checkpoint {checkpoint_id} from {from} failed: {e}");
                                Err(e.to_string())
                            }
                        };
                        let _ = tx.send(Event::Replica(ReplicaEvent::CheckpointFetched { result }));
                    });
                }
                ReplicaAction::ActivateCheckpoint { db, decree } => {
                    let (dir, memory, tx) = (self.dir.clone(), self.node.engine_memory.clone(), self.tx.clone());
                    let compaction = self.node.compaction_of(gpid.table_id);
                    self.disk_work.spawn(async move {
                        let _ = tokio::task::spawn_blocking(move || {
                            let result = activate(&dir, &db, decree, &memory, compaction).map_err(|e| e.to_string());
                            if result.is_ok() {
                                tracing::info!("{gpid}: installed checkpoint at decree {decree}");
                            }
                            let _ = tx.send(Event::Activated { result });
                        })
                        .await;
                    });
                }
                ReplicaAction::DeleteDatabasesExcept { keep } => {
                    // Learners install checkpoints, so the read gate is closed already.
                    let dir = self.dir.clone();
                    self.disk_work.spawn(async move {
                        let _ = tokio::task::spawn_blocking(move || delete_databases_except(&dir, &keep)).await;
                    });
                }
                ReplicaAction::DeleteDatabase { db } => {
                    let path = self.dir.join(db);
                    self.disk_work.spawn(async move {
                        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(path)).await;
                    });
                }
                ReplicaAction::SetReadGate { open } => {
                    *self.read_gate.write().expect("read gate lock") = open.then(|| self.engine.clone());
                    // Backups start only on reconciled primaries (tandem_host::Backups).
                    self.node.host_step(HostInput::ReadGate { gpid, open });
                }
                ReplicaAction::Configured { status } => {
                    // Last in its turn, after the read gate: the host may extend the lease now.
                    *self.state.lock().expect("state lock") = self.replica.state();
                    self.node.host_step(HostInput::Configured { gpid, status: Some(status) });
                }
                ReplicaAction::ConfigMoved => self.node.host_step(HostInput::ConfigMoved { gpid }),
                ReplicaAction::Failed { error } => tracing::error!("replica {gpid} failed: {error}"),
                ReplicaAction::HoldLog { keep_after } => {
                    self.node.host_step(HostInput::HoldLog { gpid, holder: "duplication".into(), keep_after })
                }
                ReplicaAction::Dup { dup_id, work: DupWork::ReadLog { read, from, to, bytes_max } } => {
                    let (node, tx) = (self.node.clone(), self.tx.clone());
                    self.disk_work.spawn(async move {
                        let input = tokio::task::spawn_blocking(move || {
                            let result = node.log.read_partition(gpid, from).map_err(|e| e.to_string());
                            DupWork::log_read_answer(read, from, to, bytes_max, result)
                        })
                        .await
                        .unwrap_or_else(|e| DupInput::ReadFailed { read, error: e.to_string() });
                        let _ = tx.send(Event::Replica(ReplicaEvent::Dup { dup_id, input }));
                    });
                }
                ReplicaAction::Dup { dup_id, work: DupWork::Ship { table, remote_site, batch, records, watermark } } => {
                    let (node, tx) = (self.node.clone(), self.tx.clone());
                    // Not in disk_work: a replica that stops does not wait for the other site.
                    tokio::spawn(async move {
                        let input = match node.site_client(&remote_site) {
                            // The ship's own bound, so that the duplicator always hears back
                            // even if a call inside the client never returns.
                            Ok(client) => match tokio::time::timeout(SHIP_BOUND, client.table(&table).duplicate(records, watermark)).await {
                                Ok(Ok(_)) => DupInput::Shipped { batch },
                                Ok(Err(e)) => DupInput::ShipFailed { batch, failure: ship_failure(e) },
                                Err(_) => {
                                    let why = format!("site {remote_site:?} did not take the batch within {SHIP_BOUND:?}");
                                    DupInput::ShipFailed { batch, failure: DupFailure::Unavailable(why) }
                                }
                            },
                            Err(e) => DupInput::ShipFailed { batch, failure: DupFailure::Unavailable(e) },
                        };
                        let _ = tx.send(Event::Replica(ReplicaEvent::Dup { dup_id, input }));
                    });
                }
            }
        }
    }

    fn append_log(&self, mutations: Vec<Arc<Mutation>>) {
        let gpid = self.replica.gpid();
        let ids: Vec<(u64, Decree)> = mutations.iter().map(|m| (m.ballot, m.decree)).collect();
        let tx = self.tx.clone();
        self.node.log.append_mutations(
            gpid,
            mutations.iter().map(|m| m.as_ref()),
            Box::new(move |result| {
                let event = match result {
                    Ok(()) => ReplicaEvent::LogAppended { ids },
                    Err(e) => ReplicaEvent::LogFailed { error: e.to_string() },
                };
                let _ = tx.send(Event::Replica(event));
            }),
        );
    }

    /// Sends a prepare on the peer's batch stream; its answer comes back to this task as an
    /// event, from the stream's reader (no task waits for it).
    fn send_prepare(&self, to: String, msg: PrepareMsg) {
        let tx = self.tx.clone();
        let node = &self.node;
        let gpid = self.replica.gpid();
        let req = v1::PrepareRequest {
            config: Some(config_to_wire(&msg.config, node.partition_count(gpid.table_id).unwrap_or(0))),
            mutations: msg.mutations.iter().map(|m| m.encode()).collect(),
            last_committed: msg.last_committed,
            from: node.me.clone(),
        };
        // A few attempts fit in prepare_timeout: one prepare lost on its way (a connection
        // reset mid-request) is sent again instead of costing the member its place.
        let attempt = Duration::from_millis((node.opts.host.replica.prepare_timeout_ms / 4).max(200));
        let conn = match node.peer_batch(&to) {
            Ok(conn) => conn,
            Err(e) => {
                tracing::debug!("{gpid}: prepare to {to} failed: {e}");
                self.send_later(ReplicaEvent::PrepareFailed { to, refused: false });
                return;
            }
        };
        conn.call_then(v1::batch_call::Call::Prepare(req), attempt, move |answer| {
            let event = match answer {
                Ok(v1::batch_reply::Reply::Prepare(resp)) => {
                    let outcome = match v1::prepare_response::Outcome::try_from(resp.outcome) {
                        Ok(v1::prepare_response::Outcome::Ok) => {
                            let disk_low = (resp.disk_reserve_bytes > 0)
                                .then_some(DiskLow { free_bytes: resp.disk_free_bytes, reserve_bytes: resp.disk_reserve_bytes });
                            PrepareOutcome::Ok { prepared: resp.prepared, disk_low }
                        }
                        Ok(v1::prepare_response::Outcome::StaleBallot) => PrepareOutcome::StaleBallot { ballot: resp.ballot },
                        Ok(v1::prepare_response::Outcome::NotMember) | Err(_) => PrepareOutcome::NotMember,
                    };
                    ReplicaEvent::PrepareReply { from: to, reply: PrepareReply { ballot: resp.ballot, outcome } }
                }
                other => {
                    let (why, refused) = match other {
                        Err(status) => (status.message().to_string(), tandem_client::batch::refused(&status)),
                        Ok(_) => ("answered with another reply kind".to_string(), false),
                    };
                    tracing::debug!("{gpid}: prepare to {to} failed: {why}");
                    ReplicaEvent::PrepareFailed { to, refused }
                }
            };
            let _ = tx.send(Event::Replica(event));
        });
    }

    fn propose(&self, proposal: tandem_core::replica::ConfigProposal) {
        use tandem_core::replica::ConfigProposal;
        let tx = self.tx.clone();
        let node = self.node.clone();
        let gpid = self.replica.gpid();
        tokio::spawn(async move {
            let (kind, node_addr) = match &proposal {
                ConfigProposal::RemoveSecondary { node, .. } => (v1::propose_config_request::Kind::RemoveSecondary, node.clone()),
                ConfigProposal::UpgradeLearner { node, .. } => (v1::propose_config_request::Kind::UpgradeLearner, node.clone()),
            };
            let req = v1::ProposeConfigRequest {
                gpid: Some(gpid.into()),
                ballot: proposal.ballot(),
                kind: kind as i32,
                node: node_addr,
                from: node.me.clone(),
            };
            let result = node
                .meta
                .call(|mut c| {
                    let req = req.clone();
                    async move { c.propose_config(req).await }
                })
                .await;
            let result = match result {
                Ok(resp) => match resp.config.as_ref().map(tandem_proto::convert::config_from_wire) {
                    Some(Ok(c)) => Ok(c),
                    Some(Err(e)) => Err(e.to_string()),
                    None => Err("meta answered without a configuration".to_string()),
                },
                Err(s) => Err(s.message().to_string()),
            };
            if let Err(e) = &result {
                tracing::info!("{gpid}: proposal {proposal:?} refused: {e}");
            }
            let _ = tx.send(Event::Replica(ReplicaEvent::ProposalReply { result }));
        });
    }

    fn send_learn(&self, to: String, request: LearnRequest) {
        let tx = self.tx.clone();
        let node = self.node.clone();
        let gpid = self.replica.gpid();
        tokio::spawn(async move {
            let req = v1::LearnRequest {
                gpid: Some(gpid.into()),
                ballot: request.ballot,
                learner: request.learner.clone(),
                last_committed: request.last_committed,
            };
            let reply = match node.peer(&to) {
                Ok(mut client) => match tokio::time::timeout(Duration::from_millis(node.opts.rpc_timeout_ms), client.learn(req)).await {
                    Ok(Ok(resp)) => {
                        let r = resp.into_inner();
                        match v1::learn_response::Kind::try_from(r.kind) {
                            Ok(v1::learn_response::Kind::Log) => Some(LearnReply::Log { start: r.start }),
                            Ok(v1::learn_response::Kind::Checkpoint) => {
                                Some(LearnReply::Checkpoint { checkpoint_id: r.checkpoint_id, decree: r.decree })
                            }
                            _ => Some(LearnReply::Refused { reason: r.reason }),
                        }
                    }
                    _ => None,
                },
                Err(_) => None,
            };
            let _ = tx.send(Event::Replica(ReplicaEvent::LearnReply { reply }));
        });
    }
}

/// Opens fetched database `db` of replica directory `dir`, checks it holds `decree`, and makes it
/// the one a restart opens (`CURRENT`, written atomically).
fn activate(dir: &Path, db: &str, decree: Decree, memory: &tandem_storage::EngineMemory, compaction: TableCompaction) -> crate::error::Result<SharedEngine> {
    let engine = RocksEngine::open_with_compaction(&dir.join(db), memory, compaction)?;
    if engine.last_applied_decree() != decree {
        return Err(ServerError::WrongDecree { found: engine.last_applied_decree(), expected: decree });
    }
    let tmp = dir.join("CURRENT.tmp");
    std::fs::write(&tmp, db).map_err(ServerError::io("write", &tmp))?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(ServerError::io("fsync", &tmp))?;
    std::fs::rename(&tmp, dir.join("CURRENT")).map_err(ServerError::io("rename", &tmp))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(ServerError::io("fsync", dir))?;
    debug_assert_eq!(active_db_dir(dir).ok(), Some(dir.join(db)));
    Ok(SharedEngine::new(engine))
}

/// Removes the database directories of a replica other than `keep` (earlier engines, fetches
/// that were never installed).
fn delete_databases_except(dir: &Path, keep: &str) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name != keep && (name == "db" || name.starts_with("db-")) && entry.path().is_dir() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
