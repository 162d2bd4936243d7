//! Cure: the meta's reaction to failures and to a replica count the partition does not have.
//! Pure functions from a configuration and what the meta knows to the next configuration.

use std::collections::BTreeMap;
use tandem_core::{Decree, NodeAddr, PartitionConfig};

/// What a replica server last reported about its replica of a partition.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ReplicaReport {
    pub ballot: u64,
    pub status: String,
    pub last_committed: Decree,
    pub last_prepared: Decree,
}

/// What cure needs to know besides the configuration.
pub struct CureView<'a> {
    pub replica_count: usize,
    pub alive: &'a dyn Fn(&str) -> bool,
    /// Reports of this partition's replicas, by node.
    pub reports: &'a BTreeMap<NodeAddr, ReplicaReport>,
    /// Alive nodes, least loaded first: where a new learner goes.
    pub placement: &'a [NodeAddr],
}

/// The next configuration, or None when nothing needs to change (or nothing can be done).
/// One step at a time; the meta calls it again after each change is persisted.
pub fn cure(config: &PartitionConfig, view: &CureView<'_>) -> Option<PartitionConfig> {
    let alive = view.alive;
    let prepared = |n: &str| view.reports.get(n).map_or(0, |r| r.last_prepared);
    let mut next = config.clone();
    let primary_alive = config.primary.as_deref().is_some_and(alive);
    if !primary_alive {
        // Promote the alive secondary with the highest prepared decree: every committed decree
        // is on every member, and this one also keeps the most uncommitted work.
        let best = config.secondaries.iter().filter(|s| alive(s)).max_by_key(|s| (prepared(s), std::cmp::Reverse((*s).clone())));
        let new_primary = match best {
            Some(s) => s.clone(),
            None if config.primary.is_none() => {
                // Every member is gone; the last one dropped holds the most data.
                let back = config.last_drops.iter().rev().find(|n| alive(n) && view.reports.contains_key(*n))?;
                back.clone()
            }
            // The primary is the only member left: wait for it to come back.
            None => return None,
        };
        if let Some(old) = &config.primary {
            push_drop(&mut next, old);
        }
        next.primary = Some(new_primary.clone());
        next.secondaries.retain(|s| *s != new_primary && alive(s));
        for gone in config.secondaries.iter().filter(|s| !alive(s)) {
            push_drop(&mut next, gone);
        }
        next.learners.retain(|l| alive(l) && *l != new_primary);
        next.ballot += 1;
        return Some(next);
    }
    let dead_secondaries: Vec<NodeAddr> = config.secondaries.iter().filter(|s| !alive(s)).cloned().collect();
    if !dead_secondaries.is_empty() {
        next.secondaries.retain(|s| alive(s));
        for gone in &dead_secondaries {
            push_drop(&mut next, gone);
        }
        next.ballot += 1;
        return Some(next);
    }
    if config.learners.iter().any(|l| !alive(l)) {
        // Learners are not in the quorum: no ballot change.
        next.learners.retain(|l| alive(l));
        return Some(next);
    }
    let members = config.replica_count();
    if members > view.replica_count && !config.secondaries.is_empty() {
        // Shrink: drop a secondary, never the primary.
        let victim = next.secondaries.pop().expect("a secondary");
        push_drop(&mut next, &victim);
        next.ballot += 1;
        return Some(next);
    }
    if members >= view.replica_count && !config.learners.is_empty() {
        next.learners.clear();
        return Some(next);
    }
    if members + config.learners.len() < view.replica_count {
        let node = view.placement.iter().find(|n| !config.hosts(n))?;
        next.learners.push(node.clone());
        return Some(next);
    }
    None
}

fn push_drop(config: &mut PartitionConfig, node: &str) {
    config.last_drops.retain(|n| n != node);
    config.last_drops.push(node.to_string());
    const LAST_DROPS_MAX: usize = 8;
    if config.last_drops.len() > LAST_DROPS_MAX {
        config.last_drops.remove(0);
    }
}

/// A proposal as it arrives at the meta from replica server `from`: accepted only from the
/// current primary, then checked by `apply_proposal`.
pub fn apply_proposal_from(
    config: &PartitionConfig,
    from: &str,
    proposal: &tandem_core::replica::ConfigProposal,
    replica_count: usize,
) -> Result<PartitionConfig, String> {
    if config.primary.as_deref() != Some(from) {
        return Err(format!("{from} is not the primary of {}", config.gpid));
    }
    apply_proposal(config, proposal, replica_count)
}

/// A primary's request, checked against the current configuration (compare-and-set on ballot).
pub fn apply_proposal(config: &PartitionConfig, proposal: &tandem_core::replica::ConfigProposal, replica_count: usize) -> Result<PartitionConfig, String> {
    use tandem_core::replica::ConfigProposal;
    if proposal.ballot() != config.ballot {
        return Err(format!("stale proposal: ballot {} but the partition is at {}", proposal.ballot(), config.ballot));
    }
    let mut next = config.clone();
    match proposal {
        ConfigProposal::RemoveSecondary { node, .. } => {
            if !config.secondaries.contains(node) {
                return Err(format!("{node} is not a secondary of {}", config.gpid));
            }
            next.secondaries.retain(|s| s != node);
            push_drop(&mut next, node);
        }
        ConfigProposal::UpgradeLearner { node, .. } => {
            if !config.learners.contains(node) {
                return Err(format!("{node} is not a learner of {}", config.gpid));
            }
            if config.replica_count() >= replica_count {
                next.learners.retain(|l| l != node);
                return Err(format!("{} already has {replica_count} replicas", config.gpid));
            }
            next.learners.retain(|l| l != node);
            next.secondaries.push(node.clone());
        }
    }
    next.ballot += 1;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_core::Gpid;

    fn cfg(ballot: u64, primary: Option<&str>, secondaries: &[&str], learners: &[&str]) -> PartitionConfig {
        PartitionConfig {
            gpid: Gpid::new(1, 0),
            ballot,
            primary: primary.map(String::from),
            secondaries: secondaries.iter().map(|s| s.to_string()).collect(),
            learners: learners.iter().map(|s| s.to_string()).collect(),
            last_drops: vec![],
        }
    }

    fn view<'a>(alive: &'a dyn Fn(&str) -> bool, reports: &'a BTreeMap<NodeAddr, ReplicaReport>, placement: &'a [NodeAddr]) -> CureView<'a> {
        CureView { replica_count: 3, alive, reports, placement }
    }

    #[test]
    fn dead_primary_promotes_the_secondary_with_the_highest_prepared_decree() {
        let alive = |n: &str| n != "a";
        let mut reports = BTreeMap::new();
        reports.insert("b".to_string(), ReplicaReport { last_prepared: 10, ..Default::default() });
        reports.insert("c".to_string(), ReplicaReport { last_prepared: 12, ..Default::default() });
        let next = cure(&cfg(4, Some("a"), &["b", "c"], &[]), &view(&alive, &reports, &[])).unwrap();
        let mut want = cfg(5, Some("c"), &["b"], &[]);
        want.last_drops = vec!["a".into()];
        assert_eq!(next, want);
    }

    #[test]
    fn dead_secondary_is_removed_then_a_learner_is_added() {
        let alive = |n: &str| n != "c";
        let reports = BTreeMap::new();
        let placement = vec!["d".to_string(), "a".to_string()];
        let next = cure(&cfg(4, Some("a"), &["b", "c"], &[]), &view(&alive, &reports, &placement)).unwrap();
        assert_eq!((next.ballot, next.secondaries.clone(), next.last_drops.clone()), (5, vec!["b".to_string()], vec!["c".to_string()]));
        let next = cure(&next, &view(&alive, &reports, &placement)).unwrap();
        assert_eq!((next.ballot, next.learners.clone()), (5, vec!["d".to_string()]));
        assert_eq!(cure(&next, &view(&alive, &reports, &placement)), None);
    }

    #[test]
    fn only_member_down_waits() {
        let alive = |_: &str| false;
        let reports = BTreeMap::new();
        assert_eq!(cure(&cfg(4, Some("a"), &[], &[]), &view(&alive, &reports, &[])), None);
    }

    #[test]
    fn proposals_are_compare_and_set_on_the_ballot() {
        use tandem_core::replica::ConfigProposal;
        let c = cfg(4, Some("a"), &["b"], &["d"]);
        let up = ConfigProposal::UpgradeLearner { ballot: 4, node: "d".into() };
        assert_eq!(apply_proposal(&c, &up, 3).unwrap(), cfg(5, Some("a"), &["b", "d"], &[]));
        let stale = ConfigProposal::RemoveSecondary { ballot: 3, node: "b".into() };
        assert!(apply_proposal(&c, &stale, 3).unwrap_err().contains("stale"));
        let not_primary = ConfigProposal::RemoveSecondary { ballot: 4, node: "b".into() };
        assert!(apply_proposal_from(&c, "b", &not_primary, 3).unwrap_err().contains("not the primary"));
        assert_eq!(apply_proposal_from(&c, "a", &not_primary, 3).unwrap().secondaries, Vec::<String>::new());
    }
}
