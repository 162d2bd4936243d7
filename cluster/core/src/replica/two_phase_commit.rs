//! The write path: the primary assigns decrees and streams prepares; members log and ack; the
//! primary commits a decree once its own log and every member of the configuration hold it.

use super::*;

impl Replica {
    pub(super) fn on_client_write(&mut self, ctx: &Ctx, request_id: RequestId, request: WriteRequest) {
        if let Err(e) = self.check_primary(ctx) {
            self.actions.push(Action::ReplyClient { request_id, result: Err(e) });
            return;
        }
        if self.pending_writes.len() >= self.options.pending_writes_max {
            let reason = format!("{} writes waiting for commit (pending_writes_max)", self.pending_writes.len());
            self.actions.push(Action::ReplyClient { request_id, result: Err(Error::Busy { gpid: self.gpid, reason }) });
            return;
        }
        if let Err(e) = request.validate(&self.options.limits) {
            self.actions.push(Action::ReplyClient { request_id, result: Err(e) });
            return;
        }
        if let Some((node, low)) = self.disk_short(ctx)
            && !request.only_deletes()
        {
            let error = Error::DiskFull { node, gpid: self.gpid, free_bytes: low.free_bytes, reserve_bytes: low.reserve_bytes };
            self.actions.push(Action::ReplyClient { request_id, result: Err(error) });
            return;
        }
        if let Some(max_us) = request.duplicate_timestamp_max_us() {
            // Records of the other site: refuse them whole while they are too far ahead (they
            // would pin the clock); else advance the clock past them, so every later local write
            // of this partition wins over what it has seen (DESIGN.md §2).
            let limit_us = ctx.wall_us.saturating_add(self.options.max_clock_offset_ms * 1000);
            if max_us > limit_us {
                let ahead_ms = (max_us - ctx.wall_us) / 1000;
                let error = Error::ClockAhead { gpid: self.gpid, ahead_ms, max_ms: self.options.max_clock_offset_ms };
                self.actions.push(Action::ReplyClient { request_id, result: Err(error) });
                return;
            }
            self.clock.observe(max_us);
        }
        let timestamp_us = self.clock.next(ctx.wall_us);
        let effects = {
            let view = write::PendingView { engine: self.engine.as_ref(), log: &self.log, last_committed: self.last_committed };
            write::evaluate(&view, &request, timestamp_us, self.options.cluster_id, ctx.now_s())
        };
        let (ops, response) = match effects {
            Ok(x) => x,
            Err(e) => {
                self.actions.push(Action::ReplyClient { request_id, result: Err(e) });
                return;
            }
        };
        let decree = self.last_prepared() + 1;
        let m = Arc::new(Mutation { ballot: self.config.ballot, decree, timestamp_us, ops });
        self.insert_log(m.clone());
        self.pending_writes.insert(decree, PendingWrite { request_id, response });
        self.actions.push(Action::AppendLog { mutations: vec![m] });
        self.send_prepares(ctx, false);
        // A partition of one replica commits on its own log alone.
        self.try_commit_as_primary(ctx);
    }

    pub(super) fn on_log_appended(&mut self, ctx: &Ctx, ballot: Ballot, decree: Decree) {
        // Appends complete in the order they were issued, and every entry above `durable` has an
        // append in flight. A completion for an entry that was since replaced (another ballot)
        // proves nothing: the replacement's own append completes later.
        let matches = self.log.get(&decree).is_some_and(|m| m.ballot == ballot);
        if !matches || decree != self.durable + 1 {
            return;
        }
        self.durable = decree;
        match self.status {
            PartitionStatus::Primary => self.try_commit_as_primary(ctx),
            PartitionStatus::Secondary | PartitionStatus::Learner => self.release_prepare_replies(ctx),
            _ => {}
        }
    }

    /// Commits every decree logged by this primary and acked by every member of the
    /// configuration, and by the learners it proposed to upgrade (see `Replica::upgrading`).
    pub(super) fn try_commit_as_primary(&mut self, ctx: &Ctx) {
        if self.status != PartitionStatus::Primary {
            return;
        }
        let mut to = self.durable;
        for node in self.config.secondaries.iter().chain(&self.upgrading) {
            let acked = self.members.get(node).map_or(0, |p| p.acked);
            to = to.min(acked);
        }
        if to > self.last_committed {
            self.commit_to(ctx, to);
        }
    }

    pub(super) fn on_prepare(&mut self, ctx: &Ctx, token: RequestId, from: NodeAddr, msg: PrepareMsg) {
        let ballot = msg.config.ballot;
        if ballot < self.config.ballot {
            let reply = PrepareReply { ballot: self.config.ballot, outcome: PrepareOutcome::StaleBallot { ballot: self.config.ballot } };
            self.actions.push(Action::ReplyPrepare { token, reply });
            return;
        }
        // A ballot has one primary (the meta moves the primary only with a new ballot): a prepare
        // that names another one for the ballot this replica knows is from no configuration of
        // the partition; adopting it would make this replica, its primary perhaps, inactive
        // (found by ops/tests/batch.rs, whose bogus prepare took over a partition at ballot 1).
        let other_primary = ballot == self.config.ballot && self.ballot_known && self.config.primary.is_some() && msg.config.primary != self.config.primary;
        if msg.config.primary.as_deref() != Some(from.as_str()) || other_primary {
            let reply = PrepareReply { ballot: self.config.ballot, outcome: PrepareOutcome::NotMember };
            self.actions.push(Action::ReplyPrepare { token, reply });
            return;
        }
        if msg.config != self.config {
            if !self.ballot_known {
                // Reopened without knowing its ballot: the meta's configuration comes first.
                let reply = PrepareReply { ballot: self.config.ballot, outcome: PrepareOutcome::NotMember };
                self.actions.push(Action::ReplyPrepare { token, reply });
                return;
            }
            // The primary got this configuration from the meta by compare-and-set: adopt it.
            self.on_config_update(ctx, msg.config.clone());
        }
        if !matches!(self.status, PartitionStatus::Secondary | PartitionStatus::Learner) || self.config.ballot != ballot {
            let reply = PrepareReply { ballot: self.config.ballot, outcome: PrepareOutcome::NotMember };
            self.actions.push(Action::ReplyPrepare { token, reply });
            return;
        }
        if self.status == PartitionStatus::Learner && self.learn != LearnState::Streaming {
            // A learner installing a checkpoint cannot take log entries yet.
            let reply = PrepareReply { ballot, outcome: PrepareOutcome::NotMember };
            self.actions.push(Action::ReplyPrepare { token, reply });
            return;
        }
        self.last_prepare_ms = ctx.now_ms;
        let mut fresh = Vec::new();
        for m in &msg.mutations {
            let d = m.decree;
            if d <= self.last_committed {
                continue;
            }
            if d > self.stream_prepared + 1 {
                // A gap: the reply tells the primary where to resend from.
                break;
            }
            match self.log.get(&d) {
                // Whole content, not just ballot and timestamp: a restarted primary may issue a
                // different mutation for the same decree at the same ballot.
                Some(existing) if **existing == **m => {}
                _ => {
                    self.truncate_from(d);
                    self.insert_log(m.clone());
                    self.clock.observe(m.timestamp_us);
                    fresh.push(m.clone());
                }
            }
            self.stream_prepared = d;
        }
        if !fresh.is_empty() {
            self.actions.push(Action::AppendLog { mutations: fresh });
        }
        self.waiting_replies.push_back((self.stream_prepared, token));
        self.primary_committed = self.primary_committed.max(msg.last_committed);
        self.release_prepare_replies(ctx);
    }

    /// The server, this one or a member's, whose disk is below its reserve: every member logs
    /// what this primary takes, so a short member refuses writes as this server's own disk
    /// would (else its log append would hit a full disk and stop that server).
    fn disk_short(&self, ctx: &Ctx) -> Option<(NodeAddr, DiskLow)> {
        if let Some(low) = ctx.disk_low {
            return Some((self.me.clone(), low));
        }
        self.members.iter().find_map(|(node, p)| p.disk_low.map(|low| (node.clone(), low)))
    }

    /// Answers the prepares whose mutations are durable now, and commits what they allow.
    pub(super) fn release_prepare_replies(&mut self, ctx: &Ctx) {
        let durable_stream = self.durable.min(self.stream_prepared);
        let commit_to = self.primary_committed.min(durable_stream);
        if commit_to > self.last_committed {
            self.commit_to(ctx, commit_to);
        }
        while let Some(&(decree, token)) = self.waiting_replies.front() {
            if decree > self.durable {
                break;
            }
            self.waiting_replies.pop_front();
            let reply = PrepareReply { ballot: self.config.ballot, outcome: PrepareOutcome::Ok { prepared: decree.min(durable_stream), disk_low: ctx.disk_low } };
            self.actions.push(Action::ReplyPrepare { token, reply });
        }
    }

    pub(super) fn on_prepare_reply(&mut self, ctx: &Ctx, from: NodeAddr, reply: PrepareReply) {
        if self.status != PartitionStatus::Primary {
            return;
        }
        let Some(p) = self.members.get_mut(&from) else { return };
        p.in_flight = false;
        match reply.outcome {
            PrepareOutcome::Ok { prepared, disk_low } => {
                if reply.ballot != self.config.ballot {
                    return;
                }
                p.unanswered_since_ms = None;
                p.refused = false;
                p.disk_low = disk_low;
                // Only what this primary sent counts. A primary that restarted within the grace
                // period serves the same ballot again, without the unsynced tail of its log; a
                // member still holding that tail reports it as prepared, but those entries are
                // not this primary's (found by the simulator, seed 1).
                let prepared = prepared.min(p.sent);
                p.acked = p.acked.max(prepared);
                // With one prepare in flight, `prepared` below `sent` means the member lost or
                // refused part of the stream: resend from what it holds.
                p.sent = prepared;
            }
            PrepareOutcome::StaleBallot { ballot } => {
                // Someone made a newer configuration; the meta will tell us. Stop serving writes
                // that can no longer commit under this ballot.
                if ballot > self.config.ballot {
                    self.step_down(ctx);
                }
                return;
            }
            PrepareOutcome::NotMember => {
                // The member has not seen our configuration yet (or lost it on a restart); the
                // next send carries it again, from what it acked. The timeout removes it if this
                // persists.
                let floor = self.last_committed;
                p.resend_unacked(floor);
                return;
            }
        }
        self.try_commit_as_primary(ctx);
        self.maybe_upgrade_learner(ctx);
        self.send_prepares(ctx, false);
    }

    /// `refused`: the member's server refused the connection. Nothing listens on its port, so
    /// its process is gone (a restarted one answers once it listens): it leaves the write quorum
    /// at once instead of after `prepare_timeout_ms`, so no write waits for it. A reset or a
    /// timeout is not proof and waits out the timeout (the retry a moment later reconnects, or
    /// is refused).
    pub(super) fn on_prepare_failed(&mut self, ctx: &Ctx, to: NodeAddr, refused: bool) {
        let floor = self.last_committed;
        if let Some(p) = self.members.get_mut(&to) {
            p.in_flight = false;
            p.unanswered_since_ms.get_or_insert(ctx.now_ms);
            p.refused |= refused;
            p.resend_unacked(floor);
        }
        if refused && self.status == PartitionStatus::Primary {
            self.remove_unreachable_members(ctx);
        }
    }

    /// Sends the next batch to every member without a prepare in flight that has something to
    /// receive (or, with `group_check`, to every idle member whose last send is old).
    pub(super) fn send_prepares(&mut self, ctx: &Ctx, group_check: bool) {
        if self.status != PartitionStatus::Primary {
            return;
        }
        let last_prepared = self.last_prepared();
        let nodes: Vec<NodeAddr> = self.members.keys().cloned().collect();
        for node in nodes {
            let p = &self.members[&node];
            if p.in_flight {
                continue;
            }
            let has_data = p.sent < last_prepared;
            // A commit point alone waits half a group check interval after the member's last
            // send (or rides on the next data prepare), so a stream of sparse writes does not cost
            // a second message per write: with writes spread over a thousand partitions, each
            // partition's next write usually comes first (issue 15). Secondaries apply later;
            // nothing waits for that, and a promoted one reconciles what it prepared.
            let commit_due = ctx.now_ms.saturating_sub(p.last_send_ms) >= self.options.group_check_interval_ms / 2;
            let has_commit = group_check && commit_due && p.committed_sent < self.last_committed;
            let due = group_check && ctx.now_ms.saturating_sub(p.last_send_ms) >= self.options.group_check_interval_ms;
            let retry_wait = p.unanswered_since_ms.is_some() && ctx.now_ms.saturating_sub(p.last_send_ms) < 200;
            if retry_wait || !(has_data || has_commit || due) {
                continue;
            }
            let start = p.sent + 1;
            if start < self.log_cache_start() && start <= last_prepared {
                // The member needs entries this primary no longer holds: it must learn anew.
                if !p.learner {
                    self.propose(ctx, ConfigProposal::RemoveSecondary { ballot: self.config.ballot, node: node.clone() });
                } else {
                    self.members.remove(&node);
                }
                continue;
            }
            let mut mutations = Vec::new();
            let mut bytes = 0;
            for (_, m) in self.log.range(start..) {
                if !mutations.is_empty() && bytes + m.encoded_bytes() > self.options.prepare_batch_bytes_max {
                    break;
                }
                bytes += m.encoded_bytes();
                mutations.push(m.clone());
            }
            let p = self.members.get_mut(&node).expect("member exists");
            p.sent = mutations.last().map_or(p.sent, |m| m.decree);
            p.in_flight = true;
            p.last_send_ms = ctx.now_ms;
            p.committed_sent = self.last_committed;
            p.unanswered_since_ms.get_or_insert(ctx.now_ms);
            let msg = PrepareMsg { config: self.config.clone(), mutations, last_committed: self.last_committed };
            self.actions.push(Action::SendPrepare { to: node, msg });
        }
    }
}
