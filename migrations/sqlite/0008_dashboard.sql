-- See migrations/postgres/0009_dashboard.sql.
ALTER TABLE sidecars ADD COLUMN last_seen_at INTEGER;
ALTER TABLE sidecars ADD COLUMN last_version TEXT CHECK (length(last_version) <= 64);
CREATE INDEX tokens_by_created ON tokens (tenant_id, created_at);
