//! The meta's answer to a beacon, as pure functions: whether it grants the lease the server asks
//! for, and which configurations the reply carries. The meta runtime (`meta/server`) and the
//! simulator (`cluster/sim`) both call these, so a simulated meta decides as the real one does.

use tandem_core::{Gpid, PartitionConfig};

/// A beacon's lease must end before the meta's grace period can declare the server dead, or a
/// partitioned primary could still serve after its replacement starts: refuse it otherwise.
pub fn check_lease(node: &str, lease_period_ms: u64, grace_period_ms: u64) -> Result<(), String> {
    if lease_period_ms >= grace_period_ms {
        return Err(format!(
            "replica server {node} takes a lease of {lease_period_ms} ms, not shorter than this meta's grace period of \
             {grace_period_ms} ms: lower its lease_period or raise the meta's grace_period"
        ));
    }
    Ok(())
}

/// The configurations a beacon reply carries: every placed partition (ballot > 0) that `node`
/// hosts, or that it reported (so a replica that was dropped learns that it was).
pub fn configs_for_node<'a>(
    partitions: impl IntoIterator<Item = &'a PartitionConfig>,
    node: &str,
    reported: &std::collections::BTreeSet<Gpid>,
) -> Vec<&'a PartitionConfig> {
    partitions.into_iter().filter(|c| c.ballot > 0 && (c.hosts(node) || reported.contains(&c.gpid))).collect()
}

/// A primary whose server restarted gets a new ballot, same members, before the beacon is
/// answered. The restarted process lost the unsynced tail of its log and would otherwise reuse
/// decrees of its previous life under the same ballot; members could not tell the two streams
/// apart, and a late prepare of the old process could overwrite the new one (simulator seed 979).
/// With a new ballot, members drop what the old stream left uncommitted and refuse its prepares.
pub fn reassign_restarted_primary(config: &PartitionConfig, node: &str) -> Option<PartitionConfig> {
    if config.ballot == 0 || config.primary.as_deref() != Some(node) {
        return None;
    }
    Some(PartitionConfig { ballot: config.ballot + 1, ..config.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(partition: u32, ballot: u64, primary: &str) -> PartitionConfig {
        PartitionConfig { gpid: Gpid::new(1, partition), ballot, primary: Some(primary.into()), ..Default::default() }
    }

    #[test]
    fn a_restarted_primary_keeps_its_role_under_a_new_ballot() {
        let c = PartitionConfig { secondaries: vec!["b".into()], ..cfg(0, 4, "a") };
        assert_eq!(reassign_restarted_primary(&c, "a"), Some(PartitionConfig { ballot: 5, ..c.clone() }));
        assert_eq!(reassign_restarted_primary(&c, "b"), None, "a secondary resyncs by itself");
        assert_eq!(reassign_restarted_primary(&cfg(0, 0, "a"), "a"), None, "not placed yet");
    }

    #[test]
    fn lease_must_be_shorter_than_grace() {
        assert!(check_lease("a", 6_000, 8_000).is_ok());
        assert!(check_lease("a", 8_000, 8_000).unwrap_err().contains("grace_period"));
    }

    #[test]
    fn reply_carries_hosted_and_reported_partitions_only() {
        let all = [cfg(0, 1, "a"), cfg(1, 1, "b"), cfg(2, 0, "a"), cfg(3, 2, "c")];
        let got: Vec<u32> = configs_for_node(&all, "a", &[Gpid::new(1, 3)].into()).iter().map(|c| c.gpid.partition).collect();
        assert_eq!(got, vec![0, 3], "partition 2 is not placed yet (ballot 0)");
    }
}
