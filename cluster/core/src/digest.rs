//! Digests that let a beacon and its answer leave out what did not change (docs/scale.md,
//! "Beacons"): a server sends only the replica reports that changed since its last answered
//! beacon, and the digest of all of them; the meta answers only when its configurations for the
//! server differ from the digest the server holds. Both sides compute the same digest over the
//! same canonical bytes, here.
//!
//! FNV-1a, 128 bits: not a defence against an adversary (the parties trust each other), a check
//! against a state that drifted; two different sets of configurations meet the same digest with
//! odds of about 2^-128.

use crate::{Ballot, Decree, Gpid, PartitionConfig};

const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
const PRIME: u128 = 0x0000000001000000000000000000013B;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digest(u128);

impl Default for Digest {
    fn default() -> Self {
        Digest(OFFSET)
    }
}

impl Digest {
    pub fn bytes(mut self, bytes: &[u8]) -> Self {
        for b in bytes {
            self.0 ^= u128::from(*b);
            self.0 = self.0.wrapping_mul(PRIME);
        }
        self
    }

    pub fn u64(self, v: u64) -> Self {
        self.bytes(&v.to_be_bytes())
    }

    /// A string, length first (so "ab","c" and "a","bc" differ).
    pub fn str(self, s: &str) -> Self {
        self.u64(s.len() as u64).bytes(s.as_bytes())
    }

    pub fn gpid(self, g: Gpid) -> Self {
        self.u64((u64::from(g.table_id) << 32) | u64::from(g.partition))
    }

    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Digest> {
        <[u8; 16]>::try_from(bytes).ok().map(|b| Digest(u128::from_be_bytes(b)))
    }
}

/// The digest of a server's reports, each as what the meta keeps of it (gpid, ballot, status,
/// last committed, last prepared), in partition order.
pub fn reports_digest<'a>(reports: impl IntoIterator<Item = (Gpid, Ballot, &'a str, Decree, Decree)>) -> Digest {
    reports.into_iter().fold(Digest::default(), |d, (gpid, ballot, status, committed, prepared)| {
        d.gpid(gpid).u64(ballot).str(status).u64(committed).u64(prepared)
    })
}

/// A configuration as a beacon answer carries it, with its table's partition count and
/// tombstone retention.
pub fn config_digest(d: Digest, c: &PartitionConfig, partition_count: u32, tombstone_retention_ms: u64) -> Digest {
    let nodes = |d: Digest, ns: &[String]| ns.iter().fold(d.u64(ns.len() as u64), |d, n| d.str(n));
    let d = d.gpid(c.gpid).u64(c.ballot).str(c.primary.as_deref().unwrap_or(""));
    let d = nodes(nodes(nodes(d, &c.secondaries), &c.learners), &c.last_drops);
    d.u64(u64::from(partition_count)).u64(tombstone_retention_ms)
}

/// The digest of a beacon answer's configurations, each with its table's partition count and
/// tombstone retention (0 where the lists do not name its table), in the answer's order.
pub fn answer_digest(configs: &[PartitionConfig], partition_counts: &[(u32, u32)], tombstone_retention: &[(u32, u64)]) -> Digest {
    let count = |t: u32| partition_counts.iter().find(|(id, _)| *id == t).map_or(0, |(_, n)| *n);
    let retention = |t: u32| tombstone_retention.iter().find(|(id, _)| *id == t).map_or(0, |(_, ms)| *ms);
    configs.iter().fold(Digest::default().u64(configs.len() as u64), |d, c| config_digest(d, c, count(c.gpid.table_id), retention(c.gpid.table_id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(partition: u32, ballot: u64, primary: &str, secondaries: &[&str]) -> PartitionConfig {
        PartitionConfig {
            gpid: Gpid::new(1, partition),
            ballot,
            primary: Some(primary.into()),
            secondaries: secondaries.iter().map(|s| s.to_string()).collect(),
            learners: vec![],
            last_drops: vec![],
        }
    }

    #[test]
    fn answers_that_differ_in_anything_they_carry_have_different_digests() {
        let base = vec![config(0, 3, "a", &["b", "c"]), config(1, 2, "b", &["c"])];
        let d = |configs: &[PartitionConfig], counts: &[(u32, u32)], retention: &[(u32, u64)]| answer_digest(configs, counts, retention);
        let same = d(&base, &[(1, 2)], &[(1, 100)]);
        assert_eq!(same, d(&base.clone(), &[(1, 2)], &[(1, 100)]));
        let mut learner = base.clone();
        learner[1].learners.push("d".into());
        let mut moved = base.clone();
        moved[0].secondaries = vec!["bc".into()];
        let mut split = base.clone();
        split[0].secondaries = vec!["b".into(), "c".into(), String::new()];
        let others = [
            d(&base[..1], &[(1, 2)], &[(1, 100)]),
            d(&[base[1].clone(), base[0].clone()], &[(1, 2)], &[(1, 100)]),
            d(&learner, &[(1, 2)], &[(1, 100)]),
            d(&moved, &[(1, 2)], &[(1, 100)]),
            d(&split, &[(1, 2)], &[(1, 100)]),
            d(&base, &[(1, 4)], &[(1, 100)]),
            d(&base, &[(1, 2)], &[(1, 101)]),
            d(&base, &[], &[(1, 100)]),
        ];
        for (i, o) in others.iter().enumerate() {
            assert_ne!(*o, same, "variant {i}");
        }
        assert_eq!(Digest::from_bytes(&same.to_bytes()), Some(same));
        assert_eq!(Digest::from_bytes(&[1, 2, 3]), None);
    }
}
