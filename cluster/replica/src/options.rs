//! The replica server's settings, as the binary's config layer resolved them.

use std::net::SocketAddr;
use std::path::PathBuf;
use tandem_core::replica::ReplicaOptions;
use tandem_storage::LogOptions;

#[derive(Clone, Debug)]
pub struct ReplicaServerOptions {
    pub listen: SocketAddr,
    /// The address peers, clients and the meta use for this server (default: `listen`).
    pub advertise: String,
    pub meta: Vec<String>,
    pub data_dir: PathBuf,
    pub metrics_listen: Option<SocketAddr>,
    pub beacon_interval_ms: u64,
    /// How long an acked beacon lets this server serve as primary, from when it was sent.
    pub lease_period_ms: u64,
    pub tick_interval_ms: u64,
    pub log_gc_interval_ms: u64,
    /// A local replica that its partition's configuration has left out this long (while the
    /// partition has a primary) is deleted, with its pin on the shared log.
    pub inactive_replica_gc_delay_ms: u64,
    pub rpc_timeout_ms: u64,
    pub checkpoint_chunk_bytes: usize,
    /// The block cache shared by every replica's RocksDB.
    pub block_cache_bytes: usize,
    /// The memtables of every replica's RocksDB together.
    pub memtable_bytes_max: usize,
    /// Committed mutations kept in memory for catch-up by log, by all replicas together: each
    /// gets an equal share (`replica.log_cache_bytes_max` is overwritten with it).
    pub log_cache_bytes_max: usize,
    pub log: LogOptions,
    pub replica: ReplicaOptions,
}

impl ReplicaServerOptions {
    pub fn with_defaults(listen: SocketAddr, meta: Vec<String>, data_dir: PathBuf) -> Self {
        ReplicaServerOptions {
            listen,
            advertise: listen.to_string(),
            meta,
            data_dir,
            metrics_listen: None,
            beacon_interval_ms: 1_000,
            lease_period_ms: 6_000,
            tick_interval_ms: 100,
            log_gc_interval_ms: 30_000,
            inactive_replica_gc_delay_ms: 600_000,
            rpc_timeout_ms: 5_000,
            checkpoint_chunk_bytes: 1 << 20,
            block_cache_bytes: 128 << 20,
            memtable_bytes_max: 256 << 20,
            log_cache_bytes_max: 256 << 20,
            log: LogOptions::default(),
            replica: ReplicaOptions::default(),
        }
    }
}
