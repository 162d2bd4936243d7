//! `tandem sim`: the clap arguments (the ops binary mounts them as a subcommand) and their
//! execution: one seed, a range of seeds, or a scenario script. A failure names its seed and the
//! exact command that replays it.

use crate::faults::FaultSet;
use crate::sim::Sim;
use crate::stats::{Stats, Summary};
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args, Clone, Debug)]
pub struct SimArgs {
    /// Run one seed.
    #[arg(long, conflicts_with = "seeds")]
    pub seed: Option<u64>,
    /// Run seeds A..B (B excluded), e.g. 0..500.
    #[arg(long, value_parser = parse_seed_range)]
    pub seeds: Option<(u64, u64)>,
    /// How long faults are injected (simulated time); healing and checks follow.
    #[arg(long, default_value = "40s", value_parser = humantime::parse_duration)]
    pub sim_time: Duration,
    /// Fault kinds a seed may draw from: all, none, or a list such as crash,loss,partition.
    #[arg(long, default_value = "all", value_parser = FaultSet::parse)]
    pub faults: FaultSet,
    /// Print every fault, role change and configuration as it happens.
    #[arg(long)]
    pub trace: bool,
    /// Run a scenario script instead of seeds (see docs/simulation.md).
    #[arg(long, conflicts_with_all = ["seed", "seeds"])]
    pub script: Option<PathBuf>,
    /// 1: one site; 2: two sites duplicating to each other, judged by the LWW oracle too.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub sites: u8,
}

impl Default for SimArgs {
    fn default() -> Self {
        SimArgs { seed: None, seeds: None, sim_time: Duration::from_secs(40), faults: FaultSet::all(), trace: false, script: None, sites: 1 }
    }
}

pub fn parse_seed_range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s.split_once("..").ok_or_else(|| format!("{s:?} is not a range like 0..500"))?;
    let a: u64 = a.trim().parse().map_err(|_| format!("{a:?} is not a seed number"))?;
    let b: u64 = b.trim().parse().map_err(|_| format!("{b:?} is not a seed number"))?;
    if a >= b {
        return Err(format!("the range {s} is empty"));
    }
    Ok((a, b))
}

/// A failed seed (or script), with what replays it.
#[derive(Clone, Debug)]
pub struct SimFailure {
    pub seed: Option<u64>,
    pub at_us: u64,
    pub message: String,
    pub command: String,
    /// The run's trace, when it was asked for.
    pub trace: Option<Vec<String>>,
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.seed {
            Some(seed) => write!(f, "seed {seed} failed at {:.3}s: {}", self.at_us as f64 / 1e6, self.message)?,
            None => write!(f, "scenario failed: {}", self.message)?,
        }
        write!(f, "\nreplay with: {}", self.command)
    }
}

impl std::error::Error for SimFailure {}

pub fn replay_command(seed: u64, sites: u8, sim_time: Duration, faults: &FaultSet) -> String {
    // One word, so the command pastes into a shell as it is.
    let time = if sim_time.subsec_millis() == 0 { format!("{}s", sim_time.as_secs()) } else { format!("{}ms", sim_time.as_millis()) };
    let sites = if sites == 2 { " --sites 2" } else { "" };
    format!("tandem sim --seed {seed}{sites} --sim-time {time} --faults {faults}")
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".into()
    }
}

/// Runs one seed of one site. A panic in the protocol code (a failed assert) is a failure of the
/// seed too.
pub fn run_seed(seed: u64, sim_time: Duration, faults: &FaultSet, trace: bool) -> Result<(Stats, Option<Vec<String>>), SimFailure> {
    run_seed_sites(seed, 1, sim_time, faults, trace)
}

/// Runs one seed of `sites` sites (1, or 2 duplicating to each other).
pub fn run_seed_sites(seed: u64, sites: u8, sim_time: Duration, faults: &FaultSet, trace: bool) -> Result<(Stats, Option<Vec<String>>), SimFailure> {
    let fault_time_us = sim_time.as_micros() as u64;
    let result = std::panic::catch_unwind(|| {
        if sites == 2 { crate::world::run(seed, fault_time_us, faults, trace) } else { Sim::new(seed, fault_time_us, faults, trace).run() }
    });
    let command = replay_command(seed, sites, sim_time, faults);
    match result {
        Ok((stats, None, trace)) => Ok((stats, trace)),
        Ok((_, Some(f), trace)) => Err(SimFailure { seed: Some(seed), at_us: f.at_us, message: f.message, command, trace }),
        Err(p) => Err(SimFailure {
            seed: Some(seed),
            at_us: 0,
            message: format!("panicked: {}", panic_message(p.as_ref())),
            command,
            trace: None,
        }),
    }
}

fn seed_line(stats: &Stats, wall: Duration) -> String {
    let events_per_s = stats.events as f64 / wall.as_secs_f64().max(1e-9);
    format!(
        "seed {}: ok  {} events, {:.1} simulated s, ops {} ok / {} unknown / {} failed, recovery {} ms, trace hash {:016x}, {:.0} events/s",
        stats.seed,
        stats.events,
        stats.sim_time_us as f64 / 1e6,
        stats.ops_ok,
        stats.ops_unknown,
        stats.ops_failed,
        stats.recovery_ms,
        stats.trace_hash,
        events_per_s
    )
}

/// Executes `tandem sim`: returns the report, or the first failure.
pub fn run(args: &SimArgs) -> Result<String, SimFailure> {
    if let Some(path) = &args.script {
        return crate::script::run_file(path, args.trace);
    }
    let (from, to) = match (args.seed, args.seeds) {
        (Some(s), _) => (s, s + 1),
        (None, Some(range)) => range,
        (None, None) => (0, 1),
    };
    let mut summary = Summary::default();
    let mut report = String::new();
    let start = Instant::now();
    for seed in from..to {
        let t = Instant::now();
        let (stats, trace) = match run_seed_sites(seed, args.sites, args.sim_time, &args.faults, args.trace) {
            Ok(x) => x,
            Err(mut f) => {
                if let Some(trace) = f.trace.take() {
                    f.message = format!("{}\ntrace:\n{}", f.message, trace.join("\n"));
                }
                return Err(f);
            }
        };
        if let Some(trace) = trace {
            report.push_str(&trace.join("\n"));
            report.push('\n');
        }
        if to - from == 1 {
            report.push_str(&seed_line(&stats, t.elapsed()));
            report.push('\n');
            report.push_str(&format!("faults: {:?}\npaths: {:?}\n", stats.faults, stats.paths));
        if stats.lin_online_widened + stats.lin_online_gave_up + stats.lin_inconclusive > 0 {
            report.push_str(&format!(
                "linearizability: {} key(s) widened online, {} left to the end search, {} inconclusive\n",
                stats.lin_online_widened, stats.lin_online_gave_up, stats.lin_inconclusive
            ));
        }
        }
        summary.add(&stats);
    }
    let wall = start.elapsed();
    if to - from > 1 {
        report.push_str(&format!(
            "{} seeds passed in {:.1} s wall ({:.0} events/s)\n",
            summary.seeds,
            wall.as_secs_f64(),
            summary.events as f64 / wall.as_secs_f64().max(1e-9)
        ));
        report.push_str(&summary.table());
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_ranges_parse() {
        assert_eq!(parse_seed_range("0..500"), Ok((0, 500)));
        assert!(parse_seed_range("5..5").unwrap_err().contains("empty"));
        assert!(parse_seed_range("7").is_err());
    }

    #[test]
    fn args_parse_like_the_cli() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            sim: SimArgs,
        }
        let cli = Cli::try_parse_from(["tandem", "--seed", "7", "--sim-time", "1m 30s", "--faults", "crash,loss"]).unwrap();
        assert_eq!(cli.sim.seed, Some(7));
        assert_eq!(cli.sim.sim_time, Duration::from_secs(90));
        assert_eq!(replay_command(7, cli.sim.sites, cli.sim.sim_time, &cli.sim.faults), "tandem sim --seed 7 --sim-time 90s --faults crash,loss");
        let two = Cli::try_parse_from(["tandem", "--seed", "7", "--sites", "2"]).unwrap();
        assert_eq!(replay_command(7, two.sim.sites, two.sim.sim_time, &two.sim.faults), "tandem sim --seed 7 --sites 2 --sim-time 40s --faults all");
        assert!(Cli::try_parse_from(["tandem", "--sites", "3"]).is_err());
        assert!(Cli::try_parse_from(["tandem", "--faults", "nope"]).is_err());
    }
}
