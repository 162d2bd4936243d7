//! The replica server process: opens the log and the replicas found on disk, serves gRPC, sends
//! beacons to the meta (which grant the lease and carry the configurations), ticks every replica
//! and garbage-collects the log.

use crate::checkpoint::Checkpoints;
use crate::metrics::Metrics;
use crate::options::ReplicaServerOptions;
use crate::replica_task::{self, Event, ReplicaHandle, SharedEngine};
use anyhow::Context;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tandem_client::batch::BatchConn;
use tandem_client::meta_conn::{endpoint, stream_endpoint, MetaConn};
use tandem_core::replica::{Ctx, Input, Replica};
use tandem_core::{Gpid, LogRecord, Mutation};
use tandem_proto::convert::config_from_wire;
use tandem_proto::v1;
use tandem_proto::v1::replica_service_client::ReplicaServiceClient;
use tandem_storage::{EngineMemory, MutationLog, RocksEngine};
use tokio::sync::watch;
use tonic::transport::Channel;

pub struct Node {
    pub me: String,
    pub opts: ReplicaServerOptions,
    pub log: Arc<MutationLog>,
    pub meta: MetaConn,
    pub metrics: Metrics,
    pub checkpoints: Checkpoints,
    /// The block cache and memtable budget every replica's RocksDB shares.
    pub engine_memory: EngineMemory,
    replicas: RwLock<HashMap<Gpid, ReplicaHandle>>,
    partition_counts: RwLock<HashMap<u32, u32>>,
    lease_until_ms: AtomicU64,
    start: Instant,
    incarnation: u64,
    /// No beacon of this process has been answered yet (see `BeaconRequest.restarted`).
    restarted: AtomicBool,
    peers: Mutex<HashMap<String, ReplicaServiceClient<Channel>>>,
    /// The batch stream to each peer, which carries the prepares of every partition.
    peer_batches: Mutex<HashMap<String, Arc<BatchConn>>>,
    /// Since when (server ms) each local replica has been outside its partition's configuration
    /// while that configuration had a primary; see `collect_inactive`.
    outside_since: Mutex<HashMap<Gpid, u64>>,
    /// Replicas being stopped and deleted: not recreated until their directory is gone.
    removing: Mutex<HashSet<Gpid>>,
}

impl Node {
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub fn ctx(&self) -> Ctx {
        let wall_us = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0);
        Ctx { now_ms: self.now_ms(), wall_us, lease_until_ms: self.lease_until_ms.load(Ordering::Acquire) }
    }

    pub fn replica(&self, gpid: Gpid) -> Option<ReplicaHandle> {
        self.replicas.read().expect("replicas lock").get(&gpid).cloned()
    }

    pub fn replica_handles(&self) -> Vec<ReplicaHandle> {
        self.replicas.read().expect("replicas lock").values().cloned().collect()
    }

    pub fn partition_count(&self, table_id: u32) -> Option<u32> {
        self.partition_counts.read().expect("partition counts lock").get(&table_id).copied()
    }

    pub fn peer(&self, addr: &str) -> Result<ReplicaServiceClient<Channel>, String> {
        let mut peers = self.peers.lock().expect("peers lock");
        if let Some(c) = peers.get(addr) {
            return Ok(c.clone());
        }
        let channel = endpoint(addr, Duration::from_millis(self.opts.rpc_timeout_ms)).map_err(|e| e.to_string())?.connect_lazy();
        let client = ReplicaServiceClient::new(channel).max_decoding_message_size(64 << 20).max_encoding_message_size(64 << 20);
        peers.insert(addr.to_string(), client.clone());
        Ok(client)
    }

    /// The batch stream to peer `addr` (on its own connection, without a per-request timeout:
    /// the caller times each call).
    pub fn peer_batch(&self, addr: &str) -> Result<Arc<BatchConn>, String> {
        let mut peers = self.peer_batches.lock().expect("peer batches lock");
        if let Some(c) = peers.get(addr) {
            return Ok(c.clone());
        }
        let channel = stream_endpoint(addr).map_err(|e| e.to_string())?.connect_lazy();
        let client = ReplicaServiceClient::new(channel).max_decoding_message_size(64 << 20).max_encoding_message_size(64 << 20);
        let conn = Arc::new(BatchConn::new(addr, client));
        peers.insert(addr.to_string(), conn.clone());
        Ok(conn)
    }

    /// The core's options for one of `hosted` replicas: its share of the server's log cache.
    fn replica_options(&self, hosted: usize) -> tandem_core::replica::ReplicaOptions {
        let mut options = self.opts.replica.clone();
        options.log_cache_bytes_max = self.log_cache_share(hosted);
        options
    }

    pub fn log_cache_share(&self, hosted: usize) -> usize {
        self.opts.log_cache_bytes_max / hosted.max(1)
    }

    pub fn hosted_replicas(&self) -> usize {
        self.replicas.read().expect("replicas lock").len()
    }

    fn replica_dir(&self, gpid: Gpid) -> PathBuf {
        replica_dir(&self.opts.data_dir, gpid)
    }

    /// The replica of `gpid`, created empty if this server does not have it yet.
    pub fn get_or_create_replica(self: &Arc<Self>, gpid: Gpid) -> anyhow::Result<ReplicaHandle> {
        if let Some(h) = self.replica(gpid) {
            return Ok(h);
        }
        let mut replicas = self.replicas.write().expect("replicas lock");
        if let Some(h) = replicas.get(&gpid) {
            return Ok(h.clone());
        }
        if self.removing.lock().expect("removing lock").contains(&gpid) {
            anyhow::bail!("replica {gpid} is being removed from this server; it can be created again once that is done");
        }
        let dir = self.replica_dir(gpid);
        let engine = open_engine(&dir, &self.engine_memory)?;
        let replica = Replica::open(gpid, self.me.clone(), self.replica_options(replicas.len() + 1), Box::new(engine.clone()), vec![]);
        let handle = replica_task::spawn(self.clone(), replica, engine, dir);
        replicas.insert(gpid, handle.clone());
        Ok(handle)
    }

    /// Stops a replica and deletes its data; `why` goes into the server's log.
    async fn remove_replica(&self, gpid: Gpid, why: &str) {
        let handle = {
            let mut replicas = self.replicas.write().expect("replicas lock");
            let handle = replicas.remove(&gpid);
            if handle.is_some() {
                self.removing.lock().expect("removing lock").insert(gpid);
            }
            handle
        };
        if let Some(h) = handle {
            let (tx, rx) = tokio::sync::oneshot::channel();
            if h.send(Event::Stop { done: tx }) {
                let _ = rx.await;
            }
            let dir = self.replica_dir(gpid);
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!("could not remove {}: {e}", dir.display());
            }
            self.removing.lock().expect("removing lock").remove(&gpid);
            self.outside_since.lock().expect("outside lock").remove(&gpid);
            tracing::info!("removed replica {gpid}: {why}");
        }
    }

    /// Tracks the local replicas that a configuration from the meta leaves out, and returns those
    /// left out for `inactive_replica_gc_delay`. Only while the configuration has a primary: its
    /// members then hold every committed write, so this copy is a stale subset; a partition
    /// without a primary may need it back (the meta revives the last dropped member when every
    /// member is gone), and a copy the meta adds again as a learner stops the clock.
    /// `configs`: those of this beacon reply that a local replica took.
    fn collect_inactive(&self, configs: &[tandem_core::PartitionConfig], now_ms: u64) -> Vec<Gpid> {
        let mut outside = self.outside_since.lock().expect("outside lock");
        for config in configs {
            if config.hosts(&self.me) || config.primary.is_none() {
                outside.remove(&config.gpid);
            } else {
                outside.entry(config.gpid).or_insert(now_ms);
            }
        }
        let delay = self.opts.inactive_replica_gc_delay_ms;
        outside.iter().filter(|(_, since)| now_ms.saturating_sub(**since) >= delay).map(|(g, _)| *g).collect()
    }

    async fn beacon_once(self: &Arc<Self>) -> anyhow::Result<()> {
        let sent_at = self.now_ms();
        let replicas = self.replica_handles().iter().map(|h| h.report()).collect();
        let req = v1::BeaconRequest {
            node: self.me.clone(),
            replicas,
            incarnation: self.incarnation,
            lease_period_ms: self.opts.lease_period_ms,
            restarted: self.restarted.load(Ordering::Acquire),
        };
        let resp = self.meta.call(|mut c| {
            let req = req.clone();
            async move { c.beacon(req).await }
        })
        .await
        .map_err(|s| anyhow::anyhow!("beacon to meta failed: {}", s.message()))?;
        self.restarted.store(false, Ordering::Release);
        // Configurations first, lease after: a primary the meta has replaced learns it before
        // the renewed lease would let it serve another read.
        let mut configured = Vec::new();
        let mut seen = Vec::new();
        for wire in resp.configs {
            let config = match config_from_wire(&wire) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("meta sent a malformed configuration: {e}");
                    continue;
                }
            };
            if wire.partition_count > 0 {
                self.partition_counts.write().expect("partition counts lock").insert(config.gpid.table_id, wire.partition_count);
            }
            let handle = match self.replica(config.gpid) {
                Some(h) => h,
                None if config.hosts(&self.me) => match self.get_or_create_replica(config.gpid) {
                    Ok(h) => h,
                    Err(e) => {
                        tracing::error!("cannot create replica {}: {e:#}", config.gpid);
                        continue;
                    }
                },
                None => continue,
            };
            seen.push(config.clone());
            let (done, rx) = tokio::sync::oneshot::channel();
            if handle.send(Event::Configure { config, done }) {
                configured.push(rx);
            }
        }
        for rx in configured {
            // An error means the replica's task stopped: it serves nothing any more.
            let _ = rx.await;
        }
        self.lease_until_ms.fetch_max(sent_at + self.opts.lease_period_ms, Ordering::AcqRel);
        for g in resp.gone {
            self.remove_replica(Gpid::new(g.table_id, g.partition), "its table was purged").await;
        }
        for gpid in self.collect_inactive(&seen, self.now_ms()) {
            // The replica's own view must agree that it has no role any more.
            if self.replica(gpid).is_some_and(|h| h.state().status == tandem_core::PartitionStatus::Inactive) {
                let why = format!("outside its partition's configuration for {} ms", self.opts.inactive_replica_gc_delay_ms);
                self.remove_replica(gpid, &why).await;
            }
        }
        Ok(())
    }

    fn update_gauges(&self) {
        let mut counts: HashMap<&'static str, i64> = HashMap::new();
        for status in ["primary", "secondary", "learner", "inactive", "error"] {
            counts.insert(status, 0);
        }
        for h in self.replica_handles() {
            *counts.entry(h.state().status.as_str()).or_default() += 1;
        }
        for (status, n) in counts {
            self.metrics.replicas.with_label_values(&[status]).set(n);
        }
        self.metrics.log.with_label_values(&["records"]).set(self.log.appended_records() as i64);
        self.metrics.log.with_label_values(&["fsyncs"]).set(self.log.fsyncs() as i64);
        self.metrics.log.with_label_values(&["group_waits"]).set(self.log.group_waits() as i64);
        self.metrics.log.with_label_values(&["bytes"]).set(self.log.total_bytes() as i64);
        self.metrics.memory.with_label_values(&["memtables"]).set(self.engine_memory.memtable_bytes() as i64);
        self.metrics.memory.with_label_values(&["block_cache"]).set(self.engine_memory.block_cache_bytes() as i64);
    }

    async fn gc_log(self: &Arc<Self>) {
        let mut durable = HashMap::new();
        for h in self.replica_handles() {
            let (tx, rx) = tokio::sync::oneshot::channel();
            if h.send(Event::Flush { done: tx })
                && let Ok(Some(d)) = rx.await
            {
                durable.insert(h.gpid(), d);
            }
        }
        let known: Vec<Gpid> = self.replicas.read().expect("replicas lock").keys().copied().collect();
        let log = self.log.clone();
        let result = tokio::task::spawn_blocking(move || {
            // A replica we have but could not flush keeps its entries (Some(0)); one we no longer
            // have needs none (None).
            log.gc(&|g| durable.get(&g).copied().or(if known.contains(&g) { Some(0) } else { None }))
        })
        .await;
        match result {
            Ok(Ok(n)) if n > 0 => tracing::info!("log gc removed {n} segments"),
            Ok(Err(e)) => tracing::warn!("log gc failed: {e}"),
            _ => {}
        }
    }
}

pub(crate) fn replica_dir(data_dir: &Path, gpid: Gpid) -> PathBuf {
    data_dir.join("replicas").join(format!("{}.{}", gpid.table_id, gpid.partition))
}

/// The engine of a replica directory: `CURRENT` names the active database directory (it changes
/// when a learned checkpoint is installed), `db` by default.
pub(crate) fn open_engine(dir: &Path, memory: &EngineMemory) -> anyhow::Result<SharedEngine> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let db = active_db_dir(dir)?;
    let engine = RocksEngine::open(&db, memory).with_context(|| format!("open RocksDB at {}", db.display()))?;
    Ok(SharedEngine::new(engine))
}

pub(crate) fn active_db_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    let current = dir.join("CURRENT");
    let name = match std::fs::read_to_string(&current) {
        Ok(s) => s.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "db".to_string(),
        Err(e) => return Err(e).with_context(|| format!("read {}", current.display())),
    };
    if name.is_empty() || name.contains('/') || name.contains("..") {
        anyhow::bail!("{} names an invalid directory {name:?}", current.display());
    }
    Ok(dir.join(name))
}

/// Runs a replica server until `shutdown` fires.
pub async fn run(opts: ReplicaServerOptions, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    std::fs::create_dir_all(&opts.data_dir).with_context(|| format!("create data dir {}", opts.data_dir.display()))?;
    // Replay the shared log: per partition, the mutations after its last reset, in log order.
    let mut replayed: HashMap<Gpid, Vec<Mutation>> = HashMap::new();
    let log_dir = opts.data_dir.join("log");
    let log = {
        let dir = log_dir.clone();
        let log_options = opts.log.clone();
        tokio::task::spawn_blocking(move || {
            MutationLog::open(&dir, log_options, |rec| match rec {
                LogRecord::Mutation { gpid, mutation } => replayed.entry(gpid).or_default().push(mutation),
                LogRecord::Reset { gpid, .. } => {
                    replayed.remove(&gpid);
                }
            })
            .map(|log| (log, replayed))
        })
        .await?
        .with_context(|| format!("open mutation log in {}", log_dir.display()))?
    };
    let (log, mut replayed) = log;
    // A quarter of the lease per meta server: a frozen one costs a beacon or two, not the lease.
    let meta = MetaConn::new(&opts.meta, Duration::from_millis(opts.rpc_timeout_ms))
        .map_err(anyhow::Error::msg)?
        .with_attempt_timeout(Duration::from_millis((opts.lease_period_ms / 4).max(200)));
    let checkpoint_root = opts.data_dir.join("checkpoints");
    let _ = std::fs::remove_dir_all(&checkpoint_root);
    let node = Arc::new(Node {
        me: opts.advertise.clone(),
        log: Arc::new(log),
        meta,
        metrics: Metrics::new("tandem_replica"),
        checkpoints: Checkpoints::new(checkpoint_root),
        engine_memory: EngineMemory::new(opts.block_cache_bytes, opts.memtable_bytes_max),
        replicas: RwLock::new(HashMap::new()),
        partition_counts: RwLock::new(HashMap::new()),
        lease_until_ms: AtomicU64::new(0),
        start: Instant::now(),
        incarnation: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0),
        restarted: AtomicBool::new(true),
        peers: Mutex::new(HashMap::new()),
        peer_batches: Mutex::new(HashMap::new()),
        outside_since: Mutex::new(HashMap::new()),
        removing: Mutex::new(HashSet::new()),
        opts: opts.clone(),
    });
    // Open every replica found on disk.
    let replicas_dir = opts.data_dir.join("replicas");
    std::fs::create_dir_all(&replicas_dir)?;
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&replicas_dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        let Some((t, p)) = name.split_once('.') else { continue };
        let (Ok(t), Ok(p)) = (t.parse::<u32>(), p.parse::<u32>()) else { continue };
        found.push((Gpid::new(t, p), entry.path()));
    }
    let opened = found.len();
    for (gpid, path) in found {
        let engine = open_engine(&path, &node.engine_memory)?;
        let mutations = replayed.remove(&gpid).unwrap_or_default();
        let replica = Replica::open(gpid, node.me.clone(), node.replica_options(opened), Box::new(engine.clone()), mutations);
        let handle = replica_task::spawn(node.clone(), replica, engine, path);
        node.replicas.write().expect("replicas lock").insert(gpid, handle);
    }
    tracing::info!(address = %node.me, replicas = opened, "replica server starting");

    // The gRPC server stops on the caller's shutdown, or when this server gives up by itself.
    let (give_up, gave_up) = tokio::sync::watch::channel(false);
    let shutdown_signal = {
        let rx = shutdown.clone();
        async move {
            tokio::select! {
                _ = crate::stopped(rx) => {}
                _ = crate::stopped(gave_up) => {}
            }
        }
    };
    let grpc = crate::service::serve(node.clone(), shutdown_signal).await?;
    if let Some(addr) = opts.metrics_listen {
        let rx = shutdown.clone();
        let gauges = node.clone();
        let refresh: crate::metrics::Refresh = Arc::new(move || gauges.update_gauges());
        let local = crate::metrics::serve(addr, node.metrics.clone(), refresh, async move {
            crate::stopped(rx).await;
        })
        .await
        .with_context(|| format!("bind metrics on {addr}"))?;
        tracing::info!("metrics on http://{local}/metrics");
    }

    let mut beacon = tokio::time::interval(Duration::from_millis(opts.beacon_interval_ms));
    let mut tick = tokio::time::interval(Duration::from_millis(opts.tick_interval_ms));
    let mut gc = tokio::time::interval(Duration::from_millis(opts.log_gc_interval_ms));
    beacon.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    gc.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let beacon_node = node.clone();
    let beacon_task = tokio::spawn(async move {
        let mut failures = 0u32;
        loop {
            beacon.tick().await;
            match beacon_node.beacon_once().await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    // The meta may still be starting: say so only when it persists.
                    if failures == 3 || failures % 30 == 0 {
                        tracing::warn!("{e:#}");
                    }
                }
            }
        }
    });
    let stop = crate::stopped(shutdown.clone());
    tokio::pin!(stop);
    let mut log_failure = None;
    let mut cpu = crate::cpu::CpuMeter::default();
    let mut cpu_busy = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                // A failed log takes no more writes for any replica: a server that kept
                // beaconing would hold its partitions hostage. Stop, so the meta declares it
                // dead and moves them; a restart replays what the log holds.
                if let Some(e) = node.log.failure() {
                    log_failure = Some(e);
                    break;
                }
                if let Some(busy_share) = cpu.sample() {
                    cpu_busy = crate::cpu::cpu_busy(cpu_busy, busy_share);
                    node.log.set_cpu_busy(cpu_busy);
                }
                for h in node.replica_handles() {
                    h.send(Event::Input(Input::Tick));
                }
            }
            _ = gc.tick() => node.gc_log().await,
            _ = stop.as_mut() => break,
        }
    }
    beacon_task.abort();
    tracing::info!("replica server stopping");
    for h in node.replica_handles() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if h.send(Event::Stop { done: tx }) {
            let _ = rx.await;
        }
    }
    let _ = give_up.send(true);
    let _ = grpc.await;
    node.log.close();
    if let Some(e) = log_failure {
        anyhow::bail!(
            "the mutation log in {} failed ({e}); the server stopped so the meta moves its partitions elsewhere. \
             Fix the disk and restart it: the log replays what it holds",
            node.log.dir().display()
        );
    }
    Ok(())
}
