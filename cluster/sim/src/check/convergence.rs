//! After healing, the replicas of every partition converge: the configuration has its replica
//! count, every member is up, and every member has committed all the primary prepared, with the
//! same engine contents.

use std::collections::BTreeMap;
use tandem_core::{Decree, NodeAddr, PartitionConfig};

/// What one member shows: status name, last committed, last prepared, engine contents.
pub struct MemberView {
    pub node: NodeAddr,
    pub status: &'static str,
    pub last_committed: Decree,
    pub last_prepared: Decree,
    pub data: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// `members`: the views of the configuration's members that are up and host the partition.
pub fn check_partition(config: &PartitionConfig, replica_count: usize, members: &[MemberView]) -> Result<(), String> {
    let gpid = config.gpid;
    if config.replica_count() != replica_count {
        return Err(format!("partition {gpid} has {} of {replica_count} members: {config:?}", config.replica_count()));
    }
    for node in config.members() {
        if !members.iter().any(|m| m.node == *node) {
            return Err(format!("partition {gpid}: member {node} is down or has no replica"));
        }
    }
    let primary = config.primary.as_deref().expect("a full configuration has a primary");
    let p = members.iter().find(|m| m.node == primary).expect("checked above");
    if p.status != "primary" {
        return Err(format!("partition {gpid}: {primary} is {} but the configuration names it primary", p.status));
    }
    if p.last_committed != p.last_prepared {
        return Err(format!("partition {gpid}: primary {primary} committed {} of {} prepared", p.last_committed, p.last_prepared));
    }
    for m in members {
        if m.node != primary && m.status != "secondary" {
            return Err(format!("partition {gpid}: {} is {}, not secondary", m.node, m.status));
        }
        if m.last_committed != p.last_committed {
            return Err(format!("partition {gpid}: {} committed {}, the primary {}", m.node, m.last_committed, p.last_committed));
        }
        if m.data != p.data {
            return Err(format!(
                "partition {gpid}: {} and the primary {primary} hold different data at decree {}",
                m.node, m.last_committed
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_core::Gpid;

    fn view(node: &str, status: &'static str, committed: Decree, data: &[(&str, &str)]) -> MemberView {
        MemberView {
            node: node.into(),
            status,
            last_committed: committed,
            last_prepared: committed,
            data: data.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec())).collect(),
        }
    }

    #[test]
    fn members_must_hold_the_same_data_at_the_same_decree() {
        let config = PartitionConfig {
            gpid: Gpid::new(1, 0),
            ballot: 3,
            primary: Some("r1".into()),
            secondaries: vec!["r2".into()],
            ..Default::default()
        };
        let p = view("r1", "primary", 4, &[("a", "1")]);
        assert!(check_partition(&config, 2, &[view("r1", "primary", 4, &[("a", "1")]), view("r2", "secondary", 4, &[("a", "1")])]).is_ok());
        let err = check_partition(&config, 2, &[p, view("r2", "secondary", 4, &[("a", "2")])]).unwrap_err();
        assert!(err.contains("different data"), "{err}");
        assert!(check_partition(&config, 3, &[]).unwrap_err().contains("2 of 3"));
    }
}
