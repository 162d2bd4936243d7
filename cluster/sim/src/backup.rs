//! Backups in the simulation (docs/backup.md, "Simulated"): the backup target, an in-memory
//! object store with the faults a real one has; the files a simulated engine's checkpoint
//! consists of; and the oracle the drills check restored data against.
//!
//! The protocol is the production code's: the meta machine's jobs, schedule, retention and
//! restores, the host's `Backups`, `tandem_backup_core`'s plan, upload, collection and restore.
//! Only IO is simulated:
//!
//! ```text
//!  meta: WriteBackupManifest ─▶ (store latency) ─▶ put ─▶ BackupManifestWritten
//!        CollectBackupGarbage ─▶ (store latency) ─▶ tandem_backup_core::collect (records read from the machine)
//!  server: BackupPartition ─▶ checkpoint now (flush, files) ─▶ (upload time) ─▶ plan against the kept
//!          manifests, upload_partition ─▶ BackupReported      (a crash may cut it after any put)
//!          RestoreReplica ─▶ (download time) ─▶ manifests, restore_partition ─▶ the database on disk
//!          ─▶ ReplicaRestored | RestoreFailed
//!  object store faults (while faults run): a call fails before it happens (503), or a write
//!          happens and its answer is lost (connection reset)
//! ```
//!
//! What the drills check (`check_complete_backups`, `check_restores`):
//! - every backup whose record says complete restores, partition by partition, to exactly the
//!   state the oracle replays at the decree its manifest names, and `verify_backup` finds
//!   nothing wrong with it;
//! - every restore names a backup that was complete when it started (a backup that is not
//!   complete is never offered);
//! - each member of a restored table's partitions holds exactly that state (none opened empty
//!   or partial).

use crate::hash::Fnv64;
use crate::rng::Rng;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use tandem_backup_core::{BackupState, ObjectError, ObjectStore, MemObjectStore};
use tandem_core::storage::{KvEngine, MemEngine};
use tandem_core::{Decree, Gpid, WriteOp};

/// Where the simulated backups go (one object store per run).
pub const TARGET: &str = "file:///sim-backups";

/// A run's backups: drawn from the seed apart from the rest of its shape, so that a seed's
/// run without backups is the run it was before backups were simulated.
#[derive(Clone, Debug)]
pub struct BackupParams {
    /// The workload table's policy keeps this many complete backups (retention deletes the rest).
    pub keep: u32,
    /// The operator asks for a backup this often (a random time in the range).
    pub now_every_us: (u64, u64),
    /// The operator restores backups into new tables, at most this many times.
    pub restores_max: u32,
    pub faults: ObjectFaults,
    /// An upload is cut by a crash of its server after a random number of puts.
    pub crash_mid_upload: f64,
}

/// What the object store does wrong, per call, while faults run.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ObjectFaults {
    /// A write or delete fails before it happens.
    pub write_fail: f64,
    /// A write or delete happens and its answer is lost.
    pub lost_ack: f64,
    /// A read, head or list fails.
    pub read_fail: f64,
}

impl BackupParams {
    /// Half of the one-site seeds take backups.
    pub fn draw(seed: u64) -> Option<BackupParams> {
        let mut rng = Rng::new(seed ^ 0xb4c4_0b4c_b4c4_0b4c);
        if !rng.chance(0.5) {
            return None;
        }
        let faulty = rng.chance(0.8);
        let rate = |rng: &mut Rng, max: u64| if faulty { rng.range(0, max) as f64 / 1_000.0 } else { 0.0 };
        Some(BackupParams {
            keep: rng.range(1, 3) as u32,
            now_every_us: (1_000_000, rng.range(3_000_000, 8_000_000)),
            restores_max: rng.range(1, 3) as u32,
            faults: ObjectFaults { write_fail: rate(&mut rng, 80), lost_ack: rate(&mut rng, 60), read_fail: rate(&mut rng, 60) },
            crash_mid_upload: if faulty { rng.range(0, 150) as f64 / 1_000.0 } else { 0.0 },
        })
    }
}

/// The object store as one call of a node reaches it: faults drawn from the run's RNG, and
/// optionally a crash of the node after `puts_left` more writes.
pub struct Reach<'a> {
    store: &'a mut MemObjectStore,
    rng: RefCell<&'a mut Rng>,
    faults: ObjectFaults,
    puts_left: Option<usize>,
    /// The node crashed during the call (`puts_left` ran out).
    pub crashed: bool,
    /// Faults injected.
    pub faulted: Cell<u64>,
}

impl<'a> Reach<'a> {
    pub fn new(store: &'a mut MemObjectStore, rng: &'a mut Rng, faults: ObjectFaults, puts_left: Option<usize>) -> Reach<'a> {
        Reach { store, rng: RefCell::new(rng), faults, puts_left, crashed: false, faulted: Cell::new(0) }
    }

    fn fault(&self, p: f64, detail: &str) -> Result<(), ObjectError> {
        if self.rng.borrow_mut().chance(p) {
            self.faulted.set(self.faulted.get() + 1);
            return Err(ObjectError::Unavailable { target: TARGET.into(), detail: format!("{detail} (simulated)") });
        }
        Ok(())
    }

    fn write(&mut self, f: impl FnOnce(&mut MemObjectStore) -> Result<(), ObjectError>) -> Result<(), ObjectError> {
        if self.crashed || self.puts_left == Some(0) {
            self.crashed = true;
            return Err(ObjectError::Unavailable { target: TARGET.into(), detail: "the server crashed mid-upload (simulated)".into() });
        }
        if let Some(n) = self.puts_left.as_mut() {
            *n -= 1;
        }
        self.fault(self.faults.write_fail, "503 Service Unavailable")?;
        f(self.store)?;
        self.fault(self.faults.lost_ack, "connection reset after the request was sent")
    }
}

impl ObjectStore for Reach<'_> {
    fn put(&mut self, key: &str, bytes: Vec<u8>) -> Result<(), ObjectError> {
        self.write(|s| s.put(key, bytes))
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ObjectError> {
        self.fault(self.faults.read_fail, "503 Service Unavailable")?;
        self.store.get(key)
    }

    fn head(&self, key: &str) -> Result<Option<u64>, ObjectError> {
        self.fault(self.faults.read_fail, "503 Service Unavailable")?;
        self.store.head(key)
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, ObjectError> {
        self.fault(self.faults.read_fail, "503 Service Unavailable")?;
        self.store.list(prefix)
    }

    fn delete(&mut self, key: &str) -> Result<(), ObjectError> {
        self.write(|s| s.delete(key))
    }
}

/// The files of a simulated checkpoint: the records in 4 "SST" files by key hash, each named by
/// its content (so an unchanged one is the same file in the next checkpoint, as a RocksDB SST
/// that no compaction touched), and a `MANIFEST-SIM` naming them with the decree.
const SST_FILES: u64 = 4;
pub const MANIFEST_FILE: &str = "MANIFEST-SIM";

fn hash(bytes: &[u8]) -> u64 {
    let mut h = Fnv64::default();
    h.bytes(bytes);
    h.finish()
}

pub fn checkpoint_files(e: &MemEngine) -> Vec<(String, Vec<u8>)> {
    let mut ssts = vec![Vec::new(); SST_FILES as usize];
    for (k, v) in e.data() {
        let sst = &mut ssts[(hash(k) % SST_FILES) as usize];
        for part in [k, v] {
            sst.extend_from_slice(&(part.len() as u32).to_le_bytes());
            sst.extend_from_slice(part);
        }
    }
    let mut manifest = format!("decree {}\nclock_bound_us {}\n", e.last_applied_decree(), e.clock_bound_us());
    let mut files = Vec::new();
    for (i, sst) in ssts.into_iter().enumerate().filter(|(_, s)| !s.is_empty()) {
        let name = format!("{i}-{:016x}.sst", hash(&sst));
        manifest.push_str(&format!("file {name}\n"));
        files.push((name, sst));
    }
    files.push((MANIFEST_FILE.to_string(), manifest.into_bytes()));
    files
}

/// The engine a checkpoint's files hold; an error names what does not parse.
pub fn engine_from_files(files: &BTreeMap<String, Vec<u8>>) -> Result<MemEngine, String> {
    let manifest = files.get(MANIFEST_FILE).ok_or("no MANIFEST-SIM")?;
    let manifest = std::str::from_utf8(manifest).map_err(|_| "MANIFEST-SIM is not text")?;
    let (mut decree, mut clock_bound_us, mut data) = (None, None, BTreeMap::new());
    let mut listed = 0;
    for line in manifest.lines() {
        match line.split_once(' ') {
            Some(("decree", d)) => decree = d.parse::<Decree>().ok(),
            Some(("clock_bound_us", c)) => clock_bound_us = c.parse::<u64>().ok(),
            Some(("file", name)) => {
                listed += 1;
                let mut rest = files.get(name).ok_or_else(|| format!("MANIFEST-SIM names {name}, which is missing"))?.as_slice();
                let take = |rest: &mut &[u8]| -> Result<Vec<u8>, String> {
                    let (len, tail) = rest.split_first_chunk::<4>().ok_or_else(|| format!("{name} is cut short"))?;
                    let len = u32::from_le_bytes(*len) as usize;
                    let part = tail.get(..len).ok_or_else(|| format!("{name} is cut short"))?.to_vec();
                    *rest = &tail[len..];
                    Ok(part)
                };
                while !rest.is_empty() {
                    let (k, v) = (take(&mut rest)?, take(&mut rest)?);
                    if data.insert(k, v).is_some() {
                        return Err(format!("{name} holds a key twice"));
                    }
                }
            }
            _ => return Err(format!("MANIFEST-SIM has a line {line:?}")),
        }
    }
    if listed + 1 != files.len() {
        return Err(format!("{} files, MANIFEST-SIM names {listed}", files.len() - 1));
    }
    match (decree, clock_bound_us) {
        (Some(d), Some(c)) => Ok(MemEngine::from_parts(data, d, c)),
        _ => Err("MANIFEST-SIM lacks the decree or the clock bound".into()),
    }
}

/// Every decree of the workload table's partitions as first applied anywhere (the
/// decree-agreement checker makes sure every other application agrees): replaying decrees
/// 1..=d gives the state committed at d.
#[derive(Debug, Default)]
pub struct Oracle {
    decrees: BTreeMap<Gpid, BTreeMap<Decree, (u64, Vec<WriteOp>)>>,
}

impl Oracle {
    pub fn observe(&mut self, gpid: Gpid, decree: Decree, timestamp_us: u64, ops: Vec<WriteOp>) {
        self.decrees.entry(gpid).or_default().entry(decree).or_insert((timestamp_us, ops));
    }

    pub fn state_at(&self, gpid: Gpid, decree: Decree) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, String> {
        let mut e = MemEngine::default();
        let applied = self.decrees.get(&gpid);
        for d in 1..=decree {
            let (ts, ops) = applied.and_then(|a| a.get(&d)).ok_or_else(|| format!("the oracle never saw decree {d} of {gpid}"))?;
            e.apply(d, *ts, ops).map_err(|e| format!("replaying decree {d} of {gpid}: {e}"))?;
        }
        Ok(e.data().clone())
    }
}

/// Where two states differ, briefly.
pub fn describe_difference(got: &BTreeMap<Vec<u8>, Vec<u8>>, want: &BTreeMap<Vec<u8>, Vec<u8>>) -> String {
    let key = |k: &Vec<u8>| String::from_utf8_lossy(k).into_owned();
    if let Some((k, v)) = want.iter().find(|(k, v)| got.get(*k) != Some(*v)) {
        return match got.get(k) {
            Some(g) => format!("key {} holds {} bytes, committed {} bytes", key(k), g.len(), v.len()),
            None => format!("key {} is missing ({} keys, committed {})", key(k), got.len(), want.len()),
        };
    }
    match got.keys().find(|k| !want.contains_key(*k)) {
        Some(k) => format!("key {} was not committed ({} keys, committed {})", key(k), got.len(), want.len()),
        None => "no difference".into(),
    }
}

/// The database of partition `p` of a backup, fetched and checked the way a restore does.
pub fn restore_engine(store: &dyn ObjectStore, table: &tandem_backup_core::TableManifest, p: u32) -> Result<MemEngine, tandem_backup_core::BackupError> {
    let m = tandem_backup_core::read_partition_manifest(store, table, p)?;
    let mut files = BTreeMap::new();
    tandem_backup_core::restore_partition(store, &m, &mut |name, bytes| {
        files.insert(name.to_string(), bytes);
        Ok(())
    })?;
    engine_from_files(&files).map_err(|detail| tandem_backup_core::BackupError::Damaged { object: m.files.first().map_or(String::new(), |f| f.object.clone()), detail })
}

/// Every backup of table `table_id` whose record says complete restores to exactly the state
/// committed at each partition's decree, that decree at least its floor (what was committed
/// when the backup's record was stored), and verifies clean. Answers how many were checked.
pub fn check_complete_backups(
    store: &MemObjectStore,
    backups: &[tandem_meta_core::backup::BackupInfo],
    table_id: u32,
    oracle: &Oracle,
    floors: &BTreeMap<u64, Vec<Decree>>,
) -> Result<usize, String> {
    let mut checked = 0;
    for b in backups.iter().filter(|b| b.table_id == table_id && b.state == BackupState::Complete) {
        let fail = |what: String| format!("backup {} (complete): {what}", b.id);
        let table = tandem_backup_core::read_table_manifest(store, table_id, b.id, Some(&b.manifest_sha256)).map_err(|e| fail(e.to_string()))?;
        let report = tandem_backup_core::verify_backup(store, table_id, b.id, Some(&b.manifest_sha256)).map_err(|e| fail(e.to_string()))?;
        if let Some(p) = report.problems.first() {
            return Err(fail(format!("verify found {} problems, the first: {p}", report.problems.len())));
        }
        for entry in &table.partitions {
            let gpid = Gpid::new(table_id, entry.partition);
            let engine = restore_engine(store, &table, entry.partition).map_err(|e| fail(e.to_string()))?;
            if engine.last_applied_decree() != entry.decree {
                return Err(fail(format!("partition {} restores at decree {}, its manifest says {}", entry.partition, engine.last_applied_decree(), entry.decree)));
            }
            if let Some(floor) = floors.get(&b.id).and_then(|f| f.get(entry.partition as usize)).filter(|f| entry.decree < **f) {
                return Err(fail(format!("partition {} was backed up at decree {}, before decree {floor}, committed when the backup started", entry.partition, entry.decree)));
            }
            let want = oracle.state_at(gpid, entry.decree).map_err(fail)?;
            if *engine.data() != want {
                return Err(fail(format!("partition {} at decree {} is not what was committed: {}", entry.partition, entry.decree, describe_difference(engine.data(), &want))));
            }
        }
        checked += 1;
    }
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(keys: std::ops::Range<u32>, decree: Decree) -> MemEngine {
        let mut e = MemEngine::default();
        let ops: Vec<WriteOp> = keys.map(|k| WriteOp::Put { key: format!("k{k}").into_bytes(), value: vec![k as u8; 3] }).collect();
        e.apply(decree, 7, &ops).unwrap();
        e
    }

    #[test]
    fn checkpoint_files_round_trip_and_unchanged_ssts_keep_their_names() {
        let a = engine(0..50, 1);
        let files = checkpoint_files(&a);
        let back = engine_from_files(&files.iter().cloned().collect()).unwrap();
        assert_eq!((back.data(), back.last_applied_decree(), back.clock_bound_us()), (a.data(), 1, a.clock_bound_us()));

        let mut b = a.clone();
        b.apply(2, 8, &[WriteOp::Put { key: b"k1".to_vec(), value: b"new".to_vec() }]).unwrap();
        let names = |f: &[(String, Vec<u8>)]| f.iter().map(|(n, _)| n.clone()).filter(|n| n.ends_with(".sst")).collect::<std::collections::BTreeSet<_>>();
        let same = names(&files).intersection(&names(&checkpoint_files(&b))).count();
        assert_eq!(same, SST_FILES as usize - 1, "one SST changed, the other three are the same files");

        let mut damaged: BTreeMap<String, Vec<u8>> = files.into_iter().collect();
        let sst = damaged.keys().find(|n| n.ends_with(".sst")).unwrap().clone();
        damaged.get_mut(&sst).unwrap().pop();
        assert!(engine_from_files(&damaged).unwrap_err().contains("cut short"));
        damaged.remove(&sst);
        assert!(engine_from_files(&damaged).unwrap_err().contains("missing"));
    }

    #[test]
    fn the_oracle_replays_to_a_decree_and_names_a_gap() {
        let g = Gpid::new(1, 0);
        let mut o = Oracle::default();
        o.observe(g, 1, 5, vec![WriteOp::Put { key: b"a".to_vec(), value: b"1".to_vec() }]);
        o.observe(g, 2, 6, vec![WriteOp::Delete { key: b"a".to_vec() }]);
        o.observe(g, 4, 6, vec![]);
        assert_eq!(o.state_at(g, 1).unwrap().len(), 1);
        assert!(o.state_at(g, 2).unwrap().is_empty());
        assert!(o.state_at(g, 4).unwrap_err().contains("decree 3"));
    }

    #[test]
    fn a_crash_mid_upload_stops_the_writes_and_faults_are_counted() {
        let mut store = MemObjectStore::default();
        let mut rng = Rng::new(1);
        let mut reach = Reach::new(&mut store, &mut rng, ObjectFaults::default(), Some(1));
        reach.put("a/1", vec![1]).unwrap();
        assert!(reach.put("a/2", vec![2]).is_err() && reach.crashed);
        let mut rng = Rng::new(2);
        let all = ObjectFaults { write_fail: 0.0, lost_ack: 1.0, read_fail: 1.0 };
        let mut reach = Reach::new(&mut store, &mut rng, all, None);
        assert!(reach.put("a/3", vec![3]).is_err(), "the answer is lost");
        assert!(reach.get("a/3").is_err());
        assert_eq!(reach.faulted.get(), 2);
        assert_eq!(store.list("a").unwrap().len(), 2, "the write whose answer was lost happened; the one after the crash did not");
    }
}
