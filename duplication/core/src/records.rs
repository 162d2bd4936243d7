//! Which stored records a duplicator ships: those that originated at this site. A record applied
//! from the other site keeps its origin's cluster id in its timetag, so it never travels back.

use tandem_core::Mutation;
use tandem_core::WriteOp;
use tandem_core::replica::DupRecord;
use tandem_core::timetag::{make_timetag, timetag_cluster_id};
use tandem_core::value::{decode_value, encode_tombstone};

/// The records of a committed mutation that this site (`cluster_id`) ships. A plain delete (the
/// log format before tombstones) ships as a tombstone stamped with the mutation's timestamp. A
/// value that does not decode is not shipped: it cannot be ordered (the log's checksums make
/// this a bug, not an input).
pub fn records_of_mutation(m: &Mutation, cluster_id: u8) -> Vec<DupRecord> {
    // One record per key, the last: a mutation logged before ops were collapsed per key may
    // name a key twice with one timetag (see `tandem_core::replica::write::evaluate`).
    let replaced = tandem_core::replica::write::replaced_ops(&m.ops);
    m.ops
        .iter()
        .enumerate()
        .filter(|(i, _)| !replaced.contains(i))
        .map(|(_, op)| op)
        .filter_map(|op| match op {
            WriteOp::Put { key, value } => snapshot_record(key, value, cluster_id),
            WriteOp::Delete { key } => {
                Some(DupRecord { key: key.clone(), value: encode_tombstone(make_timetag(m.timestamp_us, cluster_id, true)) })
            }
            // Another site's progress here: not a record, and never ours.
            WriteOp::Watermark { .. } => None,
        })
        .collect()
}

/// A stored record (from the log or a snapshot) as shipped, if it originated at this site.
pub fn snapshot_record(key: &[u8], value: &[u8], cluster_id: u8) -> Option<DupRecord> {
    let (header, _) = decode_value(value).ok()?;
    (timetag_cluster_id(header.timetag) == cluster_id).then(|| DupRecord { key: key.to_vec(), value: value.to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_core::value::encode_value;

    #[test]
    fn only_this_sites_records_ship() {
        let local = encode_value(0, make_timetag(10, 1, false), b"a");
        let remote = encode_value(0, make_timetag(11, 2, false), b"b");
        let tomb = encode_tombstone(make_timetag(12, 1, true));
        let m = Mutation {
            ballot: 1,
            decree: 5,
            timestamp_us: 13,
            ops: vec![
                WriteOp::Put { key: b"k1".to_vec(), value: local.clone() },
                WriteOp::Put { key: b"k2".to_vec(), value: remote },
                WriteOp::Put { key: b"k3".to_vec(), value: tomb.clone() },
                WriteOp::Delete { key: b"k4".to_vec() },
                WriteOp::Watermark { origin: 2, watermark_us: 3 },
                WriteOp::Put { key: b"k5".to_vec(), value: b"garbage".to_vec() },
            ],
        };
        assert_eq!(
            records_of_mutation(&m, 1),
            vec![
                DupRecord { key: b"k1".to_vec(), value: local },
                DupRecord { key: b"k3".to_vec(), value: tomb },
                DupRecord { key: b"k4".to_vec(), value: encode_tombstone(make_timetag(13, 1, true)) },
            ]
        );
        // Stamped with cluster 2, only its own put and the plain delete (stamped on the way) ship.
        let at_2 = records_of_mutation(&m, 2);
        assert_eq!(at_2.iter().map(|r| r.key.as_slice()).collect::<Vec<_>>(), [&b"k2"[..], &b"k4"[..]]);
    }
}
