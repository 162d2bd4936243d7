//! tandem-client: the async Rust client of a Tandem site.
//!
//! A `Client` talks to the meta servers for routes (cached per table) and to the primaries for
//! data. On a stale route or a primary change it refreshes the route and retries within the
//! request's deadline; non-idempotent writes (`incr`, `check_and_*`) are retried only when the
//! server proved it did not take them.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tandem_client::ClientError> {
//! let client = tandem_client::Client::new(&["127.0.0.1:34601".to_string()], Default::default())?;
//! let t = client.table("users");
//! t.set(b"alice", b"email", b"a@example.com", 0).await?;
//! assert_eq!(t.get(b"alice", b"email").await?, Some(b"a@example.com".to_vec()));
//! # Ok(()) }
//! ```

pub mod batch;
pub mod meta_conn;
mod table;

pub use table::{DupApplied, FullScanPage, ScanOptions, Table};
pub use tandem_core::replica::{CheckType, DupRecord, MutateOp};

use meta_conn::{endpoint, stream_endpoint, MetaConn};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tandem_proto::errors::ErrorKind;
use tandem_proto::v1;
use tandem_proto::v1::replica_service_client::ReplicaServiceClient;
use tonic::transport::Channel;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A write that may or may not have been applied (its primary stepped down with it pending,
    /// or did not answer in time); non-idempotent writes are not sent again by the client.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// The primary's disk is below its reserve: not applied, not retried (deletes still pass).
    #[error("{0}")]
    DiskFull(String),
    #[error("server error: {0}")]
    Internal(String),
    /// Over a size limit a smaller request would pass (the message names the limit).
    #[error("{0}")]
    TooLarge(String),
    /// Duplicated records too far ahead of the receiving site's clock; retry later.
    #[error("{0}")]
    ClockAhead(String),
    /// The route does not fit the table even after a refresh (nothing was applied).
    #[error("{0}")]
    WrongRoute(String),
}

pub type Result<T> = std::result::Result<T, ClientError>;

impl ClientError {
    pub fn from_status(s: &tonic::Status) -> ClientError {
        let msg = s.message().to_string();
        match ErrorKind::of(s) {
            Some(ErrorKind::InvalidArgument) => ClientError::InvalidArgument(msg),
            Some(ErrorKind::NotFound) => ClientError::NotFound(msg),
            Some(ErrorKind::AlreadyExists) => ClientError::AlreadyExists(msg),
            Some(ErrorKind::Internal) => ClientError::Internal(msg),
            Some(ErrorKind::TooLarge) => ClientError::TooLarge(msg),
            Some(ErrorKind::ClockAhead) => ClientError::ClockAhead(msg),
            Some(ErrorKind::WrongRoute) => ClientError::WrongRoute(msg),
            Some(ErrorKind::OutcomeUnknown) => ClientError::OutcomeUnknown(msg),
            Some(ErrorKind::DiskFull) => ClientError::DiskFull(msg),
            Some(ErrorKind::NotPrimary | ErrorKind::Busy | ErrorKind::NotLeader) => ClientError::Unavailable(msg),
            None => match s.code() {
                tonic::Code::InvalidArgument => ClientError::InvalidArgument(msg),
                tonic::Code::NotFound => ClientError::NotFound(msg),
                tonic::Code::AlreadyExists => ClientError::AlreadyExists(msg),
                _ => ClientError::Unavailable(format!("{}: {msg}", s.code())),
            },
        }
    }
}

#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// One RPC's timeout.
    pub rpc_timeout: Duration,
    /// The whole request's budget, retries included.
    pub request_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions { rpc_timeout: Duration::from_secs(5), request_timeout: Duration::from_secs(20) }
    }
}

/// The route of one table: its partitions' primaries.
#[derive(Clone, Debug)]
pub(crate) struct TableRoute {
    pub table_id: u32,
    pub partition_count: u32,
    pub primaries: Vec<Option<String>>,
}

pub(crate) struct Inner {
    pub meta: MetaConn,
    pub opts: ClientOptions,
    pub routes: RwLock<HashMap<String, Arc<TableRoute>>>,
    pub replicas: Mutex<HashMap<String, Arc<ReplicaConn>>>,
}

/// The connections to one replica server: unary calls, and the batch stream of the hot calls.
pub(crate) struct ReplicaConn {
    pub grpc: ReplicaServiceClient<Channel>,
    pub batch: batch::BatchConn,
}

#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

impl Client {
    pub fn new(meta: &[String], opts: ClientOptions) -> Result<Client> {
        let meta = MetaConn::new(meta, opts.rpc_timeout).map_err(ClientError::InvalidArgument)?;
        Ok(Client { inner: Arc::new(Inner { meta, opts, routes: RwLock::new(HashMap::new()), replicas: Mutex::new(HashMap::new()) }) })
    }

    pub fn table(&self, name: &str) -> Table {
        Table::new(self.clone(), name)
    }

    pub fn meta(&self) -> &MetaConn {
        &self.inner.meta
    }

    pub(crate) fn replica(&self, addr: &str) -> Result<Arc<ReplicaConn>> {
        let mut replicas = self.inner.replicas.lock().expect("replicas lock");
        if let Some(c) = replicas.get(addr) {
            return Ok(c.clone());
        }
        let bad = |e: tonic::transport::Error| ClientError::Internal(format!("bad replica address {addr:?}: {e}"));
        let grpc = |channel| ReplicaServiceClient::new(channel).max_decoding_message_size(64 << 20).max_encoding_message_size(64 << 20);
        let unary = endpoint(addr, self.inner.opts.rpc_timeout).map_err(bad)?.connect_lazy();
        let stream = stream_endpoint(addr).map_err(bad)?.connect_lazy();
        let c = Arc::new(ReplicaConn { grpc: grpc(unary), batch: batch::BatchConn::new(addr, grpc(stream)) });
        replicas.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    pub(crate) async fn route(&self, table: &str, refresh: bool) -> Result<Arc<TableRoute>> {
        if !refresh && let Some(r) = self.inner.routes.read().expect("routes lock").get(table) {
            return Ok(r.clone());
        }
        // Answered from the leader's memory: a frozen leader costs a second, not the timeout.
        let resp = self
            .inner
            .meta
            .call_with_attempt(Duration::from_secs(1), |mut c| {
                let table = table.to_string();
                async move { c.query_config(v1::QueryConfigRequest { table }).await }
            })
            .await
            .map_err(|s| ClientError::from_status(&s))?;
        let info = resp.table.ok_or_else(|| ClientError::Internal("meta answered without table info".into()))?;
        let mut primaries = vec![None; info.partition_count as usize];
        for p in resp.partitions {
            if let Some(g) = p.gpid
                && (g.partition as usize) < primaries.len()
                && !p.primary.is_empty()
            {
                primaries[g.partition as usize] = Some(p.primary);
            }
        }
        let route = Arc::new(TableRoute { table_id: info.id, partition_count: info.partition_count, primaries });
        self.inner.routes.write().expect("routes lock").insert(table.to_string(), route.clone());
        Ok(route)
    }

    async fn meta_call<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnMut(v1::meta_service_client::MetaServiceClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        self.inner.meta.call(f).await.map_err(|s| ClientError::from_status(&s))
    }

    pub async fn create_table(&self, name: &str, partition_count: u32, replica_count: u32, owner: &str) -> Result<v1::TableInfo> {
        self.create_table_with(v1::CreateTableRequest { name: name.into(), partition_count, replica_count, owner: owner.into(), ..Default::default() }).await
    }

    /// Creates a table with an initial policy and a `who` for its policy history.
    pub async fn create_table_with(&self, req: v1::CreateTableRequest) -> Result<v1::TableInfo> {
        let resp = self.meta_call(|mut c| {
            let req = req.clone();
            async move { c.create_table(req).await }
        })
        .await?;
        resp.table.ok_or_else(|| ClientError::Internal("no table in answer".into()))
    }

    pub async fn drop_table(&self, name: &str) -> Result<v1::DropTableResponse> {
        self.meta_call(|mut c| {
            let name = name.to_string();
            async move { c.drop_table(v1::DropTableRequest { name }).await }
        })
        .await
    }

    pub async fn recall_table(&self, name: &str) -> Result<v1::TableInfo> {
        let resp = self
            .meta_call(|mut c| {
                let name = name.to_string();
                async move { c.recall_table(v1::RecallTableRequest { name }).await }
            })
            .await?;
        resp.table.ok_or_else(|| ClientError::Internal("no table in answer".into()))
    }

    pub async fn list_tables(&self, include_dropped: bool) -> Result<Vec<v1::TableInfo>> {
        Ok(self.meta_call(|mut c| async move { c.list_tables(v1::ListTablesRequest { include_dropped }).await }).await?.tables)
    }

    pub async fn show_table(&self, name: &str) -> Result<v1::ShowTableResponse> {
        self.meta_call(|mut c| {
            let name = name.to_string();
            async move { c.show_table(v1::ShowTableRequest { name }).await }
        })
        .await
    }

    pub async fn list_nodes(&self) -> Result<Vec<v1::NodeInfo>> {
        Ok(self.meta_call(|mut c| async move { c.list_nodes(v1::ListNodesRequest {}).await }).await?.nodes)
    }

    /// Changes a table's redundancy policy; `who` is recorded in its history.
    pub async fn set_policy(&self, table: &str, change: v1::PolicyChange, who: &str) -> Result<v1::SetPolicyResponse> {
        let req = v1::SetPolicyRequest { table: table.into(), change: Some(change), who: who.into() };
        self.meta_call(|mut c| {
            let req = req.clone();
            async move { c.set_policy(req).await }
        })
        .await
    }

    pub async fn policy_history(&self, table: &str) -> Result<v1::PolicyHistoryResponse> {
        self.meta_call(|mut c| {
            let table = table.to_string();
            async move { c.policy_history(v1::PolicyHistoryRequest { table }).await }
        })
        .await
    }

    pub async fn policy_status(&self, table: &str) -> Result<v1::PolicyStatusResponse> {
        self.meta_call(|mut c| {
            let table = table.to_string();
            async move { c.policy_status(v1::PolicyStatusRequest { table }).await }
        })
        .await
    }

    pub async fn site_add(&self, name: &str, metas: &[String]) -> Result<v1::SiteAddResponse> {
        let req = v1::SiteAddRequest { site: Some(v1::Site { name: name.into(), metas: metas.to_vec() }) };
        self.meta_call(|mut c| {
            let req = req.clone();
            async move { c.site_add(req).await }
        })
        .await
    }

    pub async fn site_remove(&self, name: &str) -> Result<v1::SiteRemoveResponse> {
        let req = v1::SiteRemoveRequest { name: name.into() };
        self.meta_call(|mut c| {
            let req = req.clone();
            async move { c.site_remove(req).await }
        })
        .await
    }

    pub async fn site_list(&self) -> Result<v1::SiteListResponse> {
        self.meta_call(|mut c| async move { c.site_list(v1::SiteListRequest {}).await }).await
    }

    pub async fn dup_add(&self, req: v1::DupAddRequest) -> Result<v1::DupAddResponse> {
        self.meta_call(|mut c| {
            let req = req.clone();
            async move { c.dup_add(req).await }
        })
        .await
    }

    /// Duplications of `table` ("" = every table).
    pub async fn dup_list(&self, table: &str, include_removed: bool) -> Result<v1::DupListResponse> {
        let req = v1::DupListRequest { table: table.into(), include_removed };
        self.meta_call(|mut c| {
            let req = req.clone();
            async move { c.dup_list(req).await }
        })
        .await
    }

    /// `status`: "start" (resume), "pause" or "removed".
    pub async fn dup_set_status(&self, dup_id: u32, status: &str) -> Result<v1::DupSetStatusResponse> {
        let req = v1::DupSetStatusRequest { dup_id, status: status.into() };
        self.meta_call(|mut c| {
            let req = req.clone();
            async move { c.dup_set_status(req).await }
        })
        .await
    }

    /// Starts a backup of `table` to `target` ("" = the policy's or the meta's default).
    pub async fn backup_now(&self, req: v1::BackupNowRequest) -> Result<v1::BackupNowResponse> {
        self.meta_call(|mut c| {
            let req = req.clone();
            async move { c.backup_now(req).await }
        })
        .await
    }

    /// Backup records of `table` ("" = every table).
    pub async fn backup_list(&self, table: &str) -> Result<v1::BackupListResponse> {
        let req = v1::BackupListRequest { table: table.into() };
        self.meta_call(|mut c| {
            let req = req.clone();
            async move { c.backup_list(req).await }
        })
        .await
    }

    pub async fn backup_delete(&self, id: u64, who: &str) -> Result<v1::BackupDeleteResponse> {
        let req = v1::BackupDeleteRequest { id, who: who.into() };
        self.meta_call(|mut c| {
            let req = req.clone();
            async move { c.backup_delete(req).await }
        })
        .await
    }

    /// Re-reads every object of backup `id` on the meta server (which holds the target's
    /// credentials); the answer lists every problem.
    pub async fn backup_verify(&self, id: u64) -> Result<v1::BackupVerifyResponse> {
        self.meta_call(|mut c| async move { c.backup_verify(v1::BackupVerifyRequest { id }).await }).await
    }

    pub async fn restore(&self, req: v1::RestoreRequest) -> Result<v1::RestoreResponse> {
        self.meta_call(|mut c| {
            let req = req.clone();
            async move { c.restore(req).await }
        })
        .await
    }

    pub async fn restore_list(&self) -> Result<v1::RestoreListResponse> {
        self.meta_call(|mut c| async move { c.restore_list(v1::RestoreListRequest {}).await }).await
    }

    pub async fn backup_show(&self, id: u64) -> Result<v1::BackupShowResponse> {
        self.meta_call(|mut c| async move { c.backup_show(v1::BackupShowRequest { id }).await }).await
    }

    pub async fn cluster_status(&self) -> Result<v1::ClusterStatusResponse> {
        self.meta_call(|mut c| async move { c.cluster_status(v1::ClusterStatusRequest {}).await }).await
    }
}
