//! `tandem bench`: YCSB-style workloads with HDR histograms, against Tandem and, with the same
//! key generator, values, concurrency and histograms, against etcd and Redis, so that every ratio
//! comes from one run (`ops/bench-peers` starts the peers).
//!
//! Workloads: `load` (inserts `--records` keys), `a` (50% reads, 50% updates), `b` (95/5),
//! `c` (reads only), `write-only`. `--inflight` requests are kept outstanding in total, spread
//! over `--threads` client connections.
//!
//! What each target does per operation:
//! - tandem: `set` / `get` of (hash key, empty sort key) through the Rust client: a write is
//!   acknowledged after every replica logged it (fsync by default), a read is served by the
//!   primary under its lease.
//! - etcd: `Put` / linearizable `Range` (the default: read index through the leader).
//! - redis: `SET` / `GET` on a server the caller runs with `appendfsync always`.

use crate::{meta_addrs, print_json, CmdResult, Failure, EXIT_UNAVAILABLE};
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
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

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Load => "load",
            Workload::A => "a",
            Workload::B => "b",
            Workload::C => "c",
            Workload::WriteOnly => "write-only",
        }
    }

    fn read_share(self) -> f64 {
        match self {
            Workload::A => 0.5,
            Workload::B => 0.95,
            Workload::C => 1.0,
            Workload::Load | Workload::WriteOnly => 0.0,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Target {
    Tandem,
    Etcd,
    Redis,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Tandem => "tandem",
            Target::Etcd => "etcd",
            Target::Redis => "redis",
        }
    }
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
    /// Systems to drive, in order, comma-separated: tandem, etcd, redis.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "tandem")]
    pub target: Vec<Target>,
    /// etcd client endpoints (HOST:PORT, comma-separated), for `--target etcd`.
    #[arg(long, value_delimiter = ',')]
    pub etcd: Vec<String>,
    /// Redis server (HOST:PORT), for `--target redis`.
    #[arg(long)]
    pub redis: Option<String>,
    #[arg(long, default_value = "bench")]
    pub table: String,
    /// Create the Tandem table (8 partitions, 3 replicas) if it does not exist.
    #[arg(long)]
    pub create: bool,
    /// Workloads to run one after the other, comma-separated (e.g. `load,write-only,c`).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "a")]
    pub workload: Vec<Workload>,
    /// Client connections per target.
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
    /// How long each workload runs (ignored by `load`, which runs until every record is written).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// How long to wait for a target to accept a first write before giving up on it.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub ready_timeout: Duration,
    #[arg(long)]
    pub json: bool,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Operations per second at most, spread evenly (0: as fast as it goes).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Write pseudo-random values, a different one per write, which do not compress (the
    /// default value is a repeated alphabet, which compresses to almost nothing on disk).
    #[arg(long)]
    pub incompressible: bool,
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

/// One client connection to one target.
#[derive(Clone)]
enum Store {
    Tandem(tandem_client::Table),
    Etcd(etcd_client::KvClient),
    Redis(redis::aio::MultiplexedConnection),
}

impl Store {
    async fn connect(target: Target, args: &BenchArgs) -> Result<Store, String> {
        match target {
            Target::Tandem => {
                let client = tandem_client::Client::new(&meta_addrs(&args.meta), Default::default()).map_err(|e| e.to_string())?;
                Ok(Store::Tandem(client.table(&args.table)))
            }
            Target::Etcd => {
                if args.etcd.is_empty() {
                    return Err("--target etcd needs --etcd HOST:PORT[,HOST:PORT…]".into());
                }
                let endpoints: Vec<String> = args.etcd.iter().map(|e| format!("http://{}", e.trim())).collect();
                let client = etcd_client::Client::connect(endpoints, None).await.map_err(|e| format!("etcd: {e}"))?;
                Ok(Store::Etcd(client.kv_client()))
            }
            Target::Redis => {
                let Some(addr) = &args.redis else {
                    return Err("--target redis needs --redis HOST:PORT".into());
                };
                let client = redis::Client::open(format!("redis://{}/", addr.trim())).map_err(|e| format!("redis: {e}"))?;
                let conn = client.get_multiplexed_async_connection().await.map_err(|e| format!("redis: {e}"))?;
                Ok(Store::Redis(conn))
            }
        }
    }

    async fn set(&mut self, key: &[u8], value: &[u8]) -> Result<(), String> {
        match self {
            Store::Tandem(table) => table.set(key, b"", value, 0).await.map_err(|e| e.to_string()),
            Store::Etcd(kv) => kv.put(key, value, None).await.map(|_| ()).map_err(|e| e.to_string()),
            Store::Redis(conn) => redis::cmd("SET").arg(key).arg(value).query_async::<()>(conn).await.map_err(|e| e.to_string()),
        }
    }

    /// Whether the key was found.
    async fn get(&mut self, key: &[u8]) -> Result<bool, String> {
        match self {
            Store::Tandem(table) => table.get(key, b"").await.map(|v| v.is_some()).map_err(|e| e.to_string()),
            Store::Etcd(kv) => kv.get(key, None).await.map(|r| !r.kvs().is_empty()).map_err(|e| e.to_string()),
            Store::Redis(conn) => {
                redis::cmd("GET").arg(key).query_async::<Option<Vec<u8>>>(conn).await.map(|v| v.is_some()).map_err(|e| e.to_string())
            }
        }
    }
}

/// Connects `threads` stores to `target` and waits (polling, up to `--ready-timeout`) until a
/// first write succeeds through each.
async fn connect_all(target: Target, args: &BenchArgs) -> Result<Vec<Store>, Failure> {
    let deadline = Instant::now() + args.ready_timeout;
    if target == Target::Tandem && args.create {
        let client = tandem_client::Client::new(&meta_addrs(&args.meta), Default::default())?;
        loop {
            // A cluster that is starting refuses for a while (meta not up, too few live replica
            // servers for 3 replicas): try again until the deadline, then report the last refusal.
            match client.create_table(&args.table, 8, 3, "bench").await {
                Ok(_) | Err(tandem_client::ClientError::AlreadyExists(_)) => break,
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!("cluster not ready: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    let mut stores = Vec::new();
    for _ in 0..args.threads {
        let mut last_error;
        loop {
            match Store::connect(target, args).await {
                Ok(mut store) => match store.set(b"bench-probe", b"probe").await {
                    Ok(()) => {
                        stores.push(store);
                        break;
                    }
                    Err(e) => last_error = e,
                },
                Err(e) if e.starts_with("--") => return Err(Failure::new(2, e)),
                Err(e) => last_error = e,
            }
            if Instant::now() >= deadline {
                return Err(Failure::new(
                    EXIT_UNAVAILABLE,
                    format!("{} did not accept a write within {:?}: {last_error}", target.name(), args.ready_timeout),
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(stores)
}

struct RunResult {
    elapsed_s: f64,
    reads: Histogram<u64>,
    writes: Histogram<u64>,
    errors: u64,
    not_found: u64,
    first_error: Option<String>,
}

async fn run_workload(stores: &[Store], workload: Workload, args: &BenchArgs, zipf: &Arc<Option<Zipf>>) -> RunResult {
    let read_share = workload.read_share();
    let value: Arc<Vec<u8>> = Arc::new((0..args.value_size).map(|i| b'a' + (i % 26) as u8).collect());
    let next_insert = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let not_found = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let reads = Arc::new(Mutex::new(Histogram::<u64>::new(3).expect("histogram")));
    let writes = Arc::new(Mutex::new(Histogram::<u64>::new(3).expect("histogram")));
    let start = Instant::now();
    let deadline = start + args.duration;
    // --rate: operation n starts no earlier than n / rate seconds into the run.
    let issued = Arc::new(AtomicU64::new(0));
    let rate = args.rate;
    let mut workers = Vec::new();
    for w in 0..args.inflight {
        let mut store = stores[w % stores.len()].clone();
        let (zipf, value, next_insert, errors, not_found, first_error, reads, writes) = (
            zipf.clone(),
            value.clone(),
            next_insert.clone(),
            errors.clone(),
            not_found.clone(),
            first_error.clone(),
            reads.clone(),
            writes.clone(),
        );
        let (records, seed, incompressible) = (args.records, args.seed, args.incompressible);
        let issued = issued.clone();
        workers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed.wrapping_add(w as u64));
            let mut local_r = Histogram::<u64>::new(3).expect("histogram");
            let mut local_w = Histogram::<u64>::new(3).expect("histogram");
            loop {
                let key_index = if workload == Workload::Load {
                    let i = next_insert.fetch_add(1, Ordering::Relaxed);
                    if i >= records {
                        break;
                    }
                    i
                } else {
                    if Instant::now() >= deadline {
                        break;
                    }
                    match zipf.as_ref() {
                        Some(z) => z.sample(rng.random::<f64>()),
                        None => rng.random_range(0..records),
                    }
                };
                if rate > 0 {
                    let n = issued.fetch_add(1, Ordering::Relaxed);
                    let at = start + Duration::from_secs_f64(n as f64 / rate as f64);
                    if at >= deadline && workload != Workload::Load {
                        break;
                    }
                    tokio::time::sleep_until(at.into()).await;
                }
                let key = key_of(key_index);
                let is_read = read_share > 0.0 && rng.random::<f64>() < read_share;
                let t = Instant::now();
                let result = if is_read {
                    store.get(&key).await
                } else if incompressible {
                    let fresh: Vec<u8> = (0..value.len()).map(|_| rng.random::<u8>()).collect();
                    store.set(&key, &fresh).await.map(|()| true)
                } else {
                    store.set(&key, &value).await.map(|()| true)
                };
                let us = t.elapsed().as_micros() as u64;
                match result {
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first_error.lock().expect("error lock").get_or_insert(e);
                    }
                    Ok(found) => {
                        if !found {
                            not_found.fetch_add(1, Ordering::Relaxed);
                        }
                        let h = if is_read { &mut local_r } else { &mut local_w };
                        let _ = h.record(us.max(1));
                    }
                }
            }
            reads.lock().expect("histogram lock").add(&local_r).expect("same bounds");
            writes.lock().expect("histogram lock").add(&local_w).expect("same bounds");
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    let elapsed_s = start.elapsed().as_secs_f64();
    let reads = reads.lock().expect("histogram lock").clone();
    let writes = writes.lock().expect("histogram lock").clone();
    let first_error = first_error.lock().expect("error lock").take();
    RunResult { elapsed_s, reads, writes, errors: errors.load(Ordering::Relaxed), not_found: not_found.load(Ordering::Relaxed), first_error }
}

fn summary(h: &Histogram<u64>, elapsed_s: f64) -> Value {
    json!({
        "ops": h.len(), "throughput": h.len() as f64 / elapsed_s,
        "p50_us": h.value_at_quantile(0.5), "p99_us": h.value_at_quantile(0.99), "p999_us": h.value_at_quantile(0.999),
    })
}

pub async fn run(args: BenchArgs) -> CmdResult {
    if args.inflight == 0 || args.threads == 0 || args.records == 0 {
        return Err(Failure::new(2, "--inflight, --threads and --records must be positive"));
    }
    if args.target.is_empty() || args.workload.is_empty() {
        return Err(Failure::new(2, "--target and --workload need at least one value"));
    }
    let zipf = Arc::new(if args.distribution == Distribution::Zipfian { Some(Zipf::new(args.records)) } else { None });
    let mut runs: Vec<Value> = Vec::new();
    let mut failed = false;
    for &target in &args.target {
        let stores = connect_all(target, &args).await?;
        for &workload in &args.workload {
            let r = run_workload(&stores, workload, &args, &zipf).await;
            let total = r.reads.len() + r.writes.len();
            let run = json!({
                "target": target.name(), "workload": workload.name(), "inflight": args.inflight, "connections": args.threads,
                "records": args.records, "value_size": args.value_size,
                "distribution": format!("{:?}", args.distribution).to_lowercase(),
                "seconds": r.elapsed_s, "throughput": total as f64 / r.elapsed_s, "errors": r.errors,
                "first_error": r.first_error, "reads_not_found": r.not_found,
                "reads": summary(&r.reads, r.elapsed_s), "writes": summary(&r.writes, r.elapsed_s),
            });
            if !args.json {
                print_run(target, workload, &args, &r);
            }
            failed |= r.errors > 0 && total == 0;
            runs.push(run);
        }
    }
    let ratios = ratios(&runs);
    if args.json {
        if runs.len() == 1 {
            print_json(&runs[0]);
        } else {
            print_json(&json!({ "runs": runs, "ratios": ratios }));
        }
    } else if !ratios.is_empty() {
        print_ratios(&ratios);
    }
    if failed {
        return Err(Failure::new(EXIT_UNAVAILABLE, "every request of a run failed"));
    }
    Ok(())
}

fn print_run(target: Target, workload: Workload, args: &BenchArgs, r: &RunResult) {
    outln!(
        "{} {}: {:.0} ops/s over {:.1}s ({} errors), {} in flight, {}-byte values",
        target.name(),
        workload.name(),
        (r.reads.len() + r.writes.len()) as f64 / r.elapsed_s,
        r.elapsed_s,
        r.errors,
        args.inflight,
        args.value_size
    );
    if let Some(e) = &r.first_error {
        outln!("  first error: {e}");
    }
    if r.not_found > 0 {
        outln!("  {} reads found no value (run the load workload first)", r.not_found);
    }
    for (name, h) in [("read", &r.reads), ("write", &r.writes)] {
        if h.len() > 0 {
            outln!(
                "  {name:5}: {:>9.0} ops/s  p50 {:>7} us  p99 {:>7} us  p999 {:>7} us",
                h.len() as f64 / r.elapsed_s,
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.99),
                h.value_at_quantile(0.999)
            );
        }
    }
}

/// Tandem against each peer, per workload: throughput ratio (higher is better for Tandem) and
/// p99 ratio (lower is better for Tandem), for reads and writes separately.
fn ratios(runs: &[Value]) -> Vec<Value> {
    let mut out = Vec::new();
    for tandem in runs.iter().filter(|r| r["target"] == "tandem") {
        for peer in runs.iter().filter(|r| r["target"] != "tandem" && r["workload"] == tandem["workload"]) {
            for kind in ["reads", "writes"] {
                let (t, p) = (&tandem[kind], &peer[kind]);
                let (t_ops, p_ops) = (t["throughput"].as_f64().unwrap_or(0.0), p["throughput"].as_f64().unwrap_or(0.0));
                if t["ops"].as_u64().unwrap_or(0) == 0 || p["ops"].as_u64().unwrap_or(0) == 0 {
                    continue;
                }
                let (t_p99, p_p99) = (t["p99_us"].as_f64().unwrap_or(0.0), p["p99_us"].as_f64().unwrap_or(0.0));
                out.push(json!({
                    "workload": tandem["workload"], "kind": kind, "peer": peer["target"],
                    "tandem_throughput": t_ops, "peer_throughput": p_ops, "throughput_ratio": t_ops / p_ops.max(f64::MIN_POSITIVE),
                    "tandem_p99_us": t_p99, "peer_p99_us": p_p99, "p99_ratio": t_p99 / p_p99.max(1.0),
                }));
            }
        }
    }
    out
}

fn print_ratios(ratios: &[Value]) {
    outln!();
    outln!("{:<11} {:<6} {:<6} {:>12} {:>12} {:>8} {:>11} {:>11} {:>8}", "workload", "kind", "peer", "tandem op/s", "peer op/s", "ratio", "tandem p99", "peer p99", "ratio");
    for r in ratios {
        outln!(
            "{:<11} {:<6} {:<6} {:>12.0} {:>12.0} {:>7.2}x {:>9.1}ms {:>9.1}ms {:>7.2}x",
            r["workload"].as_str().unwrap_or(""),
            r["kind"].as_str().unwrap_or(""),
            r["peer"].as_str().unwrap_or(""),
            r["tandem_throughput"].as_f64().unwrap_or(0.0),
            r["peer_throughput"].as_f64().unwrap_or(0.0),
            r["throughput_ratio"].as_f64().unwrap_or(0.0),
            r["tandem_p99_us"].as_f64().unwrap_or(0.0) / 1000.0,
            r["peer_p99_us"].as_f64().unwrap_or(0.0) / 1000.0,
            r["p99_ratio"].as_f64().unwrap_or(0.0),
        );
    }
    outln!("(throughput ratio: tandem / peer, higher is better; p99 ratio: tandem / peer, lower is better)");
}
