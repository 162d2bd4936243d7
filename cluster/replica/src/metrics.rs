//! Prometheus metrics of a replica server (served by `tandem_runtime::metrics`).

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Requests by operation and result (ok / the error kind).
    pub requests: IntCounterVec,
    /// Latency by operation, seconds.
    pub latency: HistogramVec,
    /// Replicas on this server by status.
    pub replicas: IntGaugeVec,
    /// Mutation log records and fsyncs (the group commit ratio).
    pub log: IntGaugeVec,
    /// Memory shared by the server's RocksDB instances, bytes.
    pub memory: IntGaugeVec,
}

impl Metrics {
    pub fn new(prefix: &str) -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(Opts::new(format!("{prefix}_requests_total"), "requests by operation and result"), &["op", "result"])
            .expect("valid metric");
        let buckets = vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
        let latency = HistogramVec::new(HistogramOpts::new(format!("{prefix}_request_seconds"), "request latency").buckets(buckets), &["op"])
            .expect("valid metric");
        let replicas = IntGaugeVec::new(Opts::new(format!("{prefix}_replicas"), "replicas by status"), &["status"]).expect("valid metric");
        let log = IntGaugeVec::new(Opts::new(format!("{prefix}_mutation_log"), "mutation log counters"), &["counter"]).expect("valid metric");
        registry.register(Box::new(requests.clone())).expect("register once");
        registry.register(Box::new(latency.clone())).expect("register once");
        registry.register(Box::new(replicas.clone())).expect("register once");
        let memory = IntGaugeVec::new(Opts::new(format!("{prefix}_memory_bytes"), "memory by use"), &["use"]).expect("valid metric");
        registry.register(Box::new(log.clone())).expect("register once");
        registry.register(Box::new(memory.clone())).expect("register once");
        Metrics { registry, requests, latency, replicas, log, memory }
    }

    pub fn observe(&self, op: &str, result: &str, seconds: f64) {
        self.requests.with_label_values(&[op, result]).inc();
        self.latency.with_label_values(&[op]).observe(seconds);
    }

    pub fn render(&self) -> String {
        tandem_runtime::metrics::render(&self.registry)
    }
}
