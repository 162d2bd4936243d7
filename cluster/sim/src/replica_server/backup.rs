//! Backups on a simulated replica server: the uploads and restores its host starts, carried out
//! against the simulated backup target (`crate::backup`) as `cluster/replica/src/backup.rs`
//! carries them out against a real one — checkpoint, plan against the kept backups' manifests,
//! upload, report; table and partition manifests, every file fetched and checked, the database
//! into place, report. No decision is made here: which uploads run, and when a restored replica
//! opens, is the host's.

use super::*;
use crate::backup::{ObjectFaults, Reach, checkpoint_files, restore_engine};
use tandem_backup_core::manifest::sha256_hex;
use tandem_backup_core::{
    BackupError, BackupTask, BackupTaskReport, LocalFile, MemObjectStore, ObjectStore, PartitionEntry, PartitionReport, RestoreSource, Reusable, plan_partition,
    read_partition_manifest, read_table_manifest, upload_partition,
};

/// An upload or a restore waiting for its time.
#[derive(Clone, Debug)]
pub enum ObjectWork {
    /// The checkpoint was taken when the host started the upload: its decree and files.
    Upload { task: BackupTask, decree: Decree, files: Vec<(String, Vec<u8>)> },
    Restore { gpid: Gpid, source: RestoreSource },
}

impl ReplicaServer {
    /// `BackupPartition`: the checkpoint is taken now (a flush, then its files, as the runtime
    /// hard-links them); the upload runs later, unless a crash or a cancel comes first.
    pub(super) fn start_upload(&mut self, io: &mut Io<'_>, task: BackupTask, inputs: &mut VecDeque<HostInput>) {
        let Some(engine) = self.engines.get(&task.gpid) else {
            let report = PartitionReport::Failed(format!("partition {} is not open on this server", task.gpid));
            inputs.push_back(HostInput::BackupReported(BackupTaskReport { backup_id: task.backup_id, gpid: task.gpid, attempt: task.attempt, report }));
            return;
        };
        engine.flush();
        let checkpoint = engine.checkpoint();
        let files = checkpoint_files(&checkpoint);
        self.uploads.insert((task.backup_id, task.gpid, task.attempt));
        let delay = io.rng.range(1_000, 3_000_000);
        let work = ObjectWork::Upload { task, decree: checkpoint.last_applied_decree(), files };
        io.timer(delay, Event::ReplicaObjects { node: self.index, incarnation: self.incarnation, work });
    }

    /// An upload or a restore runs against the target. `crash_after_puts`: the server crashes
    /// after that many writes of the upload; answers whether it did (the caller crashes it).
    pub fn on_objects(&mut self, io: &mut Io<'_>, objects: &mut MemObjectStore, faults: ObjectFaults, crash_after_puts: Option<usize>, work: ObjectWork) -> bool {
        match work {
            ObjectWork::Upload { task, decree, files } => {
                let key = (task.backup_id, task.gpid, task.attempt);
                if !self.uploads.contains(&key) {
                    return false;
                }
                let mut reach = Reach::new(objects, io.rng, faults, crash_after_puts);
                let result = upload(&mut reach, &task, decree, &files);
                let (crashed, faulted) = (reach.crashed, reach.faulted.get());
                if faulted > 0 {
                    io.stats.path(path::OBJECT_FAULT);
                }
                if crashed {
                    return true;
                }
                self.uploads.remove(&key);
                let me = self.me.clone();
                let report = match result {
                    Ok(entry) => {
                        io.stats.path(path::BACKUP_PARTITION_UPLOADED);
                        io.note(|| format!("{me} {}: backup {} attempt {} uploaded at decree {decree}", task.gpid, task.backup_id, task.attempt));
                        PartitionReport::Done(entry)
                    }
                    Err(why) => {
                        io.note(|| format!("{me} {}: backup {} attempt {} failed: {why}", task.gpid, task.backup_id, task.attempt));
                        PartitionReport::Failed(why)
                    }
                };
                host_step!(self, io, HostInput::BackupReported(BackupTaskReport { backup_id: task.backup_id, gpid: task.gpid, attempt: task.attempt, report }));
                false
            }
            ObjectWork::Restore { gpid, source } => {
                let input = if self.disk_engines.contains_key(&gpid) {
                    // Restored before a restart: the database is in place.
                    HostInput::ReplicaRestored { gpid }
                } else {
                    let reach = Reach::new(objects, io.rng, faults, None);
                    let result = restore(&reach, gpid, &source);
                    if reach.faulted.get() > 0 {
                        io.stats.path(path::OBJECT_FAULT);
                    }
                    let me = self.me.clone();
                    match result {
                        Ok(engine) => {
                            io.stats.path(path::REPLICA_RESTORED);
                            let decree = engine.last_applied_decree();
                            io.note(|| format!("{me} {gpid}: restored from backup {} at decree {decree}", source.backup_id));
                            self.disk_engines.insert(gpid, SimEngine::from_checkpoint(engine));
                            HostInput::ReplicaRestored { gpid }
                        }
                        Err((error, permanent)) => {
                            io.note(|| format!("{me} {gpid}: restoring from backup {} failed{}: {error}", source.backup_id, if permanent { " for good" } else { "" }));
                            HostInput::RestoreFailed { gpid, error, permanent }
                        }
                    }
                };
                host_step!(self, io, input);
                false
            }
        }
    }
}

/// The upload of one partition: reuse from the kept backups' manifests (one that cannot be
/// read is skipped: reuse saves uploads, it is never needed), plan, upload, partition manifest.
fn upload(store: &mut dyn ObjectStore, task: &BackupTask, decree: Decree, files: &[(String, Vec<u8>)]) -> Result<PartitionEntry, String> {
    let kept: Vec<_> = task
        .kept
        .iter()
        .filter_map(|(id, sha)| read_table_manifest(store, task.gpid.table_id, *id, Some(sha)).and_then(|t| read_partition_manifest(store, &t, task.gpid.partition)).ok())
        .collect();
    let local = files.iter().map(|(name, b)| LocalFile { name: name.clone(), size: b.len() as u64, sha256: sha256_hex(b) }).collect();
    let plan = plan_partition(task.partition_job(), decree, local, &Reusable::from_manifests(&kept)).map_err(|e| e.to_string())?;
    let mut read = |name: &str| files.iter().find(|(n, _)| n == name).map(|(_, b)| b.clone()).ok_or_else(|| "not in the checkpoint".to_string());
    upload_partition(store, &plan, &mut read, || 0).map(|(_, entry)| entry).map_err(|e| e.to_string())
}

/// The database of `gpid` from `source`, every file checked. An error is permanent when the
/// backup itself is damaged, as the runtime classifies it.
fn restore(store: &dyn ObjectStore, gpid: Gpid, source: &RestoreSource) -> Result<tandem_core::storage::MemEngine, (String, bool)> {
    let classify = |e: BackupError| {
        let permanent = matches!(e, BackupError::Damaged { .. } | BackupError::Manifest(_));
        (e.to_string(), permanent)
    };
    let table = read_table_manifest(store, source.source_table_id, source.backup_id, Some(&source.manifest_sha256)).map_err(classify)?;
    restore_engine(store, &table, gpid.partition).map_err(classify)
}
