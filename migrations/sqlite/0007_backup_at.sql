-- Scheduled backups' start time, `tandem policy set T --backup-at HH:MM [ZONE]` (docs/backup.md,
-- "Schedules and retention"). Kept logically identical to migrations/postgres/0007_backup_at.sql.

-- Minutes after local midnight in backup_at_zone ("UTC" or an IANA name). Both NULL: backups
-- start `backup_every_ms` after the last one started, as before.
ALTER TABLE policies ADD COLUMN backup_at_minute BIGINT NULL CHECK (backup_at_minute >= 0 AND backup_at_minute < 1440);
ALTER TABLE policies ADD COLUMN backup_at_zone TEXT NULL;
