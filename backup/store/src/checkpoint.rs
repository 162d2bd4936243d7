//! A partition's checkpoint directory to a target and back, on the core's decisions: the
//! replica server calls `upload_checkpoint` for its share of a backup, and `restore_checkpoint`
//! to build a restored partition's database directory. Both block (file IO, and the store's own
//! blocking calls): run them on a blocking thread.

use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::Path;
use std::time::Instant;
use tandem_backup_core::{
    plan_partition, restore_partition, upload_partition, BackupError, LocalFile, ObjectStore, PartitionEntry, PartitionJob, PartitionManifest, Reusable,
};

/// The files of checkpoint directory `dir` with their sizes and SHA-256s, read 1 MiB at a time.
pub fn local_files(dir: &Path) -> Result<Vec<LocalFile>, BackupError> {
    let source = |name: &str, e: std::io::Error| BackupError::Source { name: name.to_string(), detail: e.to_string() };
    let shown = dir.display().to_string();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| source(&shown, e))? {
        let entry = entry.map_err(|e| source(&shown, e))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if !entry.file_type().map_err(|e| source(&name, e))?.is_file() {
            continue;
        }
        let mut f = std::fs::File::open(entry.path()).map_err(|e| source(&name, e))?;
        let (mut hasher, mut size, mut buf) = (Sha256::new(), 0u64, vec![0u8; 1 << 20]);
        loop {
            let n = f.read(&mut buf).map_err(|e| source(&name, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        let sha256 = tandem_backup_core::manifest::hex(&hasher.finalize());
        files.push(LocalFile { name, size, sha256 });
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

/// Uploads checkpoint `dir`, which holds the partition up to `decree`, as `job`'s share of a
/// backup, reusing the SST files the `kept` manifests (of the same partition, from kept
/// complete backups) reference. Answers the partition manifest and its entry.
pub fn upload_checkpoint(
    store: &mut dyn ObjectStore,
    dir: &Path,
    job: PartitionJob,
    decree: u64,
    kept: &[PartitionManifest],
) -> Result<(PartitionManifest, PartitionEntry), BackupError> {
    let started = Instant::now();
    let plan = plan_partition(job, decree, local_files(dir)?, &Reusable::from_manifests(kept))?;
    upload_partition(store, &plan, &mut |name| std::fs::read(dir.join(name)).map_err(|e| e.to_string()), || started.elapsed().as_millis() as u64)
}

/// Restores partition manifest `m` into `dir`, which must not exist: every file is fetched
/// and checked before any is written, then written and fsynced into `dir.partial`, which
/// becomes `dir` only once complete. A failed restore leaves no `dir`. Answers the bytes
/// written.
pub fn restore_checkpoint(store: &dyn ObjectStore, m: &PartitionManifest, dir: &Path) -> Result<u64, BackupError> {
    let fail = |what: &str, path: &Path, e: std::io::Error| BackupError::Source { name: path.display().to_string(), detail: format!("{what}: {e}") };
    if dir.exists() {
        return Err(BackupError::Source { name: dir.display().to_string(), detail: "exists already; a restore writes a new directory".into() });
    }
    let partial = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).map_err(|e| fail("create", &partial, e))?;
    let result = (|| {
        let written = restore_partition(store, m, &mut |name, bytes| {
            let path = partial.join(name);
            let mut f = std::fs::File::create(&path).map_err(|e| format!("create {}: {e}", path.display()))?;
            f.write_all(&bytes).and_then(|()| f.sync_all()).map_err(|e| format!("write {}: {e}", path.display()))
        })?;
        std::fs::File::open(&partial).and_then(|d| d.sync_all()).map_err(|e| fail("fsync", &partial, e))?;
        std::fs::rename(&partial, dir).map_err(|e| fail("rename into place", dir, e))?;
        Ok(written)
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&partial);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RealObjectStore, S3Options, Target};
    use tandem_backup_core::layout;
    use tandem_core::storage::KvEngine;
    use tandem_core::WriteOp;
    use tandem_s3_dev::DevS3;
    use tandem_storage::{EngineMemory, RocksEngine};

    fn put(engine: &mut RocksEngine, decree: u64, keys: std::ops::Range<u32>, tag: u8) {
        let ops: Vec<WriteOp> = keys.map(|k| WriteOp::Put { key: format!("key{k:06}").into_bytes(), value: vec![tag; 200] }).collect();
        engine.apply(decree, decree * 1_000, &ops).unwrap();
    }

    fn everything(engine: &RocksEngine) -> Vec<(Vec<u8>, Vec<u8>)> {
        engine.scan(b"", None, usize::MAX).unwrap()
    }

    /// The backup path end to end on real parts: RocksDB checkpoints, uploaded over HTTP to an
    /// S3 server, the second one incremental, each restored into a database that holds exactly
    /// what the engine held at its decree; and a damaged object stops a restore, named.
    #[test]
    fn rocksdb_checkpoints_back_up_incrementally_and_restore_exactly_over_s3() {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let s3 = runtime.block_on(DevS3::start(&dir.path().join("s3"), &["backups"])).unwrap();
        let options = S3Options {
            endpoint: Some(s3.endpoint()),
            region: Some("us-east-1".into()),
            access_key_id: Some(s3.access_key.clone()),
            secret_access_key: Some(s3.secret_key.clone()),
        };
        let mut store = RealObjectStore::open(&Target::parse("s3://backups/site-a").unwrap(), &options, runtime.handle().clone()).unwrap();
        let memory = EngineMemory::default();
        let mut engine = RocksEngine::open(&dir.path().join("db"), &memory).unwrap();
        for d in 1..=20u64 {
            put(&mut engine, d, (d as u32 - 1) * 100..d as u32 * 100, d as u8);
        }
        let at_first = everything(&engine);
        let decree1 = engine.checkpoint(&dir.path().join("cp1")).unwrap();
        assert_eq!(decree1, 20);
        let job = |backup_id| PartitionJob { table_id: 3, backup_id, partition: 0, attempt: 1 };
        let (m1, e1) = upload_checkpoint(&mut store, &dir.path().join("cp1"), job(1), decree1, &[]).unwrap();
        assert_eq!(e1.new_bytes, m1.files.iter().map(|f| f.stored_bytes).sum::<u64>(), "the first backup uploads everything");

        // More writes, overwrites and deletes; the second backup reuses the first one's SSTs.
        put(&mut engine, 21, 0..50, 99);
        engine.apply(22, 22_000, &[WriteOp::Delete { key: b"key000100".to_vec() }]).unwrap();
        let at_second = everything(&engine);
        assert_ne!(at_first, at_second);
        let decree2 = engine.checkpoint(&dir.path().join("cp2")).unwrap();
        let (m2, e2) = upload_checkpoint(&mut store, &dir.path().join("cp2"), job(2), decree2, std::slice::from_ref(&m1)).unwrap();
        assert!(m2.files.iter().any(|f| f.reused), "{m2:?}");
        assert!(e2.new_bytes * 4 < e1.new_bytes, "second backup uploaded {} bytes, the first {}", e2.new_bytes, e1.new_bytes);

        for (m, expected, decree, name) in [(&m1, &at_first, decree1, "r1"), (&m2, &at_second, decree2, "r2")] {
            let restored = dir.path().join(name);
            restore_checkpoint(&store, m, &restored).unwrap();
            let engine = RocksEngine::open(&restored, &memory).unwrap();
            assert_eq!(engine.last_applied_decree(), decree);
            assert_eq!(&everything(&engine), expected, "{name} holds exactly what the engine held at decree {decree}");
        }

        // One flipped byte in an SST object on the server's disk: the restore names it and
        // leaves nothing behind.
        let sst = m1.files.iter().find(|f| f.name.ends_with(".sst")).unwrap();
        let on_disk = dir.path().join("s3/backups/site-a").join(&sst.object);
        let mut bytes = std::fs::read(&on_disk).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x10;
        std::fs::write(&on_disk, bytes).unwrap();
        let e = restore_checkpoint(&store, &m1, &dir.path().join("r3")).unwrap_err().to_string();
        assert!(e.contains(&sst.object) && e.contains("SHA-256"), "{e}");
        assert!(!dir.path().join("r3").exists() && !dir.path().join("r3.partial").exists());
        assert!(layout::owner(3, &sst.object).is_some());
    }
}
