//! Tables as the meta server knows them.

use crate::policy::Policy;
use serde::{Deserialize, Serialize};
use tandem_core::PartitionConfig;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TableStatus {
    Available,
    /// Soft-deleted: recallable until `drop_time_ms + recall window`, then purged.
    Dropped { drop_time_ms: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableInfo {
    pub id: u32,
    pub name: String,
    pub partition_count: u32,
    /// Always `policy.replicas`; kept apart because cure and placement read it everywhere.
    pub replica_count: u32,
    pub status: TableStatus,
    pub created_ms: u64,
    pub owner: String,
    pub policy: Policy,
}

/// Everything the meta server persists, as loaded at start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetaSnapshot {
    pub tables: Vec<TableInfo>,
    /// Every partition of every table in `tables`.
    pub partitions: Vec<PartitionConfig>,
    /// Replica servers that ever registered, with the time they first did.
    pub nodes: Vec<(String, u64)>,
    /// The other sites, by name.
    pub sites: Vec<crate::duplication::Site>,
    /// Every duplication, removed ones included.
    pub dups: Vec<crate::duplication::DupInfo>,
    /// `(dup id, partition, confirmed decree)` as persisted.
    pub dup_confirmed: Vec<(u32, u32, tandem_core::Decree)>,
    /// Every backup record, deleted ones included.
    pub backups: Vec<crate::backup::BackupInfo>,
    /// Every restore.
    pub restores: Vec<crate::backup::RestoreInfo>,
}
