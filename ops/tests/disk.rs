//! Servers on small real filesystems (tmpfs mounts made by the tests):
//! - a replica server: writes fill it until the server refuses them with disk-full, reads and
//!   deletes keep being served, the meta shows it (`tandem nodes`, `tandem status`), nothing
//!   acknowledged is lost, and once space is freed writes are taken again without a restart;
//!   filled to the last byte by another process, its log fails (ENOSPC), and it starts again
//!   from its disk by itself once space is freed;
//! - a meta server's SQLite store: below its reserve, requests that add metadata are refused
//!   with disk-full while reads and beacons go on, and taken again once space is freed.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use support::{bin, Cluster};
use tandem_client::{ClientError, Table};

fn tandem(cluster: &Cluster, args: &[&str]) -> Output {
    Command::new(bin()).args(args).env("TANDEM_META", &cluster.meta_addr).output().expect("run tandem")
}

/// Fills `dir`'s filesystem to its last byte with one file (as another process would).
fn fill(path: &Path) -> u64 {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 1 << 20];
    let mut written = 0u64;
    for size in [1 << 20, 4096, 1] {
        loop {
            match f.write(&chunk[..size]) {
                Ok(n) if n > 0 => written += n as u64,
                _ => break,
            }
        }
    }
    let _ = f.sync_all();
    written
}

/// A tmpfs mounted for the test, unmounted when dropped (lazily: a process killed a moment
/// before may still hold files there).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
        let out = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(at).output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs(at.to_path_buf()))
    }

    /// Mounted, or None after saying why the test is skipped.
    fn mount_or_skip(at: &Path, size: &str) -> Option<Tmpfs> {
        Tmpfs::mount(at, size).map_err(|e| println!("SKIPPED: cannot mount a tmpfs here ({e}); this test needs root")).ok()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes `key` until it is taken, retrying the errors `retry` accepts for at most `within`:
/// how long it took.
async fn write_until_taken(cluster: &Cluster, t: &Table, key: &[u8], within: Duration, retry: impl Fn(&ClientError) -> bool) -> Duration {
    let since = Instant::now();
    loop {
        match t.set(key, b"s", b"x", 0).await {
            Ok(()) => return since.elapsed(),
            Err(e) if retry(&e) && since.elapsed() < within => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("no write taken {:?} after space was freed: {e}\n{}", since.elapsed(), cluster.logs_tail()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_serves_reads_and_recovers_once_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    // The replica server's data directory (its RocksDB and mutation log) on 96 MiB, with the
    // default reserve (5%: 4.8 MiB), read every 10 ms against a writer on a tmpfs.
    let Some(tmpfs) = Tmpfs::mount_or_skip(&dir.path().join("replica-0"), "96m") else { return };
    // Room the operator will free later.
    let ballast = tmpfs.0.join("ballast");
    std::fs::write(&ballast, vec![0u8; 24 << 20]).unwrap();
    let store = format!("sqlite://{}", dir.path().join("meta.db").display());
    let log_path = dir.path().join("replica-0.log");
    let cluster = Cluster::start_ha_on(dir, store, None, 1, 1, &[]).await;
    cluster.create_table("t", 1, 1).await;
    let t = cluster.client().table("t");

    let value = vec![b'v'; 64 << 10];
    let mut acked = Vec::new();
    let refusal = loop {
        let key = format!("k{:05}", acked.len());
        match t.set(key.as_bytes(), b"s", &value, 0).await {
            Ok(()) => acked.push(key),
            Err(e) => break e,
        }
        assert!(acked.len() < 2_000, "96 MiB took {} values of 64 KiB without a refusal", acked.len());
    };
    let written = acked.len() * value.len();
    let ClientError::DiskFull(message) = &refusal else { panic!("expected disk-full, got {refusal:?}\n{}", cluster.logs_tail()) };
    assert!(message.contains("disk almost full on") && message.contains("reserve"), "{message}");
    println!("refused after {} acknowledged values ({written} bytes): {message}", acked.len());

    // The meta knows, and says so: `tandem nodes` and `tandem status`.
    let client = cluster.client();
    cluster
        .poll(Duration::from_secs(10), "the meta shows the server short of disk", || async {
            client.list_nodes().await.is_ok_and(|nodes| nodes.iter().all(|n| n.disk_short.is_some()))
        })
        .await;
    let nodes = tandem(&cluster, &["nodes"]);
    let nodes = String::from_utf8_lossy(&nodes.stdout);
    assert!(nodes.contains("DISK") && nodes.contains("FULL:"), "{nodes}");
    let status = tandem(&cluster, &["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.starts_with("UNHEALTHY") && text.contains("disk almost full") && status.status.code() == Some(3), "{text}");
    println!("tandem nodes:\n{nodes}tandem status (exit 3):\n{text}");

    // Full: reads answer, a delete is taken, another write is refused.
    let full_since = Instant::now();
    let mut reads = 0;
    for key in acked.iter().step_by(10) {
        assert_eq!(t.get(key.as_bytes(), b"s").await.unwrap().as_deref(), Some(&value[..]), "{key}");
        reads += 1;
    }
    let first_deleted = acked.pop().unwrap();
    t.del(first_deleted.as_bytes(), b"s").await.expect("a delete is taken on a full disk");
    assert!(matches!(t.set(b"more", b"s", &value, 0).await, Err(ClientError::DiskFull(_))));
    println!("while full: {reads} reads answered, a delete taken, writes refused ({:?})", full_since.elapsed());

    // The operator frees space: writes are taken again within seconds, no restart.
    std::fs::remove_file(&ballast).unwrap();
    let took = write_until_taken(&cluster, &t, b"after", Duration::from_secs(30), |e| matches!(e, ClientError::DiskFull(_))).await;
    println!("first write taken {took:?} after space was freed");
    cluster
        .poll(Duration::from_secs(10), "the meta shows the server with room again", || async {
            client.list_nodes().await.is_ok_and(|nodes| nodes.iter().all(|n| n.disk_short.is_none()))
        })
        .await;

    // Another process takes the last byte: the next append of the log fails (ENOSPC). The
    // server stops its replicas and waits; freed, it starts again from its disk by itself.
    let filler = tmpfs.0.join("filler");
    let taken = fill(&filler);
    let log = log_path.clone();
    // Deletes are taken below the reserve; one of them meets the full disk (the first ones may
    // still fit in the log's last page).
    let doomed: Vec<String> = acked.split_off(acked.len() - 200);
    let deleting = {
        let t = t.clone();
        let doomed = doomed.clone();
        tokio::spawn(async move {
            let mut deleted = Vec::new();
            for key in doomed {
                match t.del(key.as_bytes(), b"s").await {
                    Ok(()) => deleted.push(key),
                    Err(e) => return (deleted, Some((key, e))),
                }
            }
            (deleted, None)
        })
    };
    let failed = Instant::now();
    cluster.poll(Duration::from_secs(30), "the log to fail on a full disk", || async { std::fs::read_to_string(&log).unwrap_or_default().contains("the mutation log in") }).await;
    println!("filled the last {taken} bytes; the log failed {:?} later", failed.elapsed());
    std::fs::remove_file(&filler).unwrap();
    let took = write_until_taken(&cluster, &t, b"again", Duration::from_secs(60), |_| true).await;
    println!("after the log failure: first write taken {took:?} after space was freed, no restart by hand");
    let (deleted, failed_delete) = deleting.await.unwrap();
    println!("{} of 200 deletes taken (the client retries the one the failed log cut off); failed: {failed_delete:?}", deleted.len());
    for key in &deleted {
        assert_eq!(t.get(key.as_bytes(), b"s").await.unwrap(), None, "{key}");
    }
    let unknown = failed_delete.map(|(key, _)| key);
    acked.extend(doomed.into_iter().filter(|k| !deleted.contains(k) && Some(k) != unknown.as_ref()));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("starting again from the disk"), "{text}");

    for key in &acked {
        assert_eq!(t.get(key.as_bytes(), b"s").await.unwrap().as_deref(), Some(&value[..]), "{key}");
    }
    // A delete the client gave up on may or may not have been applied; nothing else changed.
    if let Some(unknown) = unknown {
        let got = t.get(unknown.as_bytes(), b"s").await.unwrap();
        assert!(got.is_none() || got.as_deref() == Some(&value[..]), "{unknown}");
    }
    assert_eq!(t.get(first_deleted.as_bytes(), b"s").await.unwrap(), None);
    drop(cluster);
    drop(tmpfs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meta_whose_store_disk_is_full_refuses_new_metadata_and_serves_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    // The SQLite store on 40 MiB: the default reserve is 5% (2 MiB).
    let Some(tmpfs) = Tmpfs::mount_or_skip(&dir.path().join("store"), "40m") else { return };
    let store = format!("sqlite://{}", tmpfs.0.join("meta.db").display());
    let cluster = Cluster::start_ha_on(dir, store, None, 1, 1, &[]).await;
    cluster.create_table("t", 1, 1).await;
    let t = cluster.client().table("t");
    t.set(b"k", b"s", b"v", 0).await.unwrap();

    // Another process leaves 1 MiB free.
    let ballast = tmpfs.0.join("ballast");
    let leave = 1 << 20;
    let free = tandem_runtime::disk::dir_space(&tmpfs.0).unwrap().free_bytes;
    std::fs::write(&ballast, vec![0u8; (free - leave) as usize]).unwrap();
    let client = cluster.client();
    let refused = Instant::now();
    let message = loop {
        match client.create_table("u", 1, 1, "test").await {
            Err(ClientError::DiskFull(m)) => break m,
            Err(e) => panic!("expected disk-full, got {e:?}\n{}", cluster.logs_tail()),
            Ok(_) => {
                assert!(refused.elapsed() < Duration::from_secs(10), "a table was created with the store's disk below its reserve");
                client.drop_table("u").await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert!(message.contains("the metadata store's disk almost full") && message.contains("reserve"), "{message}");
    println!("create table refused: {message}");
    let create = tandem(&cluster, &["table", "create", "u", "--partitions", "1", "--replicas", "1"]);
    assert_eq!(create.status.code(), Some(6), "the CLI's disk-full exit code: {}", String::from_utf8_lossy(&create.stderr));
    // Reads of the configuration, beacons and the data path go on.
    let status = tandem(&cluster, &["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("the metadata store's disk almost full"), "{text}");
    assert_eq!(client.list_nodes().await.unwrap().iter().filter(|n| n.alive).count(), 1);
    assert_eq!(t.get(b"k", b"s").await.unwrap().as_deref(), Some(&b"v"[..]));
    t.set(b"k2", b"s", b"v2", 0).await.unwrap();
    assert!(tmpfs.0.join("meta.db.reserve").exists(), "the store keeps a reserve file");

    // Another process takes the last byte: the store gives up its reserve for the writes it
    // must do (lease renewals every 5 s), and the meta keeps leading and serving.
    let filler = tmpfs.0.join("filler");
    let taken = fill(&filler);
    let full_since = Instant::now();
    while full_since.elapsed() < Duration::from_secs(12) {
        let status = client.cluster_status().await.unwrap_or_else(|e| panic!("status after {:?} on a full disk: {e}\n{}", full_since.elapsed(), cluster.logs_tail()));
        assert_eq!(status.nodes_alive, 1, "beacons go on");
        assert_eq!(t.get(b"k", b"s").await.unwrap().as_deref(), Some(&b"v"[..]));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let released = !tmpfs.0.join("meta.db.reserve").exists();
    println!("filled the last {taken} bytes: the meta led and answered for 12 s (two lease renewals); reserve given up: {released}");

    std::fs::remove_file(&filler).unwrap();
    std::fs::remove_file(&ballast).unwrap();
    let freed = Instant::now();
    loop {
        match client.create_table("u", 1, 1, "test").await {
            Ok(_) => break,
            Err(ClientError::DiskFull(_)) if freed.elapsed() < Duration::from_secs(30) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("no table created {:?} after space was freed: {e}", freed.elapsed()),
        }
    }
    println!("table created {:?} after space was freed", freed.elapsed());
    cluster.poll(Duration::from_secs(10), "the store's reserve written again", || async { tmpfs.0.join("meta.db.reserve").exists() }).await;
    drop(cluster);
    drop(tmpfs);
}
