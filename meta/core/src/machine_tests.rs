//! Unit tests of the meta state machine: each asserts the exact actions of its inputs.

use super::*;
use crate::cure::ReplicaReport;
use crate::request::ClusterStatus;
use crate::policy::Toggle;
use crate::store::MemStore;

const TTL: u64 = 6_000;

fn options() -> MetaOptions {
    MetaOptions { grace_period_ms: 8_000, lease_ttl_ms: TTL, ..MetaOptions::default() }
}

fn at(mono_ms: u64) -> Now {
    Now { mono_ms, wall_ms: 1_700_000_000_000 + mono_ms }
}

/// A beacon of incarnation 1 that reports nothing and carries every (no) report.
fn beacon_request(node: &str) -> BeaconRequest {
    BeaconRequest {
        node: node.into(),
        incarnation: 1,
        restarted: false,
        lease_period_ms: 6_000,
        reports: vec![],
        dup_reports: vec![],
        backup_reports: vec![],
        restore_failures: vec![],
        disk_short: None,
        replicas_max: None,
        refused: vec![],
        reports_delta: false,
        reports_gone: vec![],
        reports_digest: None,
        configs_digest: None,
    }
}

fn beacon(node: &str, incarnation: u64, restarted: bool) -> MetaRequest {
    MetaRequest::Beacon(BeaconRequest { incarnation, restarted, ..beacon_request(node) })
}

fn config(table_id: u32, partition: u32, ballot: u64, primary: &str, secondaries: &[&str]) -> PartitionConfig {
    PartitionConfig {
        gpid: Gpid::new(table_id, partition),
        ballot,
        primary: Some(primary.into()),
        secondaries: secondaries.iter().map(|s| s.to_string()).collect(),
        learners: vec![],
        last_drops: vec![],
    }
}

/// A machine leading at epoch 1 over a store holding table 1 (one partition: r1 primary,
/// r2 r3 secondaries) and the three servers registered.
fn leader() -> (MetaMachine, MemStore) {
    let mut store = MemStore::default();
    store.claim("m1", "m1", TTL, 0);
    let create = StoreWrite::CreateTable { name: "t".into(), partition_count: 1, policy: Policy::with_replicas(3), owner: "o".into(), who: "o".into(), at_ms: 0 };
    store.write("m1", 1, &create).unwrap();
    store.write("m1", 1, &StoreWrite::UpdatePartition { config: config(1, 0, 1, "r1", &["r2", "r3"]), expected_ballot: 0 }).unwrap();
    for n in ["r1", "r2", "r3"] {
        store.write("m1", 1, &StoreWrite::RegisterNode { address: n.into(), at_ms: 0 }).unwrap();
    }
    let mut m = MetaMachine::new(options());
    m.step(at(0), MetaInput::Claimed { sent_at_ms: 0, outcome: ClaimOutcome::Won { epoch: 1 } });
    assert_eq!(m.take_actions(), vec![MetaAction::Load { epoch: 1, load: 1 }]);
    m.step(at(1), MetaInput::Loaded { epoch: 1, load: 1, result: Ok(store.load()) });
    assert_eq!(m.take_actions(), vec![MetaAction::Event(MetaEvent::Leading { epoch: 1, tables: 1, partitions: 1, nodes: 3 })]);
    (m, store)
}

fn beacon_reply(configs: Vec<PartitionConfig>) -> Result<MetaReply, MetaError> {
    let partition_counts = if configs.is_empty() { vec![] } else { vec![(1, 1)] };
    let tombstone_retention = if configs.is_empty() { vec![] } else { vec![(1, crate::policy::DEFAULT_TOMBSTONE_RETENTION_MS)] };
    Ok(MetaReply::Beacon {
        configs,
        partition_counts,
        tombstone_retention,
        gone: vec![],
        dups: vec![],
        sites: vec![],
        backups: vec![],
        restores: vec![],
        configs_unchanged: false,
        resend_reports: false,
    })
}

#[test]
fn a_follower_and_a_loading_leader_refuse_with_a_hint() {
    let mut m = MetaMachine::new(options());
    m.step(at(0), MetaInput::Claimed { sent_at_ms: 0, outcome: ClaimOutcome::Lost { leader: "m2:1".into() } });
    m.step(at(1), MetaInput::Request { token: 7, request: MetaRequest::ListNodes });
    let refused = MetaError::NotLeader { leader: Some("m2:1".into()), message: "this meta server does not lead; m2:1 does".into() };
    assert_eq!(m.take_actions(), vec![MetaAction::Reply { token: 7, result: Err(refused) }]);
    m.step(at(2), MetaInput::Claimed { sent_at_ms: 2, outcome: ClaimOutcome::Won { epoch: 2 } });
    m.step(at(3), MetaInput::Request { token: 8, request: MetaRequest::ClusterStatus });
    let loading = MetaError::NotLeader { leader: None, message: "this meta server is loading the metadata store; retry".into() };
    assert_eq!(m.take_actions(), vec![MetaAction::Load { epoch: 2, load: 1 }, MetaAction::Reply { token: 8, result: Err(loading) }]);
    m.step(at(4), MetaInput::Loaded { epoch: 2, load: 1, result: Ok(MetaSnapshot::default()) });
    m.step(at(5), MetaInput::Request { token: 9, request: MetaRequest::ClusterStatus });
    assert_eq!(m.take_actions()[1], MetaAction::Reply { token: 9, result: Ok(MetaReply::Status(ClusterStatus::default())) });
}

#[test]
fn a_server_is_registered_before_its_first_lease_and_answered_at_once_after() {
    let (mut m, _) = leader();
    m.step(at(10), MetaInput::Request { token: 1, request: beacon("r4", 1, false) });
    let register = StoreWrite::RegisterNode { address: "r4".into(), at_ms: at(10).wall_ms };
    assert_eq!(
        m.take_actions(),
        vec![MetaAction::Event(MetaEvent::NodeAlive { node: "r4".into() }), MetaAction::Persist { op: 1, epoch: 1, write: register }]
    );
    assert!(m.busy());
    m.step(at(20), MetaInput::Stored { op: 1, result: Ok(StoreDone::Done) });
    assert_eq!(m.take_actions(), vec![MetaAction::Reply { token: 1, result: beacon_reply(vec![]) }]);
    m.step(at(1_000), MetaInput::Request { token: 2, request: beacon("r4", 1, false) });
    assert_eq!(m.take_actions(), vec![MetaAction::Reply { token: 2, result: beacon_reply(vec![]) }]);
}

/// The rule this machine exists for: a beacon whose answer would carry a partition with a write
/// in flight waits for the write, or the old configuration would renew the lease of the primary
/// that the write replaces.
#[test]
fn a_beacon_never_outruns_a_configuration_change() {
    let (mut m, _) = leader();
    // r2 and r3 beacon; r1 stays silent past the grace period.
    for t in [1_000, 5_000, 8_500] {
        m.step(at(t), MetaInput::Claimed { sent_at_ms: t, outcome: ClaimOutcome::Won { epoch: 1 } });
        for n in ["r2", "r3"] {
            m.step(at(t), MetaInput::Request { token: t, request: beacon(n, 1, false) });
        }
    }
    m.take_actions();
    m.step(at(8_600), MetaInput::Tick);
    let promoted = PartitionConfig { last_drops: vec!["r1".into()], ..config(1, 0, 2, "r2", &["r3"]) };
    let actions = m.take_actions();
    assert_eq!(
        actions,
        vec![
            MetaAction::Event(MetaEvent::NodeDead { node: "r1".into(), refused: false }),
            MetaAction::Persist { op: 1, epoch: 1, write: StoreWrite::UpdatePartition { config: promoted.clone(), expected_ballot: 1 } },
        ]
    );
    // r1 comes back while the promotion is in flight, reporting its replica: its beacon waits.
    let report = ReplicaReport { ballot: 1, status: "primary".into(), last_committed: 0, last_prepared: 0 };
    let r1 = BeaconRequest { node: "r1".into(), incarnation: 1, restarted: false, lease_period_ms: 6_000, reports: vec![(Gpid::new(1, 0), report)], dup_reports: vec![], backup_reports: vec![], restore_failures: vec![], disk_short: None, replicas_max: None, refused: vec![], reports_delta: false, reports_gone: vec![], reports_digest: None, configs_digest: None };
    m.step(at(8_700), MetaInput::Request { token: 42, request: MetaRequest::Beacon(r1) });
    assert_eq!(m.take_actions(), vec![MetaAction::Event(MetaEvent::NodeAlive { node: "r1".into() })]);
    // So does r3's (its answer carries the partition too); a read does not.
    m.step(at(8_710), MetaInput::Request { token: 43, request: beacon("r3", 1, false) });
    m.step(at(8_750), MetaInput::Request { token: 44, request: MetaRequest::ListTables { include_dropped: false } });
    assert!(matches!(&m.take_actions()[..], [MetaAction::Reply { token: 44, result: Ok(MetaReply::Tables { .. }) }]));
    m.step(at(8_800), MetaInput::Stored { op: 1, result: Ok(StoreDone::Compared { updated: true }) });
    assert_eq!(
        m.take_actions(),
        vec![
            MetaAction::Event(MetaEvent::Committed { previous: config(1, 0, 1, "r1", &["r2", "r3"]), config: promoted.clone(), cause: Cause::Cure }),
            MetaAction::AskBeacon { nodes: ["r1", "r2", "r3"].into_iter().map(String::from).collect() },
            MetaAction::Reply { token: 42, result: beacon_reply(vec![promoted.clone()]) },
            MetaAction::Reply { token: 43, result: beacon_reply(vec![promoted]) },
        ]
    );
}

/// A server whose watch stream broke is probed; a refused probe declares it dead at once (its
/// process is gone, and its lease with it), the cure promotes a secondary without waiting for the
/// grace period, and the members are asked to beacon for their new configuration.
#[test]
fn a_server_whose_port_refuses_is_dead_at_once_and_the_members_are_asked_to_beacon() {
    let (mut m, _) = leader();
    for (token, n) in ["r1", "r2", "r3"].into_iter().enumerate() {
        m.step(at(500), MetaInput::Request { token: token as u64, request: beacon(n, 1, false) });
    }
    m.take_actions();
    m.step(at(600), MetaInput::WatchBroken { node: "r1".into() });
    assert_eq!(m.take_actions(), vec![MetaAction::Probe { node: "r1".into(), probe: 1 }]);
    m.step(at(610), MetaInput::WatchBroken { node: "r1".into() });
    assert_eq!(m.take_actions(), vec![], "one probe in flight");
    // Accepted (a paused process, a stream that broke for another reason): nothing changes.
    m.step(at(620), MetaInput::Probed { node: "r1".into(), probe: 1, refused: false });
    assert_eq!(m.take_actions(), vec![]);
    m.step(at(700), MetaInput::WatchBroken { node: "r1".into() });
    assert_eq!(m.take_actions(), vec![MetaAction::Probe { node: "r1".into(), probe: 2 }]);
    m.step(at(710), MetaInput::Probed { node: "r1".into(), probe: 2, refused: true });
    let promoted = PartitionConfig { last_drops: vec!["r1".into()], ..config(1, 0, 2, "r2", &["r3"]) };
    assert_eq!(
        m.take_actions(),
        vec![
            MetaAction::Event(MetaEvent::NodeDead { node: "r1".into(), refused: true }),
            MetaAction::Persist { op: 1, epoch: 1, write: StoreWrite::UpdatePartition { config: promoted.clone(), expected_ballot: 1 } },
        ]
    );
    m.step(at(720), MetaInput::Stored { op: 1, result: Ok(StoreDone::Compared { updated: true }) });
    assert_eq!(
        m.take_actions()[..2],
        [
            MetaAction::Event(MetaEvent::Committed { previous: config(1, 0, 1, "r1", &["r2", "r3"]), config: promoted, cause: Cause::Cure }),
            MetaAction::AskBeacon { nodes: ["r1", "r2", "r3"].into_iter().map(String::from).collect() },
        ]
    );
}

/// Beacons late by `probe_after_silence_ms` get a probe too (a server whose stream never opened);
/// with `refused_connection_means_dead` off, nobody is probed.
#[test]
fn silent_servers_are_probed_unless_refusals_are_not_trusted() {
    let (mut m, _) = leader();
    m.step(at(2_500), MetaInput::Tick);
    let probes: Vec<MetaAction> = m.take_actions().into_iter().filter(|a| matches!(a, MetaAction::Probe { .. })).collect();
    assert_eq!(probes, ["r1", "r2", "r3"].iter().enumerate().map(|(i, n)| MetaAction::Probe { node: n.to_string(), probe: i as u64 + 1 }).collect::<Vec<_>>());
    let (_, store) = leader();
    let mut m2 = MetaMachine::new(MetaOptions { refused_connection_means_dead: false, ..options() });
    m2.step(at(0), MetaInput::Claimed { sent_at_ms: 0, outcome: ClaimOutcome::Won { epoch: 1 } });
    m2.step(at(1), MetaInput::Loaded { epoch: 1, load: 1, result: Ok(store.load()) });
    m2.take_actions();
    m2.step(at(2_500), MetaInput::Tick);
    m2.step(at(2_600), MetaInput::WatchBroken { node: "r1".into() });
    assert!(!m2.take_actions().iter().any(|a| matches!(a, MetaAction::Probe { .. })));
}

#[test]
fn a_restarted_primary_continues_under_a_new_ballot_before_its_beacon_is_answered() {
    let (mut m, _) = leader();
    m.step(at(100), MetaInput::Request { token: 1, request: beacon("r1", 9, true) });
    let bumped = config(1, 0, 2, "r1", &["r2", "r3"]);
    let write = StoreWrite::UpdatePartition { config: bumped.clone(), expected_ballot: 1 };
    assert_eq!(m.take_actions(), vec![MetaAction::Persist { op: 1, epoch: 1, write }]);
    // The store is unreachable: the beacon fails, and the next one tries again.
    m.step(at(200), MetaInput::Stored { op: 1, result: Err(StoreFailure::new(StoreFailureKind::Unreachable, "down")) });
    let actions = m.take_actions();
    assert_eq!(actions[1], MetaAction::Reply { token: 1, result: Err(MetaError::Busy("down".into())) });
    m.step(at(1_100), MetaInput::Request { token: 2, request: beacon("r1", 9, true) });
    m.step(at(1_200), MetaInput::Stored { op: 2, result: Ok(StoreDone::Compared { updated: true }) });
    let actions = m.take_actions();
    assert_eq!(actions.last(), Some(&MetaAction::Reply { token: 2, result: beacon_reply(vec![bumped]) }));
    // Answered once: the same process does not get another ballot.
    m.step(at(2_100), MetaInput::Request { token: 3, request: beacon("r1", 9, true) });
    assert!(matches!(&m.take_actions()[..], [MetaAction::Reply { token: 3, .. }]));
}

#[test]
fn proposals_are_written_then_answered_or_refused_with_the_reason() {
    let (mut m, _) = leader();
    let remove = ConfigProposal::RemoveSecondary { ballot: 1, node: "r3".into() };
    m.step(at(10), MetaInput::Request { token: 1, request: MetaRequest::Propose { gpid: Gpid::new(1, 0), from: "r2".into(), proposal: remove.clone() } });
    let reason = "r2 is not the primary of 1.0".to_string();
    assert_eq!(
        m.take_actions(),
        vec![
            MetaAction::Event(MetaEvent::ProposalRefused { gpid: Gpid::new(1, 0), from: "r2".into(), proposal: remove.clone(), reason: reason.clone() }),
            MetaAction::Reply { token: 1, result: Err(MetaError::InvalidArgument(reason)) },
        ]
    );
    m.step(at(20), MetaInput::Request { token: 2, request: MetaRequest::Propose { gpid: Gpid::new(1, 0), from: "r1".into(), proposal: remove.clone() } });
    let next = PartitionConfig { last_drops: vec!["r3".into()], ..config(1, 0, 2, "r1", &["r2"]) };
    let write = StoreWrite::UpdatePartition { config: next.clone(), expected_ballot: 1 };
    assert_eq!(m.take_actions(), vec![MetaAction::Persist { op: 1, epoch: 1, write }]);
    m.step(at(30), MetaInput::Stored { op: 1, result: Ok(StoreDone::Compared { updated: true }) });
    let actions = m.take_actions();
    assert_eq!(actions[1], MetaAction::AskBeacon { nodes: ["r1", "r2", "r3"].into_iter().map(String::from).collect() }, "the removed member hears of it at once too");
    assert_eq!(actions[2], MetaAction::Reply { token: 2, result: Ok(MetaReply::Proposed { config: next }) });
}

#[test]
fn a_fenced_write_drops_everything_the_machine_held() {
    let (mut m, _) = leader();
    m.step(at(10), MetaInput::Request { token: 1, request: MetaRequest::DropTable { name: "t".into() } });
    m.step(at(11), MetaInput::Request { token: 2, request: MetaRequest::RecallTable { name: "t".into() } });
    assert!(matches!(&m.take_actions()[..], [MetaAction::Persist { op: 1, .. }]));
    m.step(at(20), MetaInput::Stored { op: 1, result: Err(StoreFailure::new(StoreFailureKind::Fenced, "fenced: epoch 2")) });
    let lost = MetaError::NotLeader { leader: None, message: "this meta server lost its leadership: fenced: epoch 2".into() };
    assert_eq!(
        m.take_actions(),
        vec![MetaAction::Reply { token: 1, result: Err(lost.clone()) }, MetaAction::Reply { token: 2, result: Err(lost) }]
    );
    assert!(m.state().is_none());
}

#[test]
fn a_new_table_is_written_then_placed_in_one_write() {
    let (mut m, mut store) = leader();
    for n in ["r1", "r2", "r3"] {
        m.step(at(10), MetaInput::Request { token: 0, request: beacon(n, 1, false) });
    }
    m.take_actions();
    let create = MetaRequest::CreateTable { name: "u".into(), partition_count: 2, change: PolicyChange { replicas: Some(2), ..Default::default() }, owner: "o".into(), who: "w".into() };
    m.step(at(20), MetaInput::Request { token: 5, request: create });
    // Carry out every write on the in-memory store until the request is answered.
    let mut answer = None;
    let mut writes = Vec::new();
    for _ in 0..10 {
        for action in m.take_actions() {
            match action {
                MetaAction::Persist { op, epoch, write } => {
                    let result = store.write("m1", epoch, &write);
                    writes.push(write);
                    m.step(at(30), MetaInput::Stored { op, result });
                }
                MetaAction::Reply { token: 5, result } => answer = Some(result),
                _ => {}
            }
        }
    }
    let Some(Ok(MetaReply::Created { table })) = answer else { panic!("{answer:?}") };
    assert_eq!((table.name.as_str(), table.partition_count, table.replica_count), ("u", 2, 2));
    assert_eq!(writes.len(), 2, "the table, then every partition's placement: {writes:?}");
    assert!(matches!(&writes[1], StoreWrite::PlacePartitions { configs } if configs.len() == 2), "{writes:?}");
    let placed: Vec<PartitionConfig> = store.load().partitions.into_iter().filter(|c| c.gpid.table_id == table.id).collect();
    assert_eq!(placed.len(), 2);
    assert!(placed.iter().all(|c| c.ballot == 1 && c.replica_count() == 2), "{placed:?}");
    assert_eq!(m.state().expect("leading").table_partitions(table.id).map(|(_, c)| c.clone()).collect::<Vec<_>>(), placed);
}

/// A partition's ballot in the store differs from the machine's (a write it had stopped waiting
/// for went through after its last load): it reloads instead of failing every later change of
/// the partition (found by the simulator, seed 3025).
#[test]
fn a_stale_state_is_loaded_again() {
    let (mut m, mut store) = leader();
    let remove = ConfigProposal::RemoveSecondary { ballot: 1, node: "r3".into() };
    m.step(at(10), MetaInput::Request { token: 1, request: MetaRequest::Propose { gpid: Gpid::new(1, 0), from: "r1".into(), proposal: remove } });
    assert!(matches!(&m.take_actions()[..], [MetaAction::Persist { op: 1, .. }]));
    // Behind the machine's back the store moved on.
    store.write("m1", 1, &StoreWrite::UpdatePartition { config: config(1, 0, 5, "r2", &["r3"]), expected_ballot: 1 }).unwrap();
    m.step(at(20), MetaInput::Stored { op: 1, result: Ok(StoreDone::Compared { updated: false }) });
    let busy = MetaError::Busy("partition 1.0 changed in the store behind this meta server; it reloads the store".into());
    let actions = m.take_actions();
    assert_eq!(actions[0], MetaAction::Reply { token: 1, result: Err(busy) });
    assert_eq!(actions.last(), Some(&MetaAction::Load { epoch: 1, load: 2 }));
    m.step(at(30), MetaInput::Loaded { epoch: 1, load: 2, result: Ok(store.load()) });
    assert_eq!(m.state().unwrap().partitions[&Gpid::new(1, 0)].ballot, 5);
    // A late success of a write it no longer waits for also means the state may be stale.
    m.take_actions();
    m.step(at(40), MetaInput::Stored { op: 77, result: Ok(StoreDone::Done) });
    assert_eq!(m.take_actions().last(), Some(&MetaAction::Load { epoch: 1, load: 3 }));
}

/// The leader lapsed behind a hung store with a write in flight, then won its lease back at the
/// same epoch: its load waits for that write's answer, so the loaded state includes it if it
/// went through — a load that missed it would answer beacons from a stale state (found by the
/// two-site simulator, seed 1820).
#[test]
fn a_load_waits_for_the_write_from_before_the_lapse() {
    let (mut m, mut store) = leader();
    let remove = ConfigProposal::RemoveSecondary { ballot: 1, node: "r3".into() };
    m.step(at(10), MetaInput::Request { token: 1, request: MetaRequest::Propose { gpid: Gpid::new(1, 0), from: "r1".into(), proposal: remove } });
    let Some(MetaAction::Persist { op, epoch, write }) = m.take_actions().pop() else { panic!("a write") };
    // The store hangs past the lease; the claim sent later comes back first, at the same epoch.
    m.step(at(TTL + 1_000), MetaInput::Claimed { sent_at_ms: TTL + 900, outcome: ClaimOutcome::Won { epoch: 1 } });
    let actions = m.take_actions();
    assert!(!actions.iter().any(|a| matches!(a, MetaAction::Load { .. })), "no load while the write is out: {actions:?}");
    assert!(m.state().is_none());
    // The write lands, then its answer comes: now the load goes, and sees it.
    let result = store.write("m1", epoch, &write);
    m.step(at(TTL + 1_100), MetaInput::Stored { op, result });
    assert_eq!(m.take_actions(), vec![MetaAction::Load { epoch: 1, load: 2 }]);
    m.step(at(TTL + 1_200), MetaInput::Loaded { epoch: 1, load: 2, result: Ok(store.load()) });
    assert_eq!(m.state().expect("leading").partitions[&Gpid::new(1, 0)].secondaries, vec!["r2".to_string()]);
}

/// Loads sent before a write came back after it: only the latest load's answer is taken (found
/// by the two-site simulator, seed 5227: a stale snapshot undid a duplication's resume).
#[test]
fn only_the_latest_load_is_taken() {
    let mut m = MetaMachine::new(options());
    m.step(at(0), MetaInput::Claimed { sent_at_ms: 0, outcome: ClaimOutcome::Won { epoch: 1 } });
    assert_eq!(m.take_actions(), vec![MetaAction::Load { epoch: 1, load: 1 }]);
    // A claim while loading asks for no second load.
    m.step(at(100), MetaInput::Claimed { sent_at_ms: 100, outcome: ClaimOutcome::Won { epoch: 1 } });
    assert_eq!(m.take_actions(), vec![]);
    // Lapsed, then won again: a fresh load; the first one's answer is not taken.
    m.step(at(TTL + 500), MetaInput::Claimed { sent_at_ms: TTL + 400, outcome: ClaimOutcome::Won { epoch: 1 } });
    assert_eq!(m.take_actions(), vec![MetaAction::Load { epoch: 1, load: 2 }]);
    m.step(at(TTL + 600), MetaInput::Loaded { epoch: 1, load: 1, result: Ok(MetaSnapshot::default()) });
    assert!(m.state().is_none(), "an earlier load's snapshot is ignored");
    m.step(at(TTL + 700), MetaInput::Loaded { epoch: 1, load: 2, result: Ok(MetaSnapshot::default()) });
    assert!(m.state().is_some());
}

/// A beacon that waited for the write in flight is answered right after it, ahead of the changes
/// queued meanwhile (a cure pass over many partitions could outlast its lease).
#[test]
fn a_beacon_waiting_for_a_write_goes_ahead_of_the_queue() {
    let (mut m, _) = leader();
    for t in [1_000, 5_000, 8_500] {
        m.step(at(t), MetaInput::Claimed { sent_at_ms: t, outcome: ClaimOutcome::Won { epoch: 1 } });
        for n in ["r2", "r3"] {
            m.step(at(t), MetaInput::Request { token: t, request: beacon(n, 1, false) });
        }
    }
    m.step(at(8_600), MetaInput::Tick);
    m.take_actions();
    let create = MetaRequest::CreateTable { name: "u".into(), partition_count: 1, change: PolicyChange { replicas: Some(1), ..Default::default() }, owner: "o".into(), who: "w".into() };
    m.step(at(8_650), MetaInput::Request { token: 50, request: create });
    m.step(at(8_700), MetaInput::Request { token: 51, request: beacon("r3", 1, false) });
    assert_eq!(m.take_actions(), vec![], "the create waits for the write in flight; r3's beacon too");
    m.step(at(8_800), MetaInput::Stored { op: 1, result: Ok(StoreDone::Compared { updated: true }) });
    let actions = m.take_actions();
    let beacon_at = actions.iter().position(|a| matches!(a, MetaAction::Reply { token: 51, .. })).expect("the beacon is answered");
    let create_at = actions.iter().position(|a| matches!(a, MetaAction::Persist { write: StoreWrite::CreateTable { .. }, .. })).expect("then the create goes");
    assert!(beacon_at < create_at, "{actions:?}");
}

/// Carries out the one write the machine asked for against `store`; returns the other actions.
fn store_and_answer(m: &mut MetaMachine, store: &mut MemStore, t: u64) -> Vec<MetaAction> {
    let actions = m.take_actions();
    let mut rest = Vec::new();
    for a in actions {
        match a {
            MetaAction::Persist { op, epoch, write } => {
                let result = store.write("m1", epoch, &write);
                m.step(at(t), MetaInput::Stored { op, result });
                rest.extend(store_and_answer(m, store, t));
            }
            other => rest.push(other),
        }
    }
    rest
}

fn ask(m: &mut MetaMachine, store: &mut MemStore, t: u64, request: MetaRequest) -> Result<MetaReply, MetaError> {
    m.step(at(t), MetaInput::Request { token: t, request });
    let mut replies: Vec<_> = store_and_answer(m, store, t)
        .into_iter()
        .filter_map(|a| match a {
            MetaAction::Reply { token, result } if token == t => Some(result),
            _ => None,
        })
        .collect();
    assert_eq!(replies.len(), 1, "one answer to request {t}");
    replies.remove(0)
}

fn site_b() -> Site {
    Site { name: "b".into(), metas: vec!["meta-b:34601".into()] }
}

#[test]
fn sites_and_duplications_are_kept_and_bad_requests_name_the_fix() {
    let (mut m, mut store) = leader();
    let add_dup = |site: &str| MetaRequest::DupAdd { table: "t".into(), remote_site: site.into(), fail_mode: FailMode::Slow, sync_existing: false };
    let err = ask(&mut m, &mut store, 10, add_dup("b")).unwrap_err();
    assert!(err.to_string().contains("tandem site add b --meta"), "{err}");
    let own = Site { name: "local".into(), metas: vec!["x:1".into()] };
    assert!(ask(&mut m, &mut store, 11, MetaRequest::SiteAdd { site: own }).unwrap_err().to_string().contains("own name"));
    assert_eq!(ask(&mut m, &mut store, 12, MetaRequest::SiteAdd { site: site_b() }), Ok(MetaReply::SiteAdded { site: site_b() }));
    assert!(matches!(ask(&mut m, &mut store, 13, MetaRequest::SiteAdd { site: site_b() }), Err(MetaError::AlreadyExists(_))));
    let Ok(MetaReply::DupAdded { dup }) = ask(&mut m, &mut store, 14, add_dup("b")) else { panic!() };
    assert_eq!((dup.id, dup.table_id, dup.status), (1, 1, DupStatus::Start));
    assert!(matches!(ask(&mut m, &mut store, 15, add_dup("b")), Err(MetaError::AlreadyExists(_))));
    let err = ask(&mut m, &mut store, 16, MetaRequest::SiteRemove { name: "b".into() }).unwrap_err();
    assert!(err.to_string().contains("tandem dup remove t 1"), "{err}");
    let set = |status| MetaRequest::DupSetStatus { dup_id: 1, status };
    assert!(matches!(ask(&mut m, &mut store, 17, set(DupStatus::Pause)), Ok(MetaReply::DupStatusSet { changed: true, .. })));
    assert!(matches!(ask(&mut m, &mut store, 18, set(DupStatus::Pause)), Ok(MetaReply::DupStatusSet { changed: false, .. })));
    assert!(matches!(ask(&mut m, &mut store, 19, set(DupStatus::Removed)), Ok(MetaReply::DupStatusSet { changed: true, .. })));
    assert!(ask(&mut m, &mut store, 20, set(DupStatus::Start)).unwrap_err().to_string().contains("was removed"));
    assert!(matches!(ask(&mut m, &mut store, 21, MetaRequest::DupSetStatus { dup_id: 9, status: DupStatus::Pause }), Err(MetaError::NotFound(_))));
    let Ok(MetaReply::Dups { dups }) = ask(&mut m, &mut store, 22, MetaRequest::DupList { table: None, include_removed: false }) else { panic!() };
    assert!(dups.is_empty());
    let Ok(MetaReply::Dups { dups }) = ask(&mut m, &mut store, 23, MetaRequest::DupList { table: Some("t".into()), include_removed: true }) else { panic!() };
    assert_eq!(dups.len(), 1);
    assert_eq!(ask(&mut m, &mut store, 24, MetaRequest::SiteRemove { name: "b".into() }), Ok(MetaReply::SiteRemoved { name: "b".into() }));
    // What was written is what a new leader loads.
    let loaded = store.load();
    assert_eq!((loaded.sites.len(), loaded.dups[0].status), (0, DupStatus::Removed));
}

#[test]
fn beacons_hand_out_duplications_and_progress_from_primaries_is_persisted_on_tick() {
    let (mut m, mut store) = leader();
    ask(&mut m, &mut store, 1, MetaRequest::SiteAdd { site: site_b() }).unwrap();
    let add = MetaRequest::DupAdd { table: "t".into(), remote_site: "b".into(), fail_mode: FailMode::Skip, sync_existing: true };
    ask(&mut m, &mut store, 2, add).unwrap();
    let report = |confirmed| crate::duplication::DupReport { confirmed, phase: "log".into(), watermark_us: confirmed * 10, ..Default::default() };
    let beacon_with = |node: &str, confirmed| MetaRequest::Beacon(BeaconRequest { dup_reports: vec![(Gpid::new(1, 0), 1, report(confirmed))], ..beacon_request(node) });
    let Ok(MetaReply::Beacon { dups, sites, .. }) = ask(&mut m, &mut store, 3, beacon_with("r1", 7)) else { panic!() };
    let expected = TableDup {
        dup_id: 1,
        table_id: 1,
        table: "t".into(),
        remote_site: "b".into(),
        paused: false,
        fail_mode: FailMode::Skip,
        sync_existing: true,
        confirmed: vec![],
        watermark_us: 70,
    };
    assert_eq!((dups, sites), (vec![expected.clone()], vec![site_b()]));
    // A secondary's report is not a primary's progress.
    ask(&mut m, &mut store, 4, beacon_with("r2", 99)).unwrap();
    m.step(at(5), MetaInput::Tick);
    let actions = m.take_actions();
    let save = StoreWrite::SaveDupProgress { confirmed: vec![(1, 0, 7)] };
    assert!(actions.iter().any(|a| matches!(a, MetaAction::Persist { write, .. } if *write == save)), "{actions:?}");
    let MetaAction::Persist { op, epoch, write } = actions.into_iter().find(|a| matches!(a, MetaAction::Persist { .. })).unwrap() else { panic!() };
    m.step(at(6), MetaInput::Stored { op, result: store.write("m1", epoch, &write) });
    m.take_actions();
    // A lower watermark (a new primary that has not read its log yet) does not take it back.
    let Ok(MetaReply::Beacon { dups, .. }) = ask(&mut m, &mut store, 7, beacon_with("r1", 5)) else { panic!() };
    assert_eq!(dups, vec![TableDup { confirmed: vec![(0, 7)], ..expected }]);
    // Nothing new: no progress write on the next tick.
    m.step(at(8), MetaInput::Tick);
    assert!(!m.take_actions().iter().any(|a| matches!(a, MetaAction::Persist { write: StoreWrite::SaveDupProgress { .. }, .. })));
    let Ok(MetaReply::Dups { dups }) = ask(&mut m, &mut store, 9, MetaRequest::DupList { table: None, include_removed: false }) else { panic!() };
    assert_eq!((dups[0].partitions[0].confirmed, dups[0].partitions[0].report.as_ref().map(|r| r.confirmed)), (Some(7), Some(5)));
}

#[test]
fn a_policy_that_names_a_site_takes_effect_through_a_duplication() {
    let (mut m, mut store) = leader();
    let set = |dup: Toggle<String>| MetaRequest::SetPolicy {
        table: "t".into(),
        change: PolicyChange { duplication: Some(dup), ..Default::default() },
        who: "alice".into(),
    };
    // An unknown site is refused with the command that adds one.
    let err = ask(&mut m, &mut store, 1, set(Toggle::On("b".into()))).unwrap_err();
    assert!(err.to_string().contains("tandem site add NAME --meta"), "{err}");
    ask(&mut m, &mut store, 2, MetaRequest::SiteAdd { site: site_b() }).unwrap();
    assert!(matches!(ask(&mut m, &mut store, 3, set(Toggle::On("b".into()))), Ok(MetaReply::PolicySet { changed: true, .. })));
    // The reconciliation ran behind the answer: a duplication to b exists.
    let Ok(MetaReply::Dups { dups }) = ask(&mut m, &mut store, 4, MetaRequest::DupList { table: None, include_removed: false }) else { panic!() };
    assert_eq!(dups.iter().map(|d| (d.info.remote_site.as_str(), d.info.status)).collect::<Vec<_>>(), [("b", DupStatus::Start)]);
    let id = dups[0].info.id;
    // Removing it by hand would fight the policy: refused with the fix.
    let err = ask(&mut m, &mut store, 5, MetaRequest::DupSetStatus { dup_id: id, status: DupStatus::Removed }).unwrap_err();
    assert!(err.to_string().contains("tandem policy set t --dup off"), "{err}");
    let Ok(MetaReply::PolicyStatus(status)) = ask(&mut m, &mut store, 6, MetaRequest::PolicyStatus { table: "t".into() }) else { panic!() };
    let dup = status.levels.iter().find(|l| l.level == "duplication").unwrap();
    assert_eq!((dup.actual.as_str(), dup.satisfied), ("duplication 1: 0 of 1 partitions reported so far", false));
    // The primary reports: the level is met, with the lag as the site-loss RPO.
    let report = crate::duplication::DupReport { confirmed: 5, lag_decrees: 2, lag_ms: 1500, phase: "log".into(), ..Default::default() };
    let beacon = BeaconRequest { dup_reports: vec![(Gpid::new(1, 0), id, report)], ..beacon_request("r1") };
    ask(&mut m, &mut store, 7, MetaRequest::Beacon(beacon)).unwrap();
    let Ok(MetaReply::PolicyStatus(status)) = ask(&mut m, &mut store, 8, MetaRequest::PolicyStatus { table: "t".into() }) else { panic!() };
    let dup = status.levels.iter().find(|l| l.level == "duplication").unwrap();
    assert_eq!((dup.actual.as_str(), dup.satisfied), ("shipping to b: site-loss RPO 1s 500ms (lag up to 2 decrees)", true));
    // Off: the duplication goes, in the policy's own write (one store write, nothing after it
    // that could fail and leave the duplication shipping).
    m.step(at(9), MetaInput::Request { token: 9, request: set(Toggle::Off) });
    let writes: Vec<(OpId, StoreWrite)> =
        m.take_actions().into_iter().filter_map(|a| match a { MetaAction::Persist { op, write, .. } => Some((op, write)), _ => None }).collect();
    assert!(matches!(&writes[..], [(_, StoreWrite::SetPolicy { .. })]), "{writes:?}");
    store.write("m1", 1, &writes[0].1).unwrap();
    assert_eq!(store.load().dups.iter().map(|d| d.status).collect::<Vec<_>>(), [DupStatus::Removed], "the store removed it with the policy");
    m.step(at(9), MetaInput::Stored { op: writes[0].0, result: Ok(StoreDone::Done) });
    let Ok(MetaReply::Dups { dups }) = ask(&mut m, &mut store, 10, MetaRequest::DupList { table: None, include_removed: false }) else { panic!() };
    assert!(dups.is_empty());
    assert!(!m.busy(), "no write follows the policy's");
}

#[test]
fn a_new_primary_drops_its_predecessors_duplication_report() {
    let (mut m, mut store) = leader();
    ask(&mut m, &mut store, 1, MetaRequest::SiteAdd { site: site_b() }).unwrap();
    let add = MetaRequest::DupAdd { table: "t".into(), remote_site: "b".into(), fail_mode: FailMode::Slow, sync_existing: false };
    ask(&mut m, &mut store, 2, add).unwrap();
    let report = crate::duplication::DupReport { confirmed: 3, phase: "log".into(), ..Default::default() };
    let beacon = BeaconRequest { node: "r1".into(), incarnation: 1, restarted: false, lease_period_ms: 6_000, reports: vec![], dup_reports: vec![(Gpid::new(1, 0), 1, report)], backup_reports: vec![], restore_failures: vec![], disk_short: None, replicas_max: None, refused: vec![], reports_delta: false, reports_gone: vec![], reports_digest: None, configs_digest: None };
    ask(&mut m, &mut store, 3, MetaRequest::Beacon(beacon)).unwrap();
    let reported = |m: &mut MetaMachine, store: &mut MemStore, t| {
        let Ok(MetaReply::Dups { dups }) = ask(m, store, t, MetaRequest::DupList { table: None, include_removed: false }) else { panic!() };
        dups[0].partitions[0].report.is_some()
    };
    assert!(reported(&mut m, &mut store, 4));
    // r1 goes silent past the grace period: the meta moves the primary to r2.
    for t in [1_000, 5_000, 8_500] {
        m.step(at(t), MetaInput::Claimed { sent_at_ms: t, outcome: ClaimOutcome::Won { epoch: 1 } });
        for n in ["r2", "r3"] {
            m.step(at(t), MetaInput::Request { token: 100 + t, request: beacon_plain(n) });
        }
    }
    m.take_actions();
    m.step(at(8_600), MetaInput::Tick);
    store_and_answer(&mut m, &mut store, 8_600);
    assert_eq!(m.state().unwrap().partitions[&Gpid::new(1, 0)].primary.as_deref(), Some("r2"));
    assert!(!reported(&mut m, &mut store, 8_700));
}

fn beacon_plain(node: &str) -> MetaRequest {
    beacon(node, 1, false)
}

fn backup_beacon(node: &str, backup_reports: Vec<crate::backup::BackupTaskReport>) -> MetaRequest {
    MetaRequest::Beacon(BeaconRequest { node: node.into(), incarnation: 1, restarted: false, lease_period_ms: 6_000, reports: vec![], dup_reports: vec![], backup_reports, restore_failures: vec![], disk_short: None, replicas_max: None, refused: vec![], reports_delta: false, reports_gone: vec![], reports_digest: None, configs_digest: None })
}

fn done_entry(partition: u32, attempt: u32) -> tandem_backup_core::PartitionEntry {
    tandem_backup_core::PartitionEntry {
        partition,
        attempt,
        decree: 7,
        manifest: tandem_backup_core::layout::partition_manifest_key(1, 1, partition, attempt),
        manifest_sha256: "0".repeat(64),
        manifest_bytes: 100,
        files: 3,
        bytes: 1000,
        new_bytes: 600,
        reused_bytes: 0,
        duration_ms: 5,
    }
}

#[test]
fn a_backup_is_handed_to_the_primary_and_complete_only_once_its_record_says_so() {
    use crate::backup::BackupTaskReport;
    use tandem_backup_core::PartitionReport;
    let (mut m, mut store) = leader();
    // Without a target anywhere: refused with the fix.
    let err = ask(&mut m, &mut store, 1, MetaRequest::BackupNow { table: "t".into(), target: None, who: "ann".into() }).unwrap_err();
    assert!(err.to_string().contains("--target"), "{err}");
    let err = ask(&mut m, &mut store, 1, MetaRequest::BackupNow { table: "t".into(), target: Some("http://x".into()), who: "ann".into() }).unwrap_err();
    assert!(err.to_string().contains("s3://BUCKET"), "{err}");
    let Ok(MetaReply::BackupStarted { backup }) = ask(&mut m, &mut store, 2, MetaRequest::BackupNow { table: "t".into(), target: Some("file:///bk".into()), who: "ann".into() }) else {
        panic!("started")
    };
    assert_eq!((backup.id, backup.state, backup.target.as_str()), (1, BackupState::Running, "file:///bk"));
    assert_eq!(store.load().backups, vec![backup.clone()], "the record exists before any upload");
    // One at a time per table.
    let err = ask(&mut m, &mut store, 3, MetaRequest::BackupNow { table: "t".into(), target: Some("file:///bk".into()), who: "bob".into() }).unwrap_err();
    assert!(matches!(err, MetaError::AlreadyExists(_)) && err.to_string().contains("tandem backup show 1"), "{err}");
    // The primary's beacon carries the task; a secondary's does not.
    let Ok(MetaReply::Beacon { backups, .. }) = ask(&mut m, &mut store, 4, backup_beacon("r2", vec![])) else { panic!() };
    assert!(backups.is_empty());
    let Ok(MetaReply::Beacon { backups, .. }) = ask(&mut m, &mut store, 5, backup_beacon("r1", vec![])) else { panic!() };
    let task = BackupTask { backup_id: 1, gpid: Gpid::new(1, 0), attempt: 1, target: "file:///bk".into(), kept: vec![] };
    assert_eq!(backups, vec![task]);
    // Its report of the partition's entry: the table manifest is written, then the record.
    let report = |attempt, report| BackupTaskReport { backup_id: 1, gpid: Gpid::new(1, 0), attempt, report };
    m.step(at(6), MetaInput::Request { token: 6, request: backup_beacon("r1", vec![report(1, PartitionReport::Done(done_entry(0, 1)))]) });
    let Some(MetaAction::WriteBackupManifest { backup_id: 1, target, key, bytes }) = m.take_actions().into_iter().find(|a| matches!(a, MetaAction::WriteBackupManifest { .. })) else {
        panic!("the table manifest goes out")
    };
    assert_eq!((target.as_str(), key.as_str()), ("file:///bk", "tables/1/backups/1/manifest.json"));
    let Ok(MetaReply::Backup(view)) = ask(&mut m, &mut store, 7, MetaRequest::BackupShow { id: 1 }) else { panic!() };
    assert_eq!((view.info.state, view.partitions[0].phase), (BackupState::Running, "done"), "not complete before its record");
    // A failed manifest write is retried at the next tick.
    m.step(at(8), MetaInput::BackupManifestWritten { backup_id: 1, result: Err("target down".into()) });
    m.take_actions();
    m.step(at(9), MetaInput::Tick);
    assert!(m.take_actions().iter().any(|a| matches!(a, MetaAction::WriteBackupManifest { backup_id: 1, .. })), "written again");
    m.step(at(10), MetaInput::BackupManifestWritten { backup_id: 1, result: Ok(()) });
    let rest = store_and_answer(&mut m, &mut store, 10);
    assert!(rest.iter().any(|a| matches!(a, MetaAction::Event(MetaEvent::Backup { id: 1, .. }))), "{rest:?}");
    let stored = store.load().backups.remove(0);
    assert_eq!((stored.state, stored.bytes, stored.new_bytes), (BackupState::Complete, 1000, 600));
    assert_eq!(stored.manifest_sha256, tandem_backup_core::manifest::sha256_hex(&bytes));
    let Ok(MetaReply::Backups { backups }) = ask(&mut m, &mut store, 11, MetaRequest::BackupList { table: Some("t".into()) }) else { panic!() };
    assert_eq!(backups, vec![stored.clone()]);
    // The next backup reuses files of the complete one.
    ask(&mut m, &mut store, 12, MetaRequest::BackupNow { table: "t".into(), target: Some("file:///bk".into()), who: "ann".into() }).unwrap();
    let Ok(MetaReply::Beacon { backups, .. }) = ask(&mut m, &mut store, 13, backup_beacon("r1", vec![])) else { panic!() };
    assert_eq!(backups[0].kept, vec![(1, stored.manifest_sha256.clone())]);
    // A failed attempt is handed out again; a report of an abandoned attempt changes nothing.
    ask(&mut m, &mut store, 14, backup_beacon("r1", vec![BackupTaskReport { backup_id: 2, ..report(1, PartitionReport::Failed("disk".into())) }])).unwrap();
    let Ok(MetaReply::Beacon { backups, .. }) = ask(&mut m, &mut store, 15, backup_beacon("r1", vec![])) else { panic!() };
    assert_eq!(backups[0].attempt, 2);
    let stale = BackupTaskReport { backup_id: 2, ..report(1, PartitionReport::Done(done_entry(0, 1))) };
    m.step(at(16), MetaInput::Request { token: 16, request: backup_beacon("r1", vec![stale]) });
    assert!(!m.take_actions().iter().any(|a| matches!(a, MetaAction::WriteBackupManifest { .. })));
    // Unknown ids are named.
    let err = ask(&mut m, &mut store, 17, MetaRequest::BackupShow { id: 99 }).unwrap_err();
    assert!(err.to_string().contains("tandem backup list"), "{err}");
}

#[test]
fn a_new_leader_fails_the_backups_it_finds_running() {
    let (mut m, mut store) = leader();
    ask(&mut m, &mut store, 1, MetaRequest::BackupNow { table: "t".into(), target: Some("file:///bk".into()), who: "ann".into() }).unwrap();
    // Another meta server takes over and loads the store: the job lived in this one's memory.
    store.claim("m2", "m2", TTL, 100_000);
    let mut m2 = MetaMachine::new(options());
    m2.step(at(0), MetaInput::Claimed { sent_at_ms: 0, outcome: ClaimOutcome::Won { epoch: 2 } });
    m2.take_actions();
    m2.step(at(1), MetaInput::Loaded { epoch: 2, load: 1, result: Ok(store.load()) });
    m2.take_actions();
    m2.step(at(2), MetaInput::Tick);
    let failed = m2.take_actions().into_iter().find_map(|a| match a {
        MetaAction::Persist { write: StoreWrite::FailBackups { ids, reason, .. }, .. } => Some((ids, reason)),
        _ => None,
    });
    assert_eq!(failed, Some((vec![1], crate::backup::FAILED_BY_TAKEOVER.to_string())));
    // The old leader's late completion is fenced.
    assert_eq!(store.write("m1", 1, &StoreWrite::CompleteBackup { id: 1, at_ms: 5, manifest_sha256: "x".into(), bytes: 0, new_bytes: 0 }).unwrap_err().kind, StoreFailureKind::Fenced);
}

/// Drives running backup `id` (table 1, one partition, primary r1) to complete at `t`.
fn complete_backup(m: &mut MetaMachine, store: &mut MemStore, t: u64, id: u64) -> Vec<MetaAction> {
    use tandem_backup_core::PartitionReport;
    ask(m, store, t, backup_beacon("r1", vec![])).unwrap();
    let entry = tandem_backup_core::PartitionEntry { manifest: tandem_backup_core::layout::partition_manifest_key(1, id, 0, 1), ..done_entry(0, 1) };
    let report = crate::backup::BackupTaskReport { backup_id: id, gpid: Gpid::new(1, 0), attempt: 1, report: PartitionReport::Done(entry) };
    m.step(at(t + 1), MetaInput::Request { token: t + 1, request: backup_beacon("r1", vec![report]) });
    assert!(m.take_actions().iter().any(|a| matches!(a, MetaAction::WriteBackupManifest { backup_id, .. } if *backup_id == id)));
    m.step(at(t + 2), MetaInput::BackupManifestWritten { backup_id: id, result: Ok(()) });
    store_and_answer(m, store, t + 2)
}

#[test]
fn the_policy_schedules_backups_keeps_the_newest_and_collects_what_it_deletes() {
    let (mut m, mut store) = leader();
    let change = PolicyChange { backup_every_ms: Some(Toggle::On(3_600_000)), backup_keep: Some(1), backup_target: Some("file:///bk".into()), ..Default::default() };
    ask(&mut m, &mut store, 1, MetaRequest::SetPolicy { table: "t".into(), change, who: "ann".into() }).unwrap();
    let Ok(MetaReply::PolicyStatus(status)) = ask(&mut m, &mut store, 2, MetaRequest::PolicyStatus { table: "t".into() }) else { panic!() };
    let backup = status.levels.iter().find(|l| l.level == "backup").unwrap();
    assert_eq!((backup.actual.as_str(), backup.satisfied), ("no complete backup yet", false));
    // Due at once: the table has none.
    m.step(at(3), MetaInput::Tick);
    store_and_answer(&mut m, &mut store, 3);
    let records = store.load().backups;
    assert_eq!(records.iter().map(|b| (b.id, b.who.as_str(), b.state)).collect::<Vec<_>>(), [(1, "schedule", BackupState::Running)]);
    complete_backup(&mut m, &mut store, 10, 1);
    assert_eq!(store.load().backups[0].state, BackupState::Complete);
    // Not due again before its interval; a manual one meanwhile, then retention keeps 1.
    m.step(at(20), MetaInput::Tick);
    store_and_answer(&mut m, &mut store, 20);
    assert_eq!(store.load().backups.len(), 1);
    ask(&mut m, &mut store, 21, MetaRequest::BackupNow { table: "t".into(), target: None, who: "bob".into() }).unwrap();
    // A complete backup is not deleted while one of its table runs (the running one may reuse it).
    let err = ask(&mut m, &mut store, 22, MetaRequest::BackupDelete { id: 1, who: "bob".into() }).unwrap_err();
    assert!(matches!(err, MetaError::Busy(_)) && err.to_string().contains("backup 2"), "{err}");
    m.step(at(23), MetaInput::Tick);
    store_and_answer(&mut m, &mut store, 23);
    assert_eq!(store.load().backups[0].state, BackupState::Complete, "retention waits for the running backup");
    complete_backup(&mut m, &mut store, 30, 2);
    m.step(at(40), MetaInput::Tick);
    let rest = store_and_answer(&mut m, &mut store, 40);
    let b1 = store.load().backups[0].clone();
    assert_eq!((b1.state, b1.reason.as_str()), (BackupState::Deleted, "retention: the policy keeps the newest 1"));
    assert!(rest.contains(&MetaAction::CollectBackupGarbage { table_id: 1, target: "file:///bk".into() }), "{rest:?}");
    let collected = m.backup_records_for(1, "file:///bk").unwrap();
    assert_eq!(collected.iter().map(|r| (r.record.id, r.record.state)).collect::<Vec<_>>(), [(1, BackupState::Deleted), (2, BackupState::Complete)]);
    let Ok(MetaReply::PolicyStatus(status)) = ask(&mut m, &mut store, 41, MetaRequest::PolicyStatus { table: "t".into() }) else { panic!() };
    let backup = status.levels.iter().find(|l| l.level == "backup").unwrap();
    assert!(backup.satisfied && backup.actual.starts_with("last good backup 2 finished"), "{backup:?}");
    // Deleting: only complete ones; a deleted one is refused with why.
    let err = ask(&mut m, &mut store, 42, MetaRequest::BackupDelete { id: 1, who: "bob".into() }).unwrap_err();
    assert!(err.to_string().contains("is deleted"), "{err}");
    assert!(matches!(ask(&mut m, &mut store, 43, MetaRequest::BackupDelete { id: 2, who: "bob".into() }), Ok(MetaReply::BackupDeleted { .. })));
    // An hour after backup 2 started (the lease lapsed meanwhile: claimed and loaded again): due.
    let later = 3_600_100;
    m.step(at(later), MetaInput::Claimed { sent_at_ms: later, outcome: ClaimOutcome::Won { epoch: 1 } });
    let Some(MetaAction::Load { epoch, load }) = m.take_actions().into_iter().find(|a| matches!(a, MetaAction::Load { .. })) else { panic!("a load") };
    m.step(at(later), MetaInput::Loaded { epoch, load, result: Ok(store.load()) });
    m.step(at(later), MetaInput::Tick);
    store_and_answer(&mut m, &mut store, later);
    assert_eq!(store.load().backups.last().map(|b| (b.id, b.state)), Some((3, BackupState::Running)));
}

#[test]
fn a_start_time_schedules_backups_at_its_slots_not_an_interval_after_the_last() {
    let (mut m, mut store) = leader();
    let at_0230 = crate::policy::BackupAt::parse("02:30").unwrap();
    let change = PolicyChange {
        backup_every_ms: Some(Toggle::On(6 * 3_600_000)),
        backup_at: Some(Toggle::On(at_0230)),
        backup_keep: Some(5),
        backup_target: Some("file:///bk".into()),
        ..Default::default()
    };
    ask(&mut m, &mut store, 1, MetaRequest::SetPolicy { table: "t".into(), change, who: "ann".into() }).unwrap();
    let Ok(MetaReply::PolicyStatus(status)) = ask(&mut m, &mut store, 2, MetaRequest::PolicyStatus { table: "t".into() }) else { panic!() };
    let backup = status.levels.iter().find(|l| l.level == "backup").unwrap();
    // at(0) is 2023-11-14 22:13:20 UTC: the next slot is 02:30 the day after.
    assert_eq!(backup.desired, "every 6h from 02:30 UTC, next 2023-11-15 02:30 UTC, keep 5, to file:///bk");
    // The first backup comes at once (the table has none), the next at the first slot after it.
    m.step(at(3), MetaInput::Tick);
    store_and_answer(&mut m, &mut store, 3);
    complete_backup(&mut m, &mut store, 10, 1);
    let slot = 15_400_000; // 2023-11-15 02:30 UTC
    let relead = |m: &mut MetaMachine, store: &mut MemStore, t: u64| {
        m.step(at(t), MetaInput::Claimed { sent_at_ms: t, outcome: ClaimOutcome::Won { epoch: 1 } });
        // A lease that lapsed since the last step is claimed again and the store loaded.
        if let Some(MetaAction::Load { epoch, load }) = m.take_actions().into_iter().find(|a| matches!(a, MetaAction::Load { .. })) {
            m.step(at(t), MetaInput::Loaded { epoch, load, result: Ok(store.load()) });
        }
        m.step(at(t), MetaInput::Tick);
        store_and_answer(m, store, t);
    };
    relead(&mut m, &mut store, slot - 1);
    assert_eq!(store.load().backups.len(), 1, "not before 02:30, though 4 hours passed");
    relead(&mut m, &mut store, slot);
    assert_eq!(store.load().backups.last().map(|b| (b.id, b.state, b.who.clone())), Some((2, BackupState::Running, "schedule".into())));
    complete_backup(&mut m, &mut store, slot + 10, 2);
    relead(&mut m, &mut store, slot + 6 * 3_600_000 - 1);
    assert_eq!(store.load().backups.len(), 2, "08:30 has not come");
    relead(&mut m, &mut store, slot + 6 * 3_600_000);
    assert_eq!(store.load().backups.len(), 3, "08:30");
}

/// Found wiring the simulator's restore drills: retention (or a delete) could remove a backup a
/// running restore was reading, and collection its objects under the restore.
#[test]
fn a_backup_a_restore_reads_is_neither_deleted_nor_expired_until_the_restore_finishes() {
    let (mut m, mut store) = leader();
    let change = PolicyChange { backup_every_ms: Some(Toggle::On(3_600_000)), backup_keep: Some(1), backup_target: Some("file:///bk".into()), ..Default::default() };
    ask(&mut m, &mut store, 1, MetaRequest::SetPolicy { table: "t".into(), change, who: "ann".into() }).unwrap();
    m.step(at(3), MetaInput::Tick);
    store_and_answer(&mut m, &mut store, 3);
    complete_backup(&mut m, &mut store, 10, 1);
    let restore = MetaRequest::Restore { backup_id: 1, table: Some("t2".into()), as_original: false, who: "ann".into() };
    assert!(matches!(ask(&mut m, &mut store, 20, restore), Ok(MetaReply::Created { .. })));
    let err = ask(&mut m, &mut store, 21, MetaRequest::BackupDelete { id: 1, who: "bob".into() }).unwrap_err();
    assert!(matches!(err, MetaError::Busy(_)) && err.to_string().contains("restore 1 into table \"t2\" is reading backup 1"), "{err}");
    ask(&mut m, &mut store, 22, MetaRequest::BackupNow { table: "t".into(), target: None, who: "bob".into() }).unwrap();
    complete_backup(&mut m, &mut store, 30, 2);
    m.step(at(40), MetaInput::Tick);
    store_and_answer(&mut m, &mut store, 40);
    let b1 = store.load().backups.into_iter().find(|b| b.id == 1).unwrap();
    assert_eq!(b1.state, BackupState::Complete, "retention keeps 1, but waits for the restore");
}

#[test]
fn a_restore_creates_the_table_hands_out_its_source_and_completes_once_every_member_opened() {
    use crate::backup::RestoreState;
    let (mut m, mut store) = leader();
    ask(&mut m, &mut store, 1, MetaRequest::BackupNow { table: "t".into(), target: Some("file:///bk".into()), who: "ann".into() }).unwrap();
    complete_backup(&mut m, &mut store, 2, 1);
    let restore = |table: Option<&str>, as_original| MetaRequest::Restore { backup_id: 1, table: table.map(str::to_string), as_original, who: "ann".into() };
    // What a user gets wrong is named.
    let err = ask(&mut m, &mut store, 10, restore(None, false)).unwrap_err();
    assert!(err.to_string().contains("--table NEW_NAME"), "{err}");
    let err = ask(&mut m, &mut store, 11, restore(None, true)).unwrap_err();
    assert!(matches!(err, MetaError::AlreadyExists(_)) && err.to_string().contains("drop it first"), "{err}");
    let err = ask(&mut m, &mut store, 12, MetaRequest::Restore { backup_id: 9, table: Some("x".into()), as_original: false, who: "ann".into() }).unwrap_err();
    assert!(matches!(err, MetaError::NotFound(_)), "{err}");
    let Ok(MetaReply::Created { table }) = ask(&mut m, &mut store, 13, restore(Some("t2"), false)) else { panic!("restored") };
    assert_eq!((table.id, table.partition_count, table.replica_count), (2, 1, 3));
    let err = ask(&mut m, &mut store, 14, restore(Some("t2"), false)).unwrap_err();
    assert!(matches!(err, MetaError::AlreadyExists(_)), "{err}");
    let stored = store.load().restores;
    assert_eq!(stored.iter().map(|r| (r.id, r.table_id, r.backup_id, r.state)).collect::<Vec<_>>(), [(1, 2, 1, RestoreState::Running)]);
    // Every server hosting the table is told where its data comes from.
    let Ok(MetaReply::Beacon { restores, configs, .. }) = ask(&mut m, &mut store, 15, backup_beacon("r2", vec![])) else { panic!() };
    assert!(configs.iter().any(|c| c.gpid == Gpid::new(2, 0)));
    assert_eq!(restores, vec![stored[0].source()]);
    assert_eq!(restores[0].manifest_sha256, store.load().backups[0].manifest_sha256);
    // Complete once every member reports the partition (it opened on the restored data).
    let report = ReplicaReport { ballot: 1, status: "secondary".into(), last_committed: 7, last_prepared: 7 };
    let config = m.state().unwrap().partitions[&Gpid::new(2, 0)].clone();
    for (i, n) in config.members().enumerate() {
        m.step(at(20), MetaInput::Tick);
        store_and_answer(&mut m, &mut store, 20);
        assert_eq!(store.load().restores[0].state, RestoreState::Running, "{i} of 3 members reported");
        let b = BeaconRequest { node: n.to_string(), incarnation: 1, restarted: false, lease_period_ms: 6_000, reports: vec![(Gpid::new(2, 0), report.clone())], dup_reports: vec![], backup_reports: vec![], restore_failures: vec![], disk_short: None, replicas_max: None, refused: vec![], reports_delta: false, reports_gone: vec![], reports_digest: None, configs_digest: None };
        ask(&mut m, &mut store, 21 + i as u64, MetaRequest::Beacon(b)).unwrap();
    }
    m.step(at(30), MetaInput::Tick);
    store_and_answer(&mut m, &mut store, 30);
    assert_eq!(store.load().restores[0].state, RestoreState::Complete);
    let Ok(MetaReply::Restores { restores }) = ask(&mut m, &mut store, 31, MetaRequest::RestoreList) else { panic!() };
    assert_eq!((restores[0].info.state, restores[0].partitions_ready), (RestoreState::Complete, 1));
    let Ok(MetaReply::Beacon { restores, .. }) = ask(&mut m, &mut store, 32, backup_beacon("r2", vec![])) else { panic!() };
    assert!(restores.is_empty(), "a replica added later learns from its primary");
    // A restore from a damaged backup: a transient failure is shown, a permanent one fails it,
    // and its table's servers keep the source (a replica never opens empty).
    let Ok(MetaReply::Created { table }) = ask(&mut m, &mut store, 40, restore(Some("t3"), false)) else { panic!() };
    let failure = |error: &str, permanent| crate::backup::RestoreFailure { gpid: Gpid::new(table.id, 0), error: error.into(), permanent };
    let b = |failures| MetaRequest::Beacon(BeaconRequest { node: "r2".into(), incarnation: 1, restarted: false, lease_period_ms: 6_000, reports: vec![], dup_reports: vec![], backup_reports: vec![], restore_failures: failures, disk_short: None, replicas_max: None, refused: vec![], reports_delta: false, reports_gone: vec![], reports_digest: None, configs_digest: None });
    ask(&mut m, &mut store, 41, b(vec![failure("target down", false)])).unwrap();
    let Ok(MetaReply::Restores { restores }) = ask(&mut m, &mut store, 42, MetaRequest::RestoreList) else { panic!() };
    assert_eq!((restores[1].info.state, restores[1].last_error.as_deref()), (RestoreState::Running, Some("partition 0 on r2: target down")));
    ask(&mut m, &mut store, 43, b(vec![failure("object tables/1/objects/x-1 is missing", true)])).unwrap();
    let failed = store.load().restores[1].clone();
    assert_eq!((failed.state, failed.reason.as_str()), (RestoreState::Failed, "partition 0 on r2: object tables/1/objects/x-1 is missing"));
    let Ok(MetaReply::Beacon { restores, .. }) = ask(&mut m, &mut store, 44, backup_beacon("r2", vec![])) else { panic!() };
    assert_eq!(restores.iter().map(|r| r.table_id).collect::<Vec<_>>(), [table.id]);
}

/// The answer that took the lease early can arrive after a renewal's at the same epoch, after
/// the state loaded: its hold still applies (simulator seed 4270).
#[test]
fn an_early_takeover_learned_after_the_load_still_holds_declarations() {
    let (_, store) = leader();
    let mut m = MetaMachine::new(options());
    m.step(at(0), MetaInput::Claimed { sent_at_ms: 0, outcome: ClaimOutcome::Won { epoch: 1 } });
    m.step(at(1), MetaInput::Loaded { epoch: 1, load: 1, result: Ok(store.load()) });
    m.step(at(10), MetaInput::Claimed { sent_at_ms: 0, outcome: ClaimOutcome::WonEarly { epoch: 1, predecessor_ms: 20_000 } });
    m.take_actions();
    for t in (1_000..28_000).step_by(1_000) {
        m.step(at(t), MetaInput::Claimed { sent_at_ms: t, outcome: ClaimOutcome::Won { epoch: 1 } });
    }
    m.step(at(27_999), MetaInput::Tick);
    assert!(!m.take_actions().iter().any(|a| matches!(a, MetaAction::Event(MetaEvent::NodeDead { .. }))), "the predecessor may still lease them");
    m.step(at(28_000), MetaInput::Claimed { sent_at_ms: 28_000, outcome: ClaimOutcome::Won { epoch: 1 } });
    m.step(at(28_011), MetaInput::Tick);
    assert!(m.take_actions().contains(&MetaAction::Event(MetaEvent::NodeDead { node: "r1".into(), refused: false })));
}

/// A server whose beacon says its disk is below the reserve is shown (nodes, status), gets no
/// replica of a new table, does not count towards the replicas a policy may ask for, and is
/// placeable again once a beacon says it has room.
#[test]
fn a_server_short_of_disk_gets_no_new_replicas_and_is_shown() {
    use tandem_core::replica::DiskShort;
    let (mut m, mut store) = leader();
    let short = DiskShort { dir: "/data".into(), free_bytes: 40, reserve_bytes: 50 };
    for (t, n) in [(2, "r1"), (3, "r2"), (4, "r3")] {
        ask(&mut m, &mut store, t, beacon(n, 1, false)).unwrap();
    }
    let MetaRequest::Beacon(b) = beacon("r4", 1, false) else { unreachable!() };
    let short_beacon = MetaRequest::Beacon(BeaconRequest { disk_short: Some(short.clone()), ..b.clone() });
    let announced = MetaAction::Event(MetaEvent::DiskShort { node: "r4".into(), short: Some(short.clone()) });
    m.step(at(5), MetaInput::Request { token: 5, request: short_beacon.clone() });
    let actions = store_and_answer(&mut m, &mut store, 5);
    assert!(actions.contains(&announced), "{actions:?}");
    m.step(at(6), MetaInput::Request { token: 6, request: short_beacon });
    let actions = store_and_answer(&mut m, &mut store, 6);
    assert!(!actions.iter().any(|a| matches!(a, MetaAction::Event(MetaEvent::DiskShort { .. }))), "a server still short is not announced again: {actions:?}");
    let Ok(MetaReply::Nodes { nodes }) = ask(&mut m, &mut store, 7, MetaRequest::ListNodes) else { panic!() };
    let r4 = nodes.iter().find(|n| n.address == "r4").unwrap();
    assert_eq!(r4.disk_short, Some(short.clone()));
    assert!(nodes.iter().filter(|n| n.address != "r4").all(|n| n.disk_short.is_none()));
    let Ok(MetaReply::Status(status)) = ask(&mut m, &mut store, 8, MetaRequest::ClusterStatus) else { panic!() };
    assert!(status.problems.iter().any(|p| p.contains("replica server r4: disk almost full: /data has 40 bytes free, reserve 50")), "{:?}", status.problems);
    // Four alive, one short: four replicas are refused with the reason, three are placed
    // without it although it hosts the fewest.
    let create = |replicas| MetaRequest::CreateTable { name: "u".into(), partition_count: 4, change: PolicyChange { replicas: Some(replicas), ..Default::default() }, owner: "o".into(), who: "w".into() };
    let Err(MetaError::InvalidArgument(e)) = ask(&mut m, &mut store, 9, create(4)) else { panic!() };
    assert!(e.contains("exceeds the 3 live replica servers with disk room (r4 below the disk reserve"), "{e}");
    let Ok(MetaReply::Created { table }) = ask(&mut m, &mut store, 10, create(3)) else { panic!() };
    let placed: Vec<PartitionConfig> = store.load().partitions.into_iter().filter(|c| c.gpid.table_id == table.id).collect();
    assert_eq!(placed.len(), 4);
    assert!(placed.iter().all(|c| !c.hosts("r4")), "{placed:?}");
    // Room again: shown, announced, and placeable.
    m.step(at(11), MetaInput::Request { token: 11, request: MetaRequest::Beacon(b) });
    let actions = store_and_answer(&mut m, &mut store, 11);
    assert!(actions.contains(&MetaAction::Event(MetaEvent::DiskShort { node: "r4".into(), short: None })), "{actions:?}");
    let Ok(MetaReply::Nodes { nodes }) = ask(&mut m, &mut store, 12, MetaRequest::ListNodes) else { panic!() };
    assert!(nodes.iter().all(|n| n.disk_short.is_none()));
    assert_eq!(m.state().unwrap().load().len(), 4);
}

/// Below the reserve under its store, the meta refuses the requests that add metadata with
/// disk-full, naming the figures, and goes on with reads, beacons and drops; it takes them again
/// once the disk is above the reserve plus a quarter.
#[test]
fn a_short_store_disk_refuses_requests_that_add_metadata_only() {
    use tandem_core::disk::{DirSpace, DiskShort};
    let (mut m, mut store) = leader();
    let space = |free_bytes| MetaInput::StoreDiskSpace { dirs: vec![DirSpace { dir: "/meta".into(), free_bytes, total_bytes: 1_000 }] };
    m.step(at(2), space(40));
    let short = DiskShort { dir: "/meta".into(), free_bytes: 40, reserve_bytes: 50 };
    assert_eq!(m.take_actions(), vec![MetaAction::Event(MetaEvent::StoreDiskShort { short: Some(short) })]);
    let create = |name: &str| MetaRequest::CreateTable { name: name.into(), partition_count: 1, change: PolicyChange { replicas: Some(1), ..Default::default() }, owner: "o".into(), who: "w".into() };
    let Err(MetaError::DiskFull(e)) = ask(&mut m, &mut store, 3, create("u")) else { panic!() };
    assert!(e.contains("/meta has 40 bytes free, reserve 50") && e.contains("refused until space is freed"), "{e}");
    ask(&mut m, &mut store, 4, beacon("r1", 1, false)).expect("beacons go on");
    let Ok(MetaReply::Status(status)) = ask(&mut m, &mut store, 5, MetaRequest::ClusterStatus) else { panic!() };
    assert!(status.problems.iter().any(|p| p.contains("the metadata store's disk almost full")), "{:?}", status.problems);
    ask(&mut m, &mut store, 6, MetaRequest::DropTable { name: "t".into() }).expect("a drop frees space: taken");
    // Above the reserve but not by a quarter: still refused; past it, taken.
    m.step(at(7), space(60));
    assert!(matches!(ask(&mut m, &mut store, 8, create("u")), Err(MetaError::DiskFull(_))));
    m.step(at(9), space(63));
    assert_eq!(m.take_actions(), vec![MetaAction::Event(MetaEvent::StoreDiskShort { short: None })]);
    let Ok(MetaReply::Created { .. }) = ask(&mut m, &mut store, 10, create("u")) else { panic!() };
}

/// A restarted server's beacon retried while the first waits behind a slow store write is not
/// answered with its previous life's ballots: every beacon of the process asks for the new
/// ballots until they are written, and they are written once (seed 2307).
#[test]
fn a_retried_beacon_of_a_restarted_server_waits_for_its_new_ballots() {
    let (mut m, mut store) = leader();
    ask(&mut m, &mut store, 2, beacon("r1", 1, false)).unwrap();
    // A write that touches none of r1's partitions is in flight (the store is slow).
    let create = MetaRequest::CreateTable { name: "u".into(), partition_count: 1, change: PolicyChange { replicas: Some(1), ..Default::default() }, owner: "o".into(), who: "w".into() };
    m.step(at(3), MetaInput::Request { token: 3, request: create });
    let held = m.take_actions();
    let [MetaAction::Persist { op, epoch, write }] = &held[..] else { panic!("{held:?}") };
    // r1 restarts: its first beacon waits behind the write, and so does its retry.
    m.step(at(4), MetaInput::Request { token: 4, request: beacon("r1", 2, true) });
    m.step(at(5), MetaInput::Request { token: 5, request: beacon("r1", 2, true) });
    let waiting = m.take_actions();
    assert!(!waiting.iter().any(|a| matches!(a, MetaAction::Reply { .. })), "nothing answered before the new ballot: {waiting:?}");
    let result = store.write("m1", *epoch, write);
    m.step(at(6), MetaInput::Stored { op: *op, result });
    let actions = store_and_answer(&mut m, &mut store, 6);
    let answers: Vec<&PartitionConfig> = actions
        .iter()
        .filter_map(|a| match a {
            MetaAction::Reply { token: 4 | 5, result: Ok(MetaReply::Beacon { configs, .. }) } => configs.iter().find(|c| c.gpid == Gpid::new(1, 0)),
            _ => None,
        })
        .collect();
    assert_eq!(answers.len(), 2, "{actions:?}");
    assert!(answers.iter().all(|c| c.ballot == 2 && c.primary.as_deref() == Some("r1")), "one new ballot, in both answers: {answers:?}");
}

/// Beacons give each server's most replicas: placement puts no more on it, a table that does not
/// fit is refused naming the fix, and a replica a server refused is placed elsewhere.
#[test]
fn servers_get_no_more_replicas_than_they_host_and_a_refused_one_moves() {
    let (mut m, mut store) = leader();
    let with_max = |node: &str, max: u32, refused: Vec<Gpid>| {
        let MetaRequest::Beacon(b) = beacon(node, 1, false) else { unreachable!() };
        MetaRequest::Beacon(BeaconRequest { replicas_max: Some(max), refused, ..b })
    };
    // r1..r3 host table 1's one partition; r4 takes two replicas, the others five.
    for (t, n, max) in [(2, "r1", 5), (3, "r2", 5), (4, "r3", 5), (5, "r4", 2)] {
        ask(&mut m, &mut store, t, with_max(n, max, vec![])).unwrap();
    }
    let create = |name: &str, partitions| MetaRequest::CreateTable { name: name.into(), partition_count: partitions, change: PolicyChange { replicas: Some(3), ..Default::default() }, owner: "o".into(), who: "w".into() };
    // 17 - 3 = 14 replicas of room: 8 × 3 do not fit.
    let Err(MetaError::InvalidArgument(e)) = ask(&mut m, &mut store, 6, create("big", 8)) else { panic!() };
    assert!(e.contains("8 partitions of 3 replicas need 24 replicas") && e.contains("take 14 more") && e.contains("r4 hosts 0 of 2") && e.contains("ulimit -n"), "{e}");
    let Ok(MetaReply::Created { table }) = ask(&mut m, &mut store, 7, create("u", 4)) else { panic!() };
    let placed: Vec<PartitionConfig> = store.load().partitions.into_iter().filter(|c| c.gpid.table_id == table.id).collect();
    assert_eq!(placed.len(), 4);
    assert!(placed.iter().all(|c| c.replica_count() == 3 && c.ballot == 1), "{placed:?}");
    let hosted = |node: &str| store.load().partitions.iter().filter(|c| c.hosts(node)).count();
    assert_eq!([hosted("r1"), hosted("r2"), hosted("r3"), hosted("r4")], [5, 4, 4, 2], "most room first, none past its most");
    // A raised replica count must fit too: r2 and r3 have room for one each, but both host
    // table t's partition already, and r1 and r4 are full.
    let raise = |table: &str, replicas| MetaRequest::SetPolicy { table: table.into(), change: PolicyChange { replicas: Some(replicas), ..Default::default() }, who: "w".into() };
    let Err(MetaError::InvalidArgument(e)) = ask(&mut m, &mut store, 70, raise("t", 4)) else { panic!() };
    assert!(e.contains("raising table \"t\" from 3 to 4 replicas does not fit") && e.contains("take 0 more"), "{e}");
    let Err(MetaError::InvalidArgument(e)) = ask(&mut m, &mut store, 71, raise("u", 4)) else { panic!() };
    assert!(e.contains("4 partitions of 1 replicas need 4 replicas") && e.contains("take 2 more"), "{e}");
    let Ok(MetaReply::Nodes { nodes }) = ask(&mut m, &mut store, 78, MetaRequest::ListNodes) else { panic!() };
    assert_eq!(nodes.iter().map(|n| n.replicas_max).collect::<Vec<_>>(), vec![Some(5), Some(5), Some(5), Some(2)]);
    // r4 refuses one of its two (say its limit went down since): cure takes it out of that
    // partition and puts a learner on r3, the only server with room.
    let victim = placed.iter().find(|c| c.hosts("r4")).unwrap().clone();
    let gpid = victim.gpid;
    m.step(at(79), MetaInput::Request { token: 79, request: with_max("r4", 1, vec![gpid]) });
    let actions = store_and_answer(&mut m, &mut store, 79);
    assert!(actions.contains(&MetaAction::Event(MetaEvent::ReplicasRefused { node: "r4".into(), gpids: vec![gpid], replicas_max: Some(1) })), "{actions:?}");
    let Ok(MetaReply::Status(status)) = ask(&mut m, &mut store, 80, MetaRequest::ClusterStatus) else { panic!() };
    assert!(status.problems.iter().any(|p| p.contains("replica server r4 refused 1 replicas: it hosts 1")), "{:?}", status.problems);
    for t in [81, 82] {
        m.step(at(t), MetaInput::Tick);
        store_and_answer(&mut m, &mut store, t);
    }
    let cured = store.partition(gpid).unwrap().clone();
    assert!(!cured.hosts("r4") && cured.learners == vec!["r3".to_string()], "{victim:?} → {cured:?}");
    // Moved: r4 no longer reports it, and the problem is gone.
    ask(&mut m, &mut store, 83, with_max("r4", 1, vec![])).unwrap();
    let Ok(MetaReply::Status(status)) = ask(&mut m, &mut store, 84, MetaRequest::ClusterStatus) else { panic!() };
    assert!(!status.problems.iter().any(|p| p.contains("refused")), "{:?}", status.problems);
}

/// A server's beacon carries only the reports that changed and the digest of all of them; the
/// answer leaves out configurations the server already holds. A view that does not add up (a
/// new leader that never had the reports) asks for every report.
#[test]
fn beacons_and_answers_carry_only_what_changed() {
    use tandem_core::digest::{answer_digest, reports_digest, Digest};
    let (mut m, mut store) = leader();
    let report = ReplicaReport { ballot: 1, status: "primary".into(), last_committed: 7, last_prepared: 7 };
    let digest_of = |r: &ReplicaReport| reports_digest([(Gpid::new(1, 0), r.ballot, r.status.as_str(), r.last_committed, r.last_prepared)]);
    let MetaRequest::Beacon(b) = beacon("r1", 1, false) else { unreachable!() };
    let full = BeaconRequest { reports: vec![(Gpid::new(1, 0), report.clone())], reports_digest: Some(digest_of(&report)), ..b.clone() };
    let Ok(MetaReply::Beacon { configs, partition_counts, tombstone_retention, configs_unchanged: false, resend_reports: false, .. }) =
        ask(&mut m, &mut store, 2, MetaRequest::Beacon(full))
    else {
        panic!()
    };
    assert_eq!(configs.len(), 1);
    let held = answer_digest(&configs, &partition_counts, &tombstone_retention);
    // Nothing changed: no report, no configuration.
    let idle = BeaconRequest { reports_delta: true, reports_digest: Some(digest_of(&report)), configs_digest: Some(held), ..b.clone() };
    let reply = ask(&mut m, &mut store, 3, MetaRequest::Beacon(idle.clone()));
    let Ok(MetaReply::Beacon { configs, partition_counts, tombstone_retention, configs_unchanged: true, resend_reports: false, .. }) = reply else { panic!("{reply:?}") };
    assert!(configs.is_empty() && partition_counts.is_empty() && tombstone_retention.is_empty());
    assert_eq!(m.state().unwrap().reports[&Gpid::new(1, 0)]["r1"], report, "the meta kept the report");
    // One report changed: only it is sent, and it is taken.
    let moved = ReplicaReport { last_committed: 9, last_prepared: 9, ..report.clone() };
    let changed = BeaconRequest { reports: vec![(Gpid::new(1, 0), moved.clone())], reports_digest: Some(digest_of(&moved)), ..idle.clone() };
    let Ok(MetaReply::Beacon { configs_unchanged: true, resend_reports: false, .. }) = ask(&mut m, &mut store, 4, MetaRequest::Beacon(changed)) else { panic!() };
    assert_eq!(m.state().unwrap().reports[&Gpid::new(1, 0)]["r1"], moved);
    // The configuration changed: sent in full, and the server's digest no longer matches.
    m.step(at(5), MetaInput::Request { token: 5, request: MetaRequest::Propose { gpid: Gpid::new(1, 0), from: "r1".into(), proposal: ConfigProposal::RemoveSecondary { ballot: 1, node: "r3".into() } } });
    store_and_answer(&mut m, &mut store, 5);
    let stale = BeaconRequest { reports_digest: Some(digest_of(&moved)), ..idle.clone() };
    let Ok(MetaReply::Beacon { configs, configs_unchanged: false, .. }) = ask(&mut m, &mut store, 6, MetaRequest::Beacon(stale)) else { panic!() };
    assert_eq!(configs[0].secondaries, vec!["r2".to_string()]);
    // A digest that does not add up (here: the server thinks the meta holds another report).
    let off = BeaconRequest { reports_digest: Some(digest_of(&report)), ..idle.clone() };
    let Ok(MetaReply::Beacon { resend_reports: true, .. }) = ask(&mut m, &mut store, 7, MetaRequest::Beacon(off)) else { panic!() };
    // A replica gone: its report goes.
    let gone = BeaconRequest { reports_gone: vec![Gpid::new(1, 0)], reports_digest: Some(Digest::default()), ..idle };
    let Ok(MetaReply::Beacon { resend_reports: false, .. }) = ask(&mut m, &mut store, 8, MetaRequest::Beacon(gone)) else { panic!() };
    assert!(m.state().unwrap().reports.get(&Gpid::new(1, 0)).is_none_or(|r| !r.contains_key("r1")));
}
