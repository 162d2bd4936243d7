//! Learning: a learner asks the primary for state. If the primary still holds the log after the
//! learner's commit point, it streams prepares from there (learning by log); otherwise it serves
//! a checkpoint, which the learner installs before learning the rest by log. A learner that holds
//! every committed decree is upgraded to secondary (see `reconfigure`).

use super::*;

impl Replica {
    pub(super) fn start_learning(&mut self, ctx: &Ctx) {
        let Some(primary) = self.config.primary.clone() else { return };
        self.learn = LearnState::Requested { since_ms: ctx.now_ms };
        self.stream_prepared = self.last_committed;
        let request = LearnRequest { ballot: self.config.ballot, learner: self.me.clone(), last_committed: self.last_committed };
        self.actions.push(Action::SendLearnRequest { to: primary, request });
    }

    pub(super) fn on_learn(&mut self, ctx: &Ctx, token: RequestId, request: LearnRequest) {
        let refuse = |reason: String| Action::ReplyLearn { token, reply: LearnReply::Refused { reason } };
        if self.status != PartitionStatus::Primary {
            self.actions.push(refuse(format!("{} is not the primary of {}", self.me, self.gpid)));
            return;
        }
        if !self.config.learners.contains(&request.learner) {
            self.actions.push(refuse(format!("{} is not a learner of {} at ballot {}", request.learner, self.gpid, self.config.ballot)));
            return;
        }
        if request.last_committed > self.last_prepared() {
            self.actions.push(refuse(format!("learner is ahead of the primary ({} > {})", request.last_committed, self.last_prepared())));
            return;
        }
        if request.last_committed + 1 >= self.log_cache_start() {
            let mut p = MemberProgress::new(request.last_committed, true);
            p.acked = request.last_committed;
            self.members.insert(request.learner.clone(), p);
            self.actions.push(Action::ReplyLearn { token, reply: LearnReply::Log { start: request.last_committed + 1 } });
            self.send_prepares(ctx, false);
        } else {
            self.members.remove(&request.learner);
            self.actions.push(Action::ServeCheckpoint { token });
        }
    }

    pub(super) fn on_checkpoint_ready(&mut self, token: RequestId, result: Result<(String, Decree), String>) {
        let reply = match result {
            Ok((checkpoint_id, decree)) => LearnReply::Checkpoint { checkpoint_id, decree },
            Err(reason) => LearnReply::Refused { reason: format!("checkpoint failed: {reason}") },
        };
        self.actions.push(Action::ReplyLearn { token, reply });
    }

    pub(super) fn on_learn_reply(&mut self, ctx: &Ctx, reply: Option<LearnReply>) {
        if self.status != PartitionStatus::Learner || !matches!(self.learn, LearnState::Requested { .. }) {
            return;
        }
        match reply {
            Some(LearnReply::Log { start }) if start == self.last_committed + 1 => {
                self.learn = LearnState::Streaming;
                self.last_prepare_ms = ctx.now_ms;
            }
            Some(LearnReply::Checkpoint { checkpoint_id, decree }) => {
                let Some(from) = self.config.primary.clone() else { return };
                self.learn = LearnState::FetchingCheckpoint;
                self.actions.push(Action::FetchCheckpoint { from, checkpoint_id, decree });
            }
            // Refused, failed, or an answer to an older request: ask again after learn_retry_ms.
            _ => {}
        }
    }

    pub(super) fn on_checkpoint_installed(&mut self, ctx: &Ctx, engine: Box<dyn KvEngine>) {
        self.engine = engine;
        self.clock.observe(self.engine.clock_bound_us());
        self.log.clear();
        self.log_cache_bytes = 0;
        self.last_committed = self.engine.last_applied_decree();
        self.durable = self.last_committed;
        self.stream_prepared = self.last_committed;
        self.primary_committed = self.last_committed;
        self.refuse_waiting_replies();
        self.learn = LearnState::Idle;
        if self.status == PartitionStatus::Learner {
            self.start_learning(ctx);
        }
    }

    pub(super) fn on_checkpoint_failed(&mut self, _ctx: &Ctx, _error: String) {
        if self.learn == LearnState::FetchingCheckpoint {
            self.learn = LearnState::Idle;
        }
    }
}
