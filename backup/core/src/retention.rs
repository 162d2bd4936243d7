//! What retention deletes and what garbage collection may remove from a target.
//!
//! A backup's record in the SQL store goes `running → complete | failed`, and a complete one
//! goes `→ deleted` when retention or an operator deletes it; `failed` and `deleted` are final.
//! The record exists before the backup's first upload.
//!
//! Collection of table `t` lists `tables/t/` **first**, then reads the records and the
//! manifests the complete backups accepted. An object of the listing is kept when the backup
//! that owns it is running, or when a complete backup consists of it (its table manifest, an
//! accepted partition manifest, or an object such a manifest references); the rest is garbage,
//! including what earlier attempts of a complete backup's partitions left. Why this cannot
//! delete anything a complete backup needs:
//! - an object a backup uploaded carries that backup's id (layout); the backup's record existed
//!   before the upload, so before the listing, so the collection sees it as running or
//!   complete and keeps the object, unless the backup failed, which never completes;
//! - an object a backup reuses was referenced by a kept complete backup when the backup
//!   started; retention does not delete a table's backups while one of its backups runs (the
//!   meta schedules one or the other), so that reference is still there at the collection;
//! - keys the layout does not name are left alone and reported.
//!
//! When a live backup's manifests cannot be read, references are unknown: only keys under dead
//! backups' own prefixes are collected, never shared objects.

use crate::layout;
use crate::manifest::{BackupId, PartitionManifest};
use std::collections::BTreeSet;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BackupState {
    Running,
    Complete,
    Failed,
    Deleted,
}

impl BackupState {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupState::Running => "running",
            BackupState::Complete => "complete",
            BackupState::Failed => "failed",
            BackupState::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<BackupState> {
        [BackupState::Running, BackupState::Complete, BackupState::Failed, BackupState::Deleted].into_iter().find(|b| b.as_str() == s)
    }

    /// Whether its objects must stay.
    pub fn is_live(self) -> bool {
        matches!(self, BackupState::Running | BackupState::Complete)
    }

    /// Whether `self → next` is a transition a record may take.
    pub fn may_become(self, next: BackupState) -> bool {
        matches!((self, next), (BackupState::Running, BackupState::Complete | BackupState::Failed) | (BackupState::Complete, BackupState::Deleted))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackupRecord {
    pub id: BackupId,
    pub state: BackupState,
    pub started_ms: u64,
}

/// The complete backups of a table beyond the newest `keep` (by start time, then id): what
/// retention deletes. Nothing while one of the table's backups is running (see above).
pub fn expired(records: &[BackupRecord], keep: u32) -> Vec<BackupId> {
    if records.iter().any(|r| r.state == BackupState::Running) {
        return Vec::new();
    }
    let mut complete: Vec<&BackupRecord> = records.iter().filter(|r| r.state == BackupState::Complete).collect();
    complete.sort_by_key(|r| std::cmp::Reverse((r.started_ms, r.id)));
    complete.into_iter().skip(keep as usize).map(|r| r.id).collect()
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Collection {
    /// Keys to delete.
    pub delete: Vec<String>,
    pub delete_bytes: u64,
    /// Keys under the table's root that the layout does not name: left alone.
    pub unknown: Vec<String>,
}

/// What to delete of `listed` (keys and sizes under `tables/<table_id>/`, listed before
/// `records` and `live_manifests` were read). `live_manifests` holds the partition manifests
/// that every complete backup of the table accepted (as its table manifest names them), or is
/// None when some could not be read.
pub fn garbage(table_id: u32, listed: &[(String, u64)], records: &[BackupRecord], live_manifests: Option<&[PartitionManifest]>) -> Collection {
    let state = |id: BackupId| records.iter().find(|r| r.id == id).map(|r| r.state);
    // What complete backups consist of: their table manifests, accepted partition manifests
    // and every object those reference.
    let needed: Option<BTreeSet<String>> = live_manifests.map(|ms| {
        let mut keys = BTreeSet::new();
        for m in ms {
            keys.insert(layout::table_manifest_key(m.table_id, m.backup_id));
            keys.insert(layout::partition_manifest_key(m.table_id, m.backup_id, m.partition, m.attempt));
            keys.extend(m.files.iter().map(|f| f.object.clone()));
        }
        keys
    });
    let shared_prefix = format!("{}/objects/", layout::table_root(table_id));
    let mut out = Collection::default();
    for (key, size) in listed {
        let Some(owner) = layout::owner(table_id, key) else {
            out.unknown.push(key.clone());
            continue;
        };
        let deletable = match (state(owner), &needed) {
            // A running backup may still reference anything it wrote.
            (Some(BackupState::Running), _) => false,
            // A complete one keeps what it consists of; the rest is what earlier attempts of
            // its partitions left.
            (Some(BackupState::Complete), Some(needed)) => !needed.contains(key),
            (Some(BackupState::Complete), None) => false,
            // Failed, deleted or never recorded: unless a complete backup reuses it.
            (_, Some(needed)) => !needed.contains(key),
            (_, None) => !key.starts_with(&shared_prefix),
        };
        if deletable {
            out.delete.push(key.clone());
            out.delete_bytes += size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{sha256_hex, Encoding, FileEntry, FORMAT};

    fn record(id: BackupId, state: BackupState, started_ms: u64) -> BackupRecord {
        BackupRecord { id, state, started_ms }
    }

    #[test]
    fn retention_keeps_the_newest_complete_backups_and_waits_for_running_ones() {
        use BackupState::*;
        let records = [record(1, Complete, 10), record(2, Failed, 20), record(3, Complete, 30), record(4, Complete, 40), record(5, Deleted, 5)];
        assert_eq!(expired(&records, 2), vec![1]);
        assert_eq!(expired(&records, 1), vec![3, 1]);
        assert_eq!(expired(&records, 7), Vec::<BackupId>::new());
        let mut running = records.to_vec();
        running.push(record(6, Running, 50));
        assert_eq!(expired(&running, 1), Vec::<BackupId>::new(), "not while a backup of the table runs");
    }

    #[test]
    fn collection_keeps_what_live_backups_consist_of() {
        use BackupState::*;
        let (a, b, c) = (sha256_hex(b"a"), sha256_hex(b"b"), sha256_hex(b"c"));
        // Backup 1 (deleted) uploaded a and b; backup 2 (complete, accepted attempt 2) reuses
        // a and uploaded c, its attempt 1 left a manifest and c's twin behind; backup 3
        // (running) uploaded b again under its own id; backup 4 failed.
        let a1 = layout::sst_key(7, 1, &a);
        let b1 = layout::sst_key(7, 1, &b);
        let c2 = layout::sst_key(7, 2, &c);
        let b3 = layout::sst_key(7, 3, &b);
        let orphan2 = layout::sst_key(7, 2, &b);
        let listed: Vec<(String, u64)> = [
            (a1.clone(), 10),
            (b1.clone(), 20),
            (c2.clone(), 30),
            (orphan2.clone(), 20),
            (b3.clone(), 20),
            (layout::table_manifest_key(7, 1), 1),
            (layout::partition_manifest_key(7, 1, 0, 1), 1),
            (layout::partition_manifest_key(7, 2, 0, 1), 1),
            (layout::partition_manifest_key(7, 2, 0, 2), 1),
            (layout::table_manifest_key(7, 2), 1),
            (layout::file_key(7, 2, 0, 2, "CURRENT"), 1),
            (layout::file_key(7, 3, 0, 1, "CURRENT"), 1),
            (layout::file_key(7, 4, 0, 1, "CURRENT"), 2),
            (layout::sst_key(7, 99, &a), 10),
            ("tables/7/README".to_string(), 1),
        ]
        .into_iter()
        .collect();
        let records = [record(1, Deleted, 1), record(2, Complete, 2), record(3, Running, 3), record(4, Failed, 4)];
        let entry = |name: &str, sha: &str, object: &str, reused| FileEntry {
            name: name.into(),
            size: 10,
            sha256: sha.to_string(),
            object: object.to_string(),
            stored_bytes: 10,
            encoding: Encoding::Raw,
            reused,
        };
        let m2 = PartitionManifest {
            format: FORMAT,
            backup_id: 2,
            table_id: 7,
            partition: 0,
            attempt: 2,
            decree: 1,
            files: vec![
                entry("1.sst", &a, &a1, true),
                entry("2.sst", &c, &c2, false),
                FileEntry { encoding: Encoding::Zstd, ..entry("CURRENT", &c, &layout::file_key(7, 2, 0, 2, "CURRENT"), false) },
            ],
            duration_ms: 0,
        };
        let collection = garbage(7, &listed, &records, Some(&[m2]));
        assert_eq!(
            collection.delete,
            vec![
                b1.clone(),
                orphan2.clone(),
                layout::table_manifest_key(7, 1),
                layout::partition_manifest_key(7, 1, 0, 1),
                layout::partition_manifest_key(7, 2, 0, 1),
                layout::file_key(7, 4, 0, 1, "CURRENT"),
                // No record at all: garbage too (records exist before uploads).
                layout::sst_key(7, 99, &a),
            ]
        );
        assert_eq!(collection.delete_bytes, 20 + 20 + 1 + 1 + 1 + 2 + 10);
        assert_eq!(collection.unknown, vec!["tables/7/README".to_string()]);

        // References unknown: only dead backups' own prefixes go.
        let collection = garbage(7, &listed, &records, None);
        assert_eq!(
            collection.delete,
            vec![layout::table_manifest_key(7, 1), layout::partition_manifest_key(7, 1, 0, 1), layout::file_key(7, 4, 0, 1, "CURRENT")]
        );
    }

    #[test]
    fn states_move_one_way() {
        use BackupState::*;
        assert!(Running.may_become(Complete) && Running.may_become(Failed) && Complete.may_become(Deleted));
        assert!(!Failed.may_become(Complete) && !Deleted.may_become(Complete) && !Complete.may_become(Running));
        for s in [Running, Complete, Failed, Deleted] {
            assert_eq!(BackupState::parse(s.as_str()), Some(s));
        }
    }
}
