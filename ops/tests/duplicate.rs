//! The apply side of duplication on real processes: records from the other site (cluster id 2)
//! sent to a site with cluster id 1 through `Table::duplicate`, routed per key over gRPC, each
//! applied only where its timetag beats the stored one.

mod support;

use std::time::{SystemTime, UNIX_EPOCH};
use support::{everything, Cluster, Store};
use tandem_client::{ClientError, DupApplied, DupRecord};
use tandem_core::key::encode_key;
use tandem_core::replica::DupWatermark;
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
    let applied = table.duplicate(records.clone(), None).await.unwrap();
    assert_eq!(applied, DupApplied { applied: 22, superseded: 3 });
    assert_eq!(table.get(b"local-newer", b"s").await.unwrap(), Some(b"mine".to_vec()));
    assert_eq!(table.get(b"deleted-there", b"s").await.unwrap(), None);
    assert_eq!(table.get(b"deleted-late", b"s").await.unwrap(), None);
    for i in 0..20 {
        assert_eq!(table.get(format!("new-{i}").as_bytes(), b"s").await.unwrap(), Some(format!("v{i}").into_bytes()));
    }
    // At-least-once shipping: the same batch again changes nothing.
    assert_eq!(table.duplicate(records, None).await.unwrap(), DupApplied { applied: 0, superseded: 25 });

    // A local write after a remote one wins, even over a remote clock running ahead.
    let ahead = now_us() + 300_000;
    table.duplicate(vec![put("race", b"theirs", ahead, 2)], None).await.unwrap();
    table.set(b"race", b"s", b"mine", 0).await.unwrap();
    assert_eq!(table.get(b"race", b"s").await.unwrap(), Some(b"mine".to_vec()));

    // Too far ahead of this site's clock: refused whole, nothing applied, the sender told why.
    let far = now_us() + 60_000_000;
    let err = table.duplicate(vec![put("far", b"x", far, 2)], None).await.unwrap_err();
    assert!(matches!(&err, ClientError::ClockAhead(m) if m.contains("max_clock_offset")), "{err:?}");
    assert_eq!(table.get(b"far", b"s").await.unwrap(), None);
    // This site's own cluster id: a configuration mistake, named.
    let err = table.duplicate(vec![put("own", b"x", after, 1)], None).await.unwrap_err();
    assert!(matches!(&err, ClientError::InvalidArgument(m) if m.contains("own cluster id")), "{err:?}");
    // Over the batch limit for one partition (same hash key): too large, so the sender splits;
    // alone, a large record goes through.
    let big = |sort: &str| DupRecord {
        key: encode_key(b"big", sort.as_bytes()),
        value: encode_value(0, make_timetag(after, 2, false), &vec![7u8; 1 << 20]),
    };
    let err = table.duplicate((0..5).map(|i| big(&i.to_string())).collect(), None).await.unwrap_err();
    assert!(matches!(&err, ClientError::TooLarge(m) if m.contains("4 × max_value_bytes")), "{err:?}");
    assert_eq!(table.duplicate(vec![big("0")], None).await.unwrap(), DupApplied { applied: 1, superseded: 0 });

    // Deletes write tombstones that nothing reads: scans and counts skip them.
    table.del(b"new-0", b"s").await.unwrap();
    assert_eq!(table.get(b"new-0", b"s").await.unwrap(), None);
    assert_eq!(table.sortkey_count(b"new-0").await.unwrap(), 0);

    // A heartbeat (no records) carries site 2's watermark to every partition, where it is
    // persisted: a record below it was applied before, so sent again it is superseded even on
    // a key that holds nothing (its tombstone may have been compacted since).
    let watermark = Some(DupWatermark { origin: 2, watermark_us: now_us() - 5_000_000 });
    assert_eq!(table.duplicate(vec![], watermark).await.unwrap(), DupApplied { applied: 0, superseded: 0 });
    let old = (0..8).map(|i| put(&format!("old-{i}"), b"x", before, 2)).collect();
    assert_eq!(table.duplicate(old, None).await.unwrap(), DupApplied { applied: 0, superseded: 8 });
    assert_eq!(table.get(b"old-0", b"s").await.unwrap(), None);
    // Above it, records apply as before; an origin id over 7 bits is refused with the limit.
    assert_eq!(table.duplicate(vec![put("fresh", b"x", now_us(), 2)], None).await.unwrap(), DupApplied { applied: 1, superseded: 0 });
    let err = table.duplicate(vec![], Some(DupWatermark { origin: 200, watermark_us: 1 })).await.unwrap_err();
    assert!(matches!(&err, ClientError::InvalidArgument(m) if m.contains("limit 127")), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sites_duplicate_both_ways_and_converge() {
    let (a, b, dup_ab) = support::two_sites_duplicating("t").await;
    let (ca, cb) = (a.client(), b.client());

    // Written at once: what commits after `dup add` ships even before a beacon hands the
    // duplication to the primaries (each partition starts from its committed decree).
    let (ta, tb) = (ca.table("t"), cb.table("t"));
    for i in 0..100 {
        ta.set(format!("from-a-{i}").as_bytes(), b"s", b"a", 0).await.unwrap();
        tb.set(format!("from-b-{i}").as_bytes(), b"s", b"b", 0).await.unwrap();
        // Both sites write the same keys, a then b: the later write wins at both.
        ta.set(format!("both-{i}").as_bytes(), b"s", b"a", 0).await.unwrap();
        tb.set(format!("both-{i}").as_bytes(), b"s", b"b", 0).await.unwrap();
    }
    ta.del(b"from-a-7", b"s").await.unwrap();
    a.poll(std::time::Duration::from_secs(60), "both sites hold the same records", || async {
        let (at_a, at_b) = (everything(&a, "t").await, everything(&b, "t").await);
        if at_a != at_b {
            let only_a: Vec<_> = at_a.iter().filter(|(k, v)| at_b.get(*k) != Some(*v)).map(|(k, v)| (String::from_utf8_lossy(&k.0).to_string(), String::from_utf8_lossy(v).to_string())).take(5).collect();
            let only_b: Vec<_> = at_b.iter().filter(|(k, v)| at_a.get(*k) != Some(*v)).map(|(k, v)| (String::from_utf8_lossy(&k.0).to_string(), String::from_utf8_lossy(v).to_string())).take(5).collect();
            eprintln!("a {} b {}: differ at a {only_a:?} at b {only_b:?}", at_a.len(), at_b.len());
            eprintln!("{:?}", ca.dup_list("t", false).await.unwrap().dups.iter().map(|d| d.partitions.iter().map(|p| (p.confirmed, p.report.as_ref().map(|r| (r.lag_decrees, r.last_error.clone())))).collect::<Vec<_>>()).collect::<Vec<_>>());
        }
        at_a == at_b
    })
    .await;
    let all = everything(&a, "t").await;
    assert_eq!(all.len(), 99 + 100 + 100);
    assert!(!all.contains_key(&(b"from-a-7".to_vec(), b"s".to_vec())), "the delete reached b too");
    // Each written at a, then at b after a's write was acknowledged: b's is the later timetag.
    assert!((0..100).all(|i| all[&(format!("both-{i}").into_bytes(), b"s".to_vec())] == b"b"));

    // Every partition's primary reports its progress; the meta persists it. Caught up, each
    // partition's watermark follows the clock (less twice the clock offset, 1 s).
    a.poll(std::time::Duration::from_secs(30), "the duplication's progress is persisted and caught up", || async {
        let dups = ca.dup_list("t", false).await.unwrap().dups;
        let recent = |w: u64| w + 30_000_000 > now_us() && w < now_us();
        dups.len() == 1
            && dups[0].partitions.iter().all(|p| {
                p.has_confirmed && p.report.as_ref().is_some_and(|r| r.lag_decrees == 0 && r.confirmed == p.confirmed && recent(r.watermark_us))
            })
    })
    .await;
    // dup verify: identical now.
    let verify = |site: &Cluster, args: &[&str]| {
        let out = std::process::Command::new(support::bin()).args(["dup", "verify", "t"]).args(args).env("TANDEM_META", &site.meta_addr).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).to_string())
    };
    let (code, text) = verify(&a, &["--ignore-last", "0s"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("identical") && text.contains("299 records"), "{text}");
    // A record at b that a never had (a batch forged as from a): verify names it.
    tb.duplicate(vec![put("forged", b"x", now_us() - 1_000_000, 1)], None).await.unwrap();
    let (code, text) = verify(&a, &["--to", "b", "--ignore-last", "0s"]);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("1 keys differ; the first: forged/s"), "{text}");
    // Left out while within the window.
    let (code, text) = verify(&a, &["--ignore-last", "1h"]);
    assert_eq!(code, Some(0), "{text}");
    // Removed: it no longer ships or shows.
    ca.dup_set_status(dup_ab, "removed").await.unwrap();
    assert_eq!(ca.dup_list("t", false).await.unwrap().dups.len(), 0);
}

/// Site `from` duplicates table `t` to site `to` (both know each other).
async fn duplicate(from: &Cluster, to: &Cluster, to_name: &str, sync_existing: bool) {
    let c = from.client();
    c.site_add(to_name, &[to.meta_addr.clone()]).await.unwrap();
    let req = tandem_proto::v1::DupAddRequest { table: "t".into(), remote_site: to_name.into(), fail_mode: String::new(), sync_existing };
    c.dup_add(req).await.unwrap();
}

async fn wait_equal(a: &Cluster, b: &Cluster, within: std::time::Duration) {
    a.poll(within, "both sites hold the same records", || async { everything(a, "t").await == everything(b, "t").await }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_existing_ships_what_the_table_held_before() {
    let a = Cluster::start_site("a", 1, 1).await;
    let b = Cluster::start_site("b", 2, 1).await;
    a.create_table("t", 4, 1).await;
    b.create_table("t", 4, 1).await;
    let ta = a.client().table("t");
    for i in 0..200 {
        ta.set(format!("old-{i}").as_bytes(), b"s", b"v", 0).await.unwrap();
    }
    ta.del(b"old-3", b"s").await.unwrap();
    duplicate(&a, &b, "b", true).await;
    ta.set(b"new", b"s", b"v", 0).await.unwrap();
    wait_equal(&a, &b, std::time::Duration::from_secs(60)).await;
    assert_eq!(everything(&b, "t").await.len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_primary_killed_while_shipping_loses_nothing_at_the_remote() {
    let mut a = Cluster::start_site("a", 1, 3).await;
    let b = Cluster::start_site("b", 2, 1).await;
    a.create_table("t", 4, 3).await;
    b.create_table("t", 4, 1).await;
    duplicate(&a, &b, "b", false).await;
    let load = support::start_load(&a, "t").await;
    let primary = a.partition("t", 0).await.primary;
    let victim = a.replica_index(&primary);
    a.kill_replica(victim);
    let acked = load.finish(&a).await;
    // Every acknowledged write reaches b (nothing else writes b).
    let tb = b.client().table("t");
    b.poll(std::time::Duration::from_secs(90), "every write acknowledged at a is at b", || async {
        let mut missing = 0;
        for (k, v) in &acked {
            if tb.get(k.as_bytes(), b"s").await.ok().flatten().as_deref() != Some(v.as_bytes()) {
                missing += 1;
            }
        }
        missing == 0
    })
    .await;
}

/// The partition test: sites cut apart for 30 s (every process of b stopped), writers at
/// both sites on overlapping keys before and after, a writer at a during; after the heal both
/// sites converge to the same records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sites_cut_apart_for_30_seconds_converge_after_the_heal() {
    let a = Cluster::start_site("a", 1, 1).await;
    let mut b = Cluster::start_site("b", 2, 1).await;
    a.create_table("t", 4, 1).await;
    b.create_table("t", 4, 1).await;
    duplicate(&a, &b, "b", false).await;
    duplicate(&b, &a, "a", false).await;
    let (ta, tb) = (a.client().table("t"), b.client().table("t"));
    for i in 0..50 {
        ta.set(format!("k{i}").as_bytes(), b"s", b"a-before", 0).await.unwrap();
        tb.set(format!("k{i}").as_bytes(), b"s", b"b-before", 0).await.unwrap();
    }
    b.signal_all("STOP");
    let cut = std::time::Instant::now();
    let mut i = 0;
    while cut.elapsed() < std::time::Duration::from_secs(30) {
        ta.set(format!("k{}", i % 80).as_bytes(), b"s", format!("a-during-{i}").as_bytes(), 0).await.unwrap();
        i += 1;
    }
    b.signal_all("CONT");
    for i in 0..50 {
        tb.set(format!("k{}", i + 40).as_bytes(), b"s", b"b-after", 0).await.unwrap();
    }
    wait_equal(&a, &b, std::time::Duration::from_secs(90)).await;
    let all = everything(&a, "t").await;
    assert_eq!(all.len(), 90);
    // b's writes after the heal are the latest of their keys.
    assert!((40..90).all(|i| all[&(format!("k{i}").into_bytes(), b"s".to_vec())] == b"b-after"));
}

/// The GC test: a paused duplication holds the log through log GC (small segments, a
/// GC every 5 s that flushes every engine holding the log), and on resume everything ships from
/// the log, with no re-sync from a snapshot; then the log is collected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_duplication_holds_the_log_through_gc() {
    let config = "log_segment_bytes_max = \"256KiB\"\nlog_cache_bytes_max = \"64KiB\"\nlog_gc_interval = \"5s\"\nlog_retain_bytes = \"0B\"";
    let a = Cluster::start_site_with("a", 1, 1, config).await;
    let b = Cluster::start_site("b", 2, 1).await;
    a.create_table("t", 2, 1).await;
    a.create_table("u", 2, 1).await;
    b.create_table("t", 2, 1).await;
    duplicate(&a, &b, "b", false).await;
    let ca = a.client();
    // Paused once its primaries run it (their first report reached the meta).
    a.poll(std::time::Duration::from_secs(30), "the duplication runs", || async {
        ca.dup_list("t", false).await.unwrap().dups[0].partitions.iter().all(|p| p.report.is_some())
    })
    .await;
    ca.dup_set_status(1, "pause").await.unwrap();
    let gc_runs = || std::fs::read_to_string(&a.replicas[0].log).unwrap_or_default().matches("log gc removed").count();
    // Segments removed by the runs so far: none can go while the hold keeps t's, the oldest.
    let removed = || {
        let log = std::fs::read_to_string(&a.replicas[0].log).unwrap_or_default();
        log.lines().filter_map(|l| l.split("log gc removed ").nth(1)?.split(' ').next()?.parse::<u64>().ok()).sum::<u64>()
    };
    // t's writes first, the oldest segments, then another table's; without the hold, GC would
    // remove t's segments once its engines flushed them.
    let value = vec![b'v'; 1024];
    let (tu, tt) = (ca.table("u"), ca.table("t"));
    for i in 0..1500 {
        tt.set(format!("t-{i}").as_bytes(), b"s", &value, 0).await.unwrap();
    }
    for i in 0..1500 {
        tu.set(format!("u-{i}").as_bytes(), b"s", &value, 0).await.unwrap();
    }
    let before = gc_runs();
    a.poll(std::time::Duration::from_secs(60), "two log GC runs after the writes", || async { gc_runs() >= before + 2 }).await;
    let removed_while_held = removed();
    ca.dup_set_status(1, "start").await.unwrap();
    let tb = b.client().table("t");
    b.poll(std::time::Duration::from_secs(60), "every write of t reached b", || async {
        for i in (0..1500).step_by(50).chain([1499]) {
            if tb.get(format!("t-{i}").as_bytes(), b"s").await.ok().flatten().is_none() {
                return false;
            }
        }
        true
    })
    .await;
    wait_equal(&a, &b, std::time::Duration::from_secs(60)).await;
    // The primaries' reports catch up a beacon later.
    a.poll(std::time::Duration::from_secs(30), "the primaries report the duplication caught up", || async {
        let dups = ca.dup_list("t", false).await.unwrap().dups;
        dups[0].partitions.iter().all(|p| p.report.as_ref().is_some_and(|r| r.lag_decrees == 0 && r.confirmed >= 750))
    })
    .await;
    let dups = ca.dup_list("t", false).await.unwrap().dups;
    assert!(dups[0].partitions.iter().all(|p| p.report.as_ref().is_some_and(|r| r.resyncs == 0)), "{:?}", dups[0].partitions);
    // Released, the log goes: the GC flushes the engines holding it (log_retain_bytes 0) and
    // removes the segments their durable decrees cover.
    a.poll(std::time::Duration::from_secs(60), "log segments removed once the hold is released", || async { removed() > removed_while_held + 5 }).await;
}
