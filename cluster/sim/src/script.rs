//! Scenario scripts: hand-written protocol cases that read like scripts (STYLE rule 13), with
//! the trace as the expected output, as in etcd-io/raft's `testdata/*.txt`. The cluster runs
//! without random faults; the script injects them, states what it expects, and after each
//! command that produced any, holds the trace lines the command produced:
//!
//! ```text
//! # comments and blank lines are ignored
//! servers 4                        # before `start`: cluster shape and options
//! metas 2                          # meta servers (one leads; `meta`, `meta2`, …)
//! partitions 4                     # of the table (default 1)
//! option log_cache_bytes_max 200
//! option store_latency 50ms        # each way, at most (also: option meta_lease_ttl 6s)
//! start [2500ms]                   # boot, place the table (r1 primary, r2 r3); run to 3 s or the time given
//! ----
//! meta: 1.0 ballot 1 primary Some("r1") secondaries ["r2", "r3"] learners []
//! r1 1.0: Inactive@0 -> Primary@1
//!                                  # a blank line ends an output block
//! run 2s                           # advance simulated time
//! write k1 v1                      # client c1 sets k1 (does not wait; `run` lets it finish)
//! read k1
//! delete k1
//! deliver r1->r2 drop=prepare      # drop r1's prepares to r2 until cleared (count=N: N only)
//! deliver r1->r2 ok                # clear the rules of r1->r2
//! block r1->meta                   # one direction only;  unblock r1->meta
//! partition r1 | r2 r3 meta        # both directions between the groups;  heal
//! clog r2 3s
//! crash r2 [torn]                  # the machine goes silent; restart r2;  crash meta;  restart meta
//! kill r2                          # the process dies, its host refuses connections to its port
//! disk r1 free=40 total=1000       # r1's disk from now (its host reads it every tick)
//! fail-disk r2 write|sync          # the next log write / fsync of r2 fails
//! store-hang meta 5s               # the meta's store calls hang, then go through late
//! store-session-lost meta          # the store ends the meta's session (its lock), the meta lives
//! policy-set replicas 2            # the operator changes the table's replica count
//! propose r1 remove-secondary r2 ballot=2    # handed to the meta as if r1 sent it
//! expect r1 primary ballot=2 committed=3 prepared=3
//! expect config ballot=3 primary=r1 secondaries=r2,r3 learners=
//! expect write k1 ok|unknown|failed|pending
//! expect read k1 v1|none
//! expect proposal ok|refused
//! expect path learn-by-checkpoint
//! expect converged
//! expect placed                    # every partition of the table has a configuration
//! ```
//!
//! A command's output is its trace without times and without delivered messages: faults and
//! lost or dropped messages, role changes, configurations the meta commits, refused proposals,
//! replica failures, crashes (with what they did to the log) and restarts (with what the log
//! replayed). A command without a block must produce none. Output that differs fails the
//! script with a diff; `TANDEM_SIM_REWRITE=1` rewrites the blocks with what the run produced
//! instead (the `expect` lines and the checkers must still pass), for when the protocol changed
//! on purpose — read the diff before committing it.
//!
//! The checkers of a seeded run (single primary, decree agreement, bank reads, linearizability)
//! run after every event here too; a failure stops the script.

use crate::cli::SimFailure;
use crate::faults::FaultPlan;
use crate::history::{OpKind, Outcome, Output};
use crate::sim::TABLE_ID;
use crate::msg::{Endpoint, meta_index, replica_index};
use crate::network::DropRule;
use crate::rng::Rng;
use crate::sim::{Params, Sim};
use std::path::Path;
use tandem_core::replica::ConfigProposal;
use tandem_core::{Gpid, PartitionConfig};

fn gpid() -> Gpid {
    Gpid::new(TABLE_ID, 0)
}

fn endpoint(name: &str) -> Result<Endpoint, String> {
    if let Some(i) = meta_index(name) {
        return Ok(Endpoint::Meta(i));
    }
    replica_index(name).map(Endpoint::Replica).ok_or_else(|| format!("{name:?} is not a node (r1, r2, …, meta, meta2, …)"))
}

fn link(s: &str) -> Result<(Endpoint, Endpoint), String> {
    let (a, b) = s.split_once("->").ok_or_else(|| format!("{s:?} is not a link like r1->r2"))?;
    Ok((endpoint(a)?, endpoint(b)?))
}

fn duration_us(s: &str) -> Result<u64, String> {
    humantime::parse_duration(s).map(|d| d.as_micros() as u64).map_err(|e| format!("{s:?}: {e}"))
}

struct Runner {
    params: Params,
    sim: Option<Sim>,
    trace: bool,
    last_proposal: Option<Result<PartitionConfig, String>>,
    /// The report: each command with its time, and with `trace` the timed trace.
    out: Vec<String>,
    /// The current command's output: its trace without times and delivered messages.
    output: Vec<String>,
}

impl Runner {
    /// Moves what the simulation traced so far into the report and the command's output.
    fn drain_trace(&mut self) {
        let Some(t) = self.sim.as_mut().and_then(|s| s.trace.as_mut()) else { return };
        for l in t.drain(..) {
            if self.trace {
                self.out.push(l.to_string());
            }
            if !l.message {
                self.output.push(l.text);
            }
        }
    }

    fn sim(&mut self) -> Result<&mut Sim, String> {
        self.sim.as_mut().ok_or_else(|| "`start` the cluster first".to_string())
    }

    fn command(&mut self, words: &[&str]) -> Result<(), String> {
        match words {
            ["servers", n] => self.params.servers = n.parse().map_err(|_| format!("{n:?} is not a number"))?,
            ["metas", n] => self.params.metas = n.parse().map_err(|_| format!("{n:?} is not a number"))?,
            ["option", "meta_lease_ttl", d] => self.params.meta_lease_ttl_ms = duration_us(d)? / 1_000,
            ["replicas", n] => self.params.replica_count = n.parse().map_err(|_| format!("{n:?} is not a number"))?,
            ["option", "log_cache_bytes_max", n] => {
                self.params.log_cache_bytes_max = n.parse().map_err(|_| format!("{n:?} is not a number"))?
            }
            ["policy-set", "replicas", n] => {
                let replicas: u32 = n.parse().map_err(|_| format!("{n:?} is not a number"))?;
                let change = tandem_meta_core::policy::PolicyChange { replicas: Some(replicas), ..Default::default() };
                let request = tandem_meta_core::MetaRequest::SetPolicy { table: crate::sim::TABLE_NAME.into(), change, who: "script".into() };
                let answer = self.sim()?.admin(request, 10_000_000);
                self.out.push(format!("  -> {}", answer.as_ref().map_or_else(|e| format!("refused: {e}"), |_| "ok".to_string())));
                answer?;
            }
            ["store-hang", node, d] => {
                let Endpoint::Meta(i) = endpoint(node)? else { return Err(format!("{node:?} is not a meta server")) };
                let d = duration_us(d)?;
                let sim = self.sim()?;
                let until = sim.now_us + d;
                sim.hang_store(i, until);
            }
            ["store-session-lost", node] => {
                let Endpoint::Meta(i) = endpoint(node)? else { return Err(format!("{node:?} is not a meta server")) };
                self.sim()?.end_store_session(i);
            }
            ["partitions", n] => {
                let n: u32 = n.parse().map_err(|_| format!("{n:?} is not a number"))?;
                if !n.is_power_of_two() {
                    return Err(format!("partitions {n} is not a power of two"));
                }
                self.params.partitions = n;
            }
            ["option", "store_latency", d] => self.params.store_latency_us_max = duration_us(d)?.max(101),
            ["start", rest @ ..] => {
                // Always traced: the trace is the command's output.
                let sim = Sim::with(0, Rng::new(0), self.params.clone(), FaultPlan::quiet(), true);
                self.sim = Some(sim);
                // Let the servers beacon and the meta place the table (created at 2 s), or stop
                // at the time given.
                let until = match rest {
                    [] => 3_000_000,
                    [d] => duration_us(d)?,
                    _ => return Err("start takes at most a time, like start 2500ms".into()),
                };
                self.sim()?.run_until(until);
            }
            ["run", d] => {
                let d = duration_us(d)?;
                let sim = self.sim()?;
                let until = sim.now_us + d;
                sim.run_until(until);
            }
            ["write", key, value] => self.sim()?.client_op(key.as_bytes().to_vec(), OpKind::Set { value: value.as_bytes().to_vec() }),
            ["read", key] => self.sim()?.client_op(key.as_bytes().to_vec(), OpKind::Get),
            ["delete", key] => self.sim()?.client_op(key.as_bytes().to_vec(), OpKind::Del),
            ["deliver", l, rule] => {
                let (from, to) = link(l)?;
                let sim = self.sim()?;
                match *rule {
                    "ok" => sim.net.rules.retain(|r| !(r.from == from && r.to == to)),
                    _ => {
                        let kind = rule.strip_prefix("drop=").ok_or_else(|| format!("{rule:?} is not drop=KIND or ok"))?;
                        let kind = (kind != "all").then(|| kind.to_string());
                        sim.net.rules.push(DropRule { from, to, kind, remaining: None });
                    }
                }
            }
            ["deliver", l, rule, count] => {
                let (from, to) = link(l)?;
                let kind = rule.strip_prefix("drop=").ok_or_else(|| format!("{rule:?} is not drop=KIND"))?;
                let n: u32 =
                    count.strip_prefix("count=").and_then(|n| n.parse().ok()).ok_or_else(|| format!("{count:?} is not count=N"))?;
                let kind = (kind != "all").then(|| kind.to_string());
                self.sim()?.net.rules.push(DropRule { from, to, kind, remaining: Some(n) });
            }
            ["block", l] => {
                let (a, b) = link(l)?;
                self.sim()?.net.block(a, b);
            }
            ["unblock", l] => {
                let (a, b) = link(l)?;
                self.sim()?.net.unblock(a, b);
            }
            ["partition", rest @ ..] => {
                let bar = rest.iter().position(|w| *w == "|").ok_or("partition needs two groups split by |")?;
                let left = rest[..bar].iter().map(|n| endpoint(n)).collect::<Result<Vec<_>, _>>()?;
                let right = rest[bar + 1..].iter().map(|n| endpoint(n)).collect::<Result<Vec<_>, _>>()?;
                let sim = self.sim()?;
                for a in &left {
                    for b in &right {
                        sim.net.block(*a, *b);
                        sim.net.block(*b, *a);
                    }
                }
            }
            ["heal"] => self.sim()?.net.heal(),
            ["clog", node, d] => {
                let e = endpoint(node)?;
                let d = duration_us(d)?;
                let sim = self.sim()?;
                let until = sim.now_us + d;
                sim.net.clog(e, until);
            }
            ["crash", node] => {
                let e = endpoint(node)?;
                self.sim()?.crash(e, false, false);
            }
            ["crash", node, "torn"] => {
                let e = endpoint(node)?;
                self.sim()?.crash(e, true, false);
            }
            ["disk", node, free, total] => {
                let Endpoint::Replica(i) = endpoint(node)? else { return Err("only replica servers watch their disk".into()) };
                let bytes = |arg: &str, key: &str| -> Result<u64, String> {
                    arg.strip_prefix(key).and_then(|n| n.parse().ok()).ok_or_else(|| format!("{arg:?} is not {key}BYTES"))
                };
                let space = (bytes(free, "free=")?, bytes(total, "total=")?);
                self.sim()?.site.servers[i].disk_space = Some(space);
            }
            ["kill", node] => {
                let e @ Endpoint::Replica(_) = endpoint(node)? else { return Err("only a replica server's process is killed (crash a meta)".into()) };
                self.sim()?.crash(e, false, true);
            }
            ["restart", node] => {
                let e = endpoint(node)?;
                self.sim()?.restart(e);
            }
            ["fail-disk", node, what] => {
                let Endpoint::Replica(i) = endpoint(node)? else { return Err("only replica servers have a log".into()) };
                let s = &mut self.sim()?.site.servers[i];
                match *what {
                    "write" => s.fail_next_write = true,
                    "sync" => s.fail_next_sync = true,
                    _ => return Err(format!("{what:?} is not write or sync")),
                }
            }
            ["propose", from, kind, node, ballot] => {
                let ballot: u64 =
                    ballot.strip_prefix("ballot=").and_then(|b| b.parse().ok()).ok_or_else(|| format!("{ballot:?} is not ballot=N"))?;
                let node = node.to_string();
                let proposal = match *kind {
                    "remove-secondary" => ConfigProposal::RemoveSecondary { ballot, node },
                    "upgrade-learner" => ConfigProposal::UpgradeLearner { ballot, node },
                    _ => return Err(format!("{kind:?} is not remove-secondary or upgrade-learner")),
                };
                let result = self.sim()?.propose(gpid(), from, &proposal);
                // The output shows the meta's commit or refusal; the report shows the answer.
                self.out.push(format!(
                    "  -> {}",
                    match &result {
                        Ok(c) => format!("ok, ballot {}", c.ballot),
                        Err(e) => format!("refused: {e}"),
                    }
                ));
                self.last_proposal = Some(result);
            }
            ["expect", rest @ ..] => self.expect(rest)?,
            _ => return Err(format!("unknown command {:?}", words.join(" "))),
        }
        Ok(())
    }

    fn expect(&mut self, words: &[&str]) -> Result<(), String> {
        let fields = |words: &[&str]| -> Result<Vec<(String, String)>, String> {
            words
                .iter()
                .map(|w| w.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or_else(|| format!("{w:?} is not key=value")))
                .collect()
        };
        match words {
            ["config", rest @ ..] => {
                let config = self.sim()?.config(gpid()).cloned().ok_or("the store has no configuration of the partition")?;
                let list = |v: &[String]| v.join(",");
                for (k, want) in fields(rest)? {
                    let got = match k.as_str() {
                        "ballot" => config.ballot.to_string(),
                        "primary" => config.primary.clone().unwrap_or_default(),
                        "secondaries" => list(&config.secondaries),
                        "learners" => list(&config.learners),
                        _ => return Err(format!("unknown config field {k:?}")),
                    };
                    if got != want {
                        return Err(format!("config {k} is {got:?}, expected {want:?} ({config:?})"));
                    }
                }
            }
            ["write" | "read", key, want] => {
                let is_read = words[0] == "read";
                let sim = self.sim()?;
                let op = sim
                    .history
                    .ops
                    .iter()
                    .rev()
                    .find(|o| o.key == key.as_bytes() && (o.kind == OpKind::Get) == is_read)
                    .ok_or_else(|| format!("no {} of {key}", words[0]))?;
                let got = match (&op.outcome, is_read) {
                    (Outcome::Ok(Output::Value(v)), true) => {
                        v.as_ref().map_or("none".to_string(), |v| String::from_utf8_lossy(v).to_string())
                    }
                    (Outcome::Ok(_), false) => "ok".into(),
                    (Outcome::Unknown, _) => "unknown".into(),
                    (Outcome::Failed, _) => "failed".into(),
                    (Outcome::Pending, _) => "pending".into(),
                    (Outcome::Ok(o), true) => format!("{o:?}"),
                };
                if got != *want {
                    return Err(format!("{} {key} is {got}, expected {want}", words[0]));
                }
            }
            ["proposal", want] => {
                let got = match &self.last_proposal {
                    None => "none",
                    Some(Ok(_)) => "ok",
                    Some(Err(_)) => "refused",
                };
                if got != *want {
                    return Err(format!("the last proposal was {got} ({:?}), expected {want}", self.last_proposal));
                }
            }
            ["path", name] => {
                let sim = self.sim()?;
                if !sim.stats.paths.contains_key(*name) {
                    return Err(format!("path {name} was not hit; hit: {:?}", sim.stats.paths));
                }
            }
            ["converged"] => self.sim()?.check_convergence()?,
            ["placed"] => {
                let sim = self.sim()?;
                for p in 0..sim.params.partitions {
                    let gpid = Gpid::new(TABLE_ID, p);
                    let ballot = sim.config(gpid).map_or(0, |c| c.ballot);
                    if ballot == 0 {
                        return Err(format!("partition {gpid} is not placed"));
                    }
                }
            }
            [node, status, rest @ ..] => {
                let Endpoint::Replica(i) = endpoint(node)? else { return Err("expect a replica server's state".into()) };
                let sim = self.sim()?;
                let s = &sim.site.servers[i];
                let state = s.replica(gpid()).filter(|_| s.up).map(|r| r.state());
                let got_status = state.as_ref().map_or("absent", |st| st.status.as_str());
                if got_status != *status {
                    return Err(format!("{node} is {got_status}, expected {status} ({state:?})"));
                }
                let state = state.ok_or("no replica")?;
                for (k, want) in fields(rest)? {
                    let got = match k.as_str() {
                        "ballot" => state.ballot,
                        "committed" => state.last_committed,
                        "prepared" => state.last_prepared,
                        _ => return Err(format!("unknown replica field {k:?}")),
                    };
                    if got.to_string() != want {
                        return Err(format!("{node} {k} is {got}, expected {want} ({state:?})"));
                    }
                }
            }
            _ => return Err(format!("unknown expectation {:?}", words.join(" "))),
        }
        Ok(())
    }
}

/// One line of a script file, as parsed: text kept as it is (comments, blank lines), or a
/// command with the output block that follows it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Item {
    Text(String),
    Command {
        /// 1-based line number in the file.
        line_no: usize,
        raw: String,
        /// The lines between `----` and the next blank line; None when there is no block.
        expected: Option<Vec<String>>,
    },
}

/// The line that opens a command's expected output.
const OUTPUT_SEPARATOR: &str = "----";

fn parse(text: &str) -> Vec<Item> {
    let lines: Vec<&str> = text.lines().collect();
    let mut items = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let raw = lines[i];
        let trimmed = raw.trim();
        i += 1;
        if trimmed.is_empty() || trimmed.starts_with('#') {
            items.push(Item::Text(raw.to_string()));
            continue;
        }
        let line_no = i;
        let mut expected = None;
        if lines.get(i).is_some_and(|l| l.trim() == OUTPUT_SEPARATOR) {
            i += 1;
            let mut block = Vec::new();
            while i < lines.len() && !lines[i].trim().is_empty() {
                block.push(lines[i].trim_end().to_string());
                i += 1;
            }
            // The blank line that ends the block belongs to it.
            i += 1;
            expected = Some(block);
        }
        items.push(Item::Command { line_no, raw: raw.to_string(), expected });
    }
    items
}

/// The script text with each command's output block replaced by `outputs` (one per command,
/// in order; empty: no block).
fn render(items: &[Item], outputs: &[Vec<String>]) -> String {
    let mut out = String::new();
    let mut outputs = outputs.iter();
    for (n, item) in items.iter().enumerate() {
        match item {
            Item::Text(t) => {
                out.push_str(t);
                out.push('\n');
            }
            Item::Command { raw, .. } => {
                out.push_str(raw);
                out.push('\n');
                let lines = outputs.next().expect("one output per command");
                if lines.is_empty() {
                    continue;
                }
                out.push_str(OUTPUT_SEPARATOR);
                out.push('\n');
                for l in lines {
                    out.push_str(l);
                    out.push('\n');
                }
                // A blank line ends the block, unless the next line already is one.
                if !matches!(items.get(n + 1), Some(Item::Text(t)) if t.trim().is_empty()) {
                    out.push('\n');
                }
            }
        }
    }
    let trimmed = out.trim_end().len();
    out.truncate(trimmed);
    out.push('\n');
    out
}

/// A line-by-line diff (longest common subsequence): `-` expected only, `+` produced only.
fn diff(expected: &[String], got: &[String]) -> String {
    let (n, m) = (expected.len(), got.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if expected[i] == got[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < n || j < m {
        if i < n && j < m && expected[i] == got[j] {
            out.push(format!("     {}", expected[i]));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push(format!("   + {}", got[j]));
            j += 1;
        } else {
            out.push(format!("   - {}", expected[i]));
            i += 1;
        }
    }
    out.join("\n")
}

/// What running a script produced.
#[derive(Clone, Debug)]
pub struct ScriptRun {
    /// Each command with the simulated time it ran at, and with `trace` the timed trace.
    pub report: String,
    /// The script with every command's output block as this run produced it.
    pub rewritten: String,
    /// Commands whose output differs from the script's block, each with a diff.
    pub mismatches: Vec<String>,
}

/// Runs a script's text: every command, its `expect` assertions and the checkers. An `expect`
/// or checker failure is an error; output that differs from the script's blocks is reported in
/// `ScriptRun::mismatches`.
pub fn run_script(text: &str, trace: bool) -> Result<ScriptRun, String> {
    let params = Params {
        metas: 1,
        meta_lease_ttl_ms: tandem_meta_core::MetaOptions::default().lease_ttl_ms,
        store_latency_us_max: 3_000,
        servers: 3,
        partitions: 1,
        replica_count: 3,
        clients: 1,
        register_keys: 0,
        log_cache_bytes_max: 64 << 20,
        policy_changes: false,
        table_churn: false,
        recall_window_ms: tandem_meta_core::MetaOptions::default().recall_window_ms,
        inactive_replica_gc_delay_ms: tandem_host::HostOptions::default().inactive_replica_gc_delay_ms,
        checkpoints_per_partition_max: tandem_host::HostOptions::default().checkpoints_per_partition_max,
        checkpoint_hold_ms: tandem_host::HostOptions::default().checkpoint_hold_ms,
        fault_time_us: u64::MAX / 4,
        site: None,
        backup: None,
    };
    let items = parse(text);
    let mut r = Runner { params, sim: None, trace, last_proposal: None, out: Vec::new(), output: Vec::new() };
    let mut outputs = Vec::new();
    let mut mismatches = Vec::new();
    for item in &items {
        let Item::Command { line_no, raw, expected } = item else { continue };
        let line = raw.split('#').next().unwrap_or("").trim();
        r.out.push(format!("{:>8} {line}", r.sim.as_ref().map_or("".into(), |s| format!("{:.3}s", s.now_us as f64 / 1e6))));
        let words: Vec<&str> = line.split_whitespace().collect();
        let result = r.command(&words);
        r.drain_trace();
        let n = line_no;
        if let Err(e) = result {
            return Err(format!("line {n}: {line}: {e}\n{}", r.out.join("\n")));
        }
        if let Some(f) = r.sim.as_ref().and_then(|s| s.failure.clone()) {
            return Err(format!("line {n}: {line}: a checker failed at {:.3}s: {}\n{}", f.at_us as f64 / 1e6, f.message, r.out.join("\n")));
        }
        let got = std::mem::take(&mut r.output);
        let want = expected.clone().unwrap_or_default();
        if got != want {
            mismatches.push(format!("line {n}: {line}: the output differs from the script's (- expected, + got):\n{}", diff(&want, &got)));
        }
        outputs.push(got);
    }
    Ok(ScriptRun { report: r.out.join("\n"), rewritten: render(&items, &outputs), mismatches })
}

/// Whether `TANDEM_SIM_REWRITE` asks scripts to take their output as the new expectation.
fn rewrite_requested() -> bool {
    std::env::var("TANDEM_SIM_REWRITE").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Runs a script file and compares each command's output with the file's blocks. With
/// `TANDEM_SIM_REWRITE=1` the file is rewritten with the output this run produced instead
/// (its `expect` assertions and the checkers must still pass).
pub fn run_file(path: &Path, trace: bool) -> Result<String, SimFailure> {
    let command = format!("tandem sim --script {}", path.display());
    let fail = |message: String| SimFailure { seed: None, at_us: 0, message, command: command.clone(), trace: None };
    let text = std::fs::read_to_string(path).map_err(|e| fail(format!("read {}: {e}", path.display())))?;
    let run = run_script(&text, trace).map_err(fail)?;
    if rewrite_requested() {
        if run.rewritten != text {
            std::fs::write(path, &run.rewritten).map_err(|e| fail(format!("write {}: {e}", path.display())))?;
        }
        return Ok(format!("{}\nrewrote the expected output of {}", run.report, path.display()));
    }
    if !run.mismatches.is_empty() {
        return Err(fail(format!(
            "{}: {} command(s) produced other output than the script expects; if the protocol changed on purpose, \
             accept the new output with TANDEM_SIM_REWRITE=1 and read the diff\n{}",
            path.display(),
            run.mismatches.len(),
            run.mismatches.join("\n")
        )));
    }
    Ok(run.report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_render_round_trip() {
        let text = "# c\nstart\n----\na\nb\n\nrun 1s\nexpect r1 primary\n----\nx\n";
        let items = parse(text);
        assert_eq!(items.len(), 4);
        assert_eq!(
            items[1],
            Item::Command { line_no: 2, raw: "start".into(), expected: Some(vec!["a".into(), "b".into()]) }
        );
        let outputs = vec![vec!["a".to_string(), "b".to_string()], vec![], vec!["x".to_string()]];
        assert_eq!(render(&items, &outputs), text);
        // New output gets a block; a block that is no longer produced goes.
        let outputs = vec![vec![], vec!["y".to_string()], vec![]];
        assert_eq!(render(&items, &outputs), "# c\nstart\nrun 1s\n----\ny\n\nexpect r1 primary\n");
    }

    #[test]
    fn diff_marks_what_changed() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(diff(&s(&["a", "b", "c"]), &s(&["a", "c", "d"])), "     a\n   - b\n     c\n   + d");
    }
}
