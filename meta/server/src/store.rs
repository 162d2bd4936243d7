//! The meta server's SQL store: tables, partition configurations and replica servers, kept in
//! PostgreSQL (production, several meta servers) or SQLite (embedded default, one meta).
//!
//! ```text
//!  meta core action ("persist config", "create table", ...)
//!        │
//!        ▼
//!  SqlStore::<write method> ──► one write transaction ──► commit ──► result back to the core
//!                               (writers serialized: Postgres advisory lock / SQLite
//!                                BEGIN IMMEDIATE; the ballot compare-and-set is inside it)
//! ```
//!
//! Both dialects run the same runtime queries (`$N` placeholders work in both) against the same
//! logical schema, embedded from `migrations/{postgres,sqlite}` and applied at connect.
//!
//! Every write goes through [`write_transaction!`], which serializes metadata writers. That is
//! also the single place where leader fencing plugs in: the control plane adds a leader epoch
//! argument to each write method and checks it against the lease row inside the same
//! transaction, before the write's own statements, so a deposed leader's writes fail.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tandem_core::{Ballot, Gpid, NodeAddr, PartitionConfig};
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

    #[error("corrupt metadata store: {0}")]
    Corrupt(String),

    #[error("metadata store query failed: {0}")]
    Database(#[from] sqlx::Error),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// How long a SQLite writer waits for another writer before failing with "database is locked".
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);
const SQLITE_CONNECTIONS_MAX: u32 = 4;
const POSTGRES_CONNECTIONS_MAX: u32 = 8;
const POOL_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
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

/// The metadata store. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct SqlStore {
    pool: Pool,
}

/// Runs `$body` with `$tx` bound to a write transaction and commits it if `$body` completes
/// (a `return`/`?` inside `$body` rolls back). Writers are serialized; the leader fencing check
/// goes right after the lock, before `$body`.
macro_rules! write_transaction {
    ($store:expr, $tx:ident => $body:block) => {
        match &$store.pool {
            Pool::Postgres(pool) => {
                let mut $tx = pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(POSTGRES_WRITE_LOCK_KEY)
                    .execute(&mut *$tx)
                    .await?;
                let output = $body;
                $tx.commit().await?;
                output
            }
            Pool::Sqlite(pool) => {
                // IMMEDIATE takes the write lock up front (waiting up to the busy timeout), so a
                // transaction never fails to upgrade from reader to writer halfway through.
                let mut $tx = pool.begin_with("BEGIN IMMEDIATE").await?;
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
type PartitionRow = (i64, i64, i64, Option<String>, String, String, String);

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
        Ok(SqlStore { pool })
    }

    /// Everything persisted: all tables (dropped ones included) ordered by id, their partitions
    /// ordered by gpid, and the nodes ordered by address — read from one snapshot.
    pub async fn load(&self) -> Result<MetaSnapshot> {
        let (table_rows, partition_rows, node_rows) = read_transaction!(self, tx => {
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
            (tables, partitions, nodes)
        });
        let tables = table_rows
            .into_iter()
            .map(table_from_row)
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
        Ok(MetaSnapshot {
            tables,
            partitions,
            nodes,
        })
    }

    /// Creates an available table with the next id never used before (1 for the first) and its
    /// `partition_count` partitions at ballot 0 with no members, in one transaction.
    pub async fn create_table(
        &self,
        name: &str,
        partition_count: u32,
        replica_count: u32,
        owner: &str,
        created_ms: u64,
    ) -> Result<TableInfo> {
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
        let id = write_transaction!(self, tx => {
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
            id
        });
        tracing::info!(id, name, partition_count, replica_count, "table created");
        Ok(TableInfo {
            id,
            name: name.to_string(),
            partition_count,
            replica_count,
            status: TableStatus::Available,
            created_ms,
            owner: owner.to_string(),
        })
    }

    /// Compare-and-set on the ballot: writes `config` only if the stored ballot equals
    /// `expected_ballot`. Returns false when it does not (someone else changed the partition).
    /// `config.ballot` may equal `expected_ballot` (learners change without a new ballot) but
    /// never be smaller.
    pub async fn update_partition(
        &self,
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
        let updated = write_transaction!(self, tx => {
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

    /// Soft-deletes an available table: it stays recallable until purged.
    pub async fn drop_table(&self, id: u32, drop_time_ms: u64) -> Result<()> {
        let drop_time = to_i64(drop_time_ms, "drop_time_ms")?;
        write_transaction!(self, tx => {
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
    pub async fn recall_table(&self, id: u32) -> Result<()> {
        write_transaction!(self, tx => {
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
    pub async fn purge_table(&self, id: u32) -> Result<()> {
        write_transaction!(self, tx => {
            let (name, status) = select_name_status!(tx, id);
            if status != "dropped" {
                return Err(StoreError::PurgeAvailable { id, name });
            }
            sqlx::query("DELETE FROM partitions WHERE table_id = $1")
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
    pub async fn register_node(&self, address: &str, now_ms: u64) -> Result<()> {
        let now = to_i64(now_ms, "now_ms")?;
        write_transaction!(self, tx => {
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

    /// Closes every pooled connection, waiting for checked-out ones to come back.
    pub async fn close(&self) {
        match &self.pool {
            Pool::Postgres(pool) => pool.close().await,
            Pool::Sqlite(pool) => pool.close().await,
        }
    }
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
    Ok(TableInfo {
        id,
        name,
        partition_count: to_u32(partition_count, "tables.partition_count")?,
        replica_count: to_u32(replica_count, "tables.replica_count")?,
        status,
        created_ms: to_u64(created_ms, "tables.created_ms")?,
        owner,
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
