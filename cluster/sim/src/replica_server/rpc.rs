//! A replica server's messages: requests in (routed to replicas or the host), answers and
//! failures of its own RPCs (with their timeouts), and which meta server it asks.

use super::*;

impl ReplicaServer {

    /// Opens an outgoing RPC with its timeout.
    pub(super) fn call(&mut self, io: &mut Io<'_>, what: Outgoing) -> RpcId {
        let rpc = io.rpc_id();
        // As the real server: a prepare attempt gets a quarter of prepare_timeout (at least
        // 200 ms), so a lost prepare is sent again before the member would be removed; a beacon
        // attempt a quarter of the lease.
        let timeout_ms = match what {
            Outgoing::Prepare { .. } => (self.opts.host.replica.prepare_timeout_ms / 4).max(200),
            Outgoing::Beacon { .. } => (self.opts.host.lease_period_ms / 4).max(200),
            Outgoing::PeerRoute => crate::client::ROUTE_RPC_TIMEOUT_MS,
            Outgoing::Ship { .. } => ship::SHIP_RPC_TIMEOUT_MS,
            _ => self.opts.rpc_timeout_ms,
        };
        self.outgoing.insert(rpc, what);
        let at = self.endpoint();
        io.timer(timeout_ms * 1_000, Event::RpcTimeout { at, incarnation: self.incarnation, rpc });
        rpc
    }

    /// An outgoing RPC failed (timeout or transport): its caller gets the failure input.
    /// `refused`: the peer's port refused the connection.
    pub fn on_rpc_failed(&mut self, io: &mut Io<'_>, rpc: RpcId, refused: bool) {
        let Some(what) = self.outgoing.remove(&rpc) else { return };
        match what {
            Outgoing::Prepare { gpid, to } => {
                if refused {
                    io.stats.path(path::PREPARE_REFUSED);
                }
                self.deliver(io, gpid, ReplicaEvent::PrepareFailed { to, refused })
            }
            Outgoing::Learn { gpid } => self.deliver(io, gpid, ReplicaEvent::LearnReply { reply: None }),
            Outgoing::FetchCheckpoint { gpid, .. } => {
                self.deliver(io, gpid, ReplicaEvent::CheckpointFetched { result: Err("fetching the checkpoint failed".into()) })
            }
            Outgoing::Propose { gpid } => {
                self.meta.unreachable();
                self.deliver(io, gpid, ReplicaEvent::ProposalReply { result: Err("proposal RPC failed".into()) })
            }
            Outgoing::Beacon { .. } => {
                self.meta.unreachable();
                let now_ms = self.ctx(io.now_us).now_ms;
                host_step!(self, io, HostInput::BeaconFailed { now_ms })
            }
            Outgoing::PeerRoute => self.on_peer_route(io, ship::PeerRoute::Failed),
            Outgoing::Ship { ship, partition } => self.on_ship_answer(io, ship, partition, None),
        }
    }

    pub fn on_message(&mut self, io: &mut Io<'_>, from: Endpoint, msg: Msg) {
        let me = self.endpoint();
        match msg {
            Msg::Prepare { rpc, msg } => {
                let gpid = msg.config.gpid;
                if !self.replicas.contains_key(&gpid) {
                    host_step!(self, io, HostInput::PrepareForUnknown { config: msg.config.clone() });
                }
                if self.replicas.contains_key(&gpid) {
                    self.deliver(io, gpid, ReplicaEvent::Prepare { from: from.name(), msg, reply: Incoming { from, rpc } });
                } else if self.host.is_removing(gpid) {
                    io.send(me, from, Msg::RpcFailed { rpc, not_sent: false, refused: false });
                } else {
                    let reply = PrepareReply { ballot: 0, outcome: PrepareOutcome::NotMember };
                    io.send(me, from, Msg::PrepareResp { rpc, reply });
                }
            }
            Msg::Learn { rpc, gpid, request } => {
                if !self.replicas.contains_key(&gpid) {
                    io.send(me, from, Msg::RpcFailed { rpc, not_sent: false, refused: false });
                    return;
                }
                self.deliver(io, gpid, ReplicaEvent::Learn { request, reply: Incoming { from, rpc } });
            }
            Msg::FetchCheckpoint { rpc, gpid, checkpoint_id } => {
                let found = self.checkpoints.get(gpid, &checkpoint_id).cloned();
                let result = found.ok_or_else(|| format!("no checkpoint {checkpoint_id} of {gpid} (expired?)"));
                if result.is_ok() {
                    self.deliver(io, gpid, ReplicaEvent::CheckpointRead { id: checkpoint_id });
                }
                io.send(me, from, Msg::FetchCheckpointResp { rpc, result });
            }
            Msg::ClientWrite { rpc, gpid, request } => {
                if !self.replicas.contains_key(&gpid) {
                    let err = Error::NotPrimary { gpid, status: "absent", ballot: 0, primary: None };
                    io.send(me, from, Msg::ClientWriteResp { rpc, result: Err(err) });
                    return;
                }
                self.deliver(io, gpid, ReplicaEvent::Write { request, reply: Incoming { from, rpc } });
            }
            Msg::ClientRead { rpc, gpid, hash_key, sort_keys } => {
                let ctx = self.ctx(io.now_us);
                let Some(slot) = self.replicas.get(&gpid) else {
                    let result = Err(Error::NotPrimary { gpid, status: "absent", ballot: 0, primary: None });
                    io.send(me, from, Msg::ClientReadResp { rpc, result });
                    return;
                };
                // As the server's read path: through the gate while it is open and the lease
                // holds, else through the replica's queue.
                if slot.hosted.read_gate_open() && ctx.lease_valid() {
                    let engine = self.engines.get(&gpid).expect("a replica has an engine");
                    let result = sort_keys.iter().map(|sk| read::get(engine, &hash_key, sk, ctx.now_s())).collect();
                    io.send(me, from, Msg::ClientReadResp { rpc, result });
                } else {
                    let reply = ReadRequest { incoming: Incoming { from, rpc }, hash_key, sort_keys };
                    self.deliver(io, gpid, ReplicaEvent::Read { reply });
                }
            }
            Msg::BeaconResp { rpc, answer } => {
                let Some(Outgoing::Beacon { sent_at_ms }) = self.outgoing.remove(&rpc) else { return };
                let BeaconAnswer { configs, partition_counts, gone, tombstone_retention, dups, sites, backups, restores, configs_unchanged, resend_reports } = answer;
                self.set_sites(&sites);
                self.beacon_reports.answered(resend_reports);
                if resend_reports {
                    io.stats.path(crate::stats::path::REPORTS_RESENT);
                }
                if configs_unchanged {
                    io.stats.path(crate::stats::path::CONFIGS_UNCHANGED);
                }
                host_step!(
                    self,
                    io,
                    HostInput::BeaconAnswered {
                        sent_at_ms,
                        configs,
                        partition_counts,
                        tombstone_retention,
                        gone,
                        dups,
                        backups,
                        restores,
                        configs_unchanged,
                        resend_reports
                    }
                );
            }
            Msg::MetaError { rpc, error } => {
                let Some(what) = self.outgoing.remove(&rpc) else { return };
                if matches!(error, MetaError::NotLeader { .. }) && !matches!(what, Outgoing::PeerRoute) {
                    self.meta.not_leader(crate::meta::hinted(&error));
                }
                match what {
                    Outgoing::Beacon { .. } => {
                        let now_ms = self.ctx(io.now_us).now_ms;
                        host_step!(self, io, HostInput::BeaconFailed { now_ms });
                    }
                    Outgoing::Propose { gpid } => self.deliver(io, gpid, ReplicaEvent::ProposalReply { result: Err(error.to_string()) }),
                    Outgoing::PeerRoute => {
                        let answer = match error {
                            MetaError::NotLeader { .. } => ship::PeerRoute::NotLeader(crate::meta::hinted(&error)),
                            _ => ship::PeerRoute::Failed,
                        };
                        self.on_peer_route(io, answer);
                    }
                    _ => {}
                }
            }
            Msg::PrepareResp { rpc, reply } => {
                if let Some(Outgoing::Prepare { gpid, to }) = self.outgoing.remove(&rpc) {
                    self.deliver(io, gpid, ReplicaEvent::PrepareReply { from: to, reply });
                }
            }
            Msg::LearnResp { rpc, reply } => {
                if let Some(Outgoing::Learn { gpid }) = self.outgoing.remove(&rpc) {
                    self.deliver(io, gpid, ReplicaEvent::LearnReply { reply: Some(reply) });
                }
            }
            Msg::ProposeResp { rpc, config } => {
                if let Some(Outgoing::Propose { gpid }) = self.outgoing.remove(&rpc) {
                    self.deliver(io, gpid, ReplicaEvent::ProposalReply { result: Ok(config) });
                }
            }
            Msg::FetchCheckpointResp { rpc, result } => {
                let Some(Outgoing::FetchCheckpoint { gpid, checkpoint_id, decree }) = self.outgoing.remove(&rpc) else { return };
                let result = match result {
                    Ok(checkpoint) if checkpoint.last_applied_decree() == decree => {
                        let db = format!("db-{checkpoint_id}");
                        self.fetched.insert((gpid, db.clone()), checkpoint);
                        Ok((db, decree))
                    }
                    Ok(checkpoint) => Err(format!("checkpoint holds decree {}, expected {decree}", checkpoint.last_applied_decree())),
                    Err(error) => Err(error),
                };
                self.deliver(io, gpid, ReplicaEvent::CheckpointFetched { result });
            }
            Msg::QueryConfigResp { rpc, configs } => {
                if let Some(Outgoing::PeerRoute) = self.outgoing.remove(&rpc) {
                    self.on_peer_route(io, ship::PeerRoute::Configs(configs));
                }
            }
            Msg::ClientWriteResp { rpc, result } => {
                if let Some(Outgoing::Ship { ship, partition }) = self.outgoing.remove(&rpc) {
                    self.on_ship_answer(io, ship, partition, Some(result));
                }
            }
            Msg::RpcFailed { rpc, refused, .. } => self.on_rpc_failed(io, rpc, refused),
            Msg::BeaconNow => {
                let now_ms = self.ctx(io.now_us).now_ms;
                host_step!(self, io, HostInput::BeaconNow { now_ms })
            }
            Msg::Beacon { .. }
            | Msg::Propose { .. }
            | Msg::QueryConfig { .. }
            | Msg::ClientReadResp { .. }
            | Msg::WatchBroken { .. }
            | Msg::Probe { .. }
            | Msg::ProbeAnswer { .. } => {}
        }
    }
}
