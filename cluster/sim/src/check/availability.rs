//! After the faults stop, every partition accepts writes again within a deadline (30 simulated
//! seconds): a probe write per partition must be acknowledged by then.

use std::collections::BTreeMap;

#[derive(Debug, Default)]
pub struct Availability {
    /// Partition → when its probe write was acknowledged (µs of simulated time).
    pub acked_at_us: BTreeMap<u32, u64>,
}

impl Availability {
    pub fn acked(&mut self, partition: u32, at_us: u64) {
        self.acked_at_us.entry(partition).or_insert(at_us);
    }

    /// Ok with the time the last partition recovered, once every partition did.
    pub fn check(&self, partition_count: u32, heal_us: u64, deadline_us: u64) -> Result<u64, String> {
        let missing: Vec<u32> = (0..partition_count).filter(|p| !self.acked_at_us.contains_key(p)).collect();
        if !missing.is_empty() {
            return Err(format!("partitions {missing:?} accepted no write within {} ms of healing", (deadline_us - heal_us) / 1_000));
        }
        Ok(self.acked_at_us.values().max().map_or(0, |t| t - heal_us))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_partition_must_take_a_write() {
        let mut a = Availability::default();
        a.acked(0, 5_000);
        assert!(a.check(2, 1_000, 31_000).unwrap_err().contains("[1]"));
        a.acked(1, 9_000);
        assert_eq!(a.check(2, 1_000, 31_000), Ok(8_000));
    }
}
