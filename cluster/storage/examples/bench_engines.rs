//! Many replicas' engines in one process, sharing one `EngineMemory`: how fast writes spread
//! over them go, how many SST files their flushes leave, how many files the process holds open.
//! Isolates the storage engine from the rest of the server (docs/bench.md, "Scale").
//!
//!   target/release/examples/bench_engines \
//!       [--engines 8,64,256,1024] [--memtables 256MiB] [--seconds 10] [--value-size 1024]
//!
//! Each write is one decree applied to one engine picked at random (a put of `--value-size`
//! bytes), as a replica applies a committed mutation.

use std::time::{Duration, Instant};
use tandem_core::storage::KvEngine;
use tandem_core::WriteOp;
use tandem_storage::{EngineMemory, RocksEngine};

fn main() {
    let mut engines = vec![8usize, 64, 256, 1024];
    let mut memtables: usize = 256 << 20;
    let mut seconds = 10u64;
    let mut value_size = 1024usize;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--engines" => engines = value.split(',').map(|v| v.parse().expect("--engines N,N,..")).collect(),
            "--memtables" => memtables = value.trim_end_matches("MiB").parse::<usize>().expect("--memtables NMiB") << 20,
            "--seconds" => seconds = value.parse().expect("--seconds N"),
            "--value-size" => value_size = value.parse().expect("--value-size N"),
            _ => panic!("unknown flag {flag}"),
        }
    }
    println!("{:>8} {:>10} {:>10} {:>10} {:>10}", "engines", "writes/s", "sst files", "open files", "memtables");
    for n in engines {
        let dir = tempfile::tempdir().expect("tempdir");
        let memory = EngineMemory::new(8 << 20, memtables);
        let mut open: Vec<RocksEngine> = (0..n).map(|i| RocksEngine::open(&dir.path().join(i.to_string()), &memory).expect("open")).collect();
        let value = vec![b'x'; value_size];
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let started = Instant::now();
        let mut writes = 0u64;
        while started.elapsed() < Duration::from_secs(seconds) {
            for _ in 0..256 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let engine = &mut open[(rng % n as u64) as usize];
                let decree = engine.last_applied_decree() + 1;
                let key = format!("k{:016x}", rng).into_bytes();
                engine.apply(decree, 0, &[WriteOp::Put { key, value: value.clone() }]).expect("apply");
                writes += 1;
            }
        }
        let rate = writes as f64 / started.elapsed().as_secs_f64();
        let ssts = walk(dir.path()).into_iter().filter(|p| p.extension().is_some_and(|e| e == "sst")).count();
        let fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0);
        println!("{n:>8} {rate:>10.0} {ssts:>10} {fds:>10} {:>9}M", memory.memtable_bytes() >> 20);
        open.clear();
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() { out.extend(walk(&path)) } else { out.push(path) }
    }
    out
}
