//! Tables, their partitions and the registered replica servers: the whole store loaded at
//! once, and the writes that create, drop, recall and purge tables and register servers.

use super::*;

impl SqlStore {

    /// Everything persisted: all tables (dropped ones included) ordered by id, their partitions
    /// ordered by gpid, and the nodes ordered by address — read from one snapshot.
    pub async fn load(&self) -> Result<MetaSnapshot> {
        let (table_rows, partition_rows, node_rows, policy_rows, site_rows, dup_rows, progress_rows, backup_rows) = read_transaction!(self, tx => {
            let tables: Vec<TableRow> = sqlx::query_as(
                "SELECT id, name, partition_count, replica_count, status, drop_time_ms, \
                 created_ms, owner FROM tables ORDER BY id",
            )
                .fetch_all(&mut *tx)
                .await?;
            let partitions: Vec<PartitionRow> = sqlx::query_as(
                "SELECT table_id, partition_index, ballot, primary_node, secondaries, learners, \
                 last_drops FROM partitions ORDER BY table_id, partition_index",
            )
            .fetch_all(&mut *tx)
            .await?;
            let nodes: Vec<(String, i64)> =
                sqlx::query_as("SELECT address, first_seen_ms FROM nodes ORDER BY address")
                    .fetch_all(&mut *tx)
                    .await?;
            let policies: Vec<PolicyRow> = sqlx::query_as(
                "SELECT table_id, duplication, backup_every_ms, backup_keep, backup_target, \
                 tombstone_retention_ms, backup_at_minute, backup_at_zone FROM policies",
            )
            .fetch_all(&mut *tx)
            .await?;
            let sites: Vec<(String, String)> = sqlx::query_as("SELECT name, metas FROM sites ORDER BY name").fetch_all(&mut *tx).await?;
            let dups: Vec<duplications::DupRow> = sqlx::query_as(
                "SELECT id, table_id, remote_site, status, fail_mode, sync_existing, created_ms FROM duplications ORDER BY id",
            )
            .fetch_all(&mut *tx)
            .await?;
            let progress: Vec<(i64, i64, i64)> =
                sqlx::query_as("SELECT dup_id, partition_index, confirmed FROM dup_progress ORDER BY dup_id, partition_index")
                    .fetch_all(&mut *tx)
                    .await?;
            let backups: Vec<backups::BackupRow> =
                sqlx::query_as(&format!("SELECT {} FROM backups ORDER BY id", backups::BACKUP_COLUMNS)).fetch_all(&mut *tx).await?;
            let restores: Vec<backups::RestoreRow> =
                sqlx::query_as(&format!("SELECT {} FROM restores ORDER BY id", backups::RESTORE_COLUMNS)).fetch_all(&mut *tx).await?;
            (tables, partitions, nodes, policies, sites, dups, progress, (backups, restores))
        });
        let (backup_rows, restore_rows) = backup_rows;
        let mut policies = std::collections::HashMap::new();
        for row in policy_rows {
            let table_id = to_u32(row.0, "policies.table_id")?;
            policies.insert(table_id, row);
        }
        let tables = table_rows
            .into_iter()
            .map(|row| {
                let mut table = table_from_row(row)?;
                if let Some(row) = policies.remove(&table.id) {
                    table.policy = policy_from_row(table.replica_count, row)?;
                }
                Ok(table)
            })
            .collect::<Result<Vec<_>>>()?;
        let partitions = partition_rows
            .into_iter()
            .map(partition_from_row)
            .collect::<Result<Vec<_>>>()?;
        let nodes = node_rows
            .into_iter()
            .map(|(address, first_seen_ms)| {
                Ok((address, to_u64(first_seen_ms, "nodes.first_seen_ms")?))
            })
            .collect::<Result<Vec<_>>>()?;
        check_partitions_complete(&tables, &partitions)?;
        let dups = dup_rows.into_iter().map(duplications::dup_from_row).collect::<Result<Vec<_>>>()?;
        let dup_confirmed = progress_rows
            .into_iter()
            .map(|(d, p, c)| Ok((to_u32(d, "dup_progress.dup_id")?, to_u32(p, "dup_progress.partition_index")?, to_u64(c, "dup_progress.confirmed")?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(MetaSnapshot {
            tables,
            partitions,
            nodes,
            sites: site_rows.into_iter().map(duplications::site_from_row).collect(),
            dups,
            dup_confirmed,
            backups: backup_rows.into_iter().map(backups::backup_from_row).collect::<Result<Vec<_>>>()?,
            restores: restore_rows.into_iter().map(backups::restore_from_row).collect::<Result<Vec<_>>>()?,
        })
    }

    /// Creates an available table with the next id never used before (1 for the first) and its
    /// `partition_count` partitions at ballot 0 with no members, in one transaction.
    /// The table is created with `policy` (its replica count is `policy.replicas`), recorded in
    /// the policy history as set by `who`.
    pub async fn create_table(&self, fence: &Fence,
        name: &str,
        partition_count: u32,
        policy: &Policy,
        owner: &str,
        who: &str,
        created_ms: u64,
    ) -> Result<TableInfo> {
        self.create_table_restoring(fence, name, partition_count, policy, owner, who, created_ms, None).await.map(|(table, _)| table)
    }

    /// `create_table`, and with `backup` a running restore of that complete backup into the
    /// new table, in the same transaction (a table never exists without the restore it was
    /// made for).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn create_table_restoring(&self, fence: &Fence,
        name: &str,
        partition_count: u32,
        policy: &Policy,
        owner: &str,
        who: &str,
        created_ms: u64,
        backup: Option<&tandem_meta_core::backup::BackupInfo>,
    ) -> Result<(TableInfo, Option<tandem_meta_core::backup::RestoreInfo>)> {
        let replica_count = policy.replicas;
        let invalid = |reason: &str| StoreError::InvalidTable {
            name: name.to_string(),
            reason: reason.to_string(),
        };
        if name.is_empty() {
            return Err(invalid("the name is empty"));
        }
        if !partition_count.is_power_of_two() {
            return Err(invalid(&format!(
                "partition_count {partition_count} is not a power of two (1, 2, 4, 8, …)"
            )));
        }
        if replica_count == 0 {
            return Err(invalid("replica_count must be at least 1"));
        }
        let created_ms_column = to_i64(created_ms, "created_ms")?;
        let id = write_transaction!(self, fence, tx => {
            let existing: Option<(i64,)> =
                sqlx::query_as("SELECT id FROM tables WHERE name = $1 AND status = 'available'")
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some((existing_id,)) = existing {
                return Err(StoreError::AlreadyExists {
                    name: name.to_string(),
                    id: to_u32(existing_id, "tables.id")?,
                });
            }
            let (max_id,): (i64,) = sqlx::query_as("SELECT COALESCE(MAX(id), 0) FROM tables")
                .fetch_one(&mut *tx)
                .await?;
            // Ids of purged tables are never handed out again (see migration 0002).
            let (high_water,): (i64,) = sqlx::query_as("SELECT max_id FROM table_id_high_water WHERE singleton = 1")
                .fetch_one(&mut *tx)
                .await?;
            let id = u32::try_from(max_id.max(high_water) + 1).map_err(|_| StoreError::TableIdsExhausted)?;
            sqlx::query("UPDATE table_id_high_water SET max_id = $1 WHERE singleton = 1")
                .bind(i64::from(id))
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO tables (id, name, partition_count, replica_count, status, \
                 drop_time_ms, created_ms, owner) VALUES ($1, $2, $3, $4, 'available', NULL, $5, $6)",
            )
            .bind(i64::from(id))
            .bind(name)
            .bind(i64::from(partition_count))
            .bind(i64::from(replica_count))
            .bind(created_ms_column)
            .bind(owner)
            .execute(&mut *tx)
            .await?;
            // One statement for any partition count; recursive CTEs read the same in both dialects.
            let inserted = sqlx::query(
                "WITH RECURSIVE seq (partition_index) AS ( \
                     SELECT CAST(0 AS BIGINT) \
                     UNION ALL \
                     SELECT partition_index + 1 FROM seq WHERE partition_index + 1 < $2 \
                 ) \
                 INSERT INTO partitions (table_id, partition_index, ballot, primary_node, \
                     secondaries, learners, last_drops) \
                 SELECT $1, partition_index, 0, NULL, '[]', '[]', '[]' FROM seq",
            )
            .bind(i64::from(id))
            .bind(i64::from(partition_count))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            assert_eq!(
                inserted,
                u64::from(partition_count),
                "table {id}: inserted {inserted} partitions, expected {partition_count}"
            );
            write_policy!(tx, id, None, policy, who, created_ms_column);
            let restore = match backup {
                Some(b) => Some(insert_restore!(tx, id, name, b, who, created_ms)),
                None => None,
            };
            (id, restore)
        });
        let (id, restore) = id;
        tracing::info!(id, name, partition_count, replica_count, restore = ?restore.as_ref().map(|r| r.id), "table created");
        let table = TableInfo {
            id,
            name: name.to_string(),
            partition_count,
            replica_count,
            status: TableStatus::Available,
            created_ms,
            owner: owner.to_string(),
            policy: policy.clone(),
        };
        Ok((table, restore))
    }

    /// Soft-deletes an available table: it stays recallable until purged.
    pub async fn drop_table(&self, fence: &Fence, id: u32, drop_time_ms: u64) -> Result<()> {
        let drop_time = to_i64(drop_time_ms, "drop_time_ms")?;
        write_transaction!(self, fence, tx => {
            let (name, status) = select_name_status!(tx, id);
            if status != "available" {
                return Err(StoreError::AlreadyDropped { id, name });
            }
            sqlx::query("UPDATE tables SET status = 'dropped', drop_time_ms = $2 WHERE id = $1")
                .bind(i64::from(id))
                .bind(drop_time)
                .execute(&mut *tx)
                .await?;
        });
        tracing::info!(id, drop_time_ms, "table dropped");
        Ok(())
    }

    /// Makes a dropped table available again, unless an available table now has its name.
    pub async fn recall_table(&self, fence: &Fence, id: u32) -> Result<()> {
        write_transaction!(self, fence, tx => {
            let (name, status) = select_name_status!(tx, id);
            if status != "dropped" {
                return Err(StoreError::NotDropped { id, name });
            }
            let other: Option<(i64,)> =
                sqlx::query_as("SELECT id FROM tables WHERE name = $1 AND status = 'available'")
                    .bind(&name)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some((other_id,)) = other {
                return Err(StoreError::NameTaken {
                    id,
                    name,
                    other_id: to_u32(other_id, "tables.id")?,
                });
            }
            sqlx::query("UPDATE tables SET status = 'available', drop_time_ms = NULL WHERE id = $1")
                .bind(i64::from(id))
                .execute(&mut *tx)
                .await?;
        });
        tracing::info!(id, "table recalled");
        Ok(())
    }

    /// Deletes a dropped table and its partitions for good.
    pub async fn purge_table(&self, fence: &Fence, id: u32) -> Result<()> {
        write_transaction!(self, fence, tx => {
            let (name, status) = select_name_status!(tx, id);
            if status != "dropped" {
                return Err(StoreError::PurgeAvailable { id, name });
            }
            sqlx::query("DELETE FROM partitions WHERE table_id = $1")
                .bind(i64::from(id))
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE duplications SET status = 'removed' WHERE table_id = $1")
                .bind(i64::from(id))
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM tables WHERE id = $1")
                .bind(i64::from(id))
                .execute(&mut *tx)
                .await?;
        });
        tracing::info!(id, "table purged");
        Ok(())
    }

    /// Records a replica server; a node already known keeps its first `first_seen_ms`.
    pub async fn register_node(&self, fence: &Fence, address: &str, now_ms: u64) -> Result<()> {
        let now = to_i64(now_ms, "now_ms")?;
        write_transaction!(self, fence, tx => {
            sqlx::query(
                "INSERT INTO nodes (address, first_seen_ms) VALUES ($1, $2) \
                 ON CONFLICT (address) DO NOTHING",
            )
            .bind(address)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        });
        Ok(())
    }
}
