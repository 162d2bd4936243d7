//! Reading a backup back: the chain from the table manifest's checksum (held by the SQL
//! record of a complete backup) to every partition manifest and every object. `verify_backup`
//! re-reads every object and reports every problem it finds, whatever the job recorded;
//! `restore_partition` hands a partition's files over only once each one has passed its checks,
//! so nothing partial or corrupt is ever written where a replica would open it.

use crate::codec;
use crate::error::{BackupError, Result};
use crate::layout;
use crate::manifest::{sha256_hex, BackupId, PartitionManifest, TableManifest};
use crate::object::ObjectStore;

/// Reads and checks the table manifest of backup `backup_id`; `expected_sha256` is the one its
/// record holds (None: trust the object, for `backup show` of a backup with no record).
pub fn read_table_manifest(store: &dyn ObjectStore, table_id: u32, backup_id: BackupId, expected_sha256: Option<&str>) -> Result<TableManifest> {
    let key = layout::table_manifest_key(table_id, backup_id);
    let bytes = fetch(store, &key)?;
    if let Some(expected) = expected_sha256
        && sha256_hex(&bytes) != expected
    {
        return Err(BackupError::Damaged { object: key, detail: "fails the SHA-256 checksum its backup's record holds".into() });
    }
    Ok(TableManifest::decode(&key, &bytes, table_id, backup_id)?)
}

/// Reads and checks partition `p`'s manifest as the table manifest names it.
pub fn read_partition_manifest(store: &dyn ObjectStore, table: &TableManifest, partition: u32) -> Result<PartitionManifest> {
    let entry = &table.partitions[partition as usize];
    let bytes = fetch(store, &entry.manifest)?;
    if sha256_hex(&bytes) != entry.manifest_sha256 || bytes.len() as u64 != entry.manifest_bytes {
        return Err(BackupError::Damaged { object: entry.manifest.clone(), detail: "does not match the table manifest's checksum".into() });
    }
    let m = PartitionManifest::decode(&entry.manifest, &bytes, table.table_id, table.backup_id, partition, entry.attempt)?;
    if m.decree != entry.decree {
        return Err(BackupError::Damaged { object: entry.manifest.clone(), detail: format!("says decree {}, the table manifest {}", m.decree, entry.decree) });
    }
    Ok(m)
}

fn fetch(store: &dyn ObjectStore, key: &str) -> Result<Vec<u8>> {
    store.get(key)?.ok_or_else(|| BackupError::Damaged { object: key.to_string(), detail: "is missing".into() })
}

/// What `backup verify` found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub objects: u64,
    /// Bytes read from the target.
    pub stored_bytes: u64,
    /// Every problem, each naming its object.
    pub problems: Vec<BackupError>,
}

/// Re-reads every object of backup `backup_id` and checks sizes and checksums against the
/// manifests, collecting every problem rather than stopping at the first. An unavailable
/// target is an error (nothing could be checked), not a problem of the backup.
pub fn verify_backup(store: &dyn ObjectStore, table_id: u32, backup_id: BackupId, expected_sha256: Option<&str>) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let damage_or_fail = |e: BackupError, report: &mut VerifyReport| match e {
        BackupError::Object(e) => Err(BackupError::Object(e)),
        other => {
            report.problems.push(other);
            Ok(())
        }
    };
    let table = match read_table_manifest(store, table_id, backup_id, expected_sha256) {
        Ok(t) => t,
        Err(e) => {
            damage_or_fail(e, &mut report)?;
            return Ok(report);
        }
    };
    report.objects += 1;
    for p in 0..table.partition_count {
        let m = match read_partition_manifest(store, &table, p) {
            Ok(m) => m,
            Err(e) => {
                damage_or_fail(e, &mut report)?;
                continue;
            }
        };
        report.objects += 1;
        for f in &m.files {
            let Some(stored) = store.get(&f.object)? else {
                report.problems.push(BackupError::Damaged { object: f.object.clone(), detail: format!("is missing (file {} of partition {p})", f.name) });
                continue;
            };
            report.objects += 1;
            report.stored_bytes += stored.len() as u64;
            if let Err(detail) = codec::decode(f, &stored) {
                report.problems.push(BackupError::Damaged { object: f.object.clone(), detail: format!("{detail} (file {} of partition {p})", f.name) });
            }
        }
    }
    Ok(report)
}

/// Fetches, decodes and checks every file of partition manifest `m`, and only then hands each
/// to `write` (name, bytes). The first problem stops it, naming the object.
pub fn restore_partition(store: &dyn ObjectStore, m: &PartitionManifest, write: &mut dyn FnMut(&str, Vec<u8>) -> std::result::Result<(), String>) -> Result<u64> {
    let mut files = Vec::with_capacity(m.files.len());
    for f in &m.files {
        let stored = fetch(store, &f.object)?;
        let bytes = codec::decode(f, &stored).map_err(|detail| BackupError::Damaged { object: f.object.clone(), detail })?;
        files.push((f.name.as_str(), bytes));
    }
    let mut written = 0;
    for (name, bytes) in files {
        written += bytes.len() as u64;
        write(name, bytes).map_err(|detail| BackupError::Source { name: name.to_string(), detail })?;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::FORMAT;
    use crate::object::MemObjectStore;
    use crate::partition::{plan_partition, upload_partition, LocalFile, PartitionJob, Reusable};
    use std::collections::BTreeMap;

    /// A two-partition backup in `store`; answers the table manifest's checksum.
    fn backup(store: &mut MemObjectStore) -> (String, Vec<BTreeMap<String, Vec<u8>>>) {
        let mut entries = Vec::new();
        let mut contents = Vec::new();
        for p in 0..2u32 {
            let files: BTreeMap<String, Vec<u8>> =
                [(format!("00000{p}.sst"), vec![p as u8; 2000]), ("CURRENT".to_string(), b"MANIFEST-000001\n".to_vec())].into_iter().collect();
            let local = files.iter().map(|(n, b)| LocalFile { name: n.clone(), size: b.len() as u64, sha256: sha256_hex(b) }).collect();
            let plan = plan_partition(PartitionJob { table_id: 4, backup_id: 9, partition: p, attempt: 1 }, 10 + p as u64, local, &Reusable::default()).unwrap();
            let (_, entry) = upload_partition(store, &plan, &mut |n| Ok(files[n].clone()), || 1).unwrap();
            entries.push(entry);
            contents.push(files);
        }
        let t = TableManifest { format: FORMAT, backup_id: 9, table_id: 4, table_name: "t".into(), partition_count: 2, started_ms: 0, partitions: entries };
        let encoded = t.encode();
        let sha = sha256_hex(&encoded);
        store.put(&layout::table_manifest_key(4, 9), encoded).unwrap();
        (sha, contents)
    }

    #[test]
    fn a_backup_restores_file_for_file() {
        let mut store = MemObjectStore::default();
        let (sha, contents) = backup(&mut store);
        let table = read_table_manifest(&store, 4, 9, Some(&sha)).unwrap();
        for p in 0..2 {
            let m = read_partition_manifest(&store, &table, p).unwrap();
            assert_eq!(m.decree, 10 + p as u64);
            let mut got = BTreeMap::new();
            restore_partition(&store, &m, &mut |n, b| {
                got.insert(n.to_string(), b);
                Ok(())
            })
            .unwrap();
            assert_eq!(got, contents[p as usize]);
        }
        let report = verify_backup(&store, 4, 9, Some(&sha)).unwrap();
        assert_eq!((report.objects, report.problems.len()), (1 + 2 + 4, 0), "{report:?}");
    }

    #[test]
    fn damage_is_found_and_named_by_verify_and_by_restore() {
        let mut store = MemObjectStore::default();
        let (sha, _) = backup(&mut store);
        let sst = layout::sst_key(4, 9, &sha256_hex(&[1u8; 2000]));
        let mut bytes = store.get(&sst).unwrap().unwrap();
        bytes[100] ^= 0x80;
        store.put(&sst, bytes).unwrap();
        let current0 = layout::file_key(4, 9, 0, 1, "CURRENT");
        store.delete(&current0).unwrap();

        let report = verify_backup(&store, 4, 9, Some(&sha)).unwrap();
        let named: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(named.len(), 2, "{named:?}");
        assert!(named[0].contains(&current0) && named[0].contains("is missing"), "{named:?}");
        assert!(named[1].contains(&sst) && named[1].contains("SHA-256"), "{named:?}");

        let table = read_table_manifest(&store, 4, 9, Some(&sha)).unwrap();
        let m = read_partition_manifest(&store, &table, 1).unwrap();
        let mut written = 0;
        let e = restore_partition(&store, &m, &mut |_, _| {
            written += 1;
            Ok(())
        })
        .unwrap_err();
        assert!(e.to_string().contains(&sst), "{e}");
        assert_eq!(written, 0, "nothing is handed over before every file passed");

        // A table manifest that is not the one the record names.
        let e = read_table_manifest(&store, 4, 9, Some(&"0".repeat(64))).unwrap_err();
        assert!(e.to_string().contains("record holds"), "{e}");
    }
}
