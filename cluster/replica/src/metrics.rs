//! Prometheus metrics of a replica server (served by `tandem_runtime::metrics`).

use prometheus::{Counter, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Requests by table, operation and result (ok / the error kind); the table is `other` for
    /// requests naming a table this server does not host, so the labels stay bounded.
    pub requests: IntCounterVec,
    /// Latency by table and operation, seconds.
    pub latency: HistogramVec,
    /// Replicas on this server by status.
    pub replicas: IntGaugeVec,
    /// The shared mutation log: records appended, fsyncs (records / fsyncs is the group commit
    /// ratio) and appends that waited for a fuller group, as counters; its size on disk.
    pub log_records: IntCounter,
    pub log_fsyncs: IntCounter,
    pub log_group_waits: IntCounter,
    pub log_bytes: IntGauge,
    /// Bytes appended to the log (headers included), and the records of each group written
    /// and synced together.
    pub log_written_bytes: IntCounter,
    /// Times the server started again from its disk after its log failed; whether a directory
    /// is below its disk reserve now (1: only deletes are taken), and its free bytes.
    pub log_failure_restarts: IntCounter,
    pub disk_short: IntGauge,
    pub disk_free_bytes: IntGauge,
    pub log_group_records: Histogram,
    /// Checkpoint transfers: fetches by a learner here by result, bytes fetched, bytes still to
    /// fetch by the fetches running now (a learner's progress), and bytes served to learners.
    pub checkpoint_fetches: IntCounterVec,
    pub checkpoint_fetched_bytes: IntCounter,
    pub checkpoint_fetch_remaining_bytes: IntGauge,
    pub checkpoint_served_bytes: IntCounter,
    /// RocksDB, all engines of the server: block cache lookups by result (hit ratio =
    /// hit / (hit + miss)), time writes were stalled, engines whose writes are stopped now;
    /// per table, compaction's pending bytes.
    pub block_cache: IntCounterVec,
    pub write_stall_seconds: Counter,
    pub write_stopped_engines: IntGauge,
    pub table_pending_compaction: IntGaugeVec,
    /// Memory shared by the server's RocksDB instances, bytes.
    pub memory: IntGaugeVec,
    /// Per duplication of a partition this server is the primary of: how far behind the other
    /// site is, in decrees and in milliseconds since the oldest write not shipped yet, and the
    /// confirmed decree.
    pub dup_lag_decrees: IntGaugeVec,
    pub dup_lag_seconds: GaugeVec,
    pub dup_confirmed: IntGaugeVec,
    /// Records applied here from the other site: seconds from their origin timestamp to applied.
    pub dup_apply_delay: Histogram,
    /// Per table (labels bounded by tables, not partitions): this server's replicas by status,
    /// the sum of their committed decrees (its rate is the table's applied mutations per
    /// second here), and mutations prepared but not committed yet (writes in flight).
    pub table_replicas: IntGaugeVec,
    pub table_committed: IntGaugeVec,
    pub table_uncommitted: IntGaugeVec,
}

impl Metrics {
    pub fn new(prefix: &str) -> Metrics {
        let registry = Registry::new();
        tandem_runtime::metrics::register_common(&registry, "replica");
        let requests =
            IntCounterVec::new(Opts::new(format!("{prefix}_requests_total"), "requests by table, operation and result"), &["table_id", "op", "result"])
                .expect("valid metric");
        let buckets = vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
        let latency =
            HistogramVec::new(HistogramOpts::new(format!("{prefix}_request_seconds"), "request latency by table and operation").buckets(buckets), &["table_id", "op"])
                .expect("valid metric");
        let replicas = IntGaugeVec::new(Opts::new(format!("{prefix}_replicas"), "replicas by status"), &["status"]).expect("valid metric");
        let counter = |name: &str, help: &str| IntCounter::new(format!("{prefix}_mutation_log_{name}_total"), help).expect("valid metric");
        let log_records = counter("records", "records appended to the mutation log");
        let log_fsyncs = counter("fsyncs", "fsyncs of the mutation log");
        let log_group_waits = counter("group_waits", "appends that waited for a fuller group commit");
        let log_bytes = IntGauge::new(format!("{prefix}_mutation_log_bytes"), "size of the mutation log's segments").expect("valid metric");
        registry.register(Box::new(requests.clone())).expect("register once");
        registry.register(Box::new(latency.clone())).expect("register once");
        registry.register(Box::new(replicas.clone())).expect("register once");
        let memory = IntGaugeVec::new(Opts::new(format!("{prefix}_memory_bytes"), "memory by use"), &["use"]).expect("valid metric");
        for c in [&log_records, &log_fsyncs, &log_group_waits] {
            registry.register(Box::new(c.clone())).expect("register once");
        }
        registry.register(Box::new(log_bytes.clone())).expect("register once");
        registry.register(Box::new(memory.clone())).expect("register once");
        let dup_labels = &["table_id", "partition", "dup"];
        let dup_lag_decrees = IntGaugeVec::new(Opts::new(format!("{prefix}_dup_lag_decrees"), "committed decrees not yet confirmed at the other site"), dup_labels)
            .expect("valid metric");
        // In seconds, Prometheus' base unit (promtool refuses `_milliseconds`).
        let dup_lag_seconds = GaugeVec::new(Opts::new(format!("{prefix}_dup_lag_seconds"), "age of the oldest write not yet shipped"), dup_labels)
            .expect("valid metric");
        registry.register(Box::new(dup_lag_seconds.clone())).expect("register once");
        let dup_confirmed = IntGaugeVec::new(Opts::new(format!("{prefix}_dup_confirmed_decree"), "decree up to which the other site applied"), dup_labels)
            .expect("valid metric");
        let delay_buckets = vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];
        let dup_apply_delay = Histogram::with_opts(
            HistogramOpts::new(format!("{prefix}_dup_apply_delay_seconds"), "origin timestamp of records from the other site to applied here").buckets(delay_buckets),
        )
        .expect("valid metric");
        let table_replicas =
            IntGaugeVec::new(Opts::new(format!("{prefix}_table_replicas"), "this server's replicas of a table by status"), &["table_id", "status"])
                .expect("valid metric");
        let table_committed = IntGaugeVec::new(
            Opts::new(format!("{prefix}_table_committed_decrees"), "sum of the committed decrees of this server's replicas of a table"),
            &["table_id"],
        )
        .expect("valid metric");
        let table_uncommitted = IntGaugeVec::new(
            Opts::new(format!("{prefix}_table_uncommitted_mutations"), "mutations prepared and not yet committed on this server's replicas of a table"),
            &["table_id"],
        )
        .expect("valid metric");
        for m in [&dup_lag_decrees, &dup_confirmed, &table_replicas, &table_committed, &table_uncommitted] {
            registry.register(Box::new(m.clone())).expect("register once");
        }
        registry.register(Box::new(dup_apply_delay.clone())).expect("register once");
        let log_written_bytes =
            IntCounter::new(format!("{prefix}_mutation_log_written_bytes_total"), "bytes appended to the mutation log, headers included").expect("valid metric");
        let log_group_records = Histogram::with_opts(
            HistogramOpts::new(format!("{prefix}_mutation_log_group_records"), "records written (and synced) together by the mutation log")
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0]),
        )
        .expect("valid metric");
        let checkpoint_fetches =
            IntCounterVec::new(Opts::new(format!("{prefix}_checkpoint_fetches_total"), "checkpoints fetched by learners here, by result"), &["result"])
                .expect("valid metric");
        let checkpoint_fetched_bytes =
            IntCounter::new(format!("{prefix}_checkpoint_fetched_bytes_total"), "checkpoint bytes fetched by learners here").expect("valid metric");
        let checkpoint_fetch_remaining_bytes = IntGauge::new(
            format!("{prefix}_checkpoint_fetch_remaining_bytes"),
            "checkpoint bytes the fetches running here still have to fetch (learners' progress)",
        )
        .expect("valid metric");
        let checkpoint_served_bytes =
            IntCounter::new(format!("{prefix}_checkpoint_served_bytes_total"), "checkpoint bytes served to learners elsewhere").expect("valid metric");
        let block_cache =
            IntCounterVec::new(Opts::new(format!("{prefix}_rocksdb_block_cache_lookups_total"), "block cache lookups of all engines, by result"), &["result"])
                .expect("valid metric");
        let write_stall_seconds =
            Counter::new(format!("{prefix}_rocksdb_write_stall_seconds_total"), "time RocksDB stalled or slowed writes of this server's engines")
                .expect("valid metric");
        let write_stopped_engines =
            IntGauge::new(format!("{prefix}_rocksdb_write_stopped_engines"), "engines whose writes RocksDB stops now").expect("valid metric");
        let table_pending_compaction = IntGaugeVec::new(
            Opts::new(format!("{prefix}_table_pending_compaction_bytes"), "RocksDB's estimate of bytes compaction must rewrite, over this server's replicas of a table"),
            &["table_id"],
        )
        .expect("valid metric");
        registry.register(Box::new(log_written_bytes.clone())).expect("register once");
        let log_failure_restarts =
            IntCounter::new(format!("{prefix}_log_failure_restarts_total"), "starts from the disk after the mutation log failed").expect("valid metric");
        let disk_short = IntGauge::new(format!("{prefix}_disk_short"), "1 while a data or log directory is below its disk reserve (only deletes are taken)").expect("valid metric");
        let disk_free_bytes = IntGauge::new(format!("{prefix}_disk_free_bytes"), "free bytes of the fullest data or log directory, against its reserve").expect("valid metric");
        for m in [&disk_short, &disk_free_bytes] {
            registry.register(Box::new(m.clone())).expect("register once");
        }
        registry.register(Box::new(log_failure_restarts.clone())).expect("register once");
        registry.register(Box::new(log_group_records.clone())).expect("register once");
        registry.register(Box::new(checkpoint_fetches.clone())).expect("register once");
        registry.register(Box::new(checkpoint_fetched_bytes.clone())).expect("register once");
        registry.register(Box::new(checkpoint_fetch_remaining_bytes.clone())).expect("register once");
        registry.register(Box::new(checkpoint_served_bytes.clone())).expect("register once");
        registry.register(Box::new(block_cache.clone())).expect("register once");
        registry.register(Box::new(write_stall_seconds.clone())).expect("register once");
        registry.register(Box::new(write_stopped_engines.clone())).expect("register once");
        registry.register(Box::new(table_pending_compaction.clone())).expect("register once");
        for result in ["ok", "failed"] {
            checkpoint_fetches.with_label_values(&[result]);
        }
        Metrics {
            registry,
            requests,
            latency,
            replicas,
            log_records,
            log_fsyncs,
            log_group_waits,
            log_bytes,
            memory,
            dup_lag_decrees,
            dup_lag_seconds,
            dup_confirmed,
            dup_apply_delay,
            table_replicas,
            table_committed,
            table_uncommitted,
            log_written_bytes,
            log_failure_restarts,
            disk_short,
            disk_free_bytes,
            log_group_records,
            checkpoint_fetches,
            checkpoint_fetched_bytes,
            checkpoint_fetch_remaining_bytes,
            checkpoint_served_bytes,
            block_cache,
            write_stall_seconds,
            write_stopped_engines,
            table_pending_compaction,
        }
    }

    pub fn observe(&self, table: &str, op: &str, result: &str, seconds: f64) {
        self.requests.with_label_values(&[table, op, result]).inc();
        self.latency.with_label_values(&[table, op]).observe(seconds);
    }

    pub fn render(&self) -> String {
        tandem_runtime::metrics::render(&self.registry)
    }
}
