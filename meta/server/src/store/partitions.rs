//! Partition configurations: one compare-and-set on the ballot per change.

use super::*;

impl SqlStore {

    /// Compare-and-set on the ballot: writes `config` only if the stored ballot equals
    /// `expected_ballot`. Returns false when it does not (someone else changed the partition).
    /// `config.ballot` may equal `expected_ballot` (learners change without a new ballot) but
    /// never be smaller.
    pub async fn update_partition(&self, fence: &Fence,
        config: &PartitionConfig,
        expected_ballot: Ballot,
    ) -> Result<bool> {
        assert!(
            config.ballot >= expected_ballot,
            "partition {}: ballot must never go back ({} -> {})",
            config.gpid,
            expected_ballot,
            config.ballot
        );
        let gpid = config.gpid;
        let ballot = to_i64(config.ballot, "ballot")?;
        let expected = to_i64(expected_ballot, "expected ballot")?;
        let secondaries = nodes_to_json(&config.secondaries);
        let learners = nodes_to_json(&config.learners);
        let last_drops = nodes_to_json(&config.last_drops);
        let updated = write_transaction!(self, fence, tx => {
            let updated = sqlx::query(
                "UPDATE partitions SET ballot = $3, primary_node = $4, secondaries = $5, \
                 learners = $6, last_drops = $7 \
                 WHERE table_id = $1 AND partition_index = $2 AND ballot = $8",
            )
            .bind(i64::from(gpid.table_id))
            .bind(i64::from(gpid.partition))
            .bind(ballot)
            .bind(config.primary.as_deref())
            .bind(&secondaries)
            .bind(&learners)
            .bind(&last_drops)
            .bind(expected)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            assert!(updated <= 1, "partition {gpid}: updated {updated} rows");
            if updated == 0 {
                let exists: Option<(i64,)> = sqlx::query_as(
                    "SELECT ballot FROM partitions WHERE table_id = $1 AND partition_index = $2",
                )
                .bind(i64::from(gpid.table_id))
                .bind(i64::from(gpid.partition))
                .fetch_optional(&mut *tx)
                .await?;
                if exists.is_none() {
                    return Err(StoreError::PartitionNotFound { gpid });
                }
            }
            updated == 1
        });
        Ok(updated)
    }

    /// The first configurations of a new table's partitions in one transaction: all of them if
    /// every one is stored at ballot 0, else none (returns false, and the transaction is rolled
    /// back; also when one does not exist).
    pub async fn place_partitions(&self, fence: &Fence, configs: &[PartitionConfig]) -> Result<bool> {
        let rows = configs
            .iter()
            .map(|c| {
                let ballot = to_i64(c.ballot, "ballot")?;
                Ok((c, ballot, nodes_to_json(&c.secondaries), nodes_to_json(&c.learners), nodes_to_json(&c.last_drops)))
            })
            .collect::<Result<Vec<_>>>()?;
        let placed = write_transaction!(self, fence, tx => {
            for (config, ballot, secondaries, learners, last_drops) in &rows {
                let gpid = config.gpid;
                let updated = sqlx::query(
                    "UPDATE partitions SET ballot = $3, primary_node = $4, secondaries = $5, \
                     learners = $6, last_drops = $7 \
                     WHERE table_id = $1 AND partition_index = $2 AND ballot = 0",
                )
                .bind(i64::from(gpid.table_id))
                .bind(i64::from(gpid.partition))
                .bind(*ballot)
                .bind(config.primary.as_deref())
                .bind(secondaries)
                .bind(learners)
                .bind(last_drops)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if updated != 1 {
                    // Placed already, or gone: returning drops the transaction uncommitted, so
                    // nothing of it is written.
                    return Ok(false);
                }
            }
            true
        });
        Ok(placed)
    }
}
