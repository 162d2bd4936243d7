//! The replica server process: opens the log and the replicas found on disk, serves gRPC, and
//! carries out what its IO-free host (`tandem_host::Host`) decides: beacons to the meta (which
//! grant the lease and carry the configurations), replicas opened and deleted, ticks, engine
//! flushes and log garbage collection.

use crate::checkpoint::Checkpoints;
use crate::metrics::Metrics;
use crate::options::ReplicaServerOptions;
use crate::replica_task::{self, Event, ReplicaHandle, Rt, SharedEngine};
use crate::error::{Error, Result};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tandem_client::batch::BatchConn;
use tandem_client::meta_conn::{endpoint, stream_endpoint, MetaConn};
use tandem_core::replica::{Ctx, Replica, ReplicaOptions};
use tandem_core::log_read::PartitionLog;
use tandem_core::Gpid;
use tandem_dup_core::FailMode;
use tandem_host::{Host, HostAction, HostInput, HostedReplica, ReplicaEvent, TableDup};
use tandem_proto::convert::config_from_wire;
use tandem_proto::v1;
use tandem_proto::v1::replica_service_client::ReplicaServiceClient;
use tandem_storage::{EngineMemory, MutationLog, RocksEngine, TableCompaction};
use tokio::sync::watch;
use tonic::transport::Channel;

/// A shipped batch's request to the other site gives up after this (the client retries within
/// it); the ship task's own bound is this plus `SHIP_TIMEOUT_MARGIN`.
pub const SHIP_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
pub const SHIP_TIMEOUT_MARGIN: Duration = Duration::from_secs(5);

pub struct Node {
    pub me: String,
    pub opts: ReplicaServerOptions,
    pub log: Arc<MutationLog>,
    pub meta: MetaConn,
    pub metrics: Metrics,
    pub checkpoints: Checkpoints,
    /// The block cache and memtable budget every replica's RocksDB shares.
    pub engine_memory: EngineMemory,
    /// Where requests are routed: the replicas the host opened and has not removed.
    replicas: RwLock<HashMap<Gpid, ReplicaHandle>>,
    partition_counts: RwLock<HashMap<u32, u32>>,
    lease_until_ms: AtomicU64,
    /// Set while a directory is below its disk reserve (`HostAction::SetDiskShort`); None before
    /// the first reading.
    disk_low: DiskLowCell,
    start: Instant,
    incarnation: u64,
    /// The decisions; never held across IO.
    host: Mutex<Host>,
    /// Set when the host stops the server.
    stop: watch::Sender<Option<String>>,
    beacon_failures: AtomicU32,
    /// What the beacons say of the replicas: only what changed since the last answered one.
    beacon_reports: Mutex<tandem_host::BeaconReports<v1::ReplicaReport>>,
    /// Backup uploads running on this server.
    pub(crate) uploads: crate::backup::Uploads,
    peers: Mutex<HashMap<String, ReplicaServiceClient<Channel>>>,
    /// The batch stream to each peer, which carries the prepares of every partition.
    peer_batches: Mutex<HashMap<String, Arc<BatchConn>>>,
    /// The other sites duplications ship to, as the meta last named them: their meta addresses
    /// and a client of each (made on first use).
    sites: Mutex<HashMap<String, (Vec<String>, Option<tandem_client::Client>)>>,
    /// Each table's tombstone retention (ms), shared by the compaction filters of its engines.
    /// Each table's compaction rule, shared by its engines.
    compaction: Mutex<HashMap<u32, TableCompaction>>,
}

impl Node {
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub fn ctx(&self) -> Ctx {
        let wall_us = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0);
        Ctx { now_ms: self.now_ms(), wall_us, lease_until_ms: self.lease_until_ms.load(Ordering::Acquire), disk_low: self.disk_low.get() }
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

    pub fn peer(&self, addr: &str) -> Result<ReplicaServiceClient<Channel>> {
        let mut peers = self.peers.lock().expect("peers lock");
        if let Some(c) = peers.get(addr) {
            return Ok(c.clone());
        }
        let channel = endpoint(addr, Duration::from_millis(self.opts.rpc_timeout_ms))
            .map_err(|e| Error::PeerAddress { addr: addr.into(), detail: e.to_string() })?
            .connect_lazy();
        let client = ReplicaServiceClient::new(channel).max_decoding_message_size(64 << 20).max_encoding_message_size(64 << 20);
        peers.insert(addr.to_string(), client.clone());
        Ok(client)
    }

    /// The batch stream to peer `addr` (on its own connection, without a per-request timeout:
    /// the caller times each call).
    pub fn peer_batch(&self, addr: &str) -> Result<Arc<BatchConn>> {
        let mut peers = self.peer_batches.lock().expect("peer batches lock");
        if let Some(c) = peers.get(addr) {
            return Ok(c.clone());
        }
        let channel = stream_endpoint(addr).map_err(|e| Error::PeerAddress { addr: addr.into(), detail: e.to_string() })?.connect_lazy();
        let client = ReplicaServiceClient::new(channel).max_decoding_message_size(64 << 20).max_encoding_message_size(64 << 20);
        let conn = Arc::new(BatchConn::new(addr, client));
        peers.insert(addr.to_string(), conn.clone());
        Ok(conn)
    }

    fn replica_dir(&self, gpid: Gpid) -> PathBuf {
        replica_dir(&self.opts.data_dir, gpid)
    }

    /// A prepare arrived for a partition this server does not host: the host decides whether
    /// to create it (a new partition's first prepare may beat the meta's beacon answer).
    /// Returns the replica, or why there is none.
    pub fn replica_for_prepare(self: &Arc<Self>, config: &tandem_core::PartitionConfig) -> std::result::Result<Option<ReplicaHandle>, String> {
        if let Some(h) = self.replica(config.gpid) {
            return Ok(Some(h));
        }
        self.host_step(HostInput::PrepareForUnknown { config: config.clone() });
        if let Some(h) = self.replica(config.gpid) {
            return Ok(Some(h));
        }
        if self.host.lock().expect("host lock").is_removing(config.gpid) {
            return Err(format!("replica {} is being removed from this server; it can be created again once that is done", config.gpid));
        }
        Ok(None)
    }

    /// Feeds the host, then carries out what it decided. Actions that must take effect before
    /// the host's next input (opening a replica, the lease, partition counts) run under its
    /// lock; the others after it, and none of them waits for IO there.
    pub fn host_step(self: &Arc<Self>, input: HostInput) {
        let mut inputs = VecDeque::from([input]);
        while let Some(input) = inputs.pop_front() {
            let actions = {
                let mut host = self.host.lock().expect("host lock");
                host.step(input);
                let mut later = Vec::new();
                for action in host.take_actions() {
                    match action {
                        HostAction::OpenReplica { gpid, options } => {
                            if let Err(e) = self.open_replica(gpid, options) {
                                tracing::error!("cannot create replica {gpid}: {e}");
                                inputs.push_back(HostInput::OpenFailed { gpid, error: e.to_string() });
                            }
                        }
                        HostAction::ExtendLease { until_ms } => {
                            self.lease_until_ms.fetch_max(until_ms, Ordering::AcqRel);
                        }
                        HostAction::SetDiskShort { short } => {
                            let was = self.disk_low.get();
                            self.disk_low.set(short.as_ref().map(|s| s.low()));
                            self.metrics.disk_short.set(i64::from(short.is_some()));
                            match (was, &short) {
                                (None, Some(s)) => tracing::warn!(
                                    dir = s.dir, free_bytes = s.free_bytes, reserve_bytes = s.reserve_bytes,
                                    "disk almost full: writes other than deletes are refused until space is freed"
                                ),
                                (Some(_), None) => tracing::info!("disk space is back above the reserve: writes are taken again"),
                                _ => {}
                            }
                        }
                        HostAction::SetPartitionCount { table_id, partition_count } => {
                            self.partition_counts.write().expect("partition counts lock").insert(table_id, partition_count);
                        }
                        HostAction::SetTombstoneRetention { table_id, retention_ms } => {
                            self.compaction_of(table_id).retention_ms.store(retention_ms, Ordering::Relaxed);
                        }
                        HostAction::SetTombstoneHold { table_id, hold_us } => {
                            self.compaction_of(table_id).hold_us.store(hold_us, Ordering::Relaxed);
                        }
                        other => later.push(other),
                    }
                }
                later
            };
            for action in actions {
                self.execute(action, &mut inputs);
            }
        }
    }

    fn execute(self: &Arc<Self>, action: HostAction, inputs: &mut VecDeque<HostInput>) {
        match action {
            HostAction::Configure { gpid, config } => {
                let sent = self.replica(gpid).is_some_and(|h| h.send(ReplicaEvent::Configure { config }));
                if !sent {
                    inputs.push_back(HostInput::Configured { gpid, status: None });
                }
            }
            HostAction::Duplications { gpid, configs } => {
                if let Some(h) = self.replica(gpid) {
                    h.send(ReplicaEvent::Duplications { configs });
                }
            }
            HostAction::TickReplicas { log_cache_bytes_max } => {
                let now_ms = self.now_ms();
                // Under the routing map's read lock, without copying a thousand handles ten
                // times a second (a send never blocks).
                for h in self.replicas.read().expect("replicas lock").values() {
                    if h.tick_due(now_ms) {
                        h.send(ReplicaEvent::Tick { log_cache_bytes_max });
                    }
                }
            }
            HostAction::SendBeacon { sent_at_ms, restarted, lease_period_ms, backup_reports, restore_failures, disk_short, replicas_max, refused, configs_digest } => {
                let node = self.clone();
                let disk_short = disk_short.as_ref().map(tandem_proto::convert::disk_short_to_wire);
                let req = v1::BeaconRequest {
                    node: self.me.clone(),
                    replicas: vec![],
                    incarnation: self.incarnation,
                    lease_period_ms,
                    restarted,
                    dup_progress: vec![],
                    backup_reports: backup_reports.iter().map(backup_report_to_wire).collect(),
                    restore_failures: restore_failures
                        .iter()
                        .map(|f| v1::RestoreFailure { gpid: Some(f.gpid.into()), error: f.error.clone(), permanent: f.permanent })
                        .collect(),
                    disk_short,
                    // 0: no limit.
                    replicas_max: u32::try_from(replicas_max).unwrap_or(0),
                    refused: refused.into_iter().map(Into::into).collect(),
                    reports_delta: false,
                    reports_gone: vec![],
                    reports_digest: vec![],
                    configs_digest: configs_digest.map_or_else(Vec::new, |d| d.to_bytes().to_vec()),
                };
                tokio::spawn(async move { node.beacon(sent_at_ms, req).await });
            }
            HostAction::BackupPartition { task } => self.start_backup(task),
            HostAction::CancelBackup { backup_id, gpid, attempt } => self.uploads.cancel(backup_id, gpid, attempt),
            HostAction::RestoreReplica { gpid, source } => self.start_restore(gpid, source),
            HostAction::RemoveReplica { gpid, why } => {
                let node = self.clone();
                tokio::spawn(async move { node.remove_replica(gpid, &why).await });
            }
            HostAction::ReadDurable { gpids } => {
                let node = self.clone();
                // Point reads of every engine's files, off the async runtime; the replicas' own
                // tasks are not involved, so their writes go on.
                tokio::task::spawn_blocking(move || {
                    let mut decrees = BTreeMap::new();
                    for gpid in gpids {
                        let Some(engine) = node.replica(gpid).and_then(|h| h.engine()) else { continue };
                        match engine.with(|e| e.checkpointer()).durable_decree() {
                            Ok(d) => {
                                decrees.insert(gpid, d);
                            }
                            Err(e) => tracing::warn!("replica {gpid}: reading its durable decree failed, the log keeps all of it: {e}"),
                        }
                    }
                    node.host_step(HostInput::DurableRead { decrees });
                });
            }
            HostAction::FlushEngine { gpid } => {
                if let Some(engine) = self.replica(gpid).and_then(|h| h.engine()) {
                    // Quick, but RocksDB may make it wait out a write stall: not on the runtime.
                    tokio::task::spawn_blocking(move || {
                        if let Err(e) = engine.with(|e| e.checkpointer()).request_flush() {
                            tracing::warn!("replica {gpid}: asking for a flush failed: {e}");
                        }
                    });
                }
            }
            HostAction::CollectLog { keep_after, retain_bytes } => {
                let node = self.clone();
                // One line per run, also when nothing could go: a log that stops shrinking is
                // worth seeing (a duplication holding it, a replica that does not flush).
                tokio::task::spawn_blocking(move || {
                    let log = &node.log;
                    let keep = |g| keep_after.get(&g).copied();
                    let holding_back = match log.gc(&keep) {
                        Ok(n) => {
                            let holding_back = log.holding_back(&keep, retain_bytes);
                            tracing::info!(
                                "log gc removed {n} segments; {} segments ({} MiB) kept; {} replicas flushed to bring it within {} MiB",
                                log.segment_count(),
                                log.total_bytes() >> 20,
                                holding_back.len(),
                                retain_bytes >> 20
                            );
                            holding_back
                        }
                        Err(e) => {
                            tracing::warn!("log gc failed: {e}");
                            BTreeMap::new()
                        }
                    };
                    node.host_step(HostInput::LogCollected { holding_back });
                });
            }
            HostAction::Stop { error } => {
                let _ = self.stop.send(Some(error));
            }
            HostAction::RefuseReplica { gpid, why } => tracing::warn!("replica {gpid} refused: {why}"),
            HostAction::OpenReplica { .. } | HostAction::ExtendLease { .. } | HostAction::SetPartitionCount { .. } | HostAction::SetTombstoneRetention { .. }
            | HostAction::SetTombstoneHold { .. } | HostAction::SetDiskShort { .. } => {
                unreachable!("run under the host's lock")
            }
        }
    }

    /// Opens (or creates empty) the replica of `gpid` and starts its task.
    /// Runs under the host's lock (which is what keeps two opens of one replica apart); the
    /// routing map's lock is taken only to insert, so requests are not held up by the open.
    fn open_replica(self: &Arc<Self>, gpid: Gpid, options: ReplicaOptions) -> Result<()> {
        if self.replica(gpid).is_some() {
            return Ok(());
        }
        let dir = self.replica_dir(gpid);
        let engine = open_engine(&dir, &self.engine_memory, self.compaction_of(gpid.table_id))?;
        let core = Replica::open(gpid, self.me.clone(), options, Box::new(engine.clone()), vec![]);
        let hosted = HostedReplica::new(core, self.incarnation, &self.opts.host);
        let handle = replica_task::spawn(self.clone(), hosted, engine, dir);
        self.replicas.write().expect("replicas lock").insert(gpid, handle);
        Ok(())
    }

    /// Stops a replica and deletes its data; `why` goes into the server's log.
    async fn remove_replica(self: &Arc<Self>, gpid: Gpid, why: &str) {
        let handle = self.replicas.write().expect("replicas lock").remove(&gpid);
        if let Some(h) = handle {
            let (tx, rx) = tokio::sync::oneshot::channel();
            if h.send(Event::Stop { done: tx }) {
                let _ = rx.await;
            }
        }
        let dir = self.replica_dir(gpid);
        let checkpoints = self.checkpoints.clone();
        let removed = tokio::task::spawn_blocking(move || {
            checkpoints.delete_partition(gpid);
            std::fs::remove_dir_all(&dir).or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) })
        })
        .await;
        match removed {
            Ok(Ok(())) => tracing::info!("removed replica {gpid}: {why}"),
            Ok(Err(e)) => tracing::warn!("could not remove the data of replica {gpid}: {e}"),
            Err(e) => tracing::warn!("could not remove the data of replica {gpid}: {e}"),
        }
        self.host_step(HostInput::ReplicaRemoved { gpid });
    }

    /// Sends `req` with the replicas' reports and duplication progress as they are now.
    async fn beacon(self: &Arc<Self>, sent_at_ms: u64, mut req: v1::BeaconRequest) {
        let handles = self.replica_handles();
        let reports: BTreeMap<Gpid, v1::ReplicaReport> = handles.iter().map(|h| (h.gpid(), h.report())).collect();
        let digest = tandem_core::digest::reports_digest(reports.iter().map(|(g, r)| (*g, r.ballot, r.status.as_str(), r.last_committed, r.last_prepared)));
        let delta = self.beacon_reports.lock().expect("beacon reports lock").delta(reports);
        req.reports_delta = !delta.full;
        req.replicas = delta.changed.into_iter().map(|(_, r)| r).collect();
        req.reports_gone = delta.gone.into_iter().map(Into::into).collect();
        req.reports_digest = digest.to_bytes().to_vec();
        req.dup_progress = handles.iter().flat_map(|h| h.dup_progress()).collect();
        let answer = self
            .meta
            .call(|mut c| {
                let req = req.clone();
                async move { c.beacon(req).await }
            })
            .await;
        let input = match answer {
            Ok(resp) => {
                self.beacon_failures.store(0, Ordering::Relaxed);
                self.beacon_reports.lock().expect("beacon reports lock").answered(resp.resend_reports);
                let mut configs = Vec::new();
                let mut partition_counts = Vec::new();
                let mut tombstone_retention = Vec::new();
                for wire in resp.configs {
                    match config_from_wire(&wire) {
                        Ok(c) => {
                            if wire.partition_count > 0 {
                                partition_counts.push((c.gpid.table_id, wire.partition_count));
                            }
                            if wire.tombstone_retention_ms > 0 {
                                tombstone_retention.push((c.gpid.table_id, wire.tombstone_retention_ms));
                            }
                            configs.push(c);
                        }
                        Err(e) => tracing::warn!("meta sent a malformed configuration: {e}"),
                    }
                }
                let gone = resp.gone.into_iter().map(|g| Gpid::new(g.table_id, g.partition)).collect();
                let dups = self.take_duplications(resp.dups, resp.sites);
                tombstone_retention.dedup();
                let backups = resp.backup_tasks.iter().filter_map(backup_task_from_wire).collect();
                let restores = resp
                    .restores
                    .iter()
                    .map(|r| tandem_backup_core::RestoreSource {
                        restore_id: r.restore_id,
                        table_id: r.table_id,
                        backup_id: r.backup_id,
                        source_table_id: r.source_table_id,
                        target: r.target.clone(),
                        manifest_sha256: r.manifest_sha256.clone(),
                    })
                    .collect();
                let (configs_unchanged, resend_reports) = (resp.configs_unchanged, resp.resend_reports);
                HostInput::BeaconAnswered { sent_at_ms, configs, partition_counts, tombstone_retention, gone, dups, backups, restores, configs_unchanged, resend_reports }
            }
            Err(status) => {
                self.beacon_reports.lock().expect("beacon reports lock").failed();
                let failures = self.beacon_failures.fetch_add(1, Ordering::Relaxed) + 1;
                // The meta may still be starting: say so only when it persists.
                if failures == 3 || failures % 30 == 0 {
                    tracing::warn!("beacon to meta failed: {}", status.message());
                }
                HostInput::BeaconFailed { now_ms: self.now_ms() }
            }
        };
        self.host_step(input);
    }

    /// The duplications of a beacon answer, for the host, and the addresses of the sites they
    /// ship to, for this runtime's clients of them.
    fn take_duplications(&self, dups: Vec<v1::DupInfo>, sites: Vec<v1::Site>) -> Vec<TableDup> {
        {
            let mut known = self.sites.lock().expect("sites lock");
            known.retain(|name, _| sites.iter().any(|s| s.name == *name));
            for s in sites {
                let entry = known.entry(s.name).or_insert_with(|| (s.metas.clone(), None));
                if entry.0 != s.metas {
                    *entry = (s.metas, None);
                }
            }
        }
        dups.into_iter()
            .filter_map(|d| {
                let Some(fail_mode) = FailMode::from_name(&d.fail_mode) else {
                    tracing::warn!("meta sent duplication {} with an unknown fail mode {:?}", d.id, d.fail_mode);
                    return None;
                };
                Some(TableDup {
                    table_id: d.table_id,
                    dup_id: d.id,
                    table: d.table,
                    remote_site: d.remote_site,
                    paused: d.status == "pause",
                    fail_mode,
                    sync_existing: d.sync_existing,
                    confirmed: d.confirmed.iter().map(|c| (c.partition, c.confirmed)).collect(),
                    watermark_us: d.watermark_us,
                })
            })
            .collect()
    }

    /// The compaction rule shared by table `table_id`'s engines: until the host passes on what
    /// the meta said, the default policy's retention and every tombstone held (a duplication
    /// may lag; `HostAction::SetTombstoneHold`).
    pub fn compaction_of(&self, table_id: u32) -> TableCompaction {
        self.compaction.lock().expect("compaction lock").entry(table_id).or_insert_with(|| TableCompaction::holding(0)).clone()
    }

    /// A client of site `name`'s meta servers, as the meta named them last.
    /// A client of site `name` for shipping duplicated batches (its requests give up after
    /// `SHIP_REQUEST_TIMEOUT`; the ship task adds `SHIP_TIMEOUT_MARGIN` on top as its own bound).
    pub fn site_client(&self, name: &str) -> std::result::Result<tandem_client::Client, String> {
        let mut sites = self.sites.lock().expect("sites lock");
        let (metas, client) = sites.get_mut(name).ok_or_else(|| format!("site {name:?} is not known to this server (yet)"))?;
        if client.is_none() {
            let opts = tandem_client::ClientOptions { rpc_timeout: Duration::from_secs(5), request_timeout: SHIP_REQUEST_TIMEOUT };
            *client = Some(tandem_client::Client::new(metas, opts).map_err(|e| format!("site {name:?}: {e}"))?);
        }
        Ok(client.clone().expect("made above"))
    }

    fn update_gauges(&self) {
        let mut counts: HashMap<&'static str, i64> = HashMap::new();
        for status in ["primary", "secondary", "learner", "inactive", "error"] {
            counts.insert(status, 0);
        }
        let m = &self.metrics;
        for g in [&m.table_replicas, &m.table_committed, &m.table_uncommitted, &m.table_pending_compaction] {
            g.reset();
        }
        let mut stopped_engines = 0;
        for h in self.replica_handles() {
            let state = h.state();
            *counts.entry(state.status.as_str()).or_default() += 1;
            let table = state.gpid.table_id.to_string();
            m.table_replicas.with_label_values(&[table.as_str(), state.status.as_str()]).inc();
            m.table_committed.with_label_values(&[table.as_str()]).add(state.last_committed as i64);
            m.table_uncommitted.with_label_values(&[table.as_str()]).add(state.last_prepared.saturating_sub(state.last_committed) as i64);
            if let Some(engine) = h.engine() {
                let (pending, stopped) = engine.with(|e| (e.pending_compaction_bytes(), e.write_stopped()));
                m.table_pending_compaction.with_label_values(&[table.as_str()]).add(pending as i64);
                stopped_engines += i64::from(stopped);
            }
        }
        m.write_stopped_engines.set(stopped_engines);
        for (status, n) in counts {
            self.metrics.replicas.with_label_values(&[status]).set(n);
        }
        // The log counts since it opened; the counters catch up with it at each scrape.
        // So do RocksDB's statistics, since the server started.
        let hits = m.block_cache.with_label_values(&["hit"]);
        let misses = m.block_cache.with_label_values(&["miss"]);
        for (counter, now) in [
            (&m.log_records, self.log.appended_records()),
            (&m.log_fsyncs, self.log.fsyncs()),
            (&m.log_group_waits, self.log.group_waits()),
            (&m.log_written_bytes, self.log.appended_bytes()),
            (&hits, self.engine_memory.block_cache_hits()),
            (&misses, self.engine_memory.block_cache_misses()),
        ] {
            counter.inc_by(now.saturating_sub(counter.get()));
        }
        let stalled = self.engine_memory.write_stall_micros() as f64 / 1e6;
        m.write_stall_seconds.inc_by((stalled - m.write_stall_seconds.get()).max(0.0));
        m.log_bytes.set(self.log.total_bytes() as i64);
        self.metrics.memory.with_label_values(&["memtables"]).set(self.engine_memory.memtable_bytes() as i64);
        self.metrics.memory.with_label_values(&["block_cache"]).set(self.engine_memory.block_cache_bytes() as i64);
        // Only what this server ships now: a duplicator that moved with its primary goes.
        for m in [&self.metrics.dup_lag_decrees, &self.metrics.dup_confirmed] {
            m.reset();
        }
        self.metrics.dup_lag_seconds.reset();
        for p in self.replica_handles().iter().flat_map(|h| h.dup_progress()) {
            let gpid = p.gpid.unwrap_or_default();
            let labels = [gpid.table_id.to_string(), gpid.partition.to_string(), p.dup_id.to_string()];
            let labels = [labels[0].as_str(), labels[1].as_str(), labels[2].as_str()];
            self.metrics.dup_lag_decrees.with_label_values(&labels).set(p.lag_decrees as i64);
            self.metrics.dup_lag_seconds.with_label_values(&labels).set(p.lag_ms as f64 / 1_000.0);
            self.metrics.dup_confirmed.with_label_values(&labels).set(p.confirmed as i64);
        }
    }
}

fn backup_report_to_wire(r: &tandem_backup_core::BackupTaskReport) -> v1::BackupTaskReport {
    use tandem_backup_core::PartitionReport;
    use v1::backup_task_report::Report;
    let report = match &r.report {
        PartitionReport::Progress { bytes_done, bytes_total } => Report::Progress(v1::BackupProgress { bytes_done: *bytes_done, bytes_total: *bytes_total }),
        PartitionReport::Done(e) => Report::Done(v1::BackupPartitionEntry {
            partition: e.partition,
            attempt: e.attempt,
            decree: e.decree,
            manifest: e.manifest.clone(),
            manifest_sha256: e.manifest_sha256.clone(),
            manifest_bytes: e.manifest_bytes,
            files: e.files,
            bytes: e.bytes,
            new_bytes: e.new_bytes,
            reused_bytes: e.reused_bytes,
            duration_ms: e.duration_ms,
        }),
        PartitionReport::Failed(why) => Report::Failed(why.clone()),
    };
    v1::BackupTaskReport { backup_id: r.backup_id, gpid: Some(r.gpid.into()), attempt: r.attempt, report: Some(report) }
}

fn backup_task_from_wire(t: &v1::BackupTask) -> Option<tandem_backup_core::BackupTask> {
    let gpid = t.gpid.as_ref().map(|g| Gpid::new(g.table_id, g.partition));
    if gpid.is_none() {
        tracing::warn!("meta sent backup task {} without a partition", t.backup_id);
    }
    Some(tandem_backup_core::BackupTask {
        backup_id: t.backup_id,
        gpid: gpid?,
        attempt: t.attempt,
        target: t.target.clone(),
        kept: t.kept.iter().map(|k| (k.backup_id, k.manifest_sha256.clone())).collect(),
    })
}

pub(crate) fn replica_dir(data_dir: &Path, gpid: Gpid) -> PathBuf {
    data_dir.join("replicas").join(format!("{}.{}", gpid.table_id, gpid.partition))
}

/// The engine of a replica directory: `CURRENT` names the active database directory (it changes
/// when a learned checkpoint is installed), `db` by default.
pub(crate) fn open_engine(dir: &Path, memory: &EngineMemory, compaction: TableCompaction) -> Result<SharedEngine> {
    std::fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
    let db = active_db_dir(dir)?;
    let engine = RocksEngine::open_with_compaction(&db, memory, compaction)?;
    Ok(SharedEngine::new(engine))
}

pub(crate) fn active_db_dir(dir: &Path) -> Result<PathBuf> {
    let current = dir.join("CURRENT");
    let name = match std::fs::read_to_string(&current) {
        Ok(s) => s.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "db".to_string(),
        Err(e) => return Err(Error::io("read", &current)(e)),
    };
    if name.is_empty() || name.contains('/') || name.contains("..") {
        return Err(Error::InvalidCurrent { path: current, name });
    }
    Ok(dir.join(name))
}

/// Runs a replica server until `shutdown` fires.
/// The server's `DiskLow` as the host last set it, read by every `Node::ctx` (so by every step and
/// every read) without a lock: the free bytes, `u64::MAX` while the disk is not short, and the
/// reserve. The two may be of different readings for a moment; they only go into a message.
struct DiskLowCell {
    free_bytes: AtomicU64,
    reserve_bytes: AtomicU64,
}

impl Default for DiskLowCell {
    fn default() -> Self {
        DiskLowCell { free_bytes: AtomicU64::new(u64::MAX), reserve_bytes: AtomicU64::new(0) }
    }
}

impl DiskLowCell {
    fn get(&self) -> Option<tandem_core::replica::DiskLow> {
        let free_bytes = self.free_bytes.load(Ordering::Acquire);
        (free_bytes != u64::MAX).then(|| tandem_core::replica::DiskLow { free_bytes, reserve_bytes: self.reserve_bytes.load(Ordering::Relaxed) })
    }

    fn set(&self, low: Option<tandem_core::replica::DiskLow>) {
        self.reserve_bytes.store(low.map_or(0, |l| l.reserve_bytes), Ordering::Relaxed);
        self.free_bytes.store(low.map_or(u64::MAX, |l| l.free_bytes.min(u64::MAX - 1)), Ordering::Release);
    }
}

/// How often free space is read (`tandem_host::disk`): the reserve must hold what the server
/// writes meanwhile — at 10 ms, 1.6 MB at 160 MB/s (statvfs costs microseconds).
const DISK_READ_INTERVAL: Duration = Duration::from_millis(10);

/// The directories whose free space decides whether the server takes writes: data and log.
fn watched_dirs(opts: &ReplicaServerOptions) -> [PathBuf; 2] {
    [opts.data_dir.clone(), log_dir(opts)]
}

fn log_dir(opts: &ReplicaServerOptions) -> PathBuf {
    opts.data_dir.join("log")
}

/// Feeds the host the free space of the data and log directories, one reading at a time.
async fn read_disk_space(node: Arc<Node>) {
    let mut every = tokio::time::interval(DISK_READ_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let reader = node.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let dirs = tandem_runtime::disk::dirs_space(&watched_dirs(&reader.opts));
            if let Some(free) = dirs.iter().map(|d| d.free_bytes).min() {
                reader.metrics.disk_free_bytes.set(free as i64);
            }
            reader.host_step(HostInput::DiskSpace { dirs });
        })
        .await;
    }
}

/// Pauses between attempts to open the watch stream: the first after a stream that ended, at
/// most the second after failures.
const WATCH_RETRY_MIN: Duration = Duration::from_millis(200);
const WATCH_RETRY_MAX: Duration = Duration::from_secs(2);

/// Keeps a watch stream open to the meta leader for as long as this process lives. Over it the
/// meta asks for a beacon when a configuration this server hosts changed (so a promotion reaches
/// it in a round trip); and when this process dies, its host closes the connection, and the
/// meta, which then finds the port refusing, declares it dead without waiting for the grace
/// period (docs/meta.md, "A crashed server").
async fn watch_meta(node: Arc<Node>) {
    let request = v1::WatchRequest { node: node.me.clone(), incarnation: node.incarnation };
    let mut pause = WATCH_RETRY_MIN;
    loop {
        let opened = node
            .meta
            .call(|mut c| {
                let request = request.clone();
                async move { c.watch(request).await }
            })
            .await;
        match opened {
            Ok(mut events) => {
                pause = WATCH_RETRY_MIN;
                while let Ok(Some(event)) = events.message().await {
                    if event.beacon_now {
                        node.host_step(HostInput::BeaconNow { now_ms: node.now_ms() });
                    }
                }
                tracing::info!("the watch stream to the meta ended; opening it again");
            }
            Err(status) => {
                tracing::debug!("cannot open the watch stream to the meta: {}", status.message());
                pause = (pause * 2).min(WATCH_RETRY_MAX);
            }
        }
        tokio::time::sleep(pause).await;
    }
}

/// Runs a replica server until `shutdown`. After its mutation log fails it starts again from its
/// disk, as a process restart would, once `tandem_host::Restarts` allows (docs/host.md, "A
/// failed log"); the metrics endpoint and its counters carry on across such restarts.
pub async fn run(opts: ReplicaServerOptions, shutdown: watch::Receiver<bool>) -> Result<()> {
    opts.host.validate().map_err(Error::Options)?;
    let metrics = Metrics::new("tandem_replica");
    let current: Arc<Mutex<std::sync::Weak<Node>>> = Arc::new(Mutex::new(std::sync::Weak::new()));
    if let Some(addr) = opts.metrics_listen {
        let rx = shutdown.clone();
        let serving = current.clone();
        let refresh: tandem_runtime::metrics::Refresh = Arc::new(move || {
            if let Some(node) = serving.lock().expect("node lock").upgrade() {
                node.update_gauges();
            }
        });
        let local = tandem_runtime::metrics::serve(addr, metrics.registry.clone(), refresh, async move {
            tandem_runtime::stopped(rx).await;
        })
        .await
        .map_err(|source| Error::Bind { addr, source })?;
        tracing::info!("metrics on http://{local}/metrics");
    }
    let mut restarts = tandem_host::Restarts::default();
    let clock = Instant::now();
    let now_ms = || clock.elapsed().as_millis() as u64;
    loop {
        let (dir, detail) = match serve_from_disk(&opts, shutdown.clone(), metrics.clone(), &current).await {
            Err(Error::LogFailed { dir, detail }) if !*shutdown.borrow() => (dir, detail),
            other => return other,
        };
        metrics.log_failure_restarts.inc();
        let pause = restarts.on_failure(now_ms());
        tracing::error!(
            "the mutation log in {} failed ({detail}); every replica stopped and the meta moves their partitions. Nothing \
             acknowledged is lost: this server starts again from its disk in {} s at the earliest, once every directory is \
             above its disk reserve ({} failures in the last hour). Free space or fix the disk if this repeats",
            dir.display(),
            pause / 1000,
            restarts.recent()
        );
        let mut watch = tandem_host::DiskWatch::new(opts.host.disk_reserve_bytes, opts.host.disk_reserve_percent);
        let dirs = watched_dirs(&opts);
        let mut stop = std::pin::pin!(tandem_runtime::stopped(shutdown.clone()));
        let mut said = false;
        // A task of the previous run still holding it past this is a bug: starting anyway
        // reports the engine it still holds open, rather than waiting forever.
        let closing_deadline = clock.elapsed() + Duration::from_secs(30);
        loop {
            let short = watch.on_space(&tandem_runtime::disk::dirs_space(&dirs)).cloned();
            // The previous run's engines close with its last task: a restart opens them again.
            let closed = current.lock().expect("node lock").strong_count() == 0 || clock.elapsed() > closing_deadline;
            if restarts.may_start(now_ms(), short.is_some()) && closed {
                break;
            }
            if let Some(short) = short.filter(|_| !said) {
                tracing::warn!("waiting for disk room to start again: {short}");
                said = true;
            }
            tokio::select! {
                _ = tokio::time::sleep(RESTART_POLL) => {}
                _ = stop.as_mut() => return Ok(()),
            }
        }
        tracing::info!("starting again from the disk after the mutation log failed");
    }
}

/// How often a server whose log failed looks at its disks and its pause.
const RESTART_POLL: Duration = Duration::from_millis(100);

/// One life of the server: replay the log, open the replicas found on disk, serve until
/// `shutdown` or until the log fails (`Error::LogFailed`).
async fn serve_from_disk(opts: &ReplicaServerOptions, shutdown: watch::Receiver<bool>, metrics: Metrics, current: &Mutex<std::sync::Weak<Node>>) -> Result<()> {
    std::fs::create_dir_all(&opts.data_dir).map_err(Error::io("create data dir", &opts.data_dir))?;
    // Replay the shared log: per partition, its mutations by the replay rule (log_read).
    let log = {
        let dir = log_dir(opts);
        let log_options = opts.log.clone();
        tokio::task::spawn_blocking(move || {
            let mut replayed: BTreeMap<Gpid, PartitionLog> = BTreeMap::new();
            MutationLog::open(&dir, log_options, |rec| replayed.entry(rec.gpid()).or_default().push(rec)).map(|log| (log, replayed))
        })
        .await??
    };
    let (log, mut replayed) = log;
    // A quarter of the lease per meta server: a frozen one costs a beacon or two, not the lease.
    let meta = MetaConn::new(&opts.meta, Duration::from_millis(opts.rpc_timeout_ms))
        .map_err(Error::Options)?
        .with_attempt_timeout(Duration::from_millis((opts.host.lease_period_ms / 4).max(200)));
    let checkpoint_root = opts.data_dir.join("checkpoints");
    let _ = std::fs::remove_dir_all(&checkpoint_root);
    // Every replica found on disk is opened.
    let replicas_dir = opts.data_dir.join("replicas");
    std::fs::create_dir_all(&replicas_dir).map_err(Error::io("create", &replicas_dir))?;
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&replicas_dir).map_err(Error::io("list", &replicas_dir))? {
        let entry = entry.map_err(Error::io("list", &replicas_dir))?;
        let name = entry.file_name().to_string_lossy().to_string();
        let Some((t, p)) = name.split_once('.') else { continue };
        let (Ok(t), Ok(p)) = (t.parse::<u32>(), p.parse::<u32>()) else { continue };
        found.push((Gpid::new(t, p), entry.path()));
    }
    let start = Instant::now();
    let (stop, mut stopped) = watch::channel(None);
    let groups = metrics.log_group_records.clone();
    log.observe_groups(move |records| groups.observe(records as f64));
    let node = Arc::new(Node {
        me: opts.advertise.clone(),
        log: Arc::new(log),
        meta,
        metrics,
        checkpoints: Checkpoints::new(checkpoint_root),
        engine_memory: EngineMemory::new(opts.block_cache_bytes, opts.memtable_bytes_max),
        replicas: RwLock::new(HashMap::new()),
        partition_counts: RwLock::new(HashMap::new()),
        lease_until_ms: AtomicU64::new(0),
        disk_low: DiskLowCell::default(),
        start,
        incarnation: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0),
        host: Mutex::new(Host::new(opts.advertise.clone(), opts.host.clone(), found.iter().map(|(g, _)| *g), 0)),
        stop,
        beacon_failures: AtomicU32::new(0),
        beacon_reports: Mutex::new(tandem_host::BeaconReports::default()),
        uploads: crate::backup::Uploads::new(opts.backup_upload_bytes_per_sec),
        peers: Mutex::new(HashMap::new()),
        peer_batches: Mutex::new(HashMap::new()),
        sites: Mutex::new(HashMap::new()),
        compaction: Mutex::new(HashMap::new()),
        opts: opts.clone(),
    });
    let opened = found.len();
    for (gpid, path) in found {
        let engine = open_engine(&path, &node.engine_memory, node.compaction_of(gpid.table_id))?;
        let mutations = replayed.remove(&gpid).map(PartitionLog::into_mutations).unwrap_or_default();
        let core = Replica::open(gpid, node.me.clone(), opts.host.replica_options(opened), Box::new(engine.clone()), mutations);
        let hosted: HostedReplica<Rt> = HostedReplica::new(core, node.incarnation, &opts.host);
        let handle = replica_task::spawn(node.clone(), hosted, engine, path);
        node.replicas.write().expect("replicas lock").insert(gpid, handle);
    }
    tracing::info!(address = %node.me, replicas = opened, "replica server starting");

    // The gRPC server stops on the caller's shutdown, or when this server gives up by itself.
    let (give_up, gave_up) = tokio::sync::watch::channel(false);
    let shutdown_signal = {
        let rx = shutdown.clone();
        async move {
            tokio::select! {
                _ = tandem_runtime::stopped(rx) => {}
                _ = tandem_runtime::stopped(gave_up) => {}
            }
        }
    };
    let grpc = crate::service::serve(node.clone(), shutdown_signal).await?;
    let watching = tokio::spawn(watch_meta(node.clone()));
    let disk_reads = tokio::spawn(read_disk_space(node.clone()));
    *current.lock().expect("node lock") = Arc::downgrade(&node);

    let mut tick = tokio::time::interval(Duration::from_millis(opts.host.tick_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = tandem_runtime::stopped(shutdown.clone());
    tokio::pin!(stop);
    let mut cpu = crate::cpu::CpuMeter::default();
    let mut cpu_busy = false;
    let failure = loop {
        tokio::select! {
            _ = tick.tick() => {
                // A failed log takes no more writes for any replica: a server that kept
                // beaconing would hold its partitions hostage.
                if let Some(error) = node.log.failure() {
                    node.host_step(HostInput::LogFailed { error });
                }
                if let Some(busy_share) = cpu.sample() {
                    cpu_busy = crate::cpu::cpu_busy(cpu_busy, busy_share);
                    node.log.set_cpu_busy(cpu_busy);
                }
                node.host_step(HostInput::Tick { now_ms: node.now_ms() });
            }
            reason = stopped.wait_for(Option::is_some) => break reason.map(|r| r.clone()).unwrap_or(None),
            _ = stop.as_mut() => break None,
        }
    };
    tracing::info!("replica server stopping");
    watching.abort();
    disk_reads.abort();
    for h in node.replica_handles() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if h.send(Event::Stop { done: tx }) {
            let _ = rx.await;
        }
    }
    let _ = give_up.send(true);
    let _ = grpc.await;
    node.log.close();
    if let Some(detail) = failure {
        return Err(Error::LogFailed { dir: node.log.dir().to_path_buf(), detail });
    }
    Ok(())
}
