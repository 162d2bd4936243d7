//! `RocksEngine`: the RocksDB instance of one replica, behind `tandem_core::storage::KvEngine`.
//!
//! Two column families: `default` holds stored keys and values, `meta` holds
//! `last_applied_decree`. Each applied decree is one write batch over both, so the data and
//! the decree it reflects can never disagree.
//!
//! RocksDB's own WAL is disabled: the server's `MutationLog` is the only write-ahead log, and
//! writing every mutation twice would halve write throughput for nothing. The price is that
//! RocksDB's memtables are lost on a crash, so what survives is exactly what was last flushed;
//! `atomic_flush` makes every flush cover both column families up to the same write, so
//! `last_applied_decree` read at `open` is the decree of the flushed data, never ahead of or
//! behind it. After a crash the replica replays its mutation log from that decree + 1, which is
//! why log GC may only drop what `durable_decree()` covers: `last_applied_decree` read from the
//! files alone (RocksDB's persisted read tier skips memtables while the WAL is off), so it
//! learns RocksDB's own flushes as well as ours. A clean close flushes the
//! memtables (RocksDB does so at shutdown when the WAL is off), so a clean restart replays
//! nothing.
//!
//! A compaction filter ("tandem-ttl") drops values whose expire_ts has passed, so expired data
//! stops costing disk space without anyone deleting it.
//!
//! Every engine of a server shares one [`EngineMemory`]: one block cache and one budget for the
//! memtables of all its replicas, so the server's memory does not grow with its partition count.
//! Two settings keep a server of a thousand replicas as fast and as bounded as one of eight
//! (docs/scale.md):
//! - memtables grow in small arena blocks ([`ARENA_BLOCK_BYTES`]), so the budget counts the
//!   data they hold. With RocksDB's default (1 MiB, taken as soon as a memtable passes its first
//!   2 KiB) every replica written to charged 2 MiB, a few hundred replicas passed any budget,
//!   and each write then flushed a memtable of one or two records;
//! - each engine keeps at most [`TABLE_FILES_OPEN`] SST files open (RocksDB's default keeps
//!   every one open), so the files a server holds are bounded by its replica count.

use crate::error::{Error, Result};
use rocksdb::checkpoint::Checkpoint;
use rocksdb::compaction_filter::Decision;
use rocksdb::properties;
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType, Direction, FlushOptions, IteratorMode,
    Options, ReadOptions, ReadTier, WriteBatch, WriteBufferManager, WriteOptions,
};
use rocksdb::statistics::{StatsLevel, Ticker};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tandem_core::storage::KvEngine;
use tandem_core::value::compaction_drops;
use tandem_core::{Decree, Mutation, WriteOp};

const DATA_CF: &str = "default";
const META_CF: &str = "meta";
const LAST_APPLIED_KEY: &[u8] = b"last_applied_decree";
/// The largest mutation timestamp applied, written with every last_applied_decree.
const CLOCK_BOUND_KEY: &[u8] = b"clock_bound_us";
/// `dup_watermark/` + the origin's cluster id (one byte): that site's largest watermark applied.
const WATERMARK_PREFIX: &[u8] = b"dup_watermark/";
const TTL_FILTER_NAME: &str = "tandem-ttl";

/// The unit a memtable's memory grows by, and so the least a written memtable charges to the
/// server's budget. RocksDB's default is min(1 MiB, write buffer / 8).
pub const ARENA_BLOCK_BYTES: usize = 16 << 10;
/// SST files an engine keeps open for reads (its table cache). A read of a file not among them
/// opens it, evicting the least recently used.
pub const TABLE_FILES_OPEN: usize = 10;
/// Files an open engine holds at most: its table cache, its LOCK, info LOG, MANIFEST and WAL
/// file, and two being written by a flush or compaction. What a server's open-files limit is
/// divided by to count the replicas it can host.
pub const FILES_PER_ENGINE: usize = TABLE_FILES_OPEN + 6;

/// The memory every RocksDB of one server shares: a block cache for reads, and a budget for the
/// memtables of all of them. Without it each replica took RocksDB's defaults (two 64 MiB
/// memtables and its own block cache), so a server's memory grew by ~150 MiB per partition.
#[derive(Clone)]
pub struct EngineMemory {
    block_cache: Cache,
    memtables: WriteBufferManager,
    /// Every engine's options are copies of this one, so they share its RocksDB statistics
    /// (tickers only): the server's block cache hits and misses and write stall time.
    template: Arc<Options>,
}

impl EngineMemory {
    /// When the memtables of all engines together pass `memtable_bytes` (RocksDB counts from 7/8
    /// of it), the engine being written flushes its memtables. Writes are not stalled: a burst
    /// can exceed the budget by what is being flushed.
    pub fn new(block_cache_bytes: usize, memtable_bytes: usize) -> Self {
        EngineMemory {
            block_cache: Cache::new_lru_cache(block_cache_bytes),
            memtables: WriteBufferManager::new_write_buffer_manager(memtable_bytes, false),
            template: Arc::new({
                let mut o = Options::default();
                o.enable_statistics();
                o.set_statistics_level(StatsLevel::ExceptHistogramOrTimers);
                o
            }),
        }
    }

    /// Block reads served from the block cache and missed, since the server started.
    pub fn block_cache_hits(&self) -> u64 {
        self.template.get_ticker_count(Ticker::BlockCacheHit)
    }

    pub fn block_cache_misses(&self) -> u64 {
        self.template.get_ticker_count(Ticker::BlockCacheMiss)
    }

    /// Time writes spent stalled or delayed by RocksDB (too many memtables, L0 files or
    /// pending compaction bytes), microseconds since the server started.
    pub fn write_stall_micros(&self) -> u64 {
        self.template.get_ticker_count(Ticker::StallMicros)
    }

    pub fn memtable_bytes(&self) -> usize {
        self.memtables.get_usage()
    }

    pub fn block_cache_bytes(&self) -> usize {
        self.block_cache.get_usage()
    }

    fn apply(&self, db: &mut Options, column_families: [&mut Options; 2]) {
        db.set_write_buffer_manager(&self.memtables);
        // RocksDB's table cache keeps max_open_files - 10 files; one shard, or each of its 64
        // default shards would keep one file of its own.
        db.set_max_open_files((TABLE_FILES_OPEN + 10) as i32);
        db.set_table_cache_num_shard_bits(0);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&self.block_cache);
        for cf in column_families {
            cf.set_block_based_table_factory(&table);
            cf.set_arena_block_size(ARENA_BLOCK_BYTES);
        }
    }
}

impl Default for EngineMemory {
    /// Small budgets, for tests and tools that open an engine or two.
    fn default() -> Self {
        EngineMemory::new(8 << 20, 64 << 20)
    }
}

/// What a table's compaction may drop, shared by the table's engines and set by the host from
/// the meta's answers: the tombstone retention (ms) and the hold of the table's own duplications
/// (µs; `u64::MAX`: none). See `value::compaction_drops`.
#[derive(Clone, Debug)]
pub struct TableCompaction {
    pub retention_ms: Arc<AtomicU64>,
    pub hold_us: Arc<AtomicU64>,
}

impl TableCompaction {
    /// The default policy's retention, and `hold_us` held.
    pub fn holding(hold_us: u64) -> Self {
        TableCompaction {
            retention_ms: Arc::new(AtomicU64::new(tandem_core::value::TOMBSTONE_RETENTION_MS_DEFAULT)),
            hold_us: Arc::new(AtomicU64::new(hold_us)),
        }
    }
}

impl Default for TableCompaction {
    /// The default policy's retention, nothing held (a table that ships nowhere; tools).
    fn default() -> Self {
        TableCompaction::holding(u64::MAX)
    }
}

pub struct RocksEngine {
    /// Shared with `Checkpointer`s, which take checkpoints without the engine's lock.
    db: Arc<DB>,
    dir: PathBuf,
    last_applied: Decree,
    clock_bound_us: u64,
    /// The watermarks of the sites shipping here, and their smallest (shared with the
    /// compaction filter).
    watermarks: BTreeMap<u8, u64>,
    incoming_hold_us: Arc<AtomicU64>,
    /// Shared with the compaction filter; the host sets it from the table's policy and
    /// duplications.
    compaction: TableCompaction,
    write_options: WriteOptions,
}

impl RocksEngine {
    /// Opens the replica's database in `dir`, creating it if missing, within the server's memory.
    pub fn open(dir: &Path, memory: &EngineMemory) -> Result<RocksEngine> {
        RocksEngine::open_with_compaction(dir, memory, TableCompaction::default())
    }

    /// Opens with the compaction rule `compaction` holds, shared with whoever sets it (the
    /// server shares one per table among the table's engines).
    pub fn open_with_compaction(dir: &Path, memory: &EngineMemory, compaction: TableCompaction) -> Result<RocksEngine> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
        let mut db_options = Options::clone(&memory.template);
        db_options.create_if_missing(true);
        db_options.create_missing_column_families(true);
        db_options.set_atomic_flush(true);
        // A server hosts many replicas: bound the info logs each one keeps.
        db_options.set_keep_log_file_num(4);

        let mut data_options = Options::default();
        data_options.set_compression_type(DBCompressionType::Lz4);
        let incoming_hold_us = Arc::new(AtomicU64::new(u64::MAX));
        let (rule, incoming) = (compaction.clone(), incoming_hold_us.clone());
        data_options.set_compaction_filter(TTL_FILTER_NAME, move |_level: u32, _key: &[u8], value: &[u8]| {
            let hold_us = rule.hold_us.load(Ordering::Relaxed).min(incoming.load(Ordering::Relaxed));
            compaction_decision(value, now_us(), rule.retention_ms.load(Ordering::Relaxed), hold_us)
        });
        let mut meta_options = Options::default();
        // The meta column family holds a few keys each applied decree overwrites: overwritten
        // in place, its memtable stays a few entries instead of two per decree (whose skiplist
        // inserts cost a fifth of a server's CPU under writes).
        meta_options.set_inplace_update_support(true);
        db_options.set_allow_concurrent_memtable_write(false);
        memory.apply(&mut db_options, [&mut data_options, &mut meta_options]);
        let descriptors = vec![ColumnFamilyDescriptor::new(DATA_CF, data_options), ColumnFamilyDescriptor::new(META_CF, meta_options)];
        let db = DB::open_cf_descriptors(&db_options, dir, descriptors).map_err(|e| Error::rocks("open", dir, e))?;

        let last_applied = read_meta_u64(&db, dir, LAST_APPLIED_KEY, "last_applied_decree")?;
        let clock_bound_us = read_meta_u64(&db, dir, CLOCK_BOUND_KEY, "clock_bound_us")?;
        let mut watermarks = BTreeMap::new();
        {
            let meta = db.cf_handle(META_CF).expect("meta column family is created at open");
            let mut read_options = ReadOptions::default();
            read_options.set_iterate_lower_bound(WATERMARK_PREFIX.to_vec());
            for item in db.iterator_cf_opt(meta, read_options, IteratorMode::From(WATERMARK_PREFIX, Direction::Forward)) {
                let (key, value) = item.map_err(|e| Error::rocks("read the watermarks", dir, e))?;
                let Some(origin) = key.strip_prefix(WATERMARK_PREFIX) else { break };
                let (&[origin], Ok(value)) = (origin, <[u8; 8]>::try_from(value.as_ref())) else {
                    return Err(Error::CorruptEngine { dir: dir.to_path_buf(), detail: format!("watermark entry {key:?} = {value:?}") });
                };
                watermarks.insert(origin, u64::from_be_bytes(value));
            }
        }
        incoming_hold_us.store(tandem_core::storage::incoming_hold_us(&watermarks), Ordering::Relaxed);
        let mut write_options = WriteOptions::default();
        write_options.disable_wal(true);
        Ok(RocksEngine {
            db: Arc::new(db),
            dir: dir.to_path_buf(),
            last_applied,
            clock_bound_us,
            watermarks,
            incoming_hold_us,
            compaction,
            write_options,
        })
    }

    /// Removes a replica's data directory. The engine on it must be closed (dropped) first.
    pub fn destroy(dir: &Path) -> Result<()> {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", dir, e)),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes both column families' memtables to disk together and waits for it; afterwards the
    /// decree on disk is `last_applied_decree()`.
    pub fn flush(&self) -> Result<()> {
        flush_both(&self.db, &self.dir, true)
    }

    /// Asks RocksDB to write both column families' memtables to disk, without waiting: the
    /// replica's writes go on meanwhile, and `durable_decree` shows when it is done.
    pub fn request_flush(&self) -> Result<()> {
        self.checkpointer().request_flush()
    }

    /// RocksDB's estimate of the bytes compaction must rewrite to bring every level within its
    /// target size: a backlog that grows means compaction cannot keep up with writes.
    pub fn pending_compaction_bytes(&self) -> u64 {
        self.db.property_int_value(properties::ESTIMATE_PENDING_COMPACTION_BYTES).ok().flatten().unwrap_or(0)
    }

    /// Whether RocksDB stops this engine's writes now (too many memtables or L0 files).
    pub fn write_stopped(&self) -> bool {
        self.db.property_int_value(properties::IS_WRITE_STOPPED).ok().flatten().unwrap_or(0) != 0
    }

    /// The decree the mutation log no longer needs to hold for this replica: everything up to it
    /// is in RocksDB's files and survives a crash, whoever flushed it (RocksDB when the shared
    /// memtable budget is reached, or `flush`). Read at the persisted tier, which skips the
    /// memtables while writes go without the WAL; a point read, cheap enough for every replica
    /// of a server each log GC round.
    pub fn durable_decree(&self) -> Result<Decree> {
        self.checkpointer().durable_decree()
    }

    /// Flushes, then writes a checkpoint (hard links to the SST files where possible) into `dir`,
    /// which must not exist yet. Returns the decree it holds; `RocksEngine::open(dir, ..)` serves it.
    pub fn checkpoint(&self, dir: &Path) -> Result<Decree> {
        link_checkpoint(&self.db, &self.dir, dir, || self.flush())?;
        Ok(self.last_applied)
    }

    /// What a checkpoint needs, to take it without holding the engine (writes go on meanwhile).
    pub fn checkpointer(&self) -> Checkpointer {
        Checkpointer { db: self.db.clone(), dir: self.dir.clone() }
    }

    /// SST files plus memtables of both column families, for status display.
    pub fn approximate_bytes(&self) -> Result<u64> {
        let mut total = 0;
        for cf in [self.data_cf(), self.meta_cf()] {
            for property in [properties::TOTAL_SST_FILES_SIZE, properties::CUR_SIZE_ALL_MEM_TABLES] {
                total += self
                    .db
                    .property_int_value_cf(cf, property)
                    .map_err(|e| Error::rocks("read property", &self.dir, e))?
                    .unwrap_or(0);
            }
        }
        Ok(total)
    }

    /// Compacts all data now (an operator's manual compaction); expired values go.
    pub fn compact(&self) {
        self.db.compact_range_cf(self.data_cf(), None::<&[u8]>, None::<&[u8]>);
    }

    /// Adds the ops' records to `batch`, and their watermarks to `watermarks` (the largest per
    /// origin), which `write_applied` writes.
    fn add_ops(&self, batch: &mut WriteBatch, ops: &[WriteOp], watermarks: &mut Option<BTreeMap<u8, u64>>) {
        let data = self.data_cf();
        for op in ops {
            match op {
                WriteOp::Put { key, value } => batch.put_cf(data, key, value),
                WriteOp::Delete { key } => batch.delete_cf(data, key),
                WriteOp::Watermark { origin, watermark_us } => {
                    let w = watermarks.get_or_insert_with(|| self.watermarks.clone()).entry(*origin).or_default();
                    *w = (*w).max(*watermark_us);
                }
            }
        }
    }

    /// Writes `batch` with `decree` recorded as the last applied decree, `timestamp_us` folded
    /// into the clock bound, and the watermarks if they changed.
    fn write_applied(&mut self, mut batch: WriteBatch, decree: Decree, timestamp_us: u64, watermarks: Option<BTreeMap<u8, u64>>) -> tandem_core::Result<()> {
        let clock_bound_us = self.clock_bound_us.max(timestamp_us);
        batch.put_cf(self.meta_cf(), LAST_APPLIED_KEY, decree.to_be_bytes());
        batch.put_cf(self.meta_cf(), CLOCK_BOUND_KEY, clock_bound_us.to_be_bytes());
        if let Some(w) = &watermarks {
            for (origin, watermark_us) in w {
                let key = [WATERMARK_PREFIX, &[*origin]].concat();
                batch.put_cf(self.meta_cf(), key, watermark_us.to_be_bytes());
            }
        }
        self.db.write_opt(batch, &self.write_options).map_err(|e| Error::rocks("write", &self.dir, e))?;
        self.last_applied = decree;
        self.clock_bound_us = clock_bound_us;
        if let Some(w) = watermarks {
            self.incoming_hold_us.store(tandem_core::storage::incoming_hold_us(&w), Ordering::Relaxed);
            self.watermarks = w;
        }
        Ok(())
    }

    /// Tombstones older than this (by their timetag) may be dropped by compaction (until set:
    /// what `open_with_compaction` was given, or the default policy's retention).
    pub fn set_tombstone_retention_ms(&self, retention_ms: u64) {
        self.compaction.retention_ms.store(retention_ms, Ordering::Relaxed);
    }

    fn data_cf(&self) -> &ColumnFamily {
        self.db.cf_handle(DATA_CF).expect("data column family is created at open")
    }

    fn meta_cf(&self) -> &ColumnFamily {
        self.db.cf_handle(META_CF).expect("meta column family is created at open")
    }
}

/// Takes checkpoints of an engine without its lock (and asks for flushes, reads the durable
/// decree), so a backup's flush does not stall the replica's writes (docs/backup.md, the p99 figure). `atomic_flush` makes the flush cover both
/// column families up to the same write, so the checkpoint is one consistent point; which
/// decree that is, is read back from the checkpoint itself (writes applied meanwhile are not in
/// it, or all of theirs are).
pub struct Checkpointer {
    db: Arc<DB>,
    dir: PathBuf,
}

impl Checkpointer {
    /// Flushes, links the files into `dir` (which must not exist), and answers the decree the
    /// checkpoint holds.
    pub fn checkpoint(&self, dir: &Path) -> Result<Decree> {
        link_checkpoint(&self.db, &self.dir, dir, || flush_both(&self.db, &self.dir, true))?;
        checkpoint_decree(dir)
    }

    /// `RocksEngine::request_flush` without the engine's lock: RocksDB may make it wait out a
    /// write stall, and the replica's writes must not wait with it.
    pub fn request_flush(&self) -> Result<()> {
        flush_both(&self.db, &self.dir, false)
    }

    /// `RocksEngine::durable_decree` without the engine's lock.
    pub fn durable_decree(&self) -> Result<Decree> {
        let mut files_only = ReadOptions::default();
        files_only.set_read_tier(ReadTier::Persisted);
        read_meta_u64_opt(&self.db, &self.dir, LAST_APPLIED_KEY, "last_applied_decree", &files_only)
    }
}

/// Both column families' memtables to disk together (`atomic_flush`), waiting for it or not.
fn flush_both(db: &DB, dir: &Path, wait: bool) -> Result<()> {
    let cfs = [DATA_CF, META_CF].map(|name| db.cf_handle(name).expect("both column families are created at open"));
    let mut options = FlushOptions::default();
    options.set_wait(wait);
    db.flush_cfs_opt(&cfs, &options).map_err(|e| Error::rocks("flush", dir, e))
}

/// A checkpoint of `db` (in `src`) in `dir`, which must not exist yet: `flush` first (the
/// checkpoint copies files only, and with the WAL off the memtables are in no file), then hard
/// links to the SST files where possible.
fn link_checkpoint(db: &DB, src: &Path, dir: &Path, flush: impl FnOnce() -> Result<()>) -> Result<()> {
    match dir.try_exists() {
        Ok(false) => {}
        Ok(true) => return Err(Error::CheckpointExists { path: dir.to_path_buf() }),
        Err(e) => return Err(Error::io("stat", dir, e)),
    }
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io("create directory", parent, e))?;
    }
    flush()?;
    let checkpoint = Checkpoint::new(db).map_err(|e| Error::rocks("create checkpoint object", src, e))?;
    checkpoint.create_checkpoint(dir).map_err(|e| Error::rocks("create checkpoint", dir, e))
}

/// A big-endian u64 of the meta column family (0 when absent), `what` naming it in errors.
fn read_meta_u64(db: &DB, dir: &Path, key: &[u8], what: &str) -> Result<u64> {
    read_meta_u64_opt(db, dir, key, what, &ReadOptions::default())
}

/// `read_meta_u64` with these read options (`durable_decree` reads the files alone).
fn read_meta_u64_opt(db: &DB, dir: &Path, key: &[u8], what: &str, options: &ReadOptions) -> Result<u64> {
    let meta = db.cf_handle(META_CF).expect("the meta column family is opened with every engine");
    match db.get_pinned_cf_opt(meta, key, options).map_err(|e| Error::rocks("read the meta column family", dir, e))? {
        None => Ok(0),
        Some(bytes) => Ok(u64::from_be_bytes(bytes.as_ref().try_into().map_err(|_| Error::CorruptEngine {
            dir: dir.to_path_buf(),
            detail: format!("{what} holds {} bytes, expected 8", bytes.len()),
        })?)),
    }
}

/// The last applied decree a checkpoint holds, read without writing into it (its info log goes
/// to a sibling directory, removed afterwards).
fn checkpoint_decree(dir: &Path) -> Result<Decree> {
    let log_dir = dir.with_extension("log");
    let mut options = Options::default();
    options.set_db_log_dir(&log_dir);
    let decree = (|| {
        let db = DB::open_cf_for_read_only(&options, dir, [DATA_CF, META_CF], false).map_err(|e| Error::rocks("open checkpoint", dir, e))?;
        read_meta_u64(&db, dir, LAST_APPLIED_KEY, "last_applied_decree")
    })();
    let _ = std::fs::remove_dir_all(&log_dir);
    decree
}

impl KvEngine for RocksEngine {
    fn get(&self, key: &[u8]) -> tandem_core::Result<Option<Vec<u8>>> {
        let value = self.db.get_pinned_cf(self.data_cf(), key).map_err(|e| Error::rocks("get", &self.dir, e))?;
        Ok(value.map(|v| v.to_vec()))
    }

    fn scan(&self, start: &[u8], end: Option<&[u8]>, limit: usize) -> tandem_core::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Bounds let RocksDB stop at `end` inside its own iterator instead of reading past it.
        let mut read_options = ReadOptions::default();
        read_options.set_iterate_lower_bound(start.to_vec());
        if let Some(end) = end {
            read_options.set_iterate_upper_bound(end.to_vec());
        }
        let iter = self.db.iterator_cf_opt(self.data_cf(), read_options, IteratorMode::From(start, Direction::Forward));
        let mut records = Vec::new();
        for item in iter.take(limit) {
            let (key, value) = item.map_err(|e| Error::rocks("scan", &self.dir, e))?;
            records.push((key.into_vec(), value.into_vec()));
        }
        Ok(records)
    }

    fn apply(&mut self, decree: Decree, timestamp_us: u64, ops: &[WriteOp]) -> tandem_core::Result<()> {
        assert_eq!(decree, self.last_applied + 1, "decrees are applied in order");
        let mut batch = WriteBatch::default();
        let mut watermarks = None;
        self.add_ops(&mut batch, ops, &mut watermarks);
        self.write_applied(batch, decree, timestamp_us, watermarks)
    }

    /// One write batch for all: atomic, and the last-applied key written once.
    fn apply_many(&mut self, mutations: &[Arc<Mutation>]) -> tandem_core::Result<()> {
        let Some(last) = mutations.last() else { return Ok(()) };
        let mut batch = WriteBatch::default();
        let mut timestamp_us = 0;
        let mut watermarks = None;
        for (i, m) in mutations.iter().enumerate() {
            assert_eq!(m.decree, self.last_applied + 1 + i as u64, "decrees are applied in order");
            self.add_ops(&mut batch, &m.ops, &mut watermarks);
            timestamp_us = timestamp_us.max(m.timestamp_us);
        }
        self.write_applied(batch, last.decree, timestamp_us, watermarks)
    }

    fn last_applied_decree(&self) -> Decree {
        self.last_applied
    }

    fn clock_bound_us(&self) -> u64 {
        self.clock_bound_us
    }

    fn dup_watermarks(&self) -> BTreeMap<u8, u64> {
        self.watermarks.clone()
    }
}

/// What compaction does with a stored value: the rule is `value::compaction_drops`. A removed
/// value becomes a deletion marker below the bottom level, so an older version underneath never
/// shows through.
fn compaction_decision(value: &[u8], now_us: u64, tombstone_retention_ms: u64, hold_us: u64) -> Decision {
    if compaction_drops(value, now_us, tombstone_retention_ms, hold_us) { Decision::Remove } else { Decision::Keep }
}

fn now_us() -> u64 {
    // A clock before 1970 expires nothing rather than everything.
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_core::storage::engine_conformance;
    use tandem_core::timetag::make_timetag;
    use tandem_core::value::{encode_tombstone, encode_value};
    use tempfile::TempDir;

    /// Keeps the directory alive exactly as long as the engine on it.
    struct TempEngine {
        engine: RocksEngine,
        _dir: TempDir,
    }

    impl KvEngine for TempEngine {
        fn get(&self, key: &[u8]) -> tandem_core::Result<Option<Vec<u8>>> {
            self.engine.get(key)
        }
        fn scan(&self, start: &[u8], end: Option<&[u8]>, limit: usize) -> tandem_core::Result<Vec<(Vec<u8>, Vec<u8>)>> {
            self.engine.scan(start, end, limit)
        }
        fn apply(&mut self, decree: Decree, timestamp_us: u64, ops: &[WriteOp]) -> tandem_core::Result<()> {
            self.engine.apply(decree, timestamp_us, ops)
        }
        fn apply_many(&mut self, mutations: &[Arc<Mutation>]) -> tandem_core::Result<()> {
            self.engine.apply_many(mutations)
        }
        fn last_applied_decree(&self) -> Decree {
            self.engine.last_applied_decree()
        }
        fn clock_bound_us(&self) -> u64 {
            self.engine.clock_bound_us()
        }
        fn dup_watermarks(&self) -> BTreeMap<u8, u64> {
            self.engine.dup_watermarks()
        }
    }

    fn put(key: &str, value: &str) -> WriteOp {
        WriteOp::Put { key: key.as_bytes().to_vec(), value: value.as_bytes().to_vec() }
    }

    fn all(engine: &RocksEngine) -> Vec<(Vec<u8>, Vec<u8>)> {
        engine.scan(b"", None, usize::MAX).unwrap()
    }

    #[test]
    fn conforms_to_the_engine_contract() {
        engine_conformance(|| {
            let dir = tempfile::tempdir().unwrap();
            let engine = RocksEngine::open(dir.path(), &EngineMemory::default()).unwrap();
            Box::new(TempEngine { engine, _dir: dir })
        });
    }

    #[test]
    fn scan_respects_bounds_and_limit() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = RocksEngine::open(dir.path(), &EngineMemory::default()).unwrap();
        e.apply(1, 0, &[put("a", "1"), put("b", "2"), put("c", "3"), put("d", "4")]).unwrap();
        let keys = |records: Vec<(Vec<u8>, Vec<u8>)>| records.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(keys(e.scan(b"b", Some(b"d"), 10).unwrap()), [b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(keys(e.scan(b"b", None, 2).unwrap()), [b"b".to_vec(), b"c".to_vec()]);
        assert!(e.scan(b"a", None, 0).unwrap().is_empty());
        assert!(e.scan(b"c", Some(b"b"), 10).unwrap().is_empty());
    }

    #[test]
    fn reopen_after_flush_keeps_data_and_decree() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut e = RocksEngine::open(dir.path(), &EngineMemory::default()).unwrap();
            e.apply(1, 10, &[put("a", "1")]).unwrap();
            e.apply(2, 30, &[put("b", "2")]).unwrap();
            e.apply(3, 20, &[WriteOp::Delete { key: b"a".to_vec() }]).unwrap();
            assert_eq!(e.durable_decree().unwrap(), 0, "nothing flushed: the memtables are skipped");
            e.flush().unwrap();
            assert_eq!(e.durable_decree().unwrap(), 3);
            e.apply(4, 40, &[put("c", "3")]).unwrap();
            assert_eq!(e.durable_decree().unwrap(), 3, "decree 4 is in a memtable only");
            e.flush().unwrap();
            assert!(e.approximate_bytes().unwrap() > 0);
        }
        let mut e = RocksEngine::open(dir.path(), &EngineMemory::default()).unwrap();
        assert_eq!(e.last_applied_decree(), 4);
        assert_eq!(e.durable_decree().unwrap(), 4);
        assert_eq!(e.clock_bound_us(), 40, "the clock bound is persisted with the decree");
        assert_eq!(all(&e), [(b"b".to_vec(), b"2".to_vec()), (b"c".to_vec(), b"3".to_vec())]);
        e.apply(5, 0, &[put("d", "4")]).unwrap();
    }

    /// Polls `durable_decree` until `done` holds or 10 s pass (RocksDB flushes in the background).
    fn durable_when(e: &RocksEngine, done: impl Fn(Decree) -> bool) -> Decree {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let d = e.durable_decree().unwrap();
            if done(d) || std::time::Instant::now() > deadline {
                return d;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn the_durable_decree_follows_rocksdbs_own_flushes_and_requested_ones() {
        let dir = tempfile::tempdir().unwrap();
        // A 256 KiB budget: RocksDB flushes on its own long before 2,000 values of 1 KiB.
        let memory = EngineMemory::new(1 << 20, 256 << 10);
        let mut e = RocksEngine::open(dir.path(), &memory).unwrap();
        let value = "v".repeat(1024);
        for d in 1..=2_000 {
            e.apply(d, d, &[put(&format!("k{d}"), &value)]).unwrap();
        }
        let durable = durable_when(&e, |d| d > 0);
        assert!(durable > 0 && durable <= 2_000, "RocksDB's own flush is learned without ours: {durable}");
        e.apply(2_001, 2_001, &[put("last", "x")]).unwrap();
        e.request_flush().unwrap();
        assert_eq!(durable_when(&e, |d| d == 2_001), 2_001, "a requested flush lands without being waited for");
    }

    /// Copies every file of an open database, as a crash would leave them: unflushed memtables
    /// are in no file because the WAL is off.
    fn crash_image(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
            }
        }
    }

    #[test]
    fn a_crash_loses_unflushed_decrees_but_data_and_decree_agree() {
        let dir = tempfile::tempdir().unwrap();
        let crashed = tempfile::tempdir().unwrap();
        let mut e = RocksEngine::open(dir.path(), &EngineMemory::default()).unwrap();
        e.apply(1, 0, &[put("a", "1")]).unwrap();
        e.apply(2, 0, &[put("b", "2")]).unwrap();
        e.flush().unwrap();
        e.apply(3, 0, &[put("c", "3"), WriteOp::Delete { key: b"a".to_vec() }]).unwrap();
        e.apply(4, 0, &[put("d", "4")]).unwrap();
        crash_image(dir.path(), crashed.path());

        let mut recovered = RocksEngine::open(crashed.path(), &EngineMemory::default()).unwrap();
        assert_eq!(recovered.last_applied_decree(), 2);
        assert_eq!(all(&recovered), [(b"a".to_vec(), b"1".to_vec()), (b"b".to_vec(), b"2".to_vec())]);
        // Replaying the log from decree 3 brings it back to the state before the crash.
        recovered.apply(3, 0, &[put("c", "3"), WriteOp::Delete { key: b"a".to_vec() }]).unwrap();
        recovered.apply(4, 0, &[put("d", "4")]).unwrap();
        assert_eq!(all(&recovered), all(&e));
    }

    #[test]
    fn a_clean_close_flushes() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut e = RocksEngine::open(dir.path(), &EngineMemory::default()).unwrap();
            e.apply(1, 0, &[put("a", "1")]).unwrap();
        }
        let e = RocksEngine::open(dir.path(), &EngineMemory::default()).unwrap();
        assert_eq!(e.last_applied_decree(), 1);
        assert_eq!(all(&e), [(b"a".to_vec(), b"1".to_vec())]);
    }

    #[test]
    fn checkpoint_opens_as_the_same_state() {
        let dir = tempfile::tempdir().unwrap();
        let target = tempfile::tempdir().unwrap();
        let copy_dir = target.path().join("checkpoint");
        let mut e = RocksEngine::open(dir.path(), &EngineMemory::default()).unwrap();
        for decree in 1..=50 {
            e.apply(decree, decree * 1000, &[put(&format!("k{decree:03}"), &format!("v{decree}"))]).unwrap();
        }
        assert_eq!(e.checkpoint(&copy_dir).unwrap(), 50);
        assert!(matches!(e.checkpoint(&copy_dir), Err(Error::CheckpointExists { .. })));
        // Writes after the checkpoint do not leak into it.
        e.apply(51, 0, &[put("late", "x")]).unwrap();

        let copy = RocksEngine::open(&copy_dir, &EngineMemory::default()).unwrap();
        assert_eq!((copy.last_applied_decree(), copy.clock_bound_us()), (50, 50_000));
        let mut expected = all(&e);
        expected.retain(|(k, _)| k != b"late");
        assert_eq!(all(&copy), expected);
        drop(copy);
        RocksEngine::destroy(&copy_dir).unwrap();
        assert!(!copy_dir.exists());
        RocksEngine::destroy(&copy_dir).unwrap();
    }

    #[test]
    fn a_checkpoint_taken_without_the_lock_holds_exactly_its_decree_while_writes_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let target = tempfile::tempdir().unwrap();
        let engine = std::sync::Arc::new(std::sync::RwLock::new(RocksEngine::open(dir.path(), &EngineMemory::default()).unwrap()));
        let writer = {
            let engine = engine.clone();
            std::thread::spawn(move || {
                for decree in 1..=3_000u64 {
                    engine.write().unwrap().apply(decree, decree, &[put(&format!("k{decree:05}"), "v")]).unwrap();
                }
            })
        };
        let mut decrees = Vec::new();
        for i in 0..8 {
            let checkpointer = engine.read().unwrap().checkpointer();
            let copy_dir = target.path().join(format!("c{i}"));
            let decree = checkpointer.checkpoint(&copy_dir).unwrap();
            let names: Vec<String> = std::fs::read_dir(&copy_dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
            assert!(!names.iter().any(|n| n.starts_with("LOG")), "nothing written into the checkpoint: {names:?}");
            let copy = RocksEngine::open(&copy_dir, &EngineMemory::default()).unwrap();
            // Exactly the writes up to its decree: decree d wrote key d.
            let keys: Vec<Vec<u8>> = all(&copy).into_iter().map(|(k, _)| k).collect();
            let want: Vec<Vec<u8>> = (1..=decree).map(|d| format!("k{d:05}").into_bytes()).collect();
            assert_eq!((copy.last_applied_decree(), keys.len()), (decree, want.len()));
            assert!(keys == want, "checkpoint at decree {decree} holds other keys");
            decrees.push(decree);
        }
        writer.join().unwrap();
        assert!(decrees.windows(2).all(|w| w[0] <= w[1]), "{decrees:?}");
    }

    #[test]
    fn compaction_drops_expired_values_and_old_tombstones_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = RocksEngine::open(dir.path(), &EngineMemory::default()).unwrap();
        e.set_tombstone_retention_ms(3_600_000);
        let now_s = (now_us() / 1_000_000) as u32;
        let hour_us = 3_600_000_000;
        let expired = encode_value(1, 6, b"old");
        let later = encode_value(now_s + 3600, 6, b"later");
        let forever = encode_value(0, 6, b"forever");
        let undecodable = b"xx".to_vec();
        let old_tombstone = encode_tombstone(make_timetag(now_us() - 2 * hour_us, 1, true));
        let young_tombstone = encode_tombstone(make_timetag(now_us() - hour_us / 2, 1, true));
        // An older put of a key lies in a lower level, under the tombstone that compaction drops:
        // it must not come back.
        e.apply(1, 0, &[WriteOp::Put { key: b"old-tombstone".to_vec(), value: forever.clone() }]).unwrap();
        e.flush().unwrap();
        e.compact();
        e.apply(
            2,
            0,
            &[
                WriteOp::Put { key: b"expired".to_vec(), value: expired.clone() },
                WriteOp::Put { key: b"later".to_vec(), value: later.clone() },
                WriteOp::Put { key: b"forever".to_vec(), value: forever.clone() },
                WriteOp::Put { key: b"undecodable".to_vec(), value: undecodable.clone() },
                WriteOp::Put { key: b"old-tombstone".to_vec(), value: old_tombstone.clone() },
                WriteOp::Put { key: b"young-tombstone".to_vec(), value: young_tombstone.clone() },
            ],
        )
        .unwrap();
        e.flush().unwrap();
        // Flushing does not filter: reads hide expired values, compaction removes them.
        assert_eq!(e.get(b"expired").unwrap(), Some(expired));
        e.compact();
        assert_eq!(e.get(b"expired").unwrap(), None);
        assert_eq!(e.get(b"old-tombstone").unwrap(), None);
        assert_eq!(e.get(b"young-tombstone").unwrap(), Some(young_tombstone));
        assert_eq!(e.get(b"later").unwrap(), Some(later));
        assert_eq!(e.get(b"forever").unwrap(), Some(forever));
        assert_eq!(e.get(b"undecodable").unwrap(), Some(undecodable));
        assert_eq!(e.last_applied_decree(), 2);
    }

    #[test]
    fn compaction_holds_tombstones_the_duplications_have_not_passed_and_watermarks_persist() {
        let dir = tempfile::tempdir().unwrap();
        let cp = tempfile::tempdir().unwrap();
        let compaction = TableCompaction::default();
        compaction.retention_ms.store(0, Ordering::Relaxed);
        let hour_us = 3_600_000_000;
        let tomb = |key: &str, age_us: u64| WriteOp::Put { key: key.into(), value: encode_tombstone(make_timetag(now_us() - age_us, 2, true)) };
        let watermark = |origin, watermark_us| WriteOp::Watermark { origin, watermark_us };
        {
            let mut e = RocksEngine::open_with_compaction(dir.path(), &EngineMemory::default(), compaction.clone()).unwrap();
            // Site 2 has shipped what it made up to 2 h ago, site 3 up to 3 h ago.
            e.apply(1, 0, &[tomb("4h", 4 * hour_us), tomb("2.5h", 5 * hour_us / 2), tomb("1h", hour_us), watermark(2, now_us() - 2 * hour_us)]).unwrap();
            e.apply_many(&[Arc::new(Mutation { ballot: 1, decree: 2, timestamp_us: 0, ops: vec![watermark(3, now_us() - 3 * hour_us), watermark(2, 5)] })])
                .unwrap();
            e.flush().unwrap();
            e.compact();
            assert_eq!(all(&e).len(), 2, "only what both sites passed goes");
            // Our own duplication has not shipped what was made 2.5 h ago yet.
            compaction.hold_us.store(now_us() - 3 * hour_us, Ordering::Relaxed);
            e.apply(3, 0, &[watermark(3, now_us())]).unwrap();
            e.flush().unwrap();
            e.compact();
            assert_eq!(all(&e).len(), 2);
            compaction.hold_us.store(u64::MAX, Ordering::Relaxed);
            e.checkpoint(&cp.path().join("c")).unwrap();
        }
        // Reopened, and in a checkpoint: the same watermarks, the same hold.
        for path in [dir.path().to_path_buf(), cp.path().join("c")] {
            let e = RocksEngine::open_with_compaction(&path, &EngineMemory::default(), compaction.clone()).unwrap();
            let w = e.dup_watermarks();
            assert_eq!(w.keys().copied().collect::<Vec<_>>(), vec![2, 3]);
            assert!(w[&2] < now_us() - hour_us && w[&3] > now_us() - hour_us, "{w:?}");
            e.compact();
            assert_eq!(all(&e).len(), 1, "the 2.5 h tombstone goes now; the 1 h one waits for site 2");
        }
    }
}
