//! Wire conversions of sites and duplications (docs/duplication.md). Conversions only.

use tandem_dup_core::{FailMode, TableDup};
use tandem_meta_core::duplication::{DupInfo, DupReport, DupStatus, DupView, Site};
use tandem_proto::errors::ErrorKind;
use tandem_proto::v1;
use tonic::Status;

pub fn site_to_wire(s: &Site) -> v1::Site {
    v1::Site { name: s.name.clone(), metas: s.metas.clone() }
}

pub fn site_from_wire(s: Option<v1::Site>) -> Result<Site, Status> {
    let s = s.ok_or_else(|| ErrorKind::InvalidArgument.status("site add needs a site"))?;
    Ok(Site { name: s.name, metas: s.metas })
}

pub fn dup_to_wire(d: &DupInfo, confirmed: Vec<v1::DupPartitionConfirmed>) -> v1::DupInfo {
    v1::DupInfo {
        id: d.id,
        table_id: d.table_id,
        remote_site: d.remote_site.clone(),
        status: d.status.name().to_string(),
        fail_mode: d.fail_mode.name().to_string(),
        sync_existing: d.sync_existing,
        created_ms: d.created_ms,
        confirmed,
        table: String::new(),
        watermark_us: 0,
    }
}

pub fn dup_for_server_to_wire(d: &TableDup) -> v1::DupInfo {
    v1::DupInfo {
        id: d.dup_id,
        table_id: d.table_id,
        remote_site: d.remote_site.clone(),
        status: if d.paused { DupStatus::Pause } else { DupStatus::Start }.name().to_string(),
        fail_mode: d.fail_mode.name().to_string(),
        sync_existing: d.sync_existing,
        created_ms: 0,
        confirmed: d.confirmed.iter().map(|&(partition, confirmed)| v1::DupPartitionConfirmed { partition, confirmed }).collect(),
        table: d.table.clone(),
        watermark_us: d.watermark_us,
    }
}

pub fn fail_mode_from_wire(name: &str) -> Result<FailMode, Status> {
    if name.is_empty() {
        return Ok(FailMode::Slow);
    }
    FailMode::from_name(name).ok_or_else(|| ErrorKind::InvalidArgument.status(format!("fail mode {name:?} does not exist: choose slow or skip")))
}

pub fn status_from_wire(name: &str) -> Result<DupStatus, Status> {
    DupStatus::from_name(name).ok_or_else(|| ErrorKind::InvalidArgument.status(format!("duplication status {name:?} does not exist: start, pause or removed")))
}

pub fn report_from_wire(p: &v1::DupProgress) -> DupReport {
    DupReport {
        confirmed: p.confirmed,
        lag_decrees: p.lag_decrees,
        lag_ms: p.lag_ms,
        phase: p.phase.clone(),
        last_error: (!p.last_error.is_empty()).then(|| p.last_error.clone()),
        resyncs: p.resyncs,
        watermark_us: p.watermark_us,
    }
}

pub fn view_to_wire(v: DupView) -> v1::DupView {
    let partitions = v
        .partitions
        .iter()
        .map(|p| v1::DupPartitionView {
            partition: p.partition,
            has_confirmed: p.confirmed.is_some(),
            confirmed: p.confirmed.unwrap_or(0),
            report: p.report.as_ref().map(|r| v1::DupProgress {
                gpid: Some(tandem_core::Gpid::new(v.info.table_id, p.partition).into()),
                dup_id: v.info.id,
                confirmed: r.confirmed,
                lag_decrees: r.lag_decrees,
                lag_ms: r.lag_ms,
                phase: r.phase.clone(),
                last_error: r.last_error.clone().unwrap_or_default(),
                resyncs: r.resyncs,
                watermark_us: r.watermark_us,
            }),
        })
        .collect();
    let confirmed = v.partitions.iter().filter_map(|p| Some(v1::DupPartitionConfirmed { partition: p.partition, confirmed: p.confirmed? })).collect();
    v1::DupView { dup: Some(dup_to_wire(&v.info, confirmed)), table: v.table, partitions }
}
