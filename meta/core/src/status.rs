//! What the meta reports about its metadata: partition health, the nodes, the cluster's status
//! and how far each table is from its policy. Read-only views of the state machine's state.

use crate::cure::ReplicaReport;
use crate::failure_detector::FailureDetector;
use crate::request::{ClusterStatus, Health, LevelStatus, NodeView, PartitionReplicas, PartitionView, PolicyStatusView};
use crate::table::{TableInfo, TableStatus};
use std::collections::BTreeMap;
use std::time::Duration;
use tandem_core::{Gpid, NodeAddr, PartitionConfig, PartitionStatus};

/// The metadata the meta leader holds, loaded from the store and kept in step with it.
#[derive(Clone, Debug)]
pub struct MetaState {
    pub tables: BTreeMap<u32, TableInfo>,
    pub partitions: BTreeMap<Gpid, PartitionConfig>,
    pub fd: FailureDetector,
    /// What each server last reported of each replica it holds.
    pub reports: BTreeMap<Gpid, BTreeMap<NodeAddr, ReplicaReport>>,
    /// Servers recorded in the store: a new leader starts them alive.
    pub registered: std::collections::BTreeSet<NodeAddr>,
    /// Servers whose last beacon said a directory is below its reserve (in memory only: a new
    /// leader learns it from the next beacons).
    pub disk_short: BTreeMap<NodeAddr, tandem_core::replica::DiskShort>,
    /// The most replicas each server hosts, as its last beacon said (in memory only, as
    /// `disk_short`); a server not here takes any number.
    pub replicas_max: BTreeMap<NodeAddr, u32>,
    /// Replicas each server refused to open for want of room (in memory only): cure counts
    /// the server out of those partitions.
    pub refused: BTreeMap<NodeAddr, std::collections::BTreeSet<Gpid>>,
    pub sites: BTreeMap<String, crate::duplication::Site>,
    pub dups: BTreeMap<u32, crate::duplication::DupInfo>,
    /// Persisted confirmed decrees, by (dup id, partition).
    pub dup_confirmed: BTreeMap<(u32, u32), tandem_core::Decree>,
    /// Confirmed decrees reported above the persisted ones, waiting for the next progress write.
    pub dup_unsaved: BTreeMap<(u32, u32), tandem_core::Decree>,
    /// What primaries last reported, by (dup id, partition).
    pub dup_reports: BTreeMap<(u32, u32), crate::duplication::DupReport>,
    /// The largest watermark each partition's primaries reported, by (dup id, partition): in
    /// memory only (a new leader starts from none, which holds tombstones longer, never less).
    pub dup_watermarks: BTreeMap<(u32, u32), u64>,
    /// Every backup record, as the store holds it.
    pub backups: BTreeMap<u64, crate::backup::BackupInfo>,
    /// The job of each backup this leader started and that has not finished.
    pub backup_jobs: BTreeMap<u64, tandem_backup_core::BackupJob>,
    /// The SHA-256 of each table manifest being written, by backup id.
    pub backup_manifests: BTreeMap<u64, String>,
    /// Every restore, as the store holds it.
    pub restores: BTreeMap<u64, crate::backup::RestoreInfo>,
    /// The last failure reported of each running restore (in memory only).
    pub restore_errors: BTreeMap<u64, String>,
    /// Backups whose table manifest is being written (one write at a time each).
    pub backup_manifests_writing: std::collections::BTreeSet<u64>,
}

impl MetaState {
    pub fn available_table(&self, name: &str) -> Option<&TableInfo> {
        self.tables.values().find(|t| t.name == name && t.status == TableStatus::Available)
    }

    pub fn table_partitions(&self, table_id: u32) -> impl Iterator<Item = (&Gpid, &PartitionConfig)> {
        self.partitions.range(Gpid::new(table_id, 0)..Gpid::new(table_id + 1, 0))
    }

    /// Replicas each alive node with disk room hosts: what placement balances. A server below
    /// its disk reserve gets no new replica (a learner there would fill it, and its primaries
    /// take no writes).
    /// A server at its most replicas gets none either.
    pub fn load(&self) -> BTreeMap<NodeAddr, usize> {
        let mut load = crate::placement::node_load(self.placeable_nodes(), self.partitions.values());
        load.retain(|n, hosted| self.replicas_max.get(n).is_none_or(|max| *hosted < *max as usize));
        load
    }

    /// How many more replicas each node of `load` takes (`usize::MAX`: no limit given).
    pub fn room(&self, load: &BTreeMap<NodeAddr, usize>) -> BTreeMap<NodeAddr, usize> {
        load.iter().map(|(n, hosted)| (n.clone(), self.replicas_max.get(n).map_or(usize::MAX, |max| (*max as usize).saturating_sub(*hosted)))).collect()
    }

    /// Whether `partitions` partitions of `replicas` replicas each, every replica of a
    /// partition on a different server, fit the room the servers have; if not, what to do.
    pub fn check_room(&self, partitions: u32, replicas: u32) -> Result<(), String> {
        self.check_room_beside(partitions, replicas, |_| 0)
    }

    /// `check_room` for `replicas` more replicas of each partition of a table whose partitions
    /// `hosting(node)` already have a replica on that node (a raised replica count).
    pub fn check_room_beside(&self, partitions: u32, replicas: u32, hosting: impl Fn(&NodeAddr) -> usize) -> Result<(), String> {
        let load = self.load();
        let room = self.room(&load);
        let (p, r) = (partitions as usize, replicas as usize);
        // Feasible exactly when the servers together take P·R, counting each for at most P
        // (one replica of each partition); placement, fullest room first, then finds it.
        let takes: usize = room.iter().map(|(n, r)| (*r).min(p.saturating_sub(hosting(n)))).sum();
        if takes >= p * r {
            return Ok(());
        }
        let full: Vec<String> = self
            .replicas_max
            .iter()
            .filter(|(n, _)| self.fd.is_alive(n) && !load.contains_key(*n))
            .map(|(n, max)| format!("{n} hosts its most, {max}"))
            .chain(load.iter().filter_map(|(n, hosted)| self.replicas_max.get(n).map(|max| format!("{n} hosts {hosted} of {max}"))))
            .collect();
        Err(format!(
            "{partitions} partitions of {replicas} replicas need {} replicas on {replicas} different servers, and the live servers take \
             {takes} more ({}): a server hosts as many replicas as its open-files limit allows; raise it (ulimit -n, LimitNOFILE), \
             add servers, or use fewer partitions",
            p * r,
            full.join(", ")
        ))
    }

    /// Alive servers with room on their disks.
    pub fn placeable_nodes(&self) -> Vec<NodeAddr> {
        self.fd.alive_nodes().into_iter().filter(|n| !self.disk_short.contains_key(n)).collect()
    }

    pub fn health(&self, c: &PartitionConfig, replica_count: u32) -> Health {
        let primary_alive = c.primary.as_deref().is_some_and(|p| self.fd.is_alive(p));
        if !primary_alive {
            return Health::Unavailable;
        }
        let alive_members = c.members().filter(|n| self.fd.is_alive(n)).count();
        if alive_members >= replica_count as usize { Health::Healthy } else { Health::Degraded }
    }

    pub fn partition_views(&self, table: &TableInfo) -> Vec<PartitionView> {
        self.table_partitions(table.id)
            .map(|(gpid, c)| PartitionView {
                config: c.clone(),
                reports: self.reports.get(gpid).map(|rs| rs.iter().map(|(n, r)| (n.clone(), r.clone())).collect()).unwrap_or_default(),
                health: self.health(c, table.replica_count),
            })
            .collect()
    }

    pub fn node_views(&self, now_ms: u64) -> Vec<NodeView> {
        self.fd
            .nodes()
            .iter()
            .map(|(addr, l)| {
                let mut view = NodeView {
                    address: addr.clone(),
                    alive: l.alive,
                    last_beacon_ms_ago: now_ms.saturating_sub(l.last_beacon_ms),
                    primaries: 0,
                    secondaries: 0,
                    learners: 0,
                    disk_short: self.disk_short.get(addr).cloned(),
                    replicas_max: self.replicas_max.get(addr).copied(),
                    refused: self.refused.get(addr).map_or(0, |r| r.len() as u32),
                };
                for c in self.partitions.values() {
                    match c.status_of(addr) {
                        PartitionStatus::Primary => view.primaries += 1,
                        PartitionStatus::Secondary => view.secondaries += 1,
                        PartitionStatus::Learner => view.learners += 1,
                        _ => {}
                    }
                }
                view
            })
            .collect()
    }

    pub fn cluster_status(&self) -> ClusterStatus {
        let mut s = ClusterStatus::default();
        for t in self.tables.values().filter(|t| t.status == TableStatus::Available) {
            s.tables += 1;
            for (gpid, c) in self.table_partitions(t.id) {
                s.partitions += 1;
                match self.health(c, t.replica_count) {
                    Health::Healthy => s.healthy += 1,
                    Health::Degraded => {
                        s.degraded += 1;
                        s.problems.push(format!("{}:{} ({gpid}) has {} of {} replicas", t.name, gpid.partition, c.replica_count(), t.replica_count));
                    }
                    Health::Unavailable => {
                        s.unavailable += 1;
                        s.problems.push(format!("{}:{} ({gpid}) has no live primary", t.name, gpid.partition));
                    }
                }
            }
        }
        for (addr, l) in self.fd.nodes() {
            if l.alive {
                s.nodes_alive += 1;
            } else {
                s.nodes_dead += 1;
                s.problems.push(format!("replica server {addr} is dead"));
            }
            if let Some(short) = self.disk_short.get(addr).filter(|_| l.alive) {
                s.nodes_disk_short += 1;
                s.problems.push(format!("replica server {addr}: {short}; it takes only deletes and gets no new replicas until space is freed"));
            }
            if let Some(refused) = self.refused.get(addr).filter(|r| l.alive && !r.is_empty()) {
                let max = self.replicas_max.get(addr).map_or_else(|| "its most".to_string(), |m| m.to_string());
                s.problems.push(format!(
                    "replica server {addr} refused {} replicas: it hosts {max}, all its open-files limit allows; they are being placed elsewhere",
                    refused.len()
                ));
            }
        }
        s
    }

    /// Desired against actual, level by level.
    /// Where the table's duplication to the site its policy names stands, and whether it is
    /// met: shipping, with the largest lag its primaries reported as the site-loss RPO.
    fn duplication_status(&self, table: &TableInfo) -> (String, bool) {
        use crate::duplication::DupStatus;
        let Some(site) = table.policy.duplication.as_deref() else { return ("off".into(), true) };
        if !self.sites.contains_key(site) {
            return (format!("site {site} has no meta address: tandem site add {site} --meta HOST:PORT"), false);
        }
        let Some(d) = self.dups.values().find(|d| d.table_id == table.id && d.remote_site == site && d.status != DupStatus::Removed) else {
            return ("being set up".into(), false);
        };
        if d.status == DupStatus::Pause {
            return (format!("duplication {} is paused (tandem dup resume {} {site})", d.id, table.name), false);
        }
        let reports: Vec<&crate::duplication::DupReport> = (0..table.partition_count).filter_map(|p| self.dup_reports.get(&(d.id, p))).collect();
        if reports.len() < table.partition_count as usize {
            return (format!("duplication {}: {} of {} partitions reported so far", d.id, reports.len(), table.partition_count), false);
        }
        let lag_ms = reports.iter().map(|r| r.lag_ms).max().unwrap_or(0);
        let lag_decrees = reports.iter().map(|r| r.lag_decrees).max().unwrap_or(0);
        let rpo = humantime::format_duration(Duration::from_millis(lag_ms));
        let error = reports.iter().find_map(|r| r.last_error.as_ref()).map_or_else(String::new, |e| format!("; last error: {e}"));
        (format!("shipping to {site}: site-loss RPO {rpo} (lag up to {lag_decrees} decrees){error}"), true)
    }

    /// The backup level: the newest complete backup on the policy's target and its age, which
    /// is the region-loss RPO; satisfied while that age is within two intervals.
    fn backup_status(&self, table: &TableInfo, now_wall_ms: u64) -> (String, bool) {
        let Some(policy) = &table.policy.backup else { return ("off".into(), true) };
        let on_target = || self.backups.values().filter(|b| b.table_id == table.id && b.target == policy.target);
        let running = on_target().find(|b| b.state == tandem_backup_core::BackupState::Running).map_or_else(String::new, |b| format!("; backup {} running", b.id));
        let last_failed = on_target()
            .filter(|b| b.state == tandem_backup_core::BackupState::Failed)
            .max_by_key(|b| b.started_ms)
            .map_or_else(String::new, |b| format!("; last failure (backup {}): {}", b.id, b.reason));
        match on_target().filter(|b| b.state == tandem_backup_core::BackupState::Complete).max_by_key(|b| (b.finished_ms, b.id)) {
            Some(b) => {
                let age = Duration::from_secs(now_wall_ms.saturating_sub(b.finished_ms) / 1000);
                let kept = on_target().filter(|b| b.state == tandem_backup_core::BackupState::Complete).count();
                let text = format!("last good backup {} finished {} ago: region-loss RPO {} ({kept} kept){running}", b.id, humantime::format_duration(age), humantime::format_duration(age));
                (text, now_wall_ms.saturating_sub(b.finished_ms) <= 2 * policy.every_ms)
            }
            None => (format!("no complete backup yet{running}{last_failed}"), false),
        }
    }

    pub fn policy_status(&self, table: &TableInfo, now_wall_ms: u64) -> PolicyStatusView {
        let desired = table.policy.replicas;
        let partitions: Vec<PartitionReplicas> = self
            .table_partitions(table.id)
            .map(|(gpid, c)| PartitionReplicas {
                partition: gpid.partition,
                healthy: c.members().filter(|n| self.fd.is_alive(n)).count() as u32,
                members: c.replica_count() as u32,
                learners: c.learners.len() as u32,
            })
            .collect();
        let at_desired = partitions.iter().filter(|p| p.healthy == desired && p.members == desired).count();
        let fewest = partitions.iter().map(|p| p.healthy).min().unwrap_or(0);
        let replicas = LevelStatus {
            level: "replicas".into(),
            desired: format!("{desired} per partition"),
            actual: if at_desired == partitions.len() {
                format!("healthy {desired} of {desired} on all {} partitions", partitions.len())
            } else {
                format!(
                    "{at_desired} of {} partitions at {desired} healthy replicas; fewest healthy: {fewest}; reconciling ({} learners catching up)",
                    partitions.len(),
                    partitions.iter().map(|p| p.learners).sum::<u32>()
                )
            },
            satisfied: at_desired == partitions.len(),
        };
        let (actual, satisfied) = self.duplication_status(table);
        let duplication = LevelStatus {
            level: "duplication".into(),
            desired: table.policy.duplication.as_ref().map_or_else(|| "off".to_string(), |site| format!("to site {site}")),
            actual,
            satisfied,
        };
        let (actual, satisfied) = self.backup_status(table, now_wall_ms);
        let backup = LevelStatus {
            level: "backup".into(),
            desired: table.policy.backup.as_ref().map_or_else(
                || "off".to_string(),
                |b| {
                    let every = humantime::format_duration(Duration::from_millis(b.every_ms));
                    match &b.at {
                        // The next start, so that an operator sees the zone's rules applied.
                        Some(at) => {
                            let next = at.next_slot_ms(b.every_ms, now_wall_ms).map_or_else(String::new, |ms| format!(", next {}", tandem_backup_core::schedule::format_utc_ms(ms)));
                            format!("every {every} from {at}{next}, keep {}, to {}", b.keep, b.target)
                        }
                        None => format!("every {every}, keep {}, to {}", b.keep, b.target),
                    }
                },
            ),
            actual,
            satisfied,
        };
        PolicyStatusView { table: table.clone(), levels: vec![replicas, duplication, backup], partitions }
    }
}
