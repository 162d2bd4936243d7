//! What a backup holds, as JSON objects a person can read with `jq`: one manifest per partition
//! (its decree and every file: name, size, SHA-256, object, stored size, encoding) and one per
//! table, written last, which names each partition manifest with its own checksum. The SQL
//! store's record of a complete backup holds the table manifest's checksum, so a restore checks
//! a chain from the record down to every byte.
//!
//! Decoding never trusts the bytes: a manifest that does not parse, names an unsafe file, an
//! object outside its table, a wrong checksum format or an incomplete partition list is an
//! error that says which.

use crate::layout;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub type BackupId = u64;

/// The manifests' format; a reader refuses a later one rather than misreading it.
pub const FORMAT: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Stored as is (SST files: already compressed block by block).
    Raw,
    /// zstd-compressed.
    Zstd,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// The file's name in the checkpoint directory.
    pub name: String,
    /// Its size and SHA-256 (lowercase hex) as a file, before any encoding.
    pub size: u64,
    pub sha256: String,
    /// The object holding it, relative to the target.
    pub object: String,
    /// The object's size.
    pub stored_bytes: u64,
    pub encoding: Encoding,
    /// Uploaded by an earlier backup (which this one shares it with).
    pub reused: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionManifest {
    pub format: u32,
    pub backup_id: BackupId,
    pub table_id: u32,
    pub partition: u32,
    /// Which of the job's hand-outs of the partition uploaded it (layout).
    pub attempt: u32,
    /// The checkpoint holds every mutation up to this decree, and none after it.
    pub decree: u64,
    pub files: Vec<FileEntry>,
    /// Wall time the upload took, ms.
    pub duration_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionEntry {
    pub partition: u32,
    pub attempt: u32,
    pub decree: u64,
    pub manifest: String,
    pub manifest_sha256: String,
    pub manifest_bytes: u64,
    /// Totals of the partition manifest's files: how many, their size, what this backup
    /// uploaded of them (as stored, compressed), and the size of those it reused.
    pub files: u64,
    pub bytes: u64,
    pub new_bytes: u64,
    #[serde(default)]
    pub reused_bytes: u64,
    pub duration_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableManifest {
    pub format: u32,
    pub backup_id: BackupId,
    pub table_id: u32,
    pub table_name: String,
    pub partition_count: u32,
    /// When the backup started (the meta's wall clock), ms since the Unix epoch.
    pub started_ms: u64,
    /// One per partition, in partition order.
    pub partitions: Vec<PartitionEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("manifest {key}: {detail}")]
pub struct ManifestError {
    pub key: String,
    pub detail: String,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lowercase hex, as manifests write checksums (a digest computed piece by piece included).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl PartitionManifest {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a manifest serializes")
    }

    /// Decodes and checks the manifest found at `key`, which must be partition `partition` of
    /// backup `backup_id` of table `table_id`.
    pub fn decode(key: &str, bytes: &[u8], table_id: u32, backup_id: BackupId, partition: u32, attempt: u32) -> Result<PartitionManifest, ManifestError> {
        let fail = |detail: String| ManifestError { key: key.to_string(), detail };
        let m: PartitionManifest = serde_json::from_slice(bytes).map_err(|e| fail(format!("does not parse: {e}")))?;
        if m.format != FORMAT {
            return Err(fail(format!("format {} is not {FORMAT}, the one this build reads (use a newer tandem)", m.format)));
        }
        if (m.table_id, m.backup_id, m.partition, m.attempt) != (table_id, backup_id, partition, attempt) {
            return Err(fail(format!(
                "describes partition {} (attempt {}) of backup {} of table {}, not partition {partition} (attempt {attempt}) of backup {backup_id} of table {table_id}",
                m.partition, m.attempt, m.backup_id, m.table_id
            )));
        }
        let mut names = std::collections::BTreeSet::new();
        for f in &m.files {
            if !layout::is_safe_file_name(&f.name) {
                return Err(fail(format!("names an unsafe file {:?}", f.name)));
            }
            if !names.insert(f.name.as_str()) {
                return Err(fail(format!("lists {} twice", f.name)));
            }
            if !layout::is_sha256_hex(&f.sha256) {
                return Err(fail(format!("the checksum of {} is not a SHA-256 in hex", f.name)));
            }
            if crate::object::validate_key(&f.object).is_err() || layout::owner(table_id, &f.object).is_none() {
                return Err(fail(format!("the object of {} ({:?}) is not one of table {table_id}'s", f.name, f.object)));
            }
            if f.encoding == Encoding::Raw && f.stored_bytes != f.size {
                return Err(fail(format!("{} is stored raw in {} bytes but is {} bytes", f.name, f.stored_bytes, f.size)));
            }
        }
        Ok(m)
    }

    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// Bytes this backup uploaded for the partition (files it did not reuse, as stored).
    pub fn new_bytes(&self) -> u64 {
        self.files.iter().filter(|f| !f.reused).map(|f| f.stored_bytes).sum()
    }

    /// The size of the files an earlier backup uploaded and this one reuses.
    pub fn reused_bytes(&self) -> u64 {
        self.files.iter().filter(|f| f.reused).map(|f| f.size).sum()
    }
}

impl TableManifest {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a manifest serializes")
    }

    /// Decodes and checks the table manifest at `key`: backup `backup_id` of table `table_id`,
    /// one entry for each partition, each naming that partition's manifest.
    pub fn decode(key: &str, bytes: &[u8], table_id: u32, backup_id: BackupId) -> Result<TableManifest, ManifestError> {
        let fail = |detail: String| ManifestError { key: key.to_string(), detail };
        let m: TableManifest = serde_json::from_slice(bytes).map_err(|e| fail(format!("does not parse: {e}")))?;
        if m.format != FORMAT {
            return Err(fail(format!("format {} is not {FORMAT}, the one this build reads (use a newer tandem)", m.format)));
        }
        if (m.table_id, m.backup_id) != (table_id, backup_id) {
            return Err(fail(format!("describes backup {} of table {}, not backup {backup_id} of table {table_id}", m.backup_id, m.table_id)));
        }
        if m.partition_count == 0 || m.partitions.len() != m.partition_count as usize {
            return Err(fail(format!("lists {} partitions of a table of {}", m.partitions.len(), m.partition_count)));
        }
        for (i, p) in m.partitions.iter().enumerate() {
            if p.partition != i as u32 {
                return Err(fail(format!("entry {i} is partition {}", p.partition)));
            }
            if p.manifest != layout::partition_manifest_key(table_id, backup_id, p.partition, p.attempt) {
                return Err(fail(format!("partition {} names manifest {:?}", p.partition, p.manifest)));
            }
            if !layout::is_sha256_hex(&p.manifest_sha256) {
                return Err(fail(format!("the checksum of partition {}'s manifest is not a SHA-256 in hex", p.partition)));
            }
        }
        Ok(m)
    }

    pub fn bytes(&self) -> u64 {
        self.partitions.iter().map(|p| p.bytes).sum()
    }

    pub fn new_bytes(&self) -> u64 {
        self.partitions.iter().map(|p| p.new_bytes).sum()
    }
}

impl PartitionEntry {
    /// The table manifest's entry for a partition manifest stored as `encoded`.
    pub fn of(m: &PartitionManifest, encoded: &[u8]) -> PartitionEntry {
        PartitionEntry {
            partition: m.partition,
            attempt: m.attempt,
            decree: m.decree,
            manifest: layout::partition_manifest_key(m.table_id, m.backup_id, m.partition, m.attempt),
            manifest_sha256: sha256_hex(encoded),
            manifest_bytes: encoded.len() as u64,
            files: m.files.len() as u64,
            bytes: m.bytes(),
            new_bytes: m.new_bytes(),
            reused_bytes: m.reused_bytes(),
            duration_ms: m.duration_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn partition(table_id: u32, backup: BackupId, p: u32) -> PartitionManifest {
        let sha = sha256_hex(b"sst");
        PartitionManifest {
            format: FORMAT,
            backup_id: backup,
            table_id,
            partition: p,
            attempt: 1,
            decree: 40,
            files: vec![
                FileEntry {
                    name: "000009.sst".into(),
                    size: 3,
                    sha256: sha.clone(),
                    object: layout::sst_key(table_id, backup, &sha),
                    stored_bytes: 3,
                    encoding: Encoding::Raw,
                    reused: false,
                },
                FileEntry {
                    name: "CURRENT".into(),
                    size: 16,
                    sha256: sha256_hex(b"MANIFEST-000005\n"),
                    object: layout::file_key(table_id, backup, p, 1, "CURRENT"),
                    stored_bytes: 25,
                    encoding: Encoding::Zstd,
                    reused: false,
                },
            ],
            duration_ms: 5,
        }
    }

    #[test]
    fn manifests_round_trip_and_check_what_they_describe() {
        let m = partition(7, 3, 1);
        let key = layout::partition_manifest_key(7, 3, 1, 1);
        assert_eq!(PartitionManifest::decode(&key, &m.encode(), 7, 3, 1, 1), Ok(m.clone()));
        let e = PartitionManifest::decode(&key, &m.encode(), 7, 3, 2, 1).unwrap_err();
        assert!(e.detail.contains("not partition 2"), "{e}");
        let e = PartitionManifest::decode(&key, &m.encode(), 7, 3, 1, 2).unwrap_err();
        assert!(e.detail.contains("(attempt 2)"), "{e}");
        let e = PartitionManifest::decode(&key, &m.encode()[..20], 7, 3, 1, 1).unwrap_err();
        assert!(e.detail.contains("does not parse"), "{e}");

        let entry = PartitionEntry::of(&m, &m.encode());
        assert_eq!((entry.bytes, entry.new_bytes, entry.files), (19, 28, 2));
        let t = TableManifest { format: FORMAT, backup_id: 3, table_id: 7, table_name: "t".into(), partition_count: 1, started_ms: 1, partitions: vec![PartitionEntry { partition: 0, manifest: layout::partition_manifest_key(7, 3, 0, 1), ..entry }] };
        let key = layout::table_manifest_key(7, 3);
        assert_eq!(TableManifest::decode(&key, &t.encode(), 7, 3), Ok(t.clone()));
        let short = TableManifest { partition_count: 2, ..t.clone() };
        assert!(TableManifest::decode(&key, &short.encode(), 7, 3).unwrap_err().detail.contains("lists 1 partitions of a table of 2"));
        let later = TableManifest { format: 2, ..t };
        assert!(TableManifest::decode(&key, &later.encode(), 7, 3).unwrap_err().detail.contains("use a newer tandem"));
    }

    #[test]
    fn a_manifest_may_not_point_outside_its_table_or_name_unsafe_files() {
        let key = layout::partition_manifest_key(7, 3, 1, 1);
        let mut m = partition(7, 3, 1);
        m.files[0].object = layout::sst_key(8, 3, &m.files[0].sha256);
        assert!(PartitionManifest::decode(&key, &m.encode(), 7, 3, 1, 1).unwrap_err().detail.contains("not one of table 7's"));
        let mut m = partition(7, 3, 1);
        m.files[1].name = "../../etc/passwd".into();
        assert!(PartitionManifest::decode(&key, &m.encode(), 7, 3, 1, 1).unwrap_err().detail.contains("unsafe file"));
        let mut m = partition(7, 3, 1);
        m.files[1].name = m.files[0].name.clone();
        assert!(PartitionManifest::decode(&key, &m.encode(), 7, 3, 1, 1).unwrap_err().detail.contains("twice"));
        let mut m = partition(7, 3, 1);
        m.files[0].stored_bytes = 4;
        assert!(PartitionManifest::decode(&key, &m.encode(), 7, 3, 1, 1).unwrap_err().detail.contains("stored raw"));
    }

    #[test]
    fn sha256_is_the_standard_one() {
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    proptest::proptest! {
        #[test]
        fn decoding_any_bytes_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let _ = PartitionManifest::decode("k", &bytes, 1, 1, 0, 1);
            let _ = TableManifest::decode("k", &bytes, 1, 1);
        }
    }
}
