-- Duplication between sites (docs/duplication.md).
-- Kept logically identical to migrations/sqlite/0004_duplication.sql.

-- The other sites this one ships to, by name; metas is a comma-separated list of HOST:PORT.
CREATE TABLE sites (
    name  TEXT PRIMARY KEY,
    metas TEXT NOT NULL
);

-- Duplications of tables to sites. Rows are never deleted (removed ones keep their id, so ids are
-- never reused); a purged table's duplications are removed.
CREATE TABLE duplications (
    id            BIGINT PRIMARY KEY,
    table_id      BIGINT NOT NULL,
    remote_site   TEXT   NOT NULL,
    status        TEXT   NOT NULL CHECK (status IN ('start', 'pause', 'removed')),
    fail_mode     TEXT   NOT NULL CHECK (fail_mode IN ('slow', 'skip')),
    sync_existing BIGINT NOT NULL CHECK (sync_existing IN (0, 1)),
    created_ms    BIGINT NOT NULL
);

-- Per partition, the decree up to which everything was applied at the remote site, as the
-- partition's primaries reported it; only ever raised. A new primary resumes from here.
CREATE TABLE dup_progress (
    dup_id          BIGINT NOT NULL,
    partition_index BIGINT NOT NULL,
    confirmed       BIGINT NOT NULL CHECK (confirmed >= 0),
    PRIMARY KEY (dup_id, partition_index)
);
