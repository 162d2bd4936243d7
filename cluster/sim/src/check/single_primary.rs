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
    /// `serving`: (partition, server) pairs serving now; `describe` names a server with its
    /// ballot and lease (called only for a violation: this check runs after every event).
    pub fn check<N: Copy>(&mut self, now_us: u64, serving: &[(Gpid, N)], describe: impl Fn(N) -> String) -> Result<(), String> {
        self.checks += 1;
        for (i, (gpid, node)) in serving.iter().enumerate() {
            if let Some((_, other)) = serving[i + 1..].iter().find(|(g, _)| g == gpid) {
                return Err(format!(
                    "two primaries serve partition {gpid} at t={}µs: {} and {}",
                    now_us,
                    describe(*node),
                    describe(*other)
                ));
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
        let name = |n: usize| format!("r{n}");
        assert!(c.check(1, &[(g, 1), (Gpid::new(1, 1), 2)], name).is_ok());
        assert!(c.check(2, &[(g, 1), (g, 2)], name).unwrap_err().contains("r1 and r2"));
    }
}
