//! The gRPC face of the meta server: each RPC becomes a `MetaRequest` for the state machine and
//! its `MetaReply` (or `MetaError`) goes back on the wire. Conversions only.

use crate::dup_rpc::{dup_for_server_to_wire, dup_to_wire, fail_mode_from_wire, report_from_wire, site_from_wire, site_to_wire, status_from_wire, view_to_wire};
use crate::server::Meta;
use std::sync::Arc;
use tandem_meta_core::cure::ReplicaReport;
use tandem_meta_core::policy::{Policy, PolicyChange, Toggle};
use tandem_meta_core::request::{BeaconRequest, PolicyStatusView};
use tandem_meta_core::{MetaError, MetaReply, MetaRequest, TableInfo, TableStatus};
use tandem_proto::convert::{config_to_wire, gpid_from};
use tandem_proto::errors::{not_leader, ErrorKind};
use tandem_proto::v1;
use tandem_proto::v1::meta_service_server::{MetaService, MetaServiceServer};
use tandem_core::replica::ConfigProposal;
use tonic::{Request, Response, Status};

/// Serves the meta service (with health and reflection) on `listener` until `shutdown`.
pub async fn serve(
    meta: Arc<Meta>,
    listener: tokio::net::TcpListener,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>, crate::server::Error> {
    let (health, reflection_v1, reflection_v1alpha) = tandem_runtime::grpc_tools::health_and_reflection::<MetaServiceServer<MetaRpc>>().await?;
    let service = MetaServiceServer::new(MetaRpc(meta)).max_decoding_message_size(64 << 20).max_encoding_message_size(64 << 20);
    Ok(tokio::spawn(
        tandem_runtime::grpc_tools::server()
            .add_service(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(service)
            .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)), async move {
                tandem_runtime::stopped(shutdown).await;
            }),
    ))
}

fn status(e: MetaError) -> Status {
    match e {
        MetaError::NotLeader { leader, message } => not_leader(leader.as_deref(), message),
        MetaError::NotFound(m) => ErrorKind::NotFound.status(m),
        MetaError::InvalidArgument(m) => ErrorKind::InvalidArgument.status(m),
        MetaError::AlreadyExists(m) => ErrorKind::AlreadyExists.status(m),
        MetaError::Busy(m) => ErrorKind::Busy.status(m),
        MetaError::DiskFull(m) => ErrorKind::DiskFull.status(m),
        MetaError::Internal(m) => ErrorKind::Internal.status(m),
    }
}

fn unexpected(reply: MetaReply) -> Status {
    ErrorKind::Internal.status(format!("the meta answered with {reply:?}"))
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
        backup_at: backup.and_then(|b| b.at.as_ref()).map_or_else(String::new, ToString::to_string),
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
    let backup_at = match c.backup_at {
        None => None,
        Some(off) if off == "off" => Some(Toggle::Off),
        Some(at) => Some(Toggle::On(tandem_meta_core::policy::BackupAt::parse(&at).map_err(|e| ErrorKind::InvalidArgument.status(e))?)),
    };
    Ok(PolicyChange {
        level,
        replicas: c.replicas,
        duplication,
        backup_every_ms,
        backup_keep: c.backup_keep,
        backup_target: c.backup_target,
        backup_at,
        tombstone_retention_ms: c.tombstone_retention_ms,
    })
}

fn who_or(who: String, fallback: &str) -> String {
    if who.trim().is_empty() { fallback.to_string() } else { who }
}

fn report_to_wire(gpid: tandem_core::Gpid, r: &ReplicaReport) -> v1::ReplicaReport {
    v1::ReplicaReport {
        gpid: Some(gpid.into()),
        ballot: r.ballot,
        status: r.status.clone(),
        last_committed: r.last_committed,
        last_prepared: r.last_prepared,
        last_durable: 0,
    }
}

fn policy_status_to_wire(s: PolicyStatusView) -> v1::PolicyStatusResponse {
    v1::PolicyStatusResponse {
        table: Some(table_to_wire(&s.table)),
        levels: s
            .levels
            .into_iter()
            .map(|l| v1::PolicyLevelStatus { level: l.level, desired: l.desired, actual: l.actual, satisfied: l.satisfied })
            .collect(),
        partitions: s
            .partitions
            .into_iter()
            .map(|p| v1::PartitionReplicas { partition: p.partition, healthy: p.healthy, members: p.members, learners: p.learners })
            .collect(),
    }
}

/// The gRPC face of the meta server (a handle to it).
#[derive(Clone)]
pub struct MetaRpc(Arc<Meta>);

impl MetaRpc {
    async fn ask(&self, request: MetaRequest) -> Result<MetaReply, Status> {
        self.0.request(request).await.map_err(status)
    }
}

#[tonic::async_trait]
impl MetaService for MetaRpc {
    type WatchStream = crate::watch::WatchStream;

    async fn watch(&self, request: Request<v1::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let req = request.into_inner();
        if req.node.is_empty() {
            return Err(ErrorKind::InvalidArgument.status("watch without a node address"));
        }
        // Only the leader's streams count: a standby's would never ask for a beacon.
        self.0.serving().map_err(status)?;
        Ok(Response::new(self.0.watchers.open(&self.0, req.node)))
    }

    async fn beacon(&self, request: Request<v1::BeaconRequest>) -> Result<Response<v1::BeaconResponse>, Status> {
        let req = request.into_inner();
        let reports = req
            .replicas
            .iter()
            .filter_map(|r| {
                let gpid = gpid_from(r.gpid.as_ref()).ok()?;
                Some((gpid, ReplicaReport { ballot: r.ballot, status: r.status.clone(), last_committed: r.last_committed, last_prepared: r.last_prepared }))
            })
            .collect();
        let dup_reports = req
            .dup_progress
            .iter()
            .filter_map(|p| Some((gpid_from(p.gpid.as_ref()).ok()?, p.dup_id, report_from_wire(p))))
            .collect();
        let backup_reports = req.backup_reports.iter().filter_map(crate::backup_rpc::report_from_wire).collect();
        let restore_failures = req
            .restore_failures
            .iter()
            .filter_map(|f| Some(tandem_meta_core::backup::RestoreFailure { gpid: gpid_from(f.gpid.as_ref()).ok()?, error: f.error.clone(), permanent: f.permanent }))
            .collect();
        let beacon = BeaconRequest {
            node: req.node,
            incarnation: req.incarnation,
            restarted: req.restarted,
            lease_period_ms: req.lease_period_ms,
            reports,
            dup_reports,
            backup_reports,
            restore_failures,
            disk_short: req.disk_short.as_ref().map(tandem_proto::convert::disk_short_from_wire),
            replicas_max: (req.replicas_max > 0).then_some(req.replicas_max),
            refused: req.refused.iter().filter_map(|g| gpid_from(Some(g)).ok()).collect(),
            reports_delta: req.reports_delta,
            reports_gone: req.reports_gone.iter().filter_map(|g| gpid_from(Some(g)).ok()).collect(),
            reports_digest: tandem_core::digest::Digest::from_bytes(&req.reports_digest),
            configs_digest: tandem_core::digest::Digest::from_bytes(&req.configs_digest),
        };
        match self.ask(MetaRequest::Beacon(beacon)).await? {
            MetaReply::Beacon { configs, partition_counts, tombstone_retention, gone, dups, sites, backups, restores, configs_unchanged, resend_reports } => {
                let count = |table_id: u32| partition_counts.iter().find(|(t, _)| *t == table_id).map_or(0, |(_, n)| *n);
                let retention = |table_id: u32| tombstone_retention.iter().find(|(t, _)| *t == table_id).map_or(0, |(_, ms)| *ms);
                let wire = |c: &tandem_core::PartitionConfig| v1::PartitionConfig {
                    tombstone_retention_ms: retention(c.gpid.table_id),
                    ..config_to_wire(c, count(c.gpid.table_id))
                };
                Ok(Response::new(v1::BeaconResponse {
                    configs: configs.iter().map(wire).collect(),
                    gone: gone.into_iter().map(Into::into).collect(),
                    dups: dups.iter().map(dup_for_server_to_wire).collect(),
                    sites: sites.iter().map(site_to_wire).collect(),
                    backup_tasks: backups.iter().map(crate::backup_rpc::task_to_wire).collect(),
                    restores: restores.iter().map(crate::backup_rpc::restore_source_to_wire).collect(),
                    configs_unchanged,
                    resend_reports,
                }))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn query_config(&self, request: Request<v1::QueryConfigRequest>) -> Result<Response<v1::QueryConfigResponse>, Status> {
        let table = request.into_inner().table;
        match self.ask(MetaRequest::QueryConfig { table }).await? {
            MetaReply::Config { table, partitions } => Ok(Response::new(v1::QueryConfigResponse {
                partitions: partitions.iter().map(|c| config_to_wire(c, table.partition_count)).collect(),
                table: Some(table_to_wire(&table)),
            })),
            other => Err(unexpected(other)),
        }
    }

    async fn propose_config(&self, request: Request<v1::ProposeConfigRequest>) -> Result<Response<v1::ProposeConfigResponse>, Status> {
        let req = request.into_inner();
        let gpid = gpid_from(req.gpid.as_ref()).map_err(|e| ErrorKind::InvalidArgument.status(e.to_string()))?;
        let proposal = match v1::propose_config_request::Kind::try_from(req.kind) {
            Ok(v1::propose_config_request::Kind::RemoveSecondary) => ConfigProposal::RemoveSecondary { ballot: req.ballot, node: req.node },
            Ok(v1::propose_config_request::Kind::UpgradeLearner) => ConfigProposal::UpgradeLearner { ballot: req.ballot, node: req.node },
            Err(_) => return Err(ErrorKind::InvalidArgument.status(format!("unknown proposal kind {}", req.kind))),
        };
        match self.ask(MetaRequest::Propose { gpid, from: req.from, proposal }).await? {
            MetaReply::Proposed { config } => Ok(Response::new(v1::ProposeConfigResponse { config: Some(config_to_wire(&config, 0)) })),
            other => Err(unexpected(other)),
        }
    }

    async fn create_table(&self, request: Request<v1::CreateTableRequest>) -> Result<Response<v1::CreateTableResponse>, Status> {
        let req = request.into_inner();
        let mut change = match req.policy {
            Some(c) => change_from_wire(c)?,
            None => PolicyChange::default(),
        };
        if change.replicas.is_none() {
            change.replicas = Some(req.replica_count);
        }
        let owner = who_or(req.owner, "unknown");
        let who = who_or(req.who, &owner);
        match self.ask(MetaRequest::CreateTable { name: req.name, partition_count: req.partition_count, change, owner, who }).await? {
            MetaReply::Created { table } => Ok(Response::new(v1::CreateTableResponse { table: Some(table_to_wire(&table)) })),
            other => Err(unexpected(other)),
        }
    }

    async fn set_policy(&self, request: Request<v1::SetPolicyRequest>) -> Result<Response<v1::SetPolicyResponse>, Status> {
        let req = request.into_inner();
        let change = change_from_wire(req.change.unwrap_or_default())?;
        let who = who_or(req.who, "unknown");
        match self.ask(MetaRequest::SetPolicy { table: req.table, change, who }).await? {
            MetaReply::PolicySet { table, old, changed } => {
                Ok(Response::new(v1::SetPolicyResponse { table: Some(table_to_wire(&table)), old: Some(policy_to_wire(&old)), changed }))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn policy_history(&self, request: Request<v1::PolicyHistoryRequest>) -> Result<Response<v1::PolicyHistoryResponse>, Status> {
        let table = match self.ask(MetaRequest::PolicyHistory { table: request.into_inner().table }).await? {
            MetaReply::History { table } => table,
            other => return Err(unexpected(other)),
        };
        let entries = self
            .0
            .store
            .policy_history(table.id)
            .await
            .map_err(|e| status(crate::store::meta_error(e)))?
            .into_iter()
            .map(|e| v1::PolicyHistoryEntry { at_ms: e.at_ms, who: e.who, old: e.old.as_ref().map(policy_to_wire), new: Some(policy_to_wire(&e.new)) })
            .collect();
        Ok(Response::new(v1::PolicyHistoryResponse { table: Some(table_to_wire(&table)), entries }))
    }

    async fn policy_status(&self, request: Request<v1::PolicyStatusRequest>) -> Result<Response<v1::PolicyStatusResponse>, Status> {
        match self.ask(MetaRequest::PolicyStatus { table: request.into_inner().table }).await? {
            MetaReply::PolicyStatus(s) => Ok(Response::new(policy_status_to_wire(s))),
            other => Err(unexpected(other)),
        }
    }

    async fn site_add(&self, request: Request<v1::SiteAddRequest>) -> Result<Response<v1::SiteAddResponse>, Status> {
        let site = site_from_wire(request.into_inner().site)?;
        match self.ask(MetaRequest::SiteAdd { site }).await? {
            MetaReply::SiteAdded { .. } => Ok(Response::new(v1::SiteAddResponse {})),
            other => Err(unexpected(other)),
        }
    }

    async fn site_remove(&self, request: Request<v1::SiteRemoveRequest>) -> Result<Response<v1::SiteRemoveResponse>, Status> {
        let name = request.into_inner().name;
        match self.ask(MetaRequest::SiteRemove { name }).await? {
            MetaReply::SiteRemoved { .. } => Ok(Response::new(v1::SiteRemoveResponse {})),
            other => Err(unexpected(other)),
        }
    }

    async fn site_list(&self, _request: Request<v1::SiteListRequest>) -> Result<Response<v1::SiteListResponse>, Status> {
        match self.ask(MetaRequest::SiteList).await? {
            MetaReply::Sites { sites } => Ok(Response::new(v1::SiteListResponse { sites: sites.iter().map(site_to_wire).collect() })),
            other => Err(unexpected(other)),
        }
    }

    async fn dup_add(&self, request: Request<v1::DupAddRequest>) -> Result<Response<v1::DupAddResponse>, Status> {
        let req = request.into_inner();
        let fail_mode = fail_mode_from_wire(&req.fail_mode)?;
        let ask = MetaRequest::DupAdd { table: req.table, remote_site: req.remote_site, fail_mode, sync_existing: req.sync_existing };
        match self.ask(ask).await? {
            MetaReply::DupAdded { dup } => Ok(Response::new(v1::DupAddResponse { dup: Some(dup_to_wire(&dup, vec![])) })),
            other => Err(unexpected(other)),
        }
    }

    async fn dup_list(&self, request: Request<v1::DupListRequest>) -> Result<Response<v1::DupListResponse>, Status> {
        let req = request.into_inner();
        let table = (!req.table.is_empty()).then_some(req.table);
        match self.ask(MetaRequest::DupList { table, include_removed: req.include_removed }).await? {
            MetaReply::Dups { dups } => Ok(Response::new(v1::DupListResponse { dups: dups.into_iter().map(view_to_wire).collect() })),
            other => Err(unexpected(other)),
        }
    }

    async fn dup_set_status(&self, request: Request<v1::DupSetStatusRequest>) -> Result<Response<v1::DupSetStatusResponse>, Status> {
        let req = request.into_inner();
        let status = status_from_wire(&req.status)?;
        match self.ask(MetaRequest::DupSetStatus { dup_id: req.dup_id, status }).await? {
            MetaReply::DupStatusSet { dup, changed } => Ok(Response::new(v1::DupSetStatusResponse { dup: Some(dup_to_wire(&dup, vec![])), changed })),
            other => Err(unexpected(other)),
        }
    }

    async fn backup_now(&self, request: Request<v1::BackupNowRequest>) -> Result<Response<v1::BackupNowResponse>, Status> {
        let req = request.into_inner();
        let target = (!req.target.is_empty()).then_some(req.target);
        match self.ask(MetaRequest::BackupNow { table: req.table, target, who: who_or(req.who, "unknown") }).await? {
            MetaReply::BackupStarted { backup } => Ok(Response::new(v1::BackupNowResponse { backup: Some(crate::backup_rpc::info_to_wire(&backup)) })),
            other => Err(unexpected(other)),
        }
    }

    async fn backup_list(&self, request: Request<v1::BackupListRequest>) -> Result<Response<v1::BackupListResponse>, Status> {
        let table = request.into_inner().table;
        let table = (!table.is_empty()).then_some(table);
        match self.ask(MetaRequest::BackupList { table }).await? {
            MetaReply::Backups { backups } => Ok(Response::new(v1::BackupListResponse { backups: backups.iter().map(crate::backup_rpc::info_to_wire).collect() })),
            other => Err(unexpected(other)),
        }
    }

    /// A running backup's partitions come from its job; a complete one's from its table
    /// manifest, read from the target and checked against the record's checksum.
    async fn backup_show(&self, request: Request<v1::BackupShowRequest>) -> Result<Response<v1::BackupShowResponse>, Status> {
        let id = request.into_inner().id;
        let view = match self.ask(MetaRequest::BackupShow { id }).await? {
            MetaReply::Backup(view) => view,
            other => return Err(unexpected(other)),
        };
        let mut response = v1::BackupShowResponse {
            backup: Some(crate::backup_rpc::info_to_wire(&view.info)),
            partitions: view.partitions.iter().map(crate::backup_rpc::partition_to_wire).collect(),
            manifest_error: String::new(),
        };
        if view.info.state == tandem_backup_core::BackupState::Complete {
            let info = view.info.clone();
            let read = self
                .0
                .on_target(info.target.clone(), move |store| tandem_backup_core::read_table_manifest(store, info.table_id, info.id, Some(&info.manifest_sha256)))
                .await;
            match read {
                Ok(manifest) => response.partitions = manifest.partitions.iter().map(crate::backup_rpc::manifest_partition_to_wire).collect(),
                Err(e) => response.manifest_error = e,
            }
        }
        Ok(Response::new(response))
    }

    async fn restore(&self, request: Request<v1::RestoreRequest>) -> Result<Response<v1::RestoreResponse>, Status> {
        let req = request.into_inner();
        let table = (!req.table.is_empty()).then_some(req.table);
        match self.ask(MetaRequest::Restore { backup_id: req.backup_id, table, as_original: req.as_original, who: who_or(req.who, "unknown") }).await? {
            MetaReply::Created { table } => Ok(Response::new(v1::RestoreResponse { table: Some(table_to_wire(&table)) })),
            other => Err(unexpected(other)),
        }
    }

    async fn restore_list(&self, _request: Request<v1::RestoreListRequest>) -> Result<Response<v1::RestoreListResponse>, Status> {
        match self.ask(MetaRequest::RestoreList).await? {
            MetaReply::Restores { restores } => Ok(Response::new(v1::RestoreListResponse { restores: restores.iter().map(crate::backup_rpc::restore_to_wire).collect() })),
            other => Err(unexpected(other)),
        }
    }

    async fn backup_delete(&self, request: Request<v1::BackupDeleteRequest>) -> Result<Response<v1::BackupDeleteResponse>, Status> {
        let req = request.into_inner();
        match self.ask(MetaRequest::BackupDelete { id: req.id, who: who_or(req.who, "unknown") }).await? {
            MetaReply::BackupDeleted { backup } => Ok(Response::new(v1::BackupDeleteResponse { backup: Some(crate::backup_rpc::info_to_wire(&backup)) })),
            other => Err(unexpected(other)),
        }
    }

    /// Reads the record from the machine, then every object from the target on a blocking
    /// thread. An unreachable target is an error (nothing was checked), not a verdict.
    async fn backup_verify(&self, request: Request<v1::BackupVerifyRequest>) -> Result<Response<v1::BackupVerifyResponse>, Status> {
        let id = request.into_inner().id;
        let info = match self.ask(MetaRequest::BackupShow { id }).await? {
            MetaReply::Backup(view) => view.info,
            other => return Err(unexpected(other)),
        };
        if info.state != tandem_backup_core::BackupState::Complete {
            return Err(ErrorKind::InvalidArgument.status(format!("backup {id} is {}; only a complete backup can be verified", info.state.as_str())));
        }
        let checked = info.clone();
        let report = self
            .0
            .on_target(info.target.clone(), move |store| tandem_backup_core::verify_backup(store, checked.table_id, checked.id, Some(&checked.manifest_sha256)))
            .await
            .map_err(|e| ErrorKind::Busy.status(format!("backup {id} could not be read from {}: {e}", info.target)))?;
        Ok(Response::new(v1::BackupVerifyResponse {
            backup: Some(crate::backup_rpc::info_to_wire(&info)),
            objects: report.objects,
            stored_bytes: report.stored_bytes,
            problems: report.problems.iter().map(|p| p.to_string()).collect(),
        }))
    }

    async fn drop_table(&self, request: Request<v1::DropTableRequest>) -> Result<Response<v1::DropTableResponse>, Status> {
        match self.ask(MetaRequest::DropTable { name: request.into_inner().name }).await? {
            MetaReply::Dropped { table, recall_until_ms } => Ok(Response::new(v1::DropTableResponse { table: Some(table_to_wire(&table)), recall_until_ms })),
            other => Err(unexpected(other)),
        }
    }

    async fn recall_table(&self, request: Request<v1::RecallTableRequest>) -> Result<Response<v1::RecallTableResponse>, Status> {
        match self.ask(MetaRequest::RecallTable { name: request.into_inner().name }).await? {
            MetaReply::Recalled { table } => Ok(Response::new(v1::RecallTableResponse { table: Some(table_to_wire(&table)) })),
            other => Err(unexpected(other)),
        }
    }

    async fn list_tables(&self, request: Request<v1::ListTablesRequest>) -> Result<Response<v1::ListTablesResponse>, Status> {
        match self.ask(MetaRequest::ListTables { include_dropped: request.into_inner().include_dropped }).await? {
            MetaReply::Tables { tables } => Ok(Response::new(v1::ListTablesResponse { tables: tables.iter().map(table_to_wire).collect() })),
            other => Err(unexpected(other)),
        }
    }

    async fn show_table(&self, request: Request<v1::ShowTableRequest>) -> Result<Response<v1::ShowTableResponse>, Status> {
        match self.ask(MetaRequest::ShowTable { name: request.into_inner().name }).await? {
            MetaReply::Table { table, partitions } => Ok(Response::new(v1::ShowTableResponse {
                partitions: partitions
                    .into_iter()
                    .map(|p| {
                        let gpid = p.config.gpid;
                        let (report_nodes, reports) = p.reports.iter().map(|(n, r)| (n.clone(), report_to_wire(gpid, r))).unzip();
                        v1::PartitionHealth {
                            config: Some(config_to_wire(&p.config, table.partition_count)),
                            reports,
                            report_nodes,
                            health: p.health.as_str().to_string(),
                        }
                    })
                    .collect(),
                table: Some(table_to_wire(&table)),
            })),
            other => Err(unexpected(other)),
        }
    }

    async fn list_nodes(&self, _request: Request<v1::ListNodesRequest>) -> Result<Response<v1::ListNodesResponse>, Status> {
        match self.ask(MetaRequest::ListNodes).await? {
            MetaReply::Nodes { nodes } => Ok(Response::new(v1::ListNodesResponse {
                nodes: nodes
                    .into_iter()
                    .map(|n| v1::NodeInfo {
                        address: n.address,
                        alive: n.alive,
                        last_beacon_ms_ago: n.last_beacon_ms_ago,
                        primaries: n.primaries,
                        secondaries: n.secondaries,
                        learners: n.learners,
                        disk_short: n.disk_short.as_ref().map(tandem_proto::convert::disk_short_to_wire),
                        replicas_max: n.replicas_max.unwrap_or(0),
                        refused: n.refused,
                    })
                    .collect(),
            })),
            other => Err(unexpected(other)),
        }
    }

    async fn cluster_status(&self, _request: Request<v1::ClusterStatusRequest>) -> Result<Response<v1::ClusterStatusResponse>, Status> {
        match self.ask(MetaRequest::ClusterStatus).await? {
            MetaReply::Status(s) => Ok(Response::new(v1::ClusterStatusResponse {
                tables: s.tables,
                partitions: s.partitions,
                healthy: s.healthy,
                degraded: s.degraded,
                unavailable: s.unavailable,
                nodes_alive: s.nodes_alive,
                nodes_dead: s.nodes_dead,
                problems: s.problems,
                nodes_disk_short: s.nodes_disk_short,
            })),
            other => Err(unexpected(other)),
        }
    }
}
