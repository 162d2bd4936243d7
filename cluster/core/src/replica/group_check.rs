//! Timers: the primary's group checks (empty prepares carrying the commit point) and prepare
//! timeouts that remove a silent secondary; retries of learn requests and proposals.

use super::*;

impl Replica {
    pub(super) fn on_tick(&mut self, ctx: &Ctx) {
        match self.status {
            PartitionStatus::Primary => {
                self.remove_unreachable_members(ctx);
                if let Some((proposal, at)) = &self.proposal
                    && ctx.now_ms.saturating_sub(*at) >= self.options.proposal_retry_ms
                {
                    let proposal = proposal.clone();
                    self.proposal = Some((proposal.clone(), ctx.now_ms));
                    self.actions.push(Action::ProposeConfig { proposal });
                }
                self.maybe_upgrade_learner(ctx);
                self.send_prepares(ctx, true);
            }
            PartitionStatus::Learner => match self.learn {
                LearnState::Idle => self.start_learning(ctx),
                LearnState::Requested { since_ms } if ctx.now_ms.saturating_sub(since_ms) >= self.options.learn_retry_ms => {
                    self.start_learning(ctx)
                }
                LearnState::Streaming if ctx.now_ms.saturating_sub(self.last_prepare_ms) > self.options.prepare_timeout_ms => {
                    // The primary stopped streaming to us (it dropped us after a timeout).
                    self.start_learning(ctx)
                }
                _ => {}
            },
            _ => {}
        }
    }

    /// The earliest `now_ms` at which a tick could make this replica act; `u64::MAX` when no
    /// tick would. A host of a thousand replicas skips the ticks of the quiet ones (issue 15):
    /// a primary whose members all answered and hold everything it prepared acts only for a
    /// commit point not yet sent (half a group check interval after the member's last send) or
    /// a group check (one interval after it). Anything in motion — a proposal, a learner, a
    /// member unanswered, refused or behind — takes every tick (0), as a learner does; a
    /// secondary or inactive replica does nothing on a tick.
    pub fn next_timer_ms(&self) -> u64 {
        match self.status {
            PartitionStatus::Primary => {
                if self.proposal.is_some() {
                    return 0;
                }
                let last_prepared = self.last_prepared();
                let interval = self.options.group_check_interval_ms;
                let mut next = u64::MAX;
                for p in self.members.values() {
                    if p.learner || p.refused || p.in_flight || p.unanswered_since_ms.is_some() || p.sent < last_prepared {
                        return 0;
                    }
                    if p.committed_sent < self.last_committed {
                        next = next.min(p.last_send_ms.saturating_add(interval / 2));
                    }
                    next = next.min(p.last_send_ms.saturating_add(interval));
                }
                next
            }
            PartitionStatus::Learner => 0,
            PartitionStatus::Secondary | PartitionStatus::Inactive | PartitionStatus::Error => u64::MAX,
        }
    }

    /// Members silent for `prepare_timeout_ms`, or whose server refused the connection, leave:
    /// a learner from the stream (it asks to learn again when it comes back), a secondary from
    /// the configuration through the meta.
    pub(super) fn remove_unreachable_members(&mut self, ctx: &Ctx) {
        let timeout = self.options.prepare_timeout_ms;
        let unreachable: Vec<(NodeAddr, bool)> = self
            .members
            .iter()
            .filter(|(_, p)| p.refused || p.unanswered_since_ms.is_some_and(|since| ctx.now_ms.saturating_sub(since) > timeout))
            .map(|(node, p)| (node.clone(), p.learner))
            .collect();
        for (node, learner) in unreachable {
            if learner {
                self.members.remove(&node);
            } else {
                self.propose(ctx, ConfigProposal::RemoveSecondary { ballot: self.config.ballot, node });
            }
        }
    }
}
