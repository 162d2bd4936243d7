//! The meta server runtime: carries out what the meta state machine (`tandem_meta_core::machine`)
//! decides. It feeds the machine requests, ticks, lease claims and store results, and executes
//! its actions: loads and fenced writes on the SQL store, replies, log lines. The machine sits
//! behind a plain mutex that is never held across a store call, so beacons and reads are answered
//! while a write is in flight.
//!
//! ```text
//!  gRPC request ─▶ Request{token} ─┐                        ┌─▶ Persist ─▶ SqlStore::apply (task) ─▶ Stored
//!  claim loop ───▶ Claimed ────────┼─▶ MetaMachine::step ───┼─▶ Load ────▶ SqlStore::load (task) ──▶ Loaded
//!  tick ─────────▶ Tick ───────────┘                        ├─▶ Reply{token} ─▶ the waiting request
//!                                                           └─▶ Event ─▶ log
//! ```

use crate::metrics::MetaMetrics;
use crate::store::{Claim, Fence, SqlStore};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tandem_meta_core::leadership::ClaimOutcome;
use tandem_meta_core::machine::{Cause, MetaEvent};
use tandem_meta_core::request::Token;
use tandem_meta_core::store::{StoreFailure, StoreFailureKind};
use tandem_meta_core::{MetaAction, MetaError, MetaInput, MetaMachine, MetaReply, MetaRequest, Now};
use tokio::sync::{oneshot, watch};

/// Why a meta server could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid meta server settings: {0}")]
    Options(String),
    #[error("open the metadata store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("bind {addr}: {source} (is another server on that port?)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

#[derive(Clone, Debug)]
pub struct MetaOptions {
    pub listen: SocketAddr,
    pub store_url: String,
    pub metrics_listen: Option<SocketAddr>,
    pub tick_interval_ms: u64,
    /// The address other meta servers send clients to when this one leads ("" = `listen`).
    pub advertise: String,
    /// What the state machine decides with: grace period, recall window, lease TTL, sites.
    pub machine: tandem_meta_core::MetaOptions,
    /// How to reach S3-compatible backup targets (the rest comes from `AWS_*` variables).
    pub s3: tandem_backup_store::S3Options,
}

impl MetaOptions {
    pub fn advertise_address(&self) -> String {
        if self.advertise.is_empty() { self.listen.to_string() } else { self.advertise.clone() }
    }
}

pub struct Meta {
    pub(crate) store: SqlStore,
    machine: Mutex<MetaMachine>,
    /// Unique per process: the lease row's holder.
    holder: String,
    pub(crate) opts: MetaOptions,
    start: Instant,
    pub(crate) metrics: MetaMetrics,
    waiting: Mutex<HashMap<Token, oneshot::Sender<Result<MetaReply, MetaError>>>>,
    next_token: AtomicU64,
    /// Backup targets being collected now, by (table, target).
    collecting: Mutex<std::collections::HashSet<(u32, String)>>,
    /// The replica servers' watch streams.
    pub(crate) watchers: crate::watch::Watchers,
}

/// How long one store write may take before it counts as failed.
const STORE_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Meta {
    fn now(&self) -> Now {
        Now { mono_ms: self.start.elapsed().as_millis() as u64, wall_ms: wall_ms() }
    }

    /// Feeds the machine one input and carries out its actions.
    pub(crate) fn step(self: &Arc<Self>, input: MetaInput) {
        let actions = {
            let mut machine = self.machine.lock().expect("machine lock");
            machine.step(self.now(), input);
            self.metrics.leading(machine.is_leader());
            machine.take_actions()
        };
        for action in actions {
            self.execute(action);
        }
    }

    fn execute(self: &Arc<Self>, action: MetaAction) {
        match action {
            MetaAction::Load { epoch, load } => {
                let meta = self.clone();
                tokio::spawn(async move {
                    let result = meta.store.load().await.map_err(|e| e.to_string());
                    meta.step(MetaInput::Loaded { epoch, load, result });
                });
            }
            MetaAction::Persist { op, epoch, write } => {
                let meta = self.clone();
                tokio::spawn(async move {
                    let fence = Fence { holder: meta.holder.clone(), epoch };
                    let started = Instant::now();
                    // A write that never answers would hold every later change: after this long
                    // it counts as failed (it may still commit; a later compare-and-set finds out).
                    let result = match tokio::time::timeout(STORE_WRITE_TIMEOUT, meta.store.apply(&fence, &write)).await {
                        Ok(result) => result.map_err(|e| e.failure()),
                        Err(_) => Err(StoreFailure::new(
                            StoreFailureKind::Unreachable,
                            format!("the metadata store did not answer a write within {STORE_WRITE_TIMEOUT:?}"),
                        )),
                    };
                    meta.metrics.store_write(&write, &result, started.elapsed());
                    meta.step(MetaInput::Stored { op, result });
                });
            }
            MetaAction::Reply { token, result } => {
                if let Some(tx) = self.waiting.lock().expect("waiting lock").remove(&token) {
                    let _ = tx.send(result);
                }
            }
            MetaAction::Event(e) => {
                self.metrics.event(&e);
                log_event(&e);
                if let MetaEvent::SteppedDown { .. } = e {
                    // Their servers open them again at the leader.
                    self.watchers.close_all();
                }
            }
            MetaAction::Probe { node, probe } => {
                let meta = self.clone();
                tokio::spawn(async move {
                    let refused = crate::watch::probe_refused(&node).await;
                    tracing::info!(node, refused, "probed a replica server's port");
                    meta.step(MetaInput::Probed { node, probe, refused });
                });
            }
            MetaAction::AskBeacon { nodes } => self.watchers.ask_beacon(&nodes),
            MetaAction::CollectBackupGarbage { table_id, target } => {
                if !self.collecting.lock().expect("collecting lock").insert((table_id, target.clone())) {
                    // One collection of a table's target at a time; the next delete collects again.
                    return;
                }
                let meta = self.clone();
                tokio::spawn(async move {
                    let (records, on) = (meta.clone(), target.clone());
                    let collected = meta
                        .on_target(target.clone(), move |store| {
                            tandem_backup_core::collect(store, table_id, &mut || records.machine.lock().expect("machine lock").backup_records_for(table_id, &on))
                        })
                        .await;
                    match collected {
                        Ok(r) => tracing::info!(table_id, target, listed = r.listed, deleted = r.deleted, deleted_bytes = r.deleted_bytes, references_known = r.references_known, unknown = ?r.unknown, stopped = ?r.stopped, "backup garbage collected"),
                        Err(e) => tracing::warn!(table_id, target, "backup garbage collection failed (the next delete tries again): {e}"),
                    }
                    meta.collecting.lock().expect("collecting lock").remove(&(table_id, target));
                });
            }
            MetaAction::WriteBackupManifest { backup_id, target, key, bytes } => {
                let meta = self.clone();
                tokio::spawn(async move {
                    let result = meta.on_target(target, move |store| Ok(tandem_backup_core::ObjectStore::put(store, &key, bytes)?)).await;
                    meta.step(MetaInput::BackupManifestWritten { backup_id, result });
                });
            }
        }
    }

    /// Opens backup target `target` (`s3://…` or `file://…`) and runs `f` on it, on a blocking
    /// thread (the store's calls block); a failure of the target, of `f` or of the task, as text.
    pub(crate) async fn on_target<T: Send + 'static>(
        &self,
        target: String,
        f: impl FnOnce(&mut tandem_backup_store::RealObjectStore) -> Result<T, tandem_backup_core::BackupError> + Send + 'static,
    ) -> Result<T, String> {
        let s3 = self.opts.s3.clone();
        tokio::task::spawn_blocking(move || -> Result<T, tandem_backup_core::BackupError> {
            let parsed = tandem_backup_store::Target::parse(&target)?;
            let mut store = tandem_backup_store::RealObjectStore::open(&parsed, &s3, tokio::runtime::Handle::current())?;
            f(&mut store)
        })
        .await
        .unwrap_or_else(|e| Err(tandem_backup_core::BackupError::Source { name: "the backup task".into(), detail: e.to_string() }))
        .map_err(|e| e.to_string())
    }

    /// Whether this meta server leads with its state loaded now, or the error that says who does.
    pub(crate) fn serving(&self) -> Result<u64, MetaError> {
        self.machine.lock().expect("machine lock").serving_at(self.now())
    }

    /// Asks the machine and waits for its answer.
    pub(crate) async fn request(self: &Arc<Self>, request: MetaRequest) -> Result<MetaReply, MetaError> {
        let kind = request.kind();
        let started = Instant::now();
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().expect("waiting lock").insert(token, tx);
        self.step(MetaInput::Request { token, request });
        let result = rx.await.unwrap_or_else(|_| Err(MetaError::Internal("the meta server dropped the request".into())));
        self.metrics.request(kind, &result, started.elapsed());
        result
    }

    /// One round of the claim loop: claim or renew the lease and feed the outcome.
    async fn claim_round(self: &Arc<Self>, claim_timeout: Duration) {
        let sent_at_ms = self.now().mono_ms;
        let address = self.opts.advertise_address();
        let ttl = self.opts.machine.lease_ttl_ms;
        let outcome = match tokio::time::timeout(claim_timeout, self.store.claim_round(&self.holder, &address, ttl)).await {
            Ok(Ok(Claim::Won { epoch })) => ClaimOutcome::Won { epoch },
            Ok(Ok(Claim::WonEarly { epoch, predecessor_ms })) => {
                tracing::warn!(
                    epoch,
                    "took the meta lease {predecessor_ms} ms before it expired: its holder's database session is gone (crashed); \
                     no replica server is declared dead before that lease and a grace period have passed"
                );
                ClaimOutcome::WonEarly { epoch, predecessor_ms }
            }
            Ok(Ok(Claim::Held { address, .. })) => ClaimOutcome::Lost { leader: address },
            Ok(Err(e)) => {
                tracing::warn!("cannot claim the meta lease: {e}");
                ClaimOutcome::Failed
            }
            Err(_) => {
                tracing::warn!("cannot claim the meta lease: the store did not answer within {claim_timeout:?}");
                ClaimOutcome::Failed
            }
        };
        tracing::debug!(?outcome, took_ms = self.now().mono_ms - sent_at_ms, "lease claim");
        self.metrics.claim(&outcome);
        self.step(MetaInput::Claimed { sent_at_ms, outcome });
    }

    fn claim_interval(&self) -> Duration {
        Duration::from_millis(self.machine.lock().expect("machine lock").claim_interval_ms())
    }
}

fn log_event(e: &MetaEvent) {
    match e {
        MetaEvent::Leading { epoch, tables, partitions, nodes } => tracing::info!(epoch, tables, partitions, nodes, "this meta server leads"),
        MetaEvent::Reloading { epoch, why } => tracing::warn!("reloading the metadata store at epoch {epoch}: {why}"),
        MetaEvent::LoadFailed { epoch, error } => tracing::warn!("leading at epoch {epoch}, but loading the metadata store failed (retrying): {error}"),
        MetaEvent::SteppedDown { leader } => tracing::warn!("stepped down: {leader} holds the meta lease now"),
        MetaEvent::NodeAlive { node } => tracing::info!("replica server {node} is alive"),
        MetaEvent::NodeDead { node, refused: false } => tracing::warn!("replica server {node} declared dead (no beacon within the grace period)"),
        MetaEvent::StoreDiskShort { short: Some(short) } => tracing::warn!("the metadata store's {short}: requests that add metadata are refused"),
        MetaEvent::StoreDiskShort { short: None } => tracing::info!("the metadata store's disk has room again"),
        MetaEvent::DiskShort { node, short: Some(short) } => tracing::warn!("replica server {node}: {short}; it takes only deletes and gets no new replicas"),
        MetaEvent::DiskShort { node, short: None } => tracing::info!("replica server {node} has disk room again"),
        MetaEvent::ReplicasRefused { node, gpids, replicas_max } => {
            let max = replicas_max.map_or_else(|| "its most".to_string(), |m| m.to_string());
            let gpids: Vec<String> = gpids.iter().map(|g| g.to_string()).collect();
            tracing::warn!("replica server {node} refused replicas {}: it hosts {max}, all its open-files limit allows; placing them elsewhere", gpids.join(", "))
        }
        MetaEvent::NodeDead { node, refused: true } => tracing::warn!("replica server {node} declared dead: its port refuses connections (the process is gone)"),
        MetaEvent::Committed { config, cause, .. } => {
            let why = match cause {
                Cause::Placement => "placement".to_string(),
                Cause::Cure => "cure".to_string(),
                Cause::Proposal(p) => format!("proposal {p:?}"),
                Cause::Restart => "restarted primary".to_string(),
            };
            tracing::info!(gpid = %config.gpid, ballot = config.ballot, primary = ?config.primary, secondaries = ?config.secondaries, learners = ?config.learners, why, "configuration");
        }
        MetaEvent::ChangeFailed { gpid, cause, error } => tracing::warn!("{cause:?} of {gpid} failed: {error}"),
        MetaEvent::ProposalRefused { gpid, from, proposal, reason } => tracing::info!("{gpid}: proposal {proposal:?} from {from} refused: {reason}"),
        MetaEvent::TableCreated { table, who } => tracing::info!(
            "created table {} (id {}, {} partitions, policy {:?}, owner {}, by {who})",
            table.name,
            table.id,
            table.partition_count,
            table.policy,
            table.owner
        ),
        MetaEvent::PolicyChanged { table, old, new, who } => tracing::info!("{who} changed the policy of {table}: {old:?} -> {new:?}"),
        MetaEvent::TableDropped { table_id } => tracing::info!("dropped table {table_id}"),
        MetaEvent::TableRecalled { table_id } => tracing::info!("recalled table {table_id}"),
        MetaEvent::TablePurged { table_id } => tracing::info!("purged dropped table {table_id}"),
        MetaEvent::PurgeFailed { table_id, error } => tracing::warn!("purging table {table_id} failed: {error}"),
        MetaEvent::Backup { id, table, what } => tracing::info!("backup {id} of {table}: {what}"),
    }
}

/// Runs a meta server until `shutdown` fires.
pub async fn run(opts: MetaOptions, shutdown: watch::Receiver<bool>) -> Result<(), Error> {
    tandem_meta_core::leadership::validate_ttl(opts.machine.lease_ttl_ms).map_err(Error::Options)?;
    let store = SqlStore::connect(&opts.store_url).await?;
    let holder = format!("{}#{}-{}", opts.advertise_address(), std::process::id(), wall_ms());
    let meta = Arc::new(Meta {
        store,
        machine: Mutex::new(MetaMachine::new(opts.machine.clone())),
        holder,
        opts: opts.clone(),
        start: Instant::now(),
        metrics: MetaMetrics::new(),
        waiting: Mutex::new(HashMap::new()),
        next_token: AtomicU64::new(1),
        collecting: Mutex::new(std::collections::HashSet::new()),
        watchers: crate::watch::Watchers::default(),
    });

    let listener = tokio::net::TcpListener::bind(opts.listen).await.map_err(|source| Error::Bind { addr: opts.listen, source })?;
    // Claim the lease before serving, so a single meta server answers its first request as
    // leader; a standby just learns who leads.
    let renew = meta.claim_interval();
    meta.claim_round(renew).await;
    if let Some(addr) = opts.metrics_listen {
        let rx = shutdown.clone();
        let scraped = meta.clone();
        let refresh = Arc::new(move || {
            let (epoch, status) = {
                let machine = scraped.machine.lock().expect("machine lock");
                (machine.epoch(), machine.state().map(|s| s.cluster_status()))
            };
            scraped.metrics.refresh(epoch, status);
        });
        let local = tandem_runtime::metrics::serve(addr, meta.metrics.registry.clone(), refresh, async move {
            tandem_runtime::stopped(rx).await;
        })
        .await
        .map_err(|source| Error::Bind { addr, source })?;
        tracing::info!("metrics on http://{local}/metrics");
    }
    let server = crate::rpc::serve(meta.clone(), listener, shutdown.clone()).await?;
    tracing::info!("meta server listening on {} (advertised as {})", opts.listen, opts.advertise_address());

    // The claim loop: renew while leading; a standby polls four times a second.
    let claims = {
        let meta = meta.clone();
        let rx = shutdown.clone();
        tokio::spawn(async move {
            let stop = tandem_runtime::stopped(rx);
            tokio::pin!(stop);
            loop {
                let pause = meta.claim_interval();
                tokio::select! {
                    _ = tokio::time::sleep(pause) => meta.claim_round(pause.max(Duration::from_secs(1))).await,
                    _ = stop.as_mut() => break,
                }
            }
        })
    };

    let mut tick = tokio::time::interval(Duration::from_millis(opts.tick_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = tandem_runtime::stopped(shutdown.clone());
    tokio::pin!(stop);
    // Free space under a store on this machine's disk, each tick (statvfs costs microseconds).
    let store_dir = crate::store::local_dir(&opts.store_url);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Some(space) = store_dir.as_deref().and_then(tandem_runtime::disk::dir_space) {
                    let free_bytes = space.free_bytes;
                    meta.step(MetaInput::StoreDiskSpace { dirs: vec![space] });
                    if !meta.machine.lock().expect("machine lock").store_disk_short() {
                        meta.store.keep_reserve(free_bytes);
                    }
                }
                meta.step(MetaInput::Tick);
            }
            _ = stop.as_mut() => break,
        }
    }
    let _ = claims.await;
    let _ = server.await;
    // A clean stop hands the lease over at once instead of after its TTL.
    let leading = meta.machine.lock().expect("machine lock").is_leader();
    if leading && let Err(e) = meta.store.release_lease(&meta.holder).await {
        tracing::warn!("could not release the meta lease: {e}");
    }
    meta.store.close().await;
    Ok(())
}
