//! One running backup of a table, as the meta leader drives it: which partition is handed to
//! which primary under which attempt, when an attempt is given up, when the backup is complete
//! and when it has failed. Inputs in, actions out; time arrives with the inputs.
//!
//! ```text
//!  Primary{p, node} ──▶ Assign{p, node, attempt}      (the node's replica takes a checkpoint and uploads)
//!  Report{p, attempt, Progress|Done|Failed} ──▶ (next attempt | partition done)
//!  Tick{now} ──▶ silent attempts given up; Assign for partitions waiting; deadline
//!  every partition done ──▶ WriteTableManifest ──ManifestWritten{sha}──▶ RecordComplete ──Recorded──▶ complete
//!  too many attempts of one partition, or the deadline ──▶ RecordFailed
//! ```
//!
//! Invariants: a partition is done at most once and only from its current attempt; the table
//! manifest is written only when every partition is done; `RecordComplete` only follows a
//! written table manifest; a failed job never completes. A report from an earlier attempt (an
//! uploader the job gave up on, still running) is ignored, and it writes under its own attempt
//! (layout), so it cannot disturb what the job accepts.

use crate::manifest::{BackupId, PartitionEntry, TableManifest, FORMAT};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobOptions {
    /// An attempt that reports nothing for this long is given up (a primary reports progress
    /// with every beacon).
    pub silence_ms: u64,
    /// A partition handed out this often without success fails the backup.
    pub attempts_max: u32,
    /// The whole backup fails if it is not complete this long after it started.
    pub deadline_ms: u64,
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions { silence_ms: 60_000, attempts_max: 3, deadline_ms: 6 * 3_600_000 }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartitionReport {
    Progress { bytes_done: u64, bytes_total: u64 },
    Done(PartitionEntry),
    Failed(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobInput {
    /// The partition's primary as the meta knows it now (None: it has none).
    Primary { partition: u32, primary: Option<String> },
    /// What the uploader of `attempt` of `partition` reported.
    Report { partition: u32, attempt: u32, report: PartitionReport },
    /// `node`'s process restarted (the meta gave its primaries new ballots): an attempt it was
    /// uploading is given up and assigned again under a new number, so the new process never
    /// writes the objects of an attempt its predecessor wrote, and a late report of the old
    /// process cannot stand for the new one's upload (found by the simulator, seed 7460).
    UploaderRestarted { node: String },
    Tick,
    /// The table manifest is written (its SHA-256), or why not.
    ManifestWritten { result: Result<String, String> },
    /// The record says complete, or why it could not be written.
    Recorded { result: Result<(), String> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobAction {
    /// Ask `primary` to back up `partition` under `attempt`: checkpoint, plan, upload, write the
    /// partition manifest, then report `Done` with its entry. Any earlier attempt is abandoned.
    Assign { partition: u32, primary: String, attempt: u32 },
    /// Write `manifest` at its key in the target, then report `ManifestWritten`.
    WriteTableManifest { manifest: TableManifest },
    /// Mark the record complete with the table manifest's SHA-256 and the totals, in one store
    /// write fenced by the leader's epoch; report `Recorded`.
    RecordComplete { sha256: String, bytes: u64, new_bytes: u64 },
    /// Mark the record failed with `reason` (best effort: a new leader fails running records).
    RecordFailed { reason: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    Waiting,
    Uploading { primary: String, attempt: u32, heard_ms: u64, bytes_done: u64, bytes_total: u64 },
    Done(PartitionEntry),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobState {
    Running,
    /// Every partition is done; the table manifest is being written, then the record.
    Finishing { sha256: Option<String> },
    Complete,
    Failed(String),
}

#[derive(Clone, Debug)]
pub struct BackupJob {
    pub id: BackupId,
    pub table_id: u32,
    pub table_name: String,
    pub started_ms: u64,
    options: JobOptions,
    phases: Vec<Phase>,
    attempts: Vec<u32>,
    primaries: Vec<Option<String>>,
    last_errors: Vec<Option<String>>,
    state: JobState,
    now_ms: u64,
    actions: Vec<JobAction>,
}

impl BackupJob {
    pub fn new(id: BackupId, table_id: u32, table_name: String, partition_count: u32, started_ms: u64, options: JobOptions) -> BackupJob {
        assert!(partition_count > 0, "a table has partitions");
        let n = partition_count as usize;
        BackupJob {
            id,
            table_id,
            table_name,
            started_ms,
            options,
            phases: vec![Phase::Waiting; n],
            attempts: vec![0; n],
            primaries: vec![None; n],
            last_errors: vec![None; n],
            state: JobState::Running,
            now_ms: started_ms,
            actions: Vec::new(),
        }
    }

    pub fn state(&self) -> &JobState {
        &self.state
    }

    pub fn phases(&self) -> &[Phase] {
        &self.phases
    }

    /// Bytes uploaded so far and to upload in all, over the partitions that reported.
    pub fn progress(&self) -> (u64, u64) {
        self.phases.iter().fold((0, 0), |(done, total), p| match p {
            Phase::Waiting => (done, total),
            Phase::Uploading { bytes_done, bytes_total, .. } => (done + bytes_done, total + bytes_total),
            Phase::Done(e) => (done + e.bytes, total + e.bytes),
        })
    }

    pub fn take_actions(&mut self) -> Vec<JobAction> {
        std::mem::take(&mut self.actions)
    }

    /// Feeds one input at wall time `now_ms` (the meta's clock).
    pub fn step(&mut self, now_ms: u64, input: JobInput) {
        self.now_ms = self.now_ms.max(now_ms);
        match input {
            JobInput::Primary { partition, primary } => self.on_primary(partition, primary),
            JobInput::Report { partition, attempt, report } => self.on_report(partition, attempt, report),
            JobInput::UploaderRestarted { node } => {
                if self.state != JobState::Running {
                    return;
                }
                for p in 0..self.phases.len() {
                    if matches!(&self.phases[p], Phase::Uploading { primary, .. } if *primary == node) {
                        self.give_up(p, format!("{node} restarted while it uploaded"));
                        self.assign_waiting(p);
                    }
                }
            }
            JobInput::Tick => self.on_tick(),
            JobInput::ManifestWritten { result } => self.on_manifest_written(result),
            JobInput::Recorded { result } => self.on_recorded(result),
        }
    }

    fn partition_known(&self, partition: u32) -> bool {
        (partition as usize) < self.phases.len()
    }

    fn on_primary(&mut self, partition: u32, primary: Option<String>) {
        if !self.partition_known(partition) {
            return;
        }
        let p = partition as usize;
        self.primaries[p] = primary.clone();
        if self.state != JobState::Running {
            return;
        }
        if let Phase::Uploading { primary: uploader, .. } = &self.phases[p]
            && Some(uploader) != primary.as_ref()
        {
            // The uploader is no longer the primary: its checkpoint may still be good, but the
            // job cannot hear from it through beacons it no longer sends as primary.
            self.give_up(p, format!("{uploader} stopped being the primary"));
        }
        self.assign_waiting(p);
    }

    fn on_report(&mut self, partition: u32, attempt: u32, report: PartitionReport) {
        if !self.partition_known(partition) || self.state != JobState::Running {
            return;
        }
        let p = partition as usize;
        let Phase::Uploading { attempt: current, heard_ms, bytes_done, bytes_total, .. } = &mut self.phases[p] else {
            return;
        };
        if *current != attempt {
            return;
        }
        *heard_ms = self.now_ms;
        match report {
            PartitionReport::Progress { bytes_done: done, bytes_total: total } => {
                (*bytes_done, *bytes_total) = (done, total);
            }
            PartitionReport::Done(entry) => {
                if entry.partition != partition || entry.attempt != attempt {
                    self.give_up(p, format!("reported the entry of partition {} attempt {}", entry.partition, entry.attempt));
                    self.assign_waiting(p);
                    return;
                }
                self.phases[p] = Phase::Done(entry);
                self.finish_if_done();
            }
            PartitionReport::Failed(reason) => {
                self.give_up(p, reason);
                self.assign_waiting(p);
            }
        }
    }

    fn on_tick(&mut self) {
        if matches!(self.state, JobState::Complete | JobState::Failed(_)) {
            return;
        }
        if self.now_ms.saturating_sub(self.started_ms) > self.options.deadline_ms {
            let (done, total) = (self.phases.iter().filter(|p| matches!(p, Phase::Done(_))).count(), self.phases.len());
            return self.fail(format!("not complete {} s after it started ({done} of {total} partitions done)", self.options.deadline_ms / 1000));
        }
        match self.state.clone() {
            JobState::Running => {
                for p in 0..self.phases.len() {
                    if let Phase::Uploading { primary, heard_ms, .. } = &self.phases[p]
                        && self.now_ms.saturating_sub(*heard_ms) > self.options.silence_ms
                    {
                        let reason = format!("no report from {primary} for {} s", self.options.silence_ms / 1000);
                        self.give_up(p, reason);
                    }
                    self.assign_waiting(p);
                }
            }
            // A manifest write or record that failed is tried again.
            JobState::Finishing { sha256: None } => self.write_manifest(),
            JobState::Finishing { sha256: Some(sha) } => self.record_complete(sha),
            JobState::Complete | JobState::Failed(_) => {}
        }
    }

    fn on_manifest_written(&mut self, result: Result<String, String>) {
        if self.state != (JobState::Finishing { sha256: None }) {
            return;
        }
        match result {
            Ok(sha) => {
                self.state = JobState::Finishing { sha256: Some(sha.clone()) };
                self.record_complete(sha);
            }
            // Retried at the next tick, until the deadline.
            Err(_) => {}
        }
    }

    fn on_recorded(&mut self, result: Result<(), String>) {
        if matches!(self.state, JobState::Finishing { sha256: Some(_) }) && result.is_ok() {
            self.state = JobState::Complete;
        }
    }

    /// The attempt of partition `p` is abandoned; the partition waits for its next one, or the
    /// job fails when it had them all.
    fn give_up(&mut self, p: usize, reason: String) {
        self.phases[p] = Phase::Waiting;
        if self.attempts[p] >= self.options.attempts_max {
            return self.fail(format!("partition {p} failed {} attempts; the last: {reason}", self.attempts[p]));
        }
        self.last_errors[p] = Some(reason);
    }

    fn assign_waiting(&mut self, p: usize) {
        if self.state != JobState::Running || self.phases[p] != Phase::Waiting {
            return;
        }
        let Some(primary) = self.primaries[p].clone() else { return };
        self.attempts[p] += 1;
        let attempt = self.attempts[p];
        self.phases[p] = Phase::Uploading { primary: primary.clone(), attempt, heard_ms: self.now_ms, bytes_done: 0, bytes_total: 0 };
        self.actions.push(JobAction::Assign { partition: p as u32, primary, attempt });
    }

    fn finish_if_done(&mut self) {
        if self.phases.iter().all(|p| matches!(p, Phase::Done(_))) {
            self.state = JobState::Finishing { sha256: None };
            self.write_manifest();
        }
    }

    fn write_manifest(&mut self) {
        let partitions: Vec<PartitionEntry> = self
            .phases
            .iter()
            .map(|p| match p {
                Phase::Done(e) => e.clone(),
                other => unreachable!("finishing with a partition {other:?}"),
            })
            .collect();
        let manifest = TableManifest {
            format: FORMAT,
            backup_id: self.id,
            table_id: self.table_id,
            table_name: self.table_name.clone(),
            partition_count: partitions.len() as u32,
            started_ms: self.started_ms,
            partitions,
        };
        self.actions.push(JobAction::WriteTableManifest { manifest });
    }

    fn record_complete(&mut self, sha256: String) {
        let (bytes, new_bytes) = self.phases.iter().fold((0, 0), |(b, n), p| match p {
            Phase::Done(e) => (b + e.bytes, n + e.new_bytes),
            _ => (b, n),
        });
        self.actions.push(JobAction::RecordComplete { sha256, bytes, new_bytes });
    }

    fn fail(&mut self, reason: String) {
        if matches!(self.state, JobState::Complete | JobState::Failed(_)) {
            return;
        }
        self.state = JobState::Failed(reason.clone());
        self.actions.push(JobAction::RecordFailed { reason });
    }

    /// The error of each partition's last abandoned attempt, for `backup show`.
    pub fn last_errors(&self) -> &[Option<String>] {
        &self.last_errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout;
    use JobAction::*;
    use JobInput::*;

    fn entry(partition: u32, attempt: u32) -> PartitionEntry {
        PartitionEntry {
            partition,
            attempt,
            decree: 10,
            manifest: layout::partition_manifest_key(1, 5, partition, attempt),
            manifest_sha256: "0".repeat(64),
            manifest_bytes: 100,
            files: 3,
            bytes: 1000,
            new_bytes: 400,
        reused_bytes: 0,
            duration_ms: 7,
        }
    }

    fn job(partitions: u32) -> BackupJob {
        BackupJob::new(5, 1, "t".into(), partitions, 1_000, JobOptions { silence_ms: 10_000, attempts_max: 2, deadline_ms: 100_000 })
    }

    fn primary(p: u32, node: &str) -> JobInput {
        Primary { partition: p, primary: Some(node.into()) }
    }

    fn done(p: u32, attempt: u32) -> JobInput {
        Report { partition: p, attempt, report: PartitionReport::Done(entry(p, attempt)) }
    }

    #[test]
    fn every_partition_done_then_the_manifest_then_the_record() {
        let mut j = job(2);
        j.step(1_000, primary(0, "r1"));
        j.step(1_000, primary(1, "r2"));
        assert_eq!(j.take_actions(), vec![Assign { partition: 0, primary: "r1".into(), attempt: 1 }, Assign { partition: 1, primary: "r2".into(), attempt: 1 }]);
        j.step(2_000, Report { partition: 0, attempt: 1, report: PartitionReport::Progress { bytes_done: 10, bytes_total: 50 } });
        assert_eq!(j.progress(), (10, 50));
        j.step(3_000, done(0, 1));
        assert_eq!(j.take_actions(), vec![], "not before every partition is done");
        j.step(4_000, done(1, 1));
        let actions = j.take_actions();
        let [WriteTableManifest { manifest }] = actions.as_slice() else { panic!("{actions:?}") };
        assert_eq!((manifest.partition_count, manifest.partitions[1].attempt, manifest.started_ms), (2, 1, 1_000));
        // The record is not asked for before the manifest is written.
        j.step(5_000, ManifestWritten { result: Err("503".into()) });
        assert_eq!(j.take_actions(), vec![]);
        j.step(6_000, Tick);
        assert!(matches!(j.take_actions().as_slice(), [WriteTableManifest { .. }]), "retried");
        j.step(7_000, ManifestWritten { result: Ok("ab".into()) });
        assert_eq!(j.take_actions(), vec![RecordComplete { sha256: "ab".into(), bytes: 2000, new_bytes: 800 }]);
        j.step(8_000, Recorded { result: Ok(()) });
        assert_eq!(j.state(), &JobState::Complete);
        j.step(200_000, Tick);
        assert_eq!(j.take_actions(), vec![], "the deadline does not touch a complete job");
        assert_eq!(j.state(), &JobState::Complete);
    }

    /// The uploader's process restarted: the new one gets the next attempt, and a late report of
    /// the old one's upload is ignored (simulator seed 7460: both processes uploaded attempt 2,
    /// the second overwrote the first's partition manifest, and the table manifest took the
    /// first's late report).
    #[test]
    fn a_restarted_uploader_gets_the_next_attempt_and_its_predecessors_reports_are_ignored() {
        let mut j = job(2);
        j.step(1_000, primary(0, "r1"));
        j.step(1_000, primary(1, "r2"));
        j.take_actions();
        j.step(2_000, UploaderRestarted { node: "r1".into() });
        assert_eq!(j.take_actions(), vec![Assign { partition: 0, primary: "r1".into(), attempt: 2 }], "only r1's partition");
        j.step(3_000, done(0, 1));
        j.step(3_000, done(1, 1));
        assert_eq!(j.take_actions(), vec![], "attempt 1 of partition 0 was abandoned");
        j.step(4_000, done(0, 2));
        assert!(matches!(j.take_actions().as_slice(), [WriteTableManifest { manifest }] if manifest.partitions[0].attempt == 2));
        // Done partitions are not touched by a later restart.
        j.step(5_000, UploaderRestarted { node: "r1".into() });
        assert_eq!(j.take_actions(), vec![]);
    }

    #[test]
    fn a_new_primary_gets_the_next_attempt_and_the_old_ones_reports_are_ignored() {
        let mut j = job(1);
        j.step(1_000, primary(0, "r1"));
        j.step(2_000, primary(0, "r2"));
        assert_eq!(j.take_actions(), vec![Assign { partition: 0, primary: "r1".into(), attempt: 1 }, Assign { partition: 0, primary: "r2".into(), attempt: 2 }]);
        j.step(3_000, done(0, 1));
        assert_eq!(j.take_actions(), vec![], "attempt 1 was abandoned");
        j.step(3_000, done(0, 2));
        assert!(matches!(j.take_actions().as_slice(), [WriteTableManifest { manifest }] if manifest.partitions[0].attempt == 2));
    }

    #[test]
    fn silent_or_failing_attempts_are_retried_then_fail_the_backup() {
        let mut j = job(1);
        j.step(1_000, primary(0, "r1"));
        j.take_actions();
        // Progress keeps the attempt alive; silence beyond 10 s ends it.
        j.step(9_000, Report { partition: 0, attempt: 1, report: PartitionReport::Progress { bytes_done: 1, bytes_total: 9 } });
        j.step(15_000, Tick);
        assert_eq!(j.take_actions(), vec![]);
        j.step(19_001, Tick);
        assert_eq!(j.take_actions(), vec![Assign { partition: 0, primary: "r1".into(), attempt: 2 }]);
        j.step(20_000, Report { partition: 0, attempt: 2, report: PartitionReport::Failed("target unreachable".into()) });
        let actions = j.take_actions();
        assert!(matches!(actions.as_slice(), [RecordFailed { reason }] if reason.contains("2 attempts") && reason.contains("target unreachable")), "{actions:?}");
        // A failed job never completes, whatever arrives.
        j.step(21_000, done(0, 2));
        j.step(21_000, ManifestWritten { result: Ok("x".into()) });
        assert!(matches!(j.state(), JobState::Failed(_)));
        assert_eq!(j.take_actions(), vec![]);
    }

    #[test]
    fn no_primary_means_waiting_until_the_deadline() {
        let mut j = job(2);
        j.step(1_000, primary(0, "r1"));
        j.step(1_000, Primary { partition: 1, primary: None });
        j.step(2_000, done(0, 1));
        j.take_actions();
        j.step(50_000, Tick);
        assert_eq!(j.take_actions(), vec![]);
        j.step(101_001, Tick);
        let actions = j.take_actions();
        assert!(matches!(actions.as_slice(), [RecordFailed { reason }] if reason.contains("1 of 2 partitions done")), "{actions:?}");
    }

    #[test]
    fn a_report_for_another_partition_or_out_of_range_is_not_taken() {
        let mut j = job(1);
        j.step(1_000, primary(0, "r1"));
        j.take_actions();
        j.step(1_000, Report { partition: 0, attempt: 1, report: PartitionReport::Done(entry(3, 1)) });
        assert_eq!(j.take_actions(), vec![Assign { partition: 0, primary: "r1".into(), attempt: 2 }]);
        j.step(1_000, done(7, 1));
        j.step(1_000, primary(9, "r1"));
        assert_eq!(j.take_actions(), vec![]);
    }
}
