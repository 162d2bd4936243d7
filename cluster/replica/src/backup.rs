//! Backup uploads on this server: what the host's `BackupPartition` and `CancelBackup` ask for;
//! and restores: `RestoreReplica` builds a new replica's database from a backup.
//! An upload checkpoints the replica's engine (hard links, after a flush) into its own
//! directory, plans it against the kept backups' manifests, uploads what the target lacks under
//! the task's attempt, writes the partition manifest, reports the entry, and deletes the
//! checkpoint. Every upload of the server shares one throttle, and reports its progress about
//! once a second. The decisions (what to upload, how a file is stored, which attempt runs) are
//! the backup core's and the host's; this only moves bytes.

use crate::node::Node;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tandem_backup_core::{
    plan_partition, read_partition_manifest, read_table_manifest, upload_partition, BackupId, BackupTask, BackupTaskReport, PartitionManifest, PartitionReport,
    Reusable,
};
use tandem_backup_store::{RealObjectStore, Target};
use tandem_core::Gpid;
use tandem_host::HostInput;

/// How often a running upload reports its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

type RunKey = (BackupId, Gpid, u32);

/// The uploads running on this server, each with its cancel flag, and their shared throttle.
pub struct Uploads {
    running: Mutex<HashMap<RunKey, Arc<AtomicBool>>>,
    throttle: Arc<Throttle>,
}

impl Uploads {
    pub fn new(bytes_per_sec: u64) -> Uploads {
        Uploads { running: Mutex::new(HashMap::new()), throttle: Arc::new(Throttle::new(bytes_per_sec)) }
    }

    pub fn cancel(&self, backup_id: BackupId, gpid: Gpid, attempt: u32) {
        if let Some(flag) = self.running.lock().expect("uploads lock").get(&(backup_id, gpid, attempt)) {
            flag.store(true, Ordering::Relaxed);
        }
    }
}

/// A token bucket over bytes read for upload, shared by every upload of the server; a second's
/// worth of burst.
struct Throttle {
    bytes_per_sec: u64,
    state: Mutex<(Instant, f64)>,
}

impl Throttle {
    fn new(bytes_per_sec: u64) -> Throttle {
        Throttle { bytes_per_sec, state: Mutex::new((Instant::now(), bytes_per_sec as f64)) }
    }

    /// Takes `n` bytes of budget, pausing the calling (blocking) thread until they are there.
    fn take(&self, n: u64) {
        if self.bytes_per_sec == 0 {
            return;
        }
        let rate = self.bytes_per_sec as f64;
        let pause = {
            let mut state = self.state.lock().expect("throttle lock");
            let (last, budget) = &mut *state;
            let now = Instant::now();
            *budget = (*budget + now.duration_since(*last).as_secs_f64() * rate).min(rate);
            *last = now;
            *budget -= n as f64;
            if *budget >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-*budget / rate) }
        };
        // Rate limiting, not waiting for a condition: the budget is there after this long.
        std::thread::sleep(pause);
    }
}

impl Node {
    /// Starts the upload of `task` on a blocking thread; it reports through the host.
    pub(crate) fn start_backup(self: &Arc<Self>, task: BackupTask) {
        let key = (task.backup_id, task.gpid, task.attempt);
        let cancelled = Arc::new(AtomicBool::new(false));
        self.uploads.running.lock().expect("uploads lock").insert(key, cancelled.clone());
        let node = self.clone();
        tokio::task::spawn_blocking(move || {
            let report = match node.upload(&task, &cancelled) {
                Ok(entry) => {
                    tracing::info!(backup = task.backup_id, gpid = %task.gpid, attempt = task.attempt, bytes = entry.bytes, new_bytes = entry.new_bytes, decree = entry.decree, "partition backed up");
                    PartitionReport::Done(entry)
                }
                Err(why) => {
                    tracing::warn!(backup = task.backup_id, gpid = %task.gpid, attempt = task.attempt, "partition backup failed: {why}");
                    PartitionReport::Failed(why)
                }
            };
            node.uploads.running.lock().expect("uploads lock").remove(&key);
            node.host_step(HostInput::BackupReported(BackupTaskReport { backup_id: task.backup_id, gpid: task.gpid, attempt: task.attempt, report }));
        });
    }

    /// Blocking. The checkpoint directory is deleted whatever happens.
    fn upload(self: &Arc<Self>, task: &BackupTask, cancelled: &AtomicBool) -> Result<tandem_backup_core::PartitionEntry, String> {
        let started = Instant::now();
        let gpid = task.gpid;
        let engine = self.replica(gpid).and_then(|h| h.engine()).ok_or_else(|| format!("partition {gpid} is not open on this server"))?;
        let dir = self.opts.data_dir.join("backups").join(format!("{}.{}-{}-{}", gpid.table_id, gpid.partition, task.backup_id, task.attempt));
        // A run of this attempt in an earlier life of the server may have left it.
        let _ = std::fs::remove_dir_all(&dir);
        let result = (|| {
            // Without the engine's lock: the replica's writes go on while it flushes (the decree
            // is read back from the checkpoint).
            let decree = engine.with(|e| e.checkpointer()).checkpoint(&dir).map_err(|e| format!("checkpoint: {e}"))?;
            let target = Target::parse(&task.target).map_err(|e| e.to_string())?;
            let mut store = RealObjectStore::open(&target, &self.opts.s3, tokio::runtime::Handle::current()).map_err(|e| e.to_string())?;
            let kept = kept_manifests(&store, task);
            let files = tandem_backup_store::checkpoint::local_files(&dir).map_err(|e| e.to_string())?;
            let plan = plan_partition(task.partition_job(), decree, files, &Reusable::from_manifests(&kept)).map_err(|e| e.to_string())?;
            let total = plan.upload_bytes();
            let (mut done, mut reported) = (0u64, Instant::now());
            let mut read = |name: &str| -> Result<Vec<u8>, String> {
                if cancelled.load(Ordering::Relaxed) {
                    return Err("cancelled: the meta no longer hands this attempt out".into());
                }
                let path: PathBuf = dir.join(name);
                let bytes = std::fs::read(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
                self.uploads.throttle.take(bytes.len() as u64);
                done += bytes.len() as u64;
                if reported.elapsed() >= PROGRESS_EVERY {
                    reported = Instant::now();
                    let report = PartitionReport::Progress { bytes_done: done, bytes_total: total };
                    self.host_step(HostInput::BackupReported(BackupTaskReport { backup_id: task.backup_id, gpid, attempt: task.attempt, report }));
                }
                Ok(bytes)
            };
            let (_, entry) = upload_partition(&mut store, &plan, &mut read, || started.elapsed().as_millis() as u64).map_err(|e| e.to_string())?;
            Ok(entry)
        })();
        let _ = std::fs::remove_dir_all(&dir);
        result
    }
}

impl Node {
    /// Builds the database of `gpid` from `source` on a blocking thread, then reports
    /// `ReplicaRestored` (or `OpenFailed`: nothing is left, the next beacon answer asks again).
    pub(crate) fn start_restore(self: &Arc<Self>, gpid: Gpid, source: tandem_backup_core::RestoreSource) {
        let node = self.clone();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let input = match node.restore(gpid, &source) {
                Ok(bytes) => {
                    tracing::info!(restore = source.restore_id, %gpid, backup = source.backup_id, bytes, took = ?started.elapsed(), "replica restored from backup");
                    HostInput::ReplicaRestored { gpid }
                }
                Err((error, permanent)) => {
                    let next = if permanent { "the backup is damaged: the restore fails" } else { "retried at the next beacon" };
                    tracing::warn!(restore = source.restore_id, %gpid, backup = source.backup_id, "restoring the replica failed ({next}): {error}");
                    HostInput::RestoreFailed { gpid, error, permanent }
                }
            };
            node.host_step(input);
        });
    }

    /// Blocking. Reads the table manifest under the record's checksum and the partition's
    /// manifest, then `restore_checkpoint` writes the database into the replica's directory
    /// only once every file is fetched and checked. A database already there (a restore that
    /// finished before the server restarted) is kept.
    /// An error is permanent when the backup itself is damaged (missing or corrupt objects,
    /// manifests that do not check); the target being unreachable or a local file error is not.
    fn restore(&self, gpid: Gpid, source: &tandem_backup_core::RestoreSource) -> Result<u64, (String, bool)> {
        use tandem_backup_core::BackupError;
        let classify = |e: BackupError| {
            let permanent = matches!(e, BackupError::Damaged { .. } | BackupError::Manifest(_));
            (e.to_string(), permanent)
        };
        let db = crate::node::replica_dir(&self.opts.data_dir, gpid).join("db");
        if db.exists() {
            return Ok(0);
        }
        let target = Target::parse(&source.target).map_err(|e| (e.to_string(), true))?;
        let store = RealObjectStore::open(&target, &self.opts.s3, tokio::runtime::Handle::current()).map_err(|e| (e.to_string(), false))?;
        let table = read_table_manifest(&store, source.source_table_id, source.backup_id, Some(&source.manifest_sha256)).map_err(classify)?;
        let manifest = read_partition_manifest(&store, &table, gpid.partition).map_err(classify)?;
        tandem_backup_store::checkpoint::restore_checkpoint(&store, &manifest, &db).map_err(classify)
    }
}

/// The partition's manifests in the kept backups the task names, each checked from the table
/// manifest's checksum down. One that cannot be read is skipped: reuse saves uploads, it is
/// never needed for a correct backup.
fn kept_manifests(store: &RealObjectStore, task: &BackupTask) -> Vec<PartitionManifest> {
    let mut kept = Vec::new();
    for (id, sha) in &task.kept {
        let read = read_table_manifest(store, task.gpid.table_id, *id, Some(sha)).and_then(|table| read_partition_manifest(store, &table, task.gpid.partition));
        match read {
            Ok(m) => kept.push(m),
            Err(e) => tracing::warn!(backup = task.backup_id, kept = id, "not reusing the files of backup {id}: {e}"),
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_throttle_holds_the_rate_after_its_burst() {
        let t = Throttle::new(1 << 20);
        let started = Instant::now();
        // A second's burst, then 2 MiB more at 1 MiB/s.
        for _ in 0..12 {
            t.take(256 << 10);
        }
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(1_900), "3 MiB at 1 MiB/s with 1 MiB of burst took {took:?}");
        let unlimited = Throttle::new(0);
        let started = Instant::now();
        unlimited.take(u64::MAX);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
