//! Initial placement of a new table's partitions: members spread over the alive nodes, least
//! loaded first, primaries rotated so every node leads about as many partitions.

use std::collections::BTreeMap;
use tandem_core::{Gpid, NodeAddr, PartitionConfig};

/// Configurations (ballot 1) for `partition_count` partitions of `replica_count` members each,
/// in partition order; it stops at the first partition that does not fit (the rest stay
/// unplaced for cure). `load` counts the replicas each placeable node already hosts, `room`
/// how many more it takes (`usize::MAX`: no limit). Members go where most room is left, then
/// least load: with room for the table (`MetaState::check_room`), every partition fits.
pub fn place_table(
    table_id: u32,
    partition_count: u32,
    replica_count: usize,
    load: &BTreeMap<NodeAddr, usize>,
    room: &BTreeMap<NodeAddr, usize>,
) -> Vec<PartitionConfig> {
    let mut load = load.clone();
    let mut room: BTreeMap<NodeAddr, usize> = load.keys().map(|n| (n.clone(), room.get(n).copied().unwrap_or(usize::MAX))).collect();
    let mut primaries: BTreeMap<NodeAddr, usize> = load.keys().map(|n| (n.clone(), 0)).collect();
    let mut configs = Vec::new();
    for partition in 0..partition_count {
        let mut nodes: Vec<NodeAddr> = load.keys().filter(|n| room[*n] > 0).cloned().collect();
        if replica_count == 0 || nodes.len() < replica_count {
            break;
        }
        nodes.sort_by_key(|n| (std::cmp::Reverse(room[n]), load[n], n.clone()));
        let mut members: Vec<NodeAddr> = nodes.into_iter().take(replica_count).collect();
        members.sort_by_key(|n| (primaries[n], load[n], n.clone()));
        for m in &members {
            *load.get_mut(m).expect("member is a node") += 1;
            let r = room.get_mut(m).expect("member is a node");
            if *r != usize::MAX {
                *r -= 1;
            }
        }
        *primaries.get_mut(&members[0]).expect("member is a node") += 1;
        configs.push(PartitionConfig {
            gpid: Gpid::new(table_id, partition),
            ballot: 1,
            primary: Some(members[0].clone()),
            secondaries: members[1..].to_vec(),
            learners: vec![],
            last_drops: vec![],
        });
    }
    configs
}

/// A configuration (ballot 1) for one partition of a table that was created but never placed
/// (its meta stopped halfway through placing it): the least loaded alive nodes, the one leading
/// the fewest partitions as primary. None while fewer than `replica_count` nodes live.
pub fn place_partition<'a>(
    gpid: Gpid,
    replica_count: usize,
    load: &BTreeMap<NodeAddr, usize>,
    partitions: impl IntoIterator<Item = &'a PartitionConfig>,
) -> Option<PartitionConfig> {
    if replica_count == 0 || replica_count > load.len() {
        return None;
    }
    let mut led: BTreeMap<&str, usize> = load.keys().map(|n| (n.as_str(), 0)).collect();
    for c in partitions {
        if let Some(l) = c.primary.as_deref().and_then(|p| led.get_mut(p)) {
            *l += 1;
        }
    }
    let mut nodes: Vec<&NodeAddr> = load.keys().collect();
    nodes.sort_by_key(|n| (load[*n], (*n).clone()));
    let mut members: Vec<NodeAddr> = nodes.into_iter().take(replica_count).cloned().collect();
    members.sort_by_key(|n| (led[n.as_str()], load[n], n.clone()));
    Some(PartitionConfig { gpid, ballot: 1, primary: Some(members[0].clone()), secondaries: members[1..].to_vec(), learners: vec![], last_drops: vec![] })
}

/// Replicas (members and learners) that each alive node hosts: the load placement balances.
pub fn node_load<'a>(alive: impl IntoIterator<Item = NodeAddr>, partitions: impl IntoIterator<Item = &'a PartitionConfig>) -> BTreeMap<NodeAddr, usize> {
    let mut load: BTreeMap<NodeAddr, usize> = alive.into_iter().map(|n| (n, 0)).collect();
    for c in partitions {
        for n in c.members().chain(c.learners.iter()) {
            if let Some(l) = load.get_mut(n) {
                *l += 1;
            }
        }
    }
    load
}

/// The alive nodes, least loaded first (ties by address): where cure puts a new learner.
pub fn learner_placement(load: &BTreeMap<NodeAddr, usize>) -> Vec<NodeAddr> {
    let mut nodes: Vec<NodeAddr> = load.keys().cloned().collect();
    nodes.sort_by_key(|n| (load[n], n.clone()));
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_counts_members_and_learners_of_alive_nodes() {
        let c = PartitionConfig {
            gpid: Gpid::new(1, 0),
            ballot: 1,
            primary: Some("b".into()),
            secondaries: vec!["c".into()],
            learners: vec!["x".into()],
            last_drops: vec![],
        };
        let load = node_load(["a".to_string(), "b".to_string(), "c".to_string()], [&c]);
        assert_eq!(load.values().copied().collect::<Vec<_>>(), vec![0, 1, 1], "x is not alive, so not counted");
        assert_eq!(learner_placement(&load), vec!["a".to_string(), "b".to_string(), "c".to_string()]);
    }

    #[test]
    fn an_unplaced_partition_goes_to_the_least_loaded_nodes() {
        let busy = PartitionConfig { gpid: Gpid::new(1, 0), ballot: 1, primary: Some("a".into()), secondaries: vec!["b".into()], ..Default::default() };
        let load = node_load(["a".to_string(), "b".to_string(), "c".to_string()], [&busy]);
        let placed = place_partition(Gpid::new(1, 1), 2, &load, [&busy]).unwrap();
        assert_eq!(placed.primary.as_deref(), Some("c"), "c is least loaded and leads nothing");
        assert_eq!(placed.secondaries, vec!["a".to_string()], "then a (load 1, before b by name)");
        assert_eq!(place_partition(Gpid::new(1, 1), 4, &load, [&busy]), None, "three nodes cannot hold four replicas");
    }

    #[test]
    fn spreads_members_and_primaries() {
        let load: BTreeMap<NodeAddr, usize> = ["a", "b", "c", "d"].iter().map(|n| (n.to_string(), 0)).collect();
        let configs = place_table(1, 8, 3, &load, &BTreeMap::new());
        let mut hosted: BTreeMap<&str, usize> = BTreeMap::new();
        let mut led: BTreeMap<&str, usize> = BTreeMap::new();
        for c in &configs {
            assert_eq!(c.replica_count(), 3);
            for m in c.members() {
                *hosted.entry(m).or_default() += 1;
            }
            *led.entry(c.primary.as_deref().unwrap()).or_default() += 1;
        }
        assert!(hosted.values().all(|&n| n == 6), "{hosted:?}");
        assert!(led.values().all(|&n| n == 2), "{led:?}");
    }
}
