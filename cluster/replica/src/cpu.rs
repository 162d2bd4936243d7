//! How busy this machine's CPUs are, read from `/proc/stat` on every tick. The mutation log
//! trades up to `log.group_commit_window` of latency for fewer fsyncs only while CPU is scarce
//! (`tandem_storage::MutationLog::set_cpu_busy`): with CPU to spare, waiting would only make
//! writes slower. Elsewhere than Linux the meter reads nothing and the log never waits.

/// The busy share of all CPUs (over one tick) from which the log's group commit window applies,
/// and the share below which it stops again. Waiting itself leaves CPUs idle, so one threshold
/// would switch it off as soon as it works. Measured with `tandem bench --workload write-only`
/// (8 partitions, client on the same 2-core machine), without the window / with it: 58% / –
/// busy at 1 write in flight, 79% / 44% at 4, 91% / 67% at 16, 96% / 88% at 64.
pub const CPU_BUSY_FROM: f64 = 0.85;
pub const CPU_BUSY_UNTIL: f64 = 0.60;

/// Whether CPU is scarce: turns true at `CPU_BUSY_FROM`, false again below `CPU_BUSY_UNTIL`.
pub fn cpu_busy(was_busy: bool, busy_share: f64) -> bool {
    if was_busy { busy_share >= CPU_BUSY_UNTIL } else { busy_share >= CPU_BUSY_FROM }
}

/// Cumulative CPU time of all CPUs, in clock ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct CpuTimes {
    total: u64,
    idle: u64,
}

/// The first line of `/proc/stat`: `cpu user nice system idle iowait irq softirq steal …`.
/// Idle and iowait count as idle; steal counts as busy (the CPU was not ours to use).
fn parse(stat: &str) -> Option<CpuTimes> {
    let mut fields = stat.lines().next()?.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let ticks: Vec<u64> = fields.take(8).map(|f| f.parse().ok()).collect::<Option<_>>()?;
    if ticks.len() < 5 {
        return None;
    }
    Some(CpuTimes { total: ticks.iter().sum(), idle: ticks[3] + ticks[4] })
}

#[derive(Debug, Default)]
pub struct CpuMeter {
    last: Option<CpuTimes>,
}

impl CpuMeter {
    /// The busy share of all CPUs since the previous sample; None at the first sample, when no
    /// tick passed, or where `/proc/stat` cannot be read.
    pub fn sample(&mut self) -> Option<f64> {
        let now = parse(&std::fs::read_to_string("/proc/stat").ok()?)?;
        self.busy_share(now)
    }

    fn busy_share(&mut self, now: CpuTimes) -> Option<f64> {
        let prev = self.last.replace(now)?;
        let total = now.total.checked_sub(prev.total).filter(|t| *t > 0)?;
        let idle = now.idle.saturating_sub(prev.idle).min(total);
        Some(1.0 - idle as f64 / total as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_share_comes_from_the_idle_and_iowait_ticks_between_samples() {
        let a = parse("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\n").unwrap();
        assert_eq!(a, CpuTimes { total: 1000, idle: 850 });
        // 200 ticks later: 180 busy (user, system, steal), 20 idle.
        let b = parse("cpu  200 0 100 810 60 0 0 30 0 0\n").unwrap();
        let mut meter = CpuMeter::default();
        assert_eq!(meter.busy_share(a), None, "the first sample has nothing to compare with");
        assert_eq!(meter.busy_share(b), Some(0.9));
        assert_eq!(meter.busy_share(b), None, "no tick passed");
        assert_eq!(parse("intr 1 2 3"), None);
        assert_eq!(parse("cpu 1 2 x 4 5"), None);
        assert_eq!(parse("cpu 1 2 3"), None);
    }

    #[test]
    fn busy_turns_on_high_and_off_low() {
        assert!(!cpu_busy(false, 0.84));
        assert!(cpu_busy(false, 0.85));
        assert!(cpu_busy(true, 0.61), "waiting leaves CPUs idle: it stays on above the low mark");
        assert!(!cpu_busy(true, 0.59));
    }

    #[test]
    fn this_machines_proc_stat_parses() {
        let times = parse(&std::fs::read_to_string("/proc/stat").unwrap()).expect("a cpu line");
        assert!(times.total > times.idle);
    }
}
