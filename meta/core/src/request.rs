//! What the meta is asked and what it answers, as core types: the meta runtime converts them
//! from and to the wire, the simulator sends them as they are.

use crate::backup::{BackupInfo, BackupTask, BackupTaskReport, BackupView};
use crate::cure::ReplicaReport;
use crate::duplication::{DupInfo, DupReport, DupStatus, DupView, Site};
use tandem_dup_core::{FailMode, TableDup};
use crate::policy::{Policy, PolicyChange};
use crate::table::TableInfo;
use tandem_core::replica::{ConfigProposal, DiskShort};
use tandem_core::digest::Digest;
use tandem_core::{Gpid, NodeAddr, PartitionConfig};

/// Identifies a request until it is answered (`MetaAction::Reply`).
pub type Token = u64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BeaconRequest {
    pub node: NodeAddr,
    /// Unique per process of the server.
    pub incarnation: u64,
    /// No beacon of this process has been answered yet.
    pub restarted: bool,
    /// The lease the server takes from an answered beacon.
    pub lease_period_ms: u64,
    pub reports: Vec<(Gpid, ReplicaReport)>,
    /// The duplicators this server's primaries run: (partition, dup id, progress).
    pub dup_reports: Vec<(Gpid, u32, DupReport)>,
    /// What this server did of the backup tasks it was handed.
    pub backup_reports: Vec<BackupTaskReport>,
    /// Its replicas' restores that failed.
    pub restore_failures: Vec<crate::backup::RestoreFailure>,
    /// A directory of the server below its reserve: it takes only deletes, and gets no new
    /// replica until it has room again.
    pub disk_short: Option<DiskShort>,
    /// The most replicas the server hosts (what its open-files limit allows; None: no limit
    /// given): the meta places no more there.
    pub replicas_max: Option<u32>,
    /// Replicas a configuration names the server for that it refused to open (it hosts
    /// `replicas_max`): the meta counts it out of those partitions and places them elsewhere.
    pub refused: Vec<Gpid>,
    /// `reports` holds only the reports that changed since the server's last answered beacon,
    /// and `reports_gone` the replicas it no longer hosts; false: `reports` is every one.
    pub reports_delta: bool,
    pub reports_gone: Vec<Gpid>,
    /// The digest of all its reports (`digest::reports_digest`, in partition order): a meta
    /// whose view differs asks for every one (`resend_reports`).
    pub reports_digest: Option<Digest>,
    /// The digest of the configurations of its last answer: the answer leaves them out when
    /// they are the same.
    pub configs_digest: Option<Digest>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetaRequest {
    Beacon(BeaconRequest),
    /// The configurations of a table's partitions (clients route with them).
    QueryConfig { table: String },
    /// A primary asks for a configuration change (compare-and-set on its ballot).
    Propose { gpid: Gpid, from: NodeAddr, proposal: ConfigProposal },
    CreateTable { name: String, partition_count: u32, change: PolicyChange, owner: String, who: String },
    SetPolicy { table: String, change: PolicyChange, who: String },
    DropTable { name: String },
    RecallTable { name: String },
    ListTables { include_dropped: bool },
    ShowTable { name: String },
    ListNodes,
    ClusterStatus,
    PolicyStatus { table: String },
    /// Resolves the table whose history the runtime then reads from the store.
    PolicyHistory { table: String },
    SiteAdd { site: Site },
    SiteRemove { name: String },
    SiteList,
    DupAdd { table: String, remote_site: String, fail_mode: FailMode, sync_existing: bool },
    /// Duplications of `table` (all tables if None); removed ones only with `include_removed`.
    DupList { table: Option<String>, include_removed: bool },
    /// Pause, resume (`Start`) or remove duplication `dup_id`.
    DupSetStatus { dup_id: u32, status: DupStatus },
    /// Starts a backup of `table` to `target` (None: the policy's, else the meta's default).
    BackupNow { table: String, target: Option<String>, who: String },
    /// Backup records of the table named `table` (dropped ones too), or of every table.
    BackupList { table: Option<String> },
    BackupShow { id: u64 },
    /// Deletes a complete backup (its record says deleted; collection removes its objects).
    BackupDelete { id: u64, who: String },
    /// Creates table `table` (or, with `as_original`, the backup's own table name, which must be
    /// free) from complete backup `backup_id`.
    Restore { backup_id: u64, table: Option<String>, as_original: bool, who: String },
    RestoreList,
}

impl MetaRequest {
    pub fn kind(&self) -> &'static str {
        match self {
            MetaRequest::Beacon(_) => "beacon",
            MetaRequest::QueryConfig { .. } => "query_config",
            MetaRequest::Propose { .. } => "propose",
            MetaRequest::CreateTable { .. } => "create_table",
            MetaRequest::SetPolicy { .. } => "set_policy",
            MetaRequest::DropTable { .. } => "drop_table",
            MetaRequest::RecallTable { .. } => "recall_table",
            MetaRequest::ListTables { .. } => "list_tables",
            MetaRequest::ShowTable { .. } => "show_table",
            MetaRequest::ListNodes => "list_nodes",
            MetaRequest::ClusterStatus => "cluster_status",
            MetaRequest::PolicyStatus { .. } => "policy_status",
            MetaRequest::PolicyHistory { .. } => "policy_history",
            MetaRequest::SiteAdd { .. } => "site_add",
            MetaRequest::SiteRemove { .. } => "site_remove",
            MetaRequest::SiteList => "site_list",
            MetaRequest::DupAdd { .. } => "dup_add",
            MetaRequest::DupList { .. } => "dup_list",
            MetaRequest::DupSetStatus { .. } => "dup_set_status",
            MetaRequest::BackupNow { .. } => "backup_now",
            MetaRequest::BackupList { .. } => "backup_list",
            MetaRequest::BackupShow { .. } => "backup_show",
            MetaRequest::BackupDelete { .. } => "backup_delete",
            MetaRequest::Restore { .. } => "restore",
            MetaRequest::RestoreList => "restore_list",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetaReply {
    /// The configurations the server hosts or reported, its tables' partition counts, and the
    /// reported partitions whose table is gone. The lease runs from the beacon's send.
    /// Also the duplications of those tables and the sites they ship to.
    /// And each table's tombstone retention (ms).
    Beacon {
        configs: Vec<PartitionConfig>,
        partition_counts: Vec<(u32, u32)>,
        tombstone_retention: Vec<(u32, u64)>,
        gone: Vec<Gpid>,
        dups: Vec<TableDup>,
        sites: Vec<Site>,
        /// The partitions of running backups this server's primaries are to upload.
        backups: Vec<BackupTask>,
        /// Where the tables being restored get their data (a replica of one opened for the
        /// first time builds its database from it).
        restores: Vec<crate::backup::RestoreSource>,
        /// `configs`, `partition_counts` and `tombstone_retention` are those of the server's
        /// last answer (the beacon's `configs_digest` matched) and are left out.
        configs_unchanged: bool,
        /// The meta's view of the server's reports differs from the beacon's digest: the next
        /// beacon sends every report.
        resend_reports: bool,
    },
    Config { table: TableInfo, partitions: Vec<PartitionConfig> },
    Proposed { config: PartitionConfig },
    Created { table: TableInfo },
    PolicySet { table: TableInfo, old: Policy, changed: bool },
    Dropped { table: TableInfo, recall_until_ms: u64 },
    Recalled { table: TableInfo },
    Tables { tables: Vec<TableInfo> },
    Table { table: TableInfo, partitions: Vec<PartitionView> },
    Nodes { nodes: Vec<NodeView> },
    Status(ClusterStatus),
    PolicyStatus(PolicyStatusView),
    History { table: TableInfo },
    Sites { sites: Vec<Site> },
    SiteAdded { site: Site },
    SiteRemoved { name: String },
    DupAdded { dup: DupInfo },
    Dups { dups: Vec<DupView> },
    DupStatusSet { dup: DupInfo, changed: bool },
    BackupStarted { backup: BackupInfo },
    Backups { backups: Vec<BackupInfo> },
    Backup(BackupView),
    BackupDeleted { backup: BackupInfo },
    Restores { restores: Vec<crate::backup::RestoreView> },
}

/// Why a request was refused. Each message names the thing and, where there is one, the fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    /// Another meta server leads (its address, when known), or none does right now.
    #[error("{message}")]
    NotLeader { leader: Option<String>, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// Not done; try again (the store is unreachable, …).
    #[error("{0}")]
    Busy(String),
    /// Not done: the disk under the store is below its reserve; free space first.
    #[error("{0}")]
    DiskFull(String),
    #[error("{0}")]
    Internal(String),
}

/// The health of a partition: its primary is alive, and how many live members it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Healthy,
    Degraded,
    Unavailable,
}

impl Health {
    pub fn as_str(&self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Unavailable => "unavailable",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionView {
    pub config: PartitionConfig,
    pub reports: Vec<(NodeAddr, ReplicaReport)>,
    pub health: Health,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    pub address: NodeAddr,
    pub alive: bool,
    pub last_beacon_ms_ago: u64,
    pub primaries: u32,
    pub secondaries: u32,
    pub learners: u32,
    /// What its last beacon said of its disk (None: room on every directory).
    pub disk_short: Option<DiskShort>,
    /// The most replicas it hosts, as its last beacon said (None: no limit given).
    pub replicas_max: Option<u32>,
    /// Replicas it refused for want of room that it has not been relieved of yet.
    pub refused: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterStatus {
    pub tables: u32,
    pub partitions: u32,
    pub healthy: u32,
    pub degraded: u32,
    pub unavailable: u32,
    pub nodes_alive: u32,
    pub nodes_dead: u32,
    /// Alive servers below their disk reserve.
    pub nodes_disk_short: u32,
    pub problems: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LevelStatus {
    pub level: String,
    pub desired: String,
    pub actual: String,
    pub satisfied: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionReplicas {
    pub partition: u32,
    pub healthy: u32,
    pub members: u32,
    pub learners: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyStatusView {
    pub table: TableInfo,
    pub levels: Vec<LevelStatus>,
    pub partitions: Vec<PartitionReplicas>,
}
