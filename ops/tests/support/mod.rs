//! A real cluster of `tandem` processes on 127.0.0.1 for tests: spawn, kill -9, restart, and
//! poll its state with deadlines.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use tandem_client::{Client, ClientOptions};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tandem"))
}

/// A port on 127.0.0.1 that was free a moment ago and that no other test of this run was handed.
///
/// The kernel may give the same ephemeral port to two `bind(0)` calls in a row once the first
/// listener is closed (CI once saw a meta server and a replica server of one cluster handed the
/// same port). So ports handed out are remembered in this process, and claimed across the test
/// processes nextest runs side by side by a marker file, which counts as stale after 10 minutes.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let markers = std::env::temp_dir().join("tandem-test-ports");
    let _ = std::fs::create_dir_all(&markers);
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let port = l.local_addr().expect("local addr").port();
        drop(l);
        if !GIVEN.lock().unwrap().insert(port) {
            continue;
        }
        let marker = markers.join(port.to_string());
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&marker) {
            Ok(_) => return port,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let age = std::fs::metadata(&marker).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
                let stale = age.is_some_and(|a| a > Duration::from_secs(600));
                let touched = || std::fs::File::options().write(true).open(&marker).and_then(|f| f.set_modified(std::time::SystemTime::now()));
                if stale && touched().is_ok() {
                    return port;
                }
            }
            // No marker directory to share: the in-process set is all there is.
            Err(_) => return port,
        }
    }
}

/// Server timings scaled down so failures are detected in seconds.
pub const FAST_ENV: &[(&str, &str)] = &[
    ("TANDEM_REPLICA_BEACON_INTERVAL", "300ms"),
    ("TANDEM_REPLICA_LEASE_PERIOD", "3s"),
    ("TANDEM_META_GRACE_PERIOD", "4s"),
    ("TANDEM_REPLICA_PREPARE_TIMEOUT", "2s"),
    ("TANDEM_META_TICK_INTERVAL", "200ms"),
    ("TANDEM_REPLICA_LOG_GC_INTERVAL", "5s"),
];

pub enum Store {
    Sqlite,
    Postgres(PgDatabase),
}

/// A fresh PostgreSQL database on 127.0.0.1:5432, dropped at the end.
pub struct PgDatabase {
    pub name: String,
}

impl PgDatabase {
    pub async fn create() -> PgDatabase {
        use sqlx::Executor;
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let name = format!("tandem_cluster_{}_{nanos}", std::process::id());
        let pool = sqlx::PgPool::connect("postgres://postgres@127.0.0.1:5432/postgres")
            .await
            .expect("PostgreSQL must run on 127.0.0.1:5432 (ops/test starts it)");
        pool.execute(format!("CREATE DATABASE {name}").as_str()).await.expect("create database");
        pool.close().await;
        PgDatabase { name }
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside the test's runtime: use a small one of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                use sqlx::Executor;
                if let Ok(pool) = sqlx::PgPool::connect("postgres://postgres@127.0.0.1:5432/postgres").await {
                    let _ = pool.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str()).await;
                    pool.close().await;
                }
            });
        })
        .join();
    }
}

pub struct Server {
    pub addr: String,
    pub data_dir: PathBuf,
    pub child: Option<Child>,
    pub log: PathBuf,
    pub extra: Vec<String>,
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub meta_addr: String,
    pub store_url: String,
    pub meta: Server,
    /// More meta servers sharing the store (meta HA); `meta` is meta 0, these are 1, 2, ….
    pub standbys: Vec<Server>,
    pub replicas: Vec<Server>,
    pub pg: Option<PgDatabase>,
    pub replica_extra: Vec<String>,
}

/// The store URL for `store` (SQLite in `dir`), and the PostgreSQL database to keep alive.
fn store_url(dir: &tempfile::TempDir, store: Store) -> (String, Option<PgDatabase>) {
    match store {
        Store::Sqlite => (format!("sqlite://{}", dir.path().join("meta.db").display()), None),
        Store::Postgres(db) => (db.url(), Some(db)),
    }
}

fn spawn(args: &[String], log: &Path) -> Child {
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
    let err = out.try_clone().expect("clone log file");
    let mut cmd = Command::new(bin());
    cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err).env("TANDEM_LOG", "info");
    for (k, v) in FAST_ENV {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn tandem")
}

impl Cluster {
    pub async fn start(replicas: usize, store: Store) -> Cluster {
        Cluster::start_with(replicas, store, &[]).await
    }

    /// `replica_extra`: flags added to every `replica start`.
    pub async fn start_with(replicas: usize, store: Store, replica_extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store_url, pg) = store_url(&dir, store);
        Cluster::start_on(dir, store_url, pg, 1, replicas, &[], replica_extra).await
    }

    /// A site of its own: its meta named `site`, its replica servers stamping `cluster_id`
    /// into every timetag (through a configuration file both read).
    pub async fn start_site(site: &str, cluster_id: u8, replicas: usize) -> Cluster {
        Cluster::start_site_with(site, cluster_id, replicas, "").await
    }

    /// `start_site`, with more `[replica]` settings (TOML lines).
    pub async fn start_site_with(site: &str, cluster_id: u8, replicas: usize, replica_toml: &str) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("site.toml");
        let text = format!("[meta]\nsite = \"{site}\"\n\n[replica]\ncluster_id = {cluster_id}\n{replica_toml}\n");
        std::fs::write(&config, text).expect("write the site config");
        let (store_url, pg) = store_url(&dir, Store::Sqlite);
        let flags = ["--config".to_string(), config.display().to_string()];
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        Cluster::start_on(dir, store_url, pg, 1, replicas, &flags, &flags).await
    }

    /// `metas` meta servers sharing one store, each started with `meta_extra` flags.
    pub async fn start_ha(metas: usize, replicas: usize, store: Store, meta_extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store_url, pg) = store_url(&dir, store);
        Cluster::start_on(dir, store_url, pg, metas, replicas, meta_extra, &[]).await
    }

    /// `start_ha`, with `replica_extra` flags added to every `replica start`.
    pub async fn start_ha_with(metas: usize, replicas: usize, store: Store, meta_extra: &[&str], replica_extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store_url, pg) = store_url(&dir, store);
        Cluster::start_on(dir, store_url, pg, metas, replicas, meta_extra, replica_extra).await
    }

    /// Like `start_ha`, on a store URL the caller manages.
    pub async fn start_ha_on(dir: tempfile::TempDir, store_url: String, pg: Option<PgDatabase>, metas: usize, replicas: usize, meta_extra: &[&str]) -> Cluster {
        Cluster::start_on(dir, store_url, pg, metas, replicas, meta_extra, &[]).await
    }

    async fn start_on(
        dir: tempfile::TempDir,
        store_url: String,
        pg: Option<PgDatabase>,
        metas: usize,
        replicas: usize,
        meta_extra: &[&str],
        replica_extra: &[&str],
    ) -> Cluster {
        let extra: Vec<String> = meta_extra.iter().map(|s| s.to_string()).collect();
        let server = |i: usize| Server {
            addr: format!("127.0.0.1:{}", free_port()),
            data_dir: dir.path().join(format!("meta-{i}")),
            child: None,
            log: dir.path().join(format!("meta-{i}.log")),
            extra: extra.clone(),
        };
        let meta = server(0);
        let standbys = (1..metas).map(server).collect();
        let replica_extra = replica_extra.iter().map(|s| s.to_string()).collect();
        let mut c = Cluster { meta_addr: meta.addr.clone(), store_url, meta, standbys, replicas: Vec::new(), pg, replica_extra, dir };
        for i in 0..metas {
            c.start_meta_at(i);
        }
        for _ in 0..replicas {
            c.add_replica();
        }
        c.wait_nodes_alive(replicas as u32, Duration::from_secs(60)).await;
        c
    }

    pub fn meta_addrs(&self) -> Vec<String> {
        std::iter::once(&self.meta).chain(self.standbys.iter()).map(|s| s.addr.clone()).collect()
    }

    pub fn meta_server(&mut self, i: usize) -> &mut Server {
        if i == 0 { &mut self.meta } else { &mut self.standbys[i - 1] }
    }

    pub fn start_meta(&mut self) {
        self.start_meta_at(0);
    }

    pub fn start_meta_at(&mut self, i: usize) {
        let store_url = self.store_url.clone();
        let s = self.meta_server(i);
        let mut args = vec!["meta".into(), "start".into(), "--listen".into(), s.addr.clone(), "--store".into(), store_url];
        args.extend(s.extra.iter().cloned());
        s.child = Some(spawn(&args, &s.log));
    }

    pub fn kill_meta_at(&mut self, i: usize) {
        if let Some(mut c) = self.meta_server(i).child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `signal` (e.g. "STOP", "CONT") to meta server `i`.
    pub fn signal_meta(&mut self, i: usize, signal: &str) {
        let pid = self.meta_server(i).child.as_ref().expect("meta server running").id();
        let status = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().expect("run kill");
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// Sends `signal` (e.g. "STOP", "CONT") to replica server `i`.
    pub fn signal_replica(&mut self, i: usize, signal: &str) {
        let pid = self.replicas[i].child.as_ref().expect("replica server running").id();
        let status = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().expect("run kill");
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// `kill -SIGNAL` to every process of the site (its metas and replica servers).
    pub fn signal_all(&mut self, signal: &str) {
        let pids: Vec<u32> =
            std::iter::once(&self.meta).chain(self.standbys.iter()).chain(self.replicas.iter()).filter_map(|s| s.child.as_ref().map(|c| c.id())).collect();
        for pid in pids {
            let status = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().expect("run kill");
            assert!(status.success(), "kill -{signal} {pid}");
        }
    }

    /// A client of meta server `i` alone (it does not follow leader hints elsewhere).
    pub fn client_of_meta(&self, i: usize) -> Client {
        let addr = self.meta_addrs()[i].clone();
        Client::new(&[addr], ClientOptions { rpc_timeout: Duration::from_secs(1), request_timeout: Duration::from_secs(2) }).expect("client")
    }

    /// Which meta server answers as leader now, if any.
    pub async fn leader(&self) -> Option<usize> {
        for i in 0..self.meta_addrs().len() {
            if self.client_of_meta(i).cluster_status().await.is_ok() {
                return Some(i);
            }
        }
        None
    }

    pub fn add_replica(&mut self) -> usize {
        self.add_replica_with(&[])
    }

    /// `add_replica`, with flags of its own after the cluster's.
    pub fn add_replica_with(&mut self, extra: &[&str]) -> usize {
        let i = self.replicas.len();
        let addr = format!("127.0.0.1:{}", free_port());
        let data_dir = self.dir.path().join(format!("replica-{i}"));
        let log = self.dir.path().join(format!("replica-{i}.log"));
        let extra = self.replica_extra.iter().cloned().chain(extra.iter().map(|s| s.to_string())).collect();
        self.replicas.push(Server { addr, data_dir, child: None, log, extra });
        self.start_replica(i);
        i
    }

    pub fn start_replica(&mut self, i: usize) {
        let meta_addrs = self.meta_addrs().join(",");
        let s = &mut self.replicas[i];
        let mut args: Vec<String> = vec![
            "replica".into(),
            "start".into(),
            "--listen".into(),
            s.addr.clone(),
            "--meta".into(),
            meta_addrs,
            "--data-dir".into(),
            s.data_dir.display().to_string(),
        ];
        args.extend(s.extra.iter().cloned());
        s.child = Some(spawn(&args, &s.log));
    }

    /// kill -9
    pub fn kill_replica(&mut self, i: usize) {
        if let Some(mut c) = self.replicas[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn kill_meta(&mut self) {
        if let Some(mut c) = self.meta.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn replica_addr(&self, i: usize) -> String {
        self.replicas[i].addr.clone()
    }

    pub fn replica_index(&self, addr: &str) -> usize {
        self.replicas.iter().position(|s| s.addr == addr).unwrap_or_else(|| panic!("no replica server {addr}"))
    }

    pub fn client(&self) -> Client {
        Client::new(&self.meta_addrs(), ClientOptions { rpc_timeout: Duration::from_secs(3), request_timeout: Duration::from_secs(30) })
            .expect("client")
    }

    pub async fn wait_nodes_alive(&self, n: u32, within: Duration) {
        let client = self.client();
        self.poll(within, &format!("{n} replica servers alive"), || {
            let client = client.clone();
            async move { client.cluster_status().await.map(|s| s.nodes_alive >= n).unwrap_or(false) }
        })
        .await;
    }

    /// Every partition of every table has a live primary and its full replica count.
    pub async fn wait_healthy(&self, within: Duration) {
        let client = self.client();
        self.poll(within, "every partition healthy", || {
            let client = client.clone();
            async move { client.cluster_status().await.map(|s| s.degraded == 0 && s.unavailable == 0 && s.partitions > 0).unwrap_or(false) }
        })
        .await;
    }

    pub async fn poll<F, Fut>(&self, within: Duration, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + within;
        loop {
            if check().await {
                return;
            }
            if Instant::now() > deadline {
                panic!("timed out after {within:?} waiting for: {what}\n{}", self.logs_tail());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn logs_tail(&self) -> String {
        let mut out = String::new();
        for s in std::iter::once(&self.meta).chain(self.standbys.iter()).chain(self.replicas.iter()) {
            let text = std::fs::read_to_string(&s.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(15)..].join("\n");
            out.push_str(&format!("--- {} ({})\n{tail}\n", s.log.display(), s.addr));
        }
        out
    }

    pub async fn create_table(&self, name: &str, partitions: u32, replicas: u32) {
        self.client().create_table(name, partitions, replicas, "test").await.expect("create table");
        self.wait_healthy(Duration::from_secs(30)).await;
    }

    /// The configuration of a table's partition as the meta has it.
    pub async fn partition(&self, table: &str, partition: u32) -> tandem_proto::v1::PartitionConfig {
        let resp = self.client().show_table(table).await.expect("show table");
        resp.partitions[partition as usize].config.clone().expect("config")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for s in self.replicas.iter_mut().chain(std::iter::once(&mut self.meta)).chain(self.standbys.iter_mut()) {
            if let Some(mut c) = s.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

pub const KEYS: usize = 10_000;
pub const CONCURRENCY: usize = 32;

/// `CONCURRENCY` writers writing `KEYS` keys in the background.
pub struct Load {
    pub writers: Vec<tokio::task::JoinHandle<()>>,
    pub acked: Arc<Mutex<BTreeMap<String, String>>>,
}

/// Starts the writers and returns once a fifth of the keys are acknowledged.
pub async fn start_load(cluster: &Cluster, table: &str) -> Load {
    let t = cluster.client().table(table);
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut writers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (t, acked, next) = (t.clone(), acked.clone(), next.clone());
        writers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= KEYS {
                    return;
                }
                let (k, v) = (format!("key{i:05}"), format!("value-{i}"));
                if t.set(k.as_bytes(), b"s", v.as_bytes(), 0).await.is_ok() {
                    acked.lock().unwrap().insert(k, v);
                }
            }
        }));
    }
    cluster
        .poll(Duration::from_secs(60), "a fifth of the writes acknowledged", || {
            let n = acked.lock().unwrap().len();
            async move { n >= KEYS / 5 }
        })
        .await;
    Load { writers, acked }
}

impl Load {
    /// Waits for every writer; returns the acknowledged keys and values.
    pub async fn finish(self, cluster: &Cluster) -> BTreeMap<String, String> {
        for w in self.writers {
            w.await.unwrap();
        }
        let acked = self.acked.lock().unwrap().clone();
        assert!(acked.len() >= KEYS * 9 / 10, "only {} of {KEYS} writes were acknowledged\n{}", acked.len(), cluster.logs_tail());
        acked
    }
}

/// A steady write load that records when each write was acknowledged, per partition, to
/// measure the longest time the table (or one partition) accepted no write.
pub struct GapLoad {
    writers: Vec<tokio::task::JoinHandle<()>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    /// (partition, acknowledged at, key).
    acks: Arc<Mutex<Vec<(u32, Instant, String)>>>,
    partitions: u32,
}

/// The longest stretches without an acknowledged write in a window.
#[derive(Debug, Clone, Copy)]
pub struct Gaps {
    /// Over the whole table: no partition acknowledged a write.
    pub table: Duration,
    /// The longest over single partitions.
    pub partition: Duration,
    pub writes: usize,
}

impl GapLoad {
    /// Starts `concurrency` writers on `table` (of `partitions` partitions), each writing new
    /// keys back to back with the client's default retries.
    pub async fn start(cluster: &Cluster, table: &str, partitions: u32, concurrency: usize) -> GapLoad {
        let t = cluster.client().table(table);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let writers = (0..concurrency)
            .map(|_| {
                let (t, stop, acks, next) = (t.clone(), stop.clone(), acks.clone(), next.clone());
                tokio::spawn(async move {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let key = format!("gap{i:07}");
                        if t.set(key.as_bytes(), b"s", b"v", 0).await.is_ok() {
                            let p = tandem_core::partition::partition_index(key.as_bytes(), partitions);
                            acks.lock().unwrap().push((p, Instant::now(), key));
                        }
                    }
                })
            })
            .collect();
        let load = GapLoad { writers, stop, acks, partitions };
        cluster
            .poll(Duration::from_secs(60), "the write load runs", || {
                let n = load.acks.lock().unwrap().len();
                async move { n >= 100 }
            })
            .await;
        load
    }

    /// The gaps between `from` and `to`, counting the edges of the window as acknowledgements.
    pub fn gaps(&self, from: Instant, to: Instant) -> Gaps {
        let (table, writes) = self.longest_gap(from, to, |_| true);
        let partition = self.partition_gaps(from, to).into_iter().max().unwrap_or_default();
        Gaps { table, partition, writes }
    }

    /// The longest gap of each partition between `from` and `to` (the window's edges count as
    /// acknowledgements), by partition index.
    pub fn partition_gaps(&self, from: Instant, to: Instant) -> Vec<Duration> {
        (0..self.partitions).map(|p| self.longest_gap(from, to, |q| q == p).0).collect()
    }

    /// The longest stretch between `from` and `to` without an acknowledged write to a partition
    /// `counts` takes (the window's edges count as acknowledgements), and how many there were.
    fn longest_gap(&self, from: Instant, to: Instant, counts: impl Fn(u32) -> bool) -> (Duration, usize) {
        let acks = self.acks.lock().unwrap();
        let mut times: Vec<Instant> = acks.iter().filter(|(p, at, _)| counts(*p) && *at >= from && *at <= to).map(|(_, at, _)| *at).collect();
        let writes = times.len();
        times.push(from);
        times.push(to);
        times.sort();
        (times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default(), writes)
    }

    /// Stops the writers; returns every acknowledged key.
    pub async fn finish(self) -> Vec<String> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in self.writers {
            w.await.unwrap();
        }
        self.acks.lock().unwrap().iter().map(|(_, _, k)| k.clone()).collect()
    }
}

pub async fn assert_all_read_back(cluster: &Cluster, table: &str, acked: &BTreeMap<String, String>) {
    let t = cluster.client().table(table);
    let mut missing = Vec::new();
    for (k, v) in acked {
        match t.get(k.as_bytes(), b"s").await {
            Ok(Some(got)) if got == v.as_bytes() => {}
            other => missing.push(format!("{k}: {other:?}")),
        }
    }
    assert!(missing.is_empty(), "{} acknowledged writes did not read back, e.g. {:?}\n{}", missing.len(), &missing[..missing.len().min(5)], cluster.logs_tail());
}


/// A PostgreSQL server of the test's own (initdb in a temporary directory, a free port), so a
/// test can stop and start it without disturbing the shared server on 5432. Runs the server as
/// the `postgres` user when the test runs as root (PostgreSQL refuses to run as root).
pub struct PrivatePostgres {
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    as_root: bool,
}

impl PrivatePostgres {
    pub fn start() -> PrivatePostgres {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL binaries under /usr/lib/postgresql (ops/test installs them)")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").exists())
            .collect();
        versions.sort();
        let bin = versions.pop().expect("an initdb under /usr/lib/postgresql/*/bin");
        let uid = Command::new("id").arg("-u").output().expect("id -u");
        let as_root = String::from_utf8_lossy(&uid.stdout).trim() == "0";
        let dir = tempfile::tempdir().expect("tempdir");
        if as_root {
            // The postgres user must reach and own its data directory.
            let status = Command::new("chown").arg("postgres").arg(dir.path()).status().expect("chown");
            assert!(status.success(), "chown postgres {}", dir.path().display());
        }
        let pg = PrivatePostgres { port: free_port(), dir, bin, as_root };
        let data = pg.data_dir();
        pg.run("initdb", &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"]);
        pg.start_server();
        pg
    }

    fn data_dir(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let program = self.bin.join(tool);
        let output = if self.as_root {
            Command::new("runuser").arg("-u").arg("postgres").arg("--").arg(&program).args(args).output()
        } else {
            Command::new(&program).args(args).output()
        }
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
        assert!(output.status.success(), "{} {args:?} failed: {}{}", program.display(), String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    }

    pub fn start_server(&self) {
        let options = format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", self.port, self.dir.path().display());
        let log = self.dir.path().join("postgres.log").display().to_string();
        self.run("pg_ctl", &["-D", &self.data_dir(), "-o", &options, "-l", &log, "-w", "start"]);
    }

    /// Stops the server (fast shutdown: sessions are cut, as when it crashes or restarts).
    pub fn stop_server(&self) {
        self.run("pg_ctl", &["-D", &self.data_dir(), "-m", "fast", "-w", "stop"]);
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if self.dir.path().join("data/postmaster.pid").exists() {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.stop_server()));
        }
    }
}

/// The whole answer (status line, headers, body) to `GET path` on 127.0.0.1:`port`.
pub fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(conn, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).expect("read the answer");
    answer
}

/// The value of the sample `name` (with its labels, as printed) in a scrape.
pub fn metric_value(scrape: &str, name: &str) -> Option<f64> {
    scrape.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Two sites `a` and `b` (2 replica servers each), table `table` (4 partitions) at both,
/// each site knowing the other, and the table duplicated both ways; also the id of a's
/// duplication to b.
pub async fn two_sites_duplicating(table: &str) -> (Cluster, Cluster, u32) {
    let a = Cluster::start_site("a", 1, 2).await;
    let b = Cluster::start_site("b", 2, 2).await;
    a.create_table(table, 4, 2).await;
    b.create_table(table, 4, 2).await;
    let (ca, cb) = (a.client(), b.client());
    ca.site_add("b", &[b.meta_addr.clone()]).await.unwrap();
    cb.site_add("a", &[a.meta_addr.clone()]).await.unwrap();
    let add = |site: &str| tandem_proto::v1::DupAddRequest { table: table.into(), remote_site: site.into(), fail_mode: String::new(), sync_existing: false };
    let dup_ab = ca.dup_add(add("b")).await.unwrap().dup.unwrap();
    cb.dup_add(add("a")).await.unwrap();
    (a, b, dup_ab.id)
}

/// Every record of a table, with its value: `(hash key, sort key) -> value`.
pub async fn everything(cluster: &Cluster, table: &str) -> BTreeMap<(Vec<u8>, Vec<u8>), Vec<u8>> {
    let t = cluster.client().table(table);
    let mut all = BTreeMap::new();
    let mut token = None;
    loop {
        let page = t.full_scan(token.as_deref(), 1000).await.unwrap();
        for (hk, sk, v) in page.records {
            all.insert((hk, sk), v);
        }
        match page.next {
            Some(next) => token = Some(next),
            None => return all,
        }
    }
}
