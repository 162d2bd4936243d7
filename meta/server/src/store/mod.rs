//! The meta server's SQL store: tables, partition configurations and replica servers, kept in
//! PostgreSQL (production, several meta servers) or SQLite (embedded default, one meta).
//!
//! ```text
//!  MetaAction::Persist { epoch, write }   (the meta state machine decided it)
//!        │
//!        ▼
//!  SqlStore::apply(fence, write) ──► one write transaction ──► commit ──► MetaInput::Stored
//!                               (writers serialized: Postgres advisory lock / SQLite
//!                                BEGIN IMMEDIATE; the ballot compare-and-set is inside it)
//! ```
//!
//! Both dialects run the same runtime queries (`$N` placeholders work in both) against the same
//! logical schema, embedded from `migrations/{postgres,sqlite}` and applied at connect.
//!
//! Every write goes through [`write_transaction!`], which serializes metadata writers and is
//! fenced: it takes the lease (holder and epoch) the write was decided under and checks the lease
//! row against it inside the same transaction, before the write's own statements, so a deposed
//! leader's writes fail (`StoreError::Fenced`) — including one decided before a takeover and
//! carried out after this process led again at a newer epoch. The lease
//! row itself is claimed by one compare-and-set statement ([`SqlStore::claim_lease`]).

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tandem_core::{Ballot, Decree, Gpid, NodeAddr, PartitionConfig};
use tandem_meta_core::policy::{BackupPolicy, Policy, PolicyHistoryEntry};
use tandem_meta_core::store::{StoreDone, StoreFailure, StoreFailureKind, StoreWrite};
use tandem_meta_core::{MetaSnapshot, TableInfo, TableStatus};

/// Errors of the metadata store. Each message names the thing and, where there is one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "unsupported metadata store URL '{url}': use sqlite://PATH (e.g. sqlite:///var/lib/tandem/meta.db) \
         or postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE (postgresql:// is accepted too)"
    )]
    UnsupportedUrl { url: String },

    #[error("cannot create directory {} for the SQLite metadata store: {source}", path.display())]
    CreateDirectory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot connect to the metadata store at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },

    #[error(
        "cannot apply the schema migrations to the metadata store at {url}: {source} \
         (was the database written by a newer or modified Tandem?)"
    )]
    Migrate {
        url: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },

    #[error("table '{name}' already exists (id {id}); pick another name or drop it first")]
    AlreadyExists { name: String, id: u32 },

    #[error("table {id} does not exist")]
    TableNotFound { id: u32 },

    #[error("table {id} ('{name}') is already dropped; recall it to use it again")]
    AlreadyDropped { id: u32, name: String },

    #[error("table {id} ('{name}') is not dropped, so there is nothing to recall")]
    NotDropped { id: u32, name: String },

    #[error("table {id} ('{name}') is available; drop it before purging")]
    PurgeAvailable { id: u32, name: String },

    #[error(
        "cannot recall table {id}: its name '{name}' is now used by table {other_id}; \
         drop or purge table {other_id} first"
    )]
    NameTaken {
        id: u32,
        name: String,
        other_id: u32,
    },

    #[error("partition {gpid} does not exist")]
    PartitionNotFound { gpid: Gpid },

    #[error("invalid table '{name}': {reason}")]
    InvalidTable { name: String, reason: String },

    #[error("all 4294967295 table ids are used; purge dropped tables to free ids")]
    TableIdsExhausted,

    #[error("{what} value {value} does not fit the store's 64-bit signed integer column")]
    OutOfRange { what: &'static str, value: u64 },

    #[error("the metadata store is unreachable ({reason}); configuration changes wait until it is back")]
    Unreachable { reason: String },

    #[error(
        "fenced: this meta server led at epoch {mine}, but the lease is now held by {holder} at \
         epoch {current}; it stepped down and writes nothing more"
    )]
    Fenced {
        mine: u64,
        current: u64,
        holder: String,
    },

    #[error("corrupt metadata store: {0}")]
    Corrupt(String),

    #[error("site {name:?} already exists; remove it first to change it")]
    SiteExists { name: String },

    #[error("no site {name:?} (tandem site list shows the known ones)")]
    SiteNotFound { name: String },

    #[error("site {name:?} is used by duplication {dup_id}; remove that first")]
    SiteInUse { name: String, dup_id: i64 },

    #[error("duplication {id} already ships table {table_id} to {site:?}")]
    DupExists { id: i64, table_id: u32, site: String },

    #[error("no duplication {id}")]
    DupNotFound { id: u32 },

    #[error("duplication {id} was removed")]
    DupRemoved { id: u32 },

    #[error("no backup {id} (tandem backup list shows them)")]
    BackupNotFound { id: u64 },

    #[error("backup {id} is {state}; it cannot become {next}")]
    BackupState { id: u64, state: &'static str, next: &'static str },

    #[error("no restore {id} (tandem restore list shows them)")]
    RestoreNotFound { id: u64 },

    #[error("restore {id} is {state}; it cannot become {next}")]
    RestoreState { id: u64, state: String, next: &'static str },

    #[error("metadata store query failed: {0}")]
    Database(#[from] sqlx::Error),
}

pub type Result<T> = std::result::Result<T, StoreError>;

impl StoreError {
    /// What the meta state machine learns of a failed write.
    pub fn failure(&self) -> StoreFailure {
        let kind = match self {
            StoreError::Fenced { .. } => StoreFailureKind::Fenced,
            StoreError::Unreachable { .. } => StoreFailureKind::Unreachable,
            StoreError::AlreadyExists { .. } | StoreError::NameTaken { .. } | StoreError::SiteExists { .. } | StoreError::DupExists { .. } => {
                StoreFailureKind::AlreadyExists
            }
            StoreError::TableNotFound { .. } | StoreError::PartitionNotFound { .. } | StoreError::SiteNotFound { .. } | StoreError::DupNotFound { .. } | StoreError::BackupNotFound { .. } | StoreError::RestoreNotFound { .. } => {
                StoreFailureKind::NotFound
            }
            StoreError::InvalidTable { .. }
            | StoreError::AlreadyDropped { .. }
            | StoreError::NotDropped { .. }
            | StoreError::PurgeAvailable { .. }
            | StoreError::SiteInUse { .. }
            | StoreError::DupRemoved { .. }
            | StoreError::BackupState { .. }
            | StoreError::RestoreState { .. } => StoreFailureKind::Invalid,
            _ => StoreFailureKind::Other,
        };
        StoreFailure::new(kind, self.to_string())
    }
}

/// A store error as the meta answers it (reads outside the state machine).
pub fn meta_error(e: StoreError) -> tandem_meta_core::MetaError {
    let failure = e.failure();
    match failure.kind {
        StoreFailureKind::Unreachable => tandem_meta_core::MetaError::Busy(failure.message),
        StoreFailureKind::NotFound => tandem_meta_core::MetaError::NotFound(failure.message),
        _ => tandem_meta_core::MetaError::Internal(failure.message),
    }
}

/// SQLite's primary result code for a full disk.
const SQLITE_FULL: &str = "13";

/// How long a SQLite writer waits for another writer before failing with "database is locked".
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);
const SQLITE_CONNECTIONS_MAX: u32 = 4;
const POSTGRES_CONNECTIONS_MAX: u32 = 8;
/// Short, so that an unreachable store fails a call quickly instead of stalling the meta's
/// state lock (the data path keeps running on what the meta holds in memory).
const POOL_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);
/// Key of the Postgres transaction-scoped advisory lock that serializes metadata writers
/// (ASCII "tandemmt"). Serializing makes `max(id) + 1` and the name checks race-free, matching
/// SQLite's single writer.
const POSTGRES_WRITE_LOCK_KEY: i64 = 0x7461_6e64_656d_6d74;

static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");
static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

enum Pool {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// The leader lease this process holds, which every write transaction checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    pub holder: String,
    pub epoch: u64,
}

/// What a claim of the lease row found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The caller holds the lease (taken over at a new epoch, or renewed at its own).
    Won { epoch: u64 },
    /// The caller took the lease at a new epoch `predecessor_ms` before the previous holder's
    /// ran out, that holder's database session being gone (see `claim_round`).
    WonEarly { epoch: u64, predecessor_ms: u64 },
    /// Another holder's lease has not expired; `address` is where that meta server listens.
    Held { holder: String, address: String, epoch: u64 },
}

/// The metadata store. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct SqlStore {
    pool: Pool,
    /// After a failed connection, writes fail at once until then instead of each waiting for
    /// the pool's acquire timeout while the caller holds the meta's state lock.
    unreachable_until: std::sync::Mutex<Option<(std::time::Instant, String)>>,
    /// PostgreSQL: the connection whose session holds (or tries for) the leader's advisory lock.
    lock_session: tokio::sync::Mutex<Option<lease::LockSession>>,
    /// SQLite: a file of `STORE_RESERVE_BYTES` next to the database, given up when a write meets
    /// a full disk so that the write (a lease renewal, a failover) goes through.
    reserve: Option<PathBuf>,
}

/// Room the SQLite store keeps for itself on a disk another process fills to its last byte:
/// thousands of lease renewals and configuration changes.
const STORE_RESERVE_BYTES: usize = 8 << 20;

/// How long writes fail fast after the store was found unreachable.
const UNREACHABLE_BACKOFF: Duration = Duration::from_secs(1);

/// Runs `$body` with `$tx` bound to a write transaction and commits it if `$body` completes
/// (a `return`/`?` inside `$body` rolls back). Writers are serialized; the leader fencing check
/// goes right after the lock, before `$body`.
macro_rules! write_transaction {
    ($store:expr, $fence:expr, $tx:ident => $body:block) => {
        match &$store.pool {
            Pool::Postgres(pool) => {
                let fence: &Fence = $fence;
                $store.check_reachable()?;
                let mut $tx = pool.begin().await.map_err(|e| $store.begin_failed(e))?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(POSTGRES_WRITE_LOCK_KEY)
                    .execute(&mut *$tx)
                    .await?;
                // FOR SHARE: a takeover's UPDATE of the lease row waits for this transaction,
                // and a transaction after the takeover sees the new epoch.
                let row: Option<(String, i64)> =
                    sqlx::query_as("SELECT holder, epoch FROM meta_lease WHERE singleton = 1 FOR SHARE")
                        .fetch_optional(&mut *$tx)
                        .await?;
                check_fence(fence, row)?;
                let output = $body;
                $tx.commit().await?;
                output
            }
            Pool::Sqlite(pool) => {
                // IMMEDIATE takes the write lock up front (waiting up to the busy timeout), so a
                // transaction never fails to upgrade from reader to writer halfway through.
                let fence: &Fence = $fence;
                $store.check_reachable()?;
                let mut $tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(|e| $store.begin_failed(e))?;
                let row: Option<(String, i64)> =
                    sqlx::query_as("SELECT holder, epoch FROM meta_lease WHERE singleton = 1")
                        .fetch_optional(&mut *$tx)
                        .await?;
                check_fence(fence, row)?;
                let output = $body;
                $tx.commit().await?;
                output
            }
        }
    };
}

/// Runs `$body` with `$tx` bound to a read-only transaction that sees one consistent snapshot.
macro_rules! read_transaction {
    ($store:expr, $tx:ident => $body:block) => {
        match &$store.pool {
            Pool::Postgres(pool) => {
                let mut $tx = pool
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?;
                let output = $body;
                $tx.commit().await?;
                output
            }
            Pool::Sqlite(pool) => {
                // In WAL mode a deferred transaction reads one snapshot from its first read on.
                let mut $tx = pool.begin().await?;
                let output = $body;
                $tx.commit().await?;
                output
            }
        }
    };
}

/// `(name, status)` of table `$id` read through `$tx`, or `TableNotFound`.
macro_rules! select_name_status {
    ($tx:ident, $id:expr) => {{
        let id: u32 = $id;
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT name, status FROM tables WHERE id = $1")
                .bind(i64::from(id))
                .fetch_optional(&mut *$tx)
                .await?;
        row.ok_or(StoreError::TableNotFound { id })?
    }};
}

type TableRow = (i64, String, i64, i64, String, Option<i64>, i64, String);
type PolicyRow = (i64, Option<String>, Option<i64>, Option<i64>, Option<String>, i64, Option<i64>, Option<String>);

/// The database's clock in ms since the Unix epoch, per dialect: lease expiry is judged by it,
/// so meta servers' clocks never need to agree.
const POSTGRES_NOW_MS: &str = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)";
const SQLITE_NOW_MS: &str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";

fn check_fence(fence: &Fence, row: Option<(String, i64)>) -> Result<()> {
    match row {
        Some((holder, epoch)) if holder == fence.holder && to_u64(epoch, "meta_lease.epoch")? == fence.epoch => Ok(()),
        Some((holder, epoch)) => Err(StoreError::Fenced { mine: fence.epoch, current: to_u64(epoch, "meta_lease.epoch")?, holder }),
        None => Err(StoreError::Fenced { mine: fence.epoch, current: 0, holder: "nobody".into() }),
    }
}
type PartitionRow = (i64, i64, i64, Option<String>, String, String, String);

/// Upserts table `$id`'s `policies` row from `$new` and appends a history entry, through `$tx`.
macro_rules! write_policy {
    ($tx:ident, $id:expr, $old:expr, $new:expr, $who:expr, $at:expr) => {{
        let id: u32 = $id;
        let old: Option<&Policy> = $old;
        let new: &Policy = $new;
        let backup = new.backup.as_ref();
        let every = backup.map(|b| to_i64(b.every_ms, "backup every_ms")).transpose()?;
        let retention = to_i64(new.tombstone_retention_ms, "tombstone_retention_ms")?;
        let at = backup.and_then(|b| b.at.as_ref());
        sqlx::query(
            "INSERT INTO policies (table_id, duplication, backup_every_ms, backup_keep, \
             backup_target, tombstone_retention_ms, backup_at_minute, backup_at_zone) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (table_id) DO UPDATE SET duplication = excluded.duplication, \
             backup_every_ms = excluded.backup_every_ms, backup_keep = excluded.backup_keep, \
             backup_target = excluded.backup_target, \
             tombstone_retention_ms = excluded.tombstone_retention_ms, \
             backup_at_minute = excluded.backup_at_minute, backup_at_zone = excluded.backup_at_zone",
        )
        .bind(i64::from(id))
        .bind(new.duplication.as_deref())
        .bind(every)
        .bind(backup.map(|b| i64::from(b.keep)))
        .bind(backup.map(|b| b.target.as_str()))
        .bind(retention)
        .bind(at.map(|a| i64::from(a.minute)))
        .bind(at.map(|a| a.zone.as_str()))
        .execute(&mut *$tx)
        .await?;
        let to_json = |p: &Policy| serde_json::to_string(p).expect("a policy always serializes");
        sqlx::query(
            "INSERT INTO policy_history (table_id, at_ms, who, old_policy, new_policy) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(i64::from(id))
        .bind($at)
        .bind($who)
        .bind(old.map(to_json))
        .bind(to_json(new))
        .execute(&mut *$tx)
        .await?;
    }};
}

/// Inserts a running restore of complete backup `$backup` into new table `$id` (`$name`)
/// through `$tx`, after checking the backup's record is complete; evaluates to its RestoreInfo.
macro_rules! insert_restore {
    ($tx:ident, $id:expr, $name:expr, $backup:expr, $who:expr, $at_ms:expr) => {{
        let (table_id, name, b, who, at_ms): (u32, &str, &tandem_meta_core::backup::BackupInfo, &str, u64) = ($id, $name, $backup, $who, $at_ms);
        let row: Option<(String,)> = sqlx::query_as("SELECT state FROM backups WHERE id = $1").bind(to_i64(b.id, "backup id")?).fetch_optional(&mut *$tx).await?;
        match row {
            None => return Err(StoreError::BackupNotFound { id: b.id }),
            Some((state,)) if state != "complete" => return Err(StoreError::BackupState { id: b.id, state: "not complete", next: "restored" }),
            Some(_) => {}
        }
        let (max_id,): (i64,) = sqlx::query_as("SELECT COALESCE(MAX(id), 0) FROM restores").fetch_one(&mut *$tx).await?;
        let restore_id = max_id + 1;
        sqlx::query(
            "INSERT INTO restores (id, table_id, table_name, backup_id, source_table_id, source_table_name, partition_count, target, manifest_sha256, \
             state, started_ms, finished_ms, reason, who) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'running', $10, 0, '', $11)",
        )
        .bind(restore_id)
        .bind(i64::from(table_id))
        .bind(name)
        .bind(to_i64(b.id, "backup id")?)
        .bind(i64::from(b.table_id))
        .bind(&b.table_name)
        .bind(i64::from(b.partition_count))
        .bind(&b.target)
        .bind(&b.manifest_sha256)
        .bind(to_i64(at_ms, "at_ms")?)
        .bind(who)
        .execute(&mut *$tx)
        .await?;
        tandem_meta_core::backup::RestoreInfo {
            id: to_u64(restore_id, "restores.id")?,
            table_id,
            table_name: name.to_string(),
            backup_id: b.id,
            source_table_id: b.table_id,
            source_table_name: b.table_name.clone(),
            partition_count: b.partition_count,
            target: b.target.clone(),
            manifest_sha256: b.manifest_sha256.clone(),
            state: tandem_meta_core::backup::RestoreState::Running,
            started_ms: at_ms,
            finished_ms: 0,
            reason: String::new(),
            who: who.to_string(),
        }
    }};
}

mod backups;
mod duplications;
mod lease;
mod partitions;
mod policies;
mod tables;

impl SqlStore {
    /// Connects to `sqlite://PATH` (creating the file and its parent directories if missing) or
    /// `postgres://…` / `postgresql://…`, and applies the embedded migrations (a no-op when the
    /// schema is current).
    pub async fn connect(url: &str) -> Result<SqlStore> {
        let shown_url = redact_password(url);
        let pool = if let Some(rest) = url.strip_prefix("sqlite://") {
            let path = sqlite_path(url, rest)?;
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                tokio::fs::create_dir_all(parent).await.map_err(|source| {
                    StoreError::CreateDirectory {
                        path: parent.to_path_buf(),
                        source,
                    }
                })?;
            }
            let options = SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // FULL, not NORMAL: a committed ballot change must survive power loss.
                .synchronous(SqliteSynchronous::Full)
                .foreign_keys(true)
                .busy_timeout(SQLITE_BUSY_TIMEOUT);
            let pool = SqlitePoolOptions::new()
                .max_connections(SQLITE_CONNECTIONS_MAX)
                .acquire_timeout(POOL_ACQUIRE_TIMEOUT)
                // SQLite rolls a transaction back by itself on some errors (SQLITE_FULL): sqlx's
                // ROLLBACK then fails and the connection still counts a transaction, so its next
                // BEGIN would be a SAVEPOINT that fails. Such a connection is closed, not reused
                // (the ping first carries out the rollback queued when the transaction dropped).
                .after_release(|conn, _| {
                    Box::pin(async move {
                        sqlx::Connection::ping(conn).await?;
                        Ok(!sqlx::Connection::is_in_transaction(conn))
                    })
                })
                .connect_with(options)
                .await
                .map_err(|source| StoreError::Connect {
                    url: shown_url.clone(),
                    source,
                })?;
            SQLITE_MIGRATOR
                .run(&pool)
                .await
                .map_err(|source| StoreError::Migrate {
                    url: shown_url.clone(),
                    source,
                })?;
            Pool::Sqlite(pool)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)
                .map_err(|source| StoreError::Connect {
                    url: shown_url.clone(),
                    source,
                })?
                .application_name("tandem-meta");
            let pool = PgPoolOptions::new()
                .max_connections(POSTGRES_CONNECTIONS_MAX)
                .acquire_timeout(POOL_ACQUIRE_TIMEOUT)
                .connect_with(options)
                .await
                .map_err(|source| StoreError::Connect {
                    url: shown_url.clone(),
                    source,
                })?;
            // The migrator holds an advisory lock, so meta servers starting together are safe.
            POSTGRES_MIGRATOR
                .run(&pool)
                .await
                .map_err(|source| StoreError::Migrate {
                    url: shown_url.clone(),
                    source,
                })?;
            Pool::Postgres(pool)
        } else {
            return Err(StoreError::UnsupportedUrl { url: shown_url });
        };
        tracing::info!(url = %shown_url, "metadata store connected and migrated");
        let reserve = url.strip_prefix("sqlite://").and_then(|rest| sqlite_path(url, rest).ok()).map(|p| {
            let mut name = p.into_os_string();
            name.push(".reserve");
            PathBuf::from(name)
        });
        let store = SqlStore { pool, unreachable_until: std::sync::Mutex::new(None), lock_session: tokio::sync::Mutex::new(None), reserve };
        store.keep_reserve(local_dir(url).as_deref().and_then(tandem_runtime::disk::dir_space).map_or(u64::MAX, |s| s.free_bytes));
        Ok(store)
    }

    /// Writes the SQLite store's reserve file if it is missing and the disk has room for it
    /// several times over (`free_bytes`), so that giving it up and taking it back cannot chase
    /// each other on a disk that stays full. At start, and each tick while the meta finds the
    /// disk above its reserve.
    pub fn keep_reserve(&self, free_bytes: u64) {
        if free_bytes < 4 * STORE_RESERVE_BYTES as u64 {
            return;
        }
        let Some(path) = self.reserve.as_ref().filter(|p| !p.exists()) else { return };
        let mut partial = path.clone().into_os_string();
        partial.push(".partial");
        let written = std::fs::write(&partial, vec![0u8; STORE_RESERVE_BYTES]).and_then(|()| std::fs::rename(&partial, path));
        match written {
            Ok(()) => tracing::info!("kept {STORE_RESERVE_BYTES} bytes for the metadata store in {}", path.display()),
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                tracing::warn!("cannot write the metadata store's reserve {}: {e}", path.display());
            }
        }
    }

    /// A write failed for want of disk space: gives up the reserve file so that it can be done
    /// again. False when there is no reserve left to give (or the failure is another).
    fn release_reserve(&self, error: &StoreError) -> bool {
        let StoreError::Database(e) = error else { return false };
        let full = match e {
            sqlx::Error::Database(db) => db.code().as_deref() == Some(SQLITE_FULL),
            sqlx::Error::Io(io) => io.kind() == std::io::ErrorKind::StorageFull,
            _ => false,
        };
        let Some(path) = self.reserve.as_ref().filter(|p| full && p.exists()) else { return false };
        match std::fs::remove_file(path) {
            Ok(()) => {
                tracing::warn!("the metadata store's disk is full: gave up its {STORE_RESERVE_BYTES}-byte reserve {} to write; free space there", path.display());
                true
            }
            Err(e) => {
                tracing::warn!("cannot give up the metadata store's reserve {}: {e}", path.display());
                false
            }
        }
    }

    /// Carries out one write the meta state machine decided, fenced by `fence`; once more after
    /// giving up the reserve if the disk was full (a failed SQLite write left nothing behind).
    pub async fn apply(&self, fence: &Fence, write: &StoreWrite) -> Result<StoreDone> {
        match self.apply_once(fence, write).await {
            Err(e) if self.release_reserve(&e) => self.apply_once(fence, write).await,
            done => done,
        }
    }

    /// Fails fast while the store is known to be unreachable.
    fn check_reachable(&self) -> Result<()> {
        let mut guard = self.unreachable_until.lock().expect("reachability lock");
        match &*guard {
            Some((until, reason)) if std::time::Instant::now() < *until => Err(StoreError::Unreachable { reason: reason.clone() }),
            _ => {
                *guard = None;
                Ok(())
            }
        }
    }

    /// Classifies a failure to start a transaction: connection trouble marks the store
    /// unreachable for a moment.
    fn begin_failed(&self, error: sqlx::Error) -> StoreError {
        match error {
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => {
                let reason = error.to_string();
                *self.unreachable_until.lock().expect("reachability lock") = Some((std::time::Instant::now() + UNREACHABLE_BACKOFF, reason.clone()));
                StoreError::Unreachable { reason }
            }
            other => StoreError::Database(other),
        }
    }

    async fn apply_once(&self, fence: &Fence, write: &StoreWrite) -> Result<StoreDone> {
        Ok(match write {
            StoreWrite::RegisterNode { address, at_ms } => {
                self.register_node(fence, address, *at_ms).await?;
                StoreDone::Done
            }
            StoreWrite::UpdatePartition { config, expected_ballot } => {
                StoreDone::Compared { updated: self.update_partition(fence, config, *expected_ballot).await? }
            }
            StoreWrite::PlacePartitions { configs } => StoreDone::Compared { updated: self.place_partitions(fence, configs).await? },
            StoreWrite::CreateTable { name, partition_count, policy, owner, who, at_ms } => {
                StoreDone::Created { table: self.create_table(fence, name, *partition_count, policy, owner, who, *at_ms).await? }
            }
            StoreWrite::SetPolicy { table_id, old, new, who, at_ms } => {
                self.set_policy(fence, *table_id, old, new, who, *at_ms).await?;
                StoreDone::Done
            }
            StoreWrite::DropTable { table_id, at_ms } => {
                self.drop_table(fence, *table_id, *at_ms).await?;
                StoreDone::Done
            }
            StoreWrite::RecallTable { table_id } => {
                self.recall_table(fence, *table_id).await?;
                StoreDone::Done
            }
            StoreWrite::PurgeTable { table_id } => {
                self.purge_table(fence, *table_id).await?;
                StoreDone::Done
            }
            StoreWrite::AddSite { site } => {
                self.add_site(fence, site).await?;
                StoreDone::Done
            }
            StoreWrite::RemoveSite { name } => {
                self.remove_site(fence, name).await?;
                StoreDone::Done
            }
            StoreWrite::AddDuplication { table_id, remote_site, fail_mode, sync_existing, at_ms, start } => {
                StoreDone::DupAdded { dup: self.add_duplication(fence, *table_id, remote_site, *fail_mode, *sync_existing, *at_ms, start).await? }
            }
            StoreWrite::SetDupStatus { dup_id, status } => {
                self.set_dup_status(fence, *dup_id, *status).await?;
                StoreDone::Done
            }
            StoreWrite::SaveDupProgress { confirmed } => {
                self.save_dup_progress(fence, confirmed).await?;
                StoreDone::Done
            }
            StoreWrite::AddBackup { table_id, table_name, partition_count, target, who, at_ms } => {
                StoreDone::BackupAdded { backup: self.add_backup(fence, *table_id, table_name, *partition_count, target, who, *at_ms).await? }
            }
            StoreWrite::CompleteBackup { id, at_ms, manifest_sha256, bytes, new_bytes } => {
                self.complete_backup(fence, *id, *at_ms, manifest_sha256, *bytes, *new_bytes).await?;
                StoreDone::Done
            }
            StoreWrite::FailBackups { ids, at_ms, reason } => {
                self.fail_backups(fence, ids, *at_ms, reason).await?;
                StoreDone::Done
            }
            StoreWrite::DeleteBackup { id, reason } => {
                self.delete_backup(fence, *id, reason).await?;
                StoreDone::Done
            }
            StoreWrite::RestoreTable { name, policy, owner, who, at_ms, backup } => {
                let (table, restore) = self.create_table_restoring(fence, name, backup.partition_count, policy, owner, who, *at_ms, Some(backup)).await?;
                StoreDone::Restored { table, restore: restore.expect("a restore was asked for") }
            }
            StoreWrite::FinishRestore { id, state, at_ms, reason } => {
                self.finish_restore(fence, *id, *state, *at_ms, reason).await?;
                StoreDone::Done
            }
        })
    }

    /// Closes every pooled connection, waiting for checked-out ones to come back, and the lock
    /// session.
    pub async fn close(&self) {
        self.lock_session.lock().await.take();
        match &self.pool {
            Pool::Postgres(pool) => pool.close().await,
            Pool::Sqlite(pool) => pool.close().await,
        }
    }
}

/// The directory a store's files are in, when they are on this machine's disk (SQLite).
pub fn local_dir(url: &str) -> Option<PathBuf> {
    let path = sqlite_path(url, url.strip_prefix("sqlite://")?).ok()?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    Some(if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir })
}

/// The file path of a `sqlite://PATH` URL (`sqlite:///abs/path` is absolute).
fn sqlite_path(url: &str, rest: &str) -> Result<PathBuf> {
    if rest.is_empty() || rest.contains('?') {
        return Err(StoreError::UnsupportedUrl {
            url: url.to_string(),
        });
    }
    Ok(PathBuf::from(rest))
}

/// `url` with its password replaced by `***`, for logs and error messages.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    match rest[..at].split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***{}", &rest[at..]),
        None => url.to_string(),
    }
}

fn table_from_row(row: TableRow) -> Result<TableInfo> {
    let (id, name, partition_count, replica_count, status, drop_time_ms, created_ms, owner) = row;
    let id = to_u32(id, "tables.id")?;
    let status = match (status.as_str(), drop_time_ms) {
        ("available", None) => TableStatus::Available,
        ("dropped", Some(drop_time_ms)) => TableStatus::Dropped {
            drop_time_ms: to_u64(drop_time_ms, "tables.drop_time_ms")?,
        },
        (status, drop_time_ms) => {
            return Err(StoreError::Corrupt(format!(
                "table {id} has status '{status}' with drop_time_ms {drop_time_ms:?}"
            )));
        }
    };
    let replica_count = to_u32(replica_count, "tables.replica_count")?;
    Ok(TableInfo {
        id,
        name,
        partition_count: to_u32(partition_count, "tables.partition_count")?,
        replica_count,
        status,
        created_ms: to_u64(created_ms, "tables.created_ms")?,
        owner,
        // Tables created before policies existed have no policies row: the defaults.
        policy: Policy::with_replicas(replica_count),
    })
}

fn policy_from_row(replicas: u32, row: PolicyRow) -> Result<Policy> {
    let (table_id, duplication, every, keep, target, retention, at_minute, at_zone) = row;
    let at = match (at_minute, at_zone) {
        (None, None) => None,
        (Some(minute), Some(zone)) => Some(tandem_meta_core::policy::BackupAt { minute: to_u32(minute, "policies.backup_at_minute")?, zone }),
        _ => return Err(StoreError::Corrupt(format!("table {table_id}: backup_at columns of its policy are partly NULL"))),
    };
    let backup = match (every, keep, target) {
        (None, None, None) => None,
        (Some(every), Some(keep), Some(target)) => Some(BackupPolicy {
            every_ms: to_u64(every, "policies.backup_every_ms")?,
            keep: to_u32(keep, "policies.backup_keep")?,
            target,
            at,
        }),
        _ => return Err(StoreError::Corrupt(format!("table {table_id}: backup columns of its policy are partly NULL"))),
    };
    Ok(Policy {
        replicas,
        duplication,
        backup,
        tombstone_retention_ms: to_u64(retention, "policies.tombstone_retention_ms")?,
    })
}

fn partition_from_row(row: PartitionRow) -> Result<PartitionConfig> {
    let (table_id, partition_index, ballot, primary, secondaries, learners, last_drops) = row;
    let gpid = Gpid::new(
        to_u32(table_id, "partitions.table_id")?,
        to_u32(partition_index, "partitions.partition_index")?,
    );
    Ok(PartitionConfig {
        gpid,
        ballot: to_u64(ballot, "partitions.ballot")?,
        primary,
        secondaries: nodes_from_json(gpid, "secondaries", &secondaries)?,
        learners: nodes_from_json(gpid, "learners", &learners)?,
        last_drops: nodes_from_json(gpid, "last_drops", &last_drops)?,
    })
}

/// Every table must have exactly partitions `0..partition_count`; `partitions` is gpid-ordered.
fn check_partitions_complete(tables: &[TableInfo], partitions: &[PartitionConfig]) -> Result<()> {
    let mut rest = partitions;
    for table in tables {
        let count = table.partition_count as usize;
        let mine = rest
            .iter()
            .take_while(|p| p.gpid.table_id == table.id)
            .count();
        let complete = mine == count
            && rest[..mine]
                .iter()
                .enumerate()
                .all(|(i, p)| p.gpid.partition as usize == i);
        if !complete {
            return Err(StoreError::Corrupt(format!(
                "table {} ('{}') has partition_count {} but {} partition rows, or rows are \
                 missing or belong to no table",
                table.id, table.name, table.partition_count, mine
            )));
        }
        rest = &rest[mine..];
    }
    if let Some(orphan) = rest.first() {
        return Err(StoreError::Corrupt(format!(
            "partition {} belongs to no table",
            orphan.gpid
        )));
    }
    Ok(())
}

fn nodes_to_json(nodes: &[NodeAddr]) -> String {
    serde_json::to_string(nodes).expect("a list of strings always serializes")
}

fn nodes_from_json(gpid: Gpid, column: &str, text: &str) -> Result<Vec<NodeAddr>> {
    serde_json::from_str(text).map_err(|error| {
        StoreError::Corrupt(format!(
            "partition {gpid} column {column} is not a JSON array of addresses ({error}): {text}"
        ))
    })
}

fn to_i64(value: u64, what: &'static str) -> Result<i64> {
    i64::try_from(value).map_err(|_| StoreError::OutOfRange { what, value })
}

fn to_u64(value: i64, what: &str) -> Result<u64> {
    u64::try_from(value)
        .map_err(|_| StoreError::Corrupt(format!("{what} holds {value}, expected a value >= 0")))
}

fn to_u32(value: i64, what: &str) -> Result<u32> {
    u32::try_from(value)
        .map_err(|_| StoreError::Corrupt(format!("{what} holds {value}, outside 0..=4294967295")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_password_only() {
        assert_eq!(
            redact_password("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_password("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_password("sqlite:///a/b.db"), "sqlite:///a/b.db");
    }

    #[test]
    fn partitions_must_match_tables() {
        let table = TableInfo {
            id: 1,
            name: "t".into(),
            partition_count: 2,
            replica_count: 3,
            status: TableStatus::Available,
            created_ms: 0,
            owner: "o".into(),
            policy: Policy::with_replicas(3),
        };
        let partition = |table_id, partition| PartitionConfig {
            gpid: Gpid::new(table_id, partition),
            ..Default::default()
        };
        let tables = [table];
        assert!(check_partitions_complete(&tables, &[partition(1, 0), partition(1, 1)]).is_ok());
        assert!(check_partitions_complete(&tables, &[partition(1, 0)]).is_err());
        assert!(check_partitions_complete(&tables, &[partition(1, 0), partition(1, 2)]).is_err());
        let orphan = [partition(1, 0), partition(1, 1), partition(2, 0)];
        assert!(check_partitions_complete(&tables, &orphan).is_err());
    }
}
