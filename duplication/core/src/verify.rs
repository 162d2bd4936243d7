//! `tandem dup verify`: are the two sites' copies of a table the same? Each site's partitions
//! fold their records into per-bucket digests, a bucket being `crc64(hash_key) % buckets` with
//! `buckets` the larger partition count of the two sites (both powers of two), so a bucket lies
//! in one partition at each site even when their counts differ. Buckets whose digests differ are
//! compared key by key.
//!
//! What is compared: what reads see, with its timetag — a live record's key and stored value
//! (expiry and timetag included). A tombstone counts as absence: the two sites compact
//! tombstones away at different times, so comparing them would report differences that are none.
//! Writes newer than the window (`before_us`) may still be on their way: a bucket's digest leaves
//! them out, and in the key-by-key comparison a key is skipped when either site's version of it
//! is newer than the window.

use std::collections::BTreeMap;
use tandem_core::key::decode_key;
use tandem_core::partition::{crc64, partition_index};
use tandem_core::storage::KvEngine;
use tandem_core::timetag::timetag_timestamp_us;
use tandem_core::value::decode_value;

/// Records read from the engine per scan.
const SCAN_CHUNK: usize = 1024;

/// Records and a digest per bucket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Digests {
    pub buckets: BTreeMap<u32, (u64, u64)>,
}

impl Digests {
    /// Folds another partition's digests in (each bucket is in one partition of a site).
    pub fn merge(&mut self, other: &Digests) {
        for (b, (n, d)) in &other.buckets {
            let e = self.buckets.entry(*b).or_default();
            e.0 += n;
            e.1 = e.1.wrapping_add(*d);
        }
    }
}

/// A key as one site holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyVersion {
    pub key: Vec<u8>,
    pub timetag: u64,
    /// A hash of the stored value (None: a tombstone or an expired value, which reads do not see).
    pub value_hash: Option<u64>,
}

fn record_hash(key: &[u8], value: &[u8]) -> u64 {
    let mut bytes = Vec::with_capacity(8 + key.len() + value.len());
    bytes.extend_from_slice(&(key.len() as u64).to_be_bytes());
    bytes.extend_from_slice(key);
    bytes.extend_from_slice(value);
    crc64(&bytes)
}

fn bucket_of(key: &[u8], buckets: u32) -> Option<u32> {
    let (hash_key, _) = decode_key(key).ok()?;
    (!hash_key.is_empty()).then(|| partition_index(hash_key, buckets))
}

/// Every stored record of `engine` in key order, chunk by chunk.
fn scan_all(engine: &dyn KvEngine, mut each: impl FnMut(Vec<u8>, Vec<u8>)) -> tandem_core::Result<()> {
    let mut start = Vec::new();
    loop {
        let chunk = engine.scan(&start, None, SCAN_CHUNK)?;
        let done = chunk.len() < SCAN_CHUNK;
        for (key, value) in chunk {
            start = key.clone();
            start.push(0);
            each(key, value);
        }
        if done {
            return Ok(());
        }
    }
}

/// The digests of a partition's live records written before `before_us`.
pub fn digest_engine(engine: &dyn KvEngine, buckets: u32, before_us: u64, now_s: u32) -> tandem_core::Result<Digests> {
    let mut digests = Digests::default();
    scan_all(engine, |key, value| {
        let Ok((header, _)) = decode_value(&value) else { return };
        if !header.is_live(now_s) || timetag_timestamp_us(header.timetag) >= before_us {
            return;
        }
        if let Some(b) = bucket_of(&key, buckets) {
            let e = digests.buckets.entry(b).or_default();
            e.0 += 1;
            e.1 = e.1.wrapping_add(record_hash(&key, &value));
        }
    })?;
    Ok(digests)
}

/// The versions of a partition's keys in `bucket`, after key `after`, at most `limit`; and
/// whether more follow.
pub fn bucket_keys(engine: &dyn KvEngine, buckets: u32, bucket: u32, after: &[u8], limit: usize, now_s: u32) -> tandem_core::Result<(Vec<KeyVersion>, bool)> {
    let mut out = Vec::new();
    let mut more = false;
    scan_all(engine, |key, value| {
        if more || (!after.is_empty() && key.as_slice() <= after) || bucket_of(&key, buckets) != Some(bucket) {
            return;
        }
        if out.len() == limit {
            more = true;
            return;
        }
        let Ok((header, _)) = decode_value(&value) else { return };
        let value_hash = header.is_live(now_s).then(|| record_hash(&key, &value));
        out.push(KeyVersion { key, timetag: header.timetag, value_hash });
    })?;
    Ok((out, more))
}

/// Keys whose versions differ between the sites (`a`, `b`, each in key order), leaving out keys
/// with a version at either site newer than `before_us`.
pub fn differing_keys(a: &[KeyVersion], b: &[KeyVersion], before_us: u64) -> Vec<Vec<u8>> {
    fn by_key(vs: &[KeyVersion]) -> BTreeMap<Vec<u8>, &KeyVersion> {
        vs.iter().map(|v| (v.key.clone(), v)).collect()
    }
    let (a, b) = (by_key(a), by_key(b));
    let recent = |v: Option<&&KeyVersion>| v.is_some_and(|v| timetag_timestamp_us(v.timetag) >= before_us);
    let seen = |v: Option<&&KeyVersion>| v.and_then(|v| v.value_hash.map(|h| (h, v.timetag)));
    let mut keys: Vec<&Vec<u8>> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| {
            let (va, vb) = (a.get(*k), b.get(*k));
            !recent(va) && !recent(vb) && seen(va) != seen(vb)
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_core::WriteOp;
    use tandem_core::key::encode_key;
    use tandem_core::storage::MemEngine;
    use tandem_core::timetag::make_timetag;
    use tandem_core::value::{encode_tombstone, encode_value};

    fn engine(records: &[(&str, u64, Option<&str>)]) -> MemEngine {
        let mut e = MemEngine::default();
        let ops: Vec<WriteOp> = records
            .iter()
            .map(|(k, ts, v)| WriteOp::Put {
                key: encode_key(k.as_bytes(), b""),
                value: match v {
                    Some(v) => encode_value(0, make_timetag(*ts, 1, false), v.as_bytes()),
                    None => encode_tombstone(make_timetag(*ts, 1, true)),
                },
            })
            .collect();
        e.apply(1, 0, &ops).unwrap();
        e
    }

    #[test]
    fn equal_copies_match_and_differences_are_found_key_by_key() {
        let a = engine(&[("k1", 10, Some("x")), ("k2", 10, Some("y")), ("gone", 10, None), ("fresh", 1_000, Some("new"))]);
        // b: no tombstone (compacted away), k2 differs, fresh not arrived yet.
        let b = engine(&[("k1", 10, Some("x")), ("k2", 10, Some("z"))]);
        let (da, db) = (digest_engine(&a, 4, 500, 0).unwrap(), digest_engine(&b, 4, 500, 0).unwrap());
        let differing: Vec<u32> = da.buckets.keys().chain(db.buckets.keys()).filter(|k| da.buckets.get(k) != db.buckets.get(k)).copied().collect();
        let k2_bucket = partition_index(b"k2", 4);
        assert_eq!(differing, vec![k2_bucket, k2_bucket]);
        let (ka, _) = bucket_keys(&a, 4, k2_bucket, b"", 100, 0).unwrap();
        let (kb, _) = bucket_keys(&b, 4, k2_bucket, b"", 100, 0).unwrap();
        assert_eq!(differing_keys(&ka, &kb, 500), vec![encode_key(b"k2", b"")]);
        // Across all keys: the tombstone counts as absence; the recent write is left out.
        let all = |e: &MemEngine| (0..4).flat_map(|bk| bucket_keys(e, 4, bk, b"", 100, 0).unwrap().0).collect::<Vec<_>>();
        let mut ka = all(&a);
        let mut kb = all(&b);
        ka.sort_by(|x, y| x.key.cmp(&y.key));
        kb.sort_by(|x, y| x.key.cmp(&y.key));
        assert_eq!(differing_keys(&ka, &kb, 500), vec![encode_key(b"k2", b"")]);
        // Paging.
        let (page, more) = bucket_keys(&a, 1, 0, b"", 2, 0).unwrap();
        assert!(more && page.len() == 2);
        let (rest, more) = bucket_keys(&a, 1, 0, &page[1].key, 10, 0).unwrap();
        assert!(!more && rest.len() == 2);
    }
}
