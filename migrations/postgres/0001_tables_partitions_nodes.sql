-- Tables, their partition configurations, and replica servers.
-- Kept logically identical to migrations/sqlite/0001_tables_partitions_nodes.sql: the same
-- runtime queries run against both. Integers are BIGINT so both dialects decode them as i64;
-- the CHECKs keep u32 fields inside u32.

CREATE TABLE tables (
    id              BIGINT PRIMARY KEY CHECK (id BETWEEN 1 AND 4294967295),
    name            TEXT   NOT NULL CHECK (name <> ''),
    partition_count BIGINT NOT NULL CHECK (partition_count BETWEEN 1 AND 4294967295),
    replica_count   BIGINT NOT NULL CHECK (replica_count BETWEEN 1 AND 4294967295),
    status          TEXT   NOT NULL CHECK (status IN ('available', 'dropped')),
    drop_time_ms    BIGINT NULL,
    created_ms      BIGINT NOT NULL,
    owner           TEXT   NOT NULL,
    CHECK ((status = 'dropped') = (drop_time_ms IS NOT NULL))
);

-- A name is unique among available tables only: a dropped table's name may be reused, and
-- recalling that dropped table is then refused.
CREATE UNIQUE INDEX tables_available_name ON tables (name) WHERE status = 'available';

CREATE TABLE partitions (
    table_id        BIGINT NOT NULL REFERENCES tables (id) ON DELETE CASCADE,
    partition_index BIGINT NOT NULL CHECK (partition_index BETWEEN 0 AND 4294967295),
    ballot          BIGINT NOT NULL CHECK (ballot >= 0),
    primary_node    TEXT   NULL,
    -- JSON arrays of node addresses.
    secondaries     TEXT   NOT NULL DEFAULT '[]',
    learners        TEXT   NOT NULL DEFAULT '[]',
    last_drops      TEXT   NOT NULL DEFAULT '[]',
    PRIMARY KEY (table_id, partition_index)
);

CREATE TABLE nodes (
    address       TEXT   PRIMARY KEY,
    first_seen_ms BIGINT NOT NULL
);
