//! Linearizability per key, checked while the run goes: the same property as `linearizable.rs`
//! (which searches the whole history again at the end), judged operation by operation so that a
//! violation stops the seed at the step where it became detectable — the return of the first
//! operation no linearization can explain.
//!
//! The search is Lowe's "just-in-time" linearization (Testing for linearizability, 2017): the
//! checker keeps every configuration the key's history so far can be in — a register state,
//! the pending operations already linearized (with the output each gave then), and the
//! unknown-outcome operations that have not taken effect yet — and moves them along as
//! operations are invoked and return:
//!
//! ```text
//!   invoke op      ─▶ op joins the pending set (it may be linearized from now on)
//!   op returns ok  ─▶ configs := every config reachable by linearizing pending ops and firing
//!                      open unknown ones, up to and including op with the output it returned;
//!                      none left ─▶ violation
//!   op unknown     ─▶ op stays open forever: it may fire at any later point, or never
//!   op failed      ─▶ op never happened: configs that linearized it are dropped
//! ```
//!
//! A config with more open unknown operations (same state, same linearized pending ops) can do
//! everything the other can, so only maximal ones are kept: unknown writes cost one config per
//! write, not one per subset. Like the end-of-run search, returns and invocations at the same
//! instant overlap: a return is judged once simulated time has moved past it.
//!
//! Two bounds keep it cheap enough to run after every event. When too many incomparable
//! configs share a state (`OPEN_SETS_MAX`), they are merged (widened): the key is still judged,
//! but may let a violation pass — never report one that is not. When a key's search still grows
//! too large (`CONFIGS_MAX`, `STEPS_PER_RETURN_MAX`), the key is left to the end-of-run search.
//! Both are counted in the run's stats.

use crate::history::{History, OpKind, Outcome, Output, describe_op, describe_outcome};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

/// A register value, interned per key; `ABSENT` is the deleted / never-written register.
type Value = u32;
const ABSENT: Value = 0;

/// Explored configurations per return before the key is given up on (left to the end check):
/// this check runs after every event and must stay cheap.
const STEPS_PER_RETURN_MAX: usize = 20_000;
/// Configurations kept per key before it is given up on.
const CONFIGS_MAX: usize = 2_000;
/// Incomparable open sets kept per (state, linearized) before they are merged into their union.
/// They differ in which unknown writes took effect already, and multiply when each of several
/// refused check-and-sets can be explained by any one of many unknown writes. The union is an
/// over-approximation (an unknown write may then seem to take effect twice): it can only miss a
/// violation, never invent one, and the end-of-run search is exact.
const OPEN_SETS_MAX: usize = 8;
/// Operations of a key quoted in a violation.
const RECENT_OPS: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Input {
    Set(Value),
    Del,
    Get,
    Cas { expected: Value, new: Value },
}

/// What an operation returns, encoded as a number: a read's value, a check-and-set's `applied`,
/// nothing (0) for a write.
type Ret = u32;

/// The sequential register: the next state and what the operation returns there.
fn apply(state: Value, input: Input) -> (Value, Ret) {
    match input {
        Input::Set(v) => (v, 0),
        Input::Del => (ABSENT, 0),
        Input::Get => (state, state),
        Input::Cas { expected, new } if state == expected => (new, 1),
        Input::Cas { .. } => (state, 0),
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Config {
    state: Value,
    /// Pending operations (by slot) already linearized, with what each returned then; sorted.
    linearized: Vec<(u8, Ret)>,
    /// Unknown-outcome operations that have not taken effect (a bitset over `Key::unknown`).
    open: Vec<u64>,
}

impl Config {
    fn recorded(&self, slot: u8) -> Option<Ret> {
        self.linearized.iter().find(|(s, _)| *s == slot).map(|(_, r)| *r)
    }

    fn without(&self, slot: u8) -> Vec<(u8, Ret)> {
        self.linearized.iter().copied().filter(|(s, _)| *s != slot).collect()
    }
}

fn is_subset(a: &[u64], b: &[u64]) -> bool {
    a.iter().enumerate().all(|(i, w)| w & !b.get(i).copied().unwrap_or(0) == 0)
}

fn set_bit(bits: &mut Vec<u64>, i: usize) {
    if bits.len() <= i / 64 {
        bits.resize(i / 64 + 1, 0);
    }
    bits[i / 64] |= 1 << (i % 64);
}

fn bits(set: &[u64]) -> impl Iterator<Item = usize> + '_ {
    set.iter().enumerate().flat_map(|(w, word)| (0..64).filter(move |b| word & (1 << b) != 0).map(move |b| w * 64 + b))
}

/// A fast hasher for the search's small keys (SipHash dominated the profile; no DoS here).
#[derive(Default)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_u32(&mut self, x: u32) {
        self.write_u64(x as u64);
    }

    fn write_u8(&mut self, x: u8) {
        self.write_u64(x as u64);
    }

    fn write_usize(&mut self, x: usize) {
        self.write_u64(x as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// A config without its open set: the state and the linearized pending operations.
type ConfigKey = (Value, Vec<(u8, Ret)>);

/// Configs indexed by (state, linearized); each entry holds the open sets that no other
/// entry's open set contains (the maximal ones).
#[derive(Default)]
struct ConfigSet {
    by_key: FxMap<ConfigKey, Vec<Vec<u64>>>,
    len: usize,
    /// Merge an entry's open sets into their union past `OPEN_SETS_MAX` (see there).
    widen: bool,
    widened: bool,
}

impl ConfigSet {
    fn widening() -> ConfigSet {
        ConfigSet { widen: true, ..ConfigSet::default() }
    }

    /// Adds `c` unless a kept config dominates it; drops the kept ones it dominates.
    fn insert(&mut self, c: Config) -> bool {
        let opens = self.by_key.entry((c.state, c.linearized)).or_default();
        if opens.iter().any(|o| is_subset(&c.open, o)) {
            return false;
        }
        let before = opens.len();
        opens.retain(|o| !is_subset(o, &c.open));
        opens.push(c.open);
        if self.widen && opens.len() > OPEN_SETS_MAX {
            let mut union = Vec::new();
            for o in opens.iter() {
                if union.len() < o.len() {
                    union.resize(o.len(), 0);
                }
                for (u, w) in union.iter_mut().zip(o) {
                    *u |= w;
                }
            }
            *opens = vec![union];
            self.widened = true;
        }
        self.len = self.len + opens.len() - before;
        true
    }

    fn into_configs(self) -> Vec<Config> {
        let mut out = Vec::with_capacity(self.len);
        for ((state, linearized), opens) in self.by_key {
            for open in opens {
                out.push(Config { state, linearized: linearized.clone(), open });
            }
        }
        // HashMap order is not deterministic; the verdict does not depend on it, the work does.
        out.sort_by(|a, b| (a.state, &a.linearized, &a.open).cmp(&(b.state, &b.linearized, &b.open)));
        out
    }
}

/// How an operation ended, as the checker takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resolution {
    /// It returned this (encoded) output.
    Returned(Ret),
    /// It may or may not take effect, at any point after its invocation.
    Unknown,
    /// It certainly never took effect.
    Failed,
}

/// Why a key could not be judged or was found not linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
enum KeyError {
    Violation,
    GaveUp,
}

/// The just-in-time search of one register.
#[derive(Default)]
struct KeyChecker {
    values: HashMap<Vec<u8>, Value>,
    /// Pending operations by slot (a slot is reused once its operation resolves).
    slots: Vec<Option<Input>>,
    /// Unknown-outcome operations, indexed by the bits of `Config::open`.
    unknown: Vec<Input>,
    configs: Vec<Config>,
    started: bool,
    /// Some open sets were merged (`OPEN_SETS_MAX`): the verdicts of this key are no longer exact.
    widened: bool,
}

impl KeyChecker {
    fn value(&mut self, v: Option<&[u8]>) -> Value {
        let Some(v) = v else { return ABSENT };
        let next = self.values.len() as Value + 1;
        *self.values.entry(v.to_vec()).or_insert(next)
    }

    fn input(&mut self, kind: &OpKind) -> Option<Input> {
        Some(match kind {
            OpKind::Set { value } => Input::Set(self.value(Some(value))),
            OpKind::Del => Input::Del,
            OpKind::Get => Input::Get,
            OpKind::Cas { expected, new } => Input::Cas { expected: self.value(expected.as_deref()), new: self.value(Some(new)) },
            _ => return None,
        })
    }

    /// The encoded output of a returned operation.
    fn ret(&mut self, output: &Output) -> Ret {
        match output {
            Output::Done => 0,
            Output::Value(v) => self.value(v.as_deref()),
            Output::Applied(a) => *a as Ret,
            Output::Bank(_) => unreachable!("bank reads are not register operations"),
        }
    }

    /// An operation is invoked; returns its slot.
    fn call(&mut self, input: Input) -> u8 {
        if !self.started {
            self.started = true;
            self.configs = vec![Config { state: ABSENT, linearized: vec![], open: vec![] }];
        }
        let slot = match self.slots.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        assert!(slot < u8::MAX as usize, "more than 255 operations pending on one key");
        self.slots[slot] = Some(input);
        slot as u8
    }

    /// The operation in `slot` resolves.
    fn resolve(&mut self, slot: u8, how: Resolution) -> Result<(), KeyError> {
        let input = self.slots[slot as usize].take().expect("a pending operation resolves once");
        let configs = std::mem::take(&mut self.configs);
        let mut next = ConfigSet::widening();
        match how {
            Resolution::Returned(ret) => self.linearize_up_to(configs, slot, input, ret, &mut next)?,
            Resolution::Unknown if input == Input::Get => {
                for c in configs {
                    next.insert(Config { linearized: c.without(slot), ..c });
                }
            }
            Resolution::Unknown => {
                let u = self.unknown.len();
                self.unknown.push(input);
                for mut c in configs {
                    if c.recorded(slot).is_some() {
                        // It took effect already, in this config: nothing left open.
                        c.linearized = c.without(slot);
                    } else {
                        set_bit(&mut c.open, u);
                    }
                    next.insert(c);
                }
            }
            Resolution::Failed => {
                for c in configs {
                    if input == Input::Get || c.recorded(slot).is_none() {
                        next.insert(Config { linearized: c.without(slot), ..c });
                    }
                }
            }
        }
        self.widened |= next.widened;
        self.configs = next.into_configs();
        if self.configs.is_empty() {
            return Err(KeyError::Violation);
        }
        if self.configs.len() > CONFIGS_MAX {
            return Err(KeyError::GaveUp);
        }
        Ok(())
    }

    /// Every config reachable from `configs` in which the operation in `slot` took effect and
    /// returned `ret`, with that operation gone from the pending set.
    fn linearize_up_to(&self, configs: Vec<Config>, slot: u8, input: Input, ret: Ret, out: &mut ConfigSet) -> Result<(), KeyError> {
        let mut seen = ConfigSet::default();
        let mut todo = Vec::new();
        for c in configs {
            match c.recorded(slot) {
                // Linearized before: it stands if it returned what it really returned. Anything
                // linearized after it could as well be linearized later, so stop here.
                Some(r) if r == ret => {
                    out.insert(Config { linearized: c.without(slot), ..c });
                }
                Some(_) => {}
                None => {
                    if seen.insert(c.clone()) {
                        todo.push(c);
                    }
                }
            }
        }
        let mut steps = 0;
        while let Some(c) = todo.pop() {
            steps += 1;
            if steps > STEPS_PER_RETURN_MAX {
                return Err(KeyError::GaveUp);
            }
            let (state, r) = apply(c.state, input);
            if r == ret {
                out.insert(Config { state, linearized: c.linearized.clone(), open: c.open.clone() });
            }
            for (p, other) in self.slots.iter().enumerate() {
                let Some(other) = other else { continue };
                let p = p as u8;
                if c.recorded(p).is_some() {
                    continue;
                }
                let (state, r) = apply(c.state, *other);
                let mut linearized = c.linearized.clone();
                let at = linearized.partition_point(|(s, _)| *s < p);
                linearized.insert(at, (p, r));
                let next = Config { state, linearized, open: c.open.clone() };
                if seen.insert(next.clone()) {
                    todo.push(next);
                }
            }
            for u in bits(&c.open) {
                let (state, _) = apply(c.state, self.unknown[u]);
                if state == c.state {
                    // Took effect without changing anything: c itself covers it.
                    continue;
                }
                let mut open = c.open.clone();
                open[u / 64] &= !(1 << (u % 64));
                let next = Config { state, linearized: c.linearized.clone(), open };
                if seen.insert(next.clone()) {
                    todo.push(next);
                }
            }
        }
        Ok(())
    }
}

/// One line about an operation, for violation reports.
fn describe(op: &crate::history::Op) -> String {
    let ret = op.return_us.map_or("…".into(), |t| format!("{:.6}", t as f64 / 1e6));
    format!("c{} {} [{:.6} s, {ret} s] → {}", op.client + 1, describe_op(op), op.call_us as f64 / 1e6, describe_outcome(&op.outcome))
}

#[derive(Default)]
struct KeyState {
    checker: KeyChecker,
    /// Slot of each pending operation, by history index.
    pending: HashMap<usize, u8>,
    recent: VecDeque<usize>,
    gave_up: bool,
}

/// Feeds the history's invocations and completions to one `KeyChecker` per register key.
#[derive(Default)]
pub struct OnlineLinearizable {
    keys: BTreeMap<Vec<u8>, KeyState>,
    /// Operations of `History::ops` seen invoked, and completions of `History::completions`
    /// judged.
    invoked: usize,
    judged: usize,
    /// Keys whose search grew too large (left to the end-of-run check).
    pub gave_up: u64,
}

impl OnlineLinearizable {
    /// Keys whose configurations were widened (`OPEN_SETS_MAX`): still checked, not exactly.
    pub fn widened(&self) -> u64 {
        self.keys.values().filter(|k| k.checker.widened).count() as u64
    }
}

impl OnlineLinearizable {
    /// Takes in what the history gained since the last call. Invocations are taken at once;
    /// a return waits until `now_us` has moved past it, so that invocations of the same
    /// instant overlap it. `finish` takes every return.
    pub fn observe(&mut self, history: &History, now_us: u64) -> Result<(), String> {
        self.feed(history, Some(now_us))
    }

    pub fn finish(&mut self, history: &History) -> Result<(), String> {
        self.feed(history, None)
    }

    fn feed(&mut self, history: &History, now_us: Option<u64>) -> Result<(), String> {
        loop {
            let call = history.ops.get(self.invoked).map(|o| o.call_us);
            let ret = history
                .completions
                .get(self.judged)
                .map(|&i| history.ops[i].return_us.expect("a completed op has a return time"))
                .filter(|t| now_us.is_none_or(|now| *t < now));
            match (call, ret) {
                (Some(c), Some(r)) if c <= r => self.on_call(history, self.invoked),
                (_, Some(_)) => self.on_return(history, history.completions[self.judged])?,
                (Some(_), None) => self.on_call(history, self.invoked),
                (None, None) => return Ok(()),
            }
        }
    }

    fn on_call(&mut self, history: &History, i: usize) {
        self.invoked += 1;
        let op = &history.ops[i];
        let k = self.keys.entry(op.key.clone()).or_default();
        if k.gave_up {
            return;
        }
        let Some(input) = k.checker.input(&op.kind) else { return };
        let slot = k.checker.call(input);
        k.pending.insert(i, slot);
    }

    fn on_return(&mut self, history: &History, i: usize) -> Result<(), String> {
        self.judged += 1;
        let op = &history.ops[i];
        let Some(k) = self.keys.get_mut(&op.key) else { return Ok(()) };
        let Some(slot) = k.pending.remove(&i) else { return Ok(()) };
        k.recent.push_back(i);
        if k.recent.len() > RECENT_OPS {
            k.recent.pop_front();
        }
        let how = match &op.outcome {
            Outcome::Ok(output) => Resolution::Returned(k.checker.ret(output)),
            Outcome::Unknown => Resolution::Unknown,
            Outcome::Failed => Resolution::Failed,
            Outcome::Pending => unreachable!("a completed op is not pending"),
        };
        match k.checker.resolve(slot, how) {
            Ok(()) => Ok(()),
            Err(KeyError::GaveUp) => {
                k.gave_up = true;
                k.pending.clear();
                k.checker = KeyChecker::default();
                self.gave_up += 1;
                Ok(())
            }
            Err(KeyError::Violation) => {
                let recent: Vec<String> = k.recent.iter().map(|&j| format!("  {}", describe(&history.ops[j]))).collect();
                let open: Vec<String> =
                    k.pending.keys().map(|&j| format!("  {} (still running)", describe(&history.ops[j]))).collect();
                Err(format!(
                    "key {:?} is not linearizable once this operation returned:\n  {}\nthe key's latest operations to return:\n{}{}{}",
                    String::from_utf8_lossy(&op.key),
                    describe(op),
                    recent.join("\n"),
                    if open.is_empty() { "" } else { "\n" },
                    open.join("\n")
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::linearizable::{LinOp, Verdict, check_register};
    use crate::history::Op;
    use crate::rng::Rng;

    fn v(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    fn op(client: usize, kind: OpKind, call: u64, ret: Option<u64>, outcome: Outcome) -> Op {
        Op { client, key: v("k"), kind, call_us: call, return_us: ret, outcome }
    }

    fn set(x: &str) -> OpKind {
        OpKind::Set { value: v(x) }
    }

    fn got(x: Option<&str>) -> Outcome {
        Outcome::Ok(Output::Value(x.map(v)))
    }

    fn done() -> Outcome {
        Outcome::Ok(Output::Done)
    }

    /// Feeds the history step by step as the simulator would (time advancing by 1 µs per
    /// step); returns the time at which a violation was reported.
    fn run(ops: Vec<Op>) -> Result<(), u64> {
        let h = History::from_ops(ops);
        let end = h.ops.iter().filter_map(|o| o.return_us).chain(h.ops.iter().map(|o| o.call_us)).max().unwrap_or(0);
        let mut c = OnlineLinearizable::default();
        // Replay the history as it grew: ops invoked and completed up to `t`.
        for t in 0..=end + 1 {
            let upto = History {
                ops: h.ops.iter().filter(|o| o.call_us <= t).cloned().collect(),
                completions: h.completions.iter().copied().filter(|&i| h.ops[i].return_us.is_some_and(|r| r <= t)).collect(),
            };
            let upto = History {
                ops: upto
                    .ops
                    .into_iter()
                    .map(|mut o| {
                        if o.return_us.is_some_and(|r| r > t) {
                            o.return_us = None;
                            o.outcome = Outcome::Pending;
                        }
                        o
                    })
                    .collect(),
                ..upto
            };
            if c.observe(&upto, t).is_err() {
                return Err(t);
            }
        }
        c.finish(&h).map_err(|_| end + 2)
    }

    #[test]
    fn a_stale_read_is_caught_when_it_returns() {
        let ops = vec![
            op(0, set("a"), 0, Some(10), done()),
            op(1, set("b"), 20, Some(30), done()),
            op(2, OpKind::Get, 40, Some(50), got(Some("b"))),
            op(2, OpKind::Get, 60, Some(70), got(Some("a"))),
            op(0, set("c"), 80, Some(90), done()),
        ];
        // Judged once time has moved past the read's return.
        assert_eq!(run(ops), Err(71));
    }

    #[test]
    fn unknown_writes_may_take_effect_late_or_never() {
        let ops = vec![
            op(0, set("a"), 0, Some(5), Outcome::Unknown),
            op(1, OpKind::Get, 10, Some(11), got(None)),
            op(1, set("b"), 12, Some(13), done()),
            op(1, OpKind::Get, 14, Some(15), got(Some("a"))),
            op(1, OpKind::Get, 16, Some(17), got(Some("a"))),
        ];
        assert_eq!(run(ops.clone()), Ok(()));
        // a took effect after b (b returned before a was read): b cannot come back.
        let mut again = ops;
        again.push(op(1, OpKind::Get, 18, Some(19), got(Some("b"))));
        assert_eq!(run(again), Err(20));
    }

    #[test]
    fn a_failed_write_never_took_effect() {
        let ops = vec![op(0, set("a"), 0, Some(10), Outcome::Failed), op(1, OpKind::Get, 2, Some(3), got(Some("a")))];
        // The read returns first and is explained by the pending write; the failure then
        // takes that explanation away.
        assert_eq!(run(ops), Err(11));
    }

    #[test]
    fn calls_and_returns_at_one_instant_overlap() {
        let ops = vec![op(0, set("a"), 0, Some(10), done()), op(1, OpKind::Get, 10, Some(12), got(None))];
        assert_eq!(run(ops), Ok(()));
    }

    /// Each refused check-and-set can be explained by any one of ten unknown writes: the
    /// explanations multiply until they are merged, and the key is still judged.
    #[test]
    fn many_explanations_are_widened_and_the_key_still_judged() {
        let refused = Outcome::Ok(Output::Applied(false));
        let mut ops = vec![op(0, set("a0"), 0, Some(1), done())];
        for i in 0..10 {
            ops.push(op(1 + i, set(&format!("w{i}")), 2, Some(3), Outcome::Unknown));
        }
        for round in 1..=3u64 {
            let t = 10 * round;
            let now = format!("a{round}");
            ops.push(op(0, set(&now), t, Some(t + 1), done()));
            ops.push(op(0, OpKind::Cas { expected: Some(v(&now)), new: v("x") }, t + 2, Some(t + 3), refused.clone()));
        }
        let h = History::from_ops(ops.clone());
        let mut c = OnlineLinearizable::default();
        assert_eq!(c.finish(&h), Ok(()));
        assert_eq!((c.widened(), c.gave_up), (1, 0));
        // A read of an overwritten known value is still caught.
        ops.push(op(0, set("z"), 40, Some(41), done()));
        ops.push(op(0, OpKind::Get, 42, Some(43), got(Some("a3"))));
        let mut c = OnlineLinearizable::default();
        assert!(c.finish(&History::from_ops(ops)).is_err());
    }

    /// Random small histories: the online verdict equals the end-of-run search's.
    #[test]
    fn agrees_with_the_whole_history_search() {
        let mut violations = 0;
        for seed in 0..3_000 {
            let mut rng = Rng::new(seed);
            let mut ops = Vec::new();
            let clients = rng.range(1, 3) as usize;
            let mut free_at = vec![0u64; clients];
            for n in 0..rng.range(1, 9) {
                let c = rng.index(clients);
                let call = free_at[c] + rng.range(0, 3);
                let ret = call + rng.range(0, 6);
                free_at[c] = ret + 1;
                let kind = match rng.range(0, 5) {
                    0 | 1 => set(&format!("w{n}")),
                    2 => OpKind::Del,
                    3 => OpKind::Cas { expected: rng.chance(0.3).then(|| v(&format!("w{}", rng.range(0, n)))), new: v(&format!("w{n}")) },
                    _ => OpKind::Get,
                };
                let outcome = match (&kind, rng.range(0, 9)) {
                    (_, 0) => Outcome::Unknown,
                    (_, 1) => Outcome::Failed,
                    // Any value written before or after, or absent.
                    (OpKind::Get, _) => got(rng.chance(0.8).then(|| format!("w{}", rng.range(0, n + 1))).as_deref()),
                    (OpKind::Cas { .. }, _) => Outcome::Ok(Output::Applied(rng.chance(0.5))),
                    _ => done(),
                };
                ops.push(op(c, kind, call, Some(ret), outcome));
            }
            ops.sort_by_key(|o| o.call_us);
            let h = History::from_ops(ops.clone());
            let lin: Vec<LinOp> = crate::check::linearizable::register_ops(&h, b"k");
            let whole = check_register(&lin, 1_000_000);
            assert_ne!(whole, Verdict::Inconclusive);
            let online = run(ops.clone());
            assert_eq!(online.is_ok(), whole == Verdict::Linearizable, "seed {seed}: {ops:#?}");
            violations += online.is_err() as usize;
        }
        assert!(violations > 600 && violations < 2_700, "{violations} of 3000 random histories are violations");
    }
}
