//! The history checkers through the simulator's own history type: hand-made histories that must
//! pass and ones that must be rejected.

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
    let h = History {
        ops: vec![
            op(0, set("1"), 0, 10, ok.clone()),
            op(1, set("2"), 20, 30, ok.clone()),
            op(2, OpKind::Get, 40, 50, got(Some("2"))),
            op(2, OpKind::Get, 60, 70, got(Some("1"))),
        ],
    };
    let err = linearizable::check_history(&h, 1_000_000).unwrap_err();
    assert!(err.contains("not linearizable"), "{err}");
}

#[test]
fn unknown_outcomes_and_failed_writes_are_judged_as_they_may_have_happened() {
    let h = History {
        ops: vec![
            op(0, set("1"), 0, 10, Outcome::Unknown),
            op(1, set("2"), 20, 30, Outcome::Failed),
            op(2, OpKind::Get, 40, 50, got(None)),
            op(2, OpKind::Get, 60, 70, got(Some("1"))),
        ],
    };
    assert_eq!(linearizable::check_history(&h, 1_000_000), Ok(0));
    // A failed write was certainly not applied: reading its value is a violation.
    let h = History { ops: vec![op(1, set("2"), 20, 30, Outcome::Failed), op(2, OpKind::Get, 40, 50, got(Some("2")))] };
    assert!(linearizable::check_history(&h, 1_000_000).is_err());
}

#[test]
fn a_lost_acknowledged_write_is_caught() {
    let h = History { ops: vec![op(0, set("1"), 0, 10, Outcome::Ok(Output::Done))] };
    assert!(no_lost_writes::check_registers(&h, &[(b"k".to_vec(), None)]).is_err());
    assert!(no_lost_writes::check_registers(&h, &[(b"k".to_vec(), Some(b"1".to_vec()))]).is_ok());
}
