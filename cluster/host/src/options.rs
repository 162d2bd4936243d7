//! The knobs of a replica server's host, with the one set of defaults that the server's config,
//! the playground and the simulator all start from.

use tandem_core::replica::ReplicaOptions;
use tandem_dup_core::DuplicatorOptions;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostOptions {
    /// How often the server beacons to the meta (one beacon in flight at a time).
    pub beacon_interval_ms: u64,
    /// How long an acked beacon lets this server serve as primary, from when it was sent.
    pub lease_period_ms: u64,
    /// How often the runtime feeds `HostInput::Tick` (and the replicas their core ticks).
    pub tick_interval_ms: u64,
    /// How often the shared log is collected (each replica's durable decree read, what none
    /// needs dropped).
    pub log_gc_interval_ms: u64,
    /// The shared log may keep this much before the host flushes the engines that hold its
    /// oldest segments (RocksDB flushes the engines being written on its own); 0 flushes every
    /// engine that holds the log each round. Also what a restart replays at most, roughly.
    pub log_retain_bytes: u64,
    /// A local replica that its partition's configuration has left out this long (while the
    /// partition has a primary) is deleted, with its hold on the shared log.
    pub inactive_replica_gc_delay_ms: u64,
    /// Committed mutations kept in memory for catch-up by log, by all replicas together: each
    /// gets an equal share (the core's `log_cache_bytes_max`).
    pub log_cache_bytes_max: usize,
    /// Checkpoints kept per partition for learners; a newer one replaces the oldest unheld one.
    pub checkpoints_per_partition_max: usize,
    /// A checkpoint read (by a learner fetching it, or an upload) within this long is in use and
    /// is not deleted; a new checkpoint is held this long before anyone read it.
    pub checkpoint_hold_ms: u64,
    /// The replica core's options; `log_cache_bytes_max` in it is overwritten with the share.
    pub replica: ReplicaOptions,
    /// The duplicators' options; `cluster_id` and `fail_mode` come from the replica options and
    /// each duplication.
    pub duplicator: DuplicatorOptions,
    /// Backup uploads this server runs at once; the rest wait their turn (reported as waiting).
    pub backup_uploads_max: usize,
    /// Writes other than deletes are refused while a data or log directory has less free space
    /// than the smaller of these two (`disk`): bytes, and a percentage of its filesystem.
    pub disk_reserve_bytes: u64,
    pub disk_reserve_percent: u64,
    /// Replicas this server hosts at most: what its open-files limit allows (the runtime divides
    /// it by the files one replica's engine holds). Past it the server refuses new replicas and
    /// says so to the meta, which places no more here; the ones it has go on.
    pub replicas_max: usize,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            beacon_interval_ms: 1_000,
            lease_period_ms: 6_000,
            tick_interval_ms: 100,
            log_gc_interval_ms: 10_000,
            log_retain_bytes: 1 << 30,
            inactive_replica_gc_delay_ms: 600_000,
            log_cache_bytes_max: 256 << 20,
            checkpoints_per_partition_max: 2,
            checkpoint_hold_ms: 60_000,
            replica: ReplicaOptions::default(),
            duplicator: DuplicatorOptions::default(),
            backup_uploads_max: 2,
            disk_reserve_bytes: 2 << 30,
            disk_reserve_percent: 5,
            replicas_max: usize::MAX,
        }
    }
}

impl HostOptions {
    /// Rules across fields; each message names the fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.beacon_interval_ms == 0 || self.tick_interval_ms == 0 || self.log_gc_interval_ms == 0 {
            return Err("beacon_interval, tick_interval and log_gc_interval must be above zero".into());
        }
        if self.beacon_interval_ms >= self.lease_period_ms {
            return Err(format!(
                "beacon_interval ({} ms) must be shorter than lease_period ({} ms), or every lease runs out before the next beacon",
                self.beacon_interval_ms, self.lease_period_ms
            ));
        }
        if self.backup_uploads_max == 0 {
            return Err("backup_uploads_max must be at least 1".into());
        }
        if self.checkpoints_per_partition_max == 0 {
            return Err("checkpoints_per_partition_max must be at least 1 (a learner needs one)".into());
        }
        if self.replicas_max == 0 {
            return Err("replicas_max must be at least 1".into());
        }
        if self.disk_reserve_percent > 50 {
            return Err(format!("disk_reserve_percent ({}) must be at most 50: the rest of the disk holds the data", self.disk_reserve_percent));
        }
        Ok(())
    }

    /// Each replica's share of the server's log cache when it hosts `hosted` replicas.
    pub fn log_cache_share(&self, hosted: usize) -> usize {
        self.log_cache_bytes_max / hosted.max(1)
    }

    /// The core's options for a replica of a server hosting `hosted` replicas.
    pub fn replica_options(&self, hosted: usize) -> ReplicaOptions {
        ReplicaOptions { log_cache_bytes_max: self.log_cache_share(hosted), ..self.replica.clone() }
    }
}
