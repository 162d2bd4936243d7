-- Meta leadership and per-table redundancy policies (docs/meta.md).
-- Kept logically identical to migrations/postgres/0003_lease_policies.sql.

-- The one lease row meta servers compete for. `epoch` grows on every takeover; every metadata
-- write checks (holder, epoch) in its own transaction, so a deposed leader's writes fail.
-- `expires_ms` is on the database's clock (ms since the Unix epoch).
CREATE TABLE meta_lease (
    singleton  INTEGER PRIMARY KEY CHECK (singleton = 1),
    holder     TEXT   NOT NULL,
    address    TEXT   NOT NULL,
    epoch      BIGINT NOT NULL CHECK (epoch >= 1),
    expires_ms BIGINT NOT NULL
);

-- A table's policy besides its replica count (tables.replica_count).
CREATE TABLE policies (
    table_id               BIGINT PRIMARY KEY REFERENCES tables (id) ON DELETE CASCADE,
    duplication            TEXT   NULL,
    backup_every_ms        BIGINT NULL CHECK (backup_every_ms > 0),
    backup_keep            BIGINT NULL CHECK (backup_keep > 0),
    backup_target          TEXT   NULL,
    tombstone_retention_ms BIGINT NOT NULL CHECK (tombstone_retention_ms > 0),
    CHECK ((backup_every_ms IS NULL) = (backup_keep IS NULL)),
    CHECK ((backup_every_ms IS NULL) = (backup_target IS NULL))
);

-- Who changed which policy when, old -> new (JSON documents). Kept after a table is purged.
CREATE TABLE policy_history (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    table_id   BIGINT NOT NULL,
    at_ms      BIGINT NOT NULL,
    who        TEXT   NOT NULL,
    old_policy TEXT   NULL,
    new_policy TEXT   NOT NULL
);
CREATE INDEX policy_history_table ON policy_history (table_id, id);
