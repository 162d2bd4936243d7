//! The storage engine behind a replica, as a trait with an in-memory twin. The RocksDB engine in
//! `tandem-storage` passes the same conformance tests (`engine_conformance`).

use crate::error::Result;
use crate::mutation::{Mutation, WriteOp};
use crate::types::Decree;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A key-ordered store of stored keys and values that remembers the last decree applied to it.
pub trait KvEngine: Send {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Up to `limit` records with `start <= key < end` (no end = to the last key), in key order.
    fn scan(&self, start: &[u8], end: Option<&[u8]>, limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;

    /// Applies the ops of committed decree `decree`, whose mutation carries `timestamp_us`, and
    /// records it as the last applied decree and the clock bound (the largest timestamp applied),
    /// atomically. `decree` must be `last_applied_decree() + 1`.
    fn apply(&mut self, decree: Decree, timestamp_us: u64, ops: &[WriteOp]) -> Result<()>;

    /// Applies the ops of committed mutations of consecutive decrees, the first being
    /// `last_applied_decree() + 1`, and records the last one as the last applied decree. An
    /// engine that can write them all at once overrides this (RocksDB: one write batch, so one
    /// memtable insert of the last-applied key instead of one per decree); by default each is
    /// applied in turn.
    fn apply_many(&mut self, mutations: &[Arc<Mutation>]) -> Result<()> {
        for m in mutations {
            self.apply(m.decree, m.timestamp_us, &m.ops)?;
        }
        Ok(())
    }

    fn last_applied_decree(&self) -> Decree;

    /// The largest mutation timestamp applied (persisted with the last applied decree): a
    /// partition's hybrid clock resumes above it after a restart or from a learned checkpoint,
    /// so its timetags never go back (DESIGN.md §5) even once the log that carried them is gone.
    fn clock_bound_us(&self) -> u64;

    /// The largest watermark applied of each other site that ships here (`WriteOp::Watermark`,
    /// persisted with the last applied decree), by origin cluster id.
    fn dup_watermarks(&self) -> BTreeMap<u8, u64>;

    /// The watermark of `origin` applied here; 0 when it never sent one.
    fn dup_watermark_us(&self, origin: u8) -> u64 {
        self.dup_watermarks().get(&origin).copied().unwrap_or(0)
    }
}

/// Below which timestamp compaction may drop tombstones and expired values for the sites that
/// ship here: the smallest of their watermarks (no site: no bound).
pub fn incoming_hold_us(watermarks: &BTreeMap<u8, u64>) -> u64 {
    watermarks.values().copied().min().unwrap_or(u64::MAX)
}

/// The in-memory twin: a BTreeMap.
#[derive(Clone, Debug, Default)]
pub struct MemEngine {
    data: BTreeMap<Vec<u8>, Vec<u8>>,
    last_applied: Decree,
    clock_bound_us: u64,
    watermarks: BTreeMap<u8, u64>,
}

impl MemEngine {
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// A state that starts at `decree` (a learned checkpoint).
    pub fn from_parts(data: BTreeMap<Vec<u8>, Vec<u8>>, last_applied: Decree, clock_bound_us: u64) -> Self {
        MemEngine { data, last_applied, clock_bound_us, watermarks: BTreeMap::new() }
    }

    pub fn data(&self) -> &BTreeMap<Vec<u8>, Vec<u8>> {
        &self.data
    }

    /// A compaction at `now_us`: drops what `value::compaction_drops` lets go, with the tombstone
    /// retention and the hold of this site's own duplications (`outgoing_hold_us`) as the host
    /// set them, and the watermarks of the sites shipping here. Returns how many went.
    pub fn compact(&mut self, now_us: u64, tombstone_retention_ms: u64, outgoing_hold_us: u64) -> usize {
        let hold_us = incoming_hold_us(&self.watermarks).min(outgoing_hold_us);
        let before = self.data.len();
        self.data.retain(|_, v| !crate::value::compaction_drops(v, now_us, tombstone_retention_ms, hold_us));
        before - self.data.len()
    }
}

impl KvEngine for MemEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.data.get(key).cloned())
    }

    fn scan(&self, start: &[u8], end: Option<&[u8]>, limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        use std::ops::Bound;
        let upper = match end {
            Some(e) => Bound::Excluded(e.to_vec()),
            None => Bound::Unbounded,
        };
        Ok(self
            .data
            .range((Bound::Included(start.to_vec()), upper))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn apply(&mut self, decree: Decree, timestamp_us: u64, ops: &[WriteOp]) -> Result<()> {
        assert_eq!(decree, self.last_applied + 1, "decrees are applied in order");
        self.clock_bound_us = self.clock_bound_us.max(timestamp_us);
        for op in ops {
            match op {
                WriteOp::Put { key, value } => {
                    self.data.insert(key.clone(), value.clone());
                }
                WriteOp::Delete { key } => {
                    self.data.remove(key);
                }
                WriteOp::Watermark { origin, watermark_us } => {
                    let w = self.watermarks.entry(*origin).or_default();
                    *w = (*w).max(*watermark_us);
                }
            }
        }
        self.last_applied = decree;
        Ok(())
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

/// Conformance tests every `KvEngine` must pass; call from each implementation's tests.
pub fn engine_conformance(mut fresh: impl FnMut() -> Box<dyn KvEngine>) {
    let mut e = fresh();
    assert_eq!((e.last_applied_decree(), e.clock_bound_us()), (0, 0));
    assert_eq!(e.get(b"a").unwrap(), None);
    e.apply(1, 100, &[WriteOp::Put { key: b"a".to_vec(), value: b"1".to_vec() }, WriteOp::Put { key: b"b".to_vec(), value: b"2".to_vec() }])
        .unwrap();
    e.apply(2, 200, &[WriteOp::Put { key: b"c".to_vec(), value: b"3".to_vec() }, WriteOp::Delete { key: b"a".to_vec() }]).unwrap();
    assert_eq!((e.last_applied_decree(), e.clock_bound_us()), (2, 200));
    assert_eq!(e.get(b"a").unwrap(), None);
    assert_eq!(e.get(b"b").unwrap(), Some(b"2".to_vec()));
    let all = e.scan(b"", None, 10).unwrap();
    assert_eq!(all, vec![(b"b".to_vec(), b"2".to_vec()), (b"c".to_vec(), b"3".to_vec())]);
    assert_eq!(e.scan(b"b", Some(b"c"), 10).unwrap().len(), 1);
    assert_eq!(e.scan(b"", None, 1).unwrap().len(), 1);
    // Deleting a missing key is fine; an empty op list still advances the decree.
    e.apply(3, 300, &[WriteOp::Delete { key: b"zz".to_vec() }]).unwrap();
    e.apply(4, 400, &[]).unwrap();
    assert_eq!(e.last_applied_decree(), 4);
    // Several decrees at once: later ones win, and the last is the last applied.
    let m = |decree, ops| Arc::new(Mutation { ballot: 1, decree, timestamp_us: decree * 100, ops });
    e.apply_many(&[
        m(5, vec![WriteOp::Put { key: b"d".to_vec(), value: b"4".to_vec() }, WriteOp::Delete { key: b"b".to_vec() }]),
        m(6, vec![]),
        m(7, vec![WriteOp::Put { key: b"d".to_vec(), value: b"5".to_vec() }, WriteOp::Put { key: b"b".to_vec(), value: b"6".to_vec() }]),
    ])
    .unwrap();
    assert_eq!((e.last_applied_decree(), e.clock_bound_us()), (7, 700));
    assert_eq!(e.get(b"d").unwrap(), Some(b"5".to_vec()));
    assert_eq!(e.get(b"b").unwrap(), Some(b"6".to_vec()));
    e.apply_many(&[]).unwrap();
    assert_eq!(e.last_applied_decree(), 7);
    // The clock bound never goes back, whatever a mutation carries.
    e.apply(8, 5, &[]).unwrap();
    assert_eq!(e.clock_bound_us(), 700);
    // Watermarks: the largest per origin, never a record.
    assert!(e.dup_watermarks().is_empty());
    let w = |origin, watermark_us| WriteOp::Watermark { origin, watermark_us };
    e.apply(9, 900, &[w(2, 50), w(3, 70)]).unwrap();
    e.apply_many(&[m(10, vec![w(2, 40)]), m(11, vec![w(2, 60), WriteOp::Put { key: b"e".to_vec(), value: b"7".to_vec() }])]).unwrap();
    assert_eq!(e.dup_watermarks(), BTreeMap::from([(2, 60), (3, 70)]));
    assert_eq!((e.dup_watermark_us(2), e.dup_watermark_us(9)), (60, 0));
    assert_eq!(e.scan(b"", None, 10).unwrap().len(), 4, "a watermark is no record");
    assert_eq!(incoming_hold_us(&e.dup_watermarks()), 60);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_engine_conforms() {
        engine_conformance(|| Box::new(MemEngine::default()));
    }

    #[test]
    fn compaction_holds_tombstones_for_the_slowest_site() {
        use crate::timetag::make_timetag;
        use crate::value::encode_tombstone;
        let mut e = MemEngine::default();
        let tomb = |ts| WriteOp::Put { key: format!("k{ts}").into_bytes(), value: encode_tombstone(make_timetag(ts, 1, true)) };
        e.apply(1, 0, &[tomb(1_000), tomb(2_000), tomb(3_000)]).unwrap();
        // Retention 0, no site ships here, no hold of our own: every old tombstone goes.
        assert_eq!(e.clone().compact(10_000, 0, u64::MAX), 3);
        // Our own duplication has shipped what was made before 2 500 µs.
        assert_eq!(e.clone().compact(10_000, 0, 2_500), 2);
        // Two sites ship here; the slower one has sent what it made before 1 500 µs.
        e.apply(2, 0, &[WriteOp::Watermark { origin: 2, watermark_us: 5_000 }, WriteOp::Watermark { origin: 3, watermark_us: 1_500 }]).unwrap();
        assert_eq!(e.clone().compact(10_000, 0, u64::MAX), 1);
        assert_eq!(e.compact(10_000, 0, 1_000), 0);
    }
}

impl std::fmt::Debug for dyn KvEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KvEngine(last_applied={}, clock_bound_us={})", self.last_applied_decree(), self.clock_bound_us())
    }
}
