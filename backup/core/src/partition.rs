//! One partition's share of a backup: from the files of a checkpoint taken at a known decree,
//! the plan of what to upload (SST files not already held by a kept backup, raw and
//! content-addressed; every other file compressed), and the partition manifest once the
//! uploads are done. `upload_partition` carries a plan out against any `ObjectStore`: the
//! simulator's twin, or the real target from a replica server.

use crate::codec;
use crate::error::{BackupError, Result};
use crate::layout;
use crate::manifest::{BackupId, Encoding, FileEntry, PartitionEntry, PartitionManifest, FORMAT};
use crate::object::ObjectStore;
use std::collections::BTreeMap;

/// A file of the checkpoint, as the uploader found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalFile {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

/// SST files that kept, complete backups of the partition already hold, by checksum and size.
/// Only those may be reused: see `layout` for why an object merely present is not enough.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reusable(BTreeMap<(String, u64), FileEntry>);

impl Reusable {
    pub fn from_manifests<'a>(kept: impl IntoIterator<Item = &'a PartitionManifest>) -> Reusable {
        let mut all = BTreeMap::new();
        for m in kept {
            for f in m.files.iter().filter(|f| f.encoding == Encoding::Raw && is_sst(&f.name)) {
                all.entry((f.sha256.clone(), f.size)).or_insert_with(|| f.clone());
            }
        }
        Reusable(all)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// SST files never change once written: they are stored raw (their blocks are compressed
/// already) under their checksum, and shared between backups.
pub fn is_sst(name: &str) -> bool {
    name.ends_with(".sst")
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedFile {
    pub local: LocalFile,
    pub object: String,
    pub encoding: Encoding,
    /// Some(stored bytes) when an earlier backup holds it: nothing to upload.
    pub reused: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionPlan {
    pub table_id: u32,
    pub backup_id: BackupId,
    pub partition: u32,
    pub attempt: u32,
    pub decree: u64,
    pub files: Vec<PlannedFile>,
}

/// The partition a plan is for: attempt `attempt` of partition `partition` of backup
/// `backup_id` of table `table_id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionJob {
    pub table_id: u32,
    pub backup_id: BackupId,
    pub partition: u32,
    pub attempt: u32,
}

/// What to upload for `job`, from its checkpoint at `decree` holding `files`.
pub fn plan_partition(job: PartitionJob, decree: u64, mut files: Vec<LocalFile>, reusable: &Reusable) -> Result<PartitionPlan> {
    let PartitionJob { table_id, backup_id, partition, attempt } = job;
    files.sort_by(|a, b| a.name.cmp(&b.name));
    let mut planned = Vec::with_capacity(files.len());
    for local in files {
        if !layout::is_safe_file_name(&local.name) {
            return Err(BackupError::Source { name: local.name, detail: "has a name that cannot be backed up".into() });
        }
        if planned.last().is_some_and(|p: &PlannedFile| p.local.name == local.name) {
            return Err(BackupError::Source { name: local.name, detail: "is listed twice".into() });
        }
        if !layout::is_sha256_hex(&local.sha256) {
            return Err(BackupError::Source { name: local.name, detail: "has a checksum that is not a SHA-256 in hex".into() });
        }
        let file = if is_sst(&local.name) {
            match reusable.0.get(&(local.sha256.clone(), local.size)) {
                Some(kept) => PlannedFile { object: kept.object.clone(), encoding: Encoding::Raw, reused: Some(kept.stored_bytes), local },
                None => PlannedFile { object: layout::sst_key(table_id, backup_id, &local.sha256), encoding: Encoding::Raw, reused: None, local },
            }
        } else {
            PlannedFile { object: layout::file_key(table_id, backup_id, partition, attempt, &local.name), encoding: Encoding::Zstd, reused: None, local }
        };
        planned.push(file);
    }
    Ok(PartitionPlan { table_id, backup_id, partition, attempt, decree, files: planned })
}

impl PartitionPlan {
    /// The files to upload, in name order.
    pub fn uploads(&self) -> impl Iterator<Item = &PlannedFile> {
        self.files.iter().filter(|f| f.reused.is_none())
    }

    pub fn upload_bytes(&self) -> u64 {
        self.uploads().map(|f| f.local.size).sum()
    }

    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.local.size).sum()
    }

    /// The manifest once every upload is done: `stored` has each uploaded file's object size
    /// by name.
    pub fn manifest(&self, stored: &BTreeMap<String, u64>, duration_ms: u64) -> Result<PartitionManifest> {
        let mut files = Vec::with_capacity(self.files.len());
        for f in &self.files {
            let stored_bytes = match f.reused {
                Some(n) => n,
                None => *stored
                    .get(&f.local.name)
                    .ok_or_else(|| BackupError::Source { name: f.local.name.clone(), detail: "was not uploaded".into() })?,
            };
            files.push(FileEntry {
                name: f.local.name.clone(),
                size: f.local.size,
                sha256: f.local.sha256.clone(),
                object: f.object.clone(),
                stored_bytes,
                encoding: f.encoding,
                reused: f.reused.is_some(),
            });
        }
        Ok(PartitionManifest {
            format: FORMAT,
            backup_id: self.backup_id,
            table_id: self.table_id,
            partition: self.partition,
            attempt: self.attempt,
            decree: self.decree,
            files,
            duration_ms,
        })
    }
}

/// Encodes a planned file's bytes and checks they are still what the plan was made from (a
/// checkpoint's files never change; if one did, the backup must not record it).
pub fn encode_planned(f: &PlannedFile, bytes: &[u8]) -> Result<Vec<u8>> {
    if bytes.len() as u64 != f.local.size || crate::manifest::sha256_hex(bytes) != f.local.sha256 {
        return Err(BackupError::Source { name: f.local.name.clone(), detail: "changed after the backup planned it".into() });
    }
    Ok(codec::encode(f.encoding, bytes))
}

/// Uploads what `plan` says to `store`, reading files through `read`, then writes the
/// partition manifest. Answers the manifest and its entry for the table manifest.
pub fn upload_partition(
    store: &mut dyn ObjectStore,
    plan: &PartitionPlan,
    read: &mut dyn FnMut(&str) -> std::result::Result<Vec<u8>, String>,
    duration_ms: impl FnOnce() -> u64,
) -> Result<(PartitionManifest, PartitionEntry)> {
    let mut stored = BTreeMap::new();
    for f in plan.uploads() {
        let bytes = read(&f.local.name).map_err(|detail| BackupError::Source { name: f.local.name.clone(), detail })?;
        let encoded = encode_planned(f, &bytes)?;
        stored.insert(f.local.name.clone(), encoded.len() as u64);
        store.put(&f.object, encoded)?;
    }
    let manifest = plan.manifest(&stored, duration_ms())?;
    let encoded = manifest.encode();
    let entry = PartitionEntry::of(&manifest, &encoded);
    store.put(&entry.manifest, encoded)?;
    Ok((manifest, entry))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::sha256_hex;
    use crate::object::MemObjectStore;

    fn job(table_id: u32, backup_id: BackupId, partition: u32) -> PartitionJob {
        PartitionJob { table_id, backup_id, partition, attempt: 1 }
    }

    fn local(name: &str, bytes: &[u8]) -> LocalFile {
        LocalFile { name: name.into(), size: bytes.len() as u64, sha256: sha256_hex(bytes) }
    }

    fn checkpoint(files: &[(&str, &[u8])]) -> (Vec<LocalFile>, BTreeMap<String, Vec<u8>>) {
        (files.iter().map(|(n, b)| local(n, b)).collect(), files.iter().map(|(n, b)| (n.to_string(), b.to_vec())).collect())
    }

    #[test]
    fn ssts_are_reused_only_from_kept_backups_and_other_files_are_compressed() {
        let mut store = MemObjectStore::default();
        let (files, bytes) = checkpoint(&[("000007.sst", &[7; 1000]), ("000008.sst", &[8; 500]), ("MANIFEST-000005", &[5; 300]), ("CURRENT", b"MANIFEST-000005\n")]);
        let plan = plan_partition(job(1, 10, 0), 99, files, &Reusable::default()).unwrap();
        assert_eq!(plan.uploads().count(), 4);
        let (first, entry) = upload_partition(&mut store, &plan, &mut |n| Ok(bytes[n].clone()), || 3).unwrap();
        assert_eq!((entry.files, entry.bytes, entry.decree), (4, 1000 + 500 + 300 + 16, 99));
        assert_eq!(first.files[0].name, "000007.sst");
        assert_eq!(first.files[0].object, layout::sst_key(1, 10, &sha256_hex(&[7; 1000])));
        assert_eq!(first.files[0].stored_bytes, 1000);
        let manifest_file = first.files.iter().find(|f| f.name == "MANIFEST-000005").unwrap();
        assert_eq!(manifest_file.encoding, Encoding::Zstd);
        assert!(manifest_file.stored_bytes < 300, "300 equal bytes compress");

        // The next backup: one SST kept, one new; only the new one and the small files upload.
        let (files, bytes) = checkpoint(&[("000007.sst", &[7; 1000]), ("000011.sst", &[11; 800]), ("MANIFEST-000012", &[5; 310]), ("CURRENT", b"MANIFEST-000012\n")]);
        let plan = plan_partition(job(1, 11, 0), 150, files, &Reusable::from_manifests([&first])).unwrap();
        let uploads: Vec<&str> = plan.uploads().map(|f| f.local.name.as_str()).collect();
        assert_eq!(uploads, ["000011.sst", "CURRENT", "MANIFEST-000012"]);
        let (second, entry) = upload_partition(&mut store, &plan, &mut |n| Ok(bytes[n].clone()), || 3).unwrap();
        assert!(second.files[0].reused && second.files[0].object == first.files[0].object);
        assert_eq!(entry.new_bytes, second.files.iter().filter(|f| !f.reused).map(|f| f.stored_bytes).sum::<u64>());
        assert!(entry.new_bytes < entry.bytes - 1000);
    }

    #[test]
    fn a_file_that_changed_after_planning_is_not_recorded() {
        let mut store = MemObjectStore::default();
        let (files, _) = checkpoint(&[("000007.sst", &[7; 100])]);
        let plan = plan_partition(job(1, 10, 0), 5, files, &Reusable::default()).unwrap();
        let e = upload_partition(&mut store, &plan, &mut |_| Ok(vec![6; 100]), || 0).unwrap_err();
        assert!(e.to_string().contains("changed after the backup planned it"), "{e}");
        assert!(store.list(&layout::partition_manifest_key(1, 10, 0, 1)).unwrap().is_empty(), "no manifest for a failed upload");
    }

    #[test]
    fn unsafe_or_duplicate_names_are_refused() {
        let e = plan_partition(job(1, 1, 0), 1, vec![local("../x", b"")], &Reusable::default()).unwrap_err();
        assert!(e.to_string().contains("cannot be backed up"), "{e}");
        let e = plan_partition(job(1, 1, 0), 1, vec![local("a.sst", b""), local("a.sst", b"")], &Reusable::default()).unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
    }
}
