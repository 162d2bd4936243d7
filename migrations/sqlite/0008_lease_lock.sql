-- A crashed meta leader is replaced at once rather than after its lease's TTL (docs/meta.md,
-- "Taking over from a crashed leader"). Kept logically identical to
-- migrations/postgres/0008_lease_lock.sql.

-- Whether the holder held the session-level advisory lock when it last claimed (PostgreSQL
-- only; always false on SQLite). A standby that gets that lock knows the holder's session has
-- ended, and may take the row before expires_ms.
ALTER TABLE meta_lease ADD COLUMN locked BOOLEAN NOT NULL DEFAULT FALSE;
-- When the holder last claimed, on the database's clock: a session that ended in a database
-- restart after it says nothing about the holder's process.
ALTER TABLE meta_lease ADD COLUMN renewed_ms BIGINT NOT NULL DEFAULT 0;
-- What the claim that last wrote the row took of the previous holder's lease: its time left
-- when taken early, 0 for a renewal or a takeover of an expired, released or same-address row.
-- The new leader declares nobody dead before it has run out.
ALTER TABLE meta_lease ADD COLUMN predecessor_ms BIGINT NOT NULL DEFAULT 0;
