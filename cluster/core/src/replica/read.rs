//! Reads over a replica's committed state (served by a primary with a valid lease). Expired
//! values and tombstones are invisible here even before compaction drops them.

use crate::error::{Error, Result};
use crate::key::{decode_key, encode_key, hash_key_prefix, prefix_successor};
use crate::storage::KvEngine;
use crate::value::decode_value;

/// Records fetched from the engine per round while skipping expired ones.
const SCAN_CHUNK: usize = 256;

/// The live user value of a record, with its expire_ts.
pub fn get_with_expiry(engine: &dyn KvEngine, hash_key: &[u8], sort_key: &[u8], now_s: u32) -> Result<Option<(u32, Vec<u8>)>> {
    let Some(stored) = engine.get(&encode_key(hash_key, sort_key))? else { return Ok(None) };
    let (header, user) = decode_value(&stored)?;
    if !header.is_live(now_s) {
        return Ok(None);
    }
    Ok(Some((header.expire_ts, user.to_vec())))
}

pub fn get(engine: &dyn KvEngine, hash_key: &[u8], sort_key: &[u8], now_s: u32) -> Result<Option<Vec<u8>>> {
    Ok(get_with_expiry(engine, hash_key, sort_key, now_s)?.map(|(_, v)| v))
}

/// Remaining TTL: None = no such record; Some(None) = never expires; Some(Some(s)) = s seconds.
pub fn ttl(engine: &dyn KvEngine, hash_key: &[u8], sort_key: &[u8], now_s: u32) -> Result<Option<Option<u32>>> {
    Ok(get_with_expiry(engine, hash_key, sort_key, now_s)?.map(|(e, _)| if e == 0 { None } else { Some(e - now_s) }))
}

/// Bounds of a sort-key range within one hash key.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SortKeyRange {
    pub start: Vec<u8>,
    pub start_inclusive: bool,
    /// None: to the last sort key.
    pub stop: Option<Vec<u8>>,
    pub stop_inclusive: bool,
}

impl SortKeyRange {
    pub fn all() -> Self {
        SortKeyRange { start: Vec::new(), start_inclusive: true, stop: None, stop_inclusive: false }
    }
}

/// A page of records of one hash key.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Page {
    pub records: Vec<(Vec<u8>, Vec<u8>)>,
    /// Where the next page starts (exclusive), if there may be more.
    pub next_sort_key: Option<Vec<u8>>,
}

/// Live records of `hash_key` in `range`, at most `count_max` records and about `bytes_max`.
pub fn scan(engine: &dyn KvEngine, hash_key: &[u8], range: &SortKeyRange, count_max: usize, bytes_max: usize, now_s: u32) -> Result<Page> {
    if count_max == 0 {
        return Err(Error::InvalidArgument("a scan needs a limit of at least 1 record".into()));
    }
    let mut start = encode_key(hash_key, &range.start);
    if !range.start_inclusive {
        start.push(0);
    }
    let end = match &range.stop {
        Some(stop) => {
            let mut e = encode_key(hash_key, stop);
            if range.stop_inclusive {
                e.push(0);
            }
            Some(e)
        }
        None => prefix_successor(&hash_key_prefix(hash_key)),
    };
    if end.as_ref().is_some_and(|e| *e <= start) {
        return Ok(Page::default());
    }
    let mut page = Page::default();
    let mut bytes = 0;
    loop {
        let chunk = engine.scan(&start, end.as_deref(), SCAN_CHUNK)?;
        let exhausted = chunk.len() < SCAN_CHUNK;
        for (key, stored) in chunk {
            let (_, sort_key) = decode_key(&key)?;
            let sort_key = sort_key.to_vec();
            let (header, user) = decode_value(&stored)?;
            start = key;
            start.push(0);
            if !header.is_live(now_s) {
                continue;
            }
            bytes += sort_key.len() + user.len();
            page.records.push((sort_key, user.to_vec()));
            if page.records.len() >= count_max || bytes >= bytes_max {
                page.next_sort_key = Some(page.records.last().expect("one record").0.clone());
                return Ok(page);
            }
        }
        if exhausted {
            return Ok(page);
        }
    }
}

/// The live values of the given sort keys, in the order asked; absent ones are left out.
pub fn multi_get_keys(engine: &dyn KvEngine, hash_key: &[u8], sort_keys: &[Vec<u8>], now_s: u32) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    for sk in sort_keys {
        if let Some(v) = get(engine, hash_key, sk, now_s)? {
            out.push((sk.clone(), v));
        }
    }
    Ok(out)
}

/// Number of live sort keys of a hash key.
pub fn sortkey_count(engine: &dyn KvEngine, hash_key: &[u8], now_s: u32) -> Result<u64> {
    let mut count = 0u64;
    let mut range = SortKeyRange::all();
    loop {
        let page = scan(engine, hash_key, &range, 4096, usize::MAX, now_s)?;
        count += page.records.len() as u64;
        match page.next_sort_key {
            Some(next) => range = SortKeyRange { start: next, start_inclusive: false, stop: None, stop_inclusive: false },
            None => return Ok(count),
        }
    }
}

/// A page of a partition-wide scan: `(hash_key, sort_key, value)` records in stored-key order.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct FullPage {
    pub records: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)>,
    /// The stored key to continue after (exclusive), if there may be more.
    pub next_key: Option<Vec<u8>>,
}

/// Live records of the whole partition after stored key `after` (exclusive; None = from the start).
pub fn full_scan(engine: &dyn KvEngine, after: Option<&[u8]>, count_max: usize, now_s: u32) -> Result<FullPage> {
    if count_max == 0 {
        return Err(Error::InvalidArgument("a scan needs a limit of at least 1 record".into()));
    }
    let mut start = match after {
        Some(k) => {
            let mut s = k.to_vec();
            s.push(0);
            s
        }
        None => Vec::new(),
    };
    let mut page = FullPage::default();
    loop {
        let chunk = engine.scan(&start, None, SCAN_CHUNK)?;
        let exhausted = chunk.len() < SCAN_CHUNK;
        for (key, stored) in chunk {
            let (hk, sk) = decode_key(&key)?;
            let (hk, sk) = (hk.to_vec(), sk.to_vec());
            let (header, user) = decode_value(&stored)?;
            start = key.clone();
            start.push(0);
            if !header.is_live(now_s) {
                continue;
            }
            page.records.push((hk, sk, user.to_vec()));
            if page.records.len() >= count_max {
                page.next_key = Some(key);
                return Ok(page);
            }
        }
        if exhausted {
            return Ok(page);
        }
    }
}
