//! The history checkers through the simulator's own history type: hand-made histories that must
//! pass and ones that must be rejected.

use tandem_sim::check::linearizable_online::OnlineLinearizable;
use tandem_sim::check::{linearizable, no_lost_writes};
use tandem_sim::history::{History, Op, OpKind, Outcome, Output};

fn op(client: usize, kind: OpKind, call: u64, ret: u64, outcome: Outcome) -> Op {
    Op { client, key: b"k".to_vec(), kind, call_us: call, return_us: Some(ret), outcome }
}

fn set(v: &str) -> OpKind {
    OpKind::Set { value: v.as_bytes().to_vec() }
}

fn got(v: Option<&str>) -> Outcome {
    Outcome::Ok(Output::Value(v.map(|s| s.as_bytes().to_vec())))
}

#[test]
fn a_read_that_goes_back_in_time_is_caught() {
    let ok = Outcome::Ok(Output::Done);
    let h = History::from_ops(vec![
        op(0, set("1"), 0, 10, ok.clone()),
        op(1, set("2"), 20, 30, ok.clone()),
        op(2, OpKind::Get, 40, 50, got(Some("2"))),
        op(2, OpKind::Get, 60, 70, got(Some("1"))),
    ]);
    let err = linearizable::check_history(&h, 1_000_000).unwrap_err();
    assert!(err.contains("not linearizable"), "{err}");
    // The online search names the read that went back, as soon as time has moved past it.
    let mut online = OnlineLinearizable::default();
    assert_eq!(online.observe(&h, 70), Ok(()), "the last read returned at 70: not judged yet");
    let err = online.observe(&h, 71).unwrap_err();
    assert!(err.contains("not linearizable once this operation returned:\n  c3 get k [0.000060 s, 0.000070 s] → 1"), "{err}");
}

#[test]
fn unknown_outcomes_and_failed_writes_are_judged_as_they_may_have_happened() {
    let h = History::from_ops(vec![
        op(0, set("1"), 0, 10, Outcome::Unknown),
        op(1, set("2"), 20, 30, Outcome::Failed),
        op(2, OpKind::Get, 40, 50, got(None)),
        op(2, OpKind::Get, 60, 70, got(Some("1"))),
    ]);
    assert_eq!(linearizable::check_history(&h, 1_000_000), Ok(0));
    assert_eq!(OnlineLinearizable::default().finish(&h), Ok(()));
    // A failed write was certainly not applied: reading its value is a violation.
    let h = History::from_ops(vec![op(1, set("2"), 20, 30, Outcome::Failed), op(2, OpKind::Get, 40, 50, got(Some("2")))]);
    assert!(linearizable::check_history(&h, 1_000_000).is_err());
    assert!(OnlineLinearizable::default().finish(&h).is_err());
}

#[test]
fn a_lost_acknowledged_write_is_caught() {
    let h = History::from_ops(vec![op(0, set("1"), 0, 10, Outcome::Ok(Output::Done))]);
    assert!(no_lost_writes::check_registers(&h, &[(b"k".to_vec(), None)]).is_err());
    assert!(no_lost_writes::check_registers(&h, &[(b"k".to_vec(), Some(b"1".to_vec()))]).is_ok());
}

/// The online search runs after every event of a seed: a read no write can explain fails the
/// run at the first event after it returned, not at the end.
#[test]
fn a_violation_stops_the_seed_at_the_step_it_became_detectable() {
    let mut sim = tandem_sim::Sim::new(7, 20_000_000, &tandem_sim::FaultSet::none(), false);
    sim.run_until(6_000_000);
    assert!(sim.failure.is_none());
    let t = sim.now_us;
    let id = sim.history.invoke(0, b"k0".to_vec(), OpKind::Get, t);
    sim.history.complete(id, got(Some("never-written")), t);
    sim.run_until(60_000_000);
    let f = sim.failure.expect("the online search fails the seed");
    assert!(f.at_us > t && f.at_us < t + 50_000, "failed at {} µs, the read returned at {t} µs", f.at_us);
    assert!(f.message.contains("key \"k0\" is not linearizable once this operation returned:\n  c1 get k0"), "{}", f.message);
    assert!(f.message.contains("→ never-written"), "{}", f.message);
}
