//! `tandem meta start` and `tandem replica start`.

use crate::cli::{MetaCommand, ReplicaCommand, ServerArgs};
use crate::config::Config;
use crate::{CmdResult, Failure};

fn load(server: &ServerArgs, section: &str) -> Result<Config, Failure> {
    let mut c = Config::load(server.config.as_deref())?;
    if let Some(l) = &server.listen {
        c.set(section, "listen", l)?;
    }
    if let Some(m) = &server.metrics_listen {
        c.set(section, "metrics_listen", m)?;
    }
    Ok(c)
}

/// Prints `[section]` of the effective configuration.
fn print_section(c: &Config, section: &str) -> CmdResult {
    let value = toml::Value::try_from(c).map_err(|e| Failure::new(1, format!("serialize configuration: {e}")))?;
    let mut out = toml::map::Map::new();
    if let Some(s) = value.get(section) {
        out.insert(section.to_string(), s.clone());
    }
    out!("{}", toml::to_string(&out).map_err(|e| Failure::new(1, format!("serialize configuration: {e}")))?);
    Ok(())
}

pub async fn meta(command: MetaCommand) -> CmdResult {
    let MetaCommand::Start { server, store, data_dir, grace_period, advertise, lease_ttl, site, peer_sites } = command;
    let mut c = load(&server, "meta")?;
    if let Some(dir) = data_dir {
        std::fs::create_dir_all(&dir).map_err(|e| Failure::new(1, format!("create {}: {e}", dir.display())))?;
        c.meta.store = format!("sqlite://{}", dir.join("meta.db").display());
    }
    if let Some(s) = store {
        c.meta.store = s;
    }
    if let Some(g) = grace_period {
        c.meta.grace_period = g;
    }
    if let Some(a) = advertise {
        c.meta.advertise = a;
    }
    if let Some(t) = lease_ttl {
        c.meta.lease_ttl = t;
    }
    if let Some(s) = site {
        c.meta.site = s;
    }
    if let Some(p) = peer_sites {
        c.set("meta", "peer_sites", &p)?;
    }
    if server.print_config {
        return print_section(&c, "meta");
    }
    let opts = c.meta_options()?;
    tandem_meta::server::run(opts, crate::shutdown_on_signal()).await.map_err(|e| Failure::new(crate::EXIT_ERROR, e.to_string()))?;
    Ok(())
}

pub async fn replica(command: ReplicaCommand) -> CmdResult {
    let ReplicaCommand::Start { server, meta, data_dir, advertise, lease_period, prepare_timeout, log_sync, log_cache_bytes_max, inactive_replica_gc_delay } = command;
    let mut c = load(&server, "replica")?;
    if let Some(m) = meta {
        c.set("replica", "meta", &m)?;
    }
    if let Some(d) = data_dir {
        c.replica.data_dir = d;
    }
    if let Some(a) = advertise {
        c.replica.advertise = a;
    }
    if let Some(l) = lease_period {
        c.replica.lease_period = l;
    }
    if let Some(p) = prepare_timeout {
        c.replica.prepare_timeout = p;
    }
    if let Some(s) = log_sync {
        c.set("replica", "log_sync", &s)?;
    }
    if let Some(b) = log_cache_bytes_max {
        c.set("replica", "log_cache_bytes_max", &b)?;
    }
    if let Some(d) = inactive_replica_gc_delay {
        c.replica.inactive_replica_gc_delay = d;
    }
    if server.print_config {
        return print_section(&c, "replica");
    }
    let opts = c.replica_options()?;
    tandem_replica::run(opts, crate::shutdown_on_signal()).await.map_err(|e| Failure::new(crate::EXIT_ERROR, e.to_string()))?;
    Ok(())
}
