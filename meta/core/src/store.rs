//! The meta's writes to its store, as data: the state machine decides them
//! (`MetaAction::Persist`), the runtime carries them out in one fenced transaction each, and
//! their outcome comes back as `MetaInput::Stored`. `MemStore` is the in-memory twin the
//! simulator runs, with the same lease row (claims judged by the store's clock) and fencing.

use crate::backup::{BackupInfo, RestoreInfo, RestoreState};
use crate::duplication::{DupInfo, DupStatus, Site};
use tandem_backup_core::{BackupId, BackupState};
use crate::leadership::ClaimOutcome;
use tandem_dup_core::FailMode;
use crate::policy::Policy;
use crate::table::{MetaSnapshot, TableInfo, TableStatus};
use std::collections::BTreeMap;
use tandem_core::{Ballot, Decree, Gpid, NodeAddr, PartitionConfig};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreWrite {
    /// Records a replica server (a known one keeps its first time).
    RegisterNode { address: NodeAddr, at_ms: u64 },
    /// Compare-and-set: writes `config` only if the stored ballot is `expected_ballot`.
    UpdatePartition { config: PartitionConfig, expected_ballot: Ballot },
    /// The first configurations of a new table's partitions, in one transaction: all of them
    /// if every one is stored at ballot 0, else none (`Compared { updated: false }`, also when
    /// one does not exist). One write
    /// for a table of 1,024 partitions rather than 1,024.
    PlacePartitions { configs: Vec<PartitionConfig> },
    /// A new available table with the next unused id, its partitions at ballot 0.
    CreateTable { name: String, partition_count: u32, policy: Policy, owner: String, who: String, at_ms: u64 },
    /// Replaces a table's policy and appends `old → new` to its history; a duplication to a site
    /// the old policy named and the new one does not is removed with it (`policy_dup_removed`).
    SetPolicy { table_id: u32, old: Policy, new: Policy, who: String, at_ms: u64 },
    DropTable { table_id: u32, at_ms: u64 },
    RecallTable { table_id: u32 },
    /// Deletes a dropped table and its partitions for good (its duplications are removed).
    PurgeTable { table_id: u32 },
    AddSite { site: Site },
    /// Refused while a duplication that is not removed ships to it.
    RemoveSite { name: String },
    /// A new duplication with the next unused id, status `Start`, and `start` as the confirmed
    /// decree of those partitions (what was committed before it, not to be shipped).
    AddDuplication { table_id: u32, remote_site: String, fail_mode: FailMode, sync_existing: bool, at_ms: u64, start: Vec<(u32, Decree)> },
    SetDupStatus { dup_id: u32, status: DupStatus },
    /// Raises confirmed decrees (never lowers one): `(dup id, partition, decree)`.
    SaveDupProgress { confirmed: Vec<(u32, u32, Decree)> },
    /// A new backup record with the next unused id, running from `at_ms`.
    AddBackup { table_id: u32, table_name: String, partition_count: u32, target: String, who: String, at_ms: u64 },
    /// Running → complete, with the table manifest's checksum and the totals.
    CompleteBackup { id: BackupId, at_ms: u64, manifest_sha256: String, bytes: u64, new_bytes: u64 },
    /// Running → failed, every one of `ids`, for `reason`.
    FailBackups { ids: Vec<BackupId>, at_ms: u64, reason: String },
    /// Complete → deleted.
    DeleteBackup { id: BackupId, reason: String },
    /// A new available table named `name` with the partitions of complete backup `backup`,
    /// and a running restore of that backup into it, in one transaction.
    RestoreTable { name: String, policy: Policy, owner: String, who: String, at_ms: u64, backup: BackupInfo },
    /// Running → complete or failed.
    FinishRestore { id: u64, state: RestoreState, at_ms: u64, reason: String },
}

/// The site a policy change stops duplicating to: `SetPolicy` removes the table's duplication
/// there in the same transaction, so a policy that no longer names a site never leaves one
/// shipping behind (a separate write after it could fail, or the meta could stop in between).
pub fn policy_dup_removed<'a>(old: &'a crate::policy::Policy, new: &crate::policy::Policy) -> Option<&'a str> {
    old.duplication.as_deref().filter(|site| new.duplication.as_deref() != Some(*site))
}

impl StoreWrite {
    /// The partition a write changes the configuration of.
    pub fn partition(&self) -> Option<Gpid> {
        match self {
            StoreWrite::UpdatePartition { config, .. } => Some(config.gpid),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreDone {
    Done,
    /// `UpdatePartition`, `PlacePartitions`: whether the stored ballots matched.
    Compared { updated: bool },
    Created { table: TableInfo },
    DupAdded { dup: DupInfo },
    BackupAdded { backup: BackupInfo },
    Restored { table: TableInfo, restore: RestoreInfo },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreFailureKind {
    /// This process no longer holds the lease at the epoch it wrote under.
    Fenced,
    Unreachable,
    AlreadyExists,
    NotFound,
    Invalid,
    Other,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreFailure {
    pub kind: StoreFailureKind,
    pub message: String,
}

impl StoreFailure {
    pub fn new(kind: StoreFailureKind, message: impl Into<String>) -> Self {
        StoreFailure { kind, message: message.into() }
    }
}

pub type StoreResult<T = StoreDone> = Result<T, StoreFailure>;

/// The lease row.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Lease {
    holder: String,
    address: String,
    epoch: u64,
    expires_ms: u64,
    /// The holder held the advisory lock when it last claimed (PostgreSQL's session-level lock;
    /// see `claim`).
    locked: bool,
    /// When the holder last claimed, on the store's clock.
    renewed_ms: u64,
}

/// The in-memory twin of the SQL store: same lease claim rule, same fencing, same
/// compare-and-set; `now_ms` is the store's own clock.
#[derive(Clone, Debug, Default)]
pub struct MemStore {
    lease: Option<Lease>,
    /// The advisory lock (a database session's, released when the session ends) and its holder.
    lock: Option<String>,
    /// When the store last started (`pg_postmaster_start_time()`): every session before it ended.
    started_ms: u64,
    next_table_id: u32,
    tables: BTreeMap<u32, TableInfo>,
    partitions: BTreeMap<Gpid, PartitionConfig>,
    nodes: BTreeMap<NodeAddr, u64>,
    history: Vec<(u32, Option<Policy>, Policy)>,
    sites: BTreeMap<String, Site>,
    next_dup_id: u32,
    dups: BTreeMap<u32, DupInfo>,
    dup_confirmed: BTreeMap<(u32, u32), Decree>,
    backups: BTreeMap<BackupId, BackupInfo>,
    restores: BTreeMap<u64, RestoreInfo>,
}

impl MemStore {
    /// The claim statement: takes the row when it is free, expired, or held at the same address
    /// (a restarted process); the epoch grows unless `holder` renews its own. It also takes it
    /// early (`WonEarly`) when the row's holder claimed holding the advisory lock, `holder`
    /// holds it now — so the row holder's database session has ended — and the store has not
    /// restarted since that claim (a restart ends every session, the holder's included, while
    /// the holder most likely lives). `holder` records whether it holds the lock.
    pub fn claim(&mut self, holder: &str, address: &str, ttl_ms: u64, now_ms: u64) -> ClaimOutcome {
        let locked = self.lock.as_deref() == Some(holder);
        let fresh = |epoch| Lease { holder: holder.into(), address: address.into(), epoch, expires_ms: now_ms + ttl_ms, locked, renewed_ms: now_ms };
        match &mut self.lease {
            Some(l) if l.holder == holder => {
                l.expires_ms = now_ms + ttl_ms;
                l.address = address.to_string();
                l.locked = locked;
                l.renewed_ms = now_ms;
                ClaimOutcome::Won { epoch: l.epoch }
            }
            Some(l) if l.address == address || l.expires_ms < now_ms => {
                *l = fresh(l.epoch + 1);
                ClaimOutcome::Won { epoch: l.epoch }
            }
            Some(l) if locked && l.locked && l.renewed_ms > self.started_ms => {
                let predecessor_ms = l.expires_ms - now_ms;
                *l = fresh(l.epoch + 1);
                ClaimOutcome::WonEarly { epoch: l.epoch, predecessor_ms }
            }
            Some(l) => ClaimOutcome::Lost { leader: l.address.clone() },
            None => {
                self.lease = Some(fresh(1));
                ClaimOutcome::Won { epoch: 1 }
            }
        }
    }

    /// One round of a meta server's claim loop, as `SqlStore::claim_round` runs it: a leader
    /// takes the advisory lock if it is free and claims with it; a standby tries it only when the
    /// row says its holder held it (so it never takes it from a leader about to), and if it gets
    /// it, claims with it (an early takeover) and gives it back unless that won.
    pub fn claim_round(&mut self, holder: &str, address: &str, ttl_ms: u64, now_ms: u64) -> ClaimOutcome {
        let outcome = self.claim(holder, address, ttl_ms, now_ms);
        if self.lock.is_some() {
            if self.lock.as_deref() == Some(holder) && matches!(outcome, ClaimOutcome::Lost { .. }) {
                self.unlock(holder);
            }
            return outcome;
        }
        let won = matches!(outcome, ClaimOutcome::Won { .. } | ClaimOutcome::WonEarly { .. });
        if !won && !self.lease.as_ref().is_some_and(|l| l.locked) {
            return outcome;
        }
        self.lock = Some(holder.to_string());
        let again = self.claim(holder, address, ttl_ms, now_ms);
        match (won, &again) {
            (true, _) => outcome,
            (false, ClaimOutcome::Lost { .. }) => {
                self.unlock(holder);
                again
            }
            (false, _) => again,
        }
    }

    /// Releases the advisory lock if `holder` has it.
    pub fn unlock(&mut self, holder: &str) {
        if self.lock.as_deref() == Some(holder) {
            self.lock = None;
        }
    }

    /// `holder`'s database session ended: its process exited (the database sees the connection
    /// close at once), or the database ended the session (keepalive, termination).
    pub fn session_closed(&mut self, holder: &str) {
        self.unlock(holder);
    }

    /// The database restarted: every session ended.
    pub fn restart(&mut self, now_ms: u64) {
        self.lock = None;
        self.started_ms = now_ms;
    }

    /// A clean shutdown gives the lease up at once.
    pub fn release(&mut self, holder: &str) {
        if let Some(l) = self.lease.as_mut().filter(|l| l.holder == holder) {
            l.expires_ms = 0;
        }
        self.unlock(holder);
    }

    pub fn load(&self) -> MetaSnapshot {
        MetaSnapshot {
            tables: self.tables.values().cloned().collect(),
            partitions: self.partitions.values().cloned().collect(),
            nodes: self.nodes.iter().map(|(n, t)| (n.clone(), *t)).collect(),
            sites: self.sites.values().cloned().collect(),
            dups: self.dups.values().cloned().collect(),
            dup_confirmed: self.dup_confirmed.iter().map(|(&(d, p), &c)| (d, p, c)).collect(),
            backups: self.backups.values().cloned().collect(),
            restores: self.restores.values().cloned().collect(),
        }
    }

    pub fn partition(&self, gpid: Gpid) -> Option<&PartitionConfig> {
        self.partitions.get(&gpid)
    }

    /// One write, fenced: refused unless `holder` holds the row at `epoch`.
    pub fn write(&mut self, holder: &str, epoch: u64, write: &StoreWrite) -> StoreResult {
        match &self.lease {
            Some(l) if l.holder == holder && l.epoch == epoch => {}
            other => {
                let current = other.as_ref().map_or(0, |l| l.epoch);
                return Err(StoreFailure::new(StoreFailureKind::Fenced, format!("fenced: wrote at epoch {epoch}, the lease is at {current}")));
            }
        }
        self.write_unfenced(write)
    }

    /// `write` itself, once fenced.
    fn write_unfenced(&mut self, write: &StoreWrite) -> StoreResult {
        let not_found = |id: u32| StoreFailure::new(StoreFailureKind::NotFound, format!("table {id} does not exist"));
        match write {
            StoreWrite::RegisterNode { address, at_ms } => {
                self.nodes.entry(address.clone()).or_insert(*at_ms);
                Ok(StoreDone::Done)
            }
            StoreWrite::UpdatePartition { config, expected_ballot } => {
                assert!(config.ballot >= *expected_ballot, "the ballot never goes back: {expected_ballot} -> {}", config.ballot);
                let stored = self
                    .partitions
                    .get_mut(&config.gpid)
                    .ok_or_else(|| StoreFailure::new(StoreFailureKind::NotFound, format!("partition {} does not exist", config.gpid)))?;
                if stored.ballot != *expected_ballot {
                    return Ok(StoreDone::Compared { updated: false });
                }
                *stored = config.clone();
                Ok(StoreDone::Compared { updated: true })
            }
            StoreWrite::PlacePartitions { configs } => {
                if !configs.iter().all(|c| self.partitions.get(&c.gpid).is_some_and(|stored| stored.ballot == 0)) {
                    return Ok(StoreDone::Compared { updated: false });
                }
                for config in configs {
                    self.partitions.insert(config.gpid, config.clone());
                }
                Ok(StoreDone::Compared { updated: true })
            }
            StoreWrite::CreateTable { name, partition_count, policy, owner, who: _, at_ms } => {
                if let Some(t) = self.tables.values().find(|t| t.name == *name && t.status == TableStatus::Available) {
                    return Err(StoreFailure::new(StoreFailureKind::AlreadyExists, format!("table '{name}' already exists (id {})", t.id)));
                }
                self.next_table_id += 1;
                let id = self.next_table_id;
                let table = TableInfo {
                    id,
                    name: name.clone(),
                    partition_count: *partition_count,
                    replica_count: policy.replicas,
                    status: TableStatus::Available,
                    created_ms: *at_ms,
                    owner: owner.clone(),
                    policy: policy.clone(),
                };
                for p in 0..*partition_count {
                    let gpid = Gpid::new(id, p);
                    self.partitions.insert(gpid, PartitionConfig { gpid, ..Default::default() });
                }
                self.tables.insert(id, table.clone());
                self.history.push((id, None, policy.clone()));
                Ok(StoreDone::Created { table })
            }
            StoreWrite::SetPolicy { table_id, old, new, .. } => {
                let t = self.tables.get_mut(table_id).ok_or_else(|| not_found(*table_id))?;
                t.policy = new.clone();
                t.replica_count = new.replicas;
                self.history.push((*table_id, Some(old.clone()), new.clone()));
                if let Some(site) = policy_dup_removed(old, new) {
                    for d in self.dups.values_mut().filter(|d| d.table_id == *table_id && d.remote_site == site) {
                        d.status = DupStatus::Removed;
                    }
                }
                Ok(StoreDone::Done)
            }
            StoreWrite::DropTable { table_id, at_ms } => {
                let t = self.tables.get_mut(table_id).ok_or_else(|| not_found(*table_id))?;
                if t.status != TableStatus::Available {
                    return Err(StoreFailure::new(StoreFailureKind::Invalid, format!("table {table_id} is already dropped")));
                }
                t.status = TableStatus::Dropped { drop_time_ms: *at_ms };
                Ok(StoreDone::Done)
            }
            StoreWrite::RecallTable { table_id } => {
                let name = self.tables.get(table_id).ok_or_else(|| not_found(*table_id))?.name.clone();
                if self.tables.values().any(|t| t.name == name && t.status == TableStatus::Available) {
                    return Err(StoreFailure::new(StoreFailureKind::AlreadyExists, format!("an available table is named '{name}'")));
                }
                let t = self.tables.get_mut(table_id).expect("checked");
                if t.status == TableStatus::Available {
                    return Err(StoreFailure::new(StoreFailureKind::Invalid, format!("table {table_id} is not dropped")));
                }
                t.status = TableStatus::Available;
                Ok(StoreDone::Done)
            }
            StoreWrite::PurgeTable { table_id } => {
                let t = self.tables.get(table_id).ok_or_else(|| not_found(*table_id))?;
                if t.status == TableStatus::Available {
                    return Err(StoreFailure::new(StoreFailureKind::Invalid, format!("table {table_id} is available; drop it before purging")));
                }
                self.tables.remove(table_id);
                self.partitions.retain(|g, _| g.table_id != *table_id);
                for d in self.dups.values_mut().filter(|d| d.table_id == *table_id) {
                    d.status = DupStatus::Removed;
                }
                Ok(StoreDone::Done)
            }
            StoreWrite::AddSite { site } => {
                if self.sites.contains_key(&site.name) {
                    return Err(StoreFailure::new(StoreFailureKind::AlreadyExists, format!("site {:?} already exists", site.name)));
                }
                self.sites.insert(site.name.clone(), site.clone());
                Ok(StoreDone::Done)
            }
            StoreWrite::RemoveSite { name } => {
                if let Some(d) = self.dups.values().find(|d| d.remote_site == *name && d.status != DupStatus::Removed) {
                    return Err(StoreFailure::new(StoreFailureKind::Invalid, format!("site {name:?} is used by duplication {}", d.id)));
                }
                self.sites.remove(name).ok_or_else(|| StoreFailure::new(StoreFailureKind::NotFound, format!("no site {name:?}")))?;
                Ok(StoreDone::Done)
            }
            StoreWrite::AddDuplication { table_id, remote_site, fail_mode, sync_existing, at_ms, start } => {
                self.tables.get(table_id).ok_or_else(|| not_found(*table_id))?;
                if !self.sites.contains_key(remote_site) {
                    return Err(StoreFailure::new(StoreFailureKind::NotFound, format!("no site {remote_site:?}")));
                }
                if let Some(d) = self.dups.values().find(|d| d.table_id == *table_id && d.remote_site == *remote_site && d.status != DupStatus::Removed) {
                    return Err(StoreFailure::new(StoreFailureKind::AlreadyExists, format!("duplication {} already ships table {table_id} to {remote_site:?}", d.id)));
                }
                self.next_dup_id += 1;
                let dup = DupInfo {
                    id: self.next_dup_id,
                    table_id: *table_id,
                    remote_site: remote_site.clone(),
                    status: DupStatus::Start,
                    fail_mode: *fail_mode,
                    sync_existing: *sync_existing,
                    created_ms: *at_ms,
                };
                self.dups.insert(dup.id, dup.clone());
                for &(partition, decree) in start {
                    self.dup_confirmed.insert((dup.id, partition), decree);
                }
                Ok(StoreDone::DupAdded { dup })
            }
            StoreWrite::SetDupStatus { dup_id, status } => {
                let d = self.dups.get_mut(dup_id).ok_or_else(|| StoreFailure::new(StoreFailureKind::NotFound, format!("no duplication {dup_id}")))?;
                if d.status == DupStatus::Removed && *status != DupStatus::Removed {
                    return Err(StoreFailure::new(StoreFailureKind::Invalid, format!("duplication {dup_id} was removed")));
                }
                d.status = *status;
                Ok(StoreDone::Done)
            }
            StoreWrite::SaveDupProgress { confirmed } => {
                for &(dup_id, partition, decree) in confirmed {
                    let c = self.dup_confirmed.entry((dup_id, partition)).or_insert(decree);
                    *c = (*c).max(decree);
                }
                Ok(StoreDone::Done)
            }
            StoreWrite::AddBackup { table_id, table_name, partition_count, target, who, at_ms } => {
                self.tables.get(table_id).filter(|t| t.status == TableStatus::Available).ok_or_else(|| not_found(*table_id))?;
                let id = self.backups.keys().next_back().map_or(1, |id| id + 1);
                let backup = BackupInfo {
                    id,
                    table_id: *table_id,
                    table_name: table_name.clone(),
                    partition_count: *partition_count,
                    target: target.clone(),
                    state: BackupState::Running,
                    started_ms: *at_ms,
                    finished_ms: 0,
                    manifest_sha256: String::new(),
                    bytes: 0,
                    new_bytes: 0,
                    reason: String::new(),
                    who: who.clone(),
                };
                self.backups.insert(id, backup.clone());
                Ok(StoreDone::BackupAdded { backup })
            }
            StoreWrite::CompleteBackup { id, at_ms, manifest_sha256, bytes, new_bytes } => {
                let b = self.backup_becoming(*id, BackupState::Complete)?;
                b.state = BackupState::Complete;
                b.finished_ms = *at_ms;
                b.manifest_sha256 = manifest_sha256.clone();
                (b.bytes, b.new_bytes) = (*bytes, *new_bytes);
                Ok(StoreDone::Done)
            }
            StoreWrite::FailBackups { ids, at_ms, reason } => {
                for id in ids {
                    self.backup_becoming(*id, BackupState::Failed)?;
                }
                for id in ids {
                    let b = self.backups.get_mut(id).expect("checked");
                    b.state = BackupState::Failed;
                    b.finished_ms = *at_ms;
                    b.reason = reason.clone();
                }
                Ok(StoreDone::Done)
            }
            StoreWrite::DeleteBackup { id, reason } => {
                let b = self.backup_becoming(*id, BackupState::Deleted)?;
                b.state = BackupState::Deleted;
                b.reason = reason.clone();
                Ok(StoreDone::Done)
            }
            StoreWrite::RestoreTable { name, policy, owner, who, at_ms, backup } => {
                let stored = self.backups.get(&backup.id).ok_or_else(|| StoreFailure::new(StoreFailureKind::NotFound, format!("no backup {}", backup.id)))?;
                if stored.state != BackupState::Complete {
                    return Err(StoreFailure::new(StoreFailureKind::Invalid, format!("backup {} is {}; only a complete backup is restored", backup.id, stored.state.as_str())));
                }
                let create = StoreWrite::CreateTable { name: name.clone(), partition_count: backup.partition_count, policy: policy.clone(), owner: owner.clone(), who: who.clone(), at_ms: *at_ms };
                let Ok(StoreDone::Created { table }) = self.write_unfenced(&create) else {
                    return Err(StoreFailure::new(StoreFailureKind::AlreadyExists, format!("table '{name}' already exists")));
                };
                let id = self.restores.keys().next_back().map_or(1, |id| id + 1);
                let restore = RestoreInfo {
                    id,
                    table_id: table.id,
                    table_name: name.clone(),
                    backup_id: backup.id,
                    source_table_id: backup.table_id,
                    source_table_name: backup.table_name.clone(),
                    partition_count: backup.partition_count,
                    target: backup.target.clone(),
                    manifest_sha256: backup.manifest_sha256.clone(),
                    state: RestoreState::Running,
                    started_ms: *at_ms,
                    finished_ms: 0,
                    reason: String::new(),
                    who: who.clone(),
                };
                self.restores.insert(id, restore.clone());
                Ok(StoreDone::Restored { table, restore })
            }
            StoreWrite::FinishRestore { id, state, at_ms, reason } => {
                let r = self.restores.get_mut(id).ok_or_else(|| StoreFailure::new(StoreFailureKind::NotFound, format!("no restore {id}")))?;
                if r.state != RestoreState::Running || *state == RestoreState::Running {
                    return Err(StoreFailure::new(StoreFailureKind::Invalid, format!("restore {id} is {}; it cannot become {}", r.state.as_str(), state.as_str())));
                }
                r.state = *state;
                r.finished_ms = *at_ms;
                r.reason = reason.clone();
                Ok(StoreDone::Done)
            }
        }
    }

    /// Backup `id`, if its record may take state `next` (`BackupState::may_become`).
    fn backup_becoming(&mut self, id: BackupId, next: BackupState) -> StoreResult<&mut BackupInfo> {
        let b = self.backups.get_mut(&id).ok_or_else(|| StoreFailure::new(StoreFailureKind::NotFound, format!("no backup {id}")))?;
        if !b.state.may_become(next) {
            return Err(StoreFailure::new(StoreFailureKind::Invalid, format!("backup {id} is {}; it cannot become {}", b.state.as_str(), next.as_str())));
        }
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crashed_holders_lease_is_taken_at_once_and_a_restarted_stores_is_not() {
        let mut s = MemStore::default();
        assert_eq!(s.claim_round("a#1", "a", 30_000, 1_000), ClaimOutcome::Won { epoch: 1 });
        assert_eq!(s.claim_round("b#1", "b", 30_000, 2_000), ClaimOutcome::Lost { leader: "a".into() }, "a holds the lock");
        s.session_closed("a#1");
        assert_eq!(s.claim_round("b#1", "b", 30_000, 3_000), ClaimOutcome::WonEarly { epoch: 2, predecessor_ms: 28_000 });
        assert_eq!(s.claim_round("a#1", "a", 30_000, 3_100), ClaimOutcome::Lost { leader: "b".into() }, "a was alive after all: it lost");
        // The store restarts: b's session ends with everyone's, but b most likely lives.
        s.restart(4_000);
        assert_eq!(s.claim_round("c#1", "c", 30_000, 4_100), ClaimOutcome::Lost { leader: "b".into() });
        assert_eq!(s.claim_round("b#1", "b", 30_000, 4_200), ClaimOutcome::Won { epoch: 2 }, "b takes its lock back");
        // A leader that took the row by expiry while another still held the lock claims without
        // it, and no standby that then gets the lock takes the row early.
        let mut s = MemStore::default();
        s.claim_round("a#1", "a", 1_000, 0);
        assert_eq!(s.claim_round("b#1", "b", 1_000, 1_001), ClaimOutcome::Won { epoch: 2 }, "a paused: its row expired");
        s.session_closed("a#1");
        assert_eq!(s.claim_round("c#1", "c", 1_000, 1_100), ClaimOutcome::Lost { leader: "b".into() });
        assert_eq!(s.claim_round("b#1", "b", 1_000, 1_200), ClaimOutcome::Won { epoch: 2 });
        s.session_closed("b#1");
        assert!(matches!(s.claim_round("c#1", "c", 1_000, 1_300), ClaimOutcome::WonEarly { epoch: 3, .. }), "b had the lock by then");
    }

    #[test]
    fn the_lease_is_claimed_renewed_taken_over_and_fences_writes() {
        let mut s = MemStore::default();
        assert_eq!(s.claim("a#1", "a", 1_000, 0), ClaimOutcome::Won { epoch: 1 });
        assert_eq!(s.claim("b#1", "b", 1_000, 500), ClaimOutcome::Lost { leader: "a".into() });
        assert_eq!(s.claim("a#1", "a", 1_000, 900), ClaimOutcome::Won { epoch: 1 }, "a renewal keeps the epoch");
        assert_eq!(s.claim("b#1", "b", 1_000, 1_901), ClaimOutcome::Won { epoch: 2 }, "expired: taken over");
        let register = StoreWrite::RegisterNode { address: "r1".into(), at_ms: 5 };
        assert_eq!(s.write("a#1", 1, &register).unwrap_err().kind, StoreFailureKind::Fenced);
        assert_eq!(s.write("b#1", 2, &register), Ok(StoreDone::Done));
        // A process restarted at the same address takes the row at once.
        assert_eq!(s.claim("b#2", "b", 1_000, 2_000), ClaimOutcome::Won { epoch: 3 });
        s.release("b#2");
        assert_eq!(s.claim("a#2", "a", 1_000, 2_001), ClaimOutcome::Won { epoch: 4 });
    }

    #[test]
    fn partitions_change_by_compare_and_set() {
        let mut s = MemStore::default();
        s.claim("a", "a", 1_000, 0);
        let create = StoreWrite::CreateTable {
            name: "t".into(),
            partition_count: 2,
            policy: Policy::with_replicas(3),
            owner: "o".into(),
            who: "o".into(),
            at_ms: 1,
        };
        let Ok(StoreDone::Created { table }) = s.write("a", 1, &create) else { panic!() };
        assert_eq!(s.write("a", 1, &create).unwrap_err().kind, StoreFailureKind::AlreadyExists);
        let config = PartitionConfig { gpid: Gpid::new(table.id, 1), ballot: 1, primary: Some("r1".into()), ..Default::default() };
        let update = |expected_ballot| StoreWrite::UpdatePartition { config: config.clone(), expected_ballot };
        assert_eq!(s.write("a", 1, &update(0)), Ok(StoreDone::Compared { updated: true }));
        assert_eq!(s.write("a", 1, &update(0)), Ok(StoreDone::Compared { updated: false }));
        assert_eq!(s.load().partitions[1], config);
        s.write("a", 1, &StoreWrite::DropTable { table_id: table.id, at_ms: 2 }).unwrap();
        s.write("a", 1, &StoreWrite::PurgeTable { table_id: table.id }).unwrap();
        assert!(s.load().partitions.is_empty());
    }
}
