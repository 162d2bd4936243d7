//! Redundancy policies: replaced with an entry in their audit history, and the history read back.

use super::*;

impl SqlStore {

    /// Replaces table `id`'s policy (replica count included) and records who changed it from
    /// `old` to `new`, in one transaction.
    pub async fn set_policy(&self, fence: &Fence, id: u32, old: &Policy, new: &Policy, who: &str, at_ms: u64) -> Result<()> {
        let at = to_i64(at_ms, "at_ms")?;
        write_transaction!(self, fence, tx => {
            let (_name, _status) = select_name_status!(tx, id);
            sqlx::query("UPDATE tables SET replica_count = $2 WHERE id = $1")
                .bind(i64::from(id))
                .bind(i64::from(new.replicas))
                .execute(&mut *tx)
                .await?;
            write_policy!(tx, id, Some(old), new, who, at);
            if let Some(site) = tandem_meta_core::store::policy_dup_removed(old, new) {
                sqlx::query("UPDATE duplications SET status = 'removed' WHERE table_id = $1 AND remote_site = $2 AND status <> 'removed'")
                    .bind(i64::from(id))
                    .bind(site)
                    .execute(&mut *tx)
                    .await?;
            }
        });
        tracing::info!(id, who, ?old, ?new, "policy changed");
        Ok(())
    }

    /// Table `id`'s policy history, oldest first (kept after the table is purged).
    pub async fn policy_history(&self, id: u32) -> Result<Vec<PolicyHistoryEntry>> {
        let rows: Vec<(i64, String, Option<String>, String)> = read_transaction!(self, tx => {
            sqlx::query_as(
                "SELECT at_ms, who, old_policy, new_policy FROM policy_history \
                 WHERE table_id = $1 ORDER BY id",
            )
            .bind(i64::from(id))
            .fetch_all(&mut *tx)
            .await?
        });
        let parse = |text: &str| {
            serde_json::from_str::<Policy>(text)
                .map_err(|e| StoreError::Corrupt(format!("policy history of table {id} holds an unreadable policy ({e}): {text}")))
        };
        rows.into_iter()
            .map(|(at_ms, who, old, new)| {
                Ok(PolicyHistoryEntry {
                    at_ms: to_u64(at_ms, "policy_history.at_ms")?,
                    who,
                    old: old.as_deref().map(parse).transpose()?,
                    new: parse(&new)?,
                })
            })
            .collect()
    }
}
