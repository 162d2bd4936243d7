//! The apply side of duplication on real processes: records from the other site (cluster id 2)
//! sent to a site with cluster id 1 through `Table::duplicate`, routed per key over gRPC, each
//! applied only where its timetag beats the stored one.

mod support;

use std::time::{SystemTime, UNIX_EPOCH};
use support::{Cluster, Store};
use tandem_client::{ClientError, DupApplied, DupRecord};
use tandem_core::key::encode_key;
use tandem_core::timetag::make_timetag;
use tandem_core::value::{encode_tombstone, encode_value};

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
}

fn put(hash_key: &str, value: &[u8], timestamp_us: u64, cluster_id: u8) -> DupRecord {
    DupRecord { key: encode_key(hash_key.as_bytes(), b"s"), value: encode_value(0, make_timetag(timestamp_us, cluster_id, false), value) }
}

fn tombstone(hash_key: &str, timestamp_us: u64) -> DupRecord {
    DupRecord { key: encode_key(hash_key.as_bytes(), b"s"), value: encode_tombstone(make_timetag(timestamp_us, 2, true)) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_the_other_site_apply_by_last_writer_wins() {
    let cluster = Cluster::start(2, Store::Sqlite).await;
    cluster.create_table("t", 4, 2).await;
    let table = cluster.client().table("t");
    table.set(b"local-newer", b"s", b"mine", 0).await.unwrap();
    table.set(b"deleted-there", b"s", b"mine", 0).await.unwrap();
    let before = now_us() - 10_000_000;
    let after = now_us();

    // Keys spread over the 4 partitions; one batch, routed per key.
    let mut records = vec![
        put("local-newer", b"theirs", before, 2),
        put("deleted-there", b"theirs", before, 2),
        tombstone("deleted-there", after),
        put("deleted-late", b"theirs", after - 2, 2),
        tombstone("deleted-late", after - 1),
    ];
    for i in 0..20 {
        records.push(put(&format!("new-{i}"), format!("v{i}").as_bytes(), after, 2));
    }
    // The put of "deleted-late" lands after its tombstone at the same key: it loses. The local
    // "local-newer" is newer than theirs: it stays.
    records.swap(3, 4);
    let applied = table.duplicate(records.clone()).await.unwrap();
    assert_eq!(applied, DupApplied { applied: 22, superseded: 3 });
    assert_eq!(table.get(b"local-newer", b"s").await.unwrap(), Some(b"mine".to_vec()));
    assert_eq!(table.get(b"deleted-there", b"s").await.unwrap(), None);
    assert_eq!(table.get(b"deleted-late", b"s").await.unwrap(), None);
    for i in 0..20 {
        assert_eq!(table.get(format!("new-{i}").as_bytes(), b"s").await.unwrap(), Some(format!("v{i}").into_bytes()));
    }
    // At-least-once shipping: the same batch again changes nothing.
    assert_eq!(table.duplicate(records).await.unwrap(), DupApplied { applied: 0, superseded: 25 });

    // A local write after a remote one wins, even over a remote clock running ahead.
    let ahead = now_us() + 300_000;
    table.duplicate(vec![put("race", b"theirs", ahead, 2)]).await.unwrap();
    table.set(b"race", b"s", b"mine", 0).await.unwrap();
    assert_eq!(table.get(b"race", b"s").await.unwrap(), Some(b"mine".to_vec()));

    // Too far ahead of this site's clock: refused whole, nothing applied, the sender told why.
    let far = now_us() + 60_000_000;
    let err = table.duplicate(vec![put("far", b"x", far, 2)]).await.unwrap_err();
    assert!(matches!(&err, ClientError::ClockAhead(m) if m.contains("max_clock_offset")), "{err:?}");
    assert_eq!(table.get(b"far", b"s").await.unwrap(), None);
    // This site's own cluster id: a configuration mistake, named.
    let err = table.duplicate(vec![put("own", b"x", after, 1)]).await.unwrap_err();
    assert!(matches!(&err, ClientError::InvalidArgument(m) if m.contains("own cluster id")), "{err:?}");
    // Over the batch limit for one partition (same hash key): too large, so the sender splits;
    // alone, a large record goes through.
    let big = |sort: &str| DupRecord {
        key: encode_key(b"big", sort.as_bytes()),
        value: encode_value(0, make_timetag(after, 2, false), &vec![7u8; 1 << 20]),
    };
    let err = table.duplicate((0..5).map(|i| big(&i.to_string())).collect()).await.unwrap_err();
    assert!(matches!(&err, ClientError::TooLarge(m) if m.contains("4 × max_value_bytes")), "{err:?}");
    assert_eq!(table.duplicate(vec![big("0")]).await.unwrap(), DupApplied { applied: 1, superseded: 0 });

    // Deletes write tombstones that nothing reads: scans and counts skip them.
    table.del(b"new-0", b"s").await.unwrap();
    assert_eq!(table.get(b"new-0", b"s").await.unwrap(), None);
    assert_eq!(table.sortkey_count(b"new-0").await.unwrap(), 0);
}
