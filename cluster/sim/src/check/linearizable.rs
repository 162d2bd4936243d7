//! Linearizability of single-key register histories: our own Wing–Gong–Lowe search, with the
//! history split per key first (as Porcupine does: a history is linearizable iff each key's is).
//!
//! An operation with an unknown outcome (timeout, lost answer) has an open end: it may take
//! effect at any point after its invocation, or never — equivalent to returning at infinity,
//! where it can always be linearized last.

use crate::history::{History, OpKind, Outcome, Output};
use std::collections::{BTreeMap, HashSet};

/// A register operation as the checker sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegInput {
    Set(Vec<u8>),
    Del,
    Get,
    Cas { expected: Option<Vec<u8>>, new: Vec<u8> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegOutput {
    Done,
    Value(Option<Vec<u8>>),
    Applied(bool),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinOp {
    pub call: u64,
    /// `u64::MAX` when the outcome is unknown.
    pub ret: u64,
    pub input: RegInput,
    /// None when the outcome is unknown.
    pub output: Option<RegOutput>,
}

type State = Option<Vec<u8>>;

/// The register's next state after `op`, or None when `op`'s output is impossible in `state`.
fn step(state: &State, op: &LinOp) -> Option<State> {
    match (&op.input, &op.output) {
        (RegInput::Set(v), _) => Some(Some(v.clone())),
        (RegInput::Del, _) => Some(None),
        (RegInput::Get, Some(RegOutput::Value(v))) => (v == state).then(|| state.clone()),
        (RegInput::Get, _) => Some(state.clone()),
        (RegInput::Cas { expected, new }, out) => {
            let matches = state == expected;
            match out {
                Some(RegOutput::Applied(applied)) if *applied != matches => None,
                _ if matches => Some(Some(new.clone())),
                _ => Some(state.clone()),
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// Not linearizable; the operations of the longest linearizable prefix found.
    Violation {
        linearized_max: usize,
    },
    /// The search exceeded its budget.
    Inconclusive,
}

/// Wing & Gong's search with Lowe's memoization of (linearized set, state).
pub fn check_register(ops: &[LinOp], budget: u64) -> Verdict {
    let n = ops.len();
    if n == 0 {
        return Verdict::Linearizable;
    }
    // Events: (time, is_return, op). Calls before returns at equal times: equal times overlap.
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, op) in ops.iter().enumerate() {
        assert!(op.call <= op.ret, "operation {i} returns before it is called");
        events.push((op.call, false, i));
        events.push((op.ret, true, i));
    }
    events.sort();
    // A doubly linked list over the events; slot 2n is the head sentinel.
    let head = 2 * n;
    let mut next = vec![usize::MAX; 2 * n + 1];
    let mut prev = vec![usize::MAX; 2 * n + 1];
    let mut call_at = vec![0; n];
    let mut ret_at = vec![0; n];
    let mut last = head;
    for (slot, (_, is_ret, op)) in events.iter().enumerate() {
        next[last] = slot;
        prev[slot] = last;
        last = slot;
        if *is_ret {
            ret_at[*op] = slot;
        } else {
            call_at[*op] = slot;
        }
    }
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, s: usize| {
        let (p, q) = (prev[s], next[s]);
        next[p] = q;
        if q != usize::MAX {
            prev[q] = p;
        }
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, s: usize| {
        let (p, q) = (prev[s], next[s]);
        next[p] = s;
        if q != usize::MAX {
            prev[q] = s;
        }
    };
    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, State)> = HashSet::new();
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut state: State = None;
    let mut entry = next[head];
    let mut steps = 0u64;
    let mut best = 0;
    while next[head] != usize::MAX {
        steps += 1;
        if steps > budget {
            return Verdict::Inconclusive;
        }
        if entry == usize::MAX {
            unreachable!("the list ends with a return, which backtracks first");
        }
        let (_, is_ret, op) = events[entry];
        if !is_ret {
            if let Some(new_state) = step(&state, &ops[op]) {
                linearized[op / 64] |= 1 << (op % 64);
                if cache.insert((linearized.clone(), new_state.clone())) {
                    stack.push((op, state));
                    best = best.max(stack.len());
                    state = new_state;
                    unlink(&mut next, &mut prev, call_at[op]);
                    unlink(&mut next, &mut prev, ret_at[op]);
                    entry = next[head];
                    continue;
                }
                linearized[op / 64] &= !(1 << (op % 64));
            }
            entry = next[entry];
        } else {
            // An operation returned before we could linearize it here: undo the last choice.
            let Some((op, old_state)) = stack.pop() else { return Verdict::Violation { linearized_max: best } };
            state = old_state;
            linearized[op / 64] &= !(1 << (op % 64));
            relink(&mut next, &mut prev, ret_at[op]);
            relink(&mut next, &mut prev, call_at[op]);
            entry = next[call_at[op]];
        }
    }
    Verdict::Linearizable
}

/// The register operations of one key, as the checker takes them. Failed operations never took
/// effect and are left out; so are reads without an answer.
pub fn register_ops(history: &History, key: &[u8]) -> Vec<LinOp> {
    let mut out = Vec::new();
    for op in history.ops.iter().filter(|o| o.key == key) {
        let input = match &op.kind {
            OpKind::Set { value } => RegInput::Set(value.clone()),
            OpKind::Del => RegInput::Del,
            OpKind::Get => RegInput::Get,
            OpKind::Cas { expected, new } => RegInput::Cas { expected: expected.clone(), new: new.clone() },
            _ => continue,
        };
        let (ret, output) = match &op.outcome {
            Outcome::Ok(o) => (
                op.return_us.expect("a completed op has a return time"),
                Some(match o {
                    Output::Done => RegOutput::Done,
                    Output::Value(v) => RegOutput::Value(v.clone()),
                    Output::Applied(a) => RegOutput::Applied(*a),
                    Output::Bank(_) => continue,
                }),
            ),
            Outcome::Failed => continue,
            Outcome::Unknown | Outcome::Pending if input == RegInput::Get => continue,
            Outcome::Unknown | Outcome::Pending => (u64::MAX, None),
        };
        out.push(LinOp { call: op.call_us, ret, input, output });
    }
    out
}

/// Checks every register key of the history. Returns the number of keys whose search was
/// inconclusive, or the first violation.
pub fn check_history(history: &History, budget: u64) -> Result<u64, String> {
    let mut keys: BTreeMap<&[u8], ()> = BTreeMap::new();
    for op in &history.ops {
        if matches!(op.kind, OpKind::Set { .. } | OpKind::Del | OpKind::Get | OpKind::Cas { .. }) {
            keys.insert(&op.key, ());
        }
    }
    let mut inconclusive = 0;
    for key in keys.keys() {
        let ops = register_ops(history, key);
        match check_register(&ops, budget) {
            Verdict::Linearizable => {}
            Verdict::Inconclusive => inconclusive += 1,
            Verdict::Violation { linearized_max } => {
                return Err(format!(
                    "key {:?}: {} operations are not linearizable (at most {linearized_max} could be ordered){}",
                    String::from_utf8_lossy(key),
                    ops.len(),
                    suspect(&ops, budget)
                ));
            }
        }
    }
    Ok(inconclusive)
}

/// Where a violation shows first: the shortest prefix (by invocation) that already fails, and
/// the operations around its end, to start reading the trace from.
fn suspect(ops: &[LinOp], budget: u64) -> String {
    let mut sorted = ops.to_vec();
    sorted.sort_by_key(|o| o.call);
    let fails = |n: usize| matches!(check_register(&sorted[..n], budget), Verdict::Violation { .. });
    let (mut lo, mut hi) = (1, sorted.len());
    if !fails(hi) {
        return String::new();
    }
    while lo < hi {
        let mid = (lo + hi) / 2;
        if fails(mid) { hi = mid } else { lo = mid + 1 }
    }
    let from = lo.saturating_sub(6);
    let around: Vec<String> = sorted[from..lo].iter().map(|o| format!("  {o:?}")).collect();
    format!("; the first {lo} operations by invocation already fail, ending with:\n{}", around.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: u64 = 1_000_000;

    fn v(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    fn set(call: u64, ret: u64, x: &str) -> LinOp {
        LinOp { call, ret, input: RegInput::Set(v(x)), output: Some(RegOutput::Done) }
    }

    fn get(call: u64, ret: u64, x: Option<&str>) -> LinOp {
        LinOp { call, ret, input: RegInput::Get, output: Some(RegOutput::Value(x.map(v))) }
    }

    fn cas(call: u64, ret: u64, expected: Option<&str>, new: &str, applied: Option<bool>) -> LinOp {
        LinOp {
            call,
            ret: if applied.is_some() { ret } else { u64::MAX },
            input: RegInput::Cas { expected: expected.map(v), new: v(new) },
            output: applied.map(RegOutput::Applied),
        }
    }

    fn unknown_set(call: u64, x: &str) -> LinOp {
        LinOp { call, ret: u64::MAX, input: RegInput::Set(v(x)), output: None }
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let h = [
            get(0, 1, None),
            set(2, 3, "a"),
            get(4, 5, Some("a")),
            LinOp { call: 6, ret: 7, input: RegInput::Del, output: Some(RegOutput::Done) },
            get(8, 9, None),
        ];
        assert_eq!(check_register(&h, BUDGET), Verdict::Linearizable);
    }

    #[test]
    fn stale_read_after_a_completed_write_is_rejected() {
        let h = [set(0, 1, "a"), set(2, 3, "b"), get(4, 5, Some("a"))];
        assert!(matches!(check_register(&h, BUDGET), Verdict::Violation { .. }));
    }

    #[test]
    fn concurrent_write_may_be_seen_either_way() {
        let h = [set(0, 10, "a"), get(1, 2, None), get(3, 4, Some("a"))];
        assert_eq!(check_register(&h, BUDGET), Verdict::Linearizable);
    }

    #[test]
    fn a_value_that_reappears_is_rejected() {
        // a then b, both overlapping the reads; once b was read, a cannot come back.
        let h = [set(0, 10, "a"), set(0, 10, "b"), get(1, 2, Some("b")), get(3, 4, Some("a")), get(5, 6, Some("b"))];
        assert!(matches!(check_register(&h, BUDGET), Verdict::Violation { .. }));
    }

    #[test]
    fn read_of_a_never_written_value_is_rejected() {
        let h = [set(0, 1, "a"), get(2, 3, Some("z"))];
        assert!(matches!(check_register(&h, BUDGET), Verdict::Violation { .. }));
    }

    #[test]
    fn unknown_write_may_take_effect_late_or_never() {
        let late = [unknown_set(0, "a"), get(5, 6, None), get(7, 8, Some("a"))];
        assert_eq!(check_register(&late, BUDGET), Verdict::Linearizable);
        let never = [unknown_set(0, "a"), get(5, 6, None), set(7, 8, "b"), get(9, 10, Some("b"))];
        assert_eq!(check_register(&never, BUDGET), Verdict::Linearizable);
        // But it cannot take effect before it was invoked.
        let early = [get(0, 1, Some("a")), unknown_set(2, "a")];
        assert!(matches!(check_register(&early, BUDGET), Verdict::Violation { .. }));
    }

    #[test]
    fn check_and_set_outcomes_must_match_the_state() {
        let ok = [set(0, 1, "a"), cas(2, 3, Some("a"), "b", Some(true)), get(4, 5, Some("b"))];
        assert_eq!(check_register(&ok, BUDGET), Verdict::Linearizable);
        let wrongly_applied = [set(0, 1, "a"), cas(2, 3, Some("x"), "b", Some(true))];
        assert!(matches!(check_register(&wrongly_applied, BUDGET), Verdict::Violation { .. }));
        let wrongly_refused = [set(0, 1, "a"), cas(2, 3, Some("a"), "b", Some(false))];
        assert!(matches!(check_register(&wrongly_refused, BUDGET), Verdict::Violation { .. }));
        // Two applied check-and-sets on the same expected value: one of them must have failed.
        let double = [set(0, 1, "a"), cas(2, 5, Some("a"), "b", Some(true)), cas(2, 5, Some("a"), "c", Some(true))];
        assert!(matches!(check_register(&double, BUDGET), Verdict::Violation { .. }));
        let unknown = [set(0, 1, "a"), cas(2, 0, Some("a"), "b", None), get(4, 5, Some("b"))];
        assert_eq!(check_register(&unknown, BUDGET), Verdict::Linearizable);
    }

    #[test]
    fn the_budget_makes_a_large_search_inconclusive() {
        let h: Vec<LinOp> = (0..12).map(|i| set(0, 100, &format!("v{i}"))).chain([get(200, 201, Some("nope"))]).collect();
        assert_eq!(check_register(&h, 50), Verdict::Inconclusive);
        assert!(matches!(check_register(&h, BUDGET), Verdict::Violation { .. }));
    }
}
