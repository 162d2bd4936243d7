//! Unit tests of the replica state machine: each asserts the exact actions of one step.

use super::*;
use crate::storage::MemEngine;

const P: &str = "p:1";
const S1: &str = "s1:1";
const S2: &str = "s2:1";
const L: &str = "l:1";

fn gpid() -> Gpid {
    Gpid::new(1, 0)
}

fn ctx(now_ms: u64) -> Ctx {
    Ctx { now_ms, wall_us: 1_700_000_000_000_000 + now_ms * 1000, lease_until_ms: now_ms + 6_000, disk_low: None }
}

fn config(ballot: Ballot, primary: &str, secondaries: &[&str], learners: &[&str]) -> PartitionConfig {
    PartitionConfig {
        gpid: gpid(),
        ballot,
        primary: Some(primary.to_string()),
        secondaries: secondaries.iter().map(|s| s.to_string()).collect(),
        learners: learners.iter().map(|s| s.to_string()).collect(),
        last_drops: vec![],
    }
}

fn replica(me: &str, options: ReplicaOptions) -> Replica {
    Replica::open(gpid(), me.to_string(), options, Box::new(MemEngine::default()), vec![])
}

fn set(key: &str, value: &str) -> WriteRequest {
    WriteRequest::Set { hash_key: key.as_bytes().to_vec(), sort_key: vec![], value: value.as_bytes().to_vec(), ttl_s: 0 }
}

fn primary_of(secondaries: &[&str]) -> Replica {
    let mut r = replica(P, ReplicaOptions::default());
    r.step(&ctx(0), Input::ConfigUpdate { config: config(1, P, secondaries, &[]) });
    r.take_actions();
    r
}

fn ok(prepared: Decree, ballot: Ballot) -> PrepareReply {
    PrepareReply { ballot, outcome: PrepareOutcome::Ok { prepared, disk_low: None } }
}

/// Extracts the mutations of the only AppendLog action.
fn appended(actions: &[Action]) -> Vec<Arc<Mutation>> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::AppendLog { mutations } => Some(mutations.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

#[test]
fn single_replica_commits_on_its_own_log() {
    let mut r = primary_of(&[]);
    r.step(&ctx(1), Input::ClientWrite { request_id: 7, request: set("k", "v") });
    let actions = r.take_actions();
    let m = appended(&actions);
    assert_eq!(actions, vec![Action::AppendLog { mutations: m.clone() }]);
    assert_eq!((m[0].ballot, m[0].decree), (1, 1));
    r.step(&ctx(2), Input::LogAppended { ballot: 1, decree: 1 });
    assert_eq!(r.take_actions(), vec![Action::ReplyClient { request_id: 7, result: Ok(WriteResponse::Done) }]);
    assert_eq!(r.last_committed(), 1);
    assert_eq!(read::get(r.engine(), b"k", b"", ctx(2).now_s()).unwrap(), Some(b"v".to_vec()));
}

#[test]
fn primary_commits_only_after_every_member_logged() {
    let mut r = primary_of(&[S1, S2]);
    r.step(&ctx(1), Input::ClientWrite { request_id: 1, request: set("k", "v") });
    let actions = r.take_actions();
    let m = appended(&actions);
    let msg = PrepareMsg { config: config(1, P, &[S1, S2], &[]), mutations: m.clone(), last_committed: 0 };
    assert_eq!(
        actions,
        vec![
            Action::AppendLog { mutations: m.clone() },
            Action::SendPrepare { to: S1.into(), msg: msg.clone() },
            Action::SendPrepare { to: S2.into(), msg },
        ]
    );
    r.step(&ctx(2), Input::LogAppended { ballot: 1, decree: 1 });
    assert_eq!(r.take_actions(), vec![]);
    r.step(&ctx(3), Input::PrepareReply { from: S1.into(), reply: ok(1, 1) });
    assert_eq!(r.take_actions(), vec![]);
    assert_eq!(r.last_committed(), 0, "S2 has not logged decree 1");
    r.step(&ctx(4), Input::PrepareReply { from: S2.into(), reply: ok(1, 1) });
    assert_eq!(r.take_actions(), vec![Action::ReplyClient { request_id: 1, result: Ok(WriteResponse::Done) }]);
    // The commit point alone waits half a group check interval after the last send (the next
    // write's prepare would carry it), then goes with the next tick.
    r.step(&ctx(5), Input::Tick);
    assert_eq!(r.take_actions(), vec![]);
    r.step(&ctx(501), Input::Tick);
    let empty = PrepareMsg { config: config(1, P, &[S1, S2], &[]), mutations: vec![], last_committed: 1 };
    assert_eq!(
        r.take_actions(),
        vec![Action::SendPrepare { to: S1.into(), msg: empty.clone() }, Action::SendPrepare { to: S2.into(), msg: empty }]
    );
}

#[test]
fn a_quiet_primary_names_the_tick_it_next_acts_on_and_does_nothing_before_it() {
    let mut r = primary_of(&[S1, S2]);
    r.step(&ctx(1), Input::ClientWrite { request_id: 1, request: set("k", "v") });
    r.take_actions();
    assert_eq!(r.next_timer_ms(), 0, "prepares in flight: every tick (retries, timeouts)");
    r.step(&ctx(2), Input::LogAppended { ballot: 1, decree: 1 });
    r.step(&ctx(3), Input::PrepareReply { from: S1.into(), reply: ok(1, 1) });
    assert_eq!(r.next_timer_ms(), 0, "S2 has not answered");
    r.step(&ctx(4), Input::PrepareReply { from: S2.into(), reply: ok(1, 1) });
    r.take_actions();
    assert_eq!(r.next_timer_ms(), 501, "the commit point, half a group check interval after the last send");
    r.step(&ctx(500), Input::Tick);
    assert_eq!(r.take_actions(), vec![], "nothing before it");
    r.step(&ctx(501), Input::Tick);
    assert_eq!(r.take_actions().len(), 2, "the commit point to both");
    assert_eq!(r.next_timer_ms(), 0);
    r.step(&ctx(502), Input::PrepareReply { from: S1.into(), reply: ok(1, 1) });
    r.step(&ctx(502), Input::PrepareReply { from: S2.into(), reply: ok(1, 1) });
    assert_eq!(r.next_timer_ms(), 1_501, "then the group check, an interval after the last send");
    r.step(&ctx(1_500), Input::Tick);
    assert_eq!(r.take_actions(), vec![]);
    r.step(&ctx(1_501), Input::Tick);
    assert_eq!(r.take_actions().len(), 2, "the group check to both");

    let alone = primary_of(&[]);
    assert_eq!(alone.next_timer_ms(), u64::MAX, "a primary without members has no timer");
    let mut s = replica(S1, ReplicaOptions::default());
    s.step(&ctx(0), Input::Prepare { token: 9, from: P.into(), msg: PrepareMsg { config: config(1, P, &[S1], &[]), mutations: vec![], last_committed: 0 } });
    assert_eq!(s.status(), PartitionStatus::Secondary);
    assert_eq!(s.next_timer_ms(), u64::MAX, "a secondary does nothing on a tick");
}

#[test]
fn writes_batch_behind_the_prepare_in_flight() {
    let mut r = primary_of(&[S1]);
    r.step(&ctx(1), Input::ClientWrite { request_id: 1, request: set("a", "1") });
    r.take_actions();
    r.step(&ctx(1), Input::ClientWrite { request_id: 2, request: set("b", "2") });
    r.step(&ctx(1), Input::ClientWrite { request_id: 3, request: set("c", "3") });
    let actions = r.take_actions();
    assert!(actions.iter().all(|a| matches!(a, Action::AppendLog { .. })), "one prepare in flight per member: {actions:?}");
    r.step(&ctx(2), Input::PrepareReply { from: S1.into(), reply: ok(1, 1) });
    let actions = r.take_actions();
    let Action::SendPrepare { msg, .. } = &actions[0] else { panic!("{actions:?}") };
    assert_eq!(msg.mutations.iter().map(|m| m.decree).collect::<Vec<_>>(), vec![2, 3]);
}

#[test]
fn secondary_acks_only_after_its_log_is_durable_and_commits_with_the_primary() {
    let mut s = replica(S1, ReplicaOptions::default());
    let cfg = config(1, P, &[S1], &[]);
    let m = Arc::new(Mutation { ballot: 1, decree: 1, timestamp_us: 5, ops: vec![] });
    s.step(&ctx(0), Input::Prepare { token: 9, from: P.into(), msg: PrepareMsg { config: cfg.clone(), mutations: vec![m.clone()], last_committed: 0 } });
    assert_eq!(s.take_actions(), vec![Action::AppendLog { mutations: vec![m.clone()] }]);
    assert_eq!(s.status(), PartitionStatus::Secondary);
    s.step(&ctx(1), Input::LogAppended { ballot: 1, decree: 1 });
    assert_eq!(s.take_actions(), vec![Action::ReplyPrepare { token: 9, reply: ok(1, 1) }]);
    s.step(&ctx(2), Input::Prepare { token: 10, from: P.into(), msg: PrepareMsg { config: cfg, mutations: vec![], last_committed: 1 } });
    assert_eq!(s.take_actions(), vec![Action::ReplyPrepare { token: 10, reply: ok(1, 1) }]);
    assert_eq!(s.last_committed(), 1);
}

#[test]
fn secondary_reports_a_gap_so_the_primary_resends() {
    let mut s = replica(S1, ReplicaOptions::default());
    let cfg = config(1, P, &[S1], &[]);
    let m3 = Arc::new(Mutation { ballot: 1, decree: 3, timestamp_us: 5, ops: vec![] });
    s.step(&ctx(0), Input::Prepare { token: 1, from: P.into(), msg: PrepareMsg { config: cfg, mutations: vec![m3], last_committed: 0 } });
    assert_eq!(s.take_actions(), vec![Action::ReplyPrepare { token: 1, reply: ok(0, 1) }]);
}

#[test]
fn stale_ballot_prepare_is_refused() {
    let mut s = replica(S1, ReplicaOptions::default());
    s.step(&ctx(0), Input::ConfigUpdate { config: config(3, P, &[S1], &[]) });
    s.take_actions();
    s.step(&ctx(0), Input::Prepare { token: 4, from: S2.into(), msg: PrepareMsg { config: config(2, S2, &[S1], &[]), mutations: vec![], last_committed: 0 } });
    let reply = PrepareReply { ballot: 3, outcome: PrepareOutcome::StaleBallot { ballot: 3 } };
    assert_eq!(s.take_actions(), vec![Action::ReplyPrepare { token: 4, reply }]);
}

#[test]
fn silent_secondary_is_proposed_for_removal_after_the_prepare_timeout() {
    let mut r = primary_of(&[S1, S2]);
    r.step(&ctx(10), Input::ClientWrite { request_id: 1, request: set("k", "v") });
    r.take_actions();
    r.step(&ctx(20), Input::PrepareReply { from: S1.into(), reply: ok(1, 1) });
    r.step(&ctx(20), Input::LogAppended { ballot: 1, decree: 1 });
    r.take_actions();
    r.step(&ctx(5_011), Input::Tick);
    let actions = r.take_actions();
    assert_eq!(actions[0], Action::ProposeConfig { proposal: ConfigProposal::RemoveSecondary { ballot: 1, node: S2.into() } });
    // The meta agrees: ballot 2 without S2; the write commits.
    r.step(&ctx(5_020), Input::ProposalReply { result: Ok(config(2, P, &[S1], &[])) });
    assert_eq!(r.take_actions(), vec![Action::ReplyClient { request_id: 1, result: Ok(WriteResponse::Done) }]);
}

#[test]
fn a_secondary_whose_server_refuses_the_connection_is_proposed_for_removal_at_once() {
    let mut r = primary_of(&[S1, S2]);
    r.step(&ctx(10), Input::ClientWrite { request_id: 1, request: set("k", "v") });
    r.take_actions();
    r.step(&ctx(20), Input::PrepareReply { from: S1.into(), reply: ok(1, 1) });
    r.step(&ctx(20), Input::LogAppended { ballot: 1, decree: 1 });
    // A lost connection is not proof: the member keeps its place until the timeout.
    r.step(&ctx(30), Input::PrepareFailed { to: S2.into(), refused: false });
    r.step(&ctx(300), Input::Tick);
    assert!(!r.take_actions().iter().any(|a| matches!(a, Action::ProposeConfig { .. })));
    // Refused: nothing listens on its port.
    r.step(&ctx(310), Input::PrepareFailed { to: S2.into(), refused: true });
    assert_eq!(r.take_actions(), vec![Action::ProposeConfig { proposal: ConfigProposal::RemoveSecondary { ballot: 1, node: S2.into() } }]);
    r.step(&ctx(320), Input::ProposalReply { result: Ok(config(2, P, &[S1], &[])) });
    assert_eq!(r.take_actions(), vec![Action::ReplyClient { request_id: 1, result: Ok(WriteResponse::Done) }]);
}

/// A refused proposal (the meta's configuration moved on) is not made again on every tick: the
/// primary waits `proposal_retry_ms`, as for an unanswered one (found with turns in the
/// simulator: scenario meta_restart_mid_reconfiguration proposed ten times a second).
#[test]
fn a_refused_proposal_is_not_made_again_before_the_retry_interval() {
    let mut r = primary_of(&[S1, S2]);
    r.step(&ctx(10), Input::ClientWrite { request_id: 1, request: set("k", "v") });
    r.step(&ctx(20), Input::PrepareReply { from: S1.into(), reply: ok(1, 1) });
    r.step(&ctx(20), Input::LogAppended { ballot: 1, decree: 1 });
    r.take_actions();
    r.step(&ctx(5_011), Input::Tick);
    assert_eq!(r.take_actions()[0], Action::ProposeConfig { proposal: ConfigProposal::RemoveSecondary { ballot: 1, node: S2.into() } });
    r.step(&ctx(5_020), Input::ProposalReply { result: Err("stale proposal: ballot 1 but the partition is at 2".into()) });
    r.step(&ctx(5_111), Input::Tick);
    assert!(!r.take_actions().iter().any(|a| matches!(a, Action::ProposeConfig { .. })));
    r.step(&ctx(8_020), Input::Tick);
    assert_eq!(r.take_actions()[0], Action::ProposeConfig { proposal: ConfigProposal::RemoveSecondary { ballot: 1, node: S2.into() } });
}

/// The meta made a silent secondary a learner (cure after a reload): the primary tracks it as a
/// learner, dropped when silent, and does not propose removing a secondary it no longer is.
#[test]
fn a_secondary_made_a_learner_again_is_not_proposed_for_removal() {
    let mut r = primary_of(&[S1, S2]);
    r.step(&ctx(10), Input::ClientWrite { request_id: 1, request: set("k", "v") });
    r.step(&ctx(20), Input::PrepareReply { from: S1.into(), reply: ok(1, 1) });
    r.step(&ctx(20), Input::LogAppended { ballot: 1, decree: 1 });
    r.step(&ctx(30), Input::ConfigUpdate { config: config(2, P, &[S1], &[S2]) });
    r.take_actions();
    r.step(&ctx(5_011), Input::Tick);
    assert!(!r.take_actions().iter().any(|a| matches!(a, Action::ProposeConfig { .. })));
}

#[test]
fn lease_expired_primary_refuses_writes_and_reads() {
    let mut r = primary_of(&[]);
    let c = Ctx { now_ms: 10_000, wall_us: 0, lease_until_ms: 9_000, disk_low: None };
    assert!(matches!(r.check_read(&c), Err(Error::NotPrimary { .. })));
    r.step(&c, Input::ClientWrite { request_id: 1, request: set("k", "v") });
    assert!(matches!(&r.take_actions()[..], [Action::ReplyClient { request_id: 1, result: Err(Error::NotPrimary { .. }) }]));
}

#[test]
fn invalid_write_is_refused_with_the_limit() {
    let mut r = primary_of(&[]);
    r.step(&ctx(1), Input::ClientWrite { request_id: 1, request: set("", "v") });
    let actions = r.take_actions();
    let [Action::ReplyClient { result: Err(e), .. }] = &actions[..] else { panic!("{actions:?}") };
    assert!(e.to_string().contains("hash key is empty"), "{e}");
}

#[test]
fn learner_by_log_then_upgrade() {
    let mut r = primary_of(&[S1]);
    r.step(&ctx(1), Input::ClientWrite { request_id: 1, request: set("k", "v") });
    r.step(&ctx(1), Input::LogAppended { ballot: 1, decree: 1 });
    r.step(&ctx(2), Input::PrepareReply { from: S1.into(), reply: ok(1, 1) });
    r.take_actions();
    assert_eq!(r.last_committed(), 1);
    r.step(&ctx(3), Input::ConfigUpdate { config: config(1, P, &[S1], &[L]) });
    assert_eq!(r.take_actions(), vec![]);
    r.step(&ctx(4), Input::LearnRequest { token: 5, request: LearnRequest { ballot: 1, learner: L.into(), last_committed: 0 } });
    let actions = r.take_actions();
    assert_eq!(actions[0], Action::ReplyLearn { token: 5, reply: LearnReply::Log { start: 1 } });
    let Action::SendPrepare { to, msg } = &actions[1] else { panic!("{actions:?}") };
    assert_eq!((to.as_str(), msg.mutations.len(), msg.last_committed), (L, 1, 1));
    // The learner logs decree 1; it holds every committed decree and is proposed as secondary.
    r.step(&ctx(5), Input::PrepareReply { from: L.into(), reply: ok(1, 1) });
    assert_eq!(r.take_actions(), vec![Action::ProposeConfig { proposal: ConfigProposal::UpgradeLearner { ballot: 1, node: L.into() } }]);
    r.step(&ctx(6), Input::ProposalReply { result: Ok(config(2, P, &[S1, L], &[])) });
    r.take_actions();
    // The upgraded learner now counts for commits.
    r.step(&ctx(7), Input::ClientWrite { request_id: 2, request: set("k", "w") });
    r.step(&ctx(7), Input::LogAppended { ballot: 2, decree: 2 });
    r.step(&ctx(8), Input::PrepareReply { from: S1.into(), reply: ok(2, 2) });
    assert_eq!(r.last_committed(), 1);
    r.step(&ctx(8), Input::PrepareReply { from: L.into(), reply: ok(2, 2) });
    assert_eq!(r.last_committed(), 2);
}

/// The meta may make the learner a secondary before the primary hears of it (the answer can be
/// late or lost). A decree committed in between without the learner's ack would be missing from
/// a member the meta may promote (simulator seed 5021): from the proposal on, commits wait for
/// the learner too, until the configuration moves on.
#[test]
fn a_learner_proposed_for_upgrade_counts_for_commits_until_the_configuration_moves_on() {
    let mut r = primary_of(&[S1]);
    r.step(&ctx(1), Input::ConfigUpdate { config: config(1, P, &[S1], &[L]) });
    r.step(&ctx(2), Input::LearnRequest { token: 5, request: LearnRequest { ballot: 1, learner: L.into(), last_committed: 0 } });
    assert_eq!(r.take_actions(), vec![Action::ReplyLearn { token: 5, reply: LearnReply::Log { start: 1 } }]);
    r.step(&ctx(3), Input::PrepareReply { from: L.into(), reply: ok(0, 1) });
    assert_eq!(r.take_actions(), vec![Action::ProposeConfig { proposal: ConfigProposal::UpgradeLearner { ballot: 1, node: L.into() } }]);
    r.step(&ctx(4), Input::ClientWrite { request_id: 1, request: set("k", "v") });
    r.step(&ctx(4), Input::LogAppended { ballot: 1, decree: 1 });
    r.step(&ctx(5), Input::PrepareReply { from: S1.into(), reply: ok(1, 1) });
    assert_eq!(r.last_committed(), 0, "the learner proposed for upgrade has not logged decree 1");
    // The meta's answer was lost: it may have applied the upgrade all the same.
    r.step(&ctx(6), Input::ProposalReply { result: Err("proposal RPC failed".into()) });
    assert_eq!(r.last_committed(), 0);
    r.take_actions();
    r.step(&ctx(7), Input::PrepareReply { from: L.into(), reply: ok(1, 1) });
    assert_eq!(r.last_committed(), 1);
    assert!(r.take_actions().contains(&Action::ReplyClient { request_id: 1, result: Ok(WriteResponse::Done) }));
    // The meta dropped the learner at the same ballot: the upgrade can no longer happen there.
    r.step(&ctx(8), Input::ConfigUpdate { config: config(1, P, &[S1], &[]) });
    r.step(&ctx(9), Input::ClientWrite { request_id: 2, request: set("k", "w") });
    r.step(&ctx(9), Input::LogAppended { ballot: 1, decree: 2 });
    r.step(&ctx(10), Input::PrepareReply { from: S1.into(), reply: ok(2, 1) });
    assert_eq!(r.last_committed(), 2);
}

/// A primary whose upgrade proposal's answer was lost proposes another learner later: the first
/// one may have been made a secondary all the same, so commits keep waiting for both (two-site
/// simulator, seed 944: the meta promoted the first learner, which lacked a decree committed
/// with only the second one's ack).
#[test]
fn every_learner_proposed_for_upgrade_counts_not_only_the_latest() {
    let mut r = primary_of(&[]);
    r.step(&ctx(1), Input::ConfigUpdate { config: config(1, P, &[], &[L, S2]) });
    r.step(&ctx(2), Input::LearnRequest { token: 2, request: LearnRequest { ballot: 1, learner: L.into(), last_committed: 0 } });
    r.step(&ctx(3), Input::PrepareReply { from: L.into(), reply: ok(0, 1) });
    assert!(r.take_actions().contains(&Action::ProposeConfig { proposal: ConfigProposal::UpgradeLearner { ballot: 1, node: L.into() } }));
    // The answer is lost (the meta may have applied it); a write goes out; L falls silent.
    r.step(&ctx(4), Input::ProposalReply { result: Err("proposal RPC failed".into()) });
    r.step(&ctx(5), Input::ClientWrite { request_id: 1, request: set("k", "v") });
    r.step(&ctx(5), Input::LogAppended { ballot: 1, decree: 1 });
    r.step(&ctx(6), Input::LearnRequest { token: 6, request: LearnRequest { ballot: 1, learner: S2.into(), last_committed: 0 } });
    r.step(&ctx(7), Input::PrepareReply { from: S2.into(), reply: ok(1, 1) });
    r.take_actions();
    // L is dropped as a silent learner; the other one is proposed instead.
    r.step(&ctx(6_000), Input::Tick);
    assert!(r.take_actions().contains(&Action::ProposeConfig { proposal: ConfigProposal::UpgradeLearner { ballot: 1, node: S2.into() } }));
    r.step(&ctx(6_000), Input::PrepareReply { from: S2.into(), reply: ok(1, 1) });
    assert_eq!(r.last_committed(), 0, "L may be a secondary already and has not logged decree 1");
    // L comes back and acks: the decree commits.
    r.step(&ctx(6_001), Input::LearnRequest { token: 9, request: LearnRequest { ballot: 1, learner: L.into(), last_committed: 0 } });
    r.step(&ctx(6_002), Input::PrepareReply { from: L.into(), reply: ok(1, 1) });
    assert_eq!(r.last_committed(), 1);
}

/// A ballot has one primary: a prepare at the current ballot that names another primary is
/// refused, and the primary stays primary (it used to adopt the stranger's configuration and go
/// inactive).
#[test]
fn a_prepare_naming_another_primary_at_the_same_ballot_is_refused() {
    let mut r = primary_of(&[S1]);
    let stranger = "stranger:1";
    let msg = PrepareMsg { config: config(1, stranger, &[], &[]), mutations: vec![], last_committed: 0 };
    r.step(&ctx(1), Input::Prepare { token: 7, from: stranger.into(), msg });
    assert_eq!(r.take_actions(), vec![Action::ReplyPrepare { token: 7, reply: PrepareReply { ballot: 1, outcome: PrepareOutcome::NotMember } }]);
    assert_eq!(r.status(), PartitionStatus::Primary);
}

/// A replica reopened from a flushed engine with its log collected does not know the ballot it
/// last took part in. A deposed primary's prepare must not make it a secondary again: it would
/// skip the decrees it committed under the newer ballot and ack the primary's different ones
/// (simulator seed 13953). It waits for the meta's configuration.
#[test]
fn a_reopened_replica_that_forgot_its_ballot_takes_no_configuration_from_a_prepare() {
    let engine = MemEngine::from_parts(BTreeMap::new(), 5, 0);
    let mut s = Replica::open(gpid(), S1.into(), ReplicaOptions::default(), Box::new(engine), vec![]);
    let m = Arc::new(Mutation { ballot: 1, decree: 4, timestamp_us: 5, ops: vec![] });
    let stale = PrepareMsg { config: config(1, P, &[S1], &[]), mutations: vec![m], last_committed: 3 };
    s.step(&ctx(0), Input::Prepare { token: 1, from: P.into(), msg: stale.clone() });
    let not_member = PrepareReply { ballot: 0, outcome: PrepareOutcome::NotMember };
    assert_eq!(s.take_actions(), vec![Action::ReplyPrepare { token: 1, reply: not_member }]);
    assert_eq!(s.status(), PartitionStatus::Inactive);
    s.step(&ctx(1), Input::ConfigUpdate { config: config(2, S2, &[S1], &[]) });
    s.take_actions();
    s.step(&ctx(2), Input::Prepare { token: 2, from: P.into(), msg: stale });
    let stale_ballot = PrepareReply { ballot: 2, outcome: PrepareOutcome::StaleBallot { ballot: 2 } };
    assert_eq!(s.take_actions(), vec![Action::ReplyPrepare { token: 2, reply: stale_ballot }]);
    // A replica created empty (a new partition) may take its first configuration from a prepare.
    let mut fresh = replica(S1, ReplicaOptions::default());
    let first = PrepareMsg { config: config(1, P, &[S1], &[]), mutations: vec![], last_committed: 0 };
    fresh.step(&ctx(3), Input::Prepare { token: 3, from: P.into(), msg: first });
    assert_eq!(fresh.status(), PartitionStatus::Secondary);
}

#[test]
fn learner_too_far_behind_gets_a_checkpoint() {
    let options = ReplicaOptions { log_cache_bytes_max: 0, ..Default::default() };
    let mut r = replica(P, options);
    r.step(&ctx(0), Input::ConfigUpdate { config: config(1, P, &[], &[L]) });
    r.step(&ctx(1), Input::ClientWrite { request_id: 1, request: set("k", "v") });
    r.step(&ctx(1), Input::LogAppended { ballot: 1, decree: 1 });
    r.take_actions();
    r.step(&ctx(2), Input::LearnRequest { token: 8, request: LearnRequest { ballot: 1, learner: L.into(), last_committed: 0 } });
    assert_eq!(r.take_actions(), vec![Action::ServeCheckpoint { token: 8 }]);
    r.step(&ctx(3), Input::CheckpointReady { token: 8, result: Ok(("cp1".into(), 1)) });
    let reply = LearnReply::Checkpoint { checkpoint_id: "cp1".into(), decree: 1 };
    assert_eq!(r.take_actions(), vec![Action::ReplyLearn { token: 8, reply }]);
}

#[test]
fn a_smaller_log_cache_share_sends_the_next_learner_to_a_checkpoint() {
    let mut r = replica(P, ReplicaOptions::default());
    r.step(&ctx(0), Input::ConfigUpdate { config: config(1, P, &[], &[L]) });
    r.step(&ctx(1), Input::ClientWrite { request_id: 1, request: set("k", "v") });
    r.step(&ctx(1), Input::LogAppended { ballot: 1, decree: 1 });
    r.take_actions();
    assert_eq!(r.log_cache_start(), 1, "the default budget keeps decree 1");
    r.set_log_cache_bytes_max(0);
    assert_eq!(r.take_actions(), vec![], "trimming the cache is no action");
    assert_eq!(r.log_cache_start(), 2);
    r.step(&ctx(2), Input::LearnRequest { token: 8, request: LearnRequest { ballot: 1, learner: L.into(), last_committed: 0 } });
    assert_eq!(r.take_actions(), vec![Action::ServeCheckpoint { token: 8 }]);
}

#[test]
fn learner_installs_checkpoint_then_learns_by_log() {
    let mut l = replica(L, ReplicaOptions::default());
    l.step(&ctx(0), Input::ConfigUpdate { config: config(1, P, &[], &[L]) });
    let request = LearnRequest { ballot: 1, learner: L.into(), last_committed: 0 };
    assert_eq!(l.take_actions(), vec![Action::SendLearnRequest { to: P.into(), request }]);
    l.step(&ctx(1), Input::LearnReply { reply: Some(LearnReply::Checkpoint { checkpoint_id: "cp".into(), decree: 5 }) });
    assert_eq!(l.take_actions(), vec![Action::FetchCheckpoint { from: P.into(), checkpoint_id: "cp".into(), decree: 5 }]);
    let mut engine = MemEngine::default();
    for d in 1..=5 {
        engine.apply(d, 0, &[]).unwrap();
    }
    l.step(&ctx(2), Input::CheckpointInstalled { engine: Box::new(engine) });
    let request = LearnRequest { ballot: 1, learner: L.into(), last_committed: 5 };
    assert_eq!(l.take_actions(), vec![Action::SendLearnRequest { to: P.into(), request }]);
    assert_eq!(l.last_committed(), 5);
}

#[test]
fn new_primary_reconciles_its_prepared_entries_before_serving_reads() {
    let mut s = replica(S1, ReplicaOptions::default());
    let m = Arc::new(Mutation { ballot: 1, decree: 1, timestamp_us: 5, ops: vec![] });
    s.step(&ctx(0), Input::Prepare { token: 1, from: P.into(), msg: PrepareMsg { config: config(1, P, &[S1, S2], &[]), mutations: vec![m.clone()], last_committed: 0 } });
    s.step(&ctx(0), Input::LogAppended { ballot: 1, decree: 1 });
    s.take_actions();
    // The meta promotes S1 after P died.
    s.step(&ctx(10), Input::ConfigUpdate { config: config(2, S1, &[S2], &[]) });
    let msg = PrepareMsg { config: config(2, S1, &[S2], &[]), mutations: vec![m], last_committed: 0 };
    assert_eq!(s.take_actions(), vec![Action::SendPrepare { to: S2.into(), msg }]);
    assert!(matches!(s.check_read(&ctx(10)), Err(Error::Busy { .. })));
    s.step(&ctx(11), Input::PrepareReply { from: S2.into(), reply: ok(1, 2) });
    assert_eq!(s.last_committed(), 1);
    assert!(s.check_read(&ctx(11)).is_ok());
}

#[test]
fn replay_restores_the_prepared_list_with_later_records_winning() {
    let m = |ballot, decree, ts| Mutation { ballot, decree, timestamp_us: ts, ops: vec![] };
    // Decree 2 was replaced by a newer primary's decree 2, which dropped the old 3.
    let replayed = vec![m(1, 1, 1), m(1, 2, 2), m(1, 3, 3), m(2, 2, 4)];
    let r = Replica::open(gpid(), S1.into(), ReplicaOptions::default(), Box::new(MemEngine::default()), replayed);
    assert_eq!(r.last_prepared(), 2);
    assert_eq!(r.ballot(), 2);
}

#[test]
fn check_and_mutate_sees_prepared_writes() {
    let mut r = primary_of(&[S1]);
    r.step(&ctx(1), Input::ClientWrite { request_id: 1, request: set("k", "v1") });
    let cas = WriteRequest::CheckAndMutate {
        hash_key: b"k".to_vec(),
        check_sort_key: vec![],
        check_type: CheckType::BytesEqual,
        check_operand: b"v1".to_vec(),
        mutations: vec![write::MutateOp::Put { sort_key: vec![], value: b"v2".to_vec(), ttl_s: 0 }],
        return_check_value: true,
    };
    r.step(&ctx(1), Input::ClientWrite { request_id: 2, request: cas });
    r.step(&ctx(1), Input::LogAppended { ballot: 1, decree: 1 });
    r.step(&ctx(1), Input::LogAppended { ballot: 1, decree: 2 });
    r.take_actions();
    r.step(&ctx(2), Input::PrepareReply { from: S1.into(), reply: ok(1, 1) });
    r.take_actions();
    r.step(&ctx(3), Input::PrepareReply { from: S1.into(), reply: ok(2, 1) });
    assert_eq!(
        r.take_actions(),
        vec![Action::ReplyClient { request_id: 2, result: Ok(WriteResponse::Checked { applied: true, check_value: Some(b"v1".to_vec()) }) }]
    );
}

#[test]
fn pending_writes_of_a_deposed_primary_get_an_unknown_outcome_not_a_retry_hint() {
    let mut r = primary_of(&[S1]);
    r.step(&ctx(1), Input::ClientWrite { request_id: 1, request: set("k", "v") });
    r.take_actions();
    r.step(&ctx(2), Input::ConfigUpdate { config: config(2, S1, &[P], &[]) });
    let actions = r.take_actions();
    let [Action::ReplyClient { request_id: 1, result: Err(e @ Error::OutcomeUnknown { .. }) }] = &actions[..] else { panic!("{actions:?}") };
    assert!(e.to_string().contains("may or may not"), "{e}");
    assert_eq!(r.status(), PartitionStatus::Secondary);
}

#[test]
fn restarted_primary_counts_only_acks_of_what_it_sent() {
    // Regression, simulator seed 1: a primary restarted within the grace period serves the same
    // ballot again without the unsynced tail of its log. A secondary still holding that tail
    // answered "prepared up to 2"; the primary took it as an ack of its own, different decree 2
    // and committed it without ever sending it.
    let mut r = primary_of(&[S1]);
    r.step(&ctx(1), Input::ClientWrite { request_id: 1, request: set("k", "a") });
    r.take_actions();
    r.step(&ctx(1), Input::LogAppended { ballot: 1, decree: 1 });
    r.step(&ctx(2), Input::PrepareReply { from: S1.into(), reply: ok(2, 1) });
    assert_eq!(r.take_actions(), vec![Action::ReplyClient { request_id: 1, result: Ok(WriteResponse::Done) }]);
    r.step(&ctx(3), Input::ClientWrite { request_id: 2, request: set("k", "b") });
    let actions = r.take_actions();
    let m = appended(&actions);
    let prepare = PrepareMsg { config: config(1, P, &[S1], &[]), mutations: m.clone(), last_committed: 1 };
    assert_eq!(actions, vec![Action::AppendLog { mutations: m }, Action::SendPrepare { to: S1.into(), msg: prepare }]);
    r.step(&ctx(3), Input::LogAppended { ballot: 1, decree: 2 });
    assert_eq!(r.take_actions(), vec![], "decree 2 waits for the secondary's ack of it");
    assert_eq!(r.last_committed(), 1);
}

#[test]
fn secondary_replaces_an_entry_of_the_same_ballot_with_other_content() {
    // The other half of simulator seed 1: the restarted primary's decree 2 has the same ballot
    // (and could have the same timestamp) as the one the secondary holds, but other ops.
    let mut s = replica(S1, ReplicaOptions::default());
    let cfg = config(1, P, &[S1], &[]);
    let old = Arc::new(Mutation { ballot: 1, decree: 1, timestamp_us: 5, ops: vec![] });
    let new = Arc::new(Mutation { ballot: 1, decree: 1, timestamp_us: 5, ops: vec![crate::WriteOp::Delete { key: b"k".to_vec() }] });
    s.step(&ctx(0), Input::Prepare { token: 1, from: P.into(), msg: PrepareMsg { config: cfg.clone(), mutations: vec![old], last_committed: 0 } });
    s.take_actions();
    s.step(&ctx(1), Input::Prepare { token: 2, from: P.into(), msg: PrepareMsg { config: cfg, mutations: vec![new.clone()], last_committed: 0 } });
    assert_eq!(s.take_actions(), vec![Action::AppendLog { mutations: vec![new] }]);
}

#[test]
fn a_lost_prepare_is_sent_again_from_what_the_member_acked() {
    // Regression, simulator seed 44: the batch carrying the restarted primary's decree 1 was
    // lost; the next prepare started at decree 2, and the member's answer "prepared up to 1"
    // (an entry of the primary's previous life at the same ballot) counted as an ack.
    let mut r = primary_of(&[S1]);
    r.step(&ctx(1), Input::ClientWrite { request_id: 1, request: set("k", "a") });
    let m1 = appended(&r.take_actions());
    r.step(&ctx(1), Input::LogAppended { ballot: 1, decree: 1 });
    r.step(&ctx(1_000), Input::PrepareFailed { to: S1.into(), refused: false });
    r.step(&ctx(1_001), Input::ClientWrite { request_id: 2, request: set("k", "b") });
    let actions = r.take_actions();
    let m2 = appended(&actions);
    let prepare = PrepareMsg { config: config(1, P, &[S1], &[]), mutations: vec![m1[0].clone(), m2[0].clone()], last_committed: 0 };
    assert_eq!(actions, vec![Action::AppendLog { mutations: m2.clone() }, Action::SendPrepare { to: S1.into(), msg: prepare }]);
}

fn stored_timetag(r: &Replica, key: &str) -> Option<crate::timetag::Timetag> {
    let stored = r.engine().get(&crate::key::encode_key(key.as_bytes(), b"")).unwrap()?;
    Some(crate::value::decode_value(&stored).unwrap().0.timetag)
}

/// Writes one request on a single-replica primary and commits it; returns the reply.
fn write_alone(r: &mut Replica, now_ms: u64, request: WriteRequest) -> crate::Result<WriteResponse> {
    r.step(&ctx(now_ms), Input::ClientWrite { request_id: now_ms, request });
    let actions = r.take_actions();
    if let Some(m) = appended(&actions).last() {
        r.step(&ctx(now_ms), Input::LogAppended { ballot: m.ballot, decree: m.decree });
        let mut replies = r.take_actions();
        assert_eq!(replies.len(), 1, "{replies:?}");
        match replies.remove(0) {
            Action::ReplyClient { result, .. } => return result,
            other => panic!("{other:?}"),
        }
    }
    match actions.as_slice() {
        [Action::ReplyClient { result, .. }] => result.clone(),
        other => panic!("{other:?}"),
    }
}

fn remote_record(key: &str, timestamp_us: u64, delete: bool) -> DupRecord {
    use crate::timetag::make_timetag;
    let timetag = make_timetag(timestamp_us, 2, delete);
    let value = if delete { crate::value::encode_tombstone(timetag) } else { crate::value::encode_value(0, timetag, key.as_bytes()) };
    DupRecord { key: crate::key::encode_key(key.as_bytes(), b""), value }
}

#[test]
fn a_delete_writes_a_tombstone_that_reads_do_not_see() {
    let mut r = primary_of(&[]);
    write_alone(&mut r, 1, set("k", "v")).unwrap();
    write_alone(&mut r, 2, WriteRequest::Del { hash_key: b"k".to_vec(), sort_key: vec![] }).unwrap();
    let t = stored_timetag(&r, "k").expect("a tombstone is stored");
    assert!(crate::timetag::timetag_is_delete(t));
    let now_s = ctx(2).now_s();
    assert_eq!(read::get(r.engine(), b"k", b"", now_s).unwrap(), None);
    assert_eq!(read::full_scan(r.engine(), None, 10, now_s).unwrap().records, vec![]);
    assert_eq!(read::sortkey_count(r.engine(), b"k", now_s).unwrap(), 0);
    // incr and check_and_mutate see it as absent too.
    let incr = WriteRequest::Incr { hash_key: b"k".to_vec(), sort_key: vec![], increment: 5, ttl_s: 0 };
    assert_eq!(write_alone(&mut r, 3, incr).unwrap(), WriteResponse::Incr { new_value: 5 });
}

#[test]
fn duplicated_records_apply_only_over_older_timetags() {
    let mut r = primary_of(&[]);
    let wall_us = ctx(0).wall_us;
    write_alone(&mut r, 1, set("local", "mine")).unwrap();
    let local_t = stored_timetag(&r, "local").unwrap();
    let records = vec![
        // Older than the local write: loses.
        remote_record("local", wall_us - 10, false),
        // New key: applies.
        remote_record("new", wall_us - 5, false),
        // A delete, then an older put of the same key arriving after it: the put loses.
        remote_record("gone", wall_us - 3, true),
        remote_record("gone", wall_us - 4, false),
    ];
    let reply = write_alone(&mut r, 2, WriteRequest::Duplicate { records: records.clone(), watermark: None }).unwrap();
    assert_eq!(reply, WriteResponse::Duplicated { applied: 2, superseded: 2 });
    assert_eq!(stored_timetag(&r, "local"), Some(local_t));
    let now_s = ctx(2).now_s();
    assert_eq!(read::get(r.engine(), b"new", b"", now_s).unwrap(), Some(b"new".to_vec()));
    assert_eq!(read::get(r.engine(), b"gone", b"", now_s).unwrap(), None);
    // Shipped again (at-least-once): nothing changes.
    let again = write_alone(&mut r, 3, WriteRequest::Duplicate { records, watermark: None }).unwrap();
    assert_eq!(again, WriteResponse::Duplicated { applied: 0, superseded: 4 });
}

#[test]
fn a_duplicate_batch_carries_its_origins_watermark_into_the_engine() {
    use crate::replica::write::DupWatermark;
    let mut r = primary_of(&[]);
    let wall_us = ctx(0).wall_us;
    let w = |watermark_us| Some(DupWatermark { origin: 2, watermark_us });
    // A site's first batch makes its entry, watermark or not: compaction holds from then on.
    write_alone(&mut r, 0, WriteRequest::Duplicate { records: vec![remote_record("j", wall_us - 20, false)], watermark: None }).unwrap();
    assert_eq!(r.engine().dup_watermarks(), BTreeMap::from([(2, 0)]));
    // Records and a watermark, then a heartbeat (no records) that moves it on.
    write_alone(&mut r, 1, WriteRequest::Duplicate { records: vec![remote_record("k", wall_us - 5, false)], watermark: w(wall_us - 9) }).unwrap();
    assert_eq!(r.engine().dup_watermark_us(2), wall_us - 9);
    let reply = write_alone(&mut r, 2, WriteRequest::Duplicate { records: vec![], watermark: w(wall_us - 2) }).unwrap();
    assert_eq!(reply, WriteResponse::Duplicated { applied: 0, superseded: 0 });
    assert_eq!(r.engine().dup_watermark_us(2), wall_us - 2);
    // An older one (another partition's primary sent it earlier) does not take it back.
    write_alone(&mut r, 3, WriteRequest::Duplicate { records: vec![], watermark: w(wall_us - 7) }).unwrap();
    assert_eq!(r.engine().dup_watermarks(), BTreeMap::from([(2, wall_us - 2)]));
    // Neither nothing at all nor our own cluster id, nor a watermark ahead of the clock.
    let none = WriteRequest::Duplicate { records: vec![], watermark: None };
    assert!(matches!(none.validate(&crate::limits::Limits::default()), Err(Error::InvalidArgument(_))));
    let own = WriteRequest::Duplicate { records: vec![], watermark: Some(DupWatermark { origin: 1, watermark_us: 5 }) };
    assert!(write_alone(&mut r, 4, own).unwrap_err().to_string().contains("this site's own"));
    let ahead = WriteRequest::Duplicate { records: vec![], watermark: w(ctx(5).wall_us + 501_000) };
    assert!(matches!(write_alone(&mut r, 5, ahead), Err(Error::ClockAhead { .. })));
    // A record below its origin's watermark was applied here before: sent again, it is
    // superseded even where nothing is stored (its tombstone may have been compacted since).
    let again = WriteRequest::Duplicate { records: vec![remote_record("gone", wall_us - 3, false)], watermark: None };
    assert_eq!(write_alone(&mut r, 6, again).unwrap(), WriteResponse::Duplicated { applied: 0, superseded: 1 });
    assert_eq!(stored_timetag(&r, "gone"), None);
}

#[test]
fn a_local_write_after_a_remote_one_always_wins() {
    let mut r = primary_of(&[]);
    // The other site's clock runs 400 ms ahead (within max_clock_offset of 500 ms).
    let ahead_us = ctx(1).wall_us + 400_000;
    write_alone(&mut r, 1, WriteRequest::Duplicate { records: vec![remote_record("k", ahead_us, false)], watermark: None }).unwrap();
    write_alone(&mut r, 2, set("k", "later")).unwrap();
    let t = stored_timetag(&r, "k").unwrap();
    assert!(crate::timetag::timetag_timestamp_us(t) > ahead_us, "the clock advanced past the remote timetag");
    assert_eq!(crate::timetag::timetag_cluster_id(t), 1);
    assert_eq!(read::get(r.engine(), b"k", b"", ctx(2).now_s()).unwrap(), Some(b"later".to_vec()));
}

#[test]
fn duplicated_records_too_far_ahead_or_from_this_site_are_refused_whole() {
    let mut r = primary_of(&[]);
    let too_far = ctx(1).wall_us + 501_000;
    let request = WriteRequest::Duplicate { records: vec![remote_record("a", 5, false), remote_record("b", too_far, false)], watermark: None };
    let err = write_alone(&mut r, 1, request).unwrap_err();
    assert_eq!(err, Error::ClockAhead { gpid: gpid(), ahead_ms: 501, max_ms: 500 });
    assert_eq!(stored_timetag(&r, "a"), None, "nothing of a refused batch is applied");
    let own = DupRecord {
        key: crate::key::encode_key(b"a", b""),
        value: crate::value::encode_value(0, crate::timetag::make_timetag(5, 1, false), b"x"),
    };
    let err = write_alone(&mut r, 2, WriteRequest::Duplicate { records: vec![own], watermark: None }).unwrap_err();
    assert!(err.to_string().contains("this site's own"), "{err}");
    // A batch over the limit is refused as too large; a single large record is not.
    let big = |k: &str| DupRecord {
        key: crate::key::encode_key(k.as_bytes(), b""),
        value: crate::value::encode_value(0, crate::timetag::make_timetag(5, 2, false), &vec![0; 1 << 20]),
    };
    let err = write_alone(&mut r, 3, WriteRequest::Duplicate { records: (0..5).map(|i| big(&format!("k{i}"))).collect(), watermark: None }).unwrap_err();
    assert!(matches!(err, Error::TooLarge(_)), "{err}");
    assert!(write_alone(&mut r, 4, WriteRequest::Duplicate { records: vec![big("k")], watermark: None }).is_ok());
}

#[test]
fn the_clock_resumes_above_what_the_engine_holds() {
    // A flushed state whose writes were stamped 10 s ahead of this wall clock (the log that
    // carried them is gone): new timetags still go above them.
    let bound = ctx(0).wall_us + 10_000_000;
    let engine = MemEngine::from_parts(BTreeMap::new(), 0, bound);
    let mut r = Replica::open(gpid(), P.to_string(), ReplicaOptions::default(), Box::new(engine), vec![]);
    r.step(&ctx(0), Input::ConfigUpdate { config: config(1, P, &[], &[]) });
    r.take_actions();
    write_alone(&mut r, 1, set("k", "v")).unwrap();
    assert!(crate::timetag::timetag_timestamp_us(stored_timetag(&r, "k").unwrap()) > bound);
    assert!(r.engine().clock_bound_us() > bound, "the engine's bound moved with the write");
}

#[test]
fn a_mutation_carries_one_op_per_key_the_last() {
    let mut r = primary_of(&[]);
    let multi = WriteRequest::MultiSet { hash_key: b"h".to_vec(), kvs: vec![(b"a".to_vec(), b"1".to_vec()), (b"a".to_vec(), b"2".to_vec())], ttl_s: 0 };
    r.step(&ctx(1), Input::ClientWrite { request_id: 1, request: multi });
    let m = appended(&r.take_actions());
    assert_eq!(m[0].ops.len(), 1, "{:?}", m[0].ops);
    let cas = WriteRequest::CheckAndMutate {
        hash_key: b"h".to_vec(),
        check_sort_key: b"z".to_vec(),
        check_type: CheckType::NoCheck,
        check_operand: vec![],
        mutations: vec![MutateOp::Delete { sort_key: b"a".to_vec() }, MutateOp::Put { sort_key: b"a".to_vec(), value: b"x".to_vec(), ttl_s: 0 }],
        return_check_value: false,
    };
    r.step(&ctx(2), Input::ClientWrite { request_id: 2, request: cas });
    let m = appended(&r.take_actions());
    let (header, user) = crate::value::decode_value(match &m[0].ops[..] {
        [crate::WriteOp::Put { value, .. }] => value,
        other => panic!("{other:?}"),
    })
    .unwrap();
    assert!(!header.is_tombstone() && user == b"x");
}

/// A primary whose server's disk is below its reserve refuses every write that adds data with
/// disk-full, naming the figures, and still takes the writes that only delete.
#[test]
fn a_short_disk_refuses_writes_but_takes_deletes() {
    let mut r = primary_of(&[]);
    let low = ctx(10);
    let low = Ctx { disk_low: Some(DiskLow { free_bytes: 40, reserve_bytes: 50 }), ..low };
    r.step(&low, Input::ClientWrite { request_id: 1, request: set("k", "v") });
    let actions = r.take_actions();
    let [Action::ReplyClient { request_id: 1, result: Err(e @ Error::DiskFull { free_bytes: 40, reserve_bytes: 50, .. }) }] = &actions[..] else { panic!("{actions:?}") };
    assert!(e.to_string().contains("disk almost full on") && e.to_string().contains("deletes are still taken"), "{e}");
    let delete = WriteRequest::Del { hash_key: b"k".to_vec(), sort_key: vec![] };
    r.step(&low, Input::ClientWrite { request_id: 2, request: delete });
    assert!(matches!(&r.take_actions()[..], [Action::AppendLog { .. }]), "a delete is taken");
    let cam = |mutations| WriteRequest::CheckAndMutate {
        hash_key: b"k".to_vec(),
        check_sort_key: vec![],
        check_type: CheckType::NoCheck,
        check_operand: vec![],
        mutations,
        return_check_value: false,
    };
    assert!(cam(vec![MutateOp::Delete { sort_key: b"a".to_vec() }]).only_deletes());
    assert!(!cam(vec![MutateOp::Delete { sort_key: b"a".to_vec() }, MutateOp::Put { sort_key: b"b".to_vec(), value: vec![], ttl_s: 0 }]).only_deletes());
    assert!(WriteRequest::Duplicate { records: vec![remote_record("k", 5, true)], watermark: None }.only_deletes());
    assert!(!WriteRequest::Duplicate { records: vec![remote_record("k", 5, false)], watermark: None }.only_deletes());
}

/// A member whose disk is below its reserve says so in its prepare answers (group checks
/// included); its primary then refuses writes that add data, naming that member, and takes them
/// again once an answer says the member has room.
#[test]
fn a_short_secondary_makes_its_primary_take_only_deletes() {
    let low = DiskLow { free_bytes: 40, reserve_bytes: 50 };
    let mut s = replica(S1, ReplicaOptions::default());
    s.step(&ctx(0), Input::ConfigUpdate { config: config(1, P, &[S1], &[]) });
    s.take_actions();
    let check = PrepareMsg { config: config(1, P, &[S1], &[]), mutations: vec![], last_committed: 0 };
    s.step(&Ctx { disk_low: Some(low), ..ctx(1) }, Input::Prepare { token: 9, from: P.into(), msg: check });
    let answer = PrepareReply { ballot: 1, outcome: PrepareOutcome::Ok { prepared: 0, disk_low: Some(low) } };
    assert_eq!(s.take_actions(), vec![Action::ReplyPrepare { token: 9, reply: answer }]);

    let mut r = primary_of(&[S1]);
    let ack = |prepared, disk_low| Input::PrepareReply { from: S1.into(), reply: PrepareReply { ballot: 1, outcome: PrepareOutcome::Ok { prepared, disk_low } } };
    r.step(&ctx(1), Input::ClientWrite { request_id: 1, request: set("a", "1") });
    r.step(&ctx(2), Input::LogAppended { ballot: 1, decree: 1 });
    r.step(&ctx(3), ack(1, Some(low)));
    assert!(r.take_actions().contains(&Action::ReplyClient { request_id: 1, result: Ok(WriteResponse::Done) }), "what it logged commits");
    r.step(&ctx(4), Input::ClientWrite { request_id: 2, request: set("b", "2") });
    let actions = r.take_actions();
    let [Action::ReplyClient { request_id: 2, result: Err(Error::DiskFull { node, free_bytes: 40, reserve_bytes: 50, .. }) }] = &actions[..] else { panic!("{actions:?}") };
    assert_eq!(node, S1, "the error names the short member's server");
    r.step(&ctx(5), Input::ClientWrite { request_id: 3, request: WriteRequest::Del { hash_key: b"a".to_vec(), sort_key: vec![] } });
    assert!(matches!(r.take_actions()[0], Action::AppendLog { .. }), "a delete is taken");
    r.step(&ctx(6), Input::LogAppended { ballot: 1, decree: 2 });
    r.step(&ctx(7), ack(2, None));
    r.take_actions();
    r.step(&ctx(8), Input::ClientWrite { request_id: 4, request: set("b", "2") });
    assert!(matches!(r.take_actions()[0], Action::AppendLog { .. }), "the member has room again");
}
