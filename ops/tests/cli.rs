//! The CLI against real servers: every command, its output, its exit code, and bad input.

mod support;

use std::process::Output;
use std::time::Duration;
use support::{bin, http_get, Cluster, Store};

fn tandem(cluster: &Cluster, args: &[&str]) -> Output {
    std::process::Command::new(bin()).args(args).env("TANDEM_META", &cluster.meta_addr).output().expect("run tandem")
}

fn ok(cluster: &Cluster, args: &[&str]) -> String {
    let out = tandem(cluster, args);
    assert!(out.status.success(), "tandem {args:?} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn fails(cluster: &Cluster, args: &[&str], code: i32, message: &str) {
    let out = tandem(cluster, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "tandem {args:?}: {stderr}");
    assert!(stderr.contains(message), "tandem {args:?}: expected {message:?} in {stderr:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_with_its_output_and_exit_code() {
    let mut cluster = Cluster::start(3, Store::Sqlite).await;
    fails(&cluster, &["table", "create", "t", "--partitions", "3"], 1, "power of two");
    fails(&cluster, &["table", "create", "t", "--replicas", "4"], 1, "exceeds the 3 live replica servers");
    fails(&cluster, &["table", "create", "bad name"], 1, "may contain only");
    ok(&cluster, &["table", "create", "t", "--partitions", "4", "--replicas", "3", "--owner", "alice"]);
    fails(&cluster, &["table", "create", "t"], 5, "already exists");
    cluster.wait_healthy(Duration::from_secs(30)).await;
    assert!(ok(&cluster, &["table", "list"]).contains("alice"));
    let show = ok(&cluster, &["table", "show", "t", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&show).unwrap();
    assert_eq!(v["partitions_detail"].as_array().unwrap().len(), 4);
    assert_eq!(v["partitions_detail"][0]["health"], "healthy");

    assert_eq!(ok(&cluster, &["set", "t", "h", "s", "v1"]).trim(), "OK");
    assert_eq!(ok(&cluster, &["get", "t", "h", "s"]).trim(), "v1");
    assert_eq!(ok(&cluster, &["exist", "t", "h", "s"]).trim(), "true");
    assert_eq!(ok(&cluster, &["ttl", "t", "h", "s"]).trim(), "-1 (no expiry)");
    ok(&cluster, &["set", "t", "h", "tmp", "x", "--ttl", "100"]);
    let ttl: i64 = ok(&cluster, &["ttl", "t", "h", "tmp"]).trim().parse().unwrap();
    assert!((98..=100).contains(&ttl), "{ttl}");
    fails(&cluster, &["get", "t", "h", "nope"], 4, "not found");
    fails(&cluster, &["get", "nope", "h", "s"], 4, "does not exist");
    assert_eq!(ok(&cluster, &["incr", "t", "h", "n", "--by", "5"]).trim(), "5");
    assert_eq!(ok(&cluster, &["incr", "t", "h", "n", "--by", "-2"]).trim(), "3");
    fails(&cluster, &["incr", "t", "h", "s"], 1, "not an integer");
    ok(&cluster, &["check-and-set", "t", "h", "--check-sort-key", "s", "--check-type", "bytes_equal", "--operand", "v1", "--set-sort-key", "s", "--value", "v2"]);
    fails(
        &cluster,
        &["check-and-set", "t", "h", "--check-sort-key", "s", "--check-type", "bytes_equal", "--operand", "v1", "--set-sort-key", "s", "--value", "v3"],
        5,
        "",
    );
    fails(&cluster, &["check-and-set", "t", "h", "--check-sort-key", "s", "--check-type", "nope", "--set-sort-key", "s", "--value", "v"], 2, "unknown check type");
    assert_eq!(ok(&cluster, &["get", "t", "h", "s"]).trim(), "v2");
    ok(&cluster, &["multi-set", "t", "m", "a=1", "b=2", "c=3"]);
    assert_eq!(ok(&cluster, &["multi-get", "t", "m", "a", "c", "zz"]), "a\t1\nc\t3\n");
    assert_eq!(ok(&cluster, &["multi-get", "t", "m"]), "a\t1\nb\t2\nc\t3\n");
    assert_eq!(ok(&cluster, &["sortkey-count", "t", "m"]).trim(), "3");
    assert_eq!(ok(&cluster, &["scan", "t", "m", "--start", "b"]), "b\t2\nc\t3\n");
    assert_eq!(ok(&cluster, &["scan", "t", "m", "--stop", "b", "--stop-inclusive"]), "a\t1\nb\t2\n");
    ok(&cluster, &["multi-del", "t", "m", "a", "b"]);
    assert_eq!(ok(&cluster, &["sortkey-count", "t", "m"]).trim(), "1");
    ok(&cluster, &["del", "t", "h", "s"]);
    fails(&cluster, &["exist", "t", "h", "s"], 4, "");
    let scan: serde_json::Value = serde_json::from_str(&ok(&cluster, &["full-scan", "t", "--json", "--limit", "1000"])).unwrap();
    let records = scan["records"].as_array().unwrap();
    assert_eq!(records.len(), 3, "{scan}"); // h/tmp, h/n, m/c

    // A reader that stops early (`| head`) ends the command quietly, not with a panic.
    let big: Vec<String> = (0..100).map(|i| format!("k{i:03}={}", "x".repeat(1024))).collect();
    let mut args = vec!["multi-set", "t", "big"];
    args.extend(big.iter().map(String::as_str));
    ok(&cluster, &args);
    let mut child = std::process::Command::new(bin())
        .args(["scan", "t", "big"])
        .env("TANDEM_META", &cluster.meta_addr)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader is gone before the first line
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // Limits: named in the error, never truncated.
    let long_hash = "h".repeat(1025);
    fails(&cluster, &["set", "t", &long_hash, "s", "v"], 1, "1024-byte limit");
    fails(&cluster, &["set", "t", "", "s", "v"], 1, "hash key is empty");
    let long_sort = "s".repeat(4097);
    fails(&cluster, &["set", "t", "h", &long_sort, "v"], 1, "4096-byte limit");
    let mut child = std::process::Command::new(bin())
        .args(["set", "t", "h", "s", "-"])
        .env("TANDEM_META", &cluster.meta_addr)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &vec![b'v'; (1 << 20) + 1]).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exceeds the 1 MiB limit"), "{}", String::from_utf8_lossy(&out.stderr));

    assert!(ok(&cluster, &["nodes"]).matches("alive").count() >= 3);
    assert!(ok(&cluster, &["status"]).starts_with("healthy"));
    ok(&cluster, &["table", "drop", "t"]);
    fails(&cluster, &["get", "t", "h", "n"], 4, "does not exist");
    ok(&cluster, &["table", "recall", "t"]);
    assert_eq!(ok(&cluster, &["get", "t", "h", "n"]).trim(), "3");

    cluster.kill_replica(0);
    cluster
        .poll(Duration::from_secs(30), "status reports the dead server", || async {
            tandem(&cluster, &["status"]).status.code() == Some(3)
        })
        .await;
    fails(&cluster, &["table", "create", "u", "--meta", "127.0.0.1:1", "--timeout", "3s"], 3, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_unhealthy_while_no_replica_server_is_alive() {
    let cluster = Cluster::start(0, Store::Sqlite).await;
    let out = tandem(&cluster, &["status"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(stdout.starts_with("UNHEALTHY") && stdout.contains("no replica server is alive"), "{stdout}");
    let v: serde_json::Value = serde_json::from_slice(&tandem(&cluster, &["status", "--json"]).stdout).unwrap();
    assert_eq!(v["healthy"], false, "{v}");
}

#[test]
fn usage_errors_exit_2_and_config_default_is_valid_toml() {
    let out = std::process::Command::new(bin()).args(["table", "create"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = std::process::Command::new(bin()).args(["config", "default"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let v: toml::Value = toml::from_str(&text).unwrap();
    assert_eq!(v["replica"]["lease_period"].as_str(), Some("6s"));
    assert_eq!(v["meta"]["grace_period"].as_str(), Some("8s"));
}

/// Each layer overrides the one before: defaults ← config file ← TANDEM_* environment ← flags.
#[test]
fn flags_win_over_environment_over_file_over_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tandem.toml");
    std::fs::write(
        &file,
        "[replica]\nlisten = \"127.0.0.1:7001\"\nlease_period = \"5s\"\nprepare_timeout = \"3s\"\n\n\
         [meta]\nlisten = \"127.0.0.1:7101\"\ngrace_period = \"12s\"\ntick_interval = \"2s\"\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin())
            .args(args)
            .env("TANDEM_CONFIG", &file)
            .env("TANDEM_REPLICA_LISTEN", "127.0.0.1:7002")
            .env("TANDEM_REPLICA_LEASE_PERIOD", "4s")
            .env("TANDEM_META_GRACE_PERIOD", "10s")
            .env("TANDEM_META_LISTEN", "127.0.0.1:7102")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let v: toml::Value = toml::from_str(&String::from_utf8(out.stdout).unwrap()).unwrap();
        v
    };
    let v = run(&["replica", "start", "--listen", "127.0.0.1:7003", "--print-config"]);
    let r = &v["replica"];
    assert_eq!(r["listen"].as_str(), Some("127.0.0.1:7003"), "flag over environment");
    assert_eq!(r["lease_period"].as_str(), Some("4s"), "environment over file");
    assert_eq!(r["prepare_timeout"].as_str(), Some("3s"), "file over default");
    assert_eq!(r["beacon_interval"].as_str(), Some("1s"), "default");
    assert!(v.get("meta").is_none(), "only the server's own section");

    let v = run(&["meta", "start", "--grace-period", "9s", "--print-config"]);
    let m = &v["meta"];
    assert_eq!(m["grace_period"].as_str(), Some("9s"), "flag over environment");
    assert_eq!(m["listen"].as_str(), Some("127.0.0.1:7102"), "environment over file");
    assert_eq!(m["tick_interval"].as_str(), Some("2s"), "file over default");
}

#[test]
fn servers_refuse_invalid_configuration_with_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let refused = |flags: &[&str], rule: &str| {
        let out = std::process::Command::new(bin())
            .args(["replica", "start", "--listen", "127.0.0.1:0", "--meta", "127.0.0.1:1", "--data-dir"])
            .arg(dir.path())
            .args(flags)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains(rule), "{}", String::from_utf8_lossy(&out.stderr));
    };
    refused(&["--lease-period", "1s"], "more than twice beacon_interval");
    refused(&["--inactive-replica-gc-delay", "1s"], "at least two beacon intervals");
    let out = std::process::Command::new(bin()).args(["meta", "start", "--store", "mysql://x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sqlite://"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reflection_and_metrics_on_every_server() {
    let metrics_port = support::free_port();
    let mut cluster = Cluster::start_with(1, Store::Sqlite, &["--metrics-listen", &format!("127.0.0.1:{metrics_port}")]).await;
    cluster.create_table("t", 1, 1).await;
    cluster.client().table("t").set(b"k", b"", b"v", 0).await.unwrap();
    for (addr, service) in [(cluster.meta_addr.clone(), "tandem.v1.MetaService"), (cluster.replicas[0].addr.clone(), "tandem.v1.ReplicaService")] {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        let resp = health.check(tonic_health::pb::HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(resp.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
        // Reflection v1
        {
            use tonic_reflection::pb::v1::{server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest, ServerReflectionRequest};
            let mut c = ServerReflectionClient::new(channel.clone());
            let req = ServerReflectionRequest { host: String::new(), message_request: Some(MessageRequest::ListServices(String::new())) };
            let mut stream = c.server_reflection_info(tokio_stream::iter(vec![req])).await.unwrap().into_inner();
            let msg = stream.message().await.unwrap().unwrap();
            assert!(format!("{msg:?}").contains(service), "v1 reflection lists {service}");
        }
        // Reflection v1alpha
        {
            use tonic_reflection::pb::v1alpha::{server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest, ServerReflectionRequest};
            let mut c = ServerReflectionClient::new(channel);
            let req = ServerReflectionRequest { host: String::new(), message_request: Some(MessageRequest::ListServices(String::new())) };
            let mut stream = c.server_reflection_info(tokio_stream::iter(vec![req])).await.unwrap().into_inner();
            let msg = stream.message().await.unwrap().unwrap();
            assert!(format!("{msg:?}").contains(service), "v1alpha reflection lists {service}");
        }
    }
    // Prometheus text from the replica server.
    let body = http_get(metrics_port, "/metrics");
    assert!(body.contains("tandem_replica_requests_total{op=\"set\",result=\"ok\",table_id=\"1\"}"), "{body}");
    assert!(body.contains("tandem_replica_request_seconds_bucket"), "{body}");
    assert!(body.contains("tandem_replica_replicas{status=\"primary\"} 1"), "{body}");
    // Figures read back after known traffic: 25 more writes, 25 more in the write counter (the
    // one replica server takes every write).
    let sets = || {
        let body = http_get(metrics_port, "/metrics");
        let figure = |name: &str| support::metric_value(&body, name).unwrap_or_else(|| panic!("{name} in {body}"));
        (
            figure("tandem_replica_requests_total{op=\"set\",result=\"ok\",table_id=\"1\"}") as u64,
            figure("tandem_replica_mutation_log_group_records_sum") as u64,
            figure("tandem_replica_mutation_log_written_bytes_total") as u64,
        )
    };
    let before = sets();
    let table = cluster.client().table("t");
    for i in 0..25 {
        table.set(format!("k{i}").as_bytes(), b"", b"v", 0).await.unwrap();
    }
    let after = sets();
    assert_eq!(after.0, before.0 + 25);
    // The log wrote each of them in some group (more records may come from elsewhere, never
    // fewer), each at least its 1-byte value and header.
    assert!(after.1 >= before.1 + 25, "{before:?} → {after:?}");
    assert!(after.2 >= before.2 + 25 * 8, "{before:?} → {after:?}");
    // Per table: the one primary, and the table's committed decrees here cover all 26 writes.
    let body = http_get(metrics_port, "/metrics");
    assert!(body.contains("tandem_replica_table_replicas{status=\"primary\",table_id=\"1\"} 1"), "{body}");
    let committed = body.lines().find_map(|l| l.strip_prefix("tandem_replica_table_committed_decrees{table_id=\"1\"} ")).expect("committed decrees");
    assert!(committed.parse::<u64>().unwrap() >= 26, "{body}");
    assert!(body.contains("tandem_replica_table_uncommitted_mutations{table_id=\"1\"} 0"), "{body}");
    for family in [
        "tandem_replica_table_pending_compaction_bytes{table_id=\"1\"} ",
        "tandem_replica_rocksdb_block_cache_lookups_total{result=\"hit\"} ",
        "tandem_replica_rocksdb_write_stall_seconds_total ",
        "tandem_replica_rocksdb_write_stopped_engines 0",
        "tandem_replica_checkpoint_fetches_total{result=\"ok\"} 0",
        "tandem_replica_checkpoint_fetch_remaining_bytes 0",
        "tandem_replica_mutation_log_group_records_bucket{le=\"1\"} ",
    ] {
        assert!(body.contains(family), "{family} missing from:\n{body}");
    }
    cluster.kill_replica(0);
}

/// The meta server's /metrics describes the meta: leadership, requests by kind and result,
/// store writes, lease claims.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_meta_metrics_describe_the_meta() {
    let metrics_port = support::free_port();
    let mut cluster = Cluster::start_ha(1, 1, Store::Sqlite, &["--metrics-listen", &format!("127.0.0.1:{metrics_port}")]).await;
    cluster.create_table("t", 1, 1).await;
    let body = http_get(metrics_port, "/metrics");
    for expected in [
        "tandem_meta_is_leader 1",
        "tandem_meta_requests_total{kind=\"beacon\",result=\"ok\"}",
        "tandem_meta_requests_total{kind=\"create_table\",result=\"ok\"} 1",
        "tandem_meta_store_writes_total{kind=\"create_table\",result=\"ok\"} 1",
        "tandem_meta_store_write_seconds_bucket",
        "tandem_meta_lease_claims_total{outcome=\"won\"}",
        "tandem_build_info{server=\"meta\"",
        "process_resident_memory_bytes ",
        // The cluster's shape as the leader sees it: one table of one healthy partition, one
        // replica server alive.
        "tandem_meta_tables 1",
        "tandem_meta_partitions{health=\"healthy\"} 1",
        "tandem_meta_partitions{health=\"unavailable\"} 0",
        "tandem_meta_replica_servers{state=\"alive\"} 1",
        "tandem_meta_config_changes_total{cause=\"cure\",outcome=\"committed\"} ",
        "tandem_meta_config_changes_total{cause=\"remove_secondary\",outcome=\"refused\"} 0",
    ] {
        assert!(body.contains(expected), "{expected} missing from:\n{body}");
    }
    let epoch = body.lines().find_map(|l| l.strip_prefix("tandem_meta_epoch ")).expect("the epoch gauge");
    assert!(epoch.parse::<u64>().unwrap() >= 1, "{body}");
    cluster.kill_replica(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_commands_record_who_changed_what() {
    let cluster = Cluster::start(3, Store::Sqlite).await;
    ok(&cluster, &["table", "create", "p", "--partitions", "2", "--owner", "alice", "--as", "carol", "--tombstone-retention", "2d"]);
    let show = ok(&cluster, &["table", "show", "p"]);
    assert!(show.contains("owner alice") && show.contains("level 1: 3 replicas"), "{show}");
    let policy: serde_json::Value = serde_json::from_str(&ok(&cluster, &["policy", "show", "p", "--json"])).unwrap();
    assert_eq!((policy["owner"].as_str(), policy["policy"]["tombstone_retention"].as_str()), (Some("alice"), Some("2days")));

    let target = format!("file://{}", cluster.dir.path().join("backups").display());
    let out = ok(&cluster, &["policy", "set", "p", "--backup", "6h", "--backup-target", &target, "--as", "dave"]);
    assert!(out.contains("changed by dave") && out.contains(&format!("backup: off → every 6h, keep 7, to {target}")), "{out}");
    // The table has no backup: the schedule starts one at once, and the level reports it.
    cluster
        .poll(Duration::from_secs(60), "the scheduled backup completes", || {
            let status = tandem(&cluster, &["policy", "status", "p"]);
            let text = String::from_utf8_lossy(&status.stdout).to_string();
            async move { status.status.code() == Some(0) && text.contains("healthy 3 of 3") && text.contains("last good backup 1 finished") && text.contains("region-loss RPO") }
        })
        .await;
    let list: serde_json::Value = serde_json::from_str(&ok(&cluster, &["backup", "list", "p", "--json"])).unwrap();
    assert_eq!((list["backups"][0]["who"].as_str(), list["backups"][0]["state"].as_str()), (Some("schedule"), Some("complete")), "{list}");
    let history: serde_json::Value = serde_json::from_str(&ok(&cluster, &["policy", "history", "p", "--json"])).unwrap();
    let entries = history["history"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!((entries[0]["who"].as_str(), entries[0]["old"].is_null()), (Some("carol"), true));
    assert_eq!((entries[1]["who"].as_str(), entries[1]["new"]["backup"]["every"].as_str()), (Some("dave"), Some("6h")));
    let text = ok(&cluster, &["policy", "history", "p"]);
    assert!(text.contains("carol") && text.contains("created with") && text.contains("dave"), "{text}");
    // Unchanged policy: nothing recorded.
    assert!(ok(&cluster, &["policy", "set", "p", "--backup-keep", "7", "--as", "erin"]).contains("unchanged"));

    fails(&cluster, &["policy", "set", "p", "--backup", "90"], 2, "has no unit");
    fails(&cluster, &["policy", "set", "p", "--replicas", "9"], 2, "9 is not in 1..=5");
    fails(&cluster, &["policy", "set", "p", "--replicas", "4"], 1, "exceeds the 3 live replica servers");
    fails(&cluster, &["policy", "set", "p", "--dup", "mars"], 1, "unknown site 'mars'");
    fails(&cluster, &["policy", "set", "p", "--level", "2"], 1, "knows none");
    fails(&cluster, &["policy", "set", "nope", "--replicas", "1"], 4, "does not exist");
    fails(&cluster, &["policy", "set", "p"], 1, "nothing to change");
    let history: serde_json::Value = serde_json::from_str(&ok(&cluster, &["policy", "history", "p", "--json"])).unwrap();
    assert_eq!(history["history"].as_array().unwrap().len(), 2, "refused changes record nothing");

    // A start time to the minute in a named zone: stored, shown with the next start the zone's
    // rules give, named when wrong, and switched off again.
    let out = ok(&cluster, &["policy", "set", "p", "--backup-at", "02:30 Europe/Paris", "--as", "erin"]);
    assert!(out.contains("every 6h from 02:30 Europe/Paris, keep 7"), "{out}");
    let status = ok(&cluster, &["policy", "status", "p"]);
    assert!(status.contains("every 6h from 02:30 Europe/Paris, next ") && status.contains(" UTC, keep 7"), "{status}");
    let policy: serde_json::Value = serde_json::from_str(&ok(&cluster, &["policy", "show", "p", "--json"])).unwrap();
    assert_eq!(policy["policy"]["backup"]["at"].as_str(), Some("02:30 Europe/Paris"), "{policy}");
    fails(&cluster, &["policy", "set", "p", "--backup-at", "25:00"], 1, "HH:MM");
    fails(&cluster, &["policy", "set", "p", "--backup-at", "02:30 Mars/Olympus"], 1, "unknown time zone");
    fails(&cluster, &["policy", "set", "p", "--backup", "36h"], 1, "whole days");
    let out = ok(&cluster, &["policy", "set", "p", "--backup-at", "off"]);
    assert!(out.contains("backup: every 6h from 02:30 Europe/Paris, keep 7") && out.contains("→ every 6h, keep 7"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_and_dup_commands_with_their_output_and_exit_codes() {
    let cluster = Cluster::start(1, Store::Sqlite).await;
    ok(&cluster, &["table", "create", "t", "--partitions", "2", "--replicas", "1"]);
    fails(&cluster, &["dup", "add", "t", "--to", "b"], 4, "tandem site add b --meta HOST:PORT");
    fails(&cluster, &["site", "add", "b", "--meta", "nohost"], 1, "is not HOST:PORT");
    fails(&cluster, &["site", "add", "local", "--meta", "127.0.0.1:1"], 1, "this site's own name");
    let out = ok(&cluster, &["site", "add", "b", "--meta", "127.0.0.1:1,127.0.0.1:2"]);
    assert!(out.contains("tandem dup add TABLE --to b"), "{out}");
    fails(&cluster, &["site", "add", "b", "--meta", "127.0.0.1:3"], 5, "already exists");
    let sites: serde_json::Value = serde_json::from_str(&ok(&cluster, &["site", "list", "--json"])).unwrap();
    assert_eq!(sites["sites"][0]["metas"], serde_json::json!(["127.0.0.1:1", "127.0.0.1:2"]));
    fails(&cluster, &["dup", "add", "nosuch", "--to", "b"], 4, "table \"nosuch\" does not exist");
    fails(&cluster, &["dup", "add", "t", "--to", "b", "--fail-mode", "fast"], 2, "possible values");
    assert!(ok(&cluster, &["dup", "add", "t", "--to", "b", "--fail-mode", "skip"]).contains("duplication 1 of t to b added (skip)"));
    fails(&cluster, &["dup", "add", "t", "--to", "b"], 5, "already duplicated to \"b\"");
    let list: serde_json::Value = serde_json::from_str(&ok(&cluster, &["dup", "list", "t", "--json"])).unwrap();
    let dup = &list["duplications"][0];
    assert_eq!((dup["site"].as_str(), dup["status"].as_str(), dup["fail_mode"].as_str()), (Some("b"), Some("start"), Some("skip")));
    assert_eq!(dup["partitions"].as_array().map(Vec::len), Some(2));
    // Each partition starts confirmed at what it had committed when the duplication was added.
    assert!(dup["partitions"].as_array().unwrap().iter().all(|p| p["confirmed"].is_u64()), "{dup}");
    let text = ok(&cluster, &["dup", "list"]);
    assert!(text.contains("duplication 1 of t to b: start (fail mode skip)") && text.contains("PARTITION"), "{text}");
    fails(&cluster, &["site", "remove", "b"], 1, "tandem dup remove t 1");
    assert!(ok(&cluster, &["dup", "pause", "t", "b"]).contains("duplication 1 of t paused"));
    assert!(ok(&cluster, &["dup", "pause", "t", "1"]).contains("was paused already"));
    assert!(ok(&cluster, &["dup", "resume", "t", "1"]).contains("resumed"));
    fails(&cluster, &["dup", "pause", "t", "9"], 4, "its duplications: 1 (to b)");
    assert!(ok(&cluster, &["dup", "remove", "t", "b"]).contains("removed"));
    fails(&cluster, &["dup", "resume", "t", "1"], 1, "was removed");
    assert!(ok(&cluster, &["dup", "list", "t"]).contains("no duplications of t"));
    assert!(ok(&cluster, &["dup", "list", "t", "--all"]).contains("removed"));
    assert!(ok(&cluster, &["site", "remove", "b"]).contains("site b removed"));
    fails(&cluster, &["site", "remove", "b"], 4, "no site \"b\"");

    // A policy naming a site takes effect through a duplication, and shows its lag.
    fails(&cluster, &["policy", "set", "t", "--dup", "b"], 1, "tandem site add NAME --meta");
    ok(&cluster, &["site", "add", "b", "--meta", "127.0.0.1:1"]);
    ok(&cluster, &["policy", "set", "t", "--dup", "b"]);
    // The meta adds the duplication right after it stored the policy.
    cluster
        .poll(Duration::from_secs(10), "the policy's duplication to b exists", || async {
            let list: serde_json::Value = serde_json::from_str(&ok(&cluster, &["dup", "list", "t", "--json"])).unwrap();
            list["duplications"][0]["site"].as_str() == Some("b")
        })
        .await;
    fails(&cluster, &["dup", "remove", "t", "b"], 1, "tandem policy set t --dup off");
    cluster
        .poll(Duration::from_secs(30), "policy status shows the duplication's lag", || async {
            let out = tandem(&cluster, &["policy", "status", "t"]);
            String::from_utf8_lossy(&out.stdout).contains("shipping to b: site-loss RPO")
        })
        .await;
    ok(&cluster, &["policy", "set", "t", "--dup", "off"]);
    cluster
        .poll(Duration::from_secs(10), "the policy's duplication is removed", || async { ok(&cluster, &["dup", "list", "t"]).contains("no duplications of t") })
        .await;
}

/// The README's first command: two sites in one process, linked both ways, on ports below the
/// ephemeral range that the other tests draw from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_playground_starts_two_sites_duplicating_demo_both_ways() {
    let base = playground_ports(20_000);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("playground.log");
    let mut child = std::process::Command::new(bin())
        .args(["playground", "--fresh", "--base-port", &base.to_string(), "--data-dir"])
        .arg(dir.path().join("data"))
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("start the playground");
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("Ctrl-C stops it") {
            break text;
        }
        assert!(child.try_wait().unwrap().is_none(), "the playground exited: {text}");
        assert!(std::time::Instant::now() < deadline, "the playground was not up within 90 s: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (a, b) = (format!("127.0.0.1:{base}"), format!("127.0.0.1:{}", base + 1));
    assert!(text.contains(&format!("site-a: meta server {a}")) && text.contains(&format!("site-b: meta server {b}")), "{text}");
    assert!(text.contains(&format!("tandem get demo user1 name --meta {b}")), "{text}");
    // Every server serves /metrics on its own port, printed with the others.
    for offset in [100u16, 101, 250, 251, 252, 350, 351, 352] {
        assert!(text.contains(&format!("http://127.0.0.1:{}/metrics", base + offset)), "{text}");
    }
    let scrape = http_get(base + 251, "/metrics");
    assert!(scrape.starts_with("HTTP/1.1 200") && scrape.contains("# TYPE tandem_replica_mutation_log_records_total counter"), "{scrape}");
    // Every server's figures follow Prometheus's conventions, and say the process and the build.
    for (offset, server) in [(100u16, "meta"), (101, "meta"), (250, "replica"), (251, "replica"), (252, "replica"), (350, "replica"), (351, "replica"), (352, "replica")] {
        let scrape = http_get(base + offset, "/metrics");
        if let Some(problems) = promtool_problems(&scrape) {
            panic!("promtool check metrics on port {}: {problems}", base + offset);
        }
        for family in ["process_cpu_seconds_total ", "process_resident_memory_bytes ", "process_open_fds "] {
            assert!(scrape.lines().any(|l| l.starts_with(family)), "{family}missing on port {}: {scrape}", base + offset);
        }
        let build = format!("tandem_build_info{{server=\"{server}\",version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
        assert!(scrape.contains(&build), "{build} missing on port {}: {scrape}", base + offset);
    }
    let records = |scrape: &str| -> u64 {
        let line = scrape.lines().find(|l| l.starts_with("tandem_replica_mutation_log_records_total ")).expect("the log's record counter");
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let before = records(&scrape);
    let client = |addr: &str| tandem_client::Client::new(&[addr.to_string()], Default::default()).unwrap();
    let (ca, cb) = (client(&a), client(&b));
    ca.table("demo").set(b"user1", b"name", b"Alice", 0).await.unwrap();
    cb.table("demo").set(b"user2", b"name", b"Bob", 0).await.unwrap();
    // Each of site-a's servers holds every partition of demo (3 replicas on 3 servers): its log
    // took at least the one write.
    assert!(records(&http_get(base + 251, "/metrics")) > before);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let at_b = cb.table("demo").get(b"user1", b"name").await.unwrap();
        let at_a = ca.table("demo").get(b"user2", b"name").await.unwrap();
        if at_b.as_deref() == Some(&b"Alice"[..]) && at_a.as_deref() == Some(&b"Bob"[..]) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "writes did not cross between the sites: {at_b:?} {at_a:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = std::process::Command::new("kill").arg("-INT").arg(child.id().to_string()).status().unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success(), "the playground stops cleanly on Ctrl-C");
}

/// `tandem sim`: one seed of two sites passes and prints its report; a bad `--sites` is refused
/// before anything runs.
#[test]
fn sim_runs_two_sites_and_refuses_a_third() {
    let out = std::process::Command::new(bin()).args(["sim", "--seed", "3", "--sites", "2", "--sim-time", "10s"]).output().expect("run tandem");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("seed 3: ok") && stdout.contains("dup-batch-shipped"), "{stdout}");
    let out = std::process::Command::new(bin()).args(["sim", "--seed", "3", "--sites", "3"]).output().expect("run tandem");
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--sites"));
}

/// `tandem playground --site`: each site of the pair in its own process (what `ops/bench-dup
/// --split` runs), duplicating demo to the other; a write at one is read at the other. An
/// unknown site name is a usage error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_playground_runs_one_site_per_process() {
    let out = std::process::Command::new(bin()).args(["playground", "--site", "site-c"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--site must be site-a or site-b"));
    let base = playground_ports(20_250);
    let dir = tempfile::tempdir().unwrap();
    let start = |site: &str| {
        let log = dir.path().join(format!("{site}.log"));
        let child = std::process::Command::new(bin())
            .args(["playground", "--fresh", "--site", site, "--base-port", &base.to_string(), "--data-dir"])
            .arg(dir.path().join(site))
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("start the playground");
        (child, log)
    };
    let mut sites = [start("site-a"), start("site-b")];
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    for (child, log) in sites.iter_mut() {
        loop {
            let text = std::fs::read_to_string(&*log).unwrap_or_default();
            if text.contains("Ctrl-C stops it") {
                assert!(text.contains("demo is duplicated to site-"), "{text}");
                break;
            }
            assert!(child.try_wait().unwrap().is_none(), "a playground exited: {text}");
            assert!(std::time::Instant::now() < deadline, "a playground was not up within 90 s: {text}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let client = |port: u16| tandem_client::Client::new(&[format!("127.0.0.1:{port}")], Default::default()).unwrap();
    let (ca, cb) = (client(base), client(base + 1));
    ca.table("demo").set(b"user1", b"name", b"Alice", 0).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while cb.table("demo").get(b"user1", b"name").await.unwrap().as_deref() != Some(&b"Alice"[..]) {
        assert!(std::time::Instant::now() < deadline, "the write at site-a did not reach site-b");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (child, _) in sites.iter_mut() {
        assert!(std::process::Command::new("kill").arg("-INT").arg(child.id().to_string()).status().unwrap().success());
        assert!(child.wait().unwrap().success(), "a playground stops cleanly on Ctrl-C");
    }
}

/// A base port, from `first` up in steps of 500, whose two-site playground ports are all free.
fn playground_ports(first: u16) -> u16 {
    let needed = |base: u16| [0u16, 1, 100, 101, 200, 201, 202, 250, 251, 252, 300, 301, 302, 350, 351, 352].map(|o| base + o);
    (first..30_000)
        .step_by(500)
        .find(|&b| needed(b).iter().all(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok()))
        .expect("a free block of ports below 30000")
}

/// A plain HTTP/1.1 GET on 127.0.0.1:`port`: the whole answer, head and body.
/// `promtool check metrics` on a scrape's body: None when it passes, else what promtool said.
/// Skipped (with the reason printed) where promtool is not installed; `ops/test` installs it.
fn promtool_problems(scrape: &str) -> Option<String> {
    use std::io::Write;
    let body = scrape.split_once("\r\n\r\n").map_or(scrape, |(_, b)| b);
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        eprintln!("skipped promtool check metrics: promtool is not installed (ops/test installs Debian's prometheus package)");
        return None;
    };
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (!out.status.success()).then(|| format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// A playground server that cannot start says why in the playground's own output (here: its
/// port is taken), and the playground exits 1.
#[test]
fn a_playground_server_that_cannot_start_says_why() {
    let base = playground_ports(20_125);
    let _taken = std::net::TcpListener::bind(("127.0.0.1", base + 201)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin())
        .args(["playground", "--sites", "1", "--fresh", "--exit-when-ready", "--base-port", &base.to_string(), "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("a server stopped during start-up: local replica server 2"), "{stderr}");
}
