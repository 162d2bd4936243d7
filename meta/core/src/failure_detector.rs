//! Beacon-based failure detection (Pegasus style, no ZooKeeper). A replica server's acked beacon
//! grants it a lease of `lease_period_ms` counted from when it *sent* the beacon; the meta
//! declares it dead only `grace_period_ms` after the last beacon it *received*. With
//! lease < grace, a server has stopped serving as primary before anyone replaces it.

use std::collections::BTreeMap;
use tandem_core::NodeAddr;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeLiveness {
    pub last_beacon_ms: u64,
    pub alive: bool,
}

#[derive(Clone, Debug)]
pub struct FailureDetector {
    grace_period_ms: u64,
    nodes: BTreeMap<NodeAddr, NodeLiveness>,
    /// The process incarnation of each server's last beacon (not persisted: a server says
    /// itself whether it restarted, see `on_incarnation`).
    incarnations: BTreeMap<NodeAddr, u64>,
    /// Nobody is declared dead before this plus the grace period (monotonic ms): a previous meta
    /// leader may have answered beacons until then.
    hold_until_ms: u64,
}

impl FailureDetector {
    /// `known` nodes start alive as of `now_ms`: after a meta restart nobody is declared dead
    /// before a full grace period has passed without its beacons.
    pub fn new(grace_period_ms: u64, known: impl IntoIterator<Item = NodeAddr>, now_ms: u64) -> Self {
        let nodes = known.into_iter().map(|n| (n, NodeLiveness { last_beacon_ms: now_ms, alive: true })).collect();
        FailureDetector { grace_period_ms, nodes, incarnations: BTreeMap::new(), hold_until_ms: 0 }
    }

    /// Declares nobody dead before `hold_until_ms` + the grace period: a meta leader that took
    /// over early, while its predecessor's lease still ran, waits until that lease has ended and
    /// every replica lease it granted has run out.
    pub fn holding_until(mut self, hold_until_ms: u64) -> Self {
        self.hold_until_ms = hold_until_ms;
        self
    }

    /// Records the process incarnation a beacon came from. True when the server restarted and
    /// this meta has not acted on it yet: the caller then gives the server's primaries a new
    /// ballot (`beacon::reassign_restarted_primary`). `restarted` is the server's own word: set
    /// on every beacon until one is answered, so a new meta leader, which knows no incarnation,
    /// does not take every server for restarted and re-ballot every partition of the cluster.
    /// A restarted process serves nothing before an answered beacon (it has no lease and no
    /// role), so the answer that clears its flag always comes after the new ballots.
    pub fn on_incarnation(&mut self, node: &str, incarnation: u64, restarted: bool) -> bool {
        let new = self.incarnations.insert(node.to_string(), incarnation) != Some(incarnation);
        new && restarted
    }

    /// Forgets `node`'s incarnation, so its next beacon counts as a restart again (the caller
    /// could not act on this one).
    pub fn forget_incarnation(&mut self, node: &str) {
        self.incarnations.remove(node);
    }

    /// Returns true when the node was not known alive before (new or returning).
    pub fn on_beacon(&mut self, node: &str, now_ms: u64) -> bool {
        let entry = self.nodes.entry(node.to_string()).or_insert(NodeLiveness { last_beacon_ms: now_ms, alive: false });
        let was_alive = entry.alive;
        entry.last_beacon_ms = entry.last_beacon_ms.max(now_ms);
        entry.alive = true;
        !was_alive
    }

    /// Nodes whose grace period ran out since the last tick.
    pub fn tick(&mut self, now_ms: u64) -> Vec<NodeAddr> {
        let mut dead = Vec::new();
        for (node, l) in self.nodes.iter_mut() {
            if l.alive && now_ms.saturating_sub(l.last_beacon_ms.max(self.hold_until_ms)) > self.grace_period_ms {
                l.alive = false;
                dead.push(node.clone());
            }
        }
        dead
    }

    pub fn is_alive(&self, node: &str) -> bool {
        self.nodes.get(node).is_some_and(|l| l.alive)
    }

    pub fn nodes(&self) -> &BTreeMap<NodeAddr, NodeLiveness> {
        &self.nodes
    }

    pub fn alive_nodes(&self) -> Vec<NodeAddr> {
        self.nodes.iter().filter(|(_, l)| l.alive).map(|(n, _)| n.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_only_after_the_grace_period() {
        let mut fd = FailureDetector::new(8_000, ["a".to_string()], 0);
        assert!(fd.is_alive("a"));
        assert!(fd.on_beacon("b", 100));
        assert!(!fd.on_beacon("b", 1_100));
        assert_eq!(fd.tick(8_000), Vec::<String>::new());
        assert_eq!(fd.tick(8_001), vec!["a".to_string()]);
        assert_eq!(fd.tick(9_101), vec!["b".to_string()]);
        assert_eq!(fd.tick(20_000), Vec::<String>::new());
        assert!(fd.on_beacon("a", 20_000), "a returning is news");
    }

    #[test]
    fn a_hold_delays_every_declaration() {
        let mut fd = FailureDetector::new(8_000, ["a".to_string()], 0).holding_until(20_000);
        assert!(fd.on_beacon("b", 100));
        assert_eq!(fd.tick(28_000), Vec::<String>::new());
        assert_eq!(fd.tick(28_001), vec!["a".to_string(), "b".to_string()]);
    }

    #[test]
    fn a_restart_counts_once_per_incarnation_and_only_when_the_server_says_so() {
        let mut fd = FailureDetector::new(8_000, [], 0);
        assert!(fd.on_incarnation("a", 7, true), "a restarted server, new to this meta");
        assert!(!fd.on_incarnation("a", 7, true), "its next beacon, before an answer reached it");
        assert!(fd.on_incarnation("a", 9, true));
        fd.forget_incarnation("a");
        assert!(fd.on_incarnation("a", 9, true), "forgotten: counts as a restart again");
        assert!(!fd.on_incarnation("b", 3, false), "a server this meta never saw, answered before: a new leader");
        assert!(!fd.on_incarnation("b", 3, false));
    }
}
