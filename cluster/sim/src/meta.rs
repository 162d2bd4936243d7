//! The simulated meta server: the same decisions as `meta/server` (beacons grant leases and carry
//! configurations, failure detection and cure on a timer, proposals from primaries), made by the
//! meta-core functions, over a simulated durable store. Every configuration change is written to
//! the store (compare-and-set on the ballot) before it is adopted, and a restart reloads the
//! store and starts every known node alive, as the real meta does.

use crate::event::{Event, Io};
use crate::msg::{BeaconAnswer, Endpoint, Envelope, Msg};
use crate::replica_server::NodeClock;
use crate::stats::path;
use std::collections::BTreeMap;
use tandem_core::replica::ConfigProposal;
use tandem_core::{Gpid, NodeAddr, PartitionConfig};
use tandem_meta_core::beacon::{check_lease, configs_for_node, reassign_restarted_primary};
use tandem_meta_core::cure::{CureView, ReplicaReport, apply_proposal_from, cure};
use tandem_meta_core::failure_detector::FailureDetector;
use tandem_meta_core::placement::{learner_placement, node_load, place_table};
use tandem_meta_core::{TableInfo, TableStatus};

/// The SQL store's content: survives meta crashes.
#[derive(Clone, Debug, Default)]
pub struct MetaStore {
    pub tables: BTreeMap<u32, TableInfo>,
    pub partitions: BTreeMap<Gpid, PartitionConfig>,
    pub nodes: Vec<NodeAddr>,
}

#[derive(Clone, Copy, Debug)]
pub struct MetaOptions {
    pub grace_period_ms: u64,
    pub tick_interval_ms: u64,
}

impl Default for MetaOptions {
    fn default() -> Self {
        MetaOptions { grace_period_ms: 8_000, tick_interval_ms: 500 }
    }
}

pub struct SimMeta {
    pub opts: MetaOptions,
    pub clock: NodeClock,
    pub store: MetaStore,
    pub up: bool,
    pub incarnation: u64,
    boot_us: u64,
    pub partitions: BTreeMap<Gpid, PartitionConfig>,
    tables: BTreeMap<u32, TableInfo>,
    fd: FailureDetector,
    reports: BTreeMap<Gpid, BTreeMap<NodeAddr, ReplicaReport>>,
}

pub const TABLE_ID: u32 = 1;
pub const TABLE_NAME: &str = "sim";

impl SimMeta {
    pub fn new(opts: MetaOptions, clock: NodeClock) -> SimMeta {
        SimMeta {
            opts,
            clock,
            store: MetaStore::default(),
            up: false,
            incarnation: 0,
            boot_us: 0,
            partitions: BTreeMap::new(),
            tables: BTreeMap::new(),
            fd: FailureDetector::new(opts.grace_period_ms, Vec::new(), 0),
            reports: BTreeMap::new(),
        }
    }

    fn now_ms(&self, now_us: u64) -> u64 {
        self.clock.mono_ms(self.boot_us, now_us)
    }

    pub fn config(&self, gpid: Gpid) -> Option<&PartitionConfig> {
        self.partitions.get(&gpid)
    }

    pub fn table(&self) -> Option<&TableInfo> {
        self.tables.get(&TABLE_ID)
    }

    /// Start: load the store; every known node starts alive (no failover from a restart alone).
    pub fn boot(&mut self, io: &mut Io<'_>) {
        assert!(!self.up, "the meta is already up");
        self.up = true;
        self.incarnation += 1;
        self.boot_us = io.now_us;
        if self.incarnation > 1 {
            io.stats.path(path::META_RELOAD);
        }
        self.tables = self.store.tables.clone();
        self.partitions = self.store.partitions.clone();
        self.fd = FailureDetector::new(self.opts.grace_period_ms, self.store.nodes.clone(), self.now_ms(io.now_us));
        self.reports.clear();
        if self.incarnation > 1 {
            let n = self.partitions.len();
            io.note(|| format!("meta: restarted, {n} partition(s) reloaded from the store"));
        }
        io.timer(self.opts.tick_interval_ms * 1_000, Event::MetaTick { incarnation: self.incarnation });
    }

    pub fn crash(&mut self) {
        assert!(self.up, "the meta is already down");
        self.up = false;
        self.incarnation += 1;
        self.partitions.clear();
        self.tables.clear();
        self.reports.clear();
    }

    /// Persists `next` (compare-and-set against the ballot this meta holds) and adopts it.
    fn commit_config(&mut self, io: &mut Io<'_>, next: PartitionConfig) -> Result<(), String> {
        let current = self.partitions.get(&next.gpid).ok_or_else(|| format!("no partition {}", next.gpid))?.clone();
        let stored = self.store.partitions.get(&next.gpid).map(|c| c.ballot);
        if stored != Some(current.ballot) {
            return Err(format!("partition {} changed in the store behind this meta server", next.gpid));
        }
        assert!(next.ballot >= current.ballot, "the ballot never goes back: {current:?} -> {next:?}");
        if current.primary.is_some() && next.primary != current.primary {
            io.stats.path(path::PROMOTION);
        }
        if next.learners.len() > current.learners.len() {
            io.stats.path(path::LEARNER_ADDED);
        }
        io.note(|| {
            format!(
                "meta: {} ballot {}: primary {}, secondaries [{}], learners [{}]",
                next.gpid,
                next.ballot,
                next.primary.as_deref().unwrap_or("none"),
                next.secondaries.join(" "),
                next.learners.join(" ")
            )
        });
        self.store.partitions.insert(next.gpid, next.clone());
        self.partitions.insert(next.gpid, next);
        Ok(())
    }

    /// Creates the simulated table once enough servers are alive, as `create_table` does.
    pub fn create_table(&mut self, io: &mut Io<'_>, partition_count: u32, replica_count: u32) -> bool {
        if !self.up || self.tables.contains_key(&TABLE_ID) {
            return self.tables.contains_key(&TABLE_ID);
        }
        let load = node_load(self.fd.alive_nodes(), self.partitions.values());
        if (replica_count as usize) > load.len() {
            return false;
        }
        let table = TableInfo {
            id: TABLE_ID,
            name: TABLE_NAME.into(),
            partition_count,
            replica_count,
            status: TableStatus::Available,
            created_ms: 0,
            owner: "sim".into(),
            policy: tandem_meta_core::policy::Policy::with_replicas(replica_count),
        };
        self.store.tables.insert(TABLE_ID, table.clone());
        self.tables.insert(TABLE_ID, table);
        for p in 0..partition_count {
            let empty = PartitionConfig { gpid: Gpid::new(TABLE_ID, p), ..Default::default() };
            self.store.partitions.insert(empty.gpid, empty.clone());
            self.partitions.insert(empty.gpid, empty);
        }
        for config in place_table(TABLE_ID, partition_count, replica_count as usize, &load) {
            self.commit_config(io, config).expect("a new table's partitions are committed by this meta alone");
        }
        true
    }

    pub fn on_tick(&mut self, io: &mut Io<'_>) {
        let now = self.now_ms(io.now_us);
        for dead in self.fd.tick(now) {
            io.note(|| format!("meta: {dead} declared dead"));
        }
        let gpids: Vec<Gpid> = self.partitions.keys().copied().collect();
        for gpid in gpids {
            let Some(table) = self.tables.get(&gpid.table_id).cloned() else { continue };
            let config = self.partitions[&gpid].clone();
            if config.ballot == 0 {
                continue;
            }
            let load = node_load(self.fd.alive_nodes(), self.partitions.values());
            let placement = learner_placement(&load);
            let empty = BTreeMap::new();
            let reports = self.reports.get(&gpid).unwrap_or(&empty);
            let fd = &self.fd;
            let alive = |n: &str| fd.is_alive(n);
            let view = CureView { replica_count: table.replica_count as usize, alive: &alive, reports, placement: &placement };
            if let Some(next) = cure(&config, &view) {
                let removed = config.secondaries.iter().any(|s| !next.secondaries.contains(s) && next.primary.as_ref() != Some(s));
                if removed && next.primary == config.primary {
                    io.stats.path(path::SECONDARY_REMOVED_BY_CURE);
                }
                if let Err(e) = self.commit_config(io, next) {
                    io.note(|| format!("meta: cure of {gpid} failed: {e}"));
                }
            }
        }
        io.timer(self.opts.tick_interval_ms * 1_000, Event::MetaTick { incarnation: self.incarnation });
    }

    /// Answers after the store latency: the reply is lost if the meta crashes meanwhile.
    fn reply(&self, io: &mut Io<'_>, to: Endpoint, msg: Msg) {
        let delay = io.rng.range(100, 3_000);
        let envelope = Envelope { from: Endpoint::Meta, to, msg };
        io.timer(delay, Event::MetaReply { incarnation: self.incarnation, envelope });
    }

    pub fn on_message(&mut self, io: &mut Io<'_>, from: Endpoint, msg: Msg) {
        match msg {
            Msg::Beacon { rpc, node, incarnation, reports, lease_period_ms, restarted } => {
                if let Err(e) = check_lease(&node, lease_period_ms, self.opts.grace_period_ms) {
                    self.reply(io, from, Msg::BeaconResp { rpc, result: Err(e) });
                    return;
                }
                let now = self.now_ms(io.now_us);
                if self.fd.on_beacon(&node, now) && !self.store.nodes.contains(&node) {
                    self.store.nodes.push(node.clone());
                }
                if self.fd.on_incarnation(&node, incarnation, restarted) {
                    let gpids: Vec<Gpid> = self.partitions.keys().copied().collect();
                    for gpid in gpids {
                        if let Some(next) = reassign_restarted_primary(&self.partitions[&gpid], &node)
                            && self.commit_config(io, next).is_ok()
                        {
                            io.stats.path(path::RESTARTED_PRIMARY_REBALLOT);
                        }
                    }
                }
                for r in self.reports.values_mut() {
                    r.remove(&node);
                }
                let mut reported = Vec::new();
                for s in &reports {
                    reported.push(s.gpid);
                    let report = ReplicaReport {
                        ballot: s.ballot,
                        status: s.status.as_str().to_string(),
                        last_committed: s.last_committed,
                        last_prepared: s.last_prepared,
                    };
                    self.reports.entry(s.gpid).or_default().insert(node.clone(), report);
                }
                let configs = configs_for_node(self.partitions.values(), &node, &reported).into_iter().cloned().collect();
                let partition_counts = self.tables.values().map(|t| (t.id, t.partition_count)).collect();
                let gone = reported.into_iter().filter(|g| !self.tables.contains_key(&g.table_id)).collect();
                self.reply(io, from, Msg::BeaconResp { rpc, result: Ok(BeaconAnswer { configs, partition_counts, gone }) });
            }
            Msg::Propose { rpc, gpid, proposal, from: proposer } => {
                let result = self.on_propose(io, gpid, &proposer, &proposal);
                self.reply(io, from, Msg::ProposeResp { rpc, result });
            }
            Msg::QueryConfig { rpc } => {
                let configs = self.partitions.values().filter(|c| c.gpid.table_id == TABLE_ID).cloned().collect();
                self.reply(io, from, Msg::QueryConfigResp { rpc, configs });
            }
            _ => {}
        }
    }

    fn on_propose(&mut self, io: &mut Io<'_>, gpid: Gpid, from: &str, proposal: &ConfigProposal) -> Result<PartitionConfig, String> {
        let config = self.partitions.get(&gpid).cloned().ok_or_else(|| format!("no partition {gpid}"))?;
        let replica_count = self.tables.get(&gpid.table_id).map_or(0, |t| t.replica_count) as usize;
        let next = match apply_proposal_from(&config, from, proposal, replica_count) {
            Ok(next) => next,
            Err(e) => {
                io.stats.path(path::PROPOSAL_REFUSED);
                io.note(|| format!("meta: proposal {proposal:?} from {from} refused: {e}"));
                return Err(e);
            }
        };
        self.commit_config(io, next.clone())?;
        io.stats.path(match proposal {
            ConfigProposal::RemoveSecondary { .. } => path::SECONDARY_REMOVED_BY_PRIMARY,
            ConfigProposal::UpgradeLearner { .. } => path::LEARNER_UPGRADED,
        });
        Ok(next)
    }

    /// A proposal injected by a scenario script, as if `from` had sent it.
    pub fn propose_now(&mut self, io: &mut Io<'_>, gpid: Gpid, from: &str, proposal: &ConfigProposal) -> Result<PartitionConfig, String> {
        self.on_propose(io, gpid, from, proposal)
    }
}
