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

/// A backup record as collection reads it: the record, and the table manifest's SHA-256 for a
/// complete backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollectRecord {
    pub record: BackupRecord,
    pub manifest_sha256: String,
}

/// What one collection did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CollectReport {
    pub listed: usize,
    pub deleted: usize,
    pub deleted_bytes: u64,
    /// Keys under the table's root the layout does not name (left alone).
    pub unknown: Vec<String>,
    /// False when some complete backup's manifests could not be read: only dead backups' own
    /// prefixes were collected then.
    pub references_known: bool,
    /// Why it stopped early (the caller no longer leads), if it did.
    pub stopped: Option<String>,
}

/// Collects table `table_id`'s garbage in `store`, in the order the safety argument above
/// needs: list first, then ask `records` for the table's records on this target as they are
/// *now* (after the listing), read the manifests the complete ones accepted, decide with
/// `garbage`, and delete. `records` answers None once the caller may no longer delete (it lost
/// its lease); it is asked again before the deletes.
pub fn collect(store: &mut dyn crate::ObjectStore, table_id: u32, records: &mut dyn FnMut() -> Option<Vec<CollectRecord>>) -> crate::Result<CollectReport> {
    let mut report = CollectReport::default();
    let listed = store.list(&layout::table_root(table_id))?;
    report.listed = listed.len();
    let Some(now) = records() else {
        report.stopped = Some("no longer leading before reading the records".into());
        return Ok(report);
    };
    let mut manifests = Vec::new();
    let mut known = true;
    for r in now.iter().filter(|r| r.record.state == BackupState::Complete) {
        let read = crate::restore::read_table_manifest(store, table_id, r.record.id, Some(&r.manifest_sha256)).and_then(|table| {
            (0..table.partition_count).map(|p| crate::restore::read_partition_manifest(store, &table, p)).collect::<crate::Result<Vec<_>>>()
        });
        match read {
            Ok(ms) => manifests.extend(ms),
            // An unreachable target is no verdict on the references: stop.
            Err(crate::BackupError::Object(e)) => return Err(e.into()),
            Err(_) => known = false,
        }
    }
    report.references_known = known;
    let plain: Vec<BackupRecord> = now.iter().map(|r| r.record).collect();
    let decided = garbage(table_id, &listed, &plain, known.then_some(&manifests[..]));
    report.unknown = decided.unknown;
    if records().is_none() {
        report.stopped = Some("no longer leading before deleting".into());
        return Ok(report);
    }
    for key in &decided.delete {
        store.delete(key)?;
        report.deleted += 1;
    }
    report.deleted_bytes = decided.delete_bytes;
    Ok(report)
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
    fn collection_reads_the_records_after_listing_and_keeps_what_complete_backups_need() {
        use crate::object::{MemObjectStore, ObjectStore};
        use crate::partition::{plan_partition, upload_partition, LocalFile, PartitionJob, Reusable};
        let mut store = MemObjectStore::default();
        let file = |name: &str, bytes: &[u8]| (LocalFile { name: name.into(), size: bytes.len() as u64, sha256: sha256_hex(bytes) }, bytes.to_vec());
        // Backup 1 uploads a.sst and its MANIFEST; backup 2 reuses a.sst and adds b.sst.
        let upload = |store: &mut MemObjectStore, id: BackupId, files: Vec<(LocalFile, Vec<u8>)>, kept: &[PartitionManifest]| {
            let job = PartitionJob { table_id: 1, backup_id: id, partition: 0, attempt: 1 };
            let plan = plan_partition(job, 5, files.iter().map(|f| f.0.clone()).collect(), &Reusable::from_manifests(kept)).unwrap();
            let (m, entry) = upload_partition(store, &plan, &mut |n| Ok(files.iter().find(|f| f.0.name == n).unwrap().1.clone()), || 1).unwrap();
            let table = crate::manifest::TableManifest { format: FORMAT, backup_id: id, table_id: 1, table_name: "t".into(), partition_count: 1, started_ms: id, partitions: vec![entry] };
            let bytes = table.encode();
            store.put(&layout::table_manifest_key(1, id), bytes.clone()).unwrap();
            (m, sha256_hex(&bytes))
        };
        let (m1, sha1) = upload(&mut store, 1, vec![file("a.sst", b"aaaa"), file("MANIFEST-1", b"m1")], &[]);
        let (_, sha2) = upload(&mut store, 2, vec![file("a.sst", b"aaaa"), file("b.sst", b"bb"), file("MANIFEST-2", b"m2")], &[m1]);
        let complete = |id, sha: &str| CollectRecord { record: record(id, BackupState::Complete, id), manifest_sha256: sha.into() };
        let deleted = CollectRecord { record: record(1, BackupState::Deleted, 1), manifest_sha256: sha1.clone() };
        // Backup 1 deleted: its own objects go, the a.sst backup 2 reuses stays.
        let mut asked = 0;
        let report = collect(&mut store, 1, &mut || {
            asked += 1;
            Some(vec![deleted.clone(), complete(2, &sha2)])
        })
        .unwrap();
        assert_eq!(asked, 2, "asked after the listing and again before deleting");
        assert!(report.references_known && report.deleted >= 2 && report.stopped.is_none(), "{report:?}");
        let left: Vec<String> = store.list("tables/1").unwrap().into_iter().map(|(k, _)| k).collect();
        assert!(left.iter().any(|k| k.starts_with("tables/1/objects/") && k.ends_with("-1")), "backup 1's a.sst is reused by 2: {left:?}");
        assert!(!left.iter().any(|k| k.starts_with("tables/1/backups/1/")), "{left:?}");
        assert_eq!(crate::restore::verify_backup(&store, 1, 2, Some(&sha2)).unwrap().problems, vec![]);
        // A backup the records do not know yet (started after the listing would see it running;
        // one never recorded is garbage) — and a caller that lost its lease deletes nothing.
        store.put("tables/1/backups/9/0/1/files/x.zst", vec![1]).unwrap();
        let mut calls = 0;
        let report = collect(&mut store, 1, &mut || {
            calls += 1;
            (calls == 1).then(|| vec![complete(2, &sha2)])
        })
        .unwrap();
        assert_eq!((report.deleted, report.stopped.is_some()), (0, true));
        let running = CollectRecord { record: record(9, BackupState::Running, 9), manifest_sha256: String::new() };
        let report = collect(&mut store, 1, &mut || Some(vec![complete(2, &sha2), running.clone()])).unwrap();
        assert_eq!(report.deleted, 0, "a running backup's objects stay");
        // A complete backup whose manifest is damaged: references unknown, shared objects stay.
        store.put(&layout::table_manifest_key(1, 2), b"{}".to_vec()).unwrap();
        let report = collect(&mut store, 1, &mut || Some(vec![complete(2, &sha2)])).unwrap();
        assert!(!report.references_known);
        assert!(store.list("tables/1/objects").unwrap().len() >= 2, "shared objects kept while references are unknown");
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
