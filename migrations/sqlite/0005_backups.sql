-- Backups of tables to S3-compatible or file targets (docs/backup.md).
-- Kept logically identical to migrations/postgres/0005_backups.sql.

-- One row per backup, written before its first upload. Only state 'complete' makes a backup
-- one; running -> complete | failed, complete -> deleted. Rows are never deleted, so ids are
-- never reused (the target's layout names objects by backup id), and they outlive their table
-- (a dropped table is restored from them).
CREATE TABLE backups (
    id              BIGINT PRIMARY KEY,
    table_id        BIGINT NOT NULL,
    table_name      TEXT   NOT NULL,
    partition_count BIGINT NOT NULL CHECK (partition_count > 0),
    target          TEXT   NOT NULL,
    state           TEXT   NOT NULL CHECK (state IN ('running', 'complete', 'failed', 'deleted')),
    started_ms      BIGINT NOT NULL,
    finished_ms     BIGINT NOT NULL,
    -- The table manifest's SHA-256 (lowercase hex) once complete, else ''.
    manifest_sha256 TEXT   NOT NULL,
    bytes           BIGINT NOT NULL CHECK (bytes >= 0),
    new_bytes       BIGINT NOT NULL CHECK (new_bytes >= 0),
    reason          TEXT   NOT NULL,
    who             TEXT   NOT NULL
);
CREATE INDEX backups_by_table ON backups (table_id, id);
