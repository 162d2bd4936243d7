//! A replica server on a small real filesystem (a tmpfs this test mounts): writes fill it until
//! the server refuses them with disk-full, reads and deletes keep being served, nothing
//! acknowledged is lost, and once space is freed writes are taken again without a restart.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::Cluster;
use tandem_client::ClientError;

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
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_serves_reads_and_recovers_once_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    // The replica server's data directory (its RocksDB and mutation log) on 96 MiB, with the
    // default reserve (5%: 4.8 MiB), read every 10 ms against a writer on a tmpfs.
    let tmpfs = match Tmpfs::mount(&dir.path().join("replica-0"), "96m") {
        Ok(t) => t,
        Err(e) => {
            println!("SKIPPED: cannot mount a tmpfs here ({e}); this test needs root");
            return;
        }
    };
    // Room the operator will free later.
    let ballast = tmpfs.0.join("ballast");
    std::fs::write(&ballast, vec![0u8; 24 << 20]).unwrap();
    let store = format!("sqlite://{}", dir.path().join("meta.db").display());
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

    // Full: reads answer, a delete is taken, another write is refused.
    let full_since = Instant::now();
    let mut reads = 0;
    for key in acked.iter().step_by(10) {
        assert_eq!(t.get(key.as_bytes(), b"s").await.unwrap().as_deref(), Some(&value[..]), "{key}");
        reads += 1;
    }
    let deleted = acked.pop().unwrap();
    t.del(deleted.as_bytes(), b"s").await.expect("a delete is taken on a full disk");
    assert!(matches!(t.set(b"more", b"s", &value, 0).await, Err(ClientError::DiskFull(_))));
    println!("while full: {reads} reads answered, a delete taken, writes refused ({:?})", full_since.elapsed());

    // The operator frees space: writes are taken again within seconds, no restart.
    std::fs::remove_file(&ballast).unwrap();
    let freed = Instant::now();
    loop {
        match t.set(b"after", b"s", b"x", 0).await {
            Ok(()) => break,
            Err(ClientError::DiskFull(_)) if freed.elapsed() < Duration::from_secs(30) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("no write taken {:?} after space was freed: {e}\n{}", freed.elapsed(), cluster.logs_tail()),
        }
    }
    println!("first write taken {:?} after space was freed", freed.elapsed());

    for key in &acked {
        assert_eq!(t.get(key.as_bytes(), b"s").await.unwrap().as_deref(), Some(&value[..]), "{key}");
    }
    assert_eq!(t.get(deleted.as_bytes(), b"s").await.unwrap(), None);
    drop(cluster);
    drop(tmpfs);
}
