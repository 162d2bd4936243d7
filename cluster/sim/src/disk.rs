//! The simulated mutation log of one replica server, shared by all its replicas: records framed
//! as on disk (`len ‖ crc32c ‖ payload`), group commit (one sync completes every append queued
//! before it), failed writes and fsyncs, and a crash that keeps the synced prefix, some of the
//! unsynced records and possibly a torn last one. Replay cuts a torn tail by its crc, as
//! `tandem-storage`'s `MutationLog` does, and decodes with the production `LogRecord::decode`.

use crate::rng::Rng;
use tandem_core::{Decree, Gpid, LogRecord};

const FRAME_HEADER_BYTES: usize = 8;

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
    let decree = match record {
        LogRecord::Mutation { mutation, .. } => mutation.decree,
        LogRecord::Reset { decree, .. } => *decree,
    };
    Frame { gpid: record.gpid(), decree, bytes }
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
    /// Submitted, not written yet: the next group commit takes them all.
    pending: Vec<(Vec<Frame>, W)>,
    /// Set by the first failed write or sync: every later append fails too, as in `MutationLog`.
    failed: Option<String>,
    pub sync_scheduled: bool,
}

impl<W> Default for SimLog<W> {
    fn default() -> Self {
        SimLog { frames: Vec::new(), synced: 0, pending: Vec::new(), failed: None, sync_scheduled: false }
    }
}

/// How a crash left the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrashOutcome {
    pub unsynced_lost: usize,
    pub torn: bool,
}

impl<W> SimLog<W> {
    /// Queues records; `waiter` comes back from `sync` with the outcome. Returns true when a
    /// group commit must be scheduled.
    pub fn append(&mut self, records: &[LogRecord], waiter: W) -> bool {
        self.pending.push((records.iter().map(frame).collect(), waiter));
        !std::mem::replace(&mut self.sync_scheduled, true)
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    pub fn failed(&self) -> bool {
        self.failed.is_some()
    }

    /// One group commit: writes every queued append and fsyncs. `write_fails` / `sync_fails`
    /// inject the disk faults.
    pub fn sync(&mut self, write_fails: bool, sync_fails: bool) -> Vec<Completion<W>> {
        self.sync_scheduled = false;
        let batch = std::mem::take(&mut self.pending);
        if self.failed.is_none() {
            if write_fails {
                self.failed = Some("simulated write failure".into());
            } else {
                for (frames, _) in &batch {
                    self.frames.extend(frames.iter().cloned());
                }
                if sync_fails {
                    // fsync failed: the pages may or may not reach the disk (a crash decides).
                    self.failed = Some("simulated fsync failure".into());
                } else {
                    self.synced = self.frames.len();
                }
            }
        }
        let result = match &self.failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        };
        batch.into_iter().map(|(_, w)| (w, result.clone())).collect()
    }

    /// The machine stops: queued appends vanish, a random part of the unsynced tail survives,
    /// and with `torn_allowed` the next record may survive only in part.
    pub fn crash(&mut self, rng: &mut Rng, torn_allowed: bool) -> CrashOutcome {
        self.pending.clear();
        self.sync_scheduled = false;
        self.failed = None;
        let unsynced = self.frames.len() - self.synced;
        let kept = if unsynced == 0 { 0 } else { rng.range(0, unsynced as u64) as usize };
        let mut torn = false;
        if torn_allowed && kept < unsynced && rng.chance(0.5) {
            let f = &mut self.frames[self.synced + kept];
            let cut = rng.range(1, f.bytes.len() as u64 - 1) as usize;
            f.bytes.truncate(cut);
            torn = true;
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
        assert!(!log.append(&[rec(2)], "b"), "one sync is already scheduled");
        let done = log.sync(false, false);
        assert_eq!(done, vec![("a", Ok(())), ("b", Ok(()))]);
        assert_eq!(log.replay().0, vec![rec(1), rec(2)]);
    }

    #[test]
    fn a_failed_write_fails_every_later_append() {
        let mut log = SimLog::default();
        log.append(&[rec(1)], 1);
        assert!(log.sync(true, false)[0].1.is_err());
        log.append(&[rec(2)], 2);
        assert!(log.sync(false, false)[0].1.is_err());
        assert!(log.is_empty());
    }

    #[test]
    fn crash_keeps_synced_records_and_replay_cuts_a_torn_tail() {
        for seed in 0..50 {
            let mut rng = Rng::new(seed);
            let mut log = SimLog::default();
            log.append(&[rec(1)], ());
            log.sync(false, false);
            log.append(&[rec(2), rec(3)], ());
            log.sync(false, true);
            let out = log.crash(&mut rng, true);
            let (records, cut) = log.replay();
            assert_eq!(records[0], rec(1), "seed {seed}");
            assert_eq!(cut, out.torn, "seed {seed}");
            assert!(records.len() <= 3);
        }
    }

    #[test]
    fn gc_drops_only_what_no_replica_needs() {
        let mut log = SimLog::default();
        log.append(&[rec(1), rec(2), rec(3)], ());
        log.sync(false, false);
        assert_eq!(log.gc(&|_| Some(2)), 2);
        assert_eq!(log.replay().0, vec![rec(3)]);
    }
}
