//! The simulated mutation log of one replica server, shared by all its replicas: records framed
//! as on disk (`len ‖ crc32c ‖ payload`), group commit as `MutationLog`'s writer thread does it
//! (take every queued append, write them out, one fsync completes them all, then the next group),
//! failed writes and fsyncs, and a crash that keeps the synced prefix, some of the written but
//! unsynced records and possibly a torn last one. Replay cuts a torn tail by its crc, as
//! `tandem-storage`'s `MutationLog` does, and decodes with the production `LogRecord::decode`.
//!
//! ```text
//!   append ─▶ pending ──LogWrite──▶ frames[synced..] (in the page cache) ──LogSync──▶ synced
//!                                        ▲ a crash here keeps a random prefix, maybe torn
//! ```

use crate::rng::Rng;
use tandem_core::{Decree, Gpid, LogRecord};

const FRAME_HEADER_BYTES: usize = 8;
/// How often a crash with unsynced records in the file (torn tails enabled) leaves one of them
/// half written.
const TORN_SHARE: f64 = 0.75;

#[derive(Clone, Debug)]
struct Frame {
    gpid: Gpid,
    decree: Decree,
    bytes: Vec<u8>,
}

fn frame(record: &LogRecord) -> Frame {
    let payload = record.encode();
    let mut bytes = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
    bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&crc32c::crc32c(&payload).to_be_bytes());
    bytes.extend_from_slice(&payload);
    Frame { gpid: record.gpid(), decree: record.decree(), bytes }
}

/// Decodes a frame, or says why it is torn or corrupt.
fn unframe(bytes: &[u8]) -> Result<LogRecord, String> {
    if bytes.len() < FRAME_HEADER_BYTES {
        return Err(format!("{} bytes left, a record header needs {FRAME_HEADER_BYTES}", bytes.len()));
    }
    let len = u32::from_be_bytes(bytes[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_be_bytes(bytes[4..8].try_into().expect("4 bytes"));
    let payload = &bytes[FRAME_HEADER_BYTES..];
    if payload.len() != len {
        return Err(format!("record length {len} but {} bytes left", payload.len()));
    }
    if crc32c::crc32c(payload) != crc {
        return Err("crc mismatch".into());
    }
    LogRecord::decode(payload).map_err(|e| e.to_string())
}

/// What a sync did to each append it completed.
pub type Completion<W> = (W, Result<(), String>);

#[derive(Debug)]
pub struct SimLog<W> {
    /// Written to the file, in order; the first `synced` are durable.
    frames: Vec<Frame>,
    synced: usize,
    /// Submitted, not written yet: the next group write takes them all.
    pending: Vec<(Vec<Frame>, W)>,
    /// Written to the file (in `frames`), waiting for the fsync in flight.
    in_flight: Vec<W>,
    /// Set by the first failed write or sync: every later append fails too, as in `MutationLog`.
    failed: Option<String>,
    /// A group write is queued (`Event::LogWrite`).
    pub write_scheduled: bool,
    /// An fsync is in flight (`Event::LogSync`); the writer takes the next group after it.
    pub syncing: bool,
}

impl<W> Default for SimLog<W> {
    fn default() -> Self {
        SimLog {
            frames: Vec::new(),
            synced: 0,
            pending: Vec::new(),
            in_flight: Vec::new(),
            failed: None,
            write_scheduled: false,
            syncing: false,
        }
    }
}

/// How a crash left the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrashOutcome {
    pub unsynced_lost: usize,
    pub torn: bool,
}

impl<W> SimLog<W> {
    /// Queues records; `waiter` comes back from `sync` (or a failed `write`) with the outcome.
    /// Returns true when a group write must be scheduled: the writer is idle and none is queued.
    pub fn append(&mut self, records: &[LogRecord], waiter: W) -> bool {
        self.pending.push((records.iter().map(frame).collect(), waiter));
        if self.write_scheduled || self.syncing {
            return false;
        }
        self.write_scheduled = true;
        true
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    pub fn failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Records written to the file but not covered by an fsync yet: what a crash may lose.
    pub fn unsynced(&self) -> usize {
        self.frames.len() - self.synced
    }

    /// The writer takes every queued append and writes it out (`write_all`, into the page
    /// cache). Returns the appends that failed (a failed write, or a log that failed before);
    /// after a good write, `syncing` is set and `sync` must follow.
    pub fn write(&mut self, write_fails: bool) -> Vec<Completion<W>> {
        self.write_scheduled = false;
        let batch = std::mem::take(&mut self.pending);
        if self.failed.is_none() && write_fails {
            self.failed = Some("simulated write failure".into());
        }
        if let Some(e) = &self.failed {
            return batch.into_iter().map(|(_, w)| (w, Err(e.clone()))).collect();
        }
        for (frames, w) in batch {
            self.frames.extend(frames);
            self.in_flight.push(w);
        }
        self.syncing = !self.in_flight.is_empty();
        Vec::new()
    }

    /// The fsync of the written groups returns: every append written before it completes.
    /// A failed fsync leaves the written pages maybe on disk (a crash decides) and fails the
    /// log. Afterwards `has_pending` says whether the writer has the next group to write.
    pub fn sync(&mut self, sync_fails: bool) -> Vec<Completion<W>> {
        self.syncing = false;
        let batch = std::mem::take(&mut self.in_flight);
        if batch.is_empty() {
            // Nothing was written since the last fsync (a `write_and_sync` took it).
            return Vec::new();
        }
        if self.failed.is_none() {
            if sync_fails {
                self.failed = Some("simulated fsync failure".into());
            } else {
                self.synced = self.frames.len();
            }
        }
        let result = match &self.failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        };
        batch.into_iter().map(|w| (w, result.clone())).collect()
    }

    /// A write and its fsync at once (the reset record before a checkpoint is installed, which
    /// the runtime awaits inside the replica's task): the fsync in flight finishes first, then
    /// every queued append is written and synced. Completes them all.
    pub fn write_and_sync(&mut self, write_fails: bool, sync_fails: bool) -> Vec<Completion<W>> {
        let mut done = self.sync(false);
        done.extend(self.write(write_fails));
        done.extend(self.sync(sync_fails));
        done
    }

    /// The machine stops: queued appends vanish, a random part of the unsynced tail survives,
    /// and with `torn_allowed` the next record may survive only in part.
    pub fn crash(&mut self, rng: &mut Rng, torn_allowed: bool) -> CrashOutcome {
        self.pending.clear();
        self.in_flight.clear();
        self.write_scheduled = false;
        self.syncing = false;
        self.failed = None;
        let unsynced = self.frames.len() - self.synced;
        let torn = torn_allowed && unsynced > 0 && rng.chance(TORN_SHARE);
        // Some prefix of the unsynced records reached the disk whole; a torn crash also left
        // part of the next one.
        let kept = if unsynced == 0 { 0 } else { rng.range(0, unsynced as u64 - torn as u64) as usize };
        if torn {
            let f = &mut self.frames[self.synced + kept];
            let cut = rng.range(1, f.bytes.len() as u64 - 1) as usize;
            f.bytes.truncate(cut);
        }
        self.frames.truncate(self.synced + kept + torn as usize);
        CrashOutcome { unsynced_lost: unsynced - kept, torn }
    }

    /// Reads the log back at start: every record up to the first torn or corrupt one, which is
    /// cut with everything after it. Returns the records and whether a tail was cut.
    pub fn replay(&mut self) -> (Vec<LogRecord>, bool) {
        let mut records = Vec::with_capacity(self.frames.len());
        let mut cut = None;
        for (i, f) in self.frames.iter().enumerate() {
            match unframe(&f.bytes) {
                Ok(r) => records.push(r),
                Err(_) => {
                    cut = Some(i);
                    break;
                }
            }
        }
        if let Some(i) = cut {
            self.frames.truncate(i);
        }
        // The file was read back whole; its next fsync covers it, and nothing in it was acked
        // unless it was synced before.
        self.synced = self.frames.len();
        (records, cut.is_some())
    }

    /// Drops leading records no replica needs: `keep_after(gpid)` is the decree a replica
    /// still needs records after (None: the server no longer has the replica).
    pub fn gc(&mut self, keep_after: &dyn Fn(Gpid) -> Option<Decree>) -> usize {
        let n = self.frames[..self.synced].iter().take_while(|f| keep_after(f.gpid).is_none_or(|d| f.decree <= d)).count();
        self.frames.drain(..n);
        self.synced -= n;
        n
    }

    /// The partitions that hold this log over `retain_bytes` (`log_read::holding_back`), record
    /// by record over what `gc` could drop (the synced records).
    pub fn holding_back(&self, keep_after: &dyn Fn(Gpid) -> Option<Decree>, retain_bytes: u64) -> std::collections::BTreeMap<Gpid, Decree> {
        let total: u64 = self.frames.iter().map(|f| f.bytes.len() as u64).sum();
        let pieces = self.frames[..self.synced].iter().map(|f| (f.bytes.len() as u64, [(f.gpid, f.decree)]));
        tandem_core::log_read::holding_back(pieces, total, retain_bytes, keep_after)
    }

    /// Partition `gpid`'s mutations from `from` on, by the replay rule, from what the file holds
    /// (written, synced or not), decoding only the partition's own frames.
    pub fn read_partition(&self, gpid: Gpid, from: Decree) -> Result<Vec<tandem_core::Mutation>, String> {
        let mut history = tandem_core::log_read::PartitionLog::default();
        for f in self.frames.iter().filter(|f| f.gpid == gpid) {
            history.push(unframe(&f.bytes)?);
        }
        Ok(history.from(from).cloned().collect())
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_core::Mutation;

    fn rec(decree: Decree) -> LogRecord {
        LogRecord::Mutation { gpid: Gpid::new(1, 0), mutation: Mutation { ballot: 1, decree, timestamp_us: 5, ops: vec![] } }
    }

    #[test]
    fn group_commit_completes_every_queued_append() {
        let mut log = SimLog::default();
        assert!(log.append(&[rec(1)], "a"));
        assert!(!log.append(&[rec(2)], "b"), "one write is already scheduled");
        assert_eq!(log.write(false), vec![]);
        assert_eq!(log.unsynced(), 2, "written, not synced");
        assert!(!log.append(&[rec(3)], "c"), "the writer takes the next group after the fsync");
        assert_eq!(log.sync(false), vec![("a", Ok(())), ("b", Ok(()))]);
        assert_eq!(log.unsynced(), 0);
        assert!(log.has_pending());
        log.write(false);
        assert_eq!(log.sync(false), vec![("c", Ok(()))]);
        assert_eq!(log.replay().0, vec![rec(1), rec(2), rec(3)]);
    }

    #[test]
    fn a_failed_write_fails_every_later_append() {
        let mut log = SimLog::default();
        log.append(&[rec(1)], 1);
        assert!(log.write(true)[0].1.is_err());
        assert!(!log.syncing, "nothing was written, nothing to sync");
        log.append(&[rec(2)], 2);
        assert!(log.write(false)[0].1.is_err());
        assert!(log.is_empty());
    }

    #[test]
    fn write_and_sync_finishes_the_fsync_in_flight_first() {
        let mut log = SimLog::default();
        log.append(&[rec(1)], 1);
        log.write(false);
        log.append(&[rec(2)], 2);
        assert_eq!(log.write_and_sync(false, false), vec![(1, Ok(())), (2, Ok(()))]);
        assert_eq!(log.sync(true), vec![], "the late fsync event finds nothing to sync");
        assert!(!log.failed());
        assert_eq!(log.unsynced(), 0);
    }

    #[test]
    fn crash_keeps_synced_records_and_replay_cuts_a_torn_tail() {
        let mut torn = 0;
        for seed in 0..50 {
            let mut rng = Rng::new(seed);
            let mut log = SimLog::default();
            log.append(&[rec(1)], ());
            log.write(false);
            log.sync(false);
            log.append(&[rec(2), rec(3)], ());
            log.write(false);
            let out = log.crash(&mut rng, true);
            let (records, cut) = log.replay();
            assert_eq!(records[0], rec(1), "seed {seed}");
            assert_eq!(cut, out.torn, "seed {seed}");
            assert_eq!(records.len(), 3 - out.unsynced_lost, "seed {seed}");
            torn += out.torn as usize;
        }
        assert!(torn > 0, "some crash tears the record after the kept ones");
    }

    /// The twin of `MutationLog`, driven through the same conformance suite.
    impl tandem_core::log_read::LogUnderTest for SimLog<()> {
        fn append(&mut self, records: Vec<LogRecord>) {
            SimLog::append(self, &records, ());
            self.write(false);
            self.sync(false);
        }
        fn read_partition(&mut self, gpid: Gpid, from: Decree) -> Vec<tandem_core::Mutation> {
            SimLog::read_partition(self, gpid, from).unwrap()
        }
        fn collect(&mut self, keep_after: &dyn Fn(Gpid) -> Option<Decree>) {
            self.gc(keep_after);
        }
        fn holding_back(&mut self, keep_after: &dyn Fn(Gpid) -> Option<Decree>, retain_bytes: u64) -> std::collections::BTreeMap<Gpid, Decree> {
            SimLog::holding_back(self, keep_after, retain_bytes)
        }
        fn reopen(&mut self) -> Vec<LogRecord> {
            self.replay().0
        }
    }

    #[test]
    fn reads_a_partition_back_as_the_real_log_does() {
        tandem_core::log_read::reader_conformance(&mut SimLog::<()>::default());
    }

    #[test]
    fn gc_drops_only_what_no_replica_needs() {
        let mut log = SimLog::default();
        log.append(&[rec(1), rec(2), rec(3)], ());
        log.write(false);
        log.sync(false);
        assert_eq!(log.gc(&|_| Some(2)), 2);
        assert_eq!(log.replay().0, vec![rec(3)]);
    }
}
