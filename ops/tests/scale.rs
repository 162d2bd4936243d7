//! Many partitions on real servers (issue 15, docs/scale.md):
//! - a table of 1,024 partitions on three replica servers (each hosts 1,024 replicas) creates,
//!   serves, takes writes, and survives kill -9 of a server: nothing acknowledged is lost, and
//!   every replica serves again once it is back; each server's open files stay within what its
//!   replicas are allowed;
//! - servers with room for few replicas say so in their beacons: the meta refuses a table that
//!   does not fit, naming the fix, and places one that does.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};
use support::{assert_all_read_back, bin, start_load, Cluster, Store};

/// Polls until every partition of `table` has `replicas` members, each reporting its role at
/// the configuration's ballot (health alone counts members the meta thinks alive, not replicas
/// that opened; a report at an older ballot is a killed server's last word).
async fn wait_serving(cluster: &Cluster, table: &str, partitions: usize, replicas: usize, within: Duration) {
    let client = cluster.client();
    cluster
        .poll(within, &format!("every partition of {table} served by {replicas} replicas"), || {
            let client = client.clone();
            let table = table.to_string();
            async move {
                let Ok(resp) = client.show_table(&table).await else { return false };
                let serving = |p: &tandem_proto::v1::PartitionHealth| {
                    let Some(c) = &p.config else { return false };
                    let reported = |node: &str, role: &str| {
                        p.report_nodes.iter().zip(&p.reports).any(|(n, r)| n == node && r.status == role && r.ballot == c.ballot)
                    };
                    1 + c.secondaries.len() == replicas && reported(&c.primary, "primary") && c.secondaries.iter().all(|s| reported(s, "secondary"))
                };
                resp.partitions.len() == partitions && resp.partitions.iter().all(serving)
            }
        })
        .await;
}

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_table_of_1024_partitions_serves_and_survives_a_killed_server() {
    const PARTITIONS: u32 = 1024;
    let mut cluster = Cluster::start(3, Store::Sqlite).await;
    let client = cluster.client();
    let started = Instant::now();
    client.create_table("big", PARTITIONS, 3, "test").await.expect("create a table of 1,024 partitions");
    let created = started.elapsed();
    wait_serving(&cluster, "big", PARTITIONS as usize, 3, Duration::from_secs(300)).await;
    let serving = started.elapsed();
    let t = Instant::now();
    let status = client.cluster_status().await.expect("status");
    let status_took = t.elapsed();
    assert_eq!((status.partitions, status.healthy), (PARTITIONS, PARTITIONS), "{:?}", status.problems);
    let t = Instant::now();
    client.show_table("big").await.expect("show");
    let show_took = t.elapsed();
    println!("1,024 partitions: created in {created:?}, every replica serving after {serving:?}; status took {status_took:?}, table show {show_took:?}");

    // Each server hosts 1,024 replicas; their engines keep their files bounded.
    for (i, s) in cluster.replicas.iter().enumerate() {
        let pid = s.child.as_ref().expect("running").id();
        let files = open_files(pid);
        println!("replica server {i}: {files} open files");
        assert!(files <= PARTITIONS as usize * tandem_storage::FILES_PER_ENGINE + 2048, "server {i} holds {files} files");
    }

    let load = start_load(&cluster, "big").await;
    cluster.kill_replica(1);
    let killed = Instant::now();
    let acked = load.finish(&cluster).await;
    println!("{} writes acknowledged; the last {:?} after the kill", acked.len(), killed.elapsed());
    cluster.start_replica(1);
    let restarted = Instant::now();
    wait_serving(&cluster, "big", PARTITIONS as usize, 3, Duration::from_secs(300)).await;
    println!("every replica serving again {:?} after the restart", restarted.elapsed());
    assert_all_read_back(&cluster, "big", &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_with_room_for_few_replicas_get_no_more_and_a_table_that_does_not_fit_is_refused() {
    // Three servers of four replicas each: twelve in all.
    let cluster = Cluster::start_site_with("a", 1, 3, "max_replicas = 4").await;
    let tandem = |args: &[&str]| Command::new(bin()).args(args).env("TANDEM_META", &cluster.meta_addr).output().expect("run tandem");
    cluster
        .poll(Duration::from_secs(30), "the beacons' most replicas", || {
            let client = cluster.client();
            async move { client.list_nodes().await.is_ok_and(|nodes| nodes.len() == 3 && nodes.iter().all(|n| n.replicas_max == 4)) }
        })
        .await;
    let nodes = tandem(&["nodes"]);
    let shown = String::from_utf8_lossy(&nodes.stdout);
    assert!(shown.contains("MAX REPLICAS") && shown.lines().skip(1).all(|l| l.contains(" 4 ")), "{shown}");

    let refused = tandem(&["table", "create", "big", "--partitions", "8", "--replicas", "3"]);
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{why}");
    assert!(why.contains("8 partitions of 3 replicas need 24 replicas") && why.contains("take 12 more") && why.contains("ulimit -n"), "{why}");

    let created = tandem(&["table", "create", "fits", "--partitions", "4", "--replicas", "3"]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    wait_serving(&cluster, "fits", 4, 3, Duration::from_secs(60)).await;
    let full = tandem(&["table", "create", "more", "--partitions", "1", "--replicas", "1"]);
    assert!(!full.status.success() && String::from_utf8_lossy(&full.stderr).contains("take 0 more"), "{}", String::from_utf8_lossy(&full.stderr));
}
