//! Backup records (docs/backup.md): one row per backup, written before its first upload; only
//! `complete` makes a backup one. State changes follow `BackupState::may_become` and are checked
//! inside the write transaction, so a late write of a deposed leader (fenced anyway) or a
//! repeated one cannot move a record backwards.

use super::*;
use tandem_backup_core::{BackupId, BackupState};
use tandem_meta_core::backup::{BackupInfo, RestoreInfo, RestoreState};

/// A `backups` row, in column order.
pub(super) type BackupRow = (i64, i64, String, i64, String, String, i64, i64, String, i64, i64, String, String);

pub(super) const BACKUP_COLUMNS: &str =
    "id, table_id, table_name, partition_count, target, state, started_ms, finished_ms, manifest_sha256, bytes, new_bytes, reason, who";

pub(super) fn backup_from_row(row: BackupRow) -> Result<BackupInfo> {
    let (id, table_id, table_name, partition_count, target, state, started_ms, finished_ms, manifest_sha256, bytes, new_bytes, reason, who) = row;
    Ok(BackupInfo {
        id: to_u64(id, "backups.id")?,
        table_id: to_u32(table_id, "backups.table_id")?,
        table_name,
        partition_count: to_u32(partition_count, "backups.partition_count")?,
        target,
        state: BackupState::parse(&state).ok_or_else(|| StoreError::Corrupt(format!("backup {id} has state {state:?}")))?,
        started_ms: to_u64(started_ms, "backups.started_ms")?,
        finished_ms: to_u64(finished_ms, "backups.finished_ms")?,
        manifest_sha256,
        bytes: to_u64(bytes, "backups.bytes")?,
        new_bytes: to_u64(new_bytes, "backups.new_bytes")?,
        reason,
        who,
    })
}

/// A `restores` row, in column order.
pub(super) type RestoreRow = (i64, i64, String, i64, i64, String, i64, String, String, String, i64, i64, String, String);

pub(super) const RESTORE_COLUMNS: &str = "id, table_id, table_name, backup_id, source_table_id, source_table_name, partition_count, target, manifest_sha256, \
     state, started_ms, finished_ms, reason, who";

pub(super) fn restore_from_row(row: RestoreRow) -> Result<RestoreInfo> {
    let (id, table_id, table_name, backup_id, source_table_id, source_table_name, partition_count, target, manifest_sha256, state, started_ms, finished_ms, reason, who) = row;
    Ok(RestoreInfo {
        id: to_u64(id, "restores.id")?,
        table_id: to_u32(table_id, "restores.table_id")?,
        table_name,
        backup_id: to_u64(backup_id, "restores.backup_id")?,
        source_table_id: to_u32(source_table_id, "restores.source_table_id")?,
        source_table_name,
        partition_count: to_u32(partition_count, "restores.partition_count")?,
        target,
        manifest_sha256,
        state: RestoreState::parse(&state).ok_or_else(|| StoreError::Corrupt(format!("restore {id} has state {state:?}")))?,
        started_ms: to_u64(started_ms, "restores.started_ms")?,
        finished_ms: to_u64(finished_ms, "restores.finished_ms")?,
        reason,
        who,
    })
}

/// Refuses a change of backup `id`'s record to `next` unless its stored state allows it.
macro_rules! check_backup_becomes {
    ($tx:ident, $id:expr, $next:expr) => {{
        let id: BackupId = $id;
        let next: BackupState = $next;
        let row: Option<(String,)> = sqlx::query_as("SELECT state FROM backups WHERE id = $1").bind(to_i64(id, "backup id")?).fetch_optional(&mut *$tx).await?;
        let (state,) = row.ok_or(StoreError::BackupNotFound { id })?;
        let state = BackupState::parse(&state).ok_or_else(|| StoreError::Corrupt(format!("backup {id} has state {state:?}")))?;
        if !state.may_become(next) {
            return Err(StoreError::BackupState { id, state: state.as_str(), next: next.as_str() });
        }
    }};
}

impl SqlStore {
    /// A running record with the next id never used, for table `table_id` (which must be
    /// available).
    #[allow(clippy::too_many_arguments)]
    pub async fn add_backup(&self, fence: &Fence, table_id: u32, table_name: &str, partition_count: u32, target: &str, who: &str, at_ms: u64) -> Result<BackupInfo> {
        let at = to_i64(at_ms, "at_ms")?;
        let id = write_transaction!(self, fence, tx => {
            let (_name, status) = select_name_status!(tx, table_id);
            if status != "available" {
                return Err(StoreError::TableNotFound { id: table_id });
            }
            let (max_id,): (i64,) = sqlx::query_as("SELECT COALESCE(MAX(id), 0) FROM backups").fetch_one(&mut *tx).await?;
            let id = max_id + 1;
            sqlx::query(
                "INSERT INTO backups (id, table_id, table_name, partition_count, target, state, started_ms, finished_ms, manifest_sha256, bytes, new_bytes, reason, who) \
                 VALUES ($1, $2, $3, $4, $5, 'running', $6, 0, '', 0, 0, '', $7)",
            )
            .bind(id)
            .bind(i64::from(table_id))
            .bind(table_name)
            .bind(i64::from(partition_count))
            .bind(target)
            .bind(at)
            .bind(who)
            .execute(&mut *tx)
            .await?;
            id
        });
        let backup = BackupInfo {
            id: to_u64(id, "backups.id")?,
            table_id,
            table_name: table_name.to_string(),
            partition_count,
            target: target.to_string(),
            state: BackupState::Running,
            started_ms: at_ms,
            finished_ms: 0,
            manifest_sha256: String::new(),
            bytes: 0,
            new_bytes: 0,
            reason: String::new(),
            who: who.to_string(),
        };
        tracing::info!(backup = backup.id, table_id, target, who, "backup started");
        Ok(backup)
    }

    pub async fn complete_backup(&self, fence: &Fence, id: BackupId, at_ms: u64, manifest_sha256: &str, bytes: u64, new_bytes: u64) -> Result<()> {
        let (at, b, n) = (to_i64(at_ms, "at_ms")?, to_i64(bytes, "bytes")?, to_i64(new_bytes, "new_bytes")?);
        write_transaction!(self, fence, tx => {
            check_backup_becomes!(tx, id, BackupState::Complete);
            sqlx::query("UPDATE backups SET state = 'complete', finished_ms = $2, manifest_sha256 = $3, bytes = $4, new_bytes = $5 WHERE id = $1")
                .bind(to_i64(id, "backup id")?)
                .bind(at)
                .bind(manifest_sha256)
                .bind(b)
                .bind(n)
                .execute(&mut *tx)
                .await?;
        });
        tracing::info!(backup = id, bytes, new_bytes, "backup complete");
        Ok(())
    }

    /// Every one of `ids` fails, or none does.
    pub async fn fail_backups(&self, fence: &Fence, ids: &[BackupId], at_ms: u64, reason: &str) -> Result<()> {
        let at = to_i64(at_ms, "at_ms")?;
        write_transaction!(self, fence, tx => {
            for &id in ids {
                check_backup_becomes!(tx, id, BackupState::Failed);
                sqlx::query("UPDATE backups SET state = 'failed', finished_ms = $2, reason = $3 WHERE id = $1")
                    .bind(to_i64(id, "backup id")?)
                    .bind(at)
                    .bind(reason)
                    .execute(&mut *tx)
                    .await?;
            }
        });
        tracing::info!(backups = ?ids, reason, "backup failed");
        Ok(())
    }

    pub async fn delete_backup(&self, fence: &Fence, id: BackupId, reason: &str) -> Result<()> {
        write_transaction!(self, fence, tx => {
            check_backup_becomes!(tx, id, BackupState::Deleted);
            sqlx::query("UPDATE backups SET state = 'deleted', reason = $2 WHERE id = $1").bind(to_i64(id, "backup id")?).bind(reason).execute(&mut *tx).await?;
        });
        tracing::info!(backup = id, reason, "backup deleted");
        Ok(())
    }

    /// Running → `state` (complete or failed).
    pub async fn finish_restore(&self, fence: &Fence, id: u64, state: RestoreState, at_ms: u64, reason: &str) -> Result<()> {
        let at = to_i64(at_ms, "at_ms")?;
        write_transaction!(self, fence, tx => {
            let row: Option<(String,)> = sqlx::query_as("SELECT state FROM restores WHERE id = $1").bind(to_i64(id, "restore id")?).fetch_optional(&mut *tx).await?;
            let (stored,) = row.ok_or(StoreError::RestoreNotFound { id })?;
            if stored != "running" || state == RestoreState::Running {
                return Err(StoreError::RestoreState { id, state: stored, next: state.as_str() });
            }
            sqlx::query("UPDATE restores SET state = $2, finished_ms = $3, reason = $4 WHERE id = $1")
                .bind(to_i64(id, "restore id")?)
                .bind(state.as_str())
                .bind(at)
                .bind(reason)
                .execute(&mut *tx)
                .await?;
        });
        tracing::info!(restore = id, state = state.as_str(), reason, "restore finished");
        Ok(())
    }
}
