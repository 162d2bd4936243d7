//! Property tests of every decoder of bytes that come from disk or from a peer (STYLE rule 11):
//! arbitrary and corrupted input is an error or a value, never a panic, and whatever decodes is
//! exactly what its encoder writes (so a corrupt record cannot pass for a different valid one).
//! Also: any write request, however malformed, is refused or evaluated by the primary without a
//! panic.

use proptest::prelude::*;
use std::collections::BTreeMap;
use tandem_core::key::{decode_key, encode_key};
use tandem_core::limits::Limits;
use tandem_core::replica::write::{evaluate, PendingView};
use tandem_core::replica::{CheckType, DupRecord, DupWatermark, MutateOp, WriteRequest};
use tandem_core::storage::{KvEngine, MemEngine};
use tandem_core::value::{decode_value, encode_value};
use tandem_core::{Gpid, LogRecord, Mutation, WriteOp};

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

fn write_op() -> impl Strategy<Value = WriteOp> {
    prop_oneof![
        (bytes(40), bytes(200)).prop_map(|(key, value)| WriteOp::Put { key, value }),
        bytes(40).prop_map(|key| WriteOp::Delete { key }),
        (any::<u8>(), any::<u64>()).prop_map(|(origin, watermark_us)| WriteOp::Watermark { origin, watermark_us }),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    (any::<u64>(), any::<u64>(), any::<u64>(), prop::collection::vec(write_op(), 0..6))
        .prop_map(|(ballot, decree, timestamp_us, ops)| Mutation { ballot, decree, timestamp_us, ops })
}

fn log_record() -> impl Strategy<Value = LogRecord> {
    prop_oneof![
        (any::<u32>(), any::<u32>(), mutation()).prop_map(|(t, p, mutation)| LogRecord::Mutation { gpid: Gpid::new(t, p), mutation }),
        (any::<u32>(), any::<u32>(), any::<u64>()).prop_map(|(t, p, decree)| LogRecord::Reset { gpid: Gpid::new(t, p), decree }),
    ]
}

/// Damage: flip bits, cut the tail, insert or drop bytes at random places.
#[derive(Clone, Debug)]
enum Damage {
    Flip { at: usize, mask: u8 },
    Truncate { len: usize },
    Insert { at: usize, byte: u8 },
    Remove { at: usize },
}

fn damage() -> impl Strategy<Value = Vec<Damage>> {
    let one = prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(at, mask)| Damage::Flip { at, mask }),
        any::<usize>().prop_map(|len| Damage::Truncate { len }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Damage::Insert { at, byte }),
        any::<usize>().prop_map(|at| Damage::Remove { at }),
    ];
    prop::collection::vec(one, 1..4)
}

fn apply_damage(mut b: Vec<u8>, damage: &[Damage]) -> Vec<u8> {
    for d in damage {
        match *d {
            Damage::Flip { at, mask } if !b.is_empty() => {
                let i = at % b.len();
                b[i] ^= mask;
            }
            Damage::Truncate { len } => b.truncate(len % (b.len() + 1)),
            Damage::Insert { at, byte } => {
                let i = at % (b.len() + 1);
                b.insert(i, byte);
            }
            Damage::Remove { at } if !b.is_empty() => {
                let i = at % b.len();
                b.remove(i);
            }
            _ => {}
        }
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn log_records_round_trip(record in log_record()) {
        let encoded = record.encode();
        prop_assert_eq!(LogRecord::decode(&encoded).unwrap(), record);
    }

    #[test]
    fn arbitrary_bytes_never_panic_a_decoder(b in bytes(300)) {
        // Whatever decodes re-encodes to the same bytes: the encodings are canonical.
        if let Ok(r) = LogRecord::decode(&b) {
            prop_assert_eq!(r.encode(), b.clone());
        }
        if let Ok(m) = Mutation::decode(&b) {
            prop_assert_eq!(m.encode(), b.clone());
        }
        if let Ok((h, user)) = decode_value(&b) {
            prop_assert_eq!(encode_value(h.expire_ts, h.timetag, user), b.clone());
        }
        if let Ok((hk, sk)) = decode_key(&b) {
            prop_assert_eq!(encode_key(hk, sk), b.clone());
        }
    }

    #[test]
    fn damaged_log_records_are_refused_or_canonical(record in log_record(), damage in damage()) {
        let original = record.encode();
        let damaged = apply_damage(original.clone(), &damage);
        match LogRecord::decode(&damaged) {
            Ok(r) => prop_assert_eq!(r.encode(), damaged),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn damaged_mutations_from_a_peer_are_refused_or_canonical(m in mutation(), damage in damage()) {
        let damaged = apply_damage(m.encode(), &damage);
        if let Ok(decoded) = Mutation::decode(&damaged) {
            prop_assert_eq!(decoded.encode(), damaged);
        }
    }
}

/// A record from the other site: well formed or not, with any timetag.
fn dup_record() -> impl Strategy<Value = DupRecord> {
    let key = prop_oneof![4 => (bytes(12), bytes(12)).prop_map(|(h, s)| encode_key(&h, &s)), 1 => bytes(6)];
    let value = prop_oneof![
        4 => (any::<u32>(), any::<u64>(), bytes(24)).prop_map(|(e, t, v)| encode_value(e, t, &v)),
        1 => any::<u64>().prop_map(|t| encode_value(0, t | 1, &[])),
        1 => bytes(10),
    ];
    (key, value).prop_map(|(key, value)| DupRecord { key, value })
}

fn request() -> impl Strategy<Value = WriteRequest> {
    // Sizes straddle the limits (hash key 1024, sort key 4096, value 1 MiB) without making every
    // case huge: most are small, some are just over.
    let key = || prop_oneof![8 => bytes(12), 1 => Just(vec![b'h'; 1025]), 1 => Just(Vec::new())];
    let sort = || prop_oneof![8 => bytes(12), 1 => Just(vec![b's'; 4097])];
    let value = || prop_oneof![8 => bytes(24), 1 => Just(vec![b'v'; (1 << 20) + 1]), 1 => Just(b"-12".to_vec())];
    let mutate = prop_oneof![
        (sort(), value(), any::<u32>()).prop_map(|(sort_key, value, ttl_s)| MutateOp::Put { sort_key, value, ttl_s }),
        sort().prop_map(|sort_key| MutateOp::Delete { sort_key }),
    ];
    prop_oneof![
        (key(), sort(), value(), any::<u32>()).prop_map(|(hash_key, sort_key, value, ttl_s)| WriteRequest::Set { hash_key, sort_key, value, ttl_s }),
        (key(), prop::collection::vec((sort(), value()), 0..4), any::<u32>())
            .prop_map(|(hash_key, kvs, ttl_s)| WriteRequest::MultiSet { hash_key, kvs, ttl_s }),
        (key(), sort()).prop_map(|(hash_key, sort_key)| WriteRequest::Del { hash_key, sort_key }),
        (key(), prop::collection::vec(sort(), 0..4)).prop_map(|(hash_key, sort_keys)| WriteRequest::MultiDel { hash_key, sort_keys }),
        (key(), sort(), any::<i64>(), any::<i64>())
            .prop_map(|(hash_key, sort_key, increment, ttl_s)| WriteRequest::Incr { hash_key, sort_key, increment, ttl_s }),
        (prop::collection::vec(dup_record(), 0..4), proptest::option::of((any::<u8>(), any::<u64>()))).prop_map(|(records, w)| {
            WriteRequest::Duplicate { records, watermark: w.map(|(origin, watermark_us)| DupWatermark { origin, watermark_us }) }
        }),
        (key(), sort(), 0..CheckType::ALL.len() as u32, value(), prop::collection::vec(mutate, 0..3), any::<bool>()).prop_map(
            |(hash_key, check_sort_key, t, check_operand, mutations, return_check_value)| WriteRequest::CheckAndMutate {
                hash_key,
                check_sort_key,
                check_type: CheckType::from_index(t).expect("index below COUNT"),
                check_operand,
                mutations,
                return_check_value,
            }
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// What the primary does with a client's write: validate, then evaluate against the current
    /// state. Neither may panic; an invalid request is refused by `validate` with the limit named.
    #[test]
    fn any_write_request_is_refused_or_evaluated(requests in prop::collection::vec(request(), 1..6)) {
        let limits = Limits::default();
        let mut engine = MemEngine::default();
        let log = BTreeMap::new();
        let mut decree = 0;
        for (i, request) in requests.iter().enumerate() {
            match request.validate(&limits) {
                Err(e) => {
                    let text = e.to_string();
                    prop_assert!(
                        ["limit", "empty", "needs", "exceeds", "corrupt"].iter().any(|w| text.contains(w)),
                        "unclear error: {}",
                        text
                    );
                }
                Ok(()) => {
                    let view = PendingView { engine: &engine, log: &log, last_committed: 0 };
                    if let Ok((ops, _response)) = evaluate(&view, request, 1_000 + i as u64, 1, 1_700_000_000) {
                        decree += 1;
                        engine.apply(decree, 0, &ops).unwrap();
                    }
                }
            }
        }
    }
}
