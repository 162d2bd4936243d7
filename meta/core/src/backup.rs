//! Backups as the meta keeps them (docs/backup.md): a record per backup in the SQL store, whose
//! state goes `running → complete | failed` and `complete → deleted`; the job of each running
//! backup (`tandem_backup_core::BackupJob`, held by the leader that started it); the task a
//! partition's primary is handed in its beacon answer, and what it reports back.
//!
//! A record exists before anything is uploaded, and only its `complete` state makes a backup
//! one: the target holds objects of running and failed backups too. A leader that finds records
//! running when it takes over fails them (their job lived in the previous leader's memory).

use tandem_backup_core::job::{BackupJob, Phase};
use tandem_backup_core::manifest::BackupId;
use tandem_backup_core::retention::BackupState;

/// Why a new leader fails the records it finds running.
pub const FAILED_BY_TAKEOVER: &str = "the meta server that ran it stopped leading; run it again";

/// A backup's record, as the SQL store holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupInfo {
    pub id: BackupId,
    pub table_id: u32,
    /// The table's name when the backup started (its record outlives the table).
    pub table_name: String,
    pub partition_count: u32,
    /// `s3://…` or `file://…`, as the backup wrote to it.
    pub target: String,
    pub state: BackupState,
    /// Wall clock, ms since the Unix epoch; `finished_ms` is 0 while running.
    pub started_ms: u64,
    pub finished_ms: u64,
    /// The table manifest's SHA-256, once complete: a restore checks the chain from here.
    pub manifest_sha256: String,
    /// Bytes the backup consists of, and those it uploaded itself (the rest it reuses).
    pub bytes: u64,
    pub new_bytes: u64,
    /// Why it failed or was deleted ("" otherwise).
    pub reason: String,
    /// Who asked for it (`schedule` for scheduled ones).
    pub who: String,
}

pub use tandem_backup_core::task::{BackupTask, BackupTaskReport, RestoreFailure, RestoreSource};

/// One partition of a running backup, as `backup show` and `backup now --wait` see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupPartitionView {
    pub partition: u32,
    /// "waiting", "uploading" or "done".
    pub phase: &'static str,
    pub primary: String,
    pub attempt: u32,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub last_error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupView {
    pub info: BackupInfo,
    /// While running (empty otherwise: a complete backup's partitions are in its manifest).
    pub partitions: Vec<BackupPartitionView>,
}

/// A running job's partitions.
pub fn partition_views(job: &BackupJob) -> Vec<BackupPartitionView> {
    let errors = job.last_errors();
    job.phases()
        .iter()
        .enumerate()
        .map(|(p, phase)| {
            let last_error = errors.get(p).cloned().flatten();
            match phase {
                Phase::Waiting => {
                    BackupPartitionView { partition: p as u32, phase: "waiting", primary: String::new(), attempt: 0, bytes_done: 0, bytes_total: 0, last_error }
                }
                Phase::Uploading { primary, attempt, bytes_done, bytes_total, .. } => BackupPartitionView {
                    partition: p as u32,
                    phase: "uploading",
                    primary: primary.clone(),
                    attempt: *attempt,
                    bytes_done: *bytes_done,
                    bytes_total: *bytes_total,
                    last_error,
                },
                Phase::Done(e) => BackupPartitionView {
                    partition: p as u32,
                    phase: "done",
                    primary: String::new(),
                    attempt: e.attempt,
                    bytes_done: e.bytes,
                    bytes_total: e.bytes,
                    last_error,
                },
            }
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreState {
    /// The table exists; its partitions' first replicas are building their databases.
    Running,
    /// Every partition's members opened the restored data.
    Complete,
    Failed,
}

impl RestoreState {
    pub fn as_str(self) -> &'static str {
        match self {
            RestoreState::Running => "running",
            RestoreState::Complete => "complete",
            RestoreState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<RestoreState> {
        [RestoreState::Running, RestoreState::Complete, RestoreState::Failed].into_iter().find(|r| r.as_str() == s)
    }
}

/// A restore of a backup into a table, as the SQL store keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreInfo {
    pub id: u64,
    /// The table it created, and its name then.
    pub table_id: u32,
    pub table_name: String,
    pub backup_id: u64,
    pub source_table_id: u32,
    pub source_table_name: String,
    pub partition_count: u32,
    pub target: String,
    pub manifest_sha256: String,
    pub state: RestoreState,
    pub started_ms: u64,
    pub finished_ms: u64,
    pub reason: String,
    pub who: String,
}

impl RestoreInfo {
    pub fn source(&self) -> RestoreSource {
        RestoreSource {
            restore_id: self.id,
            table_id: self.table_id,
            backup_id: self.backup_id,
            source_table_id: self.source_table_id,
            target: self.target.clone(),
            manifest_sha256: self.manifest_sha256.clone(),
        }
    }
}

/// A restore as `restore list` shows it: how many partitions have every member open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreView {
    pub info: RestoreInfo,
    pub partitions_ready: u32,
    /// The last failure a server reported of one of its replicas' restores, while running.
    pub last_error: Option<String>,
}
