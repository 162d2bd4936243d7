//! The glue between the production host and the simulated world: the host's actions and each
//! replica's turn and actions, carried out. No protocol decision is made here.

use super::*;
use super::trace::{note_change, note_event};
use tandem_host::DupWork;

/// The chance that a host tick compacts the server's engines (`ServerOptions::compaction_retention_ms`).
const COMPACTION_CHANCE: f64 = 0.05;

impl ReplicaServer {

    /// Queues an event for a replica's task (dropped if the replica is gone).
    pub fn deliver(&mut self, io: &mut Io<'_>, gpid: Gpid, event: SimEvent) {
        let Some(slot) = self.replicas.get_mut(&gpid) else { return };
        slot.queue.push_back(event);
        if !slot.turn_scheduled {
            slot.turn_scheduled = true;
            let delay = io.rng.range(0, TURN_DELAY_US_MAX);
            io.timer(delay, Event::ReplicaTurn { node: self.index, incarnation: self.incarnation, gpid });
        }
    }

    /// A replica's task runs a turn: a random number of its queued events, then their actions.
    pub fn on_turn(&mut self, io: &mut Io<'_>, gpid: Gpid) {
        let ctx = self.ctx(io.now_us);
        let me = self.me.clone();
        let Some(slot) = self.replicas.get_mut(&gpid) else { return };
        slot.turn_scheduled = false;
        let queued = slot.queue.len().min(STEPS_PER_TURN_MAX);
        let take = if queued <= 1 || io.rng.chance(0.5) { queued } else { io.rng.range(1, queued as u64) as usize };
        if take > 1 {
            io.stats.path(path::TURN_BATCHED);
        }
        for _ in 0..take {
            let event = slot.queue.pop_front().expect("counted");
            let before = (slot.hosted.core().status(), slot.hosted.core().ballot(), slot.hosted.core().last_committed(), slot.hosted.core().last_prepared());
            note_event(io, &me, gpid, &event, slot.hosted.core().status());
            slot.hosted.step(&ctx, event);
            note_change(io, &me, gpid, before, slot.hosted.core());
        }
        let actions = slot.hosted.end_turn(&ctx);
        if !slot.queue.is_empty() {
            slot.turn_scheduled = true;
            let delay = io.rng.range(0, TURN_DELAY_US_MAX);
            io.timer(delay, Event::ReplicaTurn { node: self.index, incarnation: self.incarnation, gpid });
        }
        for action in actions {
            self.execute(io, gpid, action);
        }
    }

    pub(super) fn execute(&mut self, io: &mut Io<'_>, gpid: Gpid, action: ReplicaAction<SimCarrier>) {
        let me = self.endpoint();
        match action {
            ReplicaAction::AppendLog { mutations } => {
                let ids = mutations.iter().map(|m| (m.ballot, m.decree)).collect();
                let records: Vec<LogRecord> = mutations.iter().map(|m| LogRecord::Mutation { gpid, mutation: Mutation::clone(m) }).collect();
                self.append(io, &records, Waiter::Mutations { gpid, ids });
            }
            ReplicaAction::AppendReset { decree } => self.append(io, &[LogRecord::Reset { gpid, decree }], Waiter::Reset { gpid }),
            ReplicaAction::SendPrepare { to, msg } => {
                let Some(i) = replica_index(&to) else { return };
                let rpc = self.call(io, Outgoing::Prepare { gpid, to });
                io.send(me, Endpoint::Replica(i), Msg::Prepare { rpc, msg });
            }
            ReplicaAction::ReplyPrepare { to, reply } => io.send(me, to.from, Msg::PrepareResp { rpc: to.rpc, reply }),
            ReplicaAction::ReplyWrite { to, result } => io.send(me, to.from, Msg::ClientWriteResp { rpc: to.rpc, result }),
            ReplicaAction::ReplyLearn { to, reply } => io.send(me, to.from, Msg::LearnResp { rpc: to.rpc, reply }),
            ReplicaAction::ServeRead { to, result } => {
                io.stats.path(path::READ_THROUGH_TURN);
                let now_s = self.ctx(io.now_us).now_s();
                let engine = self.engines.get(&gpid).expect("a replica has an engine");
                let result = result.and_then(|()| to.sort_keys.iter().map(|sk| read::get(engine, &to.hash_key, sk, now_s)).collect());
                io.send(me, to.incoming.from, Msg::ClientReadResp { rpc: to.incoming.rpc, result });
            }
            ReplicaAction::ProposeConfig { proposal } => {
                let rpc = self.call(io, Outgoing::Propose { gpid });
                io.send(me, Endpoint::Meta(self.meta.current()), Msg::Propose { rpc, gpid, proposal, from: self.me.clone() });
            }
            ReplicaAction::SendLearnRequest { to, request } => {
                let Some(i) = replica_index(&to) else { return };
                let rpc = self.call(io, Outgoing::Learn { gpid });
                io.send(me, Endpoint::Replica(i), Msg::Learn { rpc, gpid, request });
            }
            ReplicaAction::MakeCheckpoint { id } => {
                let delay = io.rng.range(1_000, 20_000);
                io.timer(delay, Event::CheckpointMade { node: self.index, incarnation: self.incarnation, gpid, id });
            }
            ReplicaAction::DeleteCheckpoint { id } => {
                io.stats.path(path::CHECKPOINT_DELETED);
                self.checkpoints.delete(gpid, &id);
            }
            ReplicaAction::FetchCheckpoint { from, checkpoint_id, decree } => {
                let Some(i) = replica_index(&from) else { return };
                let rpc = self.call(io, Outgoing::FetchCheckpoint { gpid, checkpoint_id: checkpoint_id.clone(), decree });
                io.send(me, Endpoint::Replica(i), Msg::FetchCheckpoint { rpc, gpid, checkpoint_id });
            }
            ReplicaAction::ActivateCheckpoint { db, decree } => {
                // Opening the database takes a while: a crash may come before it is current.
                let delay = io.rng.range(500, 5_000);
                io.timer(delay, Event::CheckpointActivated { node: self.index, incarnation: self.incarnation, gpid, db, decree });
            }
            ReplicaAction::DeleteDatabasesExcept { .. } => self.fetched.retain(|(g, _), _| *g != gpid),
            ReplicaAction::DeleteDatabase { db } => {
                self.fetched.remove(&(gpid, db));
            }
            ReplicaAction::SetReadGate { open } => host_step!(self, io, HostInput::ReadGate { gpid, open }),
            ReplicaAction::Configured { status } => host_step!(self, io, HostInput::Configured { gpid, status: Some(status) }),
            ReplicaAction::ConfigMoved => host_step!(self, io, HostInput::ConfigMoved { gpid }),
            ReplicaAction::Failed { error } => {
                io.stats.path(path::REPLICA_ERROR);
                let who = self.me.clone();
                io.note(|| format!("{who} {gpid}: failed: {error}"));
            }
            ReplicaAction::HoldLog { keep_after } => host_step!(self, io, HostInput::HoldLog { gpid, holder: "duplication".into(), keep_after }),
            ReplicaAction::Dup { dup_id, work: DupWork::ReadLog { read, from, to, bytes_max } } => {
                let input = DupWork::log_read_answer(read, from, to, bytes_max, self.log.read_partition(gpid, from));
                self.deliver(io, gpid, ReplicaEvent::Dup { dup_id, input });
            }
            ReplicaAction::Dup { dup_id, work: DupWork::Ship { remote_site, batch, records, watermark, .. } } => {
                self.ship(io, gpid, dup_id, remote_site, batch, records, watermark);
            }
        }
    }

    pub(super) fn execute_host(&mut self, io: &mut Io<'_>, action: HostAction, inputs: &mut VecDeque<HostInput>) {
        match action {
            HostAction::OpenReplica { gpid, options } => self.open_replica(gpid, options, vec![]),
            HostAction::Duplications { gpid, configs } => {
                let me = self.me.clone();
                let what: Vec<String> = configs.iter().map(|c| format!("dup {}{}", c.dup_id, if c.paused { " paused" } else { "" })).collect();
                io.note(|| format!("{me} {gpid}: duplications {}", what.join(", ")));
                self.deliver(io, gpid, ReplicaEvent::Duplications { configs })
            }
            HostAction::Configure { gpid, config } => {
                if self.replicas.contains_key(&gpid) {
                    self.deliver(io, gpid, ReplicaEvent::Configure { config });
                } else {
                    inputs.push_back(HostInput::Configured { gpid, status: None });
                }
            }
            HostAction::TickReplicas { log_cache_bytes_max } => {
                let now_ms = self.ctx(io.now_us).now_ms;
                let due: Vec<Gpid> = self.replicas.iter().filter(|(_, r)| r.hosted.next_tick_ms() <= now_ms).map(|(g, _)| *g).collect();
                for gpid in due {
                    self.deliver(io, gpid, ReplicaEvent::Tick { log_cache_bytes_max });
                }
                // RocksDB flushes an engine on its own once its memtables hold enough (the
                // server's budget shared out): here, a partition-dependent number of decrees.
                for (gpid, engine) in &self.engines {
                    if engine.unflushed() >= 8 + u64::from(gpid.partition % 8) * 4 {
                        engine.flush();
                        io.stats.path(path::ENGINE_FLUSHED_ITSELF);
                    }
                }
            }
            HostAction::SendBeacon { sent_at_ms, restarted, lease_period_ms, backup_reports, restore_failures, disk_short, replicas_max, refused, configs_digest } => {
                let rpc = self.call(io, Outgoing::Beacon { sent_at_ms });
                let current: BTreeMap<Gpid, tandem_core::replica::ReplicaState> = self.replicas.iter().map(|(g, s)| (*g, s.hosted.state())).collect();
                let reports_digest =
                    tandem_core::digest::reports_digest(current.iter().map(|(g, s)| (*g, s.ballot, s.status.as_str(), s.last_committed, s.last_prepared)));
                let delta = self.beacon_reports.delta(current);
                let (reports_delta, reports_gone) = (!delta.full, delta.gone);
                let reports = delta.changed.into_iter().map(|(_, s)| s).collect();
                let dup_reports = self.dup_reports(io.now_us);
                let (node, incarnation) = (self.me.clone(), self.incarnation);
                let beacon = Msg::Beacon { rpc, node, incarnation, reports, lease_period_ms, restarted, dup_reports, backup_reports, restore_failures, disk_short, replicas_max: u32::try_from(replicas_max).ok(), refused, reports_delta, reports_gone, reports_digest, configs_digest };
                io.send(self.endpoint(), Endpoint::Meta(self.meta.current()), beacon);
            }
            HostAction::ExtendLease { until_ms } => self.lease_until_ms = self.lease_until_ms.max(until_ms),
            HostAction::SetDiskShort { short } => {
                if short.is_some() != self.disk_low.is_some() {
                    let me = self.me.clone();
                    io.note(|| format!("{me}: disk {}", if short.is_some() { "below its reserve: only deletes are taken" } else { "back above its reserve" }));
                }
                self.disk_low = short.map(|s| s.low());
            }
            // The retention is `opts.compaction_retention_ms`'s (see there).
            HostAction::SetPartitionCount { .. } | HostAction::SetTombstoneRetention { .. } => {}
            HostAction::SetTombstoneHold { table_id, hold_us } => {
                self.tombstone_hold.insert(table_id, hold_us);
            }
            HostAction::RemoveReplica { gpid, why } => {
                io.stats.path(path::REPLICA_REMOVED);
                let me = self.me.clone();
                io.note(|| format!("{me} {gpid}: removed ({why})"));
                self.replicas.remove(&gpid);
                self.engines.remove(&gpid);
                self.checkpoints.delete_partition(gpid);
                self.fetched.retain(|(g, _), _| *g != gpid);
                // Deleting the files takes a while; a crash meanwhile leaves them.
                let delay = io.rng.range(1_000, 50_000);
                io.timer(delay, Event::ReplicaDeleted { node: self.index, incarnation: self.incarnation, gpid });
            }
            HostAction::ReadDurable { gpids } => {
                let decrees = gpids.into_iter().filter_map(|g| Some((g, self.engines.get(&g)?.flushed_decree()))).collect();
                inputs.push_back(HostInput::DurableRead { decrees });
            }
            HostAction::FlushEngine { gpid } => {
                if let Some(engine) = self.engines.get(&gpid) {
                    engine.flush();
                    io.stats.path(path::ENGINE_FLUSH_ASKED);
                }
            }
            HostAction::CollectLog { keep_after, retain_bytes } => {
                let keep = |g| keep_after.get(&g).copied();
                self.log.gc(&keep);
                let holding_back = self.log.holding_back(&keep, retain_bytes);
                inputs.push_back(HostInput::LogCollected { holding_back });
            }
            HostAction::BackupPartition { task } => self.start_upload(io, task, inputs),
            HostAction::CancelBackup { backup_id, gpid, attempt } => {
                self.uploads.remove(&(backup_id, gpid, attempt));
            }
            HostAction::RestoreReplica { gpid, source } => {
                // Downloading takes a while; a crash meanwhile leaves nothing (the runtime
                // renames the database into place only when whole).
                let delay = io.rng.range(1_000, 3_000_000);
                io.timer(delay, Event::ReplicaObjects { node: self.index, incarnation: self.incarnation, work: ObjectWork::Restore { gpid, source } });
            }
            HostAction::RefuseReplica { gpid, why } => {
                let me = self.me.clone();
                io.note(|| format!("{me} {gpid}: refused ({why})"));
            }
            HostAction::Stop { .. } => {
                // Its replicas stop, its port closes (within a tick of the runtime), and it starts
                // again from its disk when `Restarts` allows (`Event::StartAfterLogFailure`).
                let delay = io.rng.range(1_000, 50_000);
                io.timer(delay, Event::SupervisorRestart { node: self.index, incarnation: self.incarnation });
            }
        }
    }

    /// What the primaries' duplicators report in a beacon, as the server's `DupProgress`.
    fn dup_reports(&self, now_us: u64) -> Vec<(Gpid, u32, tandem_meta_core::duplication::DupReport)> {
        let ctx = self.ctx(now_us);
        let now = tandem_dup_core::Now { now_ms: ctx.now_ms, wall_us: ctx.wall_us };
        self.replicas
            .iter()
            .flat_map(|(gpid, slot)| {
                let gpid = *gpid;
                slot.hosted.duplications().progress(now).into_iter().map(move |(dup_id, s)| (gpid, dup_id, s.into()))
            })
            .collect()
    }

    pub fn on_host_tick(&mut self, io: &mut Io<'_>) {
        let now_ms = self.ctx(io.now_us).now_ms;
        host_step!(self, io, HostInput::Tick { now_ms });
        if let Some((free_bytes, total_bytes)) = self.disk_space {
            let dirs = vec![tandem_host::DirSpace { dir: "data".into(), free_bytes, total_bytes }];
            host_step!(self, io, HostInput::DiskSpace { dirs });
        }
        // RocksDB compacts in the background, now and then: drop what the rule lets go, as the
        // compaction filter does, at random moments (a two-site run, whose retention is short).
        if let Some(retention_ms) = self.opts.compaction_retention_ms
            && io.rng.chance(COMPACTION_CHANCE)
        {
            let wall_us = self.ctx(io.now_us).wall_us;
            let mut dropped = 0;
            for (gpid, engine) in &self.engines {
                let hold_us = self.tombstone_hold.get(&gpid.table_id).copied().unwrap_or(0);
                dropped += engine.compact(wall_us, retention_ms, hold_us);
            }
            if dropped > 0 {
                io.stats.path(path::COMPACTION_DROPPED);
                let me = self.me.clone();
                io.note(|| format!("{me}: compaction dropped {dropped} tombstones or expired values"));
            }
        }
        io.timer(self.opts.host.tick_interval_ms * 1_000, Event::HostTick { node: self.index, incarnation: self.incarnation });
    }
}
