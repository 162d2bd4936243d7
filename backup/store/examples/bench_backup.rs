//! One partition's backup and restore against a real S3 server over HTTP (s3s-fs on
//! 127.0.0.1), each against a raw upload or download of the same bytes in the same run:
//!
//!   cargo run --release -p tandem-backup-store --example bench_backup -- [MiB]   (default 256)
//!
//! Prints MiB/s of: raw puts of the checkpoint's files, `upload_checkpoint` (hash, plan,
//! compress the small files, put), raw gets, `restore_checkpoint` (get, check, write, fsync),
//! and the bytes a second backup of the unchanged partition uploads. The cluster-wide figures
//! of issue 13 (several partitions, throttling, foreground writes) come with the backup service.

use std::time::Instant;
use tandem_backup_core::{ObjectStore, PartitionJob};
use tandem_backup_store::checkpoint::{restore_checkpoint, upload_checkpoint};
use tandem_backup_store::{RealObjectStore, S3Options, Target};
use tandem_core::storage::KvEngine;
use tandem_core::WriteOp;
use tandem_storage::{EngineMemory, RocksEngine};

fn main() {
    let mb: u64 = std::env::args().nth(1).map(|a| a.parse().expect("MiB: a number")).unwrap_or(256);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s3 = runtime.block_on(tandem_s3_dev::DevS3::start(&dir.path().join("s3"), &["bench"])).unwrap();
    let options = S3Options {
        endpoint: Some(s3.endpoint()),
        region: Some("us-east-1".into()),
        access_key_id: Some(s3.access_key.clone()),
        secret_access_key: Some(s3.secret_key.clone()),
    };
    let open = |prefix: &str| RealObjectStore::open(&Target::parse(&format!("s3://bench/{prefix}")).unwrap(), &options, runtime.handle().clone()).unwrap();

    // A partition of `mb` MiB of incompressible values, flushed into SST files.
    let memory = EngineMemory::default();
    let mut engine = RocksEngine::open(&dir.path().join("db"), &memory).unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (value_bytes, per_decree) = (1000usize, 1000u64);
    let decrees = (mb << 20) / (value_bytes as u64 * per_decree);
    for d in 1..=decrees.max(1) {
        let ops: Vec<WriteOp> = (0..per_decree)
            .map(|i| {
                let value: Vec<u8> = (0..value_bytes / 8).flat_map(|_| next().to_le_bytes()).collect();
                WriteOp::Put { key: format!("key{:012}", d * per_decree + i).into_bytes(), value }
            })
            .collect();
        engine.apply(d, d, &ops).unwrap();
    }
    let cp = dir.path().join("cp");
    let decree = engine.checkpoint(&cp).unwrap();
    let files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&cp)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| (e.file_name().to_string_lossy().to_string(), std::fs::read(e.path()).unwrap()))
        .collect();
    let total: u64 = files.iter().map(|(_, b)| b.len() as u64).sum();
    let mbps = |bytes: u64, started: Instant| bytes as f64 / (1 << 20) as f64 / started.elapsed().as_secs_f64();
    println!("partition: {} files, {:.1} MiB at decree {decree}", files.len(), total as f64 / (1 << 20) as f64);

    let mut raw = open("raw");
    let started = Instant::now();
    for (name, bytes) in &files {
        raw.put(&format!("raw/{name}"), bytes.clone()).unwrap();
    }
    let raw_up = mbps(total, started);

    let mut store = open("backups");
    let job = |backup_id| PartitionJob { table_id: 1, backup_id, partition: 0, attempt: 1 };
    let started = Instant::now();
    let (m1, e1) = upload_checkpoint(&mut store, &cp, job(1), decree, &[]).unwrap();
    let backup_up = mbps(total, started);

    let started = Instant::now();
    let mut got = 0u64;
    for (name, _) in &files {
        got += raw.get(&format!("raw/{name}")).unwrap().unwrap().len() as u64;
    }
    let raw_down = mbps(got, started);

    let started = Instant::now();
    let restored = restore_checkpoint(&store, &m1, &dir.path().join("restored")).unwrap();
    let restore_down = mbps(restored, started);

    let (_, e2) = upload_checkpoint(&mut store, &cp, job(2), decree, std::slice::from_ref(&m1)).unwrap();

    println!("upload:   raw {raw_up:.0} MiB/s, backup {backup_up:.0} MiB/s ({:.2}x raw)", backup_up / raw_up);
    println!("download: raw {raw_down:.0} MiB/s, restore {restore_down:.0} MiB/s ({:.2}x raw)", restore_down / raw_down);
    println!(
        "second backup of the unchanged partition uploaded {} bytes, {:.3}% of the first's {}",
        e2.new_bytes,
        100.0 * e2.new_bytes as f64 / e1.new_bytes as f64,
        e1.new_bytes
    );
}
