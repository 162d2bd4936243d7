//! Fault kinds and the per-seed fault plan: which kinds a run may inject and at what rates. The
//! seed picks a subset of the kinds the command line allows, so across many seeds every kind is
//! seen alone and in company.

use crate::rng::Rng;
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// Crash a replica server (losing unsynced log data and unflushed engine state) and restart it.
    Crash,
    /// Crash a meta server; it restarts with nothing in memory and claims the store again.
    MetaCrash,
    /// Split the nodes in two groups that cannot talk.
    Partition,
    /// Block one direction of some links only.
    AsymPartition,
    /// Hold every message of one node for a while, then deliver them.
    Clog,
    /// Lose messages (the RPC fails as on a reset connection).
    Loss,
    /// Deliver some messages twice.
    Duplicate,
    /// Wide latency jitter, so messages overtake each other.
    Reorder,
    /// A log write fails (nothing reaches the disk).
    DiskWrite,
    /// A log fsync fails (the data may or may not be on disk).
    DiskSync,
    /// A crash leaves a torn last record in the log.
    TornTail,
    /// Node clocks run at different rates and show different wall times.
    Drift,
    /// A meta server's calls to its store hang for a while, then go through late: its lease
    /// lapses, another meta may take over, and its late writes must be fenced.
    StoreClog,
    /// A replica server's disk drops below its reserve for a while: its primaries, and those of
    /// the partitions it is a member of, take only deletes; the meta places nothing there.
    DiskFull,
}

impl FaultKind {
    pub const ALL: [FaultKind; 14] = [
        FaultKind::Crash,
        FaultKind::MetaCrash,
        FaultKind::Partition,
        FaultKind::AsymPartition,
        FaultKind::Clog,
        FaultKind::Loss,
        FaultKind::Duplicate,
        FaultKind::Reorder,
        FaultKind::DiskWrite,
        FaultKind::DiskSync,
        FaultKind::TornTail,
        FaultKind::Drift,
        FaultKind::StoreClog,
        FaultKind::DiskFull,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::Crash => "crash",
            FaultKind::MetaCrash => "meta-crash",
            FaultKind::Partition => "partition",
            FaultKind::AsymPartition => "asym-partition",
            FaultKind::Clog => "clog",
            FaultKind::Loss => "loss",
            FaultKind::Duplicate => "duplicate",
            FaultKind::Reorder => "reorder",
            FaultKind::DiskWrite => "disk-write",
            FaultKind::DiskSync => "disk-sync",
            FaultKind::TornTail => "torn-tail",
            FaultKind::Drift => "drift",
            FaultKind::StoreClog => "store-clog",
            FaultKind::DiskFull => "disk-full",
        }
    }

    pub fn from_name(name: &str) -> Option<FaultKind> {
        FaultKind::ALL.iter().copied().find(|k| k.name() == name)
    }
}

/// A set of fault kinds, as given by `--faults`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct FaultSet(Vec<FaultKind>);

impl FaultSet {
    pub fn all() -> FaultSet {
        FaultSet(FaultKind::ALL.to_vec())
    }

    pub fn none() -> FaultSet {
        FaultSet(Vec::new())
    }

    /// `all`, `none`, or a comma-separated list of kind names.
    pub fn parse(s: &str) -> Result<FaultSet, String> {
        match s.trim() {
            "all" => return Ok(FaultSet::all()),
            "none" | "" => return Ok(FaultSet::none()),
            _ => {}
        }
        let mut kinds = Vec::new();
        for name in s.split(',').map(str::trim) {
            let k = FaultKind::from_name(name).ok_or_else(|| {
                let known: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown fault kind {name:?}; known: all, none, {}", known.join(", "))
            })?;
            if !kinds.contains(&k) {
                kinds.push(k);
            }
        }
        kinds.sort();
        Ok(FaultSet(kinds))
    }

    pub fn contains(&self, k: FaultKind) -> bool {
        self.0.contains(&k)
    }

    pub fn kinds(&self) -> &[FaultKind] {
        &self.0
    }
}

impl fmt::Display for FaultSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return write!(f, "none");
        }
        if self.0.len() == FaultKind::ALL.len() {
            return write!(f, "all");
        }
        let names: Vec<&str> = self.0.iter().map(|k| k.name()).collect();
        write!(f, "{}", names.join(","))
    }
}

/// What one seed injects: the enabled kinds and their rates.
#[derive(Clone, Debug)]
pub struct FaultPlan {
    pub enabled: FaultSet,
    /// Probability that a message is lost (its RPC fails).
    pub loss: f64,
    /// Probability that a message is delivered twice.
    pub duplicate: f64,
    /// Extra latency jitter, microseconds.
    pub jitter_us: u64,
    /// Probability that a log write / fsync fails.
    pub disk_write_fail: f64,
    pub disk_sync_fail: f64,
    /// Largest clock rate error, parts per million. Kept below what lease < grace tolerates:
    /// lease / (1 - d) < grace / (1 + d) holds for 6 s / 8 s up to d ≈ 14 %.
    pub drift_ppm_max: u64,
    /// Mean time between discrete faults (crash, partition, clog…), milliseconds.
    pub fault_interval_ms: u64,
}

impl FaultPlan {
    /// Each allowed kind is enabled with probability 3/4; rates are drawn per seed. Kinds added
    /// after a seed's bug was recorded are drawn from `late` (a stream of their own), so every
    /// older seed draws the plan it always did.
    pub fn draw(allowed: &FaultSet, rng: &mut Rng, late: &mut Rng) -> FaultPlan {
        let mut kinds: Vec<FaultKind> = allowed.kinds().iter().copied().filter(|k| !Self::LATE.contains(k)).filter(|_| rng.chance(0.75)).collect();
        kinds.extend(allowed.kinds().iter().copied().filter(|k| Self::LATE.contains(k)).filter(|_| late.chance(0.75)));
        kinds.sort();
        let enabled = FaultSet(kinds);
        let on = |k| enabled.contains(k);
        FaultPlan {
            loss: if on(FaultKind::Loss) { rng.range(1, 50) as f64 / 1000.0 } else { 0.0 },
            duplicate: if on(FaultKind::Duplicate) { rng.range(1, 50) as f64 / 1000.0 } else { 0.0 },
            jitter_us: if on(FaultKind::Reorder) { rng.range(1_000, 50_000) } else { 500 },
            disk_write_fail: if on(FaultKind::DiskWrite) { rng.range(1, 20) as f64 / 10_000.0 } else { 0.0 },
            disk_sync_fail: if on(FaultKind::DiskSync) { rng.range(1, 20) as f64 / 10_000.0 } else { 0.0 },
            drift_ppm_max: if on(FaultKind::Drift) { rng.range(1_000, 50_000) } else { 0 },
            fault_interval_ms: rng.range(2_000, 8_000),
            enabled,
        }
    }

    const LATE: [FaultKind; 1] = [FaultKind::DiskFull];

    /// The stream `draw` takes late kinds from.
    pub fn late_rng(seed: u64) -> Rng {
        Rng::new(seed ^ 0x6c61_7465_6b69_6e64)
    }

    /// No faults at all (scenario scripts inject their own).
    pub fn quiet() -> FaultPlan {
        FaultPlan {
            enabled: FaultSet::none(),
            loss: 0.0,
            duplicate: 0.0,
            jitter_us: 0,
            disk_write_fail: 0.0,
            disk_sync_fail: 0.0,
            drift_ppm_max: 0,
            fault_interval_ms: u64::MAX,
        }
    }

    pub fn on(&self, k: FaultKind) -> bool {
        self.enabled.contains(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_round_trip() {
        assert_eq!(FaultSet::parse("all").unwrap(), FaultSet::all());
        assert_eq!(FaultSet::parse("none").unwrap().to_string(), "none");
        let s = FaultSet::parse("loss, crash").unwrap();
        assert_eq!(s.to_string(), "crash,loss");
        assert!(FaultSet::parse("crash,bogus").unwrap_err().contains("unknown fault kind \"bogus\""));
    }
}
