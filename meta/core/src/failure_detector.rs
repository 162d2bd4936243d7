//! Beacon-based failure detection (Pegasus style, no ZooKeeper). A replica server's acked beacon
//! grants it a lease of `lease_period_ms` counted from when it *sent* the beacon; the meta
//! declares it dead only `grace_period_ms` after the last beacon it *received*. With
//! lease < grace, a server has stopped serving as primary before anyone replaces it.
//!
//! A crashed process is declared dead sooner, by a probe of its port: a refused connection
//! means nothing listens there, so the process that held the lease is gone (a lease lives in
//! the process), and one that restarted on that port holds none until a beacon is answered —
//! and a beacon that arrives after the probe was sent voids it. A silent or partitioned server
//! does not refuse (the probe times out) and waits out the grace period. The runtime probes
//! when a server's watch stream breaks or its beacons are late (`silent`).

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
    /// The probe of each server's port in flight: its id and when it was sent.
    probes: BTreeMap<NodeAddr, (u64, u64)>,
    next_probe: u64,
}

/// A probe unanswered for this long is taken as lost: another may be sent.
pub const PROBE_ANSWER_MS: u64 = 1_000;

impl FailureDetector {
    /// `known` nodes start alive as of `now_ms`: after a meta restart nobody is declared dead
    /// before a full grace period has passed without its beacons.
    pub fn new(grace_period_ms: u64, known: impl IntoIterator<Item = NodeAddr>, now_ms: u64) -> Self {
        let nodes = known.into_iter().map(|n| (n, NodeLiveness { last_beacon_ms: now_ms, alive: true })).collect();
        FailureDetector { grace_period_ms, nodes, incarnations: BTreeMap::new(), hold_until_ms: 0, probes: BTreeMap::new(), next_probe: 0 }
    }

    /// Declares nobody dead before `hold_until_ms` + the grace period: a meta leader that took
    /// over early, while its predecessor's lease still ran, waits until that lease has ended and
    /// every replica lease it granted has run out.
    pub fn holding_until(mut self, hold_until_ms: u64) -> Self {
        self.hold_until_ms = hold_until_ms;
        self
    }

    /// Extends the hold (never shortens it): a takeover's hold learned after the state loaded.
    pub fn hold_at_least(&mut self, hold_until_ms: u64) {
        self.hold_until_ms = self.hold_until_ms.max(hold_until_ms);
    }

    /// Records the process incarnation a beacon came from. True when the server restarted and
    /// this meta has not acted on it yet: the caller then gives the server's primaries a new
    /// ballot (`beacon::reassign_restarted_primary`). `restarted` is the server's own word: set
    /// on every beacon until one is answered, so a new meta leader, which knows no incarnation,
    /// does not take every server for restarted and re-ballot every partition of the cluster.
    /// A restarted process serves nothing before an answered beacon (it has no lease and no
    /// role), so the answer that clears its flag always comes after the new ballots.
    ///
    /// A restart counts as acted on only once its new ballots are written (`reballoted`): until
    /// then every beacon of that process asks for them again. Recording it on the first beacon
    /// let a retried beacon (the first one waiting behind a slow store write) be answered with
    /// the old ballots, and the restarted process serve as primary under its previous life's
    /// ballot (found by the simulator, seed 2307).
    pub fn on_incarnation(&mut self, node: &str, incarnation: u64, restarted: bool) -> bool {
        if !restarted {
            self.incarnations.insert(node.to_string(), incarnation);
            return false;
        }
        !self.reballoted_already(node, incarnation)
    }

    /// Whether the new ballots of `node`'s process `incarnation` are written.
    pub fn reballoted_already(&self, node: &str, incarnation: u64) -> bool {
        self.incarnations.get(node) == Some(&incarnation)
    }

    /// The new ballots of `node`'s restarted process `incarnation` are written.
    pub fn reballoted(&mut self, node: &str, incarnation: u64) {
        self.incarnations.insert(node.to_string(), incarnation);
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

    /// A new probe of `node`'s port, unless it is not alive to this meta or a probe of it is
    /// in flight: its id, for `on_probe`.
    pub fn start_probe(&mut self, node: &str, now_ms: u64) -> Option<u64> {
        if !self.is_alive(node) || self.probing(node, now_ms) {
            return None;
        }
        self.next_probe += 1;
        self.probes.insert(node.to_string(), (self.next_probe, now_ms));
        Some(self.next_probe)
    }

    /// Alive servers without a beacon for `after_ms`, and no probe in flight: worth a probe.
    pub fn silent(&self, now_ms: u64, after_ms: u64) -> Vec<NodeAddr> {
        self.nodes
            .iter()
            .filter(|(_, l)| l.alive && now_ms.saturating_sub(l.last_beacon_ms) > after_ms)
            .filter(|(n, _)| !self.probing(n, now_ms))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Whether a probe of `node` is in flight (sent within `PROBE_ANSWER_MS`).
    fn probing(&self, node: &str, now_ms: u64) -> bool {
        self.probes.get(node).is_some_and(|(_, sent)| now_ms.saturating_sub(*sent) < PROBE_ANSWER_MS)
    }

    /// The answer to probe `probe` of `node`. True when `node` is now dead: its port refused the
    /// connection, this is its latest probe, and no beacon of it arrived since the probe was sent
    /// (one did: a process restarted on that port and may hold a lease).
    pub fn on_probe(&mut self, node: &str, probe: u64, refused: bool) -> bool {
        let Some(&(id, sent_ms)) = self.probes.get(node) else { return false };
        if id != probe {
            return false;
        }
        self.probes.remove(node);
        match self.nodes.get_mut(node) {
            Some(l) if refused && l.alive && l.last_beacon_ms < sent_ms => {
                l.alive = false;
                true
            }
            _ => false,
        }
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
    fn a_refused_probe_declares_dead_at_once_unless_a_beacon_came_after_it_was_sent() {
        let mut fd = FailureDetector::new(8_000, ["a".to_string(), "b".to_string()], 0).holding_until(20_000);
        let probe = fd.start_probe("a", 100).unwrap();
        assert_eq!(fd.start_probe("a", 200), None, "one probe in flight");
        assert!(!fd.on_probe("a", probe, false), "answered: alive");
        assert!(fd.is_alive("a"));
        let probe = fd.start_probe("a", 300).unwrap();
        assert!(fd.on_probe("a", probe, true), "refused: the process is gone, hold or not");
        assert!(!fd.is_alive("a"));
        assert_eq!(fd.start_probe("a", 400), None, "dead already");
        // A process restarted on the port and beaconed while the probe was on its way.
        let probe = fd.start_probe("b", 500).unwrap();
        fd.on_beacon("b", 600);
        assert!(!fd.on_probe("b", probe, true));
        assert!(fd.is_alive("b"));
        // A late answer to an older probe counts for nothing.
        let old = fd.start_probe("b", 700).unwrap();
        let new = fd.start_probe("b", 1_700).unwrap();
        assert!(!fd.on_probe("b", old, true));
        assert!(fd.on_probe("b", new, true));
    }

    #[test]
    fn silent_servers_are_probed_once_per_answer_time() {
        let mut fd = FailureDetector::new(8_000, ["a".to_string()], 0);
        fd.on_beacon("b", 1_000);
        assert_eq!(fd.silent(2_500, 2_000), vec!["a".to_string()]);
        fd.start_probe("a", 2_500);
        assert_eq!(fd.silent(3_000, 2_000), Vec::<String>::new(), "a probe in flight");
        assert_eq!(fd.silent(3_500, 2_000), vec!["a".to_string(), "b".to_string()]);
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
        assert!(fd.on_incarnation("a", 7, true), "its next beacon, before its new ballots are written (seed 2307)");
        fd.reballoted("a", 7);
        assert!(!fd.on_incarnation("a", 7, true), "written: its next beacons, before an answer reached it");
        assert!(fd.on_incarnation("a", 9, true));
        fd.reballoted("a", 9);
        fd.forget_incarnation("a");
        assert!(fd.on_incarnation("a", 9, true), "forgotten: counts as a restart again");
        assert!(!fd.on_incarnation("b", 3, false), "a server this meta never saw, answered before: a new leader");
        assert!(!fd.on_incarnation("b", 3, false));
    }
}
