//! One task per replica: receives events, feeds the core, executes its actions. No protocol
//! decisions here: this is plumbing between the core and IO.

use crate::node::Node;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tandem_core::replica::{
    Action, Input, LearnReply, LearnRequest, PrepareMsg, PrepareOutcome, PrepareReply, Replica, ReplicaState, RequestId, WriteRequest,
    WriteResponse,
};
use tandem_core::storage::KvEngine;
use tandem_core::{Decree, Error, Gpid, LogRecord, Mutation, WriteOp};
use tandem_proto::convert::config_to_wire;
use tandem_proto::v1;
use tandem_storage::RocksEngine;
use tokio::sync::{mpsc, oneshot};

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

    fn apply(&mut self, decree: Decree, ops: &[WriteOp]) -> tandem_core::Result<()> {
        self.0.write().expect("engine lock").apply(decree, ops)
    }

    fn apply_many(&mut self, mutations: &[Arc<Mutation>]) -> tandem_core::Result<()> {
        self.0.write().expect("engine lock").apply_many(mutations)
    }

    fn last_applied_decree(&self) -> Decree {
        self.0.read().expect("engine lock").last_applied_decree()
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

pub enum Event {
    Input(Input),
    /// A configuration from the meta; `done` is answered once the core has taken it, so the
    /// server extends its lease only after every replica knows its role under it.
    Configure { config: tandem_core::PartitionConfig, done: oneshot::Sender<()> },
    Write { request: WriteRequest, reply: Reply<Result<WriteResponse, Error>> },
    Prepare { from: String, msg: PrepareMsg, reply: Reply<PrepareReply> },
    Learn { request: LearnRequest, reply: oneshot::Sender<LearnReply> },
    /// Runs `f` on the engine if the replica may serve reads now (or with the reason it may not).
    Read(ReadFn),
    /// A fetched checkpoint in `db_dir` (inside the replica directory) holding state up to `decree`.
    InstallCheckpoint { db_name: String, decree: Decree },
    /// Flush the engine; answers the decree now durable in it.
    Flush { done: oneshot::Sender<Option<Decree>> },
    Stop { done: oneshot::Sender<()> },
    /// One log append is durable: the (ballot, decree) of each mutation it held, in order.
    LogAppended { ids: Vec<(u64, Decree)> },
}

/// Plain events a turn of the task takes at most before running their actions.
const STEPS_PER_TURN_MAX: usize = 256;

impl Event {
    /// A step of the core and nothing else: such events may share a turn of the task (their
    /// actions run together after the last). The others run alone, at the start of a turn.
    fn is_plain(&self) -> bool {
        matches!(self, Event::Input(_) | Event::LogAppended { .. } | Event::Write { .. } | Event::Prepare { .. } | Event::Learn { .. } | Event::Read(_))
    }
}

#[derive(Clone)]
pub struct ReplicaHandle {
    gpid: Gpid,
    tx: mpsc::UnboundedSender<Event>,
    state: Arc<Mutex<ReplicaState>>,
    /// The engine while `Replica::read_ready` holds (set by the task after every step), else
    /// None: reads use it directly, without a trip through the task.
    read_gate: Arc<RwLock<Option<SharedEngine>>>,
}

impl ReplicaHandle {
    pub fn gpid(&self) -> Gpid {
        self.gpid
    }

    /// False when the replica's task has stopped.
    pub fn send(&self, event: Event) -> bool {
        self.tx.send(event).is_ok()
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

pub fn spawn(node: Arc<Node>, replica: Replica, engine: SharedEngine, dir: PathBuf) -> ReplicaHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let state = Arc::new(Mutex::new(replica.state()));
    let read_gate = Arc::new(RwLock::new(None));
    let handle = ReplicaHandle { gpid: replica.gpid(), tx: tx.clone(), state: state.clone(), read_gate: read_gate.clone() };
    let task = ReplicaTask {
        node,
        replica,
        engine,
        dir,
        tx,
        state,
        read_gate,
        read_gate_open: false,
        next_id: 1,
        writes: HashMap::new(),
        prepares: HashMap::new(),
        learns: HashMap::new(),
        log_cache_share: 0,
    };
    tokio::spawn(task.run(rx));
    handle
}

struct ReplicaTask {
    node: Arc<Node>,
    replica: Replica,
    engine: SharedEngine,
    dir: PathBuf,
    tx: mpsc::UnboundedSender<Event>,
    state: Arc<Mutex<ReplicaState>>,
    read_gate: Arc<RwLock<Option<SharedEngine>>>,
    /// Whether `read_gate` holds the engine: the gate's lock is taken only when this changes,
    /// not on every event, so reads do not wait behind the task.
    read_gate_open: bool,
    next_id: RequestId,
    writes: HashMap<RequestId, Reply<Result<WriteResponse, Error>>>,
    prepares: HashMap<RequestId, Reply<PrepareReply>>,
    learns: HashMap<RequestId, oneshot::Sender<LearnReply>>,
    /// This replica's share of the server's log cache, as last given to the core.
    log_cache_share: usize,
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
            let mut configured = None;
            match event {
                Event::Configure { config, done } => {
                    self.replica.step(&self.node.ctx(), Input::ConfigUpdate { config });
                    configured = Some(done);
                }
                Event::InstallCheckpoint { db_name, decree } => self.install_checkpoint(db_name, decree).await,
                Event::Flush { done } => {
                    let engine = self.engine.clone();
                    let flushed = tokio::task::spawn_blocking(move || engine.with(|e| e.flush().map(|_| e.last_flushed_decree())))
                        .await
                        .ok()
                        .and_then(|r| r.ok());
                    let _ = done.send(flushed);
                }
                Event::Stop { done } => {
                    let _ = done.send(());
                    return;
                }
                plain => self.step(plain),
            }
            // Steps queued meanwhile go in before the actions run, so the actions of many client
            // writes leave together (one log append for all their mutations, one prepare each).
            for _ in 1..STEPS_PER_TURN_MAX {
                match rx.try_recv() {
                    Ok(e) if e.is_plain() => self.step(e),
                    Ok(e) => {
                        next = Some(e);
                        break;
                    }
                    Err(_) => break,
                }
            }
            let actions = self.replica.take_actions();
            self.execute(actions);
            *self.state.lock().expect("state lock") = self.replica.state();
            self.update_read_gate();
            if let Some(done) = configured {
                let _ = done.send(());
            }
        }
        // Stopped: no more reads from this engine.
        *self.read_gate.write().expect("read gate lock") = None;
    }

    /// Feeds one plain event (see `Event::is_plain`) to the core; its actions wait in the core.
    fn step(&mut self, event: Event) {
        let ctx = self.node.ctx();
        match event {
            Event::Input(input) => {
                if matches!(input, Input::Tick) {
                    // Replicas come and go: keep this one to its share of the server's budget.
                    let share = self.node.log_cache_share(self.node.hosted_replicas());
                    if share != self.log_cache_share {
                        self.replica.set_log_cache_bytes_max(share);
                        self.log_cache_share = share;
                    }
                }
                self.replica.step(&ctx, input)
            }
            Event::LogAppended { ids } => {
                for (ballot, decree) in ids {
                    self.replica.step(&ctx, Input::LogAppended { ballot, decree });
                }
            }
            Event::Write { request, reply } => {
                let id = self.id();
                self.writes.insert(id, reply);
                self.replica.step(&ctx, Input::ClientWrite { request_id: id, request });
            }
            Event::Prepare { from, msg, reply } => {
                let token = self.id();
                self.prepares.insert(token, reply);
                self.replica.step(&ctx, Input::Prepare { token, from, msg });
            }
            Event::Learn { request, reply } => {
                let token = self.id();
                self.learns.insert(token, reply);
                self.replica.step(&ctx, Input::LearnRequest { token, request });
            }
            Event::Read(f) => match self.replica.check_read(&ctx) {
                Ok(()) => f(Ok(self.replica.engine()), ctx.now_s()),
                Err(e) => f(Err(e), ctx.now_s()),
            },
            Event::Configure { .. } | Event::InstallCheckpoint { .. } | Event::Flush { .. } | Event::Stop { .. } => {
                unreachable!("not a plain event")
            }
        }
    }

    /// Opens the read gate while the core says reads may be served, closes it otherwise.
    fn update_read_gate(&mut self) {
        let ready = self.replica.read_ready().is_ok();
        if ready != self.read_gate_open {
            *self.read_gate.write().expect("read gate lock") = ready.then(|| self.engine.clone());
            self.read_gate_open = ready;
        }
    }

    fn id(&mut self) -> RequestId {
        self.next_id += 1;
        self.next_id
    }

    fn execute(&mut self, actions: Vec<Action>) {
        let gpid = self.replica.gpid();
        // Every AppendLog of the turn goes out as one append, in the order they were emitted.
        let mut appends = Vec::new();
        for action in actions {
            match action {
                Action::AppendLog { mutations } => appends.extend(mutations),
                Action::SendPrepare { to, msg } => self.send_prepare(to, msg),
                Action::ReplyPrepare { token, reply } => {
                    if let Some(to) = self.prepares.remove(&token) {
                        to.send(reply);
                    }
                }
                Action::ReplyClient { request_id, result } => {
                    if let Some(to) = self.writes.remove(&request_id) {
                        to.send(result);
                    }
                }
                Action::ProposeConfig { proposal } => self.propose(proposal),
                Action::SendLearnRequest { to, request } => self.send_learn(to, request),
                Action::ReplyLearn { token, reply } => {
                    if let Some(tx) = self.learns.remove(&token) {
                        let _ = tx.send(reply);
                    }
                }
                Action::ServeCheckpoint { token } => {
                    let node = self.node.clone();
                    let engine = self.engine.clone();
                    let tx = self.tx.clone();
                    tokio::spawn(async move {
                        let result = node.checkpoints.create(gpid, engine).await.map_err(|e| format!("{e:#}"));
                        let _ = tx.send(Event::Input(Input::CheckpointReady { token, result }));
                    });
                }
                Action::FetchCheckpoint { from, checkpoint_id, decree } => {
                    let node = self.node.clone();
                    let tx = self.tx.clone();
                    let dir = self.dir.clone();
                    tokio::spawn(async move {
                        match crate::checkpoint::fetch(&node, gpid, &from, &checkpoint_id, &dir).await {
                            Ok((db_name, fetched_decree)) if fetched_decree == decree => {
                                let _ = tx.send(Event::InstallCheckpoint { db_name, decree });
                            }
                            Ok((db_name, fetched_decree)) => {
                                let _ = std::fs::remove_dir_all(dir.join(db_name));
                                let error = format!("checkpoint holds decree {fetched_decree}, expected {decree}");
                                let _ = tx.send(Event::Input(Input::CheckpointFailed { error }));
                            }
                            Err(e) => {
                                tracing::warn!("{gpid}: fetching checkpoint {checkpoint_id} from {from} failed: {e:#}");
                                let _ = tx.send(Event::Input(Input::CheckpointFailed { error: format!("{e:#}") }));
                            }
                        }
                    });
                }
                Action::Failed { error } => tracing::error!("replica {gpid} failed: {error}"),
            }
        }
        if !appends.is_empty() {
            self.append_log(appends);
        }
    }

    fn append_log(&self, mutations: Vec<Arc<Mutation>>) {
        let gpid = self.replica.gpid();
        let ids: Vec<(u64, Decree)> = mutations.iter().map(|m| (m.ballot, m.decree)).collect();
        let tx = self.tx.clone();
        self.node.log.append_mutations(
            gpid,
            mutations.iter().map(|m| m.as_ref()),
            Box::new(move |result| match result {
                Ok(()) => {
                    let _ = tx.send(Event::LogAppended { ids });
                }
                Err(e) => {
                    let _ = tx.send(Event::Input(Input::LogFailed { error: e.to_string() }));
                }
            }),
        );
    }

    /// Sends a prepare on the peer's batch stream; its answer comes back to this task as an
    /// input, from the stream's reader (no task waits for it).
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
        let attempt = Duration::from_millis((node.opts.replica.prepare_timeout_ms / 4).max(200));
        let conn = match node.peer_batch(&to) {
            Ok(conn) => conn,
            Err(e) => {
                tracing::debug!("{gpid}: prepare to {to} failed: {e}");
                let _ = tx.send(Event::Input(Input::PrepareFailed { to }));
                return;
            }
        };
        conn.call_then(v1::batch_call::Call::Prepare(req), attempt, move |answer| {
            let input = match answer {
                Ok(v1::batch_reply::Reply::Prepare(resp)) => {
                    let outcome = match v1::prepare_response::Outcome::try_from(resp.outcome) {
                        Ok(v1::prepare_response::Outcome::Ok) => PrepareOutcome::Ok { prepared: resp.prepared },
                        Ok(v1::prepare_response::Outcome::StaleBallot) => PrepareOutcome::StaleBallot { ballot: resp.ballot },
                        Ok(v1::prepare_response::Outcome::NotMember) | Err(_) => PrepareOutcome::NotMember,
                    };
                    Input::PrepareReply { from: to, reply: PrepareReply { ballot: resp.ballot, outcome } }
                }
                other => {
                    let why = match other {
                        Err(status) => status.message().to_string(),
                        Ok(_) => "answered with another reply kind".to_string(),
                    };
                    tracing::debug!("{gpid}: prepare to {to} failed: {why}");
                    Input::PrepareFailed { to }
                }
            };
            let _ = tx.send(Event::Input(input));
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
            let _ = tx.send(Event::Input(Input::ProposalReply { result }));
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
            let _ = tx.send(Event::Input(Input::LearnReply { reply }));
        });
    }

    /// Makes a fetched checkpoint this replica's engine: log a reset first (so replay after a
    /// crash ignores older entries), then switch `CURRENT`, then hand the engine to the core.
    async fn install_checkpoint(&mut self, db_name: String, decree: Decree) {
        let gpid = self.replica.gpid();
        let ctx = self.node.ctx();
        let result: anyhow::Result<SharedEngine> = async {
            let (tx, rx) = oneshot::channel();
            self.node.log.append(vec![LogRecord::Reset { gpid, decree }], Box::new(move |r| {
                let _ = tx.send(r);
            }));
            rx.await.map_err(|_| anyhow::anyhow!("log closed"))??;
            let db_dir = self.dir.join(&db_name);
            let engine = RocksEngine::open(&db_dir, &self.node.engine_memory)?;
            if engine.last_applied_decree() != decree {
                anyhow::bail!("installed checkpoint holds decree {}, expected {decree}", engine.last_applied_decree());
            }
            let tmp = self.dir.join("CURRENT.tmp");
            std::fs::write(&tmp, &db_name)?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, self.dir.join("CURRENT"))?;
            Ok(SharedEngine::new(engine))
        }
        .await;
        match result {
            Ok(engine) => {
                // Learners install checkpoints, so the gate is closed already; closing it again
                // makes sure no read sees the old engine after the swap.
                *self.read_gate.write().expect("read gate lock") = None;
                self.read_gate_open = false;
                self.engine = engine.clone();
                self.replica.step(&ctx, Input::CheckpointInstalled { engine: Box::new(engine) });
                // The core dropped the old engine; remove its files.
                for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
                    let name = entry.file_name().to_string_lossy().to_string();
                    if name != db_name && (name == "db" || name.starts_with("db-") || name.starts_with("learn-")) && entry.path().is_dir() {
                        let _ = std::fs::remove_dir_all(entry.path());
                    }
                }
                tracing::info!("{gpid}: installed checkpoint at decree {decree}");
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(self.dir.join(&db_name));
                self.replica.step(&ctx, Input::CheckpointFailed { error: format!("{e:#}") });
            }
        }
    }
}
