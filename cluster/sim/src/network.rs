//! The simulated network: latency with jitter (so messages reorder), loss (the RPC fails as on a
//! reset connection), duplication, partitions that drop messages silently (the caller waits for
//! its timeout), asymmetric partitions (one direction only), clogged nodes whose messages wait,
//! and the scripted rules of scenario files (`deliver r1->r2 drop=prepare`).

use crate::msg::{Endpoint, Envelope, Msg};
use crate::rng::Rng;
use std::collections::{BTreeMap, BTreeSet};

/// A scripted rule: messages of `kind` (or all) from `from` to `to` are dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DropRule {
    pub from: Endpoint,
    pub to: Endpoint,
    pub kind: Option<String>,
    /// How many more messages to drop (None: until cleared).
    pub remaining: Option<u32>,
}

/// What happened to a message, for the stats and the trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    Delivered,
    Lost,
    Blocked,
    Duplicated,
    Dropped,
}

#[derive(Debug, Default)]
pub struct Network {
    /// Directed links that drop everything.
    blocked: BTreeSet<(Endpoint, Endpoint)>,
    clogged_until_us: BTreeMap<Endpoint, u64>,
    pub rules: Vec<DropRule>,
    pub loss: f64,
    pub duplicate: f64,
    pub latency_min_us: u64,
    pub jitter_us: u64,
}

impl Network {
    pub fn new(loss: f64, duplicate: f64, jitter_us: u64) -> Network {
        Network { loss, duplicate, latency_min_us: 200, jitter_us, ..Default::default() }
    }

    pub fn block(&mut self, from: Endpoint, to: Endpoint) {
        self.blocked.insert((from, to));
    }

    pub fn unblock(&mut self, from: Endpoint, to: Endpoint) {
        self.blocked.remove(&(from, to));
    }

    pub fn is_blocked(&self, from: Endpoint, to: Endpoint) -> bool {
        self.blocked.contains(&(from, to))
    }

    pub fn heal(&mut self) {
        self.blocked.clear();
        self.clogged_until_us.clear();
        self.rules.clear();
    }

    pub fn clog(&mut self, node: Endpoint, until_us: u64) {
        let e = self.clogged_until_us.entry(node).or_default();
        *e = (*e).max(until_us);
    }

    fn latency(&self, rng: &mut Rng) -> u64 {
        self.latency_min_us + rng.range(0, self.jitter_us)
    }

    /// Decides the fate of `env` sent at `now_us`; returns what arrives when.
    pub fn send(&mut self, env: Envelope, now_us: u64, rng: &mut Rng) -> (Fate, Vec<(u64, Envelope)>) {
        let kind = env.msg.kind();
        if let Some(i) = self.rules.iter().position(|r| r.from == env.from && r.to == env.to && r.kind.as_deref().is_none_or(|k| k == kind))
        {
            let rule = &mut self.rules[i];
            if let Some(n) = &mut rule.remaining {
                *n -= 1;
                if *n == 0 {
                    self.rules.remove(i);
                }
            }
            return (Fate::Dropped, Vec::new());
        }
        if self.is_blocked(env.from, env.to) {
            return (Fate::Blocked, Vec::new());
        }
        let clog = |e: &Endpoint| self.clogged_until_us.get(e).copied().unwrap_or(0);
        let start = now_us.max(clog(&env.from)).max(clog(&env.to));
        let at = start + self.latency(rng);
        if rng.chance(self.loss) {
            // A lost message breaks its connection: the caller hears of it (a request's sender,
            // or a response's receiver).
            let failed = if let Some(rpc) = env.msg.request_rpc() {
                Some(Envelope { from: env.to, to: env.from, msg: Msg::RpcFailed { rpc, not_sent: true, refused: false } })
            } else {
                env.msg.response_rpc().filter(|_| !matches!(env.msg, Msg::RpcFailed { .. })).map(|rpc| Envelope {
                    from: env.from,
                    to: env.to,
                    msg: Msg::RpcFailed { rpc, not_sent: false, refused: false },
                })
            };
            return (Fate::Lost, failed.into_iter().map(|e| (at, e)).collect());
        }
        // Client writes carry no request id, so a duplicate would be a second write; gRPC over
        // HTTP/2 never duplicates a request. Server-to-server messages must tolerate it.
        if !matches!(env.msg, Msg::ClientWrite { .. }) && rng.chance(self.duplicate) {
            let again = start + self.latency(rng);
            return (Fate::Duplicated, vec![(at, env.clone()), (again, env)]);
        }
        (Fate::Delivered, vec![(at, env)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(msg: Msg) -> Envelope {
        Envelope { from: Endpoint::Replica(0), to: Endpoint::Replica(1), msg }
    }

    #[test]
    fn blocked_links_drop_one_direction_only() {
        let mut net = Network::new(0.0, 0.0, 0);
        let mut rng = Rng::new(1);
        net.block(Endpoint::Replica(0), Endpoint::Replica(1));
        assert_eq!(net.send(env(Msg::QueryConfig { rpc: 1 }), 0, &mut rng).0, Fate::Blocked);
        let back = Envelope { from: Endpoint::Replica(1), to: Endpoint::Replica(0), msg: Msg::QueryConfig { rpc: 2 } };
        assert_eq!(net.send(back, 0, &mut rng).0, Fate::Delivered);
    }

    #[test]
    fn a_lost_request_fails_its_rpc_at_the_sender() {
        let mut net = Network::new(1.0, 0.0, 0);
        let (fate, out) = net.send(env(Msg::QueryConfig { rpc: 9 }), 10, &mut Rng::new(1));
        assert_eq!(fate, Fate::Lost);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1.to, Endpoint::Replica(0));
        assert!(matches!(out[0].1.msg, Msg::RpcFailed { rpc: 9, not_sent: true, refused: false }));
    }

    #[test]
    fn clogged_messages_wait_and_rules_drop_by_kind() {
        let mut net = Network::new(0.0, 0.0, 0);
        let mut rng = Rng::new(1);
        net.clog(Endpoint::Replica(1), 5_000);
        let (_, out) = net.send(env(Msg::QueryConfig { rpc: 1 }), 0, &mut rng);
        assert_eq!(out[0].0, 5_200);
        net.rules.push(DropRule {
            from: Endpoint::Replica(0),
            to: Endpoint::Replica(1),
            kind: Some("query-config".into()),
            remaining: Some(1),
        });
        assert_eq!(net.send(env(Msg::QueryConfig { rpc: 2 }), 0, &mut rng).0, Fate::Dropped);
        assert_eq!(net.send(env(Msg::QueryConfig { rpc: 3 }), 0, &mut rng).0, Fate::Delivered, "the rule dropped one message");
    }
}
