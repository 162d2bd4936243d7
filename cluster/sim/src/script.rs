//! Scenario scripts: hand-written protocol cases that read like scripts (STYLE rule 13). The
//! cluster runs without random faults; the script injects them and states what it expects.
//!
//! ```text
//! # comments and blank lines are ignored
//! servers 4                        # before `start`: cluster shape and options
//! option log_cache_bytes_max 200
//! start                            # boot, place the table (one partition; r1 primary, r2 r3)
//! run 2s                           # advance simulated time
//! write k1 v1                      # client c1 sets k1 (does not wait; `run` lets it finish)
//! read k1
//! deliver r1->r2 drop=prepare      # drop r1's prepares to r2 until cleared (count=N: N only)
//! deliver r1->r2 ok                # clear the rules of r1->r2
//! block r1->meta                   # one direction only;  unblock r1->meta
//! partition r1 | r2 r3 meta        # both directions between the groups;  heal
//! clog r2 3s
//! crash r2 [torn]                  # restart r2;  crash meta;  restart meta
//! fail-disk r2 write|sync          # the next log write / fsync of r2 fails
//! propose r1 remove-secondary r2 ballot=2    # handed to the meta as if r1 sent it
//! expect r1 primary ballot=2 committed=3 prepared=3
//! expect config ballot=3 primary=r1 secondaries=r2,r3 learners=
//! expect write k1 ok|unknown|failed|pending
//! expect read k1 v1|none
//! expect proposal ok|refused
//! expect path learn-by-checkpoint
//! expect converged
//! ```
//!
//! The checkers of a seeded run (single primary, decree agreement, bank reads) run after every
//! event here too; a failure stops the script.

use crate::cli::SimFailure;
use crate::faults::FaultPlan;
use crate::history::{OpKind, Outcome, Output};
use crate::meta::TABLE_ID;
use crate::msg::{Endpoint, replica_index};
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
    if name == "meta" {
        return Ok(Endpoint::Meta);
    }
    replica_index(name).map(Endpoint::Replica).ok_or_else(|| format!("{name:?} is not a node (r1, r2, … or meta)"))
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
    out: Vec<String>,
}

impl Runner {
    fn sim(&mut self) -> Result<&mut Sim, String> {
        self.sim.as_mut().ok_or_else(|| "`start` the cluster first".to_string())
    }

    fn command(&mut self, words: &[&str]) -> Result<(), String> {
        match words {
            ["servers", n] => self.params.servers = n.parse().map_err(|_| format!("{n:?} is not a number"))?,
            ["replicas", n] => self.params.replica_count = n.parse().map_err(|_| format!("{n:?} is not a number"))?,
            ["option", "log_cache_bytes_max", n] => {
                self.params.log_cache_bytes_max = n.parse().map_err(|_| format!("{n:?} is not a number"))?
            }
            ["start"] => {
                let sim = Sim::with(0, Rng::new(0), self.params.clone(), FaultPlan::quiet(), self.trace);
                self.sim = Some(sim);
                // Let the servers beacon and the meta place the table.
                let sim = self.sim()?;
                sim.run_until(3_000_000);
            }
            ["run", d] => {
                let d = duration_us(d)?;
                let sim = self.sim()?;
                let until = sim.now_us + d;
                sim.run_until(until);
            }
            ["write", key, value] => self.sim()?.client_op(key.as_bytes().to_vec(), OpKind::Set { value: value.as_bytes().to_vec() }),
            ["read", key] => self.sim()?.client_op(key.as_bytes().to_vec(), OpKind::Get),
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
                self.sim()?.crash(e, false);
            }
            ["crash", node, "torn"] => {
                let e = endpoint(node)?;
                self.sim()?.crash(e, true);
            }
            ["restart", node] => {
                let e = endpoint(node)?;
                self.sim()?.restart(e);
            }
            ["fail-disk", node, what] => {
                let Endpoint::Replica(i) = endpoint(node)? else { return Err("only replica servers have a log".into()) };
                let s = &mut self.sim()?.servers[i];
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
                let config = self.sim()?.meta.config(gpid()).cloned().ok_or("the meta has no configuration (is it down?)")?;
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
            [node, status, rest @ ..] => {
                let Endpoint::Replica(i) = endpoint(node)? else { return Err("expect a replica server's state".into()) };
                let sim = self.sim()?;
                let s = &sim.servers[i];
                let state = s.replicas.get(&gpid()).filter(|_| s.up).map(|r| r.state());
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

/// Runs a script's text; returns the report (each command and the run's trace).
pub fn run_script(text: &str, trace: bool) -> Result<String, String> {
    let params = Params {
        servers: 3,
        partitions: 1,
        replica_count: 3,
        clients: 1,
        register_keys: 0,
        log_cache_bytes_max: 64 << 20,
        fault_time_us: u64::MAX / 4,
    };
    let mut r = Runner { params, sim: None, trace, last_proposal: None, out: Vec::new() };
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        r.out.push(format!("{:>8} {line}", r.sim.as_ref().map_or("".into(), |s| format!("{:.3}s", s.now_us as f64 / 1e6))));
        let words: Vec<&str> = line.split_whitespace().collect();
        let result = r.command(&words);
        if let Some(sim) = r.sim.as_mut()
            && let Some(t) = sim.trace.as_mut()
        {
            r.out.append(t);
        }
        if let Err(e) = result {
            return Err(format!("line {}: {line}: {e}\n{}", n + 1, r.out.join("\n")));
        }
        if let Some(f) = r.sim.as_ref().and_then(|s| s.failure.clone()) {
            return Err(format!(
                "line {}: {line}: a checker failed at {:.3}s: {}\n{}",
                n + 1,
                f.at_us as f64 / 1e6,
                f.message,
                r.out.join("\n")
            ));
        }
    }
    Ok(r.out.join("\n"))
}

pub fn run_file(path: &Path, trace: bool) -> Result<String, SimFailure> {
    let command = format!("tandem sim --script {}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| SimFailure {
        seed: None,
        at_us: 0,
        message: format!("read {}: {e}", path.display()),
        command: command.clone(),
        trace: None,
    })?;
    run_script(&text, trace).map_err(|message| SimFailure { seed: None, at_us: 0, message, command, trace: None })
}
