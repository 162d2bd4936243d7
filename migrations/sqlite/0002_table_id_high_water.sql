-- Table ids are never reused, even after a purge: a replica server that was down during the
-- purge may still hold data under the purged table's partition ids.
CREATE TABLE table_id_high_water (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    max_id BIGINT NOT NULL
);
INSERT INTO table_id_high_water (singleton, max_id) SELECT 1, COALESCE(MAX(id), 0) FROM tables;
