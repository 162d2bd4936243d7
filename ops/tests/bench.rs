//! `tandem bench` drives Tandem, etcd and Redis with the same workload in one run, and says
//! clearly when a target is missing or unreachable.

mod support;

use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;
use support::{bin, free_port, Cluster, Store};

/// A peer server process, killed when the test ends (also on a failed assertion).
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_peer(program: &str, args: &[String], log: &std::path::Path) -> Peer {
    let out = std::fs::File::create(log).expect("log file");
    let err = out.try_clone().expect("clone log file");
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}): ops/test installs it (apt-get install etcd-server redis-server)"));
    Peer(child)
}

fn bench(args: &[&str]) -> Output {
    Command::new(bin()).arg("bench").args(args).output().expect("run tandem bench")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_run_drives_tandem_etcd_and_redis_and_reports_ratios() {
    let cluster = Cluster::start(3, Store::Sqlite).await;
    let dir = tempfile::tempdir().expect("tempdir");

    let redis_port = free_port();
    let _redis = spawn_peer(
        "redis-server",
        &[
            "--bind", "127.0.0.1", "--port", &redis_port.to_string(), "--dir", &dir.path().display().to_string(), "--save", "",
            "--appendonly", "yes", "--appendfsync", "always",
        ]
        .map(String::from),
        &dir.path().join("redis.log"),
    );
    let (etcd_client, etcd_peer) = (free_port(), free_port());
    let _etcd = spawn_peer(
        "etcd",
        &[
            "--name".into(),
            "m0".into(),
            "--data-dir".into(),
            dir.path().join("etcd").display().to_string(),
            "--listen-client-urls".into(),
            format!("http://127.0.0.1:{etcd_client}"),
            "--advertise-client-urls".into(),
            format!("http://127.0.0.1:{etcd_client}"),
            "--listen-peer-urls".into(),
            format!("http://127.0.0.1:{etcd_peer}"),
            "--initial-advertise-peer-urls".into(),
            format!("http://127.0.0.1:{etcd_peer}"),
            "--initial-cluster".into(),
            format!("m0=http://127.0.0.1:{etcd_peer}"),
        ],
        &dir.path().join("etcd.log"),
    );

    let etcd = format!("127.0.0.1:{etcd_client}");
    let redis = format!("127.0.0.1:{redis_port}");
    let out = bench(&[
        "--target", "tandem,etcd,redis", "--meta", &cluster.meta_addr, "--create", "--etcd", &etcd, "--redis", &redis,
        "--workload", "load,c", "--records", "300", "--duration", "1s", "--inflight", "8", "--threads", "2",
        "--ready-timeout", "30s", "--json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bench failed: {stdout}\n{}\n{}", String::from_utf8_lossy(&out.stderr), cluster.logs_tail());
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("bench --json prints JSON");
    let runs = report["runs"].as_array().expect("runs");
    let seen: Vec<(String, String)> =
        runs.iter().map(|r| (r["target"].as_str().unwrap().to_string(), r["workload"].as_str().unwrap().to_string())).collect();
    let expected: Vec<(String, String)> = ["tandem", "etcd", "redis"]
        .iter()
        .flat_map(|t| ["load", "c"].map(|w| (t.to_string(), w.to_string())))
        .collect();
    assert_eq!(seen, expected);
    for r in runs {
        assert_eq!(r["errors"], 0, "{r}");
        match r["workload"].as_str().unwrap() {
            // Every record written once, and nothing read.
            "load" => {
                assert_eq!(r["writes"]["ops"], 300, "{r}");
                assert_eq!(r["reads"]["ops"], 0, "{r}");
            }
            // Reads only, and every one found what the load wrote.
            _ => {
                assert!(r["reads"]["ops"].as_u64().unwrap() > 0, "{r}");
                assert_eq!(r["writes"]["ops"], 0, "{r}");
                assert_eq!(r["reads_not_found"], 0, "{r}");
            }
        }
    }
    let ratios = report["ratios"].as_array().expect("ratios");
    let pairs: Vec<(String, String, String)> = ratios
        .iter()
        .map(|r| (r["workload"].as_str().unwrap().into(), r["kind"].as_str().unwrap().into(), r["peer"].as_str().unwrap().into()))
        .collect();
    assert_eq!(
        pairs,
        vec![
            ("load".into(), "writes".into(), "etcd".into()),
            ("load".into(), "writes".into(), "redis".into()),
            ("c".into(), "reads".into(), "etcd".into()),
            ("c".into(), "reads".into(), "redis".into()),
        ]
    );
    for r in ratios {
        let expected = r["tandem_throughput"].as_f64().unwrap() / r["peer_throughput"].as_f64().unwrap();
        assert!((r["throughput_ratio"].as_f64().unwrap() - expected).abs() < 1e-9, "{r}");
    }
}

#[test]
fn a_missing_or_unreachable_peer_is_named() {
    let out = bench(&["--target", "etcd", "--workload", "c", "--records", "10"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--target etcd needs --etcd"), "{out:?}");

    let port = free_port();
    let start = std::time::Instant::now();
    let out = bench(&["--target", "redis", "--redis", &format!("127.0.0.1:{port}"), "--ready-timeout", "1s", "--records", "10"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("redis did not accept a write within 1s"), "{stderr}");
    assert!(start.elapsed() < Duration::from_secs(20), "gave up after {:?}", start.elapsed());
}

/// `--rate` caps the operations per second (a busy machine can only make it slower).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_caps_the_operations_per_second() {
    let cluster = Cluster::start(3, Store::Sqlite).await;
    let out = bench(&["--meta", &cluster.meta_addr, "--create", "--workload", "write-only", "--rate", "200", "--duration", "2s", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (ops, seconds) = (run["writes"]["ops"].as_f64().unwrap(), run["seconds"].as_f64().unwrap());
    assert!(ops <= 200.0 * seconds + 1.0 && ops > 0.0, "{ops} writes in {seconds} s at --rate 200");
}
