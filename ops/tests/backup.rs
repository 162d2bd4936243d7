//! Backups of a real cluster (docs/backup.md): `tandem backup now --wait` to a file target and
//! to an S3 server over HTTP, read back independently of what the servers recorded — every
//! object checked from the record's checksum down, every partition restored into a RocksDB
//! directory and its records counted — plus the second backup's reuse and the errors a user
//! meets.

mod support;

use std::process::Output;
use std::collections::BTreeMap;
use support::{bin, everything, Cluster, PgDatabase, Store};
use tandem_backup_core::{read_partition_manifest, read_table_manifest, verify_backup, ObjectStore};
use tandem_backup_store::{RealObjectStore, S3Options, Target};
use tandem_core::storage::KvEngine;

const TABLE: &str = "bk";
const PARTITIONS: u32 = 4;
const KEYS: usize = 2_000;

fn tandem(cluster: &Cluster, args: &[&str]) -> Output {
    std::process::Command::new(bin()).args(args).env("TANDEM_META", &cluster.meta_addr).output().expect("run tandem")
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "exit {:?}\nstdout: {stdout}\nstderr: {}", out.status.code(), String::from_utf8_lossy(&out.stderr));
    stdout
}

/// Runs `tandem ARGS` against `cluster` in the background, its output captured.
fn spawn_tandem(cluster: &Cluster, args: &[&str]) -> std::process::Child {
    std::process::Command::new(bin())
        .args(args)
        .env("TANDEM_META", &cluster.meta_addr)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run tandem")
}

/// The last JSON document `--json` printed (progress lines come first, one per line).
fn last_json(stdout: &str) -> serde_json::Value {
    let start = stdout.rfind("\n{\n").map_or(0, |i| i + 1);
    serde_json::from_str(&stdout[start..]).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// Writes `KEYS` keys to `TABLE`; answers them with their values.
async fn write_keys(cluster: &Cluster) -> Vec<(String, Vec<u8>)> {
    let t = cluster.client().table(TABLE);
    let mut written = Vec::new();
    // Incompressible values, so the SST files are most of a backup, as in a real table.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..KEYS {
        let value: Vec<u8> = (0..1_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        t.set(format!("key{i:05}").as_bytes(), b"s", &value, 0).await.expect("write");
        written.push((format!("key{i:05}"), value));
    }
    written
}

/// Every key of `written` reads back from `table` with its value.
async fn assert_reads_back(cluster: &Cluster, table: &str, written: &[(String, Vec<u8>)]) {
    let t = cluster.client().table(table);
    for (k, v) in written {
        let got = t.get(k.as_bytes(), b"s").await.unwrap_or_else(|e| panic!("{table}: {k}: {e}"));
        assert_eq!(got.as_deref(), Some(&v[..]), "{table}: {k}");
    }
}

/// Checks backup `record` in `store` as a restore would, and restores every partition into a
/// RocksDB directory: the records there are exactly the keys written.
fn check_and_restore(store: &RealObjectStore, record: &serde_json::Value) {
    let (table_id, id) = (record["table_id"].as_u64().unwrap() as u32, record["id"].as_u64().unwrap());
    let sha = record["manifest_sha256"].as_str().unwrap();
    let verified = verify_backup(store, table_id, id, Some(sha)).expect("the table manifest reads back under the record's checksum");
    assert!(verified.problems.is_empty(), "{:?}", verified.problems);
    let table = read_table_manifest(store, table_id, id, Some(sha)).unwrap();
    assert_eq!(table.partitions.len(), PARTITIONS as usize);
    let dir = tempfile::tempdir().unwrap();
    let mut records = 0;
    for p in 0..PARTITIONS {
        let m = read_partition_manifest(store, &table, p).unwrap();
        let db = dir.path().join(format!("p{p}"));
        tandem_backup_store::checkpoint::restore_checkpoint(store, &m, &db).expect("restore");
        let engine = tandem_storage::RocksEngine::open(&db, &tandem_storage::EngineMemory::default()).expect("the restored checkpoint opens");
        assert_eq!(engine.last_applied_decree(), m.decree, "partition {p} opens at the manifest's decree");
        records += engine.scan(&[], None, usize::MAX).unwrap().len();
    }
    assert_eq!(records, KEYS, "every key written is in the backup, once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_backs_up_to_a_file_target_and_reads_back_whole_and_the_next_reuses_its_files() {
    let cluster = Cluster::start(3, Store::Sqlite).await;
    cluster.create_table(TABLE, PARTITIONS, 3).await;
    write_keys(&cluster).await;
    let target_dir = cluster.dir.path().join("backups");
    let target = format!("file://{}", target_dir.display());

    let out = ok(&tandem(&cluster, &["backup", "now", TABLE, "--target", &target, "--wait", "--json"]));
    let done = last_json(&out);
    assert_eq!(done["state"], "complete", "{out}");
    assert!(out.lines().next().unwrap().contains("\"partitions\":4"), "a progress line first: {out}");
    let first = ok(&tandem(&cluster, &["backup", "show", "1", "--json"]));
    let first = last_json(&first);
    let details = first["partition_details"].as_array().unwrap();
    assert_eq!(details.len(), PARTITIONS as usize);
    for p in details {
        assert!(p["decree"].as_u64().unwrap() > 0 && p["files"].as_u64().unwrap() > 0, "{p}");
        assert_eq!(p["reused_bytes"], 0, "the first backup reuses nothing: {p}");
    }
    let store = RealObjectStore::open(&Target::parse(&target).unwrap(), &S3Options::default(), tokio::runtime::Handle::current()).unwrap();
    let record = first.clone();
    tokio::task::spawn_blocking(move || check_and_restore(&store, &record)).await.unwrap();

    // Nothing written since: the SST files are the target's already.
    let second = last_json(&ok(&tandem(&cluster, &["backup", "now", TABLE, "--target", &target, "--wait", "--json"])));
    let (bytes, new_bytes) = (second["bytes"].as_u64().unwrap(), second["new_bytes"].as_u64().unwrap());
    assert!(bytes >= first["bytes"].as_u64().unwrap() && new_bytes * 20 < bytes, "the second backup uploaded {new_bytes} of {bytes} bytes");
    let shown = last_json(&ok(&tandem(&cluster, &["backup", "show", "2", "--json"])));
    let reused: u64 = shown["partition_details"].as_array().unwrap().iter().map(|p| p["reused_bytes"].as_u64().unwrap()).sum();
    assert!(reused * 20 > bytes * 19, "the second backup reused {reused} of {bytes} bytes");
    let list = last_json(&ok(&tandem(&cluster, &["backup", "list", TABLE, "--json"])));
    let states: Vec<&str> = list["backups"].as_array().unwrap().iter().map(|b| b["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["complete", "complete"]);
    let table = ok(&tandem(&cluster, &["backup", "show", "2"]));
    assert!(table.contains("PARTITION") && table.contains("REUSED"), "{table}");

    // Verify re-reads everything; delete removes backup 1's own objects and keeps the SST
    // files backup 2 reuses.
    let whole = ok(&tandem(&cluster, &["backup", "verify", "2"]));
    assert!(whole.contains("is whole"), "{whole}");
    ok(&tandem(&cluster, &["backup", "delete", "1", "--as", "ann"]));
    let own = target_dir.join("tables/1/backups/1");
    cluster.poll(std::time::Duration::from_secs(30), "backup 1's own objects are collected", || {
        let gone = walk(&own).is_empty();
        async move { gone }
    })
    .await;
    let shared: Vec<String> = walk(&target_dir.join("tables/1/objects")).into_iter().filter(|k| k.ends_with("-1")).collect();
    assert!(!shared.is_empty(), "the SST files backup 2 reuses stay");
    assert!(ok(&tandem(&cluster, &["backup", "verify", "2"])).contains("is whole"));
    let again = tandem(&cluster, &["backup", "delete", "1"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("is deleted"), "{}", String::from_utf8_lossy(&again.stderr));
    // A flipped byte in an object backup 2 uses is found and named.
    let victim = std::path::PathBuf::from(&shared[0]);
    let mut bytes = std::fs::read(&victim).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&victim, bytes).unwrap();
    let damaged = tandem(&cluster, &["backup", "verify", "2"]);
    let text = String::from_utf8_lossy(&damaged.stdout);
    assert_eq!(damaged.status.code(), Some(1), "{text}");
    let name = victim.file_name().unwrap().to_string_lossy().to_string();
    assert!(text.contains("is damaged") && text.contains(&name), "{text}");

    // What a user gets wrong is named, with the exit code of its kind.
    let missing = tandem(&cluster, &["backup", "now", "nosuch", "--target", &target]);
    assert_eq!(missing.status.code(), Some(4), "{}", String::from_utf8_lossy(&missing.stderr));
    let bad = tandem(&cluster, &["backup", "now", TABLE, "--target", "http://x/y"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("s3://BUCKET"), "{}", String::from_utf8_lossy(&bad.stderr));
    let untargeted = tandem(&cluster, &["backup", "now", TABLE]);
    assert!(String::from_utf8_lossy(&untargeted.stderr).contains("--target"), "{}", String::from_utf8_lossy(&untargeted.stderr));
    let unknown = tandem(&cluster, &["backup", "show", "99"]);
    assert_eq!(unknown.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("tandem backup list"));
}

/// The servers' `[backup]` settings for `s3`, with `secret` as the secret key.
fn s3_config(s3: &tandem_s3_dev::DevS3, secret: &str) -> String {
    format!("[backup]\ns3_endpoint = \"{}\"\ns3_region = \"us-east-1\"\ns3_access_key_id = \"{}\"\ns3_secret_access_key = \"{secret}\"\n", s3.endpoint(), s3.access_key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_backs_up_to_an_s3_server_over_http() {
    let root = tempfile::tempdir().unwrap();
    let s3 = tandem_s3_dev::DevS3::start(root.path(), &["tandem-backups"]).await.unwrap();
    let mut cluster = Cluster::start_site_with("local", 1, 3, &s3_config(&s3, &s3.secret_key)).await;
    cluster.create_table(TABLE, PARTITIONS, 3).await;
    let written = write_keys(&cluster).await;
    let target = "s3://tandem-backups/site-a";
    let record = last_json(&ok(&tandem(&cluster, &["backup", "now", TABLE, "--target", target, "--wait", "--json"])));
    assert_eq!(record["state"], "complete");
    let options = S3Options { endpoint: Some(s3.endpoint()), region: Some("us-east-1".into()), access_key_id: Some(s3.access_key.clone()), secret_access_key: Some(s3.secret_key.clone()) };
    let store = RealObjectStore::open(&Target::parse(target).unwrap(), &options, tokio::runtime::Handle::current()).unwrap();
    let checked = record.clone();
    tokio::task::spawn_blocking(move || {
        let listed = store.list("tables").unwrap();
        assert!(listed.iter().any(|(k, _)| k.ends_with("/manifest.json")), "{listed:?}");
        check_and_restore(&store, &checked);
    })
    .await
    .unwrap();

    // Restore into a new table: every key reads back, and the table takes writes.
    let id = record["id"].as_u64().unwrap().to_string();
    let done = last_json(&ok(&tandem(&cluster, &["restore", &id, "--table", "bk2", "--wait", "--json"])));
    assert_eq!((done["state"].as_str(), done["partitions_ready"].as_u64()), (Some("complete"), Some(PARTITIONS as u64)), "{done}");
    assert_reads_back(&cluster, "bk2", &written).await;
    let t2 = cluster.client().table("bk2");
    t2.set(b"after", b"s", b"restore", 0).await.expect("a restored table takes writes");
    assert_eq!(t2.get(b"after", b"s").await.unwrap().as_deref(), Some(&b"restore"[..]));
    // A server of the restored table killed and started again replays onto the restored data.
    cluster.kill_replica(0);
    cluster.start_replica(0);
    cluster.wait_healthy(std::time::Duration::from_secs(60)).await;
    assert_reads_back(&cluster, "bk2", &written).await;
    assert_eq!(t2.get(b"after", b"s").await.unwrap().as_deref(), Some(&b"restore"[..]));
    // Onto an existing table: refused, with the way out.
    let taken = tandem(&cluster, &["restore", &id, "--table", "bk2"]);
    assert_eq!(taken.status.code(), Some(5), "{}", String::from_utf8_lossy(&taken.stderr));
    let original = tandem(&cluster, &["restore", &id, "--as-original"]);
    assert_eq!(original.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&original.stderr).contains("drop it first"), "{}", String::from_utf8_lossy(&original.stderr));
    let neither = tandem(&cluster, &["restore", &id]);
    assert_eq!(neither.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&neither.stderr).contains("--table NEW_NAME"));
    // The region is lost and the table with it: --as-original brings it back by name.
    ok(&tandem(&cluster, &["table", "drop", TABLE]));
    let back = last_json(&ok(&tandem(&cluster, &["restore", &id, "--as-original", "--wait", "--json"])));
    assert_eq!((back["table"].as_str(), back["state"].as_str()), (Some(TABLE), Some("complete")), "{back}");
    assert_reads_back(&cluster, TABLE, &written).await;
    let list = last_json(&ok(&tandem(&cluster, &["restore", "list", "--json"])));
    let states: Vec<(&str, &str)> = list["restores"].as_array().unwrap().iter().map(|r| (r["table"].as_str().unwrap(), r["state"].as_str().unwrap())).collect();
    assert_eq!(states, [("bk2", "complete"), (TABLE, "complete")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_fail_the_backup_with_the_reason() {
    let root = tempfile::tempdir().unwrap();
    let s3 = tandem_s3_dev::DevS3::start(root.path(), &["tandem-backups"]).await.unwrap();
    let cluster = Cluster::start_site_with("local", 1, 3, &s3_config(&s3, "not-the-secret")).await;
    cluster.create_table(TABLE, 1, 3).await;
    let out = tandem(&cluster, &["backup", "now", TABLE, "--target", "s3://tandem-backups/x", "--wait"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is failed") && stderr.contains("credentials"), "{stderr}");
    let list = last_json(&ok(&tandem(&cluster, &["backup", "list", "--json"])));
    assert_eq!(list["backups"][0]["state"], "failed");
    // Nothing was written under the target.
    assert!(walk(root.path()).iter().all(|p| !p.contains("tables")), "{:?}", walk(root.path()));
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_completes_when_an_uploading_primary_is_killed() {
    // Slow uploads, so the kill lands while one is under way.
    let mut cluster = Cluster::start_site_with("local", 1, 3, "[backup]\nupload_rate = \"128KiB\"\n").await;
    cluster.create_table(TABLE, PARTITIONS, 3).await;
    write_keys(&cluster).await;
    let target_dir = cluster.dir.path().join("backups");
    let target = format!("file://{}", target_dir.display());
    let waiting = spawn_tandem(&cluster, &["backup", "now", TABLE, "--target", &target, "--wait", "--json"]);
    // The first partition seen uploading: its primary's server goes.
    let mut victim = None;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while victim.is_none() {
        assert!(std::time::Instant::now() < deadline, "no partition was seen uploading\n{}", cluster.logs_tail());
        let shown = tandem(&cluster, &["backup", "show", "1", "--json"]);
        if shown.status.success() {
            let v = last_json(&String::from_utf8_lossy(&shown.stdout));
            victim = v["partition_details"].as_array().unwrap().iter().find(|p| p["phase"] == "uploading").map(|p| (p["partition"].as_u64().unwrap(), p["primary"].as_str().unwrap().to_string()));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (partition, primary) = victim.unwrap();
    let index = cluster.replica_index(&primary);
    cluster.kill_replica(index);
    let out = tokio::task::spawn_blocking(move || waiting.wait_with_output().unwrap()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}\n{}\n{}", String::from_utf8_lossy(&out.stderr), cluster.logs_tail());
    let record = last_json(&stdout);
    assert_eq!(record["state"], "complete");
    let redone = &record["partition_details"][partition as usize];
    assert!(redone["attempt"].as_u64().unwrap() >= 2, "partition {partition} was uploaded again by its next primary: {redone}");
    let store = RealObjectStore::open(&Target::parse(&target).unwrap(), &S3Options::default(), tokio::runtime::Handle::current()).unwrap();
    tokio::task::spawn_blocking(move || check_and_restore(&store, &record)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_drills_give_back_exactly_what_each_backup_held_and_refuse_a_damaged_one() {
    let cluster = Cluster::start(3, Store::Sqlite).await;
    cluster.create_table(TABLE, PARTITIONS, 3).await;
    let target_dir = cluster.dir.path().join("backups");
    let target = format!("file://{}", target_dir.display());
    let t = cluster.client().table(TABLE);
    let record = |i: usize| (format!("k{i:04}").into_bytes(), b"s".to_vec());
    let mut expected: BTreeMap<(Vec<u8>, Vec<u8>), Vec<u8>> = BTreeMap::new();
    for i in 0..300 {
        let value = format!("first-{i}").into_bytes();
        t.set(&record(i).0, b"s", &value, 0).await.unwrap();
        expected.insert(record(i), value);
    }
    let first = last_json(&ok(&tandem(&cluster, &["backup", "now", TABLE, "--target", &target, "--wait", "--json"])));
    let held_by_first = expected.clone();
    // Overwrite some, delete some, add some; the second backup is incremental.
    for i in 0..100 {
        let value = format!("second-{i}").into_bytes();
        t.set(&record(i).0, b"s", &value, 0).await.unwrap();
        expected.insert(record(i), value);
    }
    for i in 100..150 {
        t.del(&record(i).0, b"s").await.unwrap();
        expected.remove(&record(i));
    }
    for i in 300..400 {
        let value = format!("second-{i}").into_bytes();
        t.set(&record(i).0, b"s", &value, 0).await.unwrap();
        expected.insert(record(i), value);
    }
    let second = last_json(&ok(&tandem(&cluster, &["backup", "now", TABLE, "--target", &target, "--wait", "--json"])));
    let reused: u64 = second["partition_details"].as_array().unwrap().iter().map(|p| p["reused_bytes"].as_u64().unwrap()).sum();
    assert!(reused > 0, "the second backup reuses the first one's files: {second}");
    // The table is lost; each backup restores into a table of its own, exactly as it was.
    ok(&tandem(&cluster, &["table", "drop", TABLE]));
    for (backup, name, held) in [(&first, "from_first", &held_by_first), (&second, "from_second", &expected)] {
        let id = backup["id"].as_u64().unwrap().to_string();
        ok(&tandem(&cluster, &["restore", &id, "--table", name, "--wait"]));
        let got = everything(&cluster, name).await;
        assert_eq!(got.len(), held.len(), "{name}");
        assert!(got == *held, "{name} differs from what backup {id} held");
    }
    // A damaged object: verify names it, and a restore fails naming it rather than serve.
    let own: Vec<String> = walk(&target_dir.join("tables/1/objects")).into_iter().filter(|k| k.ends_with("-2")).collect();
    let victim = std::path::PathBuf::from(own.first().expect("the second backup uploaded SST files of its own"));
    let name = victim.file_name().unwrap().to_string_lossy().to_string();
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&victim, bytes).unwrap();
    let verify = tandem(&cluster, &["backup", "verify", "2"]);
    assert_eq!(verify.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&verify.stdout).contains(&name), "{}", String::from_utf8_lossy(&verify.stdout));
    let restore = tandem(&cluster, &["restore", "2", "--table", "from_damaged", "--wait"]);
    let stderr = String::from_utf8_lossy(&restore.stderr);
    assert_eq!(restore.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is failed") && stderr.contains(&name), "{stderr}");
    let list = last_json(&ok(&tandem(&cluster, &["restore", "list", "--json"])));
    assert_eq!(list["restores"][2]["state"], "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_whose_meta_leader_dies_fails_and_the_next_one_completes() {
    // Slow uploads, so the leader dies while the backup runs; a short lease, so the standby
    // takes over in seconds.
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), "[backup]\nupload_rate = \"64KiB\"\n").unwrap();
    let path = config.path().display().to_string();
    let mut cluster = Cluster::start_ha_with(2, 3, Store::Postgres(PgDatabase::create().await), &["--lease-ttl", "4s"], &["--config", &path]).await;
    cluster.create_table(TABLE, PARTITIONS, 3).await;
    write_keys(&cluster).await;
    let target = format!("file://{}", cluster.dir.path().join("backups").display());
    let meta_flag = cluster.meta_addrs().join(",");
    let cli = |args: &[&str]| std::process::Command::new(bin()).args(args).env("TANDEM_META", &meta_flag).output().expect("run tandem");
    let started = last_json(&ok(&cli(&["backup", "now", TABLE, "--target", &target, "--json"])));
    assert_eq!(started["state"], "running");
    let leader = cluster.leader().await.expect("a leader");
    cluster.kill_meta_at(leader);
    // The new leader fails the record its predecessor's job kept in memory.
    cluster
        .poll(std::time::Duration::from_secs(60), "the new leader fails backup 1", || {
            let out = cli(&["backup", "list", "--json"]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            async move {
                out.status.success() && {
                    let list = last_json(&text);
                    list["backups"][0]["state"] == "failed" && list["backups"][0]["reason"].as_str().is_some_and(|r| r.contains("stopped leading"))
                }
            }
        })
        .await;
    let record = last_json(&ok(&cli(&["backup", "now", TABLE, "--target", &target, "--wait", "--json"])));
    assert_eq!((record["id"].as_u64(), record["state"].as_str()), (Some(2), Some("complete")));
    let store = RealObjectStore::open(&Target::parse(&target).unwrap(), &S3Options::default(), tokio::runtime::Handle::current()).unwrap();
    tokio::task::spawn_blocking(move || check_and_restore(&store, &record)).await.unwrap();
}

/// What the proxy in front of the S3 server does with connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Pass,
    /// Every new request is answered 503.
    Fail503,
    /// Nothing moves: new connections wait before reaching the server, passing ones hold the
    /// bytes they read (a target that hangs mid-transfer).
    Stall,
}

/// A TCP proxy in front of the S3 server that passes, answers 503, stalls, or cuts the
/// connections passing through (object_store keeps them alive between requests).
struct FaultProxy {
    addr: std::net::SocketAddr,
    mode: tokio::sync::watch::Sender<Mode>,
    passing: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    /// Connections waiting while stalled: accepted and not at the server yet, or holding bytes.
    held: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl FaultProxy {
    async fn start(upstream: std::net::SocketAddr) -> FaultProxy {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, _) = tokio::sync::watch::channel(Mode::Pass);
        let passing = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let held = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (m, p, h) = (mode.clone(), passing.clone(), held.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut mode = m.subscribe();
                if *mode.borrow() == Mode::Fail503 {
                    tokio::spawn(async move {
                        // Read the request head, answer 503, close.
                        let mut head = Vec::new();
                        let mut buf = [0u8; 4096];
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                            match client.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                            }
                        }
                        let _ = client.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
                    });
                    continue;
                }
                let h = h.clone();
                let handle = tokio::spawn(async move {
                    if *mode.borrow() == Mode::Stall {
                        let _held = Held::new(&h);
                        let _ = mode.wait_for(|m| *m != Mode::Stall).await;
                    }
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else { return };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::join!(pump(client_read, server_write, mode.clone(), h.clone()), pump(server_read, client_write, mode, h));
                });
                p.lock().unwrap().push(handle);
            }
        });
        FaultProxy { addr, mode, passing, held }
    }

    fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
        if mode == Mode::Fail503 {
            self.cut();
        }
    }

    /// Cuts every connection passing through; answers how many were open.
    fn cut(&self) -> usize {
        let mut passing = self.passing.lock().unwrap();
        let open = passing.iter().filter(|h| !h.is_finished()).count();
        for h in passing.drain(..) {
            h.abort();
        }
        open
    }

    fn held(&self) -> usize {
        self.held.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Counts a connection held by a stall while it lives (also when a cut aborts its task).
struct Held(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Held {
    fn new(count: &std::sync::Arc<std::sync::atomic::AtomicUsize>) -> Held {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Held(count.clone())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Copies one direction of a connection, holding what it read while the proxy stalls.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: tokio::sync::watch::Receiver<Mode>,
    held: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if *mode.borrow() == Mode::Stall {
            let _held = Held::new(&held);
            if mode.wait_for(|m| *m != Mode::Stall).await.is_err() {
                break;
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// An S3 server (its files in the returned directory) and the proxy in front of it.
async fn s3_behind_proxy() -> (tempfile::TempDir, tandem_s3_dev::DevS3, FaultProxy) {
    let root = tempfile::tempdir().unwrap();
    let s3 = tandem_s3_dev::DevS3::start(root.path(), &["tandem-backups"]).await.unwrap();
    let proxy = FaultProxy::start(s3.addr).await;
    (root, s3, proxy)
}

/// A cluster whose backups go to `s3` through `proxy`, with `extra` in its replicas' `[backup]`.
async fn cluster_behind(s3: &tandem_s3_dev::DevS3, proxy: &FaultProxy, extra: &str) -> Cluster {
    let config = format!(
        "[backup]\ns3_endpoint = \"http://{}\"\ns3_region = \"us-east-1\"\ns3_access_key_id = \"{}\"\ns3_secret_access_key = \"{}\"\n{extra}",
        proxy.addr, s3.access_key, s3.secret_key
    );
    let cluster = Cluster::start_site_with("local", 1, 3, &config).await;
    cluster.create_table(TABLE, PARTITIONS, 3).await;
    cluster
}

/// The S3 server itself, not through the proxy.
fn direct(s3: &tandem_s3_dev::DevS3, target: &str) -> RealObjectStore {
    let options = S3Options { endpoint: Some(s3.endpoint()), region: Some("us-east-1".into()), access_key_id: Some(s3.access_key.clone()), secret_access_key: Some(s3.secret_key.clone()) };
    RealObjectStore::open(&Target::parse(target).unwrap(), &options, tokio::runtime::Handle::current()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_to_a_target_answering_503_fails_with_the_reason_and_one_after_it_is_back_completes() {
    let (_root, s3, proxy) = s3_behind_proxy().await;
    let cluster = cluster_behind(&s3, &proxy, "").await;
    write_keys(&cluster).await;
    let target = "s3://tandem-backups/flaky";
    proxy.set(Mode::Fail503);
    let out = tandem(&cluster, &["backup", "now", TABLE, "--target", target, "--wait"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is failed") && stderr.contains("503"), "{stderr}");
    proxy.set(Mode::Pass);
    let record = last_json(&ok(&tandem(&cluster, &["backup", "now", TABLE, "--target", target, "--wait", "--json"])));
    assert_eq!((record["id"].as_u64(), record["state"].as_str()), (Some(2), Some("complete")));
    let store = direct(&s3, target);
    tokio::task::spawn_blocking(move || check_and_restore(&store, &record)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_through_cut_and_stalled_connections_never_looks_complete_unless_it_restores_exactly() {
    let (_root, s3, proxy) = s3_behind_proxy().await;
    // Slow uploads (about 2 MiB at 256 KiB/s per server), so the faults land mid-transfer.
    let cluster = cluster_behind(&s3, &proxy, "upload_rate = \"256KiB\"\n").await;
    write_keys(&cluster).await;
    let target = "s3://tandem-backups/cut";
    let waiting = spawn_tandem(&cluster, &["backup", "now", TABLE, "--target", target, "--wait", "--json"]);
    // Cut every connection to the target five times, 300 ms apart, once uploads are under way;
    // then hang it for 3 s with requests in the middle of their bodies.
    let mut cut = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while cut == 0 {
        assert!(std::time::Instant::now() < deadline, "no upload reached the target\n{}", cluster.logs_tail());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        cut = proxy.cut();
    }
    for _ in 0..4 {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        cut += proxy.cut();
    }
    proxy.set(Mode::Stall);
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    proxy.set(Mode::Pass);
    let out = tokio::task::spawn_blocking(move || waiting.wait_with_output().unwrap()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let mut record = last_json(&stdout);
    // Cut requests are retried by the uploader's client, so the backup normally completes; if
    // it failed instead, it says why and the next one completes. Either way, what says
    // complete restores exactly.
    if record["state"] != "complete" {
        assert_eq!(out.status.code(), Some(1), "{stdout}");
        assert_eq!(record["state"], "failed", "{record}");
        record = last_json(&ok(&tandem(&cluster, &["backup", "now", TABLE, "--target", target, "--wait", "--json"])));
    }
    assert_eq!(record["state"], "complete", "{record}\n{}", cluster.logs_tail());
    assert!(cut >= 1, "the faults cut open connections: {cut}");
    let store = direct(&s3, target);
    tokio::task::spawn_blocking(move || check_and_restore(&store, &record)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_whose_server_is_killed_mid_download_completes_with_exactly_the_backup() {
    let (_root, s3, proxy) = s3_behind_proxy().await;
    let mut cluster = cluster_behind(&s3, &proxy, "").await;
    let written = write_keys(&cluster).await;
    let target = "s3://tandem-backups/drill";
    let record = last_json(&ok(&tandem(&cluster, &["backup", "now", TABLE, "--target", target, "--wait", "--json"])));
    assert_eq!(record["state"], "complete");
    // The target hangs, so every server's downloads are held mid-restore when one is killed.
    proxy.set(Mode::Stall);
    let id = record["id"].as_u64().unwrap().to_string();
    let waiting = spawn_tandem(&cluster, &["restore", &id, "--table", "bk2", "--wait", "--json"]);
    cluster.poll(std::time::Duration::from_secs(30), "every server's restore is downloading", || async { proxy.held() >= 3 }).await;
    cluster.kill_replica(0);
    proxy.set(Mode::Pass);
    cluster.start_replica(0);
    let out = tokio::task::spawn_blocking(move || waiting.wait_with_output().unwrap()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}\n{}\n{}", String::from_utf8_lossy(&out.stderr), cluster.logs_tail());
    let done = last_json(&stdout);
    assert_eq!((done["state"].as_str(), done["partitions_ready"].as_u64()), (Some("complete"), Some(PARTITIONS as u64)), "{done}");
    cluster.wait_healthy(std::time::Duration::from_secs(60)).await;
    assert_reads_back(&cluster, "bk2", &written).await;
    // Every partition has its three members again, the restarted server's included.
    for p in 0..PARTITIONS {
        let config = cluster.partition("bk2", p).await;
        assert_eq!(config.secondaries.len() + 1, 3, "partition {p} has all its members: {config:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_duplicated_between_two_sites_backs_up_and_restores_while_it_ships() {
    let (a, b, _) = support::two_sites_duplicating("t").await;
    let (ta, tb) = (a.client().table("t"), b.client().table("t"));
    for i in 0..100 {
        ta.set(format!("from-a-{i}").as_bytes(), b"s", b"a", 0).await.unwrap();
        tb.set(format!("from-b-{i}").as_bytes(), b"s", b"b", 0).await.unwrap();
    }
    ta.del(b"from-a-7", b"s").await.unwrap();
    a.poll(std::time::Duration::from_secs(60), "both sites hold the same records", || async { everything(&a, "t").await == everything(&b, "t").await }).await;
    // Site b backs its copy up, what it received from a included, and restores it.
    let target = format!("file://{}", b.dir.path().join("backups").display());
    let at_b = |args: &[&str]| std::process::Command::new(bin()).args(args).env("TANDEM_META", &b.meta_addr).output().expect("run tandem");
    let record = last_json(&ok(&at_b(&["backup", "now", "t", "--target", &target, "--wait", "--json"])));
    assert_eq!(record["state"], "complete");
    ok(&at_b(&["restore", "1", "--table", "t_copy", "--wait"]));
    let (copy, original) = (everything(&b, "t_copy").await, everything(&b, "t").await);
    assert_eq!(copy.len(), 199);
    assert!(copy == original, "the restored copy differs from the table it was backed up from");
    // The duplication kept shipping through the backup.
    for i in 0..10 {
        ta.set(format!("after-{i}").as_bytes(), b"s", b"a", 0).await.unwrap();
    }
    b.poll(std::time::Duration::from_secs(60), "writes at a after the backup reach b", || async { everything(&b, "t").await.len() == 209 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_backup_that_failed_is_retried_by_the_schedule_once_the_target_is_back() {
    let (_root, s3, proxy) = s3_behind_proxy().await;
    let cluster = cluster_behind(&s3, &proxy, "").await;
    write_keys(&cluster).await;
    let target = "s3://tandem-backups/scheduled";
    proxy.set(Mode::Fail503);
    // The shortest interval: the table has no backup, so the schedule starts one at once.
    ok(&tandem(&cluster, &["policy", "set", TABLE, "--backup", "1m", "--backup-keep", "2", "--backup-target", target]));
    let backups = || async {
        let list = last_json(&ok(&tandem(&cluster, &["backup", "list", TABLE, "--json"])));
        list["backups"].as_array().unwrap().clone()
    };
    cluster
        .poll(std::time::Duration::from_secs(60), "the scheduled backup fails against the refusing target", || async {
            backups().await.first().is_some_and(|b| b["state"] == "failed" && b["who"] == "schedule")
        })
        .await;
    let status = ok(&tandem(&cluster, &["policy", "status", TABLE]));
    assert!(status.contains("no complete backup yet") && status.contains("last failure (backup 1)") && status.contains("503"), "{status}");
    // The target is back: the schedule tries again a minute after the failed one started.
    proxy.set(Mode::Pass);
    cluster
        .poll(std::time::Duration::from_secs(150), "the schedule retries and completes", || async {
            backups().await.iter().any(|b| b["state"] == "complete" && b["who"] == "schedule")
        })
        .await;
    let list = backups().await;
    assert_eq!(list[0]["state"], "failed", "the failed one stays failed: {list:?}");
    let record = list.into_iter().find(|b| b["state"] == "complete").unwrap();
    let store = direct(&s3, target);
    tokio::task::spawn_blocking(move || check_and_restore(&store, &record)).await.unwrap();
    let status = ok(&tandem(&cluster, &["policy", "status", TABLE]));
    assert!(status.contains("region-loss RPO"), "{status}");
}
