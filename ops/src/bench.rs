//! `tandem bench`: YCSB-style workloads against a Tandem table, with HDR histograms.
//!
//! Workloads: `load` (inserts `--records` keys), `a` (50% reads, 50% updates), `b` (95/5),
//! `c` (reads only), `write-only`. `--inflight` requests are kept outstanding in total, spread
//! over `--threads` client tasks.

use crate::{print_json, CmdResult, Failure};
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Workload {
    Load,
    A,
    B,
    C,
    WriteOnly,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Distribution {
    Uniform,
    Zipfian,
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    #[arg(long, env = "TANDEM_META", default_value = "127.0.0.1:34601")]
    pub meta: String,
    #[arg(long, default_value = "bench")]
    pub table: String,
    /// Create the table (8 partitions, 3 replicas) if it does not exist.
    #[arg(long)]
    pub create: bool,
    #[arg(long, value_enum, default_value = "a")]
    pub workload: Workload,
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
    /// Requests outstanding at once, in total.
    #[arg(long, default_value_t = 64)]
    pub inflight: usize,
    #[arg(long, default_value_t = 100_000)]
    pub records: u64,
    #[arg(long, default_value_t = 1024)]
    pub value_size: usize,
    #[arg(long, value_enum, default_value = "uniform")]
    pub distribution: Distribution,
    /// How long to run (ignored by `load`, which runs until every record is written).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    #[arg(long)]
    pub json: bool,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// Zipfian generator over [0, n) (Gray et al., as YCSB uses), theta 0.99.
struct Zipf {
    n: u64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
}

impl Zipf {
    fn new(n: u64) -> Zipf {
        let theta = 0.99;
        let zeta = |n: u64| (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum::<f64>();
        let zetan = zeta(n);
        let zeta2 = zeta(2);
        let alpha = 1.0 / (1.0 - theta);
        let eta = (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan);
        Zipf { n, theta, alpha, zetan, eta }
    }

    fn sample(&self, u: f64) -> u64 {
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1;
        }
        ((self.n as f64) * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64 % self.n
    }
}

fn key_of(i: u64) -> Vec<u8> {
    // Scatter sequential ids so the hot keys of a zipfian run land on different partitions.
    format!("user{:016x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).into_bytes()
}

pub async fn run(args: BenchArgs) -> CmdResult {
    if args.inflight == 0 || args.threads == 0 || args.records == 0 {
        return Err(Failure::new(2, "--inflight, --threads and --records must be positive"));
    }
    let meta: Vec<String> = args.meta.split(',').map(|s| s.trim().to_string()).collect();
    let client = tandem_client::Client::new(&meta, Default::default())?;
    if args.create {
        match client.create_table(&args.table, 8, 3, "bench").await {
            Ok(_) | Err(tandem_client::ClientError::AlreadyExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let table = client.table(&args.table);
    let zipf = Arc::new(if args.distribution == Distribution::Zipfian { Some(Zipf::new(args.records)) } else { None });
    let read_share = match args.workload {
        Workload::A => 0.5,
        Workload::B => 0.95,
        Workload::C => 1.0,
        Workload::Load | Workload::WriteOnly => 0.0,
    };
    let value: Arc<Vec<u8>> = Arc::new((0..args.value_size).map(|i| b'a' + (i % 26) as u8).collect());
    let next_insert = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let reads = Arc::new(Mutex::new(Histogram::<u64>::new(3).expect("histogram")));
    let writes = Arc::new(Mutex::new(Histogram::<u64>::new(3).expect("histogram")));
    let start = Instant::now();
    let deadline = start + args.duration;
    let mut workers = Vec::new();
    for w in 0..args.inflight {
        let table = table.clone();
        let (zipf, value, next_insert, errors, reads, writes) =
            (zipf.clone(), value.clone(), next_insert.clone(), errors.clone(), reads.clone(), writes.clone());
        let args = args.clone();
        workers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed.wrapping_add(w as u64));
            let mut local_r = Histogram::<u64>::new(3).expect("histogram");
            let mut local_w = Histogram::<u64>::new(3).expect("histogram");
            loop {
                let key_index = if args.workload == Workload::Load {
                    let i = next_insert.fetch_add(1, Ordering::Relaxed);
                    if i >= args.records {
                        break;
                    }
                    i
                } else {
                    if Instant::now() >= deadline {
                        break;
                    }
                    match zipf.as_ref() {
                        Some(z) => z.sample(rng.random::<f64>()),
                        None => rng.random_range(0..args.records),
                    }
                };
                let key = key_of(key_index);
                let is_read = read_share > 0.0 && rng.random::<f64>() < read_share;
                let t = Instant::now();
                let ok = if is_read { table.get(&key, b"").await.is_ok() } else { table.set(&key, b"", &value, 0).await.is_ok() };
                let us = t.elapsed().as_micros() as u64;
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                } else if is_read {
                    let _ = local_r.record(us.max(1));
                } else {
                    let _ = local_w.record(us.max(1));
                }
            }
            reads.lock().expect("histogram lock").add(&local_r).expect("same bounds");
            writes.lock().expect("histogram lock").add(&local_w).expect("same bounds");
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let r = reads.lock().expect("histogram lock").clone();
    let w = writes.lock().expect("histogram lock").clone();
    let summary = |h: &Histogram<u64>| {
        json!({
            "ops": h.len(), "throughput": h.len() as f64 / elapsed,
            "p50_us": h.value_at_quantile(0.5), "p99_us": h.value_at_quantile(0.99), "p999_us": h.value_at_quantile(0.999),
        })
    };
    let result = json!({
        "target": "tandem", "workload": format!("{:?}", args.workload).to_lowercase(), "inflight": args.inflight,
        "records": args.records, "value_size": args.value_size, "distribution": format!("{:?}", args.distribution).to_lowercase(),
        "seconds": elapsed, "throughput": (r.len() + w.len()) as f64 / elapsed, "errors": errors.load(Ordering::Relaxed),
        "reads": summary(&r), "writes": summary(&w),
    });
    if args.json {
        print_json(&result);
    } else {
        println!(
            "tandem {:?}: {:.0} ops/s over {:.1}s ({} errors), {} in flight, {}-byte values",
            args.workload,
            (r.len() + w.len()) as f64 / elapsed,
            elapsed,
            errors.load(Ordering::Relaxed),
            args.inflight,
            args.value_size
        );
        for (name, h) in [("read", &r), ("write", &w)] {
            if h.len() > 0 {
                println!(
                    "  {name:5}: {:>9.0} ops/s  p50 {:>7} us  p99 {:>7} us  p999 {:>7} us",
                    h.len() as f64 / elapsed,
                    h.value_at_quantile(0.5),
                    h.value_at_quantile(0.99),
                    h.value_at_quantile(0.999)
                );
            }
        }
    }
    if errors.load(Ordering::Relaxed) > 0 && r.len() + w.len() == 0 {
        return Err(Failure::new(3, "every request failed"));
    }
    Ok(())
}
