//! Replicas of a partition agree at every committed decree: whatever server applies decree d of
//! a partition (first time, after a restart's replay, on a new primary) applies the same ops.
//! The simulated engines fingerprint every applied decree; this checker compares them all.

use std::collections::BTreeMap;
use tandem_core::{Decree, Gpid};

#[derive(Debug, Default)]
pub struct DecreeAgreement {
    applied: BTreeMap<(Gpid, Decree), (u64, String)>,
}

impl DecreeAgreement {
    pub fn observe(&mut self, node: &str, gpid: Gpid, decree: Decree, fingerprint: u64) -> Result<(), String> {
        match self.applied.get(&(gpid, decree)) {
            Some((fp, first)) if *fp != fingerprint => {
                Err(format!("partition {gpid} decree {decree}: {node} applied ops {fingerprint:#018x}, but {first} applied {fp:#018x}"))
            }
            Some(_) => Ok(()),
            None => {
                self.applied.insert((gpid, decree), (fingerprint, node.to_string()));
                Ok(())
            }
        }
    }

    /// Decrees committed so far per partition (the highest applied anywhere).
    pub fn committed(&self, gpid: Gpid) -> Decree {
        self.applied.range((gpid, 0)..=(gpid, Decree::MAX)).next_back().map_or(0, |((_, d), _)| *d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn different_ops_at_one_decree_fail() {
        let mut c = DecreeAgreement::default();
        let g = Gpid::new(1, 0);
        c.observe("r1", g, 1, 7).unwrap();
        c.observe("r2", g, 1, 7).unwrap();
        c.observe("r2", g, 2, 8).unwrap();
        assert!(c.observe("r3", g, 1, 9).unwrap_err().contains("r3 applied"));
        assert_eq!(c.committed(g), 2);
    }
}
