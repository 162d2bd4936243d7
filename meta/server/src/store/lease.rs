//! The leader lease row: one compare-and-set statement claims or renews it (judged by the
//! database's clock); a clean stop releases it. On PostgreSQL each claim also runs on a session
//! of its own that holds a session-level advisory lock while this process leads, so a standby
//! learns at once that a leader's process is gone (docs/meta.md, "Taking over from a crashed
//! leader").

use super::*;
use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// The advisory lock's first key ("TAND"); the second is `hashtext(current_schema())`, so
/// deployments sharing one database in different schemas do not share a lock.
const LEADER_LOCK_CLASS: i32 = 0x5441_4e44;

/// The lease claim. `$4`: the caller holds the advisory lock. `started`: when the database
/// started, in ms (a session that ended in its restart says nothing about the holder).
fn claim_statement(now: &str, started: &str) -> String {
    format!(
        "INSERT INTO meta_lease (singleton, holder, address, epoch, expires_ms, locked, renewed_ms, predecessor_ms) \
         VALUES (1, $1, $2, 1, {now} + $3, $4, {now}, 0) \
         ON CONFLICT (singleton) DO UPDATE SET \
             epoch = CASE WHEN meta_lease.holder = excluded.holder \
                          THEN meta_lease.epoch ELSE meta_lease.epoch + 1 END, \
             predecessor_ms = CASE WHEN meta_lease.holder = excluded.holder \
                                     OR meta_lease.address = excluded.address \
                                     OR meta_lease.expires_ms < {now} \
                                   THEN 0 ELSE meta_lease.expires_ms - {now} END, \
             holder = excluded.holder, address = excluded.address, \
             expires_ms = excluded.expires_ms, locked = excluded.locked, renewed_ms = excluded.renewed_ms \
         WHERE meta_lease.address = excluded.address OR meta_lease.expires_ms < {now} \
            OR (excluded.locked AND meta_lease.locked AND meta_lease.renewed_ms > {started}) \
         RETURNING epoch, predecessor_ms"
    )
}

const POSTGRES_STARTED_MS: &str = "CAST(EXTRACT(EPOCH FROM pg_postmaster_start_time()) * 1000 AS BIGINT)";
const SELECT_LEASE: &str = "SELECT holder, address, epoch FROM meta_lease WHERE singleton = 1";

fn claim_of(won: Option<(i64, i64)>, row: Option<(String, String, i64)>) -> Result<Claim> {
    if let Some((epoch, predecessor_ms)) = won {
        let epoch = to_u64(epoch, "meta_lease.epoch")?;
        return Ok(match to_u64(predecessor_ms, "meta_lease.predecessor_ms")? {
            0 => Claim::Won { epoch },
            predecessor_ms => Claim::WonEarly { epoch, predecessor_ms },
        });
    }
    match row {
        Some((holder, address, epoch)) => Ok(Claim::Held { holder, address, epoch: to_u64(epoch, "meta_lease.epoch")? }),
        None => Err(StoreError::Corrupt("the lease claim neither won nor found a lease row".into())),
    }
}

/// The connection whose session holds the leader's advisory lock (PostgreSQL).
pub(super) struct LockSession {
    conn: PgConnection,
    held: bool,
}

impl LockSession {
    /// A claim round. A leader takes the lock if it is free and claims with it. A standby tries
    /// the lock only when the row says its holder held it — so it never takes it from a leader
    /// that is about to — and if it gets it, the holder's session has ended: it claims with the
    /// lock (an early takeover) and gives the lock back unless that won.
    async fn round(&mut self, holder: &str, address: &str, ttl: i64) -> Result<Claim> {
        if self.held {
            let (claim, _) = self.claim(holder, address, ttl).await?;
            if matches!(claim, Claim::Held { .. }) {
                self.unlock().await?;
            }
            return Ok(claim);
        }
        let (claim, row_locked) = self.claim(holder, address, ttl).await?;
        let won = !matches!(claim, Claim::Held { .. });
        if !(won || row_locked) || !self.try_lock().await? {
            return Ok(claim);
        }
        self.held = true;
        let (again, _) = self.claim(holder, address, ttl).await?;
        let lost = matches!(again, Claim::Held { .. });
        if won && lost {
            return Err(StoreError::Corrupt("the lease was lost between two claims of one round".into()));
        }
        if lost {
            self.unlock().await?;
        }
        // Leading: the row now says this process holds the lock (a renewal; the first claim
        // says how it won).
        Ok(if won { claim } else { again })
    }

    async fn try_lock(&mut self) -> Result<bool> {
        let (got,): (bool,) =
            sqlx::query_as("SELECT pg_try_advisory_lock($1, hashtext(current_schema()))").bind(LEADER_LOCK_CLASS).fetch_one(&mut self.conn).await?;
        Ok(got)
    }

    async fn unlock(&mut self) -> Result<()> {
        sqlx::query("SELECT pg_advisory_unlock($1, hashtext(current_schema()))").bind(LEADER_LOCK_CLASS).execute(&mut self.conn).await?;
        self.held = false;
        Ok(())
    }

    /// The claim, on this session (if it succeeds, the session and its lock were alive), and
    /// whether the row's holder said it held the lock when the claim did not win.
    async fn claim(&mut self, holder: &str, address: &str, ttl: i64) -> Result<(Claim, bool)> {
        let claim = claim_statement(POSTGRES_NOW_MS, POSTGRES_STARTED_MS);
        let won: Option<(i64, i64)> =
            sqlx::query_as(&claim).bind(holder).bind(address).bind(ttl).bind(self.held).fetch_optional(&mut self.conn).await?;
        if won.is_some() {
            return Ok((claim_of(won, None)?, false));
        }
        let row: Option<(String, String, i64, bool)> =
            sqlx::query_as("SELECT holder, address, epoch, locked FROM meta_lease WHERE singleton = 1").fetch_optional(&mut self.conn).await?;
        let locked = row.as_ref().is_some_and(|r| r.3);
        Ok((claim_of(None, row.map(|(h, a, e, _)| (h, a, e)))?, locked))
    }
}

impl SqlStore {

    /// One compare-and-set statement on the lease row: takes it when it is free, expired, or
    /// held by a process at the same `address` (a meta server restarted in place: the previous
    /// process is gone, since it held the port), and otherwise leaves it. The epoch stays when
    /// `holder` (unique per process) renews, and grows on every other takeover. Expiry is
    /// judged by the database's clock. Claims without the advisory lock (see `claim_round`).
    pub async fn claim_lease(&self, holder: &str, address: &str, ttl_ms: u64) -> Result<Claim> {
        let ttl = to_i64(ttl_ms, "lease ttl")?;
        match &self.pool {
            Pool::Postgres(pool) => {
                let claim = claim_statement(POSTGRES_NOW_MS, POSTGRES_STARTED_MS);
                let won = sqlx::query_as(&claim).bind(holder).bind(address).bind(ttl).bind(false).fetch_optional(pool).await?;
                let row = if won.is_none() { sqlx::query_as(SELECT_LEASE).fetch_optional(pool).await? } else { None };
                claim_of(won, row)
            }
            Pool::Sqlite(pool) => {
                let claim = claim_statement(SQLITE_NOW_MS, "0");
                let won = sqlx::query_as(&claim).bind(holder).bind(address).bind(ttl).bind(false).fetch_optional(pool).await?;
                let row = if won.is_none() { sqlx::query_as(SELECT_LEASE).fetch_optional(pool).await? } else { None };
                claim_of(won, row)
            }
        }
    }

    /// One round of the claim loop. On PostgreSQL the claim runs on a session of its own that
    /// takes a session-level advisory lock when it is free and keeps it while this process
    /// leads. The database releases the lock when that session ends — at once when the process
    /// dies and its connection closes — so a standby that gets the lock while the row says its
    /// holder had it takes the row early (`Claim::WonEarly`), unless the database restarted
    /// since that holder's last claim. If the process is alive after all (its session was
    /// killed, or timed out behind a network fault), it loses the row at its next claim, and
    /// until then it answered beacons only within its own lease, which the new leader's failure
    /// detector waits out (`tandem_meta_core::leadership`). SQLite (one meta server) claims
    /// without a lock.
    pub async fn claim_round(&self, holder: &str, address: &str, ttl_ms: u64) -> Result<Claim> {
        let Pool::Postgres(pool) = &self.pool else {
            // A renewal on a full disk gives up the reserve rather than the lease.
            return match self.claim_lease(holder, address, ttl_ms).await {
                Err(e) if self.release_reserve(&e) => self.claim_lease(holder, address, ttl_ms).await,
                claim => claim,
            };
        };
        let ttl = to_i64(ttl_ms, "lease ttl")?;
        let mut slot = self.lock_session.lock().await;
        // Taken out while in use: if this future is dropped mid-call (the caller's timeout), the
        // connection closes with it, and the lock with it.
        let session = match slot.take() {
            Some(session) => Some(session),
            None => match PgConnection::connect_with(&pool.connect_options()).await {
                Ok(conn) => Some(LockSession { conn, held: false }),
                Err(e) => {
                    tracing::debug!("no session for the meta lease's lock: {e}");
                    None
                }
            },
        };
        if let Some(mut session) = session {
            match session.round(holder, address, ttl).await {
                Ok(claim) => {
                    *slot = Some(session);
                    return Ok(claim);
                }
                Err(e) => tracing::warn!("the meta lease's lock session failed ({e}); claiming without the lock"),
            }
        }
        self.claim_lease(holder, address, ttl_ms).await
    }

    /// Gives the lease up at once (expires it) if `holder` still has it, so a standby can take
    /// over without waiting out the TTL, and ends the lock session. Used on a clean shutdown.
    pub async fn release_lease(&self, holder: &str) -> Result<()> {
        self.lock_session.lock().await.take();
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
