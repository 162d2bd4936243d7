//! tandem-backup-core: the decisions of a backup and a restore, IO-free, so that the servers
//! and the simulator run the same code against an `ObjectStore` (the real target in
//! `tandem-backup-store`, or `MemObjectStore`, its in-memory twin).
//!
//! ```text
//! checkpoint files ──plan_partition──▶ PartitionPlan ──upload_partition──▶ objects + partition manifest
//!                      (Reusable: SSTs kept backups hold)                         │
//! partition entries ──────────────────▶ TableManifest (written last) ◀───────────┘
//! SQL record (complete, table manifest SHA-256) ──read_table_manifest──▶ verify_backup / restore_partition
//! records + listing + live manifests ──expired / garbage──▶ what retention and collection delete
//! BackupJob (meta): primaries, reports, ticks ──▶ Assign / WriteTableManifest / RecordComplete / RecordFailed
//! ```
//!
//! `layout` says where each object lives, `manifest` what a backup records, `codec` how a file
//! is stored, `retention` why collection never deletes what a complete backup needs, `job` when
//! a backup is complete and when it has failed.
//! `object_store_conformance` is what every object store passes.

pub mod codec;
pub mod error;
pub mod job;
pub mod layout;
pub mod manifest;
pub mod object;
pub mod partition;
pub mod restore;
pub mod retention;
pub mod schedule;
pub mod task;

pub use error::{BackupError, Result};
pub use job::{BackupJob, JobAction, JobInput, JobOptions, JobState, PartitionReport};
pub use manifest::{BackupId, Encoding, FileEntry, PartitionEntry, PartitionManifest, TableManifest};
pub use object::{object_store_conformance, validate_key, MemObjectStore, ObjectError, ObjectStore};
pub use partition::{plan_partition, upload_partition, LocalFile, PartitionJob, PartitionPlan, Reusable};
pub use restore::{read_partition_manifest, read_table_manifest, restore_partition, verify_backup, VerifyReport};
pub use retention::{collect, expired, garbage, BackupRecord, BackupState, CollectRecord, CollectReport, Collection};
pub use task::{BackupTask, BackupTaskReport, RestoreFailure, RestoreSource};
