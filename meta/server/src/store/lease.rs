//! The leader lease row: one compare-and-set statement claims or renews it (judged by the
//! database's clock); a clean stop releases it.

use super::*;

impl SqlStore {

    /// One compare-and-set statement on the lease row: takes it when it is free, expired, or
    /// held by a process at the same `address` (a meta server restarted in place: the previous
    /// process is gone, since it held the port), and otherwise leaves it. The epoch stays when
    /// `holder` (unique per process) renews, and grows on every other takeover. Expiry is
    /// judged by the database's clock.
    pub async fn claim_lease(&self, holder: &str, address: &str, ttl_ms: u64) -> Result<Claim> {
        let ttl = to_i64(ttl_ms, "lease ttl")?;
        let now = match &self.pool {
            Pool::Postgres(_) => POSTGRES_NOW_MS,
            Pool::Sqlite(_) => SQLITE_NOW_MS,
        };
        let claim = format!(
            "INSERT INTO meta_lease (singleton, holder, address, epoch, expires_ms) \
             VALUES (1, $1, $2, 1, {now} + $3) \
             ON CONFLICT (singleton) DO UPDATE SET \
                 epoch = CASE WHEN meta_lease.holder = excluded.holder \
                              THEN meta_lease.epoch ELSE meta_lease.epoch + 1 END, \
                 holder = excluded.holder, address = excluded.address, \
                 expires_ms = excluded.expires_ms \
             WHERE meta_lease.address = excluded.address OR meta_lease.expires_ms < {now} \
             RETURNING epoch"
        );
        let won: Option<(i64,)> = match &self.pool {
            Pool::Postgres(pool) => {
                sqlx::query_as(&claim).bind(holder).bind(address).bind(ttl).fetch_optional(pool).await?
            }
            Pool::Sqlite(pool) => {
                sqlx::query_as(&claim).bind(holder).bind(address).bind(ttl).fetch_optional(pool).await?
            }
        };
        if let Some((epoch,)) = won {
            return Ok(Claim::Won { epoch: to_u64(epoch, "meta_lease.epoch")? });
        }
        let select = "SELECT holder, address, epoch FROM meta_lease WHERE singleton = 1";
        let row: Option<(String, String, i64)> = match &self.pool {
            Pool::Postgres(pool) => sqlx::query_as(select).fetch_optional(pool).await?,
            Pool::Sqlite(pool) => sqlx::query_as(select).fetch_optional(pool).await?,
        };
        match row {
            Some((holder, address, epoch)) => Ok(Claim::Held { holder, address, epoch: to_u64(epoch, "meta_lease.epoch")? }),
            None => Err(StoreError::Corrupt("the lease claim neither won nor found a lease row".into())),
        }
    }

    /// Gives the lease up at once (expires it) if `holder` still has it, so a standby can take
    /// over without waiting out the TTL. Used on a clean shutdown.
    pub async fn release_lease(&self, holder: &str) -> Result<()> {
        let q = "UPDATE meta_lease SET expires_ms = 0 WHERE singleton = 1 AND holder = $1";
        match &self.pool {
            Pool::Postgres(pool) => {
                sqlx::query(q).bind(holder).execute(pool).await?;
            }
            Pool::Sqlite(pool) => {
                sqlx::query(q).bind(holder).execute(pool).await?;
            }
        }
        Ok(())
    }
}
