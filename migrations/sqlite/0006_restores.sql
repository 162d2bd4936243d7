-- Restores of backups into new tables (docs/backup.md).
-- Kept logically identical to migrations/postgres/0006_restores.sql.

-- One row per restore, written in the transaction that creates its table. A table with a
-- running restore hands its replicas the backup to build their databases from; the restore is
-- complete once every partition's members opened. Rows are never deleted.
CREATE TABLE restores (
    id                BIGINT PRIMARY KEY,
    table_id          BIGINT NOT NULL,
    table_name        TEXT   NOT NULL,
    backup_id         BIGINT NOT NULL,
    source_table_id   BIGINT NOT NULL,
    source_table_name TEXT   NOT NULL,
    partition_count   BIGINT NOT NULL CHECK (partition_count > 0),
    target            TEXT   NOT NULL,
    manifest_sha256   TEXT   NOT NULL,
    state             TEXT   NOT NULL CHECK (state IN ('running', 'complete', 'failed')),
    started_ms        BIGINT NOT NULL,
    finished_ms       BIGINT NOT NULL,
    reason            TEXT   NOT NULL,
    who               TEXT   NOT NULL
);
