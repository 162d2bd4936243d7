//! Wire conversions of backups (docs/backup.md): records, the tasks a beacon answer hands out
//! and the reports a beacon brings. Conversions only.

use tandem_backup_core::{PartitionEntry, PartitionReport};
use tandem_meta_core::backup::{BackupInfo, BackupPartitionView, BackupTask, BackupTaskReport, RestoreSource, RestoreView};
use tandem_proto::convert::gpid_from;
use tandem_proto::v1;

pub fn info_to_wire(b: &BackupInfo) -> v1::BackupInfo {
    v1::BackupInfo {
        id: b.id,
        table_id: b.table_id,
        table_name: b.table_name.clone(),
        partition_count: b.partition_count,
        target: b.target.clone(),
        state: b.state.as_str().to_string(),
        started_ms: b.started_ms,
        finished_ms: b.finished_ms,
        manifest_sha256: b.manifest_sha256.clone(),
        bytes: b.bytes,
        new_bytes: b.new_bytes,
        reason: b.reason.clone(),
        who: b.who.clone(),
    }
}

pub fn task_to_wire(t: &BackupTask) -> v1::BackupTask {
    v1::BackupTask {
        backup_id: t.backup_id,
        gpid: Some(t.gpid.into()),
        attempt: t.attempt,
        target: t.target.clone(),
        kept: t.kept.iter().map(|(id, sha)| v1::KeptBackup { backup_id: *id, manifest_sha256: sha.clone() }).collect(),
    }
}

pub fn entry_from_wire(e: &v1::BackupPartitionEntry) -> PartitionEntry {
    PartitionEntry {
        partition: e.partition,
        attempt: e.attempt,
        decree: e.decree,
        manifest: e.manifest.clone(),
        manifest_sha256: e.manifest_sha256.clone(),
        manifest_bytes: e.manifest_bytes,
        files: e.files,
        bytes: e.bytes,
        new_bytes: e.new_bytes,
        reused_bytes: e.reused_bytes,
        duration_ms: e.duration_ms,
    }
}

/// A beacon's report; None when it is malformed (no gpid, no report).
pub fn report_from_wire(r: &v1::BackupTaskReport) -> Option<BackupTaskReport> {
    use v1::backup_task_report::Report;
    let report = match r.report.as_ref()? {
        Report::Progress(p) => PartitionReport::Progress { bytes_done: p.bytes_done, bytes_total: p.bytes_total },
        Report::Done(e) => PartitionReport::Done(entry_from_wire(e)),
        Report::Failed(why) => PartitionReport::Failed(why.clone()),
    };
    Some(BackupTaskReport { backup_id: r.backup_id, gpid: gpid_from(r.gpid.as_ref()).ok()?, attempt: r.attempt, report })
}

pub fn partition_to_wire(p: &BackupPartitionView) -> v1::BackupPartitionStatus {
    v1::BackupPartitionStatus {
        partition: p.partition,
        phase: p.phase.to_string(),
        primary: p.primary.clone(),
        attempt: p.attempt,
        bytes_done: p.bytes_done,
        bytes_total: p.bytes_total,
        last_error: p.last_error.clone().unwrap_or_default(),
        ..Default::default()
    }
}

/// A complete backup's partition, as its table manifest names it.
pub fn manifest_partition_to_wire(e: &PartitionEntry) -> v1::BackupPartitionStatus {
    v1::BackupPartitionStatus {
        partition: e.partition,
        phase: "done".into(),
        attempt: e.attempt,
        bytes_done: e.bytes,
        bytes_total: e.bytes,
        decree: e.decree,
        files: e.files,
        new_bytes: e.new_bytes,
        reused_bytes: e.reused_bytes,
        duration_ms: e.duration_ms,
        ..Default::default()
    }
}

pub fn restore_source_to_wire(r: &RestoreSource) -> v1::RestoreSource {
    v1::RestoreSource {
        restore_id: r.restore_id,
        table_id: r.table_id,
        backup_id: r.backup_id,
        source_table_id: r.source_table_id,
        target: r.target.clone(),
        manifest_sha256: r.manifest_sha256.clone(),
    }
}

pub fn restore_to_wire(v: &RestoreView) -> v1::RestoreInfo {
    let r = &v.info;
    v1::RestoreInfo {
        id: r.id,
        table_id: r.table_id,
        table_name: r.table_name.clone(),
        backup_id: r.backup_id,
        source_table_id: r.source_table_id,
        source_table_name: r.source_table_name.clone(),
        partition_count: r.partition_count,
        target: r.target.clone(),
        state: r.state.as_str().to_string(),
        started_ms: r.started_ms,
        finished_ms: r.finished_ms,
        reason: r.reason.clone(),
        who: r.who.clone(),
        partitions_ready: v.partitions_ready,
        last_error: v.last_error.clone().unwrap_or_default(),
    }
}
