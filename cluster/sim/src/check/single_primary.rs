//! At most one primary serves a partition at any instant.
//!
//! "Serving" is what lets a replica answer reads and take writes: primary status and a lease
//! that is valid by the server's own (drifting) clock. The simulator checks after every event, in
//! true time, that no two servers serve the same partition. Leases make this hold: a lease runs
//! `lease_period` on the server's clock from the beacon's send, the meta replaces a primary only
//! `grace_period` on its own clock after its last beacon arrived, and drift is bounded so that
//! lease / (1 - drift) < grace / (1 + drift).

use tandem_core::Gpid;

#[derive(Debug, Default)]
pub struct SinglePrimary {
    pub checks: u64,
}

impl SinglePrimary {
    /// `serving`: (partition, server) pairs serving now.
    pub fn check(&mut self, now_us: u64, serving: &[(Gpid, String)]) -> Result<(), String> {
        self.checks += 1;
        for (i, (gpid, node)) in serving.iter().enumerate() {
            if let Some((_, other)) = serving[i + 1..].iter().find(|(g, _)| g == gpid) {
                return Err(format!("two primaries serve partition {gpid} at t={}µs: {node} and {other}", now_us));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_servers_on_one_partition_fail() {
        let mut c = SinglePrimary::default();
        let g = Gpid::new(1, 0);
        assert!(c.check(1, &[(g, "r1".into()), (Gpid::new(1, 1), "r2".into())]).is_ok());
        assert!(c.check(2, &[(g, "r1".into()), (g, "r2".into())]).unwrap_err().contains("r1 and r2"));
    }
}
