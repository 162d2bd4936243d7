//! Client write requests and their evaluation into effects (puts of stored records; a delete is
//! the put of a tombstone). Read-modify-write requests (`incr`, `check_and_mutate`) read the
//! latest state — committed state overlaid by prepared mutations — so their effects are exact and
//! replay is idempotent.
//!
//! `Duplicate` is the other site's records arriving: each is applied only if its timetag is
//! greater than the one stored (last writer wins, tombstones included), inside this same write
//! path, so the decision is replicated like any write and a re-shipped batch changes nothing.

use crate::error::{Error, Result};
use crate::key::encode_key;
use crate::limits::Limits;
use crate::mutation::{Mutation, WriteOp};
use crate::storage::KvEngine;
use crate::key::decode_key;
use crate::timetag::{Timetag, make_timetag, timetag_cluster_id, timetag_timestamp_us};
use crate::types::Decree;
use crate::value::{decode_value, encode_tombstone, encode_value, expire_ts_from_ttl};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// How `check_and_mutate` judges the current value of the check sort key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckType {
    NoCheck,
    ValueNotExist,
    ValueNotExistOrEmpty,
    ValueExist,
    ValueNotEmpty,
    MatchAnywhere,
    MatchPrefix,
    MatchPostfix,
    BytesLess,
    BytesLessOrEqual,
    BytesEqual,
    BytesGreaterOrEqual,
    BytesGreater,
    IntLess,
    IntLessOrEqual,
    IntEqual,
    IntGreaterOrEqual,
    IntGreater,
}

impl CheckType {
    pub const ALL: [(&'static str, CheckType); 18] = [
        ("no_check", CheckType::NoCheck),
        ("value_not_exist", CheckType::ValueNotExist),
        ("value_not_exist_or_empty", CheckType::ValueNotExistOrEmpty),
        ("value_exist", CheckType::ValueExist),
        ("value_not_empty", CheckType::ValueNotEmpty),
        ("match_anywhere", CheckType::MatchAnywhere),
        ("match_prefix", CheckType::MatchPrefix),
        ("match_postfix", CheckType::MatchPostfix),
        ("bytes_less", CheckType::BytesLess),
        ("bytes_less_or_equal", CheckType::BytesLessOrEqual),
        ("bytes_equal", CheckType::BytesEqual),
        ("bytes_greater_or_equal", CheckType::BytesGreaterOrEqual),
        ("bytes_greater", CheckType::BytesGreater),
        ("int_less", CheckType::IntLess),
        ("int_less_or_equal", CheckType::IntLessOrEqual),
        ("int_equal", CheckType::IntEqual),
        ("int_greater_or_equal", CheckType::IntGreaterOrEqual),
        ("int_greater", CheckType::IntGreater),
    ];

    pub fn name(&self) -> &'static str {
        CheckType::ALL.iter().find(|(_, c)| c == self).map(|(n, _)| *n).expect("every check type is listed")
    }

    pub fn from_name(name: &str) -> Option<CheckType> {
        CheckType::ALL.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)
    }

    pub fn from_index(i: u32) -> Option<CheckType> {
        CheckType::ALL.get(i as usize).map(|(_, c)| *c)
    }

    pub fn index(&self) -> u32 {
        CheckType::ALL.iter().position(|(_, c)| c == self).expect("listed") as u32
    }

    /// Whether `current` (None: absent or expired) passes the check against `operand`.
    pub fn passes(&self, current: Option<&[u8]>, operand: &[u8]) -> Result<bool> {
        use CheckType::*;
        let int = |b: &[u8], what: &str| -> Result<i64> {
            std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .ok_or_else(|| Error::InvalidArgument(format!("{what} {:?} is not an integer", String::from_utf8_lossy(b))))
        };
        Ok(match (self, current) {
            (NoCheck, _) => true,
            (ValueNotExist, v) => v.is_none(),
            (ValueNotExistOrEmpty, v) => v.is_none_or(|v| v.is_empty()),
            (ValueExist, v) => v.is_some(),
            (ValueNotEmpty, v) => v.is_some_and(|v| !v.is_empty()),
            (_, None) => false,
            (MatchAnywhere, Some(v)) => operand.is_empty() || v.windows(operand.len()).any(|w| w == operand),
            (MatchPrefix, Some(v)) => v.starts_with(operand),
            (MatchPostfix, Some(v)) => v.ends_with(operand),
            (BytesLess, Some(v)) => v < operand,
            (BytesLessOrEqual, Some(v)) => v <= operand,
            (BytesEqual, Some(v)) => v == operand,
            (BytesGreaterOrEqual, Some(v)) => v >= operand,
            (BytesGreater, Some(v)) => v > operand,
            (IntLess | IntLessOrEqual | IntEqual | IntGreaterOrEqual | IntGreater, Some(v)) => {
                let (a, b) = (int(v, "stored value")?, int(operand, "check operand")?);
                match self {
                    IntLess => a < b,
                    IntLessOrEqual => a <= b,
                    IntEqual => a == b,
                    IntGreaterOrEqual => a >= b,
                    _ => a > b,
                }
            }
        })
    }
}

/// One mutation of `check_and_mutate`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MutateOp {
    Put { sort_key: Vec<u8>, value: Vec<u8>, ttl_s: u32 },
    Delete { sort_key: Vec<u8> },
}

/// A record shipped by the other site's duplicator: the stored key and the stored value (header
/// included, a tombstone with its delete flag) exactly as its origin wrote them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DupRecord {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

impl DupRecord {
    pub fn bytes(&self) -> usize {
        self.key.len() + self.value.len()
    }

    /// The record's timetag; the record must have passed `WriteRequest::validate`.
    pub fn timetag(&self) -> Timetag {
        decode_value(&self.value).expect("validated").0.timetag
    }
}

/// What a `Duplicate` batch says of its origin site: every record that site made before
/// `watermark_us` has been applied here (docs/duplication.md, "Tombstones held while the other
/// site lags").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DupWatermark {
    /// The origin site's cluster id.
    pub origin: u8,
    pub watermark_us: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteRequest {
    /// `ttl_s` 0 = never expires.
    Set { hash_key: Vec<u8>, sort_key: Vec<u8>, value: Vec<u8>, ttl_s: u32 },
    MultiSet { hash_key: Vec<u8>, kvs: Vec<(Vec<u8>, Vec<u8>)>, ttl_s: u32 },
    Del { hash_key: Vec<u8>, sort_key: Vec<u8> },
    MultiDel { hash_key: Vec<u8>, sort_keys: Vec<Vec<u8>> },
    /// Adds `increment` to the integer value (absent = 0). `ttl_s`: 0 keeps the current TTL,
    /// positive sets a new one, -1 clears it.
    Incr { hash_key: Vec<u8>, sort_key: Vec<u8>, increment: i64, ttl_s: i64 },
    /// Applies `mutations` atomically if the value at `check_sort_key` passes the check.
    CheckAndMutate {
        hash_key: Vec<u8>,
        check_sort_key: Vec<u8>,
        check_type: CheckType,
        check_operand: Vec<u8>,
        mutations: Vec<MutateOp>,
        return_check_value: bool,
    },
    /// Records of the other site, applied where they win by timetag (see the module doc). Their
    /// hash keys may differ; every one must belong to the partition it is sent to. With a
    /// watermark, the records may be none (a heartbeat of an idle sender).
    Duplicate { records: Vec<DupRecord>, watermark: Option<DupWatermark> },
}

impl WriteRequest {
    /// Whether the write only deletes (tombstones, which compaction turns into free space), so a
    /// server short of disk still takes it: deletes, a check-and-mutate of deletes only, and a
    /// duplicate batch of tombstones only (or none: a heartbeat).
    pub fn only_deletes(&self) -> bool {
        match self {
            WriteRequest::Del { .. } | WriteRequest::MultiDel { .. } => true,
            WriteRequest::CheckAndMutate { mutations, .. } => mutations.iter().all(|m| matches!(m, MutateOp::Delete { .. })),
            WriteRequest::Duplicate { records, .. } => {
                records.iter().all(|r| crate::value::decode_value(&r.value).is_ok_and(|(h, _)| h.is_tombstone()))
            }
            WriteRequest::Set { .. } | WriteRequest::MultiSet { .. } | WriteRequest::Incr { .. } => false,
        }
    }

    /// The hash key a client request is routed by; None for `Duplicate`, routed per record.
    pub fn hash_key(&self) -> Option<&[u8]> {
        match self {
            WriteRequest::Set { hash_key, .. }
            | WriteRequest::MultiSet { hash_key, .. }
            | WriteRequest::Del { hash_key, .. }
            | WriteRequest::MultiDel { hash_key, .. }
            | WriteRequest::Incr { hash_key, .. }
            | WriteRequest::CheckAndMutate { hash_key, .. } => Some(hash_key),
            WriteRequest::Duplicate { .. } => None,
        }
    }

    /// Limits and shape, checked before the request reaches a replica's queue.
    pub fn validate(&self, limits: &Limits) -> Result<()> {
        if let Some(hash_key) = self.hash_key() {
            limits.check_hash_key(hash_key)?;
        }
        match self {
            WriteRequest::Set { sort_key, value, .. } => {
                limits.check_sort_key(sort_key)?;
                limits.check_value(value)
            }
            WriteRequest::MultiSet { kvs, .. } => {
                if kvs.is_empty() {
                    return Err(Error::InvalidArgument("multi_set needs at least one sort key".into()));
                }
                let total: usize = kvs.iter().map(|(k, v)| k.len() + v.len()).sum();
                if total > limits.batch_bytes_max() {
                    return Err(Error::TooLarge(format!(
                        "multi_set of {} exceeds {} (4 × max_value_bytes); split it",
                        crate::limits::human_bytes(total),
                        crate::limits::human_bytes(limits.batch_bytes_max())
                    )));
                }
                kvs.iter().try_for_each(|(k, v)| limits.check_sort_key(k).and_then(|_| limits.check_value(v)))
            }
            WriteRequest::Del { sort_key, .. } | WriteRequest::Incr { sort_key, .. } => limits.check_sort_key(sort_key),
            WriteRequest::MultiDel { sort_keys, .. } => {
                if sort_keys.is_empty() {
                    return Err(Error::InvalidArgument("multi_del needs at least one sort key".into()));
                }
                sort_keys.iter().try_for_each(|k| limits.check_sort_key(k))
            }
            WriteRequest::CheckAndMutate { check_sort_key, mutations, .. } => {
                limits.check_sort_key(check_sort_key)?;
                if mutations.is_empty() {
                    return Err(Error::InvalidArgument("check_and_mutate needs at least one mutation".into()));
                }
                mutations.iter().try_for_each(|m| match m {
                    MutateOp::Put { sort_key, value, .. } => limits.check_sort_key(sort_key).and_then(|_| limits.check_value(value)),
                    MutateOp::Delete { sort_key } => limits.check_sort_key(sort_key),
                })
            }
            WriteRequest::Duplicate { records, watermark } => {
                if records.is_empty() && watermark.is_none() {
                    return Err(Error::InvalidArgument("a duplicate batch needs at least one record or a watermark".into()));
                }
                if let Some(w) = watermark
                    && w.origin > crate::timetag::CLUSTER_ID_MAX
                {
                    return Err(Error::InvalidArgument(format!(
                        "a duplicate batch's origin cluster id {} is above the limit {}",
                        w.origin,
                        crate::timetag::CLUSTER_ID_MAX
                    )));
                }
                // A single record always fits (its parts are within limits): a large value still
                // travels, alone.
                let total: usize = records.iter().map(DupRecord::bytes).sum();
                if records.len() > 1 && total > limits.batch_bytes_max() {
                    return Err(Error::TooLarge(format!(
                        "duplicate batch of {} exceeds {} (4 × max_value_bytes); send fewer records at a time",
                        crate::limits::human_bytes(total),
                        crate::limits::human_bytes(limits.batch_bytes_max())
                    )));
                }
                records.iter().try_for_each(|r| {
                    let (hash_key, sort_key) = decode_key(&r.key)?;
                    limits.check_hash_key(hash_key)?;
                    limits.check_sort_key(sort_key)?;
                    let (header, user) = decode_value(&r.value)?;
                    limits.check_value(user)?;
                    if header.is_tombstone() && (!user.is_empty() || header.expire_ts != 0) {
                        return Err(Error::corrupt("duplicated tombstone", "it carries a value or an expiry"));
                    }
                    Ok(())
                })
            }
        }
    }

    /// `Duplicate`: the largest timestamp among the records and the watermark (they must be
    /// valid): a watermark ahead of this site's clock is refused like a record would be.
    pub fn duplicate_timestamp_max_us(&self) -> Option<u64> {
        match self {
            WriteRequest::Duplicate { records, watermark } => {
                records.iter().map(|r| timetag_timestamp_us(r.timetag())).chain(watermark.map(|w| w.watermark_us)).max()
            }
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteResponse {
    Done,
    Incr { new_value: i64 },
    Checked { applied: bool, check_value: Option<Vec<u8>> },
    /// `Duplicate`: how many records won and were written, and how many lost to a stored record
    /// with a greater or equal timetag (equal: the same record shipped again).
    Duplicated { applied: u32, superseded: u32 },
}

/// Committed state overlaid by the prepared (uncommitted) mutations of the primary.
pub struct PendingView<'a> {
    pub engine: &'a dyn KvEngine,
    pub log: &'a BTreeMap<Decree, Arc<Mutation>>,
    pub last_committed: Decree,
}

impl PendingView<'_> {
    /// The latest stored value of `key`, prepared writes included.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        for (_, m) in self.log.range(self.last_committed + 1..).rev() {
            for op in m.ops.iter().rev() {
                match op {
                    WriteOp::Put { key: k, value } if k == key => return Ok(Some(value.clone())),
                    WriteOp::Delete { key: k } if k == key => return Ok(None),
                    _ => {}
                }
            }
        }
        self.engine.get(key)
    }

    /// The live (unexpired, not deleted) user value and expire_ts.
    fn get_live(&self, key: &[u8], now_s: u32) -> Result<Option<(u32, Vec<u8>)>> {
        let Some(stored) = self.get(key)? else { return Ok(None) };
        let (header, user) = decode_value(&stored)?;
        if !header.is_live(now_s) {
            return Ok(None);
        }
        Ok(Some((header.expire_ts, user.to_vec())))
    }

    /// The timetag of the stored record of `key`, tombstones and expired values included.
    fn timetag(&self, key: &[u8]) -> Result<Option<Timetag>> {
        let Some(stored) = self.get(key)? else { return Ok(None) };
        Ok(Some(decode_value(&stored)?.0.timetag))
    }
}

/// The effects of `request` on `view` and the response the client gets once they commit: one op
/// per key, the last one. Every op of a mutation carries the same timetag, so two ops of one key
/// (a `multi_set` naming a sort key twice, a `check_and_mutate` deleting then putting it) would
/// tie at the other site, which would keep whichever it applied first (found in review).
pub fn evaluate(
    view: &PendingView<'_>,
    request: &WriteRequest,
    timestamp_us: u64,
    cluster_id: u8,
    now_s: u32,
) -> Result<(Vec<WriteOp>, WriteResponse)> {
    let (ops, response) = evaluate_ops(view, request, timestamp_us, cluster_id, now_s)?;
    Ok((last_op_per_key(ops), response))
}

/// The positions in `ops` of ops that a later op of the same key replaces: none in the common
/// case, found without copying a key.
pub fn replaced_ops(ops: &[WriteOp]) -> std::collections::HashSet<usize> {
    if ops.len() < 2 {
        return std::collections::HashSet::new();
    }
    let mut seen = std::collections::HashSet::with_capacity(ops.len());
    (0..ops.len()).rev().filter(|&i| ops[i].key().is_some_and(|k| !seen.insert(k))).collect()
}

/// `ops` with only the last op of each key, in the order of those last ops.
pub fn last_op_per_key(ops: Vec<WriteOp>) -> Vec<WriteOp> {
    let replaced = replaced_ops(&ops);
    if replaced.is_empty() {
        return ops;
    }
    ops.into_iter().enumerate().filter(|(i, _)| !replaced.contains(i)).map(|(_, op)| op).collect()
}

fn evaluate_ops(
    view: &PendingView<'_>,
    request: &WriteRequest,
    timestamp_us: u64,
    cluster_id: u8,
    now_s: u32,
) -> Result<(Vec<WriteOp>, WriteResponse)> {
    let timetag = make_timetag(timestamp_us, cluster_id, false);
    let put = |hk: &[u8], sk: &[u8], v: &[u8], ttl_s: u32| WriteOp::Put {
        key: encode_key(hk, sk),
        value: encode_value(expire_ts_from_ttl(ttl_s, now_s), timetag, v),
    };
    let tombstone = make_timetag(timestamp_us, cluster_id, true);
    let delete = |hk: &[u8], sk: &[u8]| WriteOp::Put { key: encode_key(hk, sk), value: encode_tombstone(tombstone) };
    Ok(match request {
        WriteRequest::Set { hash_key, sort_key, value, ttl_s } => (vec![put(hash_key, sort_key, value, *ttl_s)], WriteResponse::Done),
        WriteRequest::MultiSet { hash_key, kvs, ttl_s } => {
            (kvs.iter().map(|(k, v)| put(hash_key, k, v, *ttl_s)).collect(), WriteResponse::Done)
        }
        WriteRequest::Del { hash_key, sort_key } => (vec![delete(hash_key, sort_key)], WriteResponse::Done),
        WriteRequest::MultiDel { hash_key, sort_keys } => (sort_keys.iter().map(|k| delete(hash_key, k)).collect(), WriteResponse::Done),
        WriteRequest::Incr { hash_key, sort_key, increment, ttl_s } => {
            let key = encode_key(hash_key, sort_key);
            let (old_expire, old) = match view.get_live(&key, now_s)? {
                Some((expire_ts, v)) => {
                    let n = if v.is_empty() {
                        0
                    } else {
                        std::str::from_utf8(&v).ok().and_then(|s| s.parse::<i64>().ok()).ok_or_else(|| {
                            Error::InvalidArgument(format!("incr on a value that is not an integer: {:?}", String::from_utf8_lossy(&v)))
                        })?
                    };
                    (expire_ts, n)
                }
                None => (0, 0),
            };
            let new_value = old
                .checked_add(*increment)
                .ok_or_else(|| Error::InvalidArgument(format!("incr overflows: {old} + {increment}")))?;
            let expire_ts = match *ttl_s {
                0 => old_expire,
                t if t > 0 => expire_ts_from_ttl(u32::try_from(t).unwrap_or(u32::MAX), now_s),
                -1 => 0,
                t => return Err(Error::InvalidArgument(format!("incr ttl {t} is invalid (0 keeps, >0 sets, -1 clears)"))),
            };
            let op = WriteOp::Put { key, value: encode_value(expire_ts, timetag, new_value.to_string().as_bytes()) };
            (vec![op], WriteResponse::Incr { new_value })
        }
        WriteRequest::CheckAndMutate { hash_key, check_sort_key, check_type, check_operand, mutations, return_check_value } => {
            let current = view.get_live(&encode_key(hash_key, check_sort_key), now_s)?.map(|(_, v)| v);
            let applied = check_type.passes(current.as_deref(), check_operand)?;
            let check_value = if *return_check_value { current } else { None };
            let ops = if applied {
                mutations
                    .iter()
                    .map(|m| match m {
                        MutateOp::Put { sort_key, value, ttl_s } => put(hash_key, sort_key, value, *ttl_s),
                        MutateOp::Delete { sort_key } => delete(hash_key, sort_key),
                    })
                    .collect()
            } else {
                Vec::new()
            };
            (ops, WriteResponse::Checked { applied, check_value })
        }
        WriteRequest::Duplicate { records, watermark } => {
            if watermark.is_some_and(|w| w.origin == cluster_id) {
                return Err(Error::InvalidArgument(format!(
                    "a duplicate batch names cluster id {cluster_id}, this site's own, as its origin: give each site its own cluster id"
                )));
            }
            // The watermarks applied here, read once for the batch.
            let known = view.engine.dup_watermarks();
            // Origins that never shipped here before: each gets an entry at 0 even without a
            // watermark, so that from then on compaction holds what it could still send
            // (two-site seed 779, where a tombstone went before the first watermark of a site
            // that lagged arrived).
            let mut new_origins = std::collections::BTreeSet::new();
            // Later records of the same key in this batch compare against earlier ones.
            let mut written: HashMap<&[u8], Timetag> = HashMap::new();
            let (mut ops, mut superseded) = (Vec::new(), 0u32);
            for r in records {
                let incoming = r.timetag();
                let origin = timetag_cluster_id(incoming);
                if origin == cluster_id {
                    return Err(Error::InvalidArgument(format!(
                        "a duplicated record carries cluster id {cluster_id}, this site's own: give each site its own cluster id"
                    )));
                }
                match known.get(&origin) {
                    // Below its origin's watermark it was applied here already: sent again (a
                    // new primary there resumed from an older confirmed decree, or a re-sync),
                    // it must not take the place of a tombstone compacted since (seed 779).
                    Some(w) if timetag_timestamp_us(incoming) < *w => {
                        superseded += 1;
                        continue;
                    }
                    Some(_) => {}
                    None => {
                        new_origins.insert(origin);
                    }
                }
                let stored = match written.get(r.key.as_slice()) {
                    Some(t) => Some(*t),
                    None => view.timetag(&r.key)?,
                };
                if stored.is_some_and(|s| s >= incoming) {
                    superseded += 1;
                    continue;
                }
                written.insert(&r.key, incoming);
                ops.push(WriteOp::Put { key: r.key.clone(), value: r.value.clone() });
            }
            let applied = ops.len() as u32;
            // Logged with the records it covers; the engine keeps the largest per origin.
            if let Some(w) = watermark {
                new_origins.remove(&w.origin);
                if known.get(&w.origin).is_none_or(|k| *k < w.watermark_us) {
                    ops.push(WriteOp::Watermark { origin: w.origin, watermark_us: w.watermark_us });
                }
            }
            ops.extend(new_origins.into_iter().map(|origin| WriteOp::Watermark { origin, watermark_us: 0 }));
            (ops, WriteResponse::Duplicated { applied, superseded })
        }
    })
}
