//! The replica server's settings, as the binary's config layer resolved them.

use std::net::SocketAddr;
use std::path::PathBuf;
use tandem_host::HostOptions;
use tandem_storage::LogOptions;

#[derive(Clone, Debug)]
pub struct ReplicaServerOptions {
    pub listen: SocketAddr,
    /// The address peers, clients and the meta use for this server (default: `listen`).
    pub advertise: String,
    pub meta: Vec<String>,
    pub data_dir: PathBuf,
    pub metrics_listen: Option<SocketAddr>,
    pub rpc_timeout_ms: u64,
    pub checkpoint_chunk_bytes: usize,
    /// The block cache shared by every replica's RocksDB.
    pub block_cache_bytes: usize,
    /// The memtables of every replica's RocksDB together.
    pub memtable_bytes_max: usize,
    pub log: LogOptions,
    /// Beacons, lease, ticks, log GC, replica deletion, log cache, checkpoints, and the replica
    /// core's own options: what the IO-free host decides with.
    pub host: HostOptions,
    /// How to reach S3-compatible backup targets (the rest comes from `AWS_*` variables).
    pub s3: tandem_backup_store::S3Options,
    /// Bytes per second this server's backup uploads take at most, together (0: no limit).
    pub backup_upload_bytes_per_sec: u64,
}

impl ReplicaServerOptions {
    pub fn with_defaults(listen: SocketAddr, meta: Vec<String>, data_dir: PathBuf) -> Self {
        ReplicaServerOptions {
            listen,
            advertise: listen.to_string(),
            meta,
            data_dir,
            metrics_listen: None,
            rpc_timeout_ms: 5_000,
            checkpoint_chunk_bytes: 1 << 20,
            block_cache_bytes: 128 << 20,
            memtable_bytes_max: 256 << 20,
            log: LogOptions::default(),
            host: HostOptions::default(),
            s3: tandem_backup_store::S3Options::default(),
            backup_upload_bytes_per_sec: 64 << 20,
        }
    }
}
