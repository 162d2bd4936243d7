//! The backup uploads of one replica server: which of the tasks the meta hands out (in beacon
//! answers) start, which are abandoned, and what the next beacon reports of each. The runtime
//! carries out `BackupPartition` (checkpoint, upload, partition manifest) and `CancelBackup`,
//! and feeds back what its uploads report.
//!
//! ```text
//!  answer tasks ─▶ new (backup, partition, attempt) on a hosted replica ─▶ BackupPartition
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

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Backups {
    runs: BTreeMap<(BackupId, Gpid), Run>,
}

impl Backups {
    /// The tasks of a beacon answer: starts what is new, cancels what is no longer handed out.
    pub fn on_answer(&mut self, tasks: Vec<BackupTask>, hosted: &BTreeSet<Gpid>) -> Vec<BackupCommand> {
        let mut commands = Vec::new();
        let wanted: BTreeSet<(BackupId, Gpid)> = tasks.iter().map(|t| (t.backup_id, t.gpid)).collect();
        self.runs.retain(|key, run| {
            let keep = wanted.contains(key);
            if !keep && !run.finished() {
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
                if !run.finished() {
                    commands.push(BackupCommand::Cancel { backup_id: task.backup_id, gpid: task.gpid, attempt: run.task.attempt });
                }
            }
            if hosted.contains(&task.gpid) {
                commands.push(BackupCommand::Start(task.clone()));
                self.runs.insert(key, Run { task, report: None });
            } else {
                let report = Some(PartitionReport::Failed(format!("this server does not host partition {}", task.gpid)));
                self.runs.insert(key, Run { task, report });
            }
        }
        commands
    }

    /// A running upload reported; reports of attempts no longer running are dropped.
    pub fn on_report(&mut self, r: BackupTaskReport) {
        if let Some(run) = self.runs.get_mut(&(r.backup_id, r.gpid)).filter(|run| run.task.attempt == r.attempt && !run.finished()) {
            run.report = Some(r.report);
        }
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
        self.runs.values().filter(|r| !r.finished()).count()
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
        let mut b = Backups::default();
        assert_eq!(b.on_answer(vec![task(0, 1), task(2, 1)], &hosted), vec![BackupCommand::Start(task(0, 1))]);
        // Not hosted here: reported failed at once, nothing runs.
        assert!(matches!(&b.reports()[..], [BackupTaskReport { gpid, report: PartitionReport::Failed(why), .. }] if gpid.partition == 2 && why.contains("does not host")));
        // The same task again: nothing new.
        assert_eq!(b.on_answer(vec![task(0, 1)], &hosted), vec![]);
        b.on_report(report(0, 1, PartitionReport::Progress { bytes_done: 5, bytes_total: 10 }));
        b.on_report(report(0, 9, PartitionReport::Failed("stale".into())));
        assert_eq!(b.reports(), vec![report(0, 1, PartitionReport::Progress { bytes_done: 5, bytes_total: 10 })]);
        assert_eq!(b.running(), 1);
        // The meta gave the attempt up and hands out the next: the old one is cancelled.
        let commands = b.on_answer(vec![task(0, 2)], &hosted);
        assert_eq!(commands, vec![BackupCommand::Cancel { backup_id: 7, gpid: Gpid::new(1, 0), attempt: 1 }, BackupCommand::Start(task(0, 2))]);
        b.on_report(report(0, 2, PartitionReport::Failed("disk".into())));
        // A finished run is reported, never started again, and not cancelled when forgotten.
        assert_eq!(b.on_answer(vec![task(0, 2)], &hosted), vec![]);
        assert_eq!(b.reports(), vec![report(0, 2, PartitionReport::Failed("disk".into()))]);
        b.on_report(report(0, 2, PartitionReport::Progress { bytes_done: 1, bytes_total: 1 }));
        assert_eq!(b.reports().len(), 1, "a finished run's report stays");
        assert_eq!(b.on_answer(vec![], &hosted), vec![]);
        assert!(b.reports().is_empty());
        // A running one no longer handed out is cancelled.
        b.on_answer(vec![task(1, 1)], &hosted);
        assert_eq!(b.on_answer(vec![], &hosted), vec![BackupCommand::Cancel { backup_id: 7, gpid: Gpid::new(1, 1), attempt: 1 }]);
        assert_eq!(b.running(), 0);
    }
}
