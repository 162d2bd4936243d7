//! A real cluster of `tandem` processes on 127.0.0.1 for tests: spawn, kill -9, restart, and
//! poll its state with deadlines.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tandem_client::{Client, ClientOptions};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tandem"))
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
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
    pub replicas: Vec<Server>,
    pub pg: Option<PgDatabase>,
    pub replica_extra: Vec<String>,
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
        let (store_url, pg) = match store {
            Store::Sqlite => (format!("sqlite://{}", dir.path().join("meta.db").display()), None),
            Store::Postgres(db) => (db.url(), Some(db)),
        };
        let meta_addr = format!("127.0.0.1:{}", free_port());
        let meta = Server { addr: meta_addr.clone(), data_dir: dir.path().join("meta"), child: None, log: dir.path().join("meta.log"), extra: vec![] };
        let mut c = Cluster {
            meta_addr,
            store_url,
            meta,
            replicas: Vec::new(),
            pg,
            replica_extra: replica_extra.iter().map(|s| s.to_string()).collect(),
            dir,
        };
        c.start_meta();
        for _ in 0..replicas {
            c.add_replica();
        }
        c.wait_nodes_alive(replicas as u32, Duration::from_secs(30)).await;
        c
    }

    pub fn start_meta(&mut self) {
        let args = vec!["meta".into(), "start".into(), "--listen".into(), self.meta_addr.clone(), "--store".into(), self.store_url.clone()];
        self.meta.child = Some(spawn(&args, &self.meta.log));
    }

    pub fn add_replica(&mut self) -> usize {
        let i = self.replicas.len();
        let addr = format!("127.0.0.1:{}", free_port());
        let data_dir = self.dir.path().join(format!("replica-{i}"));
        let log = self.dir.path().join(format!("replica-{i}.log"));
        self.replicas.push(Server { addr, data_dir, child: None, log, extra: self.replica_extra.clone() });
        self.start_replica(i);
        i
    }

    pub fn start_replica(&mut self, i: usize) {
        let s = &mut self.replicas[i];
        let mut args: Vec<String> = vec![
            "replica".into(),
            "start".into(),
            "--listen".into(),
            s.addr.clone(),
            "--meta".into(),
            self.meta_addr.clone(),
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

    pub fn replica_index(&self, addr: &str) -> usize {
        self.replicas.iter().position(|s| s.addr == addr).unwrap_or_else(|| panic!("no replica server {addr}"))
    }

    pub fn client(&self) -> Client {
        Client::new(&[self.meta_addr.clone()], ClientOptions { rpc_timeout: Duration::from_secs(3), request_timeout: Duration::from_secs(30) })
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
        for s in std::iter::once(&self.meta).chain(self.replicas.iter()) {
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
        for s in self.replicas.iter_mut().chain(std::iter::once(&mut self.meta)) {
            if let Some(mut c) = s.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
