//! Server configuration: defaults, then a TOML file, then `TANDEM_<SECTION>_<KEY>` environment
//! variables, then command-line flags (flags win). Typed with serde, human units ("6s",
//! "64MiB"), validated as a whole (`validate`).

use anyhow::{bail, Context, Result};
use bytesize::ByteSize;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetaSection {
    /// gRPC address of the meta server.
    pub listen: String,
    /// `sqlite://PATH` (embedded, one meta server) or `postgres://USER@HOST/DB`.
    pub store: String,
    /// Prometheus `/metrics` HTTP address; empty disables it.
    pub metrics_listen: String,
    /// A replica server silent this long is declared dead. Must exceed every lease_period.
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
    /// A replica server whose port refuses connections is declared dead at once (its process is
    /// gone). Turn off only where a firewall answers for live servers with refusals (REJECT).
    pub refused_connection_means_dead: bool,
    /// A replica server's port is probed once its beacons are this late.
    #[serde(with = "humantime_serde")]
    pub probe_after_silence: Duration,
    /// How long a dropped table can be recalled before its data is deleted.
    #[serde(with = "humantime_serde")]
    pub recall_window: Duration,
    #[serde(with = "humantime_serde")]
    pub tick_interval: Duration,
    /// Address other meta servers send clients to when this one leads ("" = listen).
    pub advertise: String,
    /// The leader lease's time to live (see docs/meta.md): a standby takes over this long after
    /// the leader went silent, and a leader cut off from the store keeps serving this long.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// This site's name.
    pub site: String,
    /// Sites tables may be duplicated to (`tandem policy set T --dup SITE`).
    pub peer_sites: Vec<String>,
    /// Where level-3 policies back up unless `--backup-target` says otherwise ("" = none).
    pub backup_target: String,
    /// With a SQLite store: below the smaller of these free under its directory, requests that
    /// add metadata are refused (reads, beacons and configuration changes go on).
    pub disk_reserve: ByteSize,
    pub disk_reserve_percent: u64,
}

impl Default for MetaSection {
    /// The state machine's own defaults (`tandem_meta_core::MetaOptions`), so each value is
    /// written once.
    fn default() -> Self {
        let m = tandem_meta_core::MetaOptions::default();
        let ms = Duration::from_millis;
        MetaSection {
            listen: "127.0.0.1:34601".into(),
            store: "sqlite://./tandem-data/meta.db".into(),
            metrics_listen: String::new(),
            grace_period: ms(m.grace_period_ms),
            refused_connection_means_dead: m.refused_connection_means_dead,
            probe_after_silence: ms(m.probe_after_silence_ms),
            recall_window: ms(m.recall_window_ms),
            tick_interval: Duration::from_millis(500),
            advertise: String::new(),
            lease_ttl: ms(m.lease_ttl_ms),
            site: m.site,
            peer_sites: m.peer_sites,
            backup_target: m.backup_target,
            disk_reserve: ByteSize::b(m.disk_reserve_bytes),
            disk_reserve_percent: m.disk_reserve_percent,
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogSync {
    /// fsync the mutation log before acking each batch (group commit).
    EveryBatch,
    /// Never fsync; durability relies on replication.
    None,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicaSection {
    pub listen: String,
    /// Address others reach this server at; empty = `listen`.
    pub advertise: String,
    /// Meta server addresses.
    pub meta: Vec<String>,
    pub data_dir: PathBuf,
    pub metrics_listen: String,
    #[serde(with = "humantime_serde")]
    pub beacon_interval: Duration,
    /// Serving as primary is allowed this long after a beacon the meta acked was sent.
    #[serde(with = "humantime_serde")]
    pub lease_period: Duration,
    /// A secondary that does not ack a prepare within this is removed from the partition.
    #[serde(with = "humantime_serde")]
    pub prepare_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub group_check_interval: Duration,
    pub log_sync: LogSync,
    /// Under load, a group of log appends gathers until this long after the previous fsync.
    #[serde(with = "humantime_serde")]
    pub log_group_commit_window: Duration,
    pub log_segment_bytes_max: ByteSize,
    /// Committed mutations kept in memory for catch-up by log, by all of this server's
    /// replicas together (each gets an equal share).
    pub log_cache_bytes_max: ByteSize,
    /// The block cache every replica's RocksDB shares.
    pub block_cache_bytes: ByteSize,
    /// The memtables of every replica's RocksDB together.
    pub memtable_bytes_max: ByteSize,
    pub prepare_batch_bytes_max: ByteSize,
    pub max_value_bytes: ByteSize,
    #[serde(with = "humantime_serde")]
    pub log_gc_interval: Duration,
    /// The mutation log may keep this much before the engines holding its oldest segments are
    /// flushed.
    pub log_retain_bytes: ByteSize,
    /// A replica its partition's configuration has left out this long is deleted.
    #[serde(with = "humantime_serde")]
    pub inactive_replica_gc_delay: Duration,
    /// This site's cluster id (1..=127), stamped into every timetag.
    pub cluster_id: u8,
    /// Writes other than deletes are refused while the data or log directory has less free
    /// space than the smaller of these: bytes, and a percentage of its filesystem.
    pub disk_reserve: ByteSize,
    pub disk_reserve_percent: u64,
    /// Replicas this server hosts at most; 0: as many as its open-files limit allows.
    pub max_replicas: u32,
}

impl Default for ReplicaSection {
    /// The server's own defaults (`ReplicaServerOptions`, `HostOptions`, `LogOptions`), so each
    /// value is written once.
    fn default() -> Self {
        let listen: SocketAddr = "127.0.0.1:34801".parse().expect("a socket address");
        let o = tandem_replica::ReplicaServerOptions::with_defaults(listen, vec!["127.0.0.1:34601".into()], "./tandem-data/replica".into());
        let ms = Duration::from_millis;
        ReplicaSection {
            listen: listen.to_string(),
            advertise: String::new(),
            meta: o.meta,
            data_dir: o.data_dir,
            metrics_listen: String::new(),
            beacon_interval: ms(o.host.beacon_interval_ms),
            lease_period: ms(o.host.lease_period_ms),
            prepare_timeout: ms(o.host.replica.prepare_timeout_ms),
            group_check_interval: ms(o.host.replica.group_check_interval_ms),
            log_sync: match o.log.sync {
                tandem_storage::SyncPolicy::EveryBatch => LogSync::EveryBatch,
                tandem_storage::SyncPolicy::None => LogSync::None,
            },
            log_group_commit_window: o.log.group_commit_window,
            log_segment_bytes_max: ByteSize::b(o.log.segment_bytes_max),
            log_cache_bytes_max: ByteSize::b(o.host.log_cache_bytes_max as u64),
            block_cache_bytes: ByteSize::b(o.block_cache_bytes as u64),
            memtable_bytes_max: ByteSize::b(o.memtable_bytes_max as u64),
            prepare_batch_bytes_max: ByteSize::b(o.host.replica.prepare_batch_bytes_max as u64),
            max_value_bytes: ByteSize::b(o.host.replica.limits.value_bytes_max as u64),
            log_gc_interval: ms(o.host.log_gc_interval_ms),
            log_retain_bytes: ByteSize::b(o.host.log_retain_bytes),
            inactive_replica_gc_delay: ms(o.host.inactive_replica_gc_delay_ms),
            cluster_id: o.host.replica.cluster_id,
            disk_reserve: ByteSize::b(o.host.disk_reserve_bytes),
            disk_reserve_percent: o.host.disk_reserve_percent,
            max_replicas: 0,
        }
    }
}

/// Backups (docs/backup.md): how meta and replica servers reach S3-compatible targets, and
/// how much of the cluster a backup may take.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BackupSection {
    /// `http(s)://HOST:PORT` of an S3-compatible server ("" = `AWS_ENDPOINT_URL`, else AWS).
    pub s3_endpoint: String,
    /// "" = `AWS_REGION`.
    pub s3_region: String,
    /// "" = `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`.
    pub s3_access_key_id: String,
    pub s3_secret_access_key: String,
    /// Bytes per second one replica server uploads at most, over all its partitions ("0B" =
    /// unlimited): foreground traffic keeps the disk and the network.
    pub upload_rate: ByteSize,
    /// Partition uploads one replica server runs at once; the rest wait their turn.
    pub uploads_max: usize,
    /// Backups the meta runs at once, at most.
    pub jobs_max: usize,
}

impl Default for BackupSection {
    fn default() -> Self {
        let o = tandem_replica::ReplicaServerOptions::with_defaults("127.0.0.1:1".parse().expect("a socket address"), vec![], "./x".into());
        BackupSection {
            s3_endpoint: String::new(),
            s3_region: String::new(),
            s3_access_key_id: String::new(),
            s3_secret_access_key: String::new(),
            upload_rate: ByteSize::b(o.backup_upload_bytes_per_sec),
            uploads_max: o.host.backup_uploads_max,
            jobs_max: tandem_meta_core::MetaOptions::default().backup_jobs_max,
        }
    }
}

impl BackupSection {
    pub fn s3(&self) -> tandem_backup_store::S3Options {
        let set = |s: &str| (!s.is_empty()).then(|| s.to_string());
        tandem_backup_store::S3Options {
            endpoint: set(&self.s3_endpoint),
            region: set(&self.s3_region),
            access_key_id: set(&self.s3_access_key_id),
            secret_access_key: set(&self.s3_secret_access_key),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub meta: MetaSection,
    pub replica: ReplicaSection,
    pub backup: BackupSection,
}

pub const DEFAULT_CONFIG: &str = r#"# Tandem server configuration. Every key is optional; shown are the defaults.
# Precedence: this file < TANDEM_<SECTION>_<KEY> environment variables (e.g.
# TANDEM_REPLICA_LEASE_PERIOD=6s) < command-line flags.

[meta]
# gRPC address of the meta server.
listen = "127.0.0.1:34601"
# Metadata store: sqlite://PATH (embedded, one meta server) or postgres://USER@HOST/DATABASE.
store = "sqlite://./tandem-data/meta.db"
# Prometheus /metrics HTTP address ("" = off).
metrics_listen = ""
# A replica server without a beacon for this long is declared dead and replaced.
# Must be longer than every replica server's lease_period.
grace_period = "8s"
# A replica server whose port refuses connections is declared dead at once: its process is
# gone, and with it its lease (docs/meta.md, "A crashed server"). Turn off only where a firewall
# between the meta and the servers answers for live ones with refusals (REJECT rules).
refused_connection_means_dead = true
# A replica server's port is probed once its beacons are this late (and when its watch stream
# to the meta breaks).
probe_after_silence = "2s"
# A dropped table can be recalled for this long; then its data is deleted.
recall_window = "7days"
# How often failure detection and cure run.
tick_interval = "500ms"
# Address other meta servers send clients to when this one leads ("" = listen).
advertise = ""
# Several meta servers may share one PostgreSQL store; one leads through a lease row. A standby
# takes over this long after the leader went silent, and a leader cut off from the store keeps
# serving (the data path with it) this long. Renewed every sixth of it.
lease_ttl = "30s"
# This site's name, and the sites tables may be duplicated to.
site = "local"
peer_sites = []
# Where level-3 policies back up unless --backup-target says otherwise ("" = none).
backup_target = ""
# With a SQLite store: while its directory has less free space than the smaller of these,
# requests that add metadata (tables, policies, sites, duplications, backups) are refused;
# reads, beacons and configuration changes go on.
disk_reserve = "2GiB"
disk_reserve_percent = 5

[replica]
listen = "127.0.0.1:34801"
# Address peers and clients use to reach this server ("" = listen).
advertise = ""
# Meta server addresses.
meta = ["127.0.0.1:34601"]
data_dir = "./tandem-data/replica"
metrics_listen = ""
# Beacons to the meta; each acked beacon grants a lease of lease_period from when it was sent.
beacon_interval = "1s"
lease_period = "6s"
# A secondary that does not ack a prepare within this is removed from the partition.
prepare_timeout = "5s"
# An idle primary sends its commit point to the secondaries this often.
group_check_interval = "1s"
# every_batch: fsync the mutation log before acking (one fsync serves many writes);
# none: never fsync, durability relies on replication.
log_sync = "every_batch"
# Group commit: while appends arrive together, one fsync waits until this long after the
# previous one, so it serves more of them (an idle log and a lone writer sync at once).
# "0s" syncs every group as soon as it is taken.
log_group_commit_window = "1ms"
log_segment_bytes_max = "64MiB"
# Memory, for all the replicas of this server together (it does not grow with their number):
# committed mutations kept for catch-up by log, an equal share per replica (a learner further
# behind than its share gets a checkpoint); RocksDB's block cache; RocksDB's memtables (past
# this, the replica being written flushes).
log_cache_bytes_max = "256MiB"
block_cache_bytes = "128MiB"
memtable_bytes_max = "256MiB"
prepare_batch_bytes_max = "4MiB"
# Largest value accepted.
max_value_bytes = "1MiB"
# How often the mutation log drops what every replica's RocksDB holds in its files. RocksDB
# flushes the replicas being written on its own; past log_retain_bytes, the replicas holding the
# log's oldest segments are flushed too (all of them that hold it while a disk is short). A
# restart replays at most about this much.
log_gc_interval = "10s"
log_retain_bytes = "1GiB"
# A replica this server holds but its partition's configuration left out (a replaced server
# that came back, a lowered replica count) is deleted after this long, while the partition has a
# primary; until then it keeps its disk space and its share of the mutation log.
inactive_replica_gc_delay = "10m"
# This site's id (1..=127), stamped into every write's timetag.
cluster_id = 1
# While the data or log directory has less free space than the smaller of these, the server's
# primaries refuse writes other than deletes ("disk almost full"), reads go on, and writes are
# taken again, without a restart, once there is a quarter more than the reserve.
disk_reserve = "2GiB"
disk_reserve_percent = 5
# Replicas this server hosts at most. 0: as many as its open-files limit allows, each replica's
# RocksDB holding up to 16 files (10 SST files open for reads, its LOCK, LOG, MANIFEST and WAL,
# two being written) after an eighth of the limit is kept for connections and the log. The
# server raises its soft limit to the hard one at start; past the most it refuses new replicas,
# and the meta places them elsewhere or refuses a table that does not fit.
max_replicas = 0

[backup]
# S3-compatible targets (s3://BUCKET/PREFIX): the server's address and credentials. Empty keys
# come from the usual AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY.
# Requests are path-style; an http:// endpoint is allowed (MinIO and the like, locally).
s3_endpoint = ""
s3_region = ""
s3_access_key_id = ""
s3_secret_access_key = ""
# What one replica server uploads per second at most, over all its partitions ("0B" = no limit).
upload_rate = "64MiB"
# Partition uploads one replica server runs at once; the rest wait their turn.
uploads_max = 2
# Backups the meta runs at once; more wait (scheduled) or are refused (backup now).
jobs_max = 2
"#;

impl Config {
    /// Loads defaults ← file ← environment. Flags are applied by the caller with `set`.
    pub fn load(path: Option<&std::path::Path>) -> Result<Config> {
        let mut value = toml::Value::try_from(Config::default()).context("serialize defaults")?;
        if let Some(path) = path {
            let text = std::fs::read_to_string(path).with_context(|| format!("read config file {}", path.display()))?;
            let file: toml::Value = toml::from_str(&text).with_context(|| format!("parse config file {}", path.display()))?;
            merge(&mut value, file);
        }
        let mut config: Config = value.clone().try_into().with_context(|| "invalid configuration".to_string())?;
        for section in ["meta", "replica", "backup"] {
            let keys: Vec<String> = value.get(section).and_then(|s| s.as_table()).map(|t| t.keys().cloned().collect()).unwrap_or_default();
            for key in keys {
                let var = format!("TANDEM_{}_{}", section.to_uppercase(), key.to_uppercase());
                if let Ok(v) = std::env::var(&var) {
                    config.set(section, &key, &v).with_context(|| format!("environment variable {var}"))?;
                }
            }
        }
        Ok(config)
    }

    /// Overrides one key from text, parsed as the key's type.
    pub fn set(&mut self, section: &str, key: &str, text: &str) -> Result<()> {
        let mut value = toml::Value::try_from(&*self)?;
        let table = value.get_mut(section).and_then(|s| s.as_table_mut()).with_context(|| format!("no section [{section}]"))?;
        let current = table.get(key).with_context(|| format!("no key {key} in [{section}]"))?;
        let parsed = match current {
            toml::Value::Integer(_) => toml::Value::Integer(text.trim().parse().with_context(|| format!("{key}: {text:?} is not an integer"))?),
            toml::Value::Boolean(_) => toml::Value::Boolean(text.trim().parse().with_context(|| format!("{key}: {text:?} is not true/false"))?),
            toml::Value::Array(_) => {
                toml::Value::Array(text.split(',').map(|s| s.trim()).filter(|s| !s.is_empty()).map(|s| toml::Value::String(s.into())).collect())
            }
            _ => toml::Value::String(text.to_string()),
        };
        table.insert(key.to_string(), parsed);
        *self = value.try_into().with_context(|| format!("{section}.{key} = {text:?}"))?;
        Ok(())
    }

    pub fn validate_meta(&self) -> Result<()> {
        let m = &self.meta;
        m.listen.parse::<SocketAddr>().with_context(|| format!("meta.listen {:?} is not HOST:PORT", m.listen))?;
        if !m.metrics_listen.is_empty() {
            m.metrics_listen.parse::<SocketAddr>().with_context(|| format!("meta.metrics_listen {:?} is not HOST:PORT", m.metrics_listen))?;
        }
        if m.grace_period < Duration::from_secs(1) {
            bail!("meta.grace_period of {:?} is too short (at least 1s)", m.grace_period);
        }
        if m.tick_interval.is_zero() || m.tick_interval > m.grace_period {
            bail!("meta.tick_interval must be positive and shorter than grace_period");
        }
        if !m.advertise.is_empty() && !m.advertise.contains(':') {
            bail!("meta.advertise {:?} is not HOST:PORT", m.advertise);
        }
        if m.disk_reserve_percent > 50 {
            bail!("meta.disk_reserve_percent ({}) must be at most 50", m.disk_reserve_percent);
        }
        tandem_meta_core::leadership::validate_ttl(m.lease_ttl.as_millis() as u64).map_err(anyhow::Error::msg)?;
        tandem_meta_core::policy::validate_site_name(&m.site).map_err(|e| anyhow::anyhow!("meta.site: {e}"))?;
        for peer in &m.peer_sites {
            tandem_meta_core::policy::validate_site_name(peer).map_err(|e| anyhow::anyhow!("meta.peer_sites: {e}"))?;
            if *peer == m.site || peer == "off" {
                bail!("meta.peer_sites lists {peer:?}, which is this site's own name or reserved");
            }
        }
        if self.backup.jobs_max == 0 {
            bail!("backup.jobs_max must be at least 1");
        }
        if !m.backup_target.is_empty() {
            tandem_meta_core::policy::validate_backup_target(&m.backup_target).map_err(|e| anyhow::anyhow!("meta.backup_target: {e}"))?;
        }
        Ok(())
    }

    pub fn validate_replica(&self) -> Result<()> {
        let r = &self.replica;
        r.listen.parse::<SocketAddr>().with_context(|| format!("replica.listen {:?} is not HOST:PORT", r.listen))?;
        if !r.metrics_listen.is_empty() {
            r.metrics_listen.parse::<SocketAddr>().with_context(|| format!("replica.metrics_listen {:?} is not HOST:PORT", r.metrics_listen))?;
        }
        if r.meta.is_empty() {
            bail!("replica.meta lists no meta server (set --meta HOST:PORT)");
        }
        if r.lease_period <= r.beacon_interval * 2 {
            bail!(
                "replica.lease_period ({:?}) must be more than twice beacon_interval ({:?}), or one lost beacon ends the lease",
                r.lease_period,
                r.beacon_interval
            );
        }
        if r.prepare_timeout.is_zero() || r.group_check_interval.is_zero() || r.beacon_interval.is_zero() {
            bail!("replica intervals and timeouts must be positive");
        }
        if r.cluster_id == 0 || r.cluster_id > 127 {
            bail!("replica.cluster_id {} must be 1..=127", r.cluster_id);
        }
        if r.max_value_bytes.as_u64() == 0 || r.max_value_bytes.as_u64() > 64 << 20 {
            bail!("replica.max_value_bytes {} must be 1 byte to 64MiB", r.max_value_bytes);
        }
        if r.log_group_commit_window > Duration::from_millis(100) {
            bail!(
                "replica.log_group_commit_window ({:?}) must be at most 100ms: every write under load waits up to this long",
                r.log_group_commit_window
            );
        }
        if r.memtable_bytes_max.as_u64() < 8 << 20 {
            bail!("replica.memtable_bytes_max ({}) must be at least 8MiB: smaller memtables flush on almost every write", r.memtable_bytes_max);
        }
        if r.inactive_replica_gc_delay < 2 * r.beacon_interval {
            bail!(
                "replica.inactive_replica_gc_delay ({:?}) must be at least two beacon intervals ({:?}): a replica the meta \
                 adds back needs a beacon to learn it",
                r.inactive_replica_gc_delay,
                2 * r.beacon_interval
            );
        }
        if r.prepare_batch_bytes_max.as_u64() < 64 << 10 {
            bail!("replica.prepare_batch_bytes_max must be at least 64KiB");
        }
        Ok(())
    }

    /// Rules across the meta and replica sections, for a whole site in one config (playground).
    /// Separate servers check the same rule at runtime: the meta refuses beacons whose lease is
    /// not shorter than its grace period.
    pub fn validate_site(&self) -> Result<()> {
        if self.replica.lease_period >= self.meta.grace_period {
            bail!(
                "replica.lease_period ({:?}) must be shorter than meta.grace_period ({:?}): the meta must not replace a primary whose lease may still run",
                self.replica.lease_period,
                self.meta.grace_period
            );
        }
        Ok(())
    }

    pub fn meta_options(&self) -> Result<tandem_meta::server::MetaOptions> {
        self.validate_meta()?;
        let m = &self.meta;
        Ok(tandem_meta::server::MetaOptions {
            listen: m.listen.parse()?,
            store_url: m.store.clone(),
            metrics_listen: if m.metrics_listen.is_empty() { None } else { Some(m.metrics_listen.parse()?) },
            tick_interval_ms: m.tick_interval.as_millis() as u64,
            advertise: m.advertise.clone(),
            machine: tandem_meta_core::MetaOptions {
                grace_period_ms: m.grace_period.as_millis() as u64,
                refused_connection_means_dead: m.refused_connection_means_dead,
                probe_after_silence_ms: m.probe_after_silence.as_millis() as u64,
                recall_window_ms: m.recall_window.as_millis() as u64,
                lease_ttl_ms: m.lease_ttl.as_millis() as u64,
                site: m.site.clone(),
                peer_sites: m.peer_sites.clone(),
                backup_target: m.backup_target.clone(),
                backup_jobs_max: self.backup.jobs_max,
                disk_reserve_bytes: m.disk_reserve.as_u64(),
                disk_reserve_percent: m.disk_reserve_percent,
                ..tandem_meta_core::MetaOptions::default()
            },
            s3: self.backup.s3(),
        })
    }

    pub fn replica_options(&self) -> Result<tandem_replica::ReplicaServerOptions> {
        self.validate_replica()?;
        let r = &self.replica;
        let listen: SocketAddr = r.listen.parse()?;
        let mut o = tandem_replica::ReplicaServerOptions::with_defaults(listen, r.meta.clone(), r.data_dir.clone());
        o.advertise = if r.advertise.is_empty() { listen.to_string() } else { r.advertise.clone() };
        o.metrics_listen = if r.metrics_listen.is_empty() { None } else { Some(r.metrics_listen.parse()?) };
        o.host.beacon_interval_ms = r.beacon_interval.as_millis() as u64;
        o.host.lease_period_ms = r.lease_period.as_millis() as u64;
        o.host.log_gc_interval_ms = r.log_gc_interval.as_millis() as u64;
        o.host.log_retain_bytes = r.log_retain_bytes.as_u64();
        o.host.inactive_replica_gc_delay_ms = r.inactive_replica_gc_delay.as_millis() as u64;
        o.log.segment_bytes_max = r.log_segment_bytes_max.as_u64();
        o.log.group_commit_window = r.log_group_commit_window;
        o.log.sync = match r.log_sync {
            LogSync::EveryBatch => tandem_storage::SyncPolicy::EveryBatch,
            LogSync::None => tandem_storage::SyncPolicy::None,
        };
        o.host.replica.prepare_timeout_ms = r.prepare_timeout.as_millis() as u64;
        o.host.replica.group_check_interval_ms = r.group_check_interval.as_millis() as u64;
        o.host.log_cache_bytes_max = r.log_cache_bytes_max.as_u64() as usize;
        o.block_cache_bytes = r.block_cache_bytes.as_u64() as usize;
        o.memtable_bytes_max = r.memtable_bytes_max.as_u64() as usize;
        o.host.replica.prepare_batch_bytes_max = r.prepare_batch_bytes_max.as_u64() as usize;
        o.host.replica.cluster_id = r.cluster_id;
        o.host.replica.limits.value_bytes_max = r.max_value_bytes.as_u64() as usize;
        o.host.disk_reserve_bytes = r.disk_reserve.as_u64();
        o.host.disk_reserve_percent = r.disk_reserve_percent;
        o.host.replicas_max = match r.max_replicas {
            0 => tandem_runtime::limits::replicas_for_open_files(tandem_runtime::limits::open_files_limit(), tandem_storage::FILES_PER_ENGINE as u64),
            n => n as usize,
        };
        o.s3 = self.backup.s3();
        o.backup_upload_bytes_per_sec = self.backup.upload_rate.as_u64();
        o.host.backup_uploads_max = self.backup.uploads_max;
        o.host.validate().map_err(anyhow::Error::msg)?;
        Ok(o)
    }
}

fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_text_matches_the_defaults() {
        let parsed: Config = toml::from_str(DEFAULT_CONFIG).unwrap();
        assert_eq!(parsed, Config::default());
        Config::default().validate_meta().unwrap();
        Config::default().validate_replica().unwrap();
    }

    #[test]
    fn set_parses_by_type_and_validation_names_the_rule() {
        let mut c = Config::default();
        c.set("replica", "lease_period", "9s").unwrap();
        assert_eq!(c.replica.lease_period, Duration::from_secs(9));
        let e = c.validate_site().unwrap_err().to_string();
        assert!(e.contains("shorter than meta.grace_period"), "{e}");
        c.set("replica", "meta", "a:1, b:2").unwrap();
        assert_eq!(c.replica.meta, vec!["a:1".to_string(), "b:2".to_string()]);
        c.set("replica", "cluster_id", "5").unwrap();
        assert!(c.set("replica", "cluster_id", "x").is_err());
        assert!(c.set("replica", "nope", "1").is_err());
        c.set("replica", "max_value_bytes", "2MiB").unwrap();
        assert_eq!(c.replica.max_value_bytes, ByteSize::mib(2));
    }
}
