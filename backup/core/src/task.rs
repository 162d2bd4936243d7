//! A partition's share of a running backup as the meta hands it to a replica server (in a
//! beacon answer), and what the server reports back (in its next beacons). The meta's job
//! (`job`) decides the attempts; the server's host (`tandem_host::Backups`) decides when an
//! upload starts and when it is abandoned.

use crate::job::PartitionReport;
use crate::manifest::BackupId;
use tandem_core::Gpid;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupTask {
    pub backup_id: BackupId,
    pub gpid: Gpid,
    pub attempt: u32,
    /// `s3://…` or `file://…`.
    pub target: String,
    /// Complete backups of the table to reuse SST files from: `(id, table manifest SHA-256)`.
    pub kept: Vec<(BackupId, String)>,
}

impl BackupTask {
    /// The partition job the uploader plans and writes under.
    pub fn partition_job(&self) -> crate::PartitionJob {
        crate::PartitionJob { table_id: self.gpid.table_id, backup_id: self.backup_id, partition: self.gpid.partition, attempt: self.attempt }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupTaskReport {
    pub backup_id: BackupId,
    pub gpid: Gpid,
    pub attempt: u32,
    pub report: PartitionReport,
}

/// Where a table being restored gets its data: each partition's first replicas build their
/// database from partition `p`'s manifest of backup `backup_id` of table `source_table_id`
/// (read under the table manifest's checksum), before they open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreSource {
    pub restore_id: u64,
    /// The table being restored (a new id).
    pub table_id: u32,
    pub backup_id: BackupId,
    pub source_table_id: u32,
    pub target: String,
    pub manifest_sha256: String,
}

/// A replica's restore that failed, as its server reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreFailure {
    pub gpid: Gpid,
    pub error: String,
    /// The backup itself is damaged: trying again cannot help.
    pub permanent: bool,
}
