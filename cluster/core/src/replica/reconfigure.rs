//! Configuration changes: adopting the meta's configuration (become primary and reconcile,
//! secondary, learner or inactive) and proposing changes to the meta (remove a secondary that
//! stopped acking, upgrade a caught-up learner).

use super::*;

impl Replica {
    pub(super) fn on_config_update(&mut self, ctx: &Ctx, config: PartitionConfig) {
        if config.gpid != self.gpid || config.ballot < self.config.ballot || config == self.config {
            return;
        }
        if self.status == PartitionStatus::Error {
            self.config = config;
            return;
        }
        let old_status = self.status;
        let ballot_changed = config.ballot != self.config.ballot;
        let new_status = config.status_of(&self.me);
        self.config = config;
        if ballot_changed {
            // A proposal made under the old ballot can no longer apply.
            self.proposal = None;
            self.proposal_refused_until_ms = 0;
        }
        if ballot_changed {
            self.upgrading.clear();
        }
        let learners = &self.config.learners;
        self.upgrading.retain(|l| learners.contains(l));
        match new_status {
            PartitionStatus::Primary if old_status == PartitionStatus::Primary => self.sync_members(ctx),
            PartitionStatus::Primary => self.become_primary(ctx),
            other => {
                if old_status == PartitionStatus::Primary {
                    self.fail_pending_writes();
                    self.members.clear();
                }
                self.status = other;
                if ballot_changed || old_status != other {
                    // Entries beyond the commit point may be leftovers of an older primary: only
                    // what the current primary streams counts from now on.
                    self.stream_prepared = self.last_committed;
                    self.primary_committed = self.last_committed;
                    self.refuse_waiting_replies();
                    self.learn = LearnState::Idle;
                }
                if other == PartitionStatus::Learner && self.learn == LearnState::Idle {
                    self.start_learning(ctx);
                }
            }
        }
    }

    fn become_primary(&mut self, ctx: &Ctx) {
        assert!(self.pending_writes.is_empty(), "a replica that was not primary has no pending writes");
        self.status = PartitionStatus::Primary;
        self.refuse_waiting_replies();
        self.learn = LearnState::Idle;
        self.members.clear();
        self.sync_members(ctx);
        // Everything this replica prepared is re-proposed under the new ballot; reads wait until
        // it is committed, so they never miss a write an earlier primary acknowledged.
        self.reconcile_until = self.last_prepared();
        self.try_commit_as_primary(ctx);
        self.send_prepares(ctx, false);
    }

    /// Matches the tracked members to the configuration (same primary, new membership).
    fn sync_members(&mut self, ctx: &Ctx) {
        let secondaries = self.config.secondaries.clone();
        let learners = self.config.learners.clone();
        self.members.retain(|node, _| secondaries.contains(node) || learners.contains(node));
        // A secondary the configuration made a learner again is tracked as one: it is dropped
        // when silent, not proposed for removal as a secondary it no longer is.
        for (node, p) in self.members.iter_mut() {
            if learners.contains(node) {
                p.learner = true;
            }
        }
        for node in &secondaries {
            let last_committed = self.last_committed;
            let p = self.members.entry(node.clone()).or_insert_with(|| MemberProgress::new(last_committed, false));
            p.learner = false;
        }
        self.try_commit_as_primary(ctx);
        self.send_prepares(ctx, false);
    }

    /// A newer ballot exists somewhere: stop acting as primary until the meta says otherwise.
    pub(super) fn step_down(&mut self, _ctx: &Ctx) {
        self.fail_pending_writes();
        self.members.clear();
        self.status = PartitionStatus::Inactive;
    }

    pub(super) fn refuse_waiting_replies(&mut self) {
        for (_, token) in std::mem::take(&mut self.waiting_replies) {
            let reply = PrepareReply { ballot: self.config.ballot, outcome: PrepareOutcome::NotMember };
            self.actions.push(Action::ReplyPrepare { token, reply });
        }
    }

    pub(super) fn propose(&mut self, ctx: &Ctx, proposal: ConfigProposal) {
        if self.proposal.is_some() || ctx.now_ms < self.proposal_refused_until_ms {
            return;
        }
        self.proposal = Some((proposal.clone(), ctx.now_ms));
        self.actions.push(Action::ProposeConfig { proposal });
    }

    pub(super) fn on_proposal_reply(&mut self, ctx: &Ctx, result: Result<PartitionConfig, String>) {
        // A failure with no proposal in flight is a late one (an RPC that timed out after it was
        // sent again): it says nothing about the proposals to come.
        let in_flight = self.proposal.take().is_some();
        match result {
            Ok(config) => self.on_config_update(ctx, config),
            Err(_) if in_flight => self.proposal_refused_until_ms = ctx.now_ms + self.options.proposal_retry_ms,
            Err(_) => {}
        }
    }

    /// A learner that holds every committed decree joins the configuration as a secondary.
    pub(super) fn maybe_upgrade_learner(&mut self, ctx: &Ctx) {
        if self.status != PartitionStatus::Primary || self.proposal.is_some() || ctx.now_ms < self.proposal_refused_until_ms {
            return;
        }
        let ready = self
            .members
            .iter()
            .find(|(node, p)| p.learner && p.acked >= self.last_committed && self.config.learners.contains(node))
            .map(|(node, _)| node.clone());
        if let Some(node) = ready {
            self.upgrading.insert(node.clone());
            self.propose(ctx, ConfigProposal::UpgradeLearner { ballot: self.config.ballot, node });
        }
    }
}

impl MemberProgress {
    /// The next prepare starts after what the member acked (or the commit point), not after what
    /// was sent: a lost batch is sent again. Skipping it would let the member's gap reply
    /// ("prepared up to X") vouch for entries this primary never delivered — after a primary
    /// restarts at the same ballot, the member may hold different entries under the same decrees
    /// (found by the simulator, seed 44).
    pub(super) fn resend_unacked(&mut self, committed: Decree) {
        self.sent = self.sent.min(self.acked.max(committed));
    }

    pub(super) fn new(from: Decree, learner: bool) -> Self {
        MemberProgress {
            acked: 0,
            sent: from,
            in_flight: false,
            unanswered_since_ms: None,
            refused: false,
            last_send_ms: 0,
            committed_sent: 0,
            learner,
            disk_low: None,
        }
    }
}
