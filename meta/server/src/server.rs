//! The meta server runtime: holds the cluster's metadata in memory, persists every change in the
//! SQL store before acting on it (compare-and-set on the ballot), answers beacons with the
//! configurations each node hosts, and runs failure detection and cure on a timer.
//!
//! Several meta servers may share one PostgreSQL store; one leads. A claim loop feeds the lease
//! row's compare-and-set outcomes to `Leadership` (meta-core). The leader loads all metadata,
//! fences the store with its epoch and serves; the others answer every request with NotLeader
//! and the leader's address, which clients and replica servers follow.
//!
//! ```text
//!  claim loop ──▶ store.claim_lease ──▶ Leadership::on_claim ──▶ BecameLeader: fence + load
//!                                                            └─▶ SteppedDown: drop state
//!  request ──▶ Leadership::serving(now)? ──▶ state (Some only on the leader) ──▶ store write
//! ```

use crate::store::{Claim, Fence, SqlStore, StoreError};
use anyhow::Context;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tandem_core::replica::ConfigProposal;
use tandem_core::{Gpid, NodeAddr, PartitionConfig};
use tandem_meta_core::beacon::{check_lease, configs_for_node, reassign_restarted_primary};
use tandem_meta_core::cure::{apply_proposal_from, cure, CureView, ReplicaReport};
use tandem_meta_core::failure_detector::FailureDetector;
use tandem_meta_core::leadership::{ClaimOutcome, Leadership, NotServing, Transition};
use tandem_meta_core::policy::{Policy, PolicyChange, PolicyContext, Toggle};
use tandem_meta_core::placement::{learner_placement, node_load, place_table};
use tandem_meta_core::{TableInfo, TableStatus};
use tandem_proto::convert::{config_to_wire, gpid_from};
use tandem_proto::errors::{not_leader, ErrorKind};
use tandem_proto::v1;
use tandem_proto::v1::meta_service_server::{MetaService, MetaServiceServer};
use tokio::sync::{watch, Mutex};
use tonic::{Request, Response, Status};

pub const PARTITION_COUNT_MAX: u32 = 1024;
pub const REPLICA_COUNT_MAX: u32 = tandem_meta_core::policy::REPLICAS_MAX;
pub const TABLE_NAME_BYTES_MAX: usize = 128;

#[derive(Clone, Debug)]
pub struct MetaOptions {
    pub listen: SocketAddr,
    pub store_url: String,
    pub metrics_listen: Option<SocketAddr>,
    /// A replica server silent for this long is declared dead (must exceed its lease).
    pub grace_period_ms: u64,
    pub tick_interval_ms: u64,
    /// How long a dropped table can be recalled before its data is deleted.
    pub recall_window_ms: u64,
    /// The address other meta servers send clients to when this one leads ("" = `listen`).
    pub advertise: String,
    /// The leader lease's time to live: how long a standby waits for a silent leader, and how
    /// long the leader keeps serving when the store is unreachable.
    pub lease_ttl_ms: u64,
    /// This site's name, and the sites tables can be duplicated to.
    pub site: String,
    pub peer_sites: Vec<String>,
    /// Where level-3 policies back up when `--backup-target` is not given ("" = none).
    pub backup_target: String,
}

impl MetaOptions {
    pub fn advertise_address(&self) -> String {
        if self.advertise.is_empty() { self.listen.to_string() } else { self.advertise.clone() }
    }
}

struct State {
    tables: BTreeMap<u32, TableInfo>,
    partitions: BTreeMap<Gpid, PartitionConfig>,
    fd: FailureDetector,
    reports: HashMap<Gpid, BTreeMap<NodeAddr, ReplicaReport>>,
}

pub struct Meta {
    store: SqlStore,
    /// Some only while this server leads and has loaded the store.
    state: Mutex<Option<State>>,
    leadership: std::sync::Mutex<Leadership>,
    /// Unique per process: the lease row's holder.
    holder: String,
    opts: MetaOptions,
    start: Instant,
    metrics: tandem_replica::metrics::Metrics,
}

type LeaderState<'a> = tokio::sync::MappedMutexGuard<'a, State>;

fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn store_status(e: StoreError) -> Status {
    let msg = e.to_string();
    match e {
        StoreError::NotLeader | StoreError::Fenced { .. } => not_leader(None, msg),
        StoreError::Unreachable { .. } => ErrorKind::Busy.status(msg),
        StoreError::AlreadyExists { .. } | StoreError::NameTaken { .. } => ErrorKind::AlreadyExists.status(msg),
        StoreError::TableNotFound { .. } | StoreError::PartitionNotFound { .. } => ErrorKind::NotFound.status(msg),
        StoreError::InvalidTable { .. } | StoreError::AlreadyDropped { .. } | StoreError::NotDropped { .. } => {
            ErrorKind::InvalidArgument.status(msg)
        }
        _ => ErrorKind::Internal.status(msg),
    }
}

fn table_to_wire(t: &TableInfo) -> v1::TableInfo {
    let (status, drop_time_ms) = match t.status {
        TableStatus::Available => ("available", 0),
        TableStatus::Dropped { drop_time_ms } => ("dropped", drop_time_ms),
    };
    v1::TableInfo {
        id: t.id,
        name: t.name.clone(),
        partition_count: t.partition_count,
        replica_count: t.replica_count,
        status: status.to_string(),
        created_ms: t.created_ms,
        drop_time_ms,
        owner: t.owner.clone(),
        policy: Some(policy_to_wire(&t.policy)),
    }
}

fn policy_to_wire(p: &Policy) -> v1::Policy {
    let backup = p.backup.as_ref();
    v1::Policy {
        replicas: p.replicas,
        duplication: p.duplication.clone().unwrap_or_default(),
        backup_every_ms: backup.map_or(0, |b| b.every_ms),
        backup_keep: backup.map_or(0, |b| b.keep),
        backup_target: backup.map_or_else(String::new, |b| b.target.clone()),
        tombstone_retention_ms: p.tombstone_retention_ms,
        level: p.describe_level(),
    }
}

fn change_from_wire(c: v1::PolicyChange) -> Result<PolicyChange, Status> {
    let level = c
        .level
        .map(|l| u8::try_from(l).map_err(|_| ErrorKind::InvalidArgument.status(format!("level {l} does not exist: choose 1, 2 or 3"))))
        .transpose()?;
    let duplication = match c.duplication {
        None => None,
        Some(off) if off == "off" => Some(Toggle::Off),
        Some(site) => {
            tandem_meta_core::policy::validate_site_name(&site).map_err(|e| ErrorKind::InvalidArgument.status(e))?;
            Some(Toggle::On(site))
        }
    };
    let backup_every_ms = c.backup_every_ms.map(|ms| if ms == 0 { Toggle::Off } else { Toggle::On(ms) });
    Ok(PolicyChange {
        level,
        replicas: c.replicas,
        duplication,
        backup_every_ms,
        backup_keep: c.backup_keep,
        backup_target: c.backup_target,
        tombstone_retention_ms: c.tombstone_retention_ms,
    })
}

fn who_or(who: String, fallback: &str) -> String {
    if who.trim().is_empty() { fallback.to_string() } else { who }
}

pub fn validate_table_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > TABLE_NAME_BYTES_MAX {
        return Err(format!("table name must be 1 to {TABLE_NAME_BYTES_MAX} characters"));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.') {
        return Err(format!("table name {name:?} may contain only letters, digits, '_', '-' and '.'"));
    }
    Ok(())
}

impl State {
    fn available_table(&self, name: &str) -> Option<&TableInfo> {
        self.tables.values().find(|t| t.name == name && t.status == TableStatus::Available)
    }

    fn load(&self) -> BTreeMap<NodeAddr, usize> {
        node_load(self.fd.alive_nodes(), self.partitions.values())
    }

    fn health(&self, c: &PartitionConfig, replica_count: u32) -> &'static str {
        let primary_alive = c.primary.as_deref().is_some_and(|p| self.fd.is_alive(p));
        if !primary_alive {
            return "unavailable";
        }
        let alive_members = c.members().filter(|n| self.fd.is_alive(n)).count();
        if alive_members >= replica_count as usize { "healthy" } else { "degraded" }
    }
}

impl State {
    fn from_snapshot(snapshot: tandem_meta_core::MetaSnapshot, grace_period_ms: u64, now_ms: u64) -> State {
        let known: Vec<NodeAddr> = snapshot.nodes.iter().map(|(n, _)| n.clone()).collect();
        State {
            tables: snapshot.tables.into_iter().map(|t| (t.id, t)).collect(),
            partitions: snapshot.partitions.into_iter().map(|c| (c.gpid, c)).collect(),
            // Every known server starts alive with a full grace period: a new leader (or a
            // restarted one) causes no failover by itself, and a lease granted by a previous
            // leader has run out before anyone is declared dead.
            fd: FailureDetector::new(grace_period_ms, known, now_ms),
            reports: HashMap::new(),
        }
    }
}

impl Meta {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// The status refusing a request on a server that does not lead now.
    fn not_serving(&self, why: NotServing) -> Status {
        match why {
            NotServing::Follower { leader: Some(leader) } => not_leader(Some(&leader), format!("this meta server does not lead; {leader} does")),
            NotServing::Follower { leader: None } => not_leader(None, "no meta server leads yet (an election is under way); retry"),
            NotServing::Lapsed => not_leader(None, "this meta server's leader lease lapsed (the metadata store is unreachable); retry"),
        }
    }

    /// The leader's state, or NotLeader with a hint. Every request goes through here.
    async fn lead(&self) -> Result<LeaderState<'_>, Status> {
        let check = || self.leadership.lock().expect("leadership lock").serving(self.now_ms()).map_err(|why| self.not_serving(why));
        check()?;
        let guard = self.state.lock().await;
        // The lease may have lapsed while this request waited for the lock.
        check()?;
        tokio::sync::MutexGuard::try_map(guard, Option::as_mut).map_err(|_| not_leader(None, "this meta server is loading the metadata store; retry"))
    }

    fn policy_context<'a>(&'a self, state: &State) -> PolicyContext<'a> {
        PolicyContext {
            live_nodes: state.fd.alive_nodes().len(),
            site: &self.opts.site,
            peer_sites: &self.opts.peer_sites,
            default_backup_target: &self.opts.backup_target,
        }
    }

    /// One round of the claim loop: claim or renew the lease, then act on the transition.
    async fn claim_round(&self, claim_timeout: Duration) {
        let sent = self.now_ms();
        let address = self.opts.advertise_address();
        let outcome = match tokio::time::timeout(claim_timeout, self.store.claim_lease(&self.holder, &address, self.opts.lease_ttl_ms)).await {
            Ok(Ok(Claim::Won { epoch })) => ClaimOutcome::Won { epoch },
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
        let (transition, leading) = {
            let mut l = self.leadership.lock().expect("leadership lock");
            let t = l.on_claim(sent, outcome, self.now_ms());
            (t, l.serving(self.now_ms()).ok())
        };
        match transition {
            Transition::SteppedDown { leader } => {
                let mut state = self.state.lock().await;
                self.store.set_fence(None);
                *state = None;
                tracing::warn!("stepped down: {leader} holds the meta lease now");
            }
            Transition::BecameLeader { epoch } => {
                let mut state = self.state.lock().await;
                *state = None;
                self.store.set_fence(Some(Fence { holder: self.holder.clone(), epoch }));
                self.load_into(&mut state, epoch).await;
            }
            Transition::Unchanged => {
                if let Some(epoch) = leading {
                    let mut state = self.state.lock().await;
                    if state.is_none() {
                        // A load after an earlier takeover failed: try again.
                        self.load_into(&mut state, epoch).await;
                    }
                }
            }
        }
    }

    async fn load_into(&self, state: &mut Option<State>, epoch: u64) {
        match self.store.load().await {
            Ok(snapshot) => {
                let loaded = State::from_snapshot(snapshot, self.opts.grace_period_ms, self.now_ms());
                tracing::info!(epoch, tables = loaded.tables.len(), partitions = loaded.partitions.len(), nodes = loaded.fd.nodes().len(), "this meta server leads");
                *state = Some(loaded);
            }
            Err(e) => tracing::warn!("leading at epoch {epoch}, but loading the metadata store failed (retrying): {e}"),
        }
    }

    /// Persists `next` (compare-and-set against the ballot in memory) and then adopts it.
    async fn commit_config(&self, state: &mut State, next: PartitionConfig) -> Result<(), Status> {
        let current = state.partitions.get(&next.gpid).ok_or_else(|| ErrorKind::NotFound.status(format!("no partition {}", next.gpid)))?;
        let ok = self.store.update_partition(&next, current.ballot).await.map_err(store_status)?;
        if !ok {
            return Err(ErrorKind::Internal.status(format!("partition {} changed in the store behind this meta server", next.gpid)));
        }
        tracing::info!(gpid = %next.gpid, ballot = next.ballot, primary = ?next.primary, secondaries = ?next.secondaries, learners = ?next.learners, "configuration");
        state.partitions.insert(next.gpid, next);
        Ok(())
    }

    async fn tick(&self) {
        let Ok(mut state) = self.lead().await else { return };
        let now = self.now_ms();
        for dead in state.fd.tick(now) {
            tracing::warn!("replica server {dead} declared dead (no beacon for {} ms)", self.opts.grace_period_ms);
        }
        // Cure, one step per partition per tick.
        let gpids: Vec<Gpid> = state.partitions.keys().copied().collect();
        for gpid in gpids {
            let Some(table) = state.tables.get(&gpid.table_id).cloned() else { continue };
            let config = state.partitions[&gpid].clone();
            if config.ballot == 0 {
                continue;
            }
            let placement = learner_placement(&state.load());
            let next = {
                let empty = BTreeMap::new();
                let reports = state.reports.get(&gpid).unwrap_or(&empty);
                let fd = &state.fd;
                let alive = |n: &str| fd.is_alive(n);
                let view = CureView { replica_count: table.replica_count as usize, alive: &alive, reports, placement: &placement };
                cure(&config, &view)
            };
            if let Some(next) = next
                && let Err(e) = self.commit_config(&mut state, next).await
            {
                tracing::warn!("cure of {gpid} failed: {}", e.message());
            }
        }
        // Purge dropped tables whose recall window has passed.
        let expired: Vec<u32> = state
            .tables
            .values()
            .filter(|t| matches!(t.status, TableStatus::Dropped { drop_time_ms } if wall_ms() > drop_time_ms + self.opts.recall_window_ms))
            .map(|t| t.id)
            .collect();
        for id in expired {
            match self.store.purge_table(id).await {
                Ok(()) => {
                    state.tables.remove(&id);
                    state.partitions.retain(|g, _| g.table_id != id);
                    state.reports.retain(|g, _| g.table_id != id);
                    tracing::info!("purged dropped table {id}");
                }
                Err(e) => tracing::warn!("purging table {id} failed: {e}"),
            }
        }
    }
}

/// The gRPC face of the meta server (a handle to the shared state).
#[derive(Clone)]
pub struct MetaRpc(Arc<Meta>);

impl std::ops::Deref for MetaRpc {
    type Target = Meta;
    fn deref(&self) -> &Meta {
        &self.0
    }
}

#[tonic::async_trait]
impl MetaService for MetaRpc {
    async fn beacon(&self, request: Request<v1::BeaconRequest>) -> Result<Response<v1::BeaconResponse>, Status> {
        let req = request.into_inner();
        if req.node.is_empty() {
            return Err(ErrorKind::InvalidArgument.status("beacon without a node address"));
        }
        check_lease(&req.node, req.lease_period_ms, self.opts.grace_period_ms).map_err(|e| ErrorKind::InvalidArgument.status(e))?;
        let mut state = self.lead().await?;
        let now = self.now_ms();
        if state.fd.on_beacon(&req.node, now) {
            tracing::info!("replica server {} is alive", req.node);
            self.store.register_node(&req.node, wall_ms()).await.map_err(store_status)?;
        }
        if state.fd.on_incarnation(&req.node, req.incarnation, req.restarted) {
            // A restarted server lost its unsynced log tail: its primaries continue under a new
            // ballot, so members can tell its new stream from its previous life's.
            let bumps: Vec<PartitionConfig> = state.partitions.values().filter_map(|c| reassign_restarted_primary(c, &req.node)).collect();
            if !bumps.is_empty() {
                tracing::info!("replica server {} (re)started: {} primaries continue under a new ballot", req.node, bumps.len());
            }
            for next in bumps {
                if let Err(e) = self.commit_config(&mut state, next).await {
                    // Forget the incarnation so the next beacon tries again; until then the
                    // reply carries the old configurations, which the restarted server holds
                    // inactive replicas of.
                    state.fd.forget_incarnation(&req.node);
                    return Err(e);
                }
            }
        }
        for reports in state.reports.values_mut() {
            reports.remove(&req.node);
        }
        let mut reported = Vec::new();
        for r in &req.replicas {
            let Ok(gpid) = gpid_from(r.gpid.as_ref()) else { continue };
            reported.push(gpid);
            state.reports.entry(gpid).or_default().insert(
                req.node.clone(),
                ReplicaReport { ballot: r.ballot, status: r.status.clone(), last_committed: r.last_committed, last_prepared: r.last_prepared },
            );
        }
        let configs = configs_for_node(state.partitions.values(), &req.node, &reported)
            .into_iter()
            .map(|c| config_to_wire(c, state.tables.get(&c.gpid.table_id).map_or(0, |t| t.partition_count)))
            .collect();
        let gone = reported.into_iter().filter(|g| !state.tables.contains_key(&g.table_id)).map(Into::into).collect();
        Ok(Response::new(v1::BeaconResponse { configs, gone }))
    }

    async fn query_config(&self, request: Request<v1::QueryConfigRequest>) -> Result<Response<v1::QueryConfigResponse>, Status> {
        let name = request.into_inner().table;
        let state = self.lead().await?;
        let table = state.available_table(&name).ok_or_else(|| ErrorKind::NotFound.status(format!("table {name:?} does not exist")))?;
        let partitions = state
            .partitions
            .range(Gpid::new(table.id, 0)..Gpid::new(table.id + 1, 0))
            .map(|(_, c)| config_to_wire(c, table.partition_count))
            .collect();
        Ok(Response::new(v1::QueryConfigResponse { table: Some(table_to_wire(table)), partitions }))
    }

    async fn propose_config(&self, request: Request<v1::ProposeConfigRequest>) -> Result<Response<v1::ProposeConfigResponse>, Status> {
        let req = request.into_inner();
        let gpid = gpid_from(req.gpid.as_ref()).map_err(|e| ErrorKind::InvalidArgument.status(e.to_string()))?;
        let proposal = match v1::propose_config_request::Kind::try_from(req.kind) {
            Ok(v1::propose_config_request::Kind::RemoveSecondary) => ConfigProposal::RemoveSecondary { ballot: req.ballot, node: req.node },
            Ok(v1::propose_config_request::Kind::UpgradeLearner) => ConfigProposal::UpgradeLearner { ballot: req.ballot, node: req.node },
            Err(_) => return Err(ErrorKind::InvalidArgument.status(format!("unknown proposal kind {}", req.kind))),
        };
        let mut state = self.lead().await?;
        let config = state.partitions.get(&gpid).cloned().ok_or_else(|| ErrorKind::NotFound.status(format!("no partition {gpid}")))?;
        let replica_count = state.tables.get(&gpid.table_id).map_or(0, |t| t.replica_count) as usize;
        let next = match apply_proposal_from(&config, &req.from, &proposal, replica_count) {
            Ok(next) => next,
            Err(reason) => return Err(ErrorKind::InvalidArgument.status(reason)),
        };
        tracing::info!("{gpid}: {} proposes {proposal:?}", req.from);
        self.commit_config(&mut state, next.clone()).await?;
        Ok(Response::new(v1::ProposeConfigResponse { config: Some(config_to_wire(&next, 0)) }))
    }

    async fn create_table(&self, request: Request<v1::CreateTableRequest>) -> Result<Response<v1::CreateTableResponse>, Status> {
        let req = request.into_inner();
        validate_table_name(&req.name).map_err(|e| ErrorKind::InvalidArgument.status(e))?;
        if !req.partition_count.is_power_of_two() || req.partition_count > PARTITION_COUNT_MAX {
            return Err(ErrorKind::InvalidArgument.status(format!(
                "partition count {} must be a power of two from 1 to {PARTITION_COUNT_MAX} (e.g. 8)",
                req.partition_count
            )));
        }
        let mut change = match req.policy {
            Some(c) => change_from_wire(c)?,
            None => PolicyChange::default(),
        };
        if change.replicas.is_none() {
            change.replicas = Some(req.replica_count);
        }
        let owner = who_or(req.owner, "unknown");
        let who = who_or(req.who, &owner);
        let mut state = self.lead().await?;
        let load = state.load();
        let policy = {
            let cx = self.policy_context(&state);
            // Validated as a change from "no replicas": the count must fit the live servers.
            Policy::with_replicas(0).apply(&change, &cx).map_err(|e| ErrorKind::InvalidArgument.status(e))?
        };
        if state.available_table(&req.name).is_some() {
            return Err(ErrorKind::AlreadyExists.status(format!("table {:?} already exists", req.name)));
        }
        let table = self.store.create_table(&req.name, req.partition_count, &policy, &owner, &who, wall_ms()).await.map_err(store_status)?;
        for p in 0..table.partition_count {
            state.partitions.insert(Gpid::new(table.id, p), PartitionConfig { gpid: Gpid::new(table.id, p), ..Default::default() });
        }
        state.tables.insert(table.id, table.clone());
        for config in place_table(table.id, table.partition_count, table.replica_count as usize, &load) {
            self.commit_config(&mut state, config).await?;
        }
        tracing::info!("created table {} (id {}, {} partitions, policy {:?}, owner {owner}, by {who})", table.name, table.id, table.partition_count, table.policy);
        Ok(Response::new(v1::CreateTableResponse { table: Some(table_to_wire(&table)) }))
    }

    async fn set_policy(&self, request: Request<v1::SetPolicyRequest>) -> Result<Response<v1::SetPolicyResponse>, Status> {
        let req = request.into_inner();
        let change = change_from_wire(req.change.unwrap_or_default())?;
        if change.is_empty() {
            return Err(ErrorKind::InvalidArgument.status("nothing to change: give --level, --replicas, --dup, --backup, --backup-keep, --backup-target or --tombstone-retention"));
        }
        let who = who_or(req.who, "unknown");
        let mut state = self.lead().await?;
        let table = state.available_table(&req.table).cloned().ok_or_else(|| ErrorKind::NotFound.status(format!("table {:?} does not exist", req.table)))?;
        let next = {
            let cx = self.policy_context(&state);
            table.policy.apply(&change, &cx).map_err(|e| ErrorKind::InvalidArgument.status(e))?
        };
        let old = table.policy.clone();
        let changed = next != old;
        if changed {
            self.store.set_policy(table.id, &old, &next, &who, wall_ms()).await.map_err(store_status)?;
            let t = state.tables.get_mut(&table.id).expect("table exists");
            t.replica_count = next.replicas;
            t.policy = next;
            tracing::info!("{who} changed the policy of {}: {old:?} -> {:?}", t.name, t.policy);
        }
        let t = &state.tables[&table.id];
        Ok(Response::new(v1::SetPolicyResponse { table: Some(table_to_wire(t)), old: Some(policy_to_wire(&old)), changed }))
    }

    async fn policy_history(&self, request: Request<v1::PolicyHistoryRequest>) -> Result<Response<v1::PolicyHistoryResponse>, Status> {
        let name = request.into_inner().table;
        let table = {
            let state = self.lead().await?;
            state.available_table(&name).cloned().ok_or_else(|| ErrorKind::NotFound.status(format!("table {name:?} does not exist")))?
        };
        let entries = self
            .store
            .policy_history(table.id)
            .await
            .map_err(store_status)?
            .into_iter()
            .map(|e| v1::PolicyHistoryEntry { at_ms: e.at_ms, who: e.who, old: e.old.as_ref().map(policy_to_wire), new: Some(policy_to_wire(&e.new)) })
            .collect();
        Ok(Response::new(v1::PolicyHistoryResponse { table: Some(table_to_wire(&table)), entries }))
    }

    async fn policy_status(&self, request: Request<v1::PolicyStatusRequest>) -> Result<Response<v1::PolicyStatusResponse>, Status> {
        let name = request.into_inner().table;
        let state = self.lead().await?;
        let table = state.available_table(&name).ok_or_else(|| ErrorKind::NotFound.status(format!("table {name:?} does not exist")))?;
        let desired = table.policy.replicas;
        let mut partitions = Vec::new();
        for (gpid, c) in state.partitions.range(Gpid::new(table.id, 0)..Gpid::new(table.id + 1, 0)) {
            let healthy = c.members().filter(|n| state.fd.is_alive(n)).count() as u32;
            partitions.push(v1::PartitionReplicas { partition: gpid.partition, healthy, members: c.replica_count() as u32, learners: c.learners.len() as u32 });
        }
        let at_desired = partitions.iter().filter(|p| p.healthy == desired && p.members == desired).count();
        let fewest = partitions.iter().map(|p| p.healthy).min().unwrap_or(0);
        let replicas = v1::PolicyLevelStatus {
            level: "replicas".into(),
            desired: format!("{desired} per partition"),
            actual: if at_desired == partitions.len() {
                format!("healthy {desired} of {desired} on all {} partitions", partitions.len())
            } else {
                format!(
                    "{at_desired} of {} partitions at {desired} healthy replicas; fewest healthy: {fewest}; reconciling ({} learners catching up)",
                    partitions.len(),
                    partitions.iter().map(|p| p.learners).sum::<u32>()
                )
            },
            satisfied: at_desired == partitions.len(),
        };
        let duplication = v1::PolicyLevelStatus {
            level: "duplication".into(),
            desired: table.policy.duplication.as_ref().map_or_else(|| "off".to_string(), |site| format!("to site {site}")),
            actual: if table.policy.duplication.is_some() { "not available yet (duplication is not built)".into() } else { "off".into() },
            satisfied: table.policy.duplication.is_none(),
        };
        let backup = v1::PolicyLevelStatus {
            level: "backup".into(),
            desired: table.policy.backup.as_ref().map_or_else(
                || "off".to_string(),
                |b| format!("every {}, keep {}, to {}", humantime::format_duration(Duration::from_millis(b.every_ms)), b.keep, b.target),
            ),
            actual: if table.policy.backup.is_some() { "not available yet (backup is not built)".into() } else { "off".into() },
            satisfied: table.policy.backup.is_none(),
        };
        Ok(Response::new(v1::PolicyStatusResponse { table: Some(table_to_wire(table)), levels: vec![replicas, duplication, backup], partitions }))
    }

    async fn drop_table(&self, request: Request<v1::DropTableRequest>) -> Result<Response<v1::DropTableResponse>, Status> {
        let name = request.into_inner().name;
        let mut state = self.lead().await?;
        let table = state.available_table(&name).cloned().ok_or_else(|| ErrorKind::NotFound.status(format!("table {name:?} does not exist")))?;
        let now = wall_ms();
        self.store.drop_table(table.id, now).await.map_err(store_status)?;
        let t = state.tables.get_mut(&table.id).expect("table exists");
        t.status = TableStatus::Dropped { drop_time_ms: now };
        let wire = table_to_wire(t);
        Ok(Response::new(v1::DropTableResponse { table: Some(wire), recall_until_ms: now + self.opts.recall_window_ms }))
    }

    async fn recall_table(&self, request: Request<v1::RecallTableRequest>) -> Result<Response<v1::RecallTableResponse>, Status> {
        let name = request.into_inner().name;
        let mut state = self.lead().await?;
        let table = state
            .tables
            .values()
            .filter(|t| t.name == name && matches!(t.status, TableStatus::Dropped { .. }))
            .max_by_key(|t| match t.status {
                TableStatus::Dropped { drop_time_ms } => drop_time_ms,
                TableStatus::Available => 0,
            })
            .cloned()
            .ok_or_else(|| ErrorKind::NotFound.status(format!("no dropped table {name:?} to recall (its recall window may have passed)")))?;
        self.store.recall_table(table.id).await.map_err(store_status)?;
        let t = state.tables.get_mut(&table.id).expect("table exists");
        t.status = TableStatus::Available;
        Ok(Response::new(v1::RecallTableResponse { table: Some(table_to_wire(t)) }))
    }

    async fn list_tables(&self, request: Request<v1::ListTablesRequest>) -> Result<Response<v1::ListTablesResponse>, Status> {
        let include_dropped = request.into_inner().include_dropped;
        let state = self.lead().await?;
        let tables = state.tables.values().filter(|t| include_dropped || t.status == TableStatus::Available).map(table_to_wire).collect();
        Ok(Response::new(v1::ListTablesResponse { tables }))
    }

    async fn show_table(&self, request: Request<v1::ShowTableRequest>) -> Result<Response<v1::ShowTableResponse>, Status> {
        let name = request.into_inner().name;
        let state = self.lead().await?;
        let table = state.available_table(&name).ok_or_else(|| ErrorKind::NotFound.status(format!("table {name:?} does not exist")))?;
        let partitions = state
            .partitions
            .range(Gpid::new(table.id, 0)..Gpid::new(table.id + 1, 0))
            .map(|(gpid, c)| {
                let (report_nodes, reports) = state
                    .reports
                    .get(gpid)
                    .map(|rs| {
                        rs.iter()
                            .map(|(n, r)| {
                                (
                                    n.clone(),
                                    v1::ReplicaReport {
                                        gpid: Some((*gpid).into()),
                                        ballot: r.ballot,
                                        status: r.status.clone(),
                                        last_committed: r.last_committed,
                                        last_prepared: r.last_prepared,
                                        last_durable: 0,
                                    },
                                )
                            })
                            .unzip()
                    })
                    .unwrap_or_default();
                v1::PartitionHealth {
                    config: Some(config_to_wire(c, table.partition_count)),
                    reports,
                    report_nodes,
                    health: state.health(c, table.replica_count).to_string(),
                }
            })
            .collect();
        Ok(Response::new(v1::ShowTableResponse { table: Some(table_to_wire(table)), partitions }))
    }

    async fn list_nodes(&self, _request: Request<v1::ListNodesRequest>) -> Result<Response<v1::ListNodesResponse>, Status> {
        let now = self.now_ms();
        let state = self.lead().await?;
        let nodes = state
            .fd
            .nodes()
            .iter()
            .map(|(addr, l)| {
                let mut info = v1::NodeInfo {
                    address: addr.clone(),
                    alive: l.alive,
                    last_beacon_ms_ago: now.saturating_sub(l.last_beacon_ms),
                    ..Default::default()
                };
                for c in state.partitions.values() {
                    match c.status_of(addr) {
                        tandem_core::PartitionStatus::Primary => info.primaries += 1,
                        tandem_core::PartitionStatus::Secondary => info.secondaries += 1,
                        tandem_core::PartitionStatus::Learner => info.learners += 1,
                        _ => {}
                    }
                }
                info
            })
            .collect();
        Ok(Response::new(v1::ListNodesResponse { nodes }))
    }

    async fn cluster_status(&self, _request: Request<v1::ClusterStatusRequest>) -> Result<Response<v1::ClusterStatusResponse>, Status> {
        let state = self.lead().await?;
        let mut resp = v1::ClusterStatusResponse::default();
        for t in state.tables.values().filter(|t| t.status == TableStatus::Available) {
            resp.tables += 1;
            for (gpid, c) in state.partitions.range(Gpid::new(t.id, 0)..Gpid::new(t.id + 1, 0)) {
                resp.partitions += 1;
                match state.health(c, t.replica_count) {
                    "healthy" => resp.healthy += 1,
                    "degraded" => {
                        resp.degraded += 1;
                        resp.problems.push(format!("{}:{} ({gpid}) has {} of {} replicas", t.name, gpid.partition, c.replica_count(), t.replica_count));
                    }
                    _ => {
                        resp.unavailable += 1;
                        resp.problems.push(format!("{}:{} ({gpid}) has no live primary", t.name, gpid.partition));
                    }
                }
            }
        }
        for l in state.fd.nodes().values() {
            if l.alive {
                resp.nodes_alive += 1;
            } else {
                resp.nodes_dead += 1;
            }
        }
        for (addr, l) in state.fd.nodes() {
            if !l.alive {
                resp.problems.push(format!("replica server {addr} is dead"));
            }
        }
        Ok(Response::new(resp))
    }
}

/// Runs a meta server until `shutdown` fires.
pub async fn run(opts: MetaOptions, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    tandem_meta_core::leadership::validate_ttl(opts.lease_ttl_ms).map_err(anyhow::Error::msg)?;
    let store = SqlStore::connect(&opts.store_url).await.with_context(|| "open the metadata store")?;
    let start = Instant::now();
    let holder = format!("{}#{}-{}", opts.advertise_address(), std::process::id(), wall_ms());
    let meta = Arc::new(Meta {
        store,
        state: Mutex::new(None),
        leadership: std::sync::Mutex::new(Leadership::new(opts.lease_ttl_ms)),
        holder,
        opts: opts.clone(),
        start,
        metrics: tandem_replica::metrics::Metrics::new("tandem_meta"),
    });

    let listener = tokio::net::TcpListener::bind(opts.listen).await.with_context(|| format!("bind {}", opts.listen))?;
    // Claim the lease before serving, so a single meta server answers its first request as
    // leader; a standby just learns who leads.
    let renew = Duration::from_millis(meta.leadership.lock().expect("leadership lock").renew_interval_ms());
    meta.claim_round(renew).await;
    let (health, reflection_v1, reflection_v1alpha) = tandem_replica::grpc_tools::health_and_reflection::<MetaServiceServer<MetaRpc>>().await?;
    if let Some(addr) = opts.metrics_listen {
        let rx = shutdown.clone();
        let local = tandem_replica::metrics::serve(addr, meta.metrics.clone(), Arc::new(|| {}), async move {
            tandem_replica::stopped(rx).await;
        })
        .await
        .with_context(|| format!("bind metrics on {addr}"))?;
        tracing::info!("metrics on http://{local}/metrics");
    }
    let service = MetaServiceServer::new(MetaRpc(meta.clone())).max_decoding_message_size(64 << 20).max_encoding_message_size(64 << 20);
    let rx = shutdown.clone();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(service)
            .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)), async move {
                tandem_replica::stopped(rx).await;
            }),
    );
    tracing::info!("meta server listening on {} (advertised as {})", opts.listen, opts.advertise_address());

    // The claim loop: renew while leading; a standby polls at least every second, so it takes
    // over soon after the lease expires.
    let claims = {
        let meta = meta.clone();
        let rx = shutdown.clone();
        tokio::spawn(async move {
            let stop = tandem_replica::stopped(rx);
            tokio::pin!(stop);
            loop {
                let leading = meta.leadership.lock().expect("leadership lock").is_leader();
                let pause = if leading { renew } else { renew.min(Duration::from_secs(1)) };
                tokio::select! {
                    _ = tokio::time::sleep(pause) => meta.claim_round(renew).await,
                    _ = stop.as_mut() => break,
                }
            }
        })
    };

    let mut tick = tokio::time::interval(Duration::from_millis(opts.tick_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = tandem_replica::stopped(shutdown.clone());
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = tick.tick() => meta.tick().await,
            _ = stop.as_mut() => break,
        }
    }
    let _ = claims.await;
    let _ = server.await;
    // A clean stop hands the lease over at once instead of after its TTL.
    let leading = meta.leadership.lock().expect("leadership lock").is_leader();
    if leading {
        *meta.state.lock().await = None;
        meta.store.set_fence(None);
        if let Err(e) = meta.store.release_lease(&meta.holder).await {
            tracing::warn!("could not release the meta lease: {e}");
        }
    }
    meta.store.close().await;
    Ok(())
}
