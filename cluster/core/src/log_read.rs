//! Reading a partition's records back from the shared mutation log, by one rule for every
//! reader — a server replaying its log at start, the simulator's twin, a duplicator reading a
//! partition's committed mutations:
//!
//! - records of a partition count in log order;
//! - a `Reset` voids everything logged for the partition before it;
//! - a later record for a decree replaces it and every decree after it (a new primary's stream
//!   overwrote what an older one had prepared there).
//!
//! `reader_conformance` checks that a log implementation (the real `MutationLog`, the
//! simulator's `SimLog`) reads back what this rule says, through appends, garbage collection and
//! a reopen.

use crate::mutation::{LogRecord, Mutation};
use crate::types::{Decree, Gpid};
use std::collections::BTreeMap;

/// The rule over what stands for a partition's records (the records themselves, or an index
/// of where they are): `reset` voids everything, `put(decree, entry)` replaces that decree and
/// every later one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayRule<T> {
    entries: BTreeMap<Decree, T>,
}

impl<T> Default for ReplayRule<T> {
    fn default() -> Self {
        ReplayRule { entries: BTreeMap::new() }
    }
}

impl<T> ReplayRule<T> {
    pub fn reset(&mut self) {
        self.entries.clear();
    }

    pub fn put(&mut self, decree: Decree, entry: T) {
        self.entries.split_off(&decree);
        self.entries.insert(decree, entry);
    }

    /// What stands from `from` on, in decree order.
    pub fn from(&self, from: Decree) -> impl Iterator<Item = (&Decree, &T)> {
        self.entries.range(from..)
    }

    pub fn into_values(self) -> impl Iterator<Item = T> {
        self.entries.into_values()
    }
}

/// The mutations one partition's records leave, by the rule above.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionLog {
    mutations: ReplayRule<Mutation>,
}

impl PartitionLog {
    /// Takes the partition's next record in log order.
    pub fn push(&mut self, record: LogRecord) {
        match record {
            LogRecord::Reset { .. } => self.mutations.reset(),
            LogRecord::Mutation { mutation, .. } => self.push_mutation(mutation),
        }
    }

    pub fn push_mutation(&mut self, mutation: Mutation) {
        self.mutations.put(mutation.decree, mutation);
    }

    /// The mutations from `from` on, in decree order.
    pub fn from(&self, from: Decree) -> impl Iterator<Item = &Mutation> {
        self.mutations.from(from).map(|(_, m)| m)
    }

    pub fn into_mutations(self) -> Vec<Mutation> {
        self.mutations.into_values().collect()
    }
}

/// Every partition's mutations from a whole log read in order (a server's start).
pub fn replay_all(records: impl IntoIterator<Item = LogRecord>) -> BTreeMap<Gpid, PartitionLog> {
    let mut out: BTreeMap<Gpid, PartitionLog> = BTreeMap::new();
    for record in records {
        out.entry(record.gpid()).or_default().push(record);
    }
    out
}

/// Which partitions hold a log over `retain_bytes`, and up to which decree each must be durable
/// elsewhere for the log to fit: walking its pieces from the oldest (each piece: its bytes, and
/// the largest decree of each partition in it) while what is left exceeds `retain_bytes`, every
/// partition whose `keep_after` is below its decree there (None: the partition is gone, it
/// holds nothing), with the largest such decree. `total_bytes` counts every piece, also those
/// not offered (the real log never offers its current segment, which is never removed).
///
/// The host flushes the engines this names (docs/host.md, "What the shared log keeps"); the
/// real log calls it on its segments, the simulator's on its records.
pub fn holding_back<P, D>(pieces: P, total_bytes: u64, retain_bytes: u64, keep_after: &dyn Fn(Gpid) -> Option<Decree>) -> BTreeMap<Gpid, Decree>
where
    P: IntoIterator<Item = (u64, D)>,
    D: IntoIterator<Item = (Gpid, Decree)>,
{
    let mut over = total_bytes.saturating_sub(retain_bytes);
    let mut out: BTreeMap<Gpid, Decree> = BTreeMap::new();
    for (bytes, decrees) in pieces {
        if over == 0 {
            break;
        }
        for (gpid, decree) in decrees {
            if keep_after(gpid).is_some_and(|k| k < decree) {
                let d = out.entry(gpid).or_insert(decree);
                *d = (*d).max(decree);
            }
        }
        over = over.saturating_sub(bytes);
    }
    out
}

/// What `reader_conformance` drives: a mutation log, real or simulated.
pub trait LogUnderTest {
    /// Appends and waits until the records are durable.
    fn append(&mut self, records: Vec<LogRecord>);
    /// Partition `gpid`'s mutations from `from` on, by the replay rule, read from the log.
    fn read_partition(&mut self, gpid: Gpid, from: Decree) -> Vec<Mutation>;
    /// Drops what no partition needs (`keep_after(gpid)`: records after it are needed; None: the
    /// partition is gone), as much as the implementation's granularity allows.
    fn collect(&mut self, keep_after: &dyn Fn(Gpid) -> Option<Decree>);
    /// `holding_back` over the log's pieces (what `collect` could remove, oldest first).
    fn holding_back(&mut self, keep_after: &dyn Fn(Gpid) -> Option<Decree>, retain_bytes: u64) -> BTreeMap<Gpid, Decree>;
    /// Closes and opens the log again; returns the records replayed.
    fn reopen(&mut self) -> Vec<LogRecord>;
}

fn mutation(ballot: u64, decree: Decree) -> Mutation {
    Mutation {
        ballot,
        decree,
        timestamp_us: ballot * 1_000 + decree,
        ops: vec![crate::mutation::WriteOp::Put { key: format!("k{decree}").into_bytes(), value: vec![ballot as u8; 64] }],
    }
}

/// The checks every log passes. `big` pads records so that a log with small segments rolls many
/// times.
pub fn reader_conformance(log: &mut dyn LogUnderTest) {
    let (a, b) = (Gpid::new(1, 0), Gpid::new(1, 1));
    let m = |gpid, ballot, decree| LogRecord::Mutation { gpid, mutation: mutation(ballot, decree) };
    // Two partitions interleaved; b's decree 3 is overwritten by a later ballot's stream.
    for d in 1..=20 {
        log.append(vec![m(a, 1, d), m(b, 1, d)]);
    }
    log.append(vec![m(b, 2, 3), m(b, 2, 4)]);
    assert_eq!(log.read_partition(a, 1), (1..=20).map(|d| mutation(1, d)).collect::<Vec<_>>());
    assert_eq!(log.read_partition(a, 15), (15..=20).map(|d| mutation(1, d)).collect::<Vec<_>>());
    assert_eq!(log.read_partition(b, 2), vec![mutation(1, 2), mutation(2, 3), mutation(2, 4)], "decrees after a replaced one go with it");
    assert_eq!(log.read_partition(Gpid::new(9, 9), 0), vec![]);
    // A reset voids what came before it for its partition only.
    log.append(vec![LogRecord::Reset { gpid: a, decree: 30 }, m(a, 3, 31)]);
    assert_eq!(log.read_partition(a, 0), vec![mutation(3, 31)]);
    assert_eq!(log.read_partition(b, 4), vec![mutation(2, 4)]);
    // Collected records go; what the partitions still need stays readable.
    log.collect(&|g| if g == a { Some(31) } else { Some(2) });
    assert_eq!(log.read_partition(b, 3), vec![mutation(2, 3), mutation(2, 4)]);
    assert!(log.read_partition(a, 31).is_empty() || log.read_partition(a, 31) == vec![mutation(3, 31)]);
    // A reopen replays the same history.
    let replayed = replay_all(log.reopen());
    assert_eq!(replayed.get(&b).map(|p| p.from(3).cloned().collect::<Vec<_>>()), Some(vec![mutation(2, 3), mutation(2, 4)]));
    assert_eq!(log.read_partition(b, 3), vec![mutation(2, 3), mutation(2, 4)]);
    log.append(vec![m(b, 2, 5)]);
    assert_eq!(log.read_partition(b, 4), vec![mutation(2, 4), mutation(2, 5)]);
    // What holds the log back: nothing within its room, nothing gone or durable; past it, only
    // the partitions' own decrees, as far as the log's granularity names them.
    assert_eq!(log.holding_back(&|_| Some(0), u64::MAX), BTreeMap::new());
    assert_eq!(log.holding_back(&|_| None, 0), BTreeMap::new());
    assert_eq!(log.holding_back(&|_| Some(Decree::MAX), 0), BTreeMap::new());
    for (gpid, decree) in log.holding_back(&|_| Some(2), 0) {
        let most = if gpid == a { 31 } else if gpid == b { 20 } else { panic!("{gpid} was never logged") };
        assert!(decree > 2 && decree <= most, "{gpid} held back to {decree}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule applied to an in-memory list of records: the reference the others match.
    #[derive(Default)]
    struct Reference {
        records: Vec<LogRecord>,
    }

    impl LogUnderTest for Reference {
        fn append(&mut self, records: Vec<LogRecord>) {
            self.records.extend(records);
        }
        fn read_partition(&mut self, gpid: Gpid, from: Decree) -> Vec<Mutation> {
            replay_all(self.records.iter().filter(|r| r.gpid() == gpid).cloned()).remove(&gpid).map(|p| p.from(from).cloned().collect()).unwrap_or_default()
        }
        fn collect(&mut self, _keep_after: &dyn Fn(Gpid) -> Option<Decree>) {}
        fn holding_back(&mut self, keep_after: &dyn Fn(Gpid) -> Option<Decree>, retain_bytes: u64) -> BTreeMap<Gpid, Decree> {
            let pieces = self.records.iter().map(|r| (1, [(r.gpid(), r.decree())]));
            holding_back(pieces, self.records.len() as u64, retain_bytes, keep_after)
        }
        fn reopen(&mut self) -> Vec<LogRecord> {
            self.records.clone()
        }
    }

    #[test]
    fn the_rule_holds_for_the_reference() {
        reader_conformance(&mut Reference::default());
    }

    #[test]
    fn a_later_record_replaces_its_decree_and_the_rest() {
        let g = Gpid::new(1, 0);
        let log = replay_all([1, 2, 3].map(|d| LogRecord::Mutation { gpid: g, mutation: mutation(1, d) }).into_iter().chain([
            LogRecord::Mutation { gpid: g, mutation: mutation(2, 2) },
        ]));
        assert_eq!(log[&g].clone().into_mutations(), vec![mutation(1, 1), mutation(2, 2)]);
    }
}
