//! The mutation log: the only write-ahead log of a replica server, shared by all its partitions.
//!
//! RocksDB runs with its WAL disabled, so a mutation is durable on this server once its record
//! is in this log and synced. Sharing one log across partitions is what makes group commit pay:
//! one fsync covers every write queued meanwhile, whatever partition it belongs to.
//!
//! ```text
//!   append(records, done) ──channel──▶ writer thread: drain queue ─▶ write all ─▶ one fsync
//!                                        (under load: gather until             │
//!                                         group_commit_window after            │
//!                                         the last fsync)                      │
//!                          done(Ok | Err) in submission order ◀─────────────────┘
//! ```
//!
//! The group commit window: an fsync costs ~50 µs of this process's CPU and ~0.2 ms of latency
//! on the machines we measured, so a log that syncs each append on its own as soon as it arrives
//! spends more on fsyncs than on anything else once many partitions write. While the server's
//! CPU is scarce and appends arrive together (see `GroupCommit`), a group gathers appends until
//! `group_commit_window` has passed since the last fsync; otherwise every group is synced at
//! once.
//!
//! On disk: a directory of append-only segments `log.<start_index:020>`, where `start_index`
//! counts records since the log was created, so names sort in replay order and a missing segment
//! shows as a gap. Each record is `u32 len (BE) ‖ u32 crc32c(payload) (BE) ‖ payload`, payload =
//! `LogRecord::encode()`.
//!
//! Crash recovery: only the last segment can end in a torn record, because a segment is synced
//! before the next one is created (under every sync policy). `open` cuts such a tail; anything
//! wrong in an older segment is corruption and an error.
//!
//! Garbage collection: each segment indexes, per gpid, where its records are and their decrees.
//! A segment can go once every replica in it has its largest decree there durable in RocksDB
//! (or no longer lives here) and no hold needs it. Segments go oldest first only, so what remains
//! always replays in order.
//!
//! Reading a partition back (`read_partition`, for a duplicator): the same index finds its
//! records without reading any other partition's, and `tandem_core::log_read`'s replay rule
//! decides which of them count.

use crate::error::{Error, Result};
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tandem_core::{Decree, Gpid, LogRecord, Mutation};

/// A corrupt length field must never make replay allocate gigabytes; appends above this are
/// refused so that every record written can be read back.
pub const RECORD_BYTES_MAX: usize = 64 << 20;

/// Stop draining the queue into one group past this, so the first writer of a burst is not
/// held back until an unbounded backlog is written.
const GROUP_BYTES_MAX: usize = 16 << 20;

const HEADER_BYTES: usize = 8;
const SEGMENT_PREFIX: &str = "log.";
const SEGMENT_INDEX_DIGITS: usize = 20;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncPolicy {
    /// fsync once per group before acknowledging: an acknowledged write survives power loss.
    #[default]
    EveryBatch,
    /// Never fsync on append (segments are still synced when they roll): relies on the other
    /// replicas of each partition to survive a power loss of this server.
    None,
}

#[derive(Clone, Debug)]
pub struct LogOptions {
    /// A segment rolls once it holds this many bytes; one append never spans two segments, so
    /// a segment may exceed it by the size of one append.
    pub segment_bytes_max: u64,
    pub sync: SyncPolicy,
    /// Under load, a group gathers appends until this long after the previous fsync (zero: each
    /// group is written as soon as the writer takes it). Only with `SyncPolicy::EveryBatch`.
    pub group_commit_window: Duration,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions { segment_bytes_max: 64 << 20, sync: SyncPolicy::EveryBatch, group_commit_window: Duration::from_millis(1) }
    }
}

/// When a group waits for more appends before it is written and synced: a pure policy.
///
/// Waiting trades latency for CPU, so a group waits only while the server says CPU is scarce
/// (`MutationLog::set_cpu_busy`) and the previous group held two or more appends (they arrive
/// together). An idle log, a lone writer appending one record after another, and a server
/// with CPU to spare sync every group at once.
#[derive(Clone, Debug, PartialEq, Eq)]
struct GroupCommit {
    window: Duration,
    last_group_appends: usize,
}

impl GroupCommit {
    fn new(window: Duration) -> GroupCommit {
        GroupCommit { window, last_group_appends: 0 }
    }

    /// Until when the group the writer takes at `now` gathers appends; None: write it at once.
    fn deadline(&self, last_sync: Option<Instant>, now: Instant, cpu_busy: bool) -> Option<Instant> {
        let deadline = last_sync? + self.window;
        (cpu_busy && self.last_group_appends >= 2 && !self.window.is_zero() && deadline > now).then_some(deadline)
    }

    /// How many appends the group held when it was written.
    fn observe(&mut self, appends: usize) {
        self.last_group_appends = appends;
    }
}

/// Called once per `append`, from the writer thread, after the records are written (and synced
/// under `SyncPolicy::EveryBatch`). It must not block for long: it delays every later append.
pub type AppendDone = Box<dyn FnOnce(Result<()>) + Send>;

struct Request {
    frames: Vec<u8>,
    record_count: u64,
    /// One per record, in order.
    keys: Vec<RecordKey>,
    done: AppendDone,
}

/// What the index knows of a record without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RecordKey {
    gpid: Gpid,
    decree: Decree,
    reset: bool,
}

/// Where a partition's record sits in a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct IndexEntry {
    decree: Decree,
    offset: u64,
    reset: bool,
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    bytes: u64,
    /// Per gpid, its records here in order: a partition's records are read without reading
    /// another partition's.
    index: HashMap<Gpid, Vec<IndexEntry>>,
    /// Per gpid, the largest decree of its records here: the segment is garbage once each is
    /// durable elsewhere.
    decree_max: HashMap<Gpid, Decree>,
}

impl Segment {
    fn new(path: PathBuf) -> Segment {
        Segment { path, bytes: 0, index: HashMap::new(), decree_max: HashMap::new() }
    }

    fn add(&mut self, key: RecordKey, offset: u64) {
        self.index.entry(key.gpid).or_default().push(IndexEntry { decree: key.decree, offset, reset: key.reset });
        let max = self.decree_max.entry(key.gpid).or_insert(key.decree);
        *max = (*max).max(key.decree);
    }
}

struct Shared {
    /// Oldest first; the last one is the writer's current segment.
    segments: Mutex<Vec<Segment>>,
    appended_records: AtomicU64,
    appended_bytes: AtomicU64,
    fsyncs: AtomicU64,
    /// Told the records of each group the writer wrote (the server's group size histogram).
    group_observer: std::sync::OnceLock<Box<dyn Fn(u64) + Send + Sync>>,
    /// Groups that waited out the group commit window.
    group_waits: AtomicU64,
    /// Set by the server while CPU is scarce: only then do groups wait for more appends.
    cpu_busy: AtomicBool,
    /// The writer's first write or sync error: every append fails from then on.
    failure: Mutex<Option<String>>,
}

pub struct MutationLog {
    dir: PathBuf,
    shared: Arc<Shared>,
    /// `None` once closed. A read lock per append: appends from many threads do not contend.
    sender: RwLock<Option<mpsc::Sender<Request>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Serialises `gc` calls: each one removes a prefix of `segments` it computed unlocked.
    gc_lock: Mutex<()>,
}

impl MutationLog {
    /// Opens (or creates) the log in `dir`, calling `replay` for every valid record in order.
    /// A torn or corrupt tail of the last segment is cut off the file; corruption anywhere else
    /// is an error.
    pub fn open(dir: &Path, options: LogOptions, mut replay: impl FnMut(LogRecord)) -> Result<MutationLog> {
        assert!(options.segment_bytes_max > 0, "segment_bytes_max must be positive");
        fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
        let found = list_segments(dir)?;

        let mut segments = Vec::with_capacity(found.len());
        let mut next_index = None;
        for (i, (start_index, path)) in found.iter().enumerate() {
            if let Some(expected) = next_index
                && expected != *start_index
            {
                return Err(Error::CorruptLog {
                    path: path.clone(),
                    offset: 0,
                    detail: format!("segment starts at record {start_index} but the previous one ends at record {expected}: a segment is missing"),
                });
            }
            let is_last = i + 1 == found.len();
            let mut segment = Segment::new(path.clone());
            let scanned = scan_segment(path, is_last, &mut segment, &mut replay)?;
            next_index = Some(start_index + scanned.record_count);
            segment.bytes = scanned.bytes;
            segments.push(segment);
        }

        let (file, path, bytes, next_index) = match segments.last() {
            Some(current) => {
                let file = OpenOptions::new().append(true).open(&current.path).map_err(|e| Error::io("open", &current.path, e))?;
                (file, current.path.clone(), current.bytes, next_index.expect("set for every segment"))
            }
            None => {
                let path = segment_path(dir, 0);
                let file = create_segment(dir, &path)?;
                segments.push(Segment::new(path.clone()));
                (file, path, 0, 0)
            }
        };

        let shared =
            Arc::new(Shared {
            segments: Mutex::new(segments),
            appended_records: AtomicU64::new(0),
            appended_bytes: AtomicU64::new(0),
            fsyncs: AtomicU64::new(0),
            group_observer: std::sync::OnceLock::new(),
            group_waits: AtomicU64::new(0),
            cpu_busy: AtomicBool::new(false),
            failure: Mutex::new(None),
        });
        let (sender, receiver) = mpsc::channel();
        let writer = Writer { dir: dir.to_path_buf(), options, file, path, bytes, next_index, shared: shared.clone(), failed: None };
        let handle = std::thread::Builder::new()
            .name("tandem-mutation-log".into())
            .spawn(move || writer.run(receiver))
            .map_err(|e| Error::io("spawn the writer thread for", dir, e))?;
        Ok(MutationLog {
            dir: dir.to_path_buf(),
            shared,
            sender: RwLock::new(Some(sender)),
            writer: Mutex::new(Some(handle)),
            gc_lock: Mutex::new(()),
        })
    }

    /// Queues `records` (kept together, in order, in one segment) and returns at once; `done`
    /// runs on the writer thread once they are written and synced per the sync policy, in the
    /// order appends were submitted. On a write or sync failure every pending and later append
    /// gets an error: what reached the disk is unknown until the log is reopened.
    pub fn append(&self, records: Vec<LogRecord>, done: AppendDone) {
        let mut frames = Vec::new();
        let mut keys = Vec::with_capacity(records.len());
        for record in &records {
            if let Err(e) = push_frame(&mut frames, |out| record.encode_into(out)) {
                done(Err(e));
                return;
            }
            keys.push(record_key(record));
        }
        self.submit(Request { frames, record_count: records.len() as u64, keys, done });
    }

    /// `append` of `LogRecord::Mutation { gpid, mutation }` for each of `mutations`, encoded
    /// from them directly.
    pub fn append_mutations<'a>(&self, gpid: Gpid, mutations: impl ExactSizeIterator<Item = &'a Mutation>, done: AppendDone) {
        let mut frames = Vec::new();
        let mut keys = Vec::with_capacity(mutations.len());
        for m in mutations {
            if let Err(e) = push_frame(&mut frames, |out| LogRecord::encode_mutation_into(gpid, m, out)) {
                done(Err(e));
                return;
            }
            keys.push(RecordKey { gpid, decree: m.decree, reset: false });
        }
        self.submit(Request { frames, record_count: keys.len() as u64, keys, done });
    }

    fn submit(&self, request: Request) {
        // The lock is released before `done` runs, so a callback may close the log.
        let refused = {
            let sender = self.sender.read().unwrap_or_else(|e| e.into_inner());
            match sender.as_ref() {
                Some(tx) => tx.send(request).err().map(|mpsc::SendError(request)| request),
                None => Some(request),
            }
        };
        if let Some(request) = refused {
            (request.done)(Err(Error::LogClosed { dir: self.dir.clone() }));
        }
    }

    /// `append` that waits for its outcome.
    pub fn append_blocking(&self, records: Vec<LogRecord>) -> Result<()> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.append(
            records,
            Box::new(move |result| {
                // The receiver only goes away if this caller is gone: nobody to tell.
                let _ = tx.send(result);
            }),
        );
        rx.recv().unwrap_or_else(|_| Err(Error::LogClosed { dir: self.dir.clone() }))
    }

    /// Deletes old segments whose records are all durable elsewhere: for every gpid in the
    /// segment, `durable(gpid)` is at least the segment's largest decree for it, or `None`
    /// (the replica no longer lives on this server). Stops at the first segment that must stay
    /// and never deletes the current one. Returns how many segments were deleted.
    ///
    /// `durable` must not call back into this log.
    pub fn gc(&self, durable: &dyn Fn(Gpid) -> Option<Decree>) -> Result<usize> {
        let _serial = lock(&self.gc_lock);
        // Decide without holding the segment lock (the writer takes it on every group): on a
        // copy of what gc needs, which only the writer's current segment changes.
        let candidates: Vec<(PathBuf, HashMap<Gpid, Decree>)> = {
            let segments = lock(&self.shared.segments);
            segments[..segments.len() - 1].iter().map(|s| (s.path.clone(), s.decree_max.clone())).collect()
        };
        let candidates: Vec<PathBuf> = candidates
            .into_iter()
            .take_while(|(_, max)| max.iter().all(|(gpid, decree)| durable(*gpid).is_none_or(|d| d >= *decree)))
            .map(|(path, _)| path)
            .collect();

        let mut removed = 0;
        let mut result = Ok(());
        for path in &candidates {
            match fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    result = Err(Error::io("remove", path, e));
                    break;
                }
            }
            removed += 1;
        }
        if removed > 0 {
            lock(&self.shared.segments).drain(..removed);
            tracing::debug!(dir = %self.dir.display(), removed, "mutation log segments collected");
            if result.is_ok() {
                result = sync_dir(&self.dir);
            }
        }
        result.map(|()| removed)
    }

    /// The partitions that hold this log over `retain_bytes`, and up to which decree each
    /// (`tandem_core::log_read::holding_back` over the segments `gc` could remove).
    pub fn holding_back(&self, keep_after: &dyn Fn(Gpid) -> Option<Decree>, retain_bytes: u64) -> BTreeMap<Gpid, Decree> {
        let segments = lock(&self.shared.segments);
        let total = segments.iter().map(|s| s.bytes).sum();
        let removable = &segments[..segments.len().saturating_sub(1)];
        let pieces = removable.iter().map(|s| (s.bytes, s.decree_max.iter().map(|(g, d)| (*g, *d))));
        tandem_core::log_read::holding_back(pieces, total, retain_bytes, keep_after)
    }

    /// Partition `gpid`'s mutations from decree `from` on, by the replay rule of
    /// `tandem_core::log_read`, read from the segments still here. Only the partition's own
    /// records are read (each segment indexes them); the rule is applied to the index first, so
    /// only the records that survive it and are at or after `from` are read. Blocking: call it
    /// off the async runtime. A segment collected meanwhile is an error (hold the log first).
    pub fn read_partition(&self, gpid: Gpid, from: Decree) -> Result<Vec<Mutation>> {
        // Per segment, the partition's entries, in log order.
        let located: Vec<(PathBuf, Vec<IndexEntry>)> = {
            let segments = lock(&self.shared.segments);
            segments.iter().filter_map(|s| Some((s.path.clone(), s.index.get(&gpid)?.clone()))).collect()
        };
        // The replay rule, on the index alone: what survives, by decree, and where it is.
        let mut surviving = tandem_core::log_read::ReplayRule::default();
        for (i, (_, entries)) in located.iter().enumerate() {
            for e in entries {
                if e.reset {
                    surviving.reset();
                } else {
                    surviving.put(e.decree, (i, e.offset));
                }
            }
        }
        let mut files: HashMap<usize, File> = HashMap::new();
        let mut out = Vec::new();
        for (decree, (i, offset)) in surviving.from(from) {
            let path = &located[*i].0;
            let file = match files.entry(*i) {
                std::collections::hash_map::Entry::Occupied(f) => f.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => v.insert(File::open(path).map_err(|e| Error::io("open", path, e))?),
            };
            match read_record_at(file, *offset).map_err(|e| Error::io("read", path, e))? {
                Ok(LogRecord::Mutation { gpid: g, mutation }) if g == gpid && mutation.decree == *decree => out.push(mutation),
                Ok(other) => {
                    let detail = format!("the index says {gpid} decree {decree}, the record is {:?} decree {}", other.gpid(), record_key(&other).decree);
                    return Err(Error::CorruptLog { path: path.clone(), offset: *offset, detail });
                }
                Err(detail) => return Err(Error::CorruptLog { path: path.clone(), offset: *offset, detail }),
            }
        }
        Ok(out)
    }

    pub fn total_bytes(&self) -> u64 {
        lock(&self.shared.segments).iter().map(|s| s.bytes).sum()
    }

    pub fn segment_count(&self) -> usize {
        lock(&self.shared.segments).len()
    }

    /// Records written since open (not counting replayed ones).
    pub fn appended_records(&self) -> u64 {
        self.shared.appended_records.load(Ordering::Relaxed)
    }

    /// Bytes written since open, record headers included.
    pub fn appended_bytes(&self) -> u64 {
        self.shared.appended_bytes.load(Ordering::Relaxed)
    }

    /// Calls `observe` with the number of records of every group the writer writes from now
    /// on (one write, and one fsync when the policy syncs every batch). Set once; later calls
    /// are ignored.
    pub fn observe_groups(&self, observe: impl Fn(u64) + Send + Sync + 'static) {
        let _ = self.shared.group_observer.set(Box::new(observe));
    }

    /// fsync calls since open: `appended_records() / fsyncs()` is the group commit ratio.
    pub fn fsyncs(&self) -> u64 {
        self.shared.fsyncs.load(Ordering::Relaxed)
    }

    /// Whether CPU is scarce on this server (its replica server measures it): while it is, a
    /// group of appends arriving together waits out `group_commit_window`, so one fsync serves
    /// more of them.
    pub fn set_cpu_busy(&self, busy: bool) {
        self.shared.cpu_busy.store(busy, Ordering::Relaxed);
    }

    /// Groups that waited for more appends (the group commit window) since open.
    pub fn group_waits(&self) -> u64 {
        self.shared.group_waits.load(Ordering::Relaxed)
    }

    /// Why the log refuses appends, once a write or sync has failed.
    pub fn failure(&self) -> Option<String> {
        self.shared.failure.lock().expect("failure lock").clone()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes everything queued, then stops the writer; later appends fail with `LogClosed`.
    /// Idempotent. Must not be called from an `AppendDone` callback (it waits for that thread).
    pub fn close(&self) {
        // Dropping the only sender ends the writer's receive loop once the queue is drained.
        drop(self.sender.write().unwrap_or_else(|e| e.into_inner()).take());
        let handle = lock(&self.writer).take();
        if let Some(handle) = handle
            && handle.join().is_err()
        {
            tracing::error!(dir = %self.dir.display(), "mutation log writer thread panicked (in an append callback?)");
        }
    }
}

impl Drop for MutationLog {
    fn drop(&mut self) {
        self.close();
    }
}

/// The writer thread's state: only this thread touches the current file.
struct Writer {
    dir: PathBuf,
    options: LogOptions,
    file: File,
    path: PathBuf,
    /// Bytes in the current segment.
    bytes: u64,
    /// Index of the next record appended, over the whole life of the log.
    next_index: u64,
    shared: Arc<Shared>,
    /// Set by the first failed write or sync; the file's state is unknown from then on.
    failed: Option<String>,
}

impl Writer {
    fn run(mut self, receiver: mpsc::Receiver<Request>) {
        let window = if self.options.sync == SyncPolicy::EveryBatch { self.options.group_commit_window } else { Duration::ZERO };
        let mut policy = GroupCommit::new(window);
        let mut last_sync = None;
        while let Ok(first) = receiver.recv() {
            let mut group_bytes = first.frames.len();
            let mut group = vec![first];
            let mut drain = |group: &mut Vec<Request>| {
                while group_bytes < GROUP_BYTES_MAX {
                    match receiver.try_recv() {
                        Ok(request) => {
                            group_bytes += request.frames.len();
                            group.push(request);
                        }
                        Err(_) => break,
                    }
                }
            };
            drain(&mut group);
            let cpu_busy = self.shared.cpu_busy.load(Ordering::Relaxed);
            if let Some(deadline) = policy.deadline(last_sync, Instant::now(), cpu_busy) {
                self.shared.group_waits.fetch_add(1, Ordering::Relaxed);
                // The window is a time, not a condition: the writer sleeps through it and then
                // takes what arrived. Blocked in `recv` instead, it would be woken (a futex wake
                // by the appender and a context switch) for every append of the window.
                if let Some(rest) = deadline.checked_duration_since(Instant::now()) {
                    std::thread::sleep(rest);
                }
                drain(&mut group);
            }
            policy.observe(group.len());

            let records_before = self.shared.appended_records.load(Ordering::Relaxed);
            if self.failed.is_none()
                && let Err(e) = self.write_group(&group)
            {
                tracing::error!(dir = %self.dir.display(), error = %e, "mutation log write failed; refusing further appends");
                self.failed = Some(e.to_string());
                *self.shared.failure.lock().expect("failure lock") = Some(e.to_string());
            }
            if let Some(observe) = self.shared.group_observer.get() {
                observe(self.shared.appended_records.load(Ordering::Relaxed) - records_before);
            }
            last_sync = Some(Instant::now());
            for request in group {
                let result = match &self.failed {
                    None => Ok(()),
                    Some(detail) => Err(Error::LogFailed { dir: self.dir.clone(), detail: detail.clone() }),
                };
                (request.done)(result);
            }
        }
    }

    fn write_group(&mut self, group: &[Request]) -> Result<()> {
        let mut pending = Pending::default();
        for request in group {
            let segment_bytes = self.bytes + pending.frames.len() as u64;
            if segment_bytes >= self.options.segment_bytes_max && segment_bytes > 0 {
                self.write_out(&mut pending)?;
                self.roll()?;
            }
            pending.add(request);
        }
        let wrote = !pending.frames.is_empty();
        self.write_out(&mut pending)?;
        if wrote && self.options.sync == SyncPolicy::EveryBatch {
            self.sync()?;
        }
        Ok(())
    }

    /// Writes `pending` to the current segment and records what it holds for gc.
    fn write_out(&mut self, pending: &mut Pending) -> Result<()> {
        if pending.frames.is_empty() {
            return Ok(());
        }
        self.file.write_all(&pending.frames).map_err(|e| Error::io("write", &self.path, e))?;
        let start = self.bytes;
        self.bytes += pending.frames.len() as u64;
        self.next_index += pending.record_count;
        {
            let mut segments = lock(&self.shared.segments);
            let current = segments.last_mut().expect("the current segment is always listed");
            current.bytes = self.bytes;
            // Each frame is `len ‖ crc ‖ payload`: its offset follows from the lengths.
            let mut offset = 0usize;
            for key in pending.keys.drain(..) {
                current.add(key, start + offset as u64);
                let len = u32::from_be_bytes(pending.frames[offset..offset + 4].try_into().expect("4 bytes")) as usize;
                offset += HEADER_BYTES + len;
            }
        }
        self.shared.appended_records.fetch_add(pending.record_count, Ordering::Relaxed);
        self.shared.appended_bytes.fetch_add(pending.frames.len() as u64, Ordering::Relaxed);
        pending.frames.clear();
        pending.record_count = 0;
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        self.file.sync_data().map_err(|e| Error::io("fsync", &self.path, e))?;
        self.shared.fsyncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Syncs the current segment whatever the policy, so that only the last segment can ever
    /// hold a torn record, then starts the next one.
    fn roll(&mut self) -> Result<()> {
        self.sync()?;
        let path = segment_path(&self.dir, self.next_index);
        let file = create_segment(&self.dir, &path)?;
        lock(&self.shared.segments).push(Segment::new(path.clone()));
        self.file = file;
        self.path = path;
        self.bytes = 0;
        Ok(())
    }
}

#[derive(Default)]
struct Pending {
    frames: Vec<u8>,
    record_count: u64,
    keys: Vec<RecordKey>,
}

impl Pending {
    fn add(&mut self, request: &Request) {
        self.frames.extend_from_slice(&request.frames);
        self.record_count += request.record_count;
        self.keys.extend_from_slice(&request.keys);
    }
}

/// Appends one record's frame (`len ‖ crc32c ‖ payload`) to `frames`, the payload written by
/// `encode` in place; refuses (and leaves `frames` as it was) a payload over RECORD_BYTES_MAX.
fn push_frame(frames: &mut Vec<u8>, encode: impl FnOnce(&mut Vec<u8>)) -> Result<()> {
    let start = frames.len();
    frames.extend_from_slice(&[0u8; HEADER_BYTES]);
    encode(frames);
    let payload = &frames[start + HEADER_BYTES..];
    if payload.len() > RECORD_BYTES_MAX {
        let record_bytes = payload.len();
        frames.truncate(start);
        return Err(Error::RecordTooLarge { record_bytes, record_bytes_max: RECORD_BYTES_MAX });
    }
    let header = [(payload.len() as u32).to_be_bytes(), crc32c::crc32c(payload).to_be_bytes()];
    frames[start..start + 4].copy_from_slice(&header[0]);
    frames[start + 4..start + HEADER_BYTES].copy_from_slice(&header[1]);
    Ok(())
}

fn record_key(record: &LogRecord) -> RecordKey {
    RecordKey { gpid: record.gpid(), decree: record.decree(), reset: matches!(record, LogRecord::Reset { .. }) }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the data consistent, so a panic elsewhere does not taint it.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn segment_path(dir: &Path, start_index: u64) -> PathBuf {
    dir.join(format!("{SEGMENT_PREFIX}{start_index:0width$}", width = SEGMENT_INDEX_DIGITS))
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(SEGMENT_PREFIX)?;
    if digits.len() != SEGMENT_INDEX_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Segments in `dir`, oldest first. Other files are left alone.
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))? {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        if let Some(start_index) = entry.file_name().to_str().and_then(parse_segment_name) {
            found.push((start_index, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Creates an empty segment and makes its name durable, so a synced record in it cannot vanish
/// with a lost directory entry.
fn create_segment(dir: &Path, path: &Path) -> Result<File> {
    let file = OpenOptions::new().append(true).create_new(true).open(path).map_err(|e| Error::io("create", path, e))?;
    sync_dir(dir)?;
    Ok(file)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io("fsync directory", dir, e))
}

struct Scanned {
    record_count: u64,
    /// Bytes of valid records: the file's length once a torn tail is cut.
    bytes: u64,
}

/// Reads a segment, indexing its records into `segment` and handing each to `replay`.
fn scan_segment(path: &Path, is_last: bool, segment: &mut Segment, replay: &mut impl FnMut(LogRecord)) -> Result<Scanned> {
    let file = OpenOptions::new().read(true).write(is_last).open(path).map_err(|e| Error::io("open", path, e))?;
    let file_bytes = file.metadata().map_err(|e| Error::io("stat", path, e))?.len();
    let mut reader = BufReader::with_capacity(1 << 20, &file);
    let mut scanned = Scanned { record_count: 0, bytes: 0 };
    while scanned.bytes < file_bytes {
        let rest_bytes = file_bytes - scanned.bytes;
        match read_record(&mut reader, rest_bytes).map_err(|e| Error::io("read", path, e))? {
            Ok((record, record_bytes)) => {
                segment.add(record_key(&record), scanned.bytes);
                replay(record);
                scanned.bytes += record_bytes;
                scanned.record_count += 1;
            }
            Err(detail) if is_last => {
                tracing::warn!(
                    file = %path.display(),
                    offset = scanned.bytes,
                    cut_bytes = rest_bytes,
                    detail,
                    "cutting the torn tail of the mutation log"
                );
                drop(reader);
                file.set_len(scanned.bytes).map_err(|e| Error::io("truncate", path, e))?;
                file.sync_all().map_err(|e| Error::io("fsync", path, e))?;
                break;
            }
            Err(detail) => return Err(Error::CorruptLog { path: path.to_path_buf(), offset: scanned.bytes, detail }),
        }
    }
    Ok(scanned)
}

/// Reads the record at `offset` of `file` (written and indexed earlier). The outer error is an
/// IO failure; the inner one says why the bytes are not a valid record.
fn read_record_at(file: &File, offset: u64) -> io::Result<std::result::Result<LogRecord, String>> {
    use std::os::unix::fs::FileExt;
    let mut header = [0u8; HEADER_BYTES];
    file.read_exact_at(&mut header, offset)?;
    let payload_bytes = u32::from_be_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_be_bytes(header[4..].try_into().expect("4 bytes"));
    if payload_bytes > RECORD_BYTES_MAX {
        return Ok(Err(format!("record length {payload_bytes} exceeds record_bytes_max {RECORD_BYTES_MAX}")));
    }
    let mut payload = vec![0u8; payload_bytes];
    file.read_exact_at(&mut payload, offset + HEADER_BYTES as u64)?;
    let actual_crc = crc32c::crc32c(&payload);
    if actual_crc != crc {
        return Ok(Err(format!("crc32c {actual_crc:#010x} does not match the recorded {crc:#010x}")));
    }
    Ok(LogRecord::decode(&payload).map_err(|e| format!("payload does not decode: {e}")))
}

/// Reads one record with `rest_bytes` left in the file. The outer error is an IO failure; the
/// inner one says why the bytes are not a valid record.
fn read_record(reader: &mut impl Read, rest_bytes: u64) -> io::Result<std::result::Result<(LogRecord, u64), String>> {
    if rest_bytes < HEADER_BYTES as u64 {
        return Ok(Err(format!("{rest_bytes} bytes left, a record header needs {HEADER_BYTES}")));
    }
    let mut header = [0u8; HEADER_BYTES];
    reader.read_exact(&mut header)?;
    let payload_bytes = u32::from_be_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_be_bytes(header[4..].try_into().expect("4 bytes"));
    if payload_bytes > RECORD_BYTES_MAX {
        return Ok(Err(format!("record length {payload_bytes} exceeds record_bytes_max {RECORD_BYTES_MAX}")));
    }
    let rest_payload_bytes = rest_bytes - HEADER_BYTES as u64;
    if payload_bytes as u64 > rest_payload_bytes {
        return Ok(Err(format!("record length {payload_bytes} but only {rest_payload_bytes} bytes left")));
    }
    let mut payload = vec![0u8; payload_bytes];
    reader.read_exact(&mut payload)?;
    let actual_crc = crc32c::crc32c(&payload);
    if actual_crc != crc {
        return Ok(Err(format!("crc32c {actual_crc:#010x} does not match the recorded {crc:#010x}")));
    }
    Ok(LogRecord::decode(&payload)
        .map(|record| (record, (HEADER_BYTES + payload_bytes) as u64))
        .map_err(|e| format!("payload does not decode: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;
    use tandem_core::{Mutation, WriteOp};

    fn mutation(gpid: Gpid, decree: Decree, value_bytes: usize) -> LogRecord {
        LogRecord::Mutation {
            gpid,
            mutation: Mutation {
                ballot: 1,
                decree,
                timestamp_us: decree * 10,
                ops: vec![WriteOp::Put { key: format!("k{decree}").into_bytes(), value: vec![decree as u8; value_bytes] }],
            },
        }
    }

    fn open(dir: &Path, options: LogOptions) -> (MutationLog, Vec<LogRecord>) {
        let mut replayed = Vec::new();
        let log = MutationLog::open(dir, options, |r| replayed.push(r)).expect("open log");
        (log, replayed)
    }

    fn small_segments() -> LogOptions {
        LogOptions { segment_bytes_max: 1024, ..LogOptions::default() }
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        list_segments(dir).unwrap().into_iter().map(|(_, p)| p).collect()
    }

    #[test]
    fn the_log_is_shared_across_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<MutationLog>();
    }

    #[test]
    fn round_trip_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let g = Gpid::new(1, 0);
        let mut written = Vec::new();
        {
            let (log, replayed) = open(dir.path(), small_segments());
            assert!(replayed.is_empty());
            let mut decree = 1;
            for batch in 0..60 {
                let records: Vec<_> = (0..1 + batch % 3)
                    .map(|_| {
                        decree += 1;
                        mutation(g, decree - 1, 50)
                    })
                    .collect();
                written.extend(records.iter().cloned());
                log.append_blocking(records).unwrap();
            }
            log.append_blocking(vec![LogRecord::Reset { gpid: Gpid::new(2, 3), decree: 9 }]).unwrap();
            written.push(LogRecord::Reset { gpid: Gpid::new(2, 3), decree: 9 });
            assert!(log.segment_count() > 5, "{} segments", log.segment_count());
            let on_disk: u64 = segment_files(dir.path()).iter().map(|p| fs::metadata(p).unwrap().len()).sum();
            assert_eq!(log.total_bytes(), on_disk);
            assert_eq!(log.appended_records(), written.len() as u64);
        }
        let (log, replayed) = open(dir.path(), small_segments());
        assert_eq!(replayed, written);
        assert_eq!(log.segment_count(), segment_files(dir.path()).len());
    }

    #[test]
    fn mutations_appended_by_reference_replay_as_their_records() {
        let dir = tempfile::tempdir().unwrap();
        let g = Gpid::new(4, 2);
        let records: Vec<_> = (1..=5).map(|d| mutation(g, d, 40)).collect();
        let mutations: Vec<Mutation> = records
            .iter()
            .map(|r| match r {
                LogRecord::Mutation { mutation, .. } => mutation.clone(),
                LogRecord::Reset { .. } => unreachable!(),
            })
            .collect();
        {
            let (log, _) = open(dir.path(), LogOptions::default());
            let (tx, rx) = channel();
            log.append_mutations(g, mutations[..3].iter(), Box::new(move |r| tx.send(r).unwrap()));
            rx.recv().unwrap().unwrap();
            log.append(records[3..].to_vec(), Box::new(|r| r.unwrap()));
            // Too large for one record: refused whole, nothing of it written.
            let huge = [Mutation { ops: vec![WriteOp::Put { key: b"k".to_vec(), value: vec![0; RECORD_BYTES_MAX] }], ..mutations[0].clone() }];
            let (tx, rx) = channel();
            log.append_mutations(g, huge.iter(), Box::new(move |r| tx.send(r).unwrap()));
            assert!(matches!(rx.recv().unwrap(), Err(Error::RecordTooLarge { .. })));
        }
        let (_log, replayed) = open(dir.path(), LogOptions::default());
        assert_eq!(replayed, records);
    }

    /// Damage done to the last record of the last segment, each kind a crash or bit rot can leave.
    fn damage_last_record(path: &Path, kind: usize, last_record_bytes: u64) {
        let mut bytes = fs::read(path).unwrap();
        let start = bytes.len() - last_record_bytes as usize;
        match kind {
            // Torn in the payload, in the header.
            0 => bytes.truncate(bytes.len() - 5),
            1 => bytes.truncate(start + 3),
            // Bit flips in the payload and in the crc.
            2 => bytes[start + 20] ^= 0x40,
            3 => bytes[start + 5] ^= 0x01,
            // A length running past the end of the file; a length past record_bytes_max.
            4 => bytes[start..start + 4].copy_from_slice(&(last_record_bytes as u32).to_be_bytes()),
            5 => bytes[start..start + 4].copy_from_slice(&u32::MAX.to_be_bytes()),
            // A valid crc over a payload that does not decode.
            6 => {
                let payload = vec![7u8; (last_record_bytes as usize) - HEADER_BYTES];
                bytes[start + 4..start + 8].copy_from_slice(&crc32c::crc32c(&payload).to_be_bytes());
                bytes[start + 8..].copy_from_slice(&payload);
            }
            // Zeros, as a file extended but never written leaves.
            7 => bytes.extend_from_slice(&[0u8; 64]),
            _ => unreachable!(),
        }
        fs::write(path, bytes).unwrap();
    }

    #[test]
    fn torn_or_corrupt_tail_is_cut_and_the_log_goes_on() {
        let g = Gpid::new(3, 1);
        for kind in 0..8 {
            let dir = tempfile::tempdir().unwrap();
            let records: Vec<_> = (1..=10).map(|d| mutation(g, d, 30)).collect();
            let last_record_bytes = (HEADER_BYTES + records[9].encode().len()) as u64;
            {
                let (log, _) = open(dir.path(), LogOptions::default());
                for r in &records {
                    log.append_blocking(vec![r.clone()]).unwrap();
                }
            }
            let files = segment_files(dir.path());
            assert_eq!(files.len(), 1);
            let good_bytes = fs::metadata(&files[0]).unwrap().len() - if kind == 7 { 0 } else { last_record_bytes };
            damage_last_record(&files[0], kind, last_record_bytes);

            let survivors = if kind == 7 { 10 } else { 9 };
            {
                let (log, replayed) = open(dir.path(), LogOptions::default());
                assert_eq!(replayed, records[..survivors], "damage kind {kind}");
                assert_eq!(fs::metadata(&files[0]).unwrap().len(), good_bytes, "damage kind {kind}");
                log.append_blocking(vec![mutation(g, 11, 30), mutation(g, 12, 30)]).unwrap();
            }
            let (_log, replayed) = open(dir.path(), LogOptions::default());
            let mut expected = records[..survivors].to_vec();
            expected.extend([mutation(g, 11, 30), mutation(g, 12, 30)]);
            assert_eq!(replayed, expected, "damage kind {kind}");
        }
    }

    #[test]
    fn corruption_in_an_older_segment_is_an_error() {
        let g = Gpid::new(1, 1);
        for (kind, damage_offset) in [(0usize, 0usize), (1, 30)] {
            let dir = tempfile::tempdir().unwrap();
            {
                let (log, _) = open(dir.path(), small_segments());
                for d in 1..=60 {
                    log.append_blocking(vec![mutation(g, d, 50)]).unwrap();
                }
                assert!(log.segment_count() >= 3);
            }
            let middle = &segment_files(dir.path())[1];
            let mut bytes = fs::read(middle).unwrap();
            match kind {
                0 => bytes[..4].copy_from_slice(&0x7fff_ffffu32.to_be_bytes()),
                _ => bytes[damage_offset] ^= 0xff,
            }
            fs::write(middle, &bytes).unwrap();
            match MutationLog::open(dir.path(), small_segments(), |_| {}) {
                Err(Error::CorruptLog { path, offset, .. }) => {
                    assert_eq!(&path, middle);
                    assert_eq!(offset, 0);
                }
                Err(e) => panic!("unexpected error {e}"),
                Ok(_) => panic!("opened a log with a corrupt middle segment"),
            }
        }
    }

    #[test]
    fn a_missing_middle_segment_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (log, _) = open(dir.path(), small_segments());
            for d in 1..=60 {
                log.append_blocking(vec![mutation(Gpid::new(1, 1), d, 50)]).unwrap();
            }
        }
        fs::remove_file(&segment_files(dir.path())[1]).unwrap();
        let err = MutationLog::open(dir.path(), small_segments(), |_| {}).err().expect("gap detected");
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn group_commit_serves_many_writers_with_few_fsyncs() {
        const THREADS: u32 = 8;
        const APPENDS: u64 = 200;
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(open(dir.path(), LogOptions { segment_bytes_max: 64 << 10, ..LogOptions::default() }).0);
        let groups = Arc::new(Mutex::new(Vec::new()));
        let seen = groups.clone();
        log.observe_groups(move |records| seen.lock().unwrap().push(records));
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    let (tx, rx) = channel();
                    for d in 1..=APPENDS {
                        let tx = tx.clone();
                        log.append(
                            vec![mutation(Gpid::new(1, t), d, 16)],
                            Box::new(move |result| tx.send((d, result.is_ok())).unwrap()),
                        );
                    }
                    let outcomes: Vec<_> = rx.iter().take(APPENDS as usize).collect();
                    let expected: Vec<_> = (1..=APPENDS).map(|d| (d, true)).collect();
                    assert_eq!(outcomes, expected, "callbacks run in submission order and succeed");
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let total = u64::from(THREADS) * APPENDS;
        assert_eq!(log.appended_records(), total);
        assert!(log.fsyncs() < total, "{} fsyncs for {total} appends", log.fsyncs());
        assert!(log.segment_count() > 1);
        // Every record is in exactly one observed group; segment rolls add fsyncs, not groups.
        let groups = groups.lock().unwrap().clone();
        assert_eq!(groups.iter().sum::<u64>(), total);
        assert!(groups.len() as u64 <= log.fsyncs() && groups.iter().all(|&g| g >= 1), "{groups:?}");
        assert!(log.appended_bytes() > total * 16, "{} bytes", log.appended_bytes());
        drop(log);

        let (_log, replayed) = open(dir.path(), LogOptions::default());
        assert_eq!(replayed.len() as u64, total);
        for t in 0..THREADS {
            let decrees: Vec<_> = replayed
                .iter()
                .filter(|r| r.gpid() == Gpid::new(1, t))
                .map(|r| match r {
                    LogRecord::Mutation { mutation, .. } => mutation.decree,
                    LogRecord::Reset { .. } => unreachable!(),
                })
                .collect();
            assert_eq!(decrees, (1..=APPENDS).collect::<Vec<_>>());
        }
    }

    #[test]
    fn group_commit_waits_only_while_cpu_is_scarce_and_appends_arrive_together() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut p = GroupCommit::new(ms(1));
        // An idle log writes its first group at once; a group of one shows no company.
        assert_eq!(p.deadline(None, t0, true), None);
        p.observe(1);
        assert_eq!(p.deadline(Some(t0), t0, true), None);
        // Two appends together: the next group waits until a window after the last sync...
        p.observe(2);
        assert_eq!(p.deadline(Some(t0), t0, true), Some(t0 + ms(1)));
        // ... only while CPU is scarce, and not once the window has passed.
        assert_eq!(p.deadline(Some(t0), t0, false), None);
        assert_eq!(p.deadline(Some(t0), t0 + ms(2), true), None);
        // A zero window never waits.
        let mut p = GroupCommit::new(Duration::ZERO);
        p.observe(5);
        assert_eq!(p.deadline(Some(t0), t0, true), None);
    }

    #[test]
    fn a_writer_that_appends_one_at_a_time_never_waits() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = open(dir.path(), LogOptions { group_commit_window: Duration::from_secs(10), ..LogOptions::default() });
        log.set_cpu_busy(true);
        for d in 1..=50 {
            log.append_blocking(vec![mutation(Gpid::new(1, 0), d, 16)]).unwrap();
        }
        assert_eq!(log.group_waits(), 0);
        assert_eq!(log.fsyncs(), 50);
    }

    /// Eight writers that each append, wait until durable and append again, like replicas.
    fn eight_waiting_writers(cpu_busy: bool) -> (u64, u64) {
        const THREADS: u32 = 8;
        const APPENDS: u64 = 40;
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(open(dir.path(), LogOptions::default()).0);
        log.set_cpu_busy(cpu_busy);
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || (1..=APPENDS).for_each(|d| log.append_blocking(vec![mutation(Gpid::new(1, t), d, 16)]).unwrap()))
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(log.appended_records(), u64::from(THREADS) * APPENDS);
        (log.group_waits(), log.fsyncs())
    }

    #[test]
    fn waiting_writers_share_fsyncs_through_the_window_only_while_cpu_is_scarce() {
        let (waits, fsyncs) = eight_waiting_writers(true);
        assert!(waits > 0, "appends arrived together, yet no group waited for more");
        assert!(fsyncs * 2 < 320, "{fsyncs} fsyncs for 320 appends");
        let (waits, _) = eight_waiting_writers(false);
        assert_eq!(waits, 0, "with CPU to spare no group waits");
    }

    #[test]
    fn gc_deletes_covered_segments_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (Gpid::new(1, 0), Gpid::new(1, 1));
        // Every append after the first lands in a new segment.
        let options = LogOptions { segment_bytes_max: 1, ..LogOptions::default() };
        let batches = vec![
            vec![mutation(a, 1, 8), mutation(b, 1, 8)],
            vec![mutation(a, 2, 8)],
            vec![mutation(b, 2, 8)],
            vec![mutation(a, 3, 8)],
            vec![mutation(a, 4, 8)],
        ];
        {
            let (log, _) = open(dir.path(), options.clone());
            assert_eq!(log.gc(&|_| None).unwrap(), 0, "the current segment stays");
            for batch in &batches {
                log.append_blocking(batch.clone()).unwrap();
            }
            assert_eq!(log.segment_count(), 5);

            // Segment 3 (a ≤ 3) is covered but sits behind segment 2 (b = 2 > 1): it stays.
            let durable = |g: Gpid| Some(if g == a { 3 } else { 1 });
            assert_eq!(log.gc(&durable).unwrap(), 2);
            assert_eq!(log.segment_count(), 3);
            assert_eq!(segment_files(dir.path()).len(), 3);
            assert_eq!(log.gc(&durable).unwrap(), 0);
        }
        let (log, replayed) = open(dir.path(), options);
        assert_eq!(replayed, [mutation(b, 2, 8), mutation(a, 3, 8), mutation(a, 4, 8)]);
        // b no longer lives here; a is durable up to 4, yet the current segment stays.
        let durable = |g: Gpid| if g == a { Some(4) } else { None };
        assert_eq!(log.gc(&durable).unwrap(), 2);
        assert_eq!(log.segment_count(), 1);
        log.append_blocking(vec![mutation(a, 5, 8)]).unwrap();
        drop(log);
        let (_log, replayed) = open(dir.path(), LogOptions::default());
        assert_eq!(replayed, [mutation(a, 4, 8), mutation(a, 5, 8)]);
    }

    #[test]
    fn appends_after_close_fail_and_oversized_records_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = open(dir.path(), LogOptions { segment_bytes_max: 1 << 20, sync: SyncPolicy::None, ..LogOptions::default() });
        log.append_blocking(vec![mutation(Gpid::new(1, 0), 1, 8)]).unwrap();
        let huge = mutation(Gpid::new(1, 0), 2, RECORD_BYTES_MAX + 1);
        assert!(matches!(log.append_blocking(vec![huge]), Err(Error::RecordTooLarge { .. })));
        log.close();
        assert!(matches!(log.append_blocking(vec![mutation(Gpid::new(1, 0), 2, 8)]), Err(Error::LogClosed { .. })));
        assert_eq!(log.fsyncs(), 0, "SyncPolicy::None never syncs an append");
    }

    /// The real log, driven through `tandem_core::log_read::reader_conformance`.
    struct RealLog {
        dir: PathBuf,
        options: LogOptions,
        log: Option<MutationLog>,
    }

    impl tandem_core::log_read::LogUnderTest for RealLog {
        fn append(&mut self, records: Vec<LogRecord>) {
            self.log.as_ref().unwrap().append_blocking(records).unwrap();
        }
        fn read_partition(&mut self, gpid: Gpid, from: Decree) -> Vec<Mutation> {
            self.log.as_ref().unwrap().read_partition(gpid, from).unwrap()
        }
        fn collect(&mut self, keep_after: &dyn Fn(Gpid) -> Option<Decree>) {
            self.log.as_ref().unwrap().gc(keep_after).unwrap();
        }
        fn holding_back(&mut self, keep_after: &dyn Fn(Gpid) -> Option<Decree>, retain_bytes: u64) -> BTreeMap<Gpid, Decree> {
            self.log.as_ref().unwrap().holding_back(keep_after, retain_bytes)
        }
        fn reopen(&mut self) -> Vec<LogRecord> {
            drop(self.log.take());
            let (log, replayed) = open(&self.dir, self.options.clone());
            self.log = Some(log);
            replayed
        }
    }

    #[test]
    fn reads_a_partition_back_by_the_replay_rule_through_rolls_gc_and_reopen() {
        for segment_bytes_max in [512, 64 << 20] {
            let dir = tempfile::tempdir().unwrap();
            let options = LogOptions { segment_bytes_max, ..LogOptions::default() };
            let (log, _) = open(dir.path(), options.clone());
            let mut real = RealLog { dir: dir.path().to_path_buf(), options, log: Some(log) };
            tandem_core::log_read::reader_conformance(&mut real);
        }
    }

    #[test]
    fn reading_a_partition_reads_no_other_partitions_records() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = open(dir.path(), LogOptions::default());
        let (a, b) = (Gpid::new(1, 0), Gpid::new(2, 0));
        for d in 1..=50 {
            log.append_blocking(vec![mutation(a, d, 8), mutation(b, d, 8)]).unwrap();
        }
        // Corrupt every record of b in place: a still reads, b's corruption is reported.
        let (path, entries) = {
            let segments = lock(&log.shared.segments);
            (segments[0].path.clone(), segments[0].index[&b].clone())
        };
        {
            use std::os::unix::fs::FileExt;
            let f = OpenOptions::new().write(true).open(&path).unwrap();
            for e in &entries {
                f.write_all_at(&[0xff; 12], e.offset + HEADER_BYTES as u64).unwrap();
            }
        }
        assert_eq!(log.read_partition(a, 1).unwrap().len(), 50);
        assert!(matches!(log.read_partition(b, 1), Err(Error::CorruptLog { .. })));
    }
}
