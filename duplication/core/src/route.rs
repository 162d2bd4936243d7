//! Records are routed per key at the remote site, whose partition count may differ from ours
//! (Pegasus routed a whole batch by its last key, which misplaces records when counts differ).

use std::collections::BTreeMap;
use tandem_core::key::decode_key;
use tandem_core::partition::partition_index;
use tandem_core::replica::DupRecord;

/// The records of a batch grouped by the remote partition that owns each, in batch order within
/// each group. Keys that do not decode are returned apart (the caller refuses the batch: they
/// came from our own validated log, so this is a bug, not an input). An empty batch is a
/// heartbeat, which carries the watermark to every partition: each gets an empty group.
pub fn split_by_partition(records: Vec<DupRecord>, partition_count: u32) -> (BTreeMap<u32, Vec<DupRecord>>, Vec<DupRecord>) {
    if records.is_empty() {
        return ((0..partition_count).map(|p| (p, Vec::new())).collect(), Vec::new());
    }
    let mut groups: BTreeMap<u32, Vec<DupRecord>> = BTreeMap::new();
    let mut bad = Vec::new();
    for r in records {
        match decode_key(&r.key) {
            Ok((hash_key, _)) if !hash_key.is_empty() => groups.entry(partition_index(hash_key, partition_count)).or_default().push(r),
            _ => bad.push(r),
        }
    }
    (groups, bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_core::key::encode_key;

    #[test]
    fn records_go_to_the_partition_of_their_own_hash_key() {
        let records: Vec<DupRecord> =
            (0..200).map(|i| DupRecord { key: encode_key(format!("user{i}").as_bytes(), b"s"), value: vec![i as u8] }).collect();
        for count in [1u32, 4, 16] {
            let (groups, bad) = split_by_partition(records.clone(), count);
            assert!(bad.is_empty());
            assert_eq!(groups.values().map(Vec::len).sum::<usize>(), records.len());
            for (p, group) in &groups {
                for r in group {
                    let (hk, _) = decode_key(&r.key).unwrap();
                    assert_eq!(partition_index(hk, count), *p);
                }
                // Order within a partition is the batch's order (later records of a key last).
                assert!(group.windows(2).all(|w| w[0].value < w[1].value));
            }
        }
        let (_, bad) = split_by_partition(vec![DupRecord { key: vec![0], value: vec![] }], 4);
        assert_eq!(bad.len(), 1);
        let (heartbeat, _) = split_by_partition(vec![], 4);
        assert_eq!(heartbeat.into_iter().collect::<Vec<_>>(), (0..4).map(|p| (p, vec![])).collect::<Vec<_>>());
    }
}
