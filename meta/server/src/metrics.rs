//! The meta server's own metrics: leadership, requests (beacons, proposals, admin) by kind and
//! result, store writes and their latency, lease claims, configuration changes by cause and
//! outcome, and the cluster's shape as the leader sees it.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use std::time::Duration;
use tandem_meta_core::leadership::ClaimOutcome;
use tandem_meta_core::store::{StoreResult, StoreWrite};
use tandem_meta_core::machine::{Cause, MetaEvent};
use tandem_meta_core::{MetaError, MetaReply};
use tandem_core::replica::ConfigProposal;

#[derive(Clone)]
pub struct MetaMetrics {
    pub registry: Registry,
    is_leader: IntGauge,
    requests: IntCounterVec,
    request_seconds: HistogramVec,
    store_writes: IntCounterVec,
    store_write_seconds: HistogramVec,
    claims: IntCounterVec,
    epoch: IntGauge,
    tables: IntGauge,
    partitions: IntGaugeVec,
    servers: IntGaugeVec,
    config_changes: IntCounterVec,
    deaths: IntCounterVec,
}

impl MetaMetrics {
    pub fn new() -> MetaMetrics {
        let registry = Registry::new();
        tandem_runtime::metrics::register_common(&registry, "meta");
        let buckets = vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
        let is_leader = IntGauge::new("tandem_meta_is_leader", "1 while this meta server leads").expect("valid metric");
        let requests =
            IntCounterVec::new(Opts::new("tandem_meta_requests_total", "requests by kind and result"), &["kind", "result"]).expect("valid metric");
        let request_seconds = HistogramVec::new(HistogramOpts::new("tandem_meta_request_seconds", "request latency").buckets(buckets.clone()), &["kind"])
            .expect("valid metric");
        let store_writes =
            IntCounterVec::new(Opts::new("tandem_meta_store_writes_total", "metadata store writes by kind and result"), &["kind", "result"])
                .expect("valid metric");
        let store_write_seconds =
            HistogramVec::new(HistogramOpts::new("tandem_meta_store_write_seconds", "metadata store write latency").buckets(buckets), &["kind"])
                .expect("valid metric");
        let claims = IntCounterVec::new(Opts::new("tandem_meta_lease_claims_total", "leader lease claims by outcome"), &["outcome"]).expect("valid metric");
        for m in [Box::new(is_leader.clone()) as Box<dyn prometheus::core::Collector>, Box::new(requests.clone()), Box::new(request_seconds.clone())] {
            registry.register(m).expect("register once");
        }
        for m in [Box::new(store_writes.clone()) as Box<dyn prometheus::core::Collector>, Box::new(store_write_seconds.clone()), Box::new(claims.clone())] {
            registry.register(m).expect("register once");
        }
        let epoch = IntGauge::new("tandem_meta_epoch", "the lease epoch this meta server leads under (0 when it does not lead)").expect("valid metric");
        let tables = IntGauge::new("tandem_meta_tables", "available tables (as the leader sees them; 0 on a standby)").expect("valid metric");
        let partitions = IntGaugeVec::new(Opts::new("tandem_meta_partitions", "partitions of available tables by health (leader only)"), &["health"])
            .expect("valid metric");
        let servers = IntGaugeVec::new(Opts::new("tandem_meta_replica_servers", "replica servers by state (leader only)"), &["state"]).expect("valid metric");
        for m in [Box::new(epoch.clone()) as Box<dyn prometheus::core::Collector>, Box::new(tables.clone()), Box::new(partitions.clone()), Box::new(servers.clone())] {
            registry.register(m).expect("register once");
        }
        let config_changes = IntCounterVec::new(
            Opts::new("tandem_meta_config_changes_total", "partition configuration changes by cause (placement, cure, restart, a primary's proposal) and outcome"),
            &["cause", "outcome"],
        )
        .expect("valid metric");
        registry.register(Box::new(config_changes.clone())).expect("register once");
        let deaths = IntCounterVec::new(
            Opts::new("tandem_meta_servers_declared_dead_total", "replica servers declared dead, by why: no beacon within the grace period, or a refused probe of their port"),
            &["why"],
        )
        .expect("valid metric");
        registry.register(Box::new(deaths.clone())).expect("register once");
        for why in ["grace_period", "refused"] {
            deaths.with_label_values(&[why]);
        }
        // Every series from the start, so a dashboard sees zeros rather than nothing.
        for outcome in ["won", "won_early", "lost", "failed"] {
            claims.with_label_values(&[outcome]);
        }
        for cause in ["placement", "cure", "restart", "remove_secondary", "upgrade_learner"] {
            for outcome in ["committed", "failed"] {
                config_changes.with_label_values(&[cause, outcome]);
            }
        }
        for cause in ["remove_secondary", "upgrade_learner"] {
            config_changes.with_label_values(&[cause, "refused"]);
        }
        MetaMetrics { registry, is_leader, requests, request_seconds, store_writes, store_write_seconds, claims, epoch, tables, partitions, servers, config_changes, deaths }
    }

    /// Before a scrape: the lease epoch and the cluster's shape as the leader sees it (a
    /// standby reports zeros).
    pub fn refresh(&self, epoch: Option<u64>, status: Option<tandem_meta_core::request::ClusterStatus>) {
        self.epoch.set(epoch.unwrap_or(0) as i64);
        let s = status.unwrap_or_default();
        self.tables.set(s.tables as i64);
        for (health, n) in [("healthy", s.healthy), ("degraded", s.degraded), ("unavailable", s.unavailable)] {
            self.partitions.with_label_values(&[health]).set(n as i64);
        }
        for (state, n) in [("alive", s.nodes_alive), ("dead", s.nodes_dead)] {
            self.servers.with_label_values(&[state]).set(n as i64);
        }
    }

    pub fn leading(&self, leader: bool) {
        self.is_leader.set(leader as i64);
    }

    pub fn request(&self, kind: &str, result: &Result<MetaReply, MetaError>, elapsed: Duration) {
        let result = match result {
            Ok(_) => "ok",
            Err(MetaError::NotLeader { .. }) => "not_leader",
            Err(MetaError::NotFound(_)) => "not_found",
            Err(MetaError::InvalidArgument(_)) => "invalid_argument",
            Err(MetaError::AlreadyExists(_)) => "already_exists",
            Err(MetaError::Busy(_)) => "busy",
            Err(MetaError::DiskFull(_)) => "disk_full",
            Err(MetaError::Internal(_)) => "internal",
        };
        self.requests.with_label_values(&[kind, result]).inc();
        self.request_seconds.with_label_values(&[kind]).observe(elapsed.as_secs_f64());
    }

    pub fn store_write(&self, write: &StoreWrite, result: &StoreResult, elapsed: Duration) {
        let kind = match write {
            StoreWrite::RegisterNode { .. } => "register_node",
            StoreWrite::UpdatePartition { .. } => "update_partition",
            StoreWrite::PlacePartitions { .. } => "place_partitions",
            StoreWrite::CreateTable { .. } => "create_table",
            StoreWrite::SetPolicy { .. } => "set_policy",
            StoreWrite::DropTable { .. } => "drop_table",
            StoreWrite::AddSite { .. } => "add_site",
            StoreWrite::RemoveSite { .. } => "remove_site",
            StoreWrite::AddDuplication { .. } => "add_duplication",
            StoreWrite::SetDupStatus { .. } => "set_dup_status",
            StoreWrite::SaveDupProgress { .. } => "save_dup_progress",
            StoreWrite::RecallTable { .. } => "recall_table",
            StoreWrite::PurgeTable { .. } => "purge_table",
            StoreWrite::AddBackup { .. } => "add_backup",
            StoreWrite::CompleteBackup { .. } => "complete_backup",
            StoreWrite::FailBackups { .. } => "fail_backups",
            StoreWrite::DeleteBackup { .. } => "delete_backup",
            StoreWrite::RestoreTable { .. } => "restore_table",
            StoreWrite::FinishRestore { .. } => "finish_restore",
        };
        self.store_writes.with_label_values(&[kind, if result.is_ok() { "ok" } else { "error" }]).inc();
        self.store_write_seconds.with_label_values(&[kind]).observe(elapsed.as_secs_f64());
    }

    /// Configuration changes, from the machine's events: committed, failed (the store write
    /// did not happen) or refused (a proposal the configuration does not allow).
    pub fn event(&self, event: &MetaEvent) {
        let cause_label = |cause: &Cause| match cause {
            Cause::Placement => "placement",
            Cause::Cure => "cure",
            Cause::Restart => "restart",
            Cause::Proposal(p) => proposal_label(p),
        };
        let (cause, outcome) = match event {
            MetaEvent::Committed { cause, .. } => (cause_label(cause), "committed"),
            MetaEvent::ChangeFailed { cause, .. } => (cause_label(cause), "failed"),
            MetaEvent::ProposalRefused { proposal, .. } => (proposal_label(proposal), "refused"),
            MetaEvent::NodeDead { refused, .. } => {
                self.deaths.with_label_values(&[if *refused { "refused" } else { "grace_period" }]).inc();
                return;
            }
            _ => return,
        };
        self.config_changes.with_label_values(&[cause, outcome]).inc();
    }

    pub fn claim(&self, outcome: &ClaimOutcome) {
        let outcome = match outcome {
            ClaimOutcome::Won { .. } => "won",
            ClaimOutcome::WonEarly { .. } => "won_early",
            ClaimOutcome::Lost { .. } => "lost",
            ClaimOutcome::Failed => "failed",
        };
        self.claims.with_label_values(&[outcome]).inc();
    }
}

fn proposal_label(p: &ConfigProposal) -> &'static str {
    match p {
        ConfigProposal::RemoveSecondary { .. } => "remove_secondary",
        ConfigProposal::UpgradeLearner { .. } => "upgrade_learner",
    }
}

impl Default for MetaMetrics {
    fn default() -> Self {
        Self::new()
    }
}
