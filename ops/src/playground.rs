//! `tandem playground`: a whole site in one process — a meta server on SQLite and replica
//! servers on 127.0.0.1 — with data kept across restarts under `--data-dir`.

use crate::cli::PlaygroundArgs;
use crate::config::Config;
use crate::{CmdResult, Failure};
use std::time::{Duration, Instant};
use tokio::sync::watch;

pub async fn run(args: PlaygroundArgs) -> CmdResult {
    if args.sites != 1 {
        return Err(Failure::new(2, "--sites 2 needs duplication between sites, which is not built yet; use --sites 1"));
    }
    if args.replicas == 0 || args.replicas > 9 {
        return Err(Failure::new(2, "--replicas must be 1 to 9"));
    }
    if args.fresh && args.data_dir.exists() {
        std::fs::remove_dir_all(&args.data_dir).map_err(|e| Failure::new(1, format!("remove {}: {e}", args.data_dir.display())))?;
    }
    std::fs::create_dir_all(&args.data_dir).map_err(|e| Failure::new(1, format!("create {}: {e}", args.data_dir.display())))?;
    let data_dir = std::fs::canonicalize(&args.data_dir).map_err(|e| Failure::new(1, e.to_string()))?;
    let meta_addr = format!("127.0.0.1:{}", args.base_port);
    // Embedded defaults, with TANDEM_<SECTION>_<KEY> variables applied (addresses and data
    // directories are the playground's own).
    let mut config = Config::load(None)?;
    config.meta.listen = meta_addr.clone();
    config.meta.store = format!("sqlite://{}", data_dir.join("meta.db").display());
    config.replica.meta = vec![meta_addr.clone()];
    config.validate_site()?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let meta_opts = config.meta_options()?;
    let rx = stop_rx.clone();
    tasks.push(tokio::spawn(async move { tandem_meta::server::run(meta_opts, rx).await.map_err(|e| format!("meta server: {e:#}")) }));
    let mut replica_addrs = Vec::new();
    for i in 1..=args.replicas {
        let mut c = config.clone();
        let port = args.base_port as u32 + 199 + i as u32;
        let port = u16::try_from(port).map_err(|_| Failure::new(2, "--base-port too high"))?;
        c.replica.listen = format!("127.0.0.1:{port}");
        c.replica.data_dir = data_dir.join(format!("replica-{i}"));
        let opts = c.replica_options()?;
        replica_addrs.push(c.replica.listen.clone());
        let rx = stop_rx.clone();
        tasks.push(tokio::spawn(async move { tandem_replica::run(opts, rx).await.map_err(|e| format!("replica server {i}: {e:#}")) }));
    }

    let client = tandem_client::Client::new(&[meta_addr.clone()], Default::default())?;
    let ready = wait_ready(&client, args.replicas as u32, &tasks).await;
    if let Err(e) = ready {
        let _ = stop_tx.send(true);
        return Err(e);
    }
    outln!("Tandem playground is up ({} replica servers, data in {})", args.replicas, data_dir.display());
    outln!("  meta server:     {meta_addr}");
    for (i, a) in replica_addrs.iter().enumerate() {
        outln!("  replica server {}: {a}", i + 1);
    }
    outln!();
    outln!("Try, in another terminal (TANDEM_META={meta_addr} is the default):");
    outln!("  tandem set demo user1 name Alice");
    outln!("  tandem get demo user1 name");
    outln!("  tandem table show demo");
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

/// Polls the meta until every replica server is alive, a `demo` table exists and every
/// partition is healthy.
async fn wait_ready(client: &tandem_client::Client, replicas: u32, tasks: &[tokio::task::JoinHandle<Result<(), String>>]) -> CmdResult {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut created = false;
    loop {
        if tasks.iter().any(|t| t.is_finished()) {
            return Err(Failure::new(1, "a server stopped during start-up (see the messages above; is a port taken? use --base-port)"));
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
