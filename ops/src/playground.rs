//! `tandem playground`: two sites in one process — each a meta server on SQLite and replica
//! servers on 127.0.0.1, with table `demo` duplicated both ways — or one (`--sites 1`), with data
//! kept across restarts under `--data-dir`.

use crate::cli::PlaygroundArgs;
use crate::config::Config;
use crate::{CmdResult, Failure};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// One site of the playground, started.
struct Site {
    name: String,
    meta_addr: String,
    meta_metrics: String,
    replica_addrs: Vec<String>,
    replica_metrics: Vec<String>,
    backup_target: String,
    client: tandem_client::Client,
}

/// The sites of a two-site playground: name, cluster id, where its data lives.
const SITES: [(&str, u8); 2] = [("site-a", 1), ("site-b", 2)];
/// Each site's servers get a smaller share of memory than a lone server's defaults, so that six
/// of them in one process stay light (`replica.block_cache_bytes`, `memtable_bytes_max`,
/// `log_cache_bytes_max`).
const PLAYGROUND_BLOCK_CACHE: &str = "16MiB";
const PLAYGROUND_MEMTABLES: &str = "32MiB";
const PLAYGROUND_LOG_CACHE: &str = "16MiB";

pub async fn run(args: PlaygroundArgs) -> CmdResult {
    if args.sites == 0 || args.sites > 2 {
        return Err(Failure::new(2, "--sites must be 1 (one site) or 2 (two sites duplicating to each other)"));
    }
    // --site: one of the two sites, in this process; the other runs elsewhere.
    let only = match args.site.as_deref() {
        None => None,
        Some(name) => match SITES.iter().position(|(n, _)| *n == name) {
            Some(i) => Some(i),
            None => return Err(Failure::new(2, format!("--site must be site-a or site-b, not {name:?}"))),
        },
    };
    let args = PlaygroundArgs { sites: if only.is_some() { 2 } else { args.sites }, ..args };
    if args.replicas == 0 || args.replicas > 9 {
        return Err(Failure::new(2, "--replicas must be 1 to 9"));
    }
    if args.fresh && args.data_dir.exists() {
        std::fs::remove_dir_all(&args.data_dir).map_err(|e| Failure::new(1, format!("remove {}: {e}", args.data_dir.display())))?;
    }
    std::fs::create_dir_all(&args.data_dir).map_err(|e| Failure::new(1, format!("create {}: {e}", args.data_dir.display())))?;
    let data_dir = std::fs::canonicalize(&args.data_dir).map_err(|e| Failure::new(1, e.to_string()))?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut sites = Vec::new();
    for s in (0..args.sites as usize).filter(|s| only.is_none_or(|o| o == *s)) {
        // One site keeps today's layout (data directly under --data-dir); two get a directory each.
        let (name, cluster_id, dir) = if args.sites == 1 {
            ("local", 1, data_dir.clone())
        } else {
            let (name, id) = SITES[s];
            (name, id, data_dir.join(name))
        };
        std::fs::create_dir_all(&dir).map_err(|e| Failure::new(1, format!("create {}: {e}", dir.display())))?;
        let site = start_site(&args, s, name, cluster_id, &dir, &stop_rx, &mut tasks)?;
        sites.push(site);
    }
    for site in &sites {
        if let Err(e) = wait_ready(&site.client, args.replicas as u32, &mut tasks).await {
            let _ = stop_tx.send(true);
            return Err(e);
        }
    }
    let linked = match (&sites[..], only) {
        ([a, b], _) => link(a, &b.name, &b.meta_addr).await.and(link(b, &a.name, &a.meta_addr).await),
        ([a], Some(o)) => {
            let other = 1 - o;
            link(a, SITES[other].0, &format!("127.0.0.1:{}", args.base_port as u32 + other as u32)).await
        }
        _ => Ok(()),
    };
    if let Err(e) = linked {
        let _ = stop_tx.send(true);
        return Err(e);
    }

    let (a, b) = (&sites[0], sites.get(1));
    let what = if b.is_some() { "two sites, each" } else { "one site:" };
    outln!("Tandem playground is up ({what} 1 meta server + {} replica servers; data in {})", args.replicas, data_dir.display());
    for site in &sites {
        outln!("  {}: meta server {}, replica servers {}", site.name, site.meta_addr, site.replica_addrs.join(" "));
        let metrics: Vec<String> = std::iter::once(&site.meta_metrics).chain(&site.replica_metrics).map(|a| format!("http://{a}/metrics")).collect();
        outln!("    metrics: {}", metrics.join(" "));
    }
    if let Some(o) = only {
        let (other, port) = (SITES[1 - o].0, args.base_port as u32 + 1 - o as u32);
        outln!("  demo is duplicated to {other} at 127.0.0.1:{port}: start it with tandem playground --site {other} --base-port {}", args.base_port);
    }
    outln!();
    outln!("Try, in another terminal (TANDEM_META={} is the default):", a.meta_addr);
    outln!("  tandem set demo user1 name Alice");
    match b {
        Some(b) => {
            outln!("  tandem get demo user1 name --meta {}      # read it at {}: demo is duplicated both ways", b.meta_addr, b.name);
            outln!("  tandem set demo user2 name Bob --meta {}  # write at {}, read at {}:", b.meta_addr, b.name, a.name);
            outln!("  tandem get demo user2 name");
            outln!("  tandem dup list demo                        # per partition: confirmed decree, lag");
        }
        None => outln!("  tandem get demo user1 name"),
    }
    outln!("  tandem table show demo");
    outln!("  tandem backup now demo --wait              # to {}", a.backup_target);
    outln!("  tandem status");
    outln!("  tandem bench --table demo --workload a --duration 10s");
    outln!("Ctrl-C stops it; the data stays in {} (--fresh starts over).", data_dir.display());
    if args.exit_when_ready {
        let _ = stop_tx.send(true);
    } else {
        let signal = crate::shutdown_on_signal();
        tandem_runtime::stopped(signal).await;
        outln!("stopping…");
        let _ = stop_tx.send(true);
    }
    for t in tasks {
        if let Ok(Err(e)) = t.await {
            eprintln!("error: {e}");
        }
    }
    Ok(())
}

/// Starts site number `index`: its meta on SQLite at base_port + index (its /metrics at
/// base_port + 100 + index), its replica servers at base_port + 200 + 100 × index, + 1, …
/// (their /metrics at base_port + 250 + 100 × index, + 1, …).
#[allow(clippy::too_many_arguments)]
fn start_site(
    args: &PlaygroundArgs,
    index: usize,
    name: &str,
    cluster_id: u8,
    dir: &std::path::Path,
    stop_rx: &watch::Receiver<bool>,
    tasks: &mut Vec<tokio::task::JoinHandle<Result<(), String>>>,
) -> Result<Site, Failure> {
    let port = |offset: u32| {
        u16::try_from(args.base_port as u32 + offset).map_err(|_| Failure::new(2, "--base-port too high: the playground uses it and the ports up to 400 above it"))
    };
    let meta_addr = format!("127.0.0.1:{}", port(index as u32)?);
    let meta_metrics = format!("127.0.0.1:{}", port(100 + index as u32)?);
    // Embedded defaults, with TANDEM_<SECTION>_<KEY> variables applied (addresses, data
    // directories and the site's identity are the playground's own).
    let mut config = Config::load(None)?;
    config.meta.listen = meta_addr.clone();
    // Every server serves /metrics on its own port (a TANDEM_*_METRICS_LISTEN variable would
    // give them all one: the playground's addresses are its own).
    config.meta.metrics_listen = meta_metrics.clone();
    config.meta.store = format!("sqlite://{}", dir.join("meta.db").display());
    config.meta.site = name.to_string();
    // Backups go to a directory of the playground unless TANDEM_META_BACKUP_TARGET says where:
    // `tandem backup now demo` works with nothing else installed.
    if config.meta.backup_target.is_empty() {
        config.meta.backup_target = format!("file://{}", dir.join("backups").display());
    }
    config.replica.meta = vec![meta_addr.clone()];
    config.replica.cluster_id = cluster_id;
    if args.sites > 1 {
        let light = [("block_cache_bytes", PLAYGROUND_BLOCK_CACHE), ("memtable_bytes_max", PLAYGROUND_MEMTABLES), ("log_cache_bytes_max", PLAYGROUND_LOG_CACHE)];
        for (key, value) in light {
            // A TANDEM_REPLICA_* variable the user set wins.
            if std::env::var(format!("TANDEM_REPLICA_{}", key.to_uppercase())).is_err() {
                config.set("replica", key, value)?;
            }
        }
    }
    config.validate_site()?;

    let meta_opts = config.meta_options()?;
    let rx = stop_rx.clone();
    let who = name.to_string();
    tasks.push(tokio::spawn(async move { tandem_meta::server::run(meta_opts, rx).await.map_err(|e| format!("{who} meta server: {e:#}")) }));
    let mut replica_addrs = Vec::new();
    let mut replica_metrics = Vec::new();
    for i in 1..=args.replicas {
        let mut c = config.clone();
        c.replica.listen = format!("127.0.0.1:{}", port(199 + 100 * index as u32 + i as u32)?);
        c.replica.metrics_listen = format!("127.0.0.1:{}", port(249 + 100 * index as u32 + i as u32)?);
        replica_metrics.push(c.replica.metrics_listen.clone());
        c.replica.data_dir = dir.join(format!("replica-{i}"));
        let mut opts = c.replica_options()?;
        if c.replica.max_replicas == 0 {
            // The servers of this process share its open-files limit.
            opts.host.replicas_max = (opts.host.replicas_max / (args.replicas as usize * args.sites as usize)).max(1);
        }
        replica_addrs.push(c.replica.listen.clone());
        let rx = stop_rx.clone();
        let who = name.to_string();
        tasks.push(tokio::spawn(async move { tandem_replica::run(opts, rx).await.map_err(|e| format!("{who} replica server {i}: {e:#}")) }));
    }
    let client = tandem_client::Client::new(std::slice::from_ref(&meta_addr), Default::default())?;
    Ok(Site { name: name.to_string(), meta_addr, meta_metrics, replica_addrs, replica_metrics, backup_target: config.meta.backup_target.clone(), client })
}

/// Site `from` knows `to` and duplicates `demo` to it (kept as they are on a restart).
async fn link(from: &Site, to_name: &str, to_meta: &str) -> CmdResult {
    use tandem_client::ClientError::AlreadyExists;
    match from.client.site_add(to_name, &[to_meta.to_string()]).await {
        Ok(_) | Err(AlreadyExists(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let req = tandem_proto::v1::DupAddRequest { table: "demo".into(), remote_site: to_name.to_string(), fail_mode: String::new(), sync_existing: false };
    match from.client.dup_add(req).await {
        Ok(_) | Err(AlreadyExists(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Polls the meta until every replica server is alive, a `demo` table exists and every
/// partition is healthy.
async fn wait_ready(client: &tandem_client::Client, replicas: u32, tasks: &mut Vec<tokio::task::JoinHandle<Result<(), String>>>) -> CmdResult {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut created = false;
    loop {
        if let Some(i) = tasks.iter().position(|t| t.is_finished()) {
            // It is finished: its answer is there at once, and says why.
            let why = match tasks.remove(i).await {
                Ok(Err(e)) => e,
                Ok(Ok(())) => "a server exited".to_string(),
                Err(e) => format!("a server's task failed: {e}"),
            };
            return Err(Failure::new(1, format!("a server stopped during start-up: {why} (is a port taken? use --base-port)")));
        }
        if let Ok(s) = client.cluster_status().await
            && s.nodes_alive >= replicas
        {
            if !created {
                match client.create_table("demo", 8, replicas.min(3), "playground").await {
                    Ok(_) | Err(tandem_client::ClientError::AlreadyExists(_)) => created = true,
                    Err(e) => tracing::info!("creating demo table: {e}"),
                }
            } else if s.degraded == 0 && s.unavailable == 0 && probe(client).await {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(Failure::new(3, "the playground did not become healthy within 60s"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A write and a read through every partition's primary.
async fn probe(client: &tandem_client::Client) -> bool {
    let t = client.table("demo");
    for i in 0..32 {
        let key = format!("_probe{i}");
        if t.set(key.as_bytes(), b"", b"ok", 60).await.is_err() || t.get(key.as_bytes(), b"").await.ok().flatten().is_none() {
            return false;
        }
    }
    true
}
