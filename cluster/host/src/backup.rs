//! The backup uploads of one replica server: which of the tasks the meta hands out (in beacon
//! answers) start, which are abandoned, and what the next beacon reports of each. The runtime
//! carries out `BackupPartition` (checkpoint, upload, partition manifest) and `CancelBackup`,
//! and feeds back what its uploads report.
//!
//! ```text
//!  answer tasks ─▶ new (backup, partition, attempt) on a hosted replica ─▶ queued ─▶ BackupPartition
//!                  (at most `backup_uploads_max` run at once; a queued one reports no progress yet)
//!                  new on a replica not hosted here ─▶ reported failed, nothing runs
//!                  another attempt of one running ─▶ CancelBackup (old) · BackupPartition (new)
//!                  a running one no longer handed out ─▶ CancelBackup · forgotten
//!  BackupReported ─▶ the latest report of its run, sent with every beacon until forgotten
//! ```
//!
//! Rules, each with its reason:
//! - **The meta decides attempts; the server never starts one by itself.** An attempt runs only
//!   while the meta's answers hand it out, so an attempt the meta gave up on (silence, a new
//!   primary) is cancelled by the next answer that lacks it, and its late reports are ignored
//!   by the meta's job, which only takes reports of the current attempt.
//! - **A run is reported until the meta stops handing it out**: a report lost with a beacon is
//!   sent again with the next one, and a finished run (done or failed) is not started again
//!   while the answers still name it.
//! - **Only a reconciled primary uploads**: a run starts once its replica's read gate is open
//!   (primary, every decree it inherited committed and applied). A new primary's engine lags the
//!   writes its predecessor acknowledged until it reconciles; a checkpoint taken before would
//!   miss them (found by the real-process test that kills an uploading primary: a complete
//!   backup lacked an acknowledged write). Until then the run waits queued, reporting 0 of 0.
//! - **Uploads are limited in number**, not only in bytes per second (the runtime's throttle):
//!   each holds a checkpoint and reads its files, so a server hosting many primaries runs
//!   `backup_uploads_max` at once and queues the rest, in the order they were handed out. A
//!   queued run reports progress 0 of 0 with every beacon, which keeps the meta's job from
//!   giving it up as silent.
//! - **A restarted server starts the attempts it is handed afresh**: the one that ran them is
//!   gone, and the layout gives an attempt its own keys, which the new run writes again whole
//!   before its partition manifest.

use std::collections::{BTreeMap, BTreeSet};
use tandem_backup_core::{BackupId, BackupTask, BackupTaskReport, PartitionReport};
use tandem_core::Gpid;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Run {
    task: BackupTask,
    /// The latest report of the run (None until it reports).
    report: Option<PartitionReport>,
    /// Handed to the runtime (else queued, waiting for a slot).
    started: bool,
    /// When it was handed out, for the queue's order.
    seq: u64,
}

impl Run {
    fn finished(&self) -> bool {
        matches!(self.report, Some(PartitionReport::Done(_) | PartitionReport::Failed(_)))
    }
}

/// What the host tells the runtime about uploads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackupCommand {
    /// Checkpoint the replica of `task.gpid`, upload it, report with `BackupReported`.
    Start(BackupTask),
    /// Stop the upload of this attempt (its reports are no longer wanted).
    Cancel { backup_id: BackupId, gpid: Gpid, attempt: u32 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backups {
    runs: BTreeMap<(BackupId, Gpid), Run>,
    uploads_max: usize,
    next_seq: u64,
}

impl Backups {
    pub fn new(uploads_max: usize) -> Backups {
        Backups { runs: BTreeMap::new(), uploads_max: uploads_max.max(1), next_seq: 0 }
    }

    /// The tasks of a beacon answer: queues what is new, cancels what is no longer handed out,
    /// and starts queued runs while slots are free.
    pub fn on_answer(&mut self, tasks: Vec<BackupTask>, hosted: &BTreeSet<Gpid>, ready: &BTreeSet<Gpid>) -> Vec<BackupCommand> {
        let mut commands = Vec::new();
        let wanted: BTreeSet<(BackupId, Gpid)> = tasks.iter().map(|t| (t.backup_id, t.gpid)).collect();
        self.runs.retain(|key, run| {
            let keep = wanted.contains(key);
            if !keep && run.started && !run.finished() {
                commands.push(BackupCommand::Cancel { backup_id: key.0, gpid: key.1, attempt: run.task.attempt });
            }
            keep
        });
        for task in tasks {
            let key = (task.backup_id, task.gpid);
            if let Some(run) = self.runs.get(&key) {
                if run.task.attempt == task.attempt {
                    continue;
                }
                if run.started && !run.finished() {
                    commands.push(BackupCommand::Cancel { backup_id: task.backup_id, gpid: task.gpid, attempt: run.task.attempt });
                }
            }
            self.next_seq += 1;
            let seq = self.next_seq;
            if hosted.contains(&task.gpid) {
                let waiting = Some(PartitionReport::Progress { bytes_done: 0, bytes_total: 0 });
                self.runs.insert(key, Run { task, report: waiting, started: false, seq });
            } else {
                let report = Some(PartitionReport::Failed(format!("this server does not host partition {}", task.gpid)));
                self.runs.insert(key, Run { task, report, started: true, seq });
            }
        }
        commands.extend(self.start_queued(ready));
        commands
    }

    /// Starts queued runs of ready replicas (`ready`: read gate open), oldest first, while
    /// fewer than `uploads_max` run.
    pub fn start_queued(&mut self, ready: &BTreeSet<Gpid>) -> Vec<BackupCommand> {
        let mut commands = Vec::new();
        while self.running() < self.uploads_max {
            let Some(run) = self.runs.values_mut().filter(|r| !r.started && ready.contains(&r.task.gpid)).min_by_key(|r| r.seq) else { break };
            run.started = true;
            commands.push(BackupCommand::Start(run.task.clone()));
        }
        commands
    }

    /// A running upload reported; reports of attempts no longer running are dropped. One that
    /// finished frees its slot: answers the queued runs that start.
    pub fn on_report(&mut self, r: BackupTaskReport, ready: &BTreeSet<Gpid>) -> Vec<BackupCommand> {
        if let Some(run) = self.runs.get_mut(&(r.backup_id, r.gpid)).filter(|run| run.started && run.task.attempt == r.attempt && !run.finished()) {
            run.report = Some(r.report);
        }
        self.start_queued(ready)
    }

    /// What the next beacon reports: the latest report of every run that has one.
    pub fn reports(&self) -> Vec<BackupTaskReport> {
        self.runs
            .iter()
            .filter_map(|(&(backup_id, gpid), run)| {
                Some(BackupTaskReport { backup_id, gpid, attempt: run.task.attempt, report: run.report.clone()? })
            })
            .collect()
    }

    /// Uploads running now.
    pub fn running(&self) -> usize {
        self.runs.values().filter(|r| r.started && !r.finished()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(partition: u32, attempt: u32) -> BackupTask {
        BackupTask { backup_id: 7, gpid: Gpid::new(1, partition), attempt, target: "file:///bk".into(), kept: vec![] }
    }

    fn report(partition: u32, attempt: u32, report: PartitionReport) -> BackupTaskReport {
        BackupTaskReport { backup_id: 7, gpid: Gpid::new(1, partition), attempt, report }
    }

    #[test]
    fn uploads_start_once_report_until_forgotten_and_follow_the_meta_s_attempts() {
        let hosted: BTreeSet<Gpid> = [Gpid::new(1, 0), Gpid::new(1, 1)].into();
        let mut b = Backups::new(2);
        assert_eq!(b.on_answer(vec![task(0, 1), task(2, 1)], &hosted, &hosted), vec![BackupCommand::Start(task(0, 1))]);
        // Not hosted here: reported failed at once, nothing runs.
        assert!(b.reports().iter().any(|r| r.gpid.partition == 2 && matches!(&r.report, PartitionReport::Failed(why) if why.contains("does not host"))));
        // The same task again: nothing new.
        assert_eq!(b.on_answer(vec![task(0, 1)], &hosted, &hosted), vec![]);
        b.on_report(report(0, 1, PartitionReport::Progress { bytes_done: 5, bytes_total: 10 }), &hosted);
        b.on_report(report(0, 9, PartitionReport::Failed("stale".into())), &hosted);
        assert!(b.reports().contains(&report(0, 1, PartitionReport::Progress { bytes_done: 5, bytes_total: 10 })));
        assert!(!b.reports().iter().any(|r| r.attempt == 9));
        assert_eq!(b.running(), 1);
        // The meta gave the attempt up and hands out the next: the old one is cancelled.
        let commands = b.on_answer(vec![task(0, 2)], &hosted, &hosted);
        assert_eq!(commands, vec![BackupCommand::Cancel { backup_id: 7, gpid: Gpid::new(1, 0), attempt: 1 }, BackupCommand::Start(task(0, 2))]);
        b.on_report(report(0, 2, PartitionReport::Failed("disk".into())), &hosted);
        // A finished run is reported, never started again, and not cancelled when forgotten.
        assert_eq!(b.on_answer(vec![task(0, 2)], &hosted, &hosted), vec![]);
        assert_eq!(b.reports(), vec![report(0, 2, PartitionReport::Failed("disk".into()))], "the unhosted task's report is gone with it");
        b.on_report(report(0, 2, PartitionReport::Progress { bytes_done: 1, bytes_total: 1 }), &hosted);
        assert_eq!(b.reports().len(), 1, "a finished run's report stays");
        assert_eq!(b.on_answer(vec![], &hosted, &hosted), vec![]);
        assert!(b.reports().is_empty());
        // A running one no longer handed out is cancelled.
        b.on_answer(vec![task(1, 1)], &hosted, &hosted);
        assert_eq!(b.on_answer(vec![], &hosted, &hosted), vec![BackupCommand::Cancel { backup_id: 7, gpid: Gpid::new(1, 1), attempt: 1 }]);
        assert_eq!(b.running(), 0);
    }

    #[test]
    fn uploads_beyond_the_limit_wait_their_turn_reporting_that_they_wait() {
        let hosted: BTreeSet<Gpid> = (0..4).map(|p| Gpid::new(1, p)).collect();
        let mut b = Backups::new(2);
        let started = b.on_answer((0..4).map(|p| task(p, 1)).collect(), &hosted, &hosted);
        assert_eq!(started, vec![BackupCommand::Start(task(0, 1)), BackupCommand::Start(task(1, 1))]);
        assert_eq!(b.running(), 2);
        let waiting = PartitionReport::Progress { bytes_done: 0, bytes_total: 0 };
        assert!(b.reports().contains(&report(3, 1, waiting.clone())), "a queued one reports, so the meta does not give it up");
        // A queued run no longer handed out is forgotten without a cancel.
        assert_eq!(b.on_answer(vec![task(0, 1), task(1, 1), task(2, 1)], &hosted, &hosted), vec![]);
        // One finishes: the next in line starts.
        let next = b.on_report(report(0, 1, PartitionReport::Failed("disk".into())), &hosted);
        assert_eq!(next, vec![BackupCommand::Start(task(2, 1))]);
        assert_eq!(b.running(), 2);
        // A queued run's own report (it never ran) is not taken.
        b.on_report(report(3, 1, PartitionReport::Progress { bytes_done: 9, bytes_total: 9 }), &hosted);
        assert!(!b.reports().iter().any(|r| r.gpid.partition == 3));
    }

    #[test]
    fn a_run_waits_for_its_replica_to_be_a_reconciled_primary() {
        let mut b = Backups::new(2);
        let hosted: BTreeSet<Gpid> = [Gpid::new(1, 0)].into();
        let none = BTreeSet::new();
        assert_eq!(b.on_answer(vec![task(0, 1)], &hosted, &none), vec![], "the read gate is closed: queued");
        assert_eq!(b.reports(), vec![report(0, 1, PartitionReport::Progress { bytes_done: 0, bytes_total: 0 })], "reported as waiting");
        assert_eq!(b.start_queued(&hosted), vec![BackupCommand::Start(task(0, 1))], "the gate opened");
    }
}
