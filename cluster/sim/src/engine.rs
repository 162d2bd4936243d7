//! The storage engine of a simulated replica: the production in-memory twin (`MemEngine`), shared
//! between the core (which applies to it) and the simulated server (which flushes and
//! checkpoints it), like `SharedEngine` in the replica runtime. RocksDB runs with its WAL off, so
//! a crash loses what was not flushed: `flushed` is what survives.
//!
//! Every applied decree leaves a fingerprint of its ops, which the decree-agreement checker
//! drains after each step.

use crate::hash::Fnv64;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tandem_core::storage::{KvEngine, MemEngine};
use tandem_core::{Decree, WriteOp};

#[derive(Debug, Default)]
struct State {
    live: MemEngine,
    flushed: MemEngine,
    applied: Vec<Applied>,
    /// Every stored record applied (key, stored value), for the two-site LWW oracle.
    puts: Vec<(Vec<u8>, Vec<u8>)>,
}

/// One decree as an engine applied it: the decree-agreement checker compares fingerprints, the
/// backup oracle (`crate::backup::Oracle`) keeps the ops.
#[derive(Clone, Debug)]
pub struct Applied {
    pub decree: Decree,
    pub fingerprint: u64,
    pub timestamp_us: u64,
    pub ops: Vec<WriteOp>,
}

#[derive(Clone, Debug, Default)]
pub struct SimEngine(Arc<Mutex<State>>);

/// The fingerprint of a decree's ops, as the decree-agreement checker compares them.
pub fn ops_fingerprint(ops: &[WriteOp]) -> u64 {
    let mut h = Fnv64::default();
    for op in ops {
        match op {
            WriteOp::Put { key, value } => h.u64(1).u64(key.len() as u64).bytes(key).u64(value.len() as u64).bytes(value),
            WriteOp::Delete { key } => h.u64(2).u64(key.len() as u64).bytes(key),
            WriteOp::Watermark { origin, watermark_us } => h.u64(3).u64(*origin as u64).u64(*watermark_us),
        };
    }
    h.finish()
}

impl SimEngine {
    /// An engine holding a checkpoint: on disk already, so flushed too.
    pub fn from_checkpoint(e: MemEngine) -> SimEngine {
        SimEngine(Arc::new(Mutex::new(State { live: e.clone(), flushed: e, ..Default::default() })))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().expect("one thread: the engine lock is never poisoned")
    }

    /// Makes everything applied so far survive a crash; returns the flushed decree.
    pub fn flush(&self) -> Decree {
        let mut s = self.lock();
        s.flushed = s.live.clone();
        s.flushed.last_applied_decree()
    }

    pub fn flushed_decree(&self) -> Decree {
        self.lock().flushed.last_applied_decree()
    }

    /// Decrees applied but not flushed (what a crash would lose, and the log must keep).
    pub fn unflushed(&self) -> u64 {
        let s = self.lock();
        s.live.last_applied_decree().saturating_sub(s.flushed.last_applied_decree())
    }

    /// What a restarted server opens: the flushed state.
    pub fn reopen(&self) -> SimEngine {
        let flushed = self.lock().flushed.clone();
        SimEngine(Arc::new(Mutex::new(State { live: flushed.clone(), flushed, ..Default::default() })))
    }

    /// A checkpoint (the runtime flushes, then hard-links the files): the applied state.
    pub fn checkpoint(&self) -> MemEngine {
        self.lock().live.clone()
    }

    pub fn data(&self) -> BTreeMap<Vec<u8>, Vec<u8>> {
        self.lock().live.data().clone()
    }

    pub fn take_applied(&self) -> Vec<Applied> {
        std::mem::take(&mut self.lock().applied)
    }

    /// The records applied since the last call: (stored key, stored value).
    pub fn take_puts(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        std::mem::take(&mut self.lock().puts)
    }

    /// A background compaction (`MemEngine::compact`) of what is applied and of what is on
    /// disk alike; returns how many values the applied state lost.
    pub fn compact(&self, now_us: u64, tombstone_retention_ms: u64, outgoing_hold_us: u64) -> usize {
        let mut s = self.lock();
        s.flushed.compact(now_us, tombstone_retention_ms, outgoing_hold_us);
        s.live.compact(now_us, tombstone_retention_ms, outgoing_hold_us)
    }
}

impl KvEngine for SimEngine {
    fn get(&self, key: &[u8]) -> tandem_core::Result<Option<Vec<u8>>> {
        self.lock().live.get(key)
    }

    fn scan(&self, start: &[u8], end: Option<&[u8]>, limit: usize) -> tandem_core::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.lock().live.scan(start, end, limit)
    }

    fn apply(&mut self, decree: Decree, timestamp_us: u64, ops: &[WriteOp]) -> tandem_core::Result<()> {
        let mut s = self.lock();
        s.live.apply(decree, timestamp_us, ops)?;
        s.applied.push(Applied { decree, fingerprint: ops_fingerprint(ops), timestamp_us, ops: ops.to_vec() });
        for op in ops {
            if let WriteOp::Put { key, value } = op {
                s.puts.push((key.clone(), value.clone()));
            }
        }
        Ok(())
    }

    fn last_applied_decree(&self) -> Decree {
        self.lock().live.last_applied_decree()
    }

    fn clock_bound_us(&self) -> u64 {
        self.lock().live.clock_bound_us()
    }

    fn dup_watermarks(&self) -> BTreeMap<u8, u64> {
        self.lock().live.dup_watermarks()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conforms_and_loses_unflushed_state_on_reopen() {
        tandem_core::storage::engine_conformance(|| Box::new(SimEngine::default()));
        let mut e = SimEngine::default();
        e.apply(1, 0, &[WriteOp::Put { key: b"a".to_vec(), value: b"1".to_vec() }]).unwrap();
        assert_eq!(e.flush(), 1);
        e.apply(2, 0, &[WriteOp::Put { key: b"b".to_vec(), value: b"2".to_vec() }]).unwrap();
        let r = e.reopen();
        assert_eq!(r.last_applied_decree(), 1);
        assert_eq!(r.get(b"b").unwrap(), None);
        assert_eq!(e.take_applied().len(), 2);
    }
}
