//! The simulated disk under a replica server: the mutation log's group commit and fsync (with
//! their failures), checkpoint files, deleted replica directories. Each completion comes back to
//! the replica or the host as an input.

use super::*;

impl ReplicaServer {

    pub(super) fn append(&mut self, io: &mut Io<'_>, records: &[LogRecord], waiter: Waiter) {
        if self.log.append(records, waiter) {
            self.schedule_log_write(io);
        }
    }

    /// Group commit: the writer thread wakes a little later, and every append queued until
    /// then rides on the same write and fsync.
    pub(super) fn schedule_log_write(&mut self, io: &mut Io<'_>) {
        let delay = io.rng.range(50, 1_000);
        io.timer(delay, Event::LogWrite { node: self.index, incarnation: self.incarnation });
    }

    /// The log failed for the first time: the host stops the server (its supervisor restarts it).
    pub(super) fn on_log_failed(&mut self, io: &mut Io<'_>, kind: &'static str) {
        io.stats.fault(kind);
        host_step!(self, io, HostInput::LogFailed { error: format!("simulated {kind} failure") });
    }

    /// The writer writes the queued appends out. Returns when their fsync will return, if one
    /// was started: until then a crash may lose or tear what was written.
    pub fn on_log_write(&mut self, io: &mut Io<'_>, write_fails: bool) -> Option<u64> {
        let write_fails = write_fails || std::mem::take(&mut self.fail_next_write);
        let was_failed = self.log.failed();
        let done = self.log.write(write_fails);
        if !was_failed && self.log.failed() {
            self.on_log_failed(io, "disk-write");
        }
        let sync_at = self.log.syncing.then(|| {
            let latency = io.rng.range(200, 3_000);
            io.timer(latency, Event::LogSync { node: self.index, incarnation: self.incarnation });
            io.now_us + latency
        });
        self.complete(io, done);
        sync_at
    }

    /// The fsync returns: every written append completes; the writer takes the next group.
    pub fn on_log_sync(&mut self, io: &mut Io<'_>, sync_fails: bool) {
        let sync_fails = sync_fails || std::mem::take(&mut self.fail_next_sync);
        let was_failed = self.log.failed();
        let done = self.log.sync(sync_fails);
        if !was_failed && self.log.failed() {
            self.on_log_failed(io, "disk-sync");
        }
        if self.log.has_pending() && !self.log.write_scheduled {
            self.log.write_scheduled = true;
            self.schedule_log_write(io);
        }
        self.complete(io, done);
    }

    pub(super) fn complete(&mut self, io: &mut Io<'_>, done: Vec<crate::disk::Completion<Waiter>>) {
        for (waiter, result) in done {
            let (gpid, event) = match (waiter, result) {
                (Waiter::Mutations { gpid, ids }, Ok(())) => (gpid, ReplicaEvent::LogAppended { ids }),
                (Waiter::Reset { gpid }, Ok(())) => (gpid, ReplicaEvent::ResetLogged),
                (Waiter::Mutations { gpid, .. } | Waiter::Reset { gpid }, Err(error)) => (gpid, ReplicaEvent::LogFailed { error }),
            };
            self.deliver(io, gpid, event);
        }
    }

    /// The runtime made the checkpoint a learner asked for.
    pub fn on_checkpoint_made(&mut self, io: &mut Io<'_>, gpid: Gpid, id: String) {
        let Some(engine) = self.engines.get(&gpid) else { return };
        let decree = self.checkpoints.make(gpid, id.clone(), engine);
        self.deliver(io, gpid, ReplicaEvent::CheckpointMade { id, result: Ok(decree) });
    }

    /// The fetched database is open and current (the reset record was durable before).
    pub fn on_checkpoint_activated(&mut self, io: &mut Io<'_>, gpid: Gpid, db: String, decree: Decree) {
        let result = match self.fetched.remove(&(gpid, db)) {
            Some(checkpoint) if checkpoint.last_applied_decree() == decree => {
                let engine = SimEngine::from_checkpoint(checkpoint);
                self.disk_engines.insert(gpid, engine.clone());
                self.engines.insert(gpid, engine.clone());
                Ok(Box::new(engine) as Box<dyn tandem_core::storage::KvEngine>)
            }
            _ => Err("the fetched database is gone".to_string()),
        };
        self.deliver(io, gpid, ReplicaEvent::CheckpointActivated { result });
    }

    /// A removed replica's files are gone.
    pub fn on_replica_deleted(&mut self, io: &mut Io<'_>, gpid: Gpid) {
        self.disk_engines.remove(&gpid);
        host_step!(self, io, HostInput::ReplicaRemoved { gpid });
    }
}
