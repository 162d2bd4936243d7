//! Sites and duplications (docs/duplication.md): the other sites, the duplications of tables to
//! them, and the confirmed decree of each duplicated partition, only ever raised.

use super::*;
use tandem_meta_core::duplication::{DupInfo, DupStatus, Site};
use tandem_dup_core::FailMode;

/// A `duplications` row: id, table_id, remote_site, status, fail_mode, sync_existing, created_ms.
pub(super) type DupRow = (i64, i64, String, String, String, i64, i64);

pub(super) fn site_from_row((name, metas): (String, String)) -> Site {
    Site { name, metas: metas.split(',').filter(|m| !m.is_empty()).map(str::to_string).collect() }
}

pub(super) fn dup_from_row(row: DupRow) -> Result<DupInfo> {
    let (id, table_id, remote_site, status, fail_mode, sync_existing, created_ms) = row;
    Ok(DupInfo {
        id: to_u32(id, "duplications.id")?,
        table_id: to_u32(table_id, "duplications.table_id")?,
        remote_site,
        status: DupStatus::from_name(&status).ok_or_else(|| StoreError::Corrupt(format!("duplication {id} has status {status:?}")))?,
        fail_mode: FailMode::from_name(&fail_mode).ok_or_else(|| StoreError::Corrupt(format!("duplication {id} has fail mode {fail_mode:?}")))?,
        sync_existing: sync_existing != 0,
        created_ms: to_u64(created_ms, "duplications.created_ms")?,
    })
}

impl SqlStore {
    pub async fn add_site(&self, fence: &Fence, site: &Site) -> Result<()> {
        write_transaction!(self, fence, tx => {
            let exists: Option<(String,)> = sqlx::query_as("SELECT name FROM sites WHERE name = $1").bind(&site.name).fetch_optional(&mut *tx).await?;
            if exists.is_some() {
                return Err(StoreError::SiteExists { name: site.name.clone() });
            }
            sqlx::query("INSERT INTO sites (name, metas) VALUES ($1, $2)").bind(&site.name).bind(site.metas.join(",")).execute(&mut *tx).await?;
        });
        tracing::info!(site = %site.name, metas = ?site.metas, "site added");
        Ok(())
    }

    /// Refused while a duplication that is not removed ships to the site.
    pub async fn remove_site(&self, fence: &Fence, name: &str) -> Result<()> {
        write_transaction!(self, fence, tx => {
            let used: Option<(i64,)> = sqlx::query_as("SELECT id FROM duplications WHERE remote_site = $1 AND status <> 'removed'")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some((dup_id,)) = used {
                return Err(StoreError::SiteInUse { name: name.to_string(), dup_id });
            }
            let deleted = sqlx::query("DELETE FROM sites WHERE name = $1").bind(name).execute(&mut *tx).await?.rows_affected();
            if deleted == 0 {
                return Err(StoreError::SiteNotFound { name: name.to_string() });
            }
        });
        tracing::info!(site = name, "site removed");
        Ok(())
    }

    /// A new duplication, and the confirmed decree `start` gives its partitions, at once.
    #[allow(clippy::too_many_arguments)]
    pub async fn add_duplication(
        &self,
        fence: &Fence,
        table_id: u32,
        remote_site: &str,
        fail_mode: FailMode,
        sync_existing: bool,
        at_ms: u64,
        start: &[(u32, Decree)],
    ) -> Result<DupInfo> {
        let at = to_i64(at_ms, "at_ms")?;
        let start = start.iter().map(|&(p, d)| Ok((i64::from(p), to_i64(d, "start decree")?))).collect::<Result<Vec<_>>>()?;
        let id = write_transaction!(self, fence, tx => {
            let (_name, status) = select_name_status!(tx, table_id);
            if status != "available" {
                return Err(StoreError::TableNotFound { id: table_id });
            }
            let site: Option<(String,)> = sqlx::query_as("SELECT name FROM sites WHERE name = $1").bind(remote_site).fetch_optional(&mut *tx).await?;
            if site.is_none() {
                return Err(StoreError::SiteNotFound { name: remote_site.to_string() });
            }
            let existing: Option<(i64,)> = sqlx::query_as(
                "SELECT id FROM duplications WHERE table_id = $1 AND remote_site = $2 AND status <> 'removed'",
            )
            .bind(i64::from(table_id))
            .bind(remote_site)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((id,)) = existing {
                return Err(StoreError::DupExists { id, table_id, site: remote_site.to_string() });
            }
            let (max_id,): (i64,) = sqlx::query_as("SELECT COALESCE(MAX(id), 0) FROM duplications").fetch_one(&mut *tx).await?;
            let id = max_id + 1;
            sqlx::query(
                "INSERT INTO duplications (id, table_id, remote_site, status, fail_mode, sync_existing, created_ms) \
                 VALUES ($1, $2, $3, 'start', $4, $5, $6)",
            )
            .bind(id)
            .bind(i64::from(table_id))
            .bind(remote_site)
            .bind(fail_mode.name())
            .bind(i64::from(sync_existing))
            .bind(at)
            .execute(&mut *tx)
            .await?;
            for (partition, decree) in &start {
                sqlx::query("INSERT INTO dup_progress (dup_id, partition_index, confirmed) VALUES ($1, $2, $3)")
                    .bind(id)
                    .bind(partition)
                    .bind(decree)
                    .execute(&mut *tx)
                    .await?;
            }
            id
        });
        let dup = DupInfo {
            id: to_u32(id, "duplications.id")?,
            table_id,
            remote_site: remote_site.to_string(),
            status: DupStatus::Start,
            fail_mode,
            sync_existing,
            created_ms: at_ms,
        };
        tracing::info!(dup = dup.id, table_id, site = remote_site, "duplication added");
        Ok(dup)
    }

    pub async fn set_dup_status(&self, fence: &Fence, dup_id: u32, status: DupStatus) -> Result<()> {
        write_transaction!(self, fence, tx => {
            let row: Option<(String,)> = sqlx::query_as("SELECT status FROM duplications WHERE id = $1").bind(i64::from(dup_id)).fetch_optional(&mut *tx).await?;
            match row {
                None => return Err(StoreError::DupNotFound { id: dup_id }),
                Some((s,)) if s == "removed" && status != DupStatus::Removed => return Err(StoreError::DupRemoved { id: dup_id }),
                Some(_) => {}
            }
            sqlx::query("UPDATE duplications SET status = $2 WHERE id = $1").bind(i64::from(dup_id)).bind(status.name()).execute(&mut *tx).await?;
        });
        tracing::info!(dup = dup_id, status = status.name(), "duplication status changed");
        Ok(())
    }

    /// Raises each `(dup id, partition, decree)`; a lower decree than the stored one is ignored.
    pub async fn save_dup_progress(&self, fence: &Fence, confirmed: &[(u32, u32, Decree)]) -> Result<()> {
        let rows = confirmed.iter().map(|&(d, p, c)| Ok((i64::from(d), i64::from(p), to_i64(c, "confirmed decree")?))).collect::<Result<Vec<_>>>()?;
        write_transaction!(self, fence, tx => {
            for (dup_id, partition, decree) in &rows {
                sqlx::query(
                    "INSERT INTO dup_progress (dup_id, partition_index, confirmed) VALUES ($1, $2, $3) \
                     ON CONFLICT (dup_id, partition_index) DO UPDATE SET confirmed = \
                     CASE WHEN excluded.confirmed > dup_progress.confirmed THEN excluded.confirmed ELSE dup_progress.confirmed END",
                )
                .bind(dup_id)
                .bind(partition)
                .bind(decree)
                .execute(&mut *tx)
                .await?;
            }
        });
        Ok(())
    }
}
