//! Shipping a duplicator's batch to the other site, as `Table::duplicate` on a client of that
//! site does in `cluster/replica`: ask the other site's meta for the table's route, split the
//! records by the partition that owns each key there (`tandem_dup_core::split_by_partition`), send
//! each group to that partition's primary as a `Duplicate` write, retry what was not taken (route
//! refreshed, backoff) until the request deadline, and answer the duplicator `Shipped` when every
//! group was applied, else `ShipFailed` with how the other site refused it
//! (`ShipFailure::of_apply_error`). No protocol decision is made here.

use super::*;
use tandem_core::PartitionConfig;
use tandem_core::replica::{DupRecord, DupWatermark, WriteRequest, WriteResponse};
use tandem_dup_core::{BatchId, Input as DupInput, ShipFailure, split_by_partition};

/// A batch is given up (the duplicator retries it) after this long, as the client's request
/// timeout.
pub const SHIP_DEADLINE_MS: u64 = 10_000;
/// A group's write waits this long for its answer.
pub(super) const SHIP_RPC_TIMEOUT_MS: u64 = 2_000;

/// One batch on its way to the other site.
pub(super) struct Ship {
    gpid: Gpid,
    dup_id: u32,
    batch: BatchId,
    /// The records, until the route says how to split them.
    records: Vec<DupRecord>,
    /// Goes with every group (to every partition when there are no records).
    watermark: Option<DupWatermark>,
    /// The groups not applied yet, by partition at the other site.
    groups: BTreeMap<u32, Vec<DupRecord>>,
    split: bool,
    in_flight: std::collections::BTreeSet<u32>,
    deadline_us: u64,
    backoff_ms: u64,
    retry_scheduled: bool,
}

/// How the other site's meta answered the route question.
pub(super) enum PeerRoute {
    Configs(Vec<PartitionConfig>),
    /// Not the leader; the leader it named, if any.
    NotLeader(Option<usize>),
    Failed,
}

/// What this server knows of the other site: its meta servers and the table's route there.
#[derive(Default)]
pub(super) struct PeerSite {
    pub(super) name: Option<String>,
    pub(super) meta: Option<MetaRoute>,
    route: Vec<PartitionConfig>,
    asking: bool,
}

impl ReplicaServer {
    /// The duplicator of `gpid` hands out a batch.
    pub(super) fn ship(
        &mut self,
        io: &mut Io<'_>,
        gpid: Gpid,
        dup_id: u32,
        remote_site: String,
        batch: BatchId,
        records: Vec<DupRecord>,
        watermark: Option<DupWatermark>,
    ) {
        if self.peer.name.as_deref() != Some(remote_site.as_str()) {
            let failure = ShipFailure::Unavailable(format!("site {remote_site:?} is not known to this server"));
            self.deliver(io, gpid, ReplicaEvent::Dup { dup_id, input: DupInput::ShipFailed { batch, failure } });
            return;
        }
        self.next_ship += 1;
        let id = self.next_ship;
        let deadline_us = io.now_us + SHIP_DEADLINE_MS * 1_000;
        let ship = Ship {
            gpid,
            dup_id,
            batch,
            records,
            watermark,
            groups: BTreeMap::new(),
            split: false,
            in_flight: Default::default(),
            deadline_us,
            backoff_ms: 20,
            retry_scheduled: false,
        };
        self.ships.insert(id, ship);
        self.ship_step(io, id);
    }

    /// A ship's backoff ran out.
    pub fn on_ship_retry(&mut self, io: &mut Io<'_>, id: u64) {
        self.ship_step(io, id);
    }

    /// Sends what of ship `id` is not in flight, or asks for the route first.
    pub(super) fn ship_step(&mut self, io: &mut Io<'_>, id: u64) {
        let me = self.endpoint();
        let Some(ship) = self.ships.get_mut(&id) else { return };
        ship.retry_scheduled = false;
        if io.now_us >= ship.deadline_us {
            let why = format!("the other site did not take the batch within {SHIP_DEADLINE_MS} ms");
            return self.ship_done(io, id, Err(ShipFailure::Unavailable(why)));
        }
        if self.peer.route.is_empty() {
            return self.ask_peer_route(io);
        }
        if !ship.split {
            let (groups, bad) = split_by_partition(std::mem::take(&mut ship.records), self.peer.route.len() as u32);
            ship.groups = groups;
            ship.split = true;
            if !bad.is_empty() {
                return self.ship_done(io, id, Err(ShipFailure::Refused(format!("{} records with keys that do not decode", bad.len()))));
            }
        }
        let mut missing_primary = false;
        let todo: Vec<u32> = ship.groups.keys().copied().filter(|p| !ship.in_flight.contains(p)).collect();
        for p in todo {
            let target = self.peer.route.iter().find(|c| c.gpid.partition == p).and_then(|c| Some((c.gpid, replica_index(c.primary.as_deref()?)?)));
            let Some((remote_gpid, node)) = target else {
                missing_primary = true;
                continue;
            };
            let ship = self.ships.get_mut(&id).expect("checked above");
            ship.in_flight.insert(p);
            let (records, watermark) = (ship.groups[&p].clone(), ship.watermark);
            let rpc = self.call(io, Outgoing::Ship { ship: id, partition: p });
            let request = WriteRequest::Duplicate { records, watermark };
            io.send(me, Endpoint::PeerReplica(node), Msg::ClientWrite { rpc, gpid: remote_gpid, request });
        }
        if missing_primary {
            self.peer.route.clear();
            self.ship_retry_later(io, id);
        }
    }

    /// A group's write was answered (`None`: it failed in transport or timed out).
    pub(super) fn on_ship_answer(&mut self, io: &mut Io<'_>, id: u64, partition: u32, result: Option<Result<WriteResponse, Error>>) {
        let Some(ship) = self.ships.get_mut(&id) else { return };
        ship.in_flight.remove(&partition);
        match result {
            Some(Ok(WriteResponse::Duplicated { .. })) => {
                ship.groups.remove(&partition);
                if ship.groups.is_empty() && ship.in_flight.is_empty() {
                    self.ship_done(io, id, Ok(()));
                }
            }
            Some(Ok(other)) => self.ship_done(io, id, Err(ShipFailure::Refused(format!("the other site answered {other:?}")))),
            Some(Err(e)) => match ShipFailure::of_apply_error(&e) {
                Some(failure) => self.ship_done(io, id, Err(failure)),
                None => {
                    self.peer.route.clear();
                    self.ship_retry_later(io, id);
                }
            },
            None => {
                self.peer.route.clear();
                self.ship_retry_later(io, id);
            }
        }
    }

    fn ship_retry_later(&mut self, io: &mut Io<'_>, id: u64) {
        let Some(ship) = self.ships.get_mut(&id) else { return };
        if ship.retry_scheduled {
            return;
        }
        ship.retry_scheduled = true;
        let backoff = ship.backoff_ms;
        ship.backoff_ms = (ship.backoff_ms * 2).min(500);
        io.timer(backoff * 1_000, Event::ShipRetry { node: self.index, incarnation: self.incarnation, ship: id });
    }

    fn ship_done(&mut self, io: &mut Io<'_>, id: u64, result: Result<(), ShipFailure>) {
        let Some(ship) = self.ships.remove(&id) else { return };
        let input = match result {
            Ok(()) => {
                io.stats.path(path::DUP_BATCH_SHIPPED);
                DupInput::Shipped { batch: ship.batch }
            }
            Err(failure) => {
                io.stats.path(match failure {
                    ShipFailure::TooLarge => path::DUP_TOO_LARGE,
                    ShipFailure::ClockAhead => path::DUP_CLOCK_AHEAD,
                    ShipFailure::Unavailable(_) | ShipFailure::Refused(_) => path::DUP_SHIP_FAILED,
                });
                DupInput::ShipFailed { batch: ship.batch, failure }
            }
        };
        self.deliver(io, ship.gpid, ReplicaEvent::Dup { dup_id: ship.dup_id, input });
    }

    /// Asks the other site's meta for the table's route (one question at a time).
    fn ask_peer_route(&mut self, io: &mut Io<'_>) {
        if self.peer.asking {
            return;
        }
        let Some(meta) = self.peer.meta.as_ref() else { return };
        let to = Endpoint::PeerMeta(meta.current());
        self.peer.asking = true;
        let rpc = self.call(io, Outgoing::PeerRoute);
        io.send(self.endpoint(), to, Msg::QueryConfig { rpc });
    }

    /// The other site's meta answered the route question.
    pub(super) fn on_peer_route(&mut self, io: &mut Io<'_>, answer: PeerRoute) {
        self.peer.asking = false;
        match (answer, self.peer.meta.as_mut()) {
            (PeerRoute::Configs(configs), _) if !configs.is_empty() => self.peer.route = configs,
            (PeerRoute::NotLeader(hint), Some(m)) => m.not_leader(hint),
            (_, Some(m)) => m.unreachable(),
            (_, None) => {}
        }
        let ids: Vec<u64> = self.ships.keys().copied().collect();
        for id in ids {
            if self.peer.route.is_empty() {
                self.ship_retry_later(io, id);
            } else if self.ships.get(&id).is_some_and(|s| !s.retry_scheduled) {
                self.ship_step(io, id);
            }
        }
    }

    /// The sites a beacon answer named: this simulation knows one other site.
    pub(super) fn set_sites(&mut self, sites: &[tandem_meta_core::duplication::Site]) {
        match sites.first() {
            Some(site) if self.peer.name.as_deref() != Some(site.name.as_str()) => {
                self.peer = PeerSite { name: Some(site.name.clone()), meta: Some(MetaRoute::new(site.metas.len().max(1))), ..Default::default() };
            }
            Some(_) => {}
            None => self.peer = PeerSite::default(),
        }
    }
}
