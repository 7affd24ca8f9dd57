-- Issue 10, "stale state after missed events" and operator revocation.
-- See migrations/postgres/0005_revocation_and_tombstones.sql.
ALTER TABLE agents ADD COLUMN revoked_at INTEGER;

CREATE TABLE secret_tombstones (
    tenant_id     TEXT NOT NULL REFERENCES tenants (id),
    path          TEXT NOT NULL,
    last_version  INTEGER NOT NULL CHECK (last_version >= 1),
    deleted_at    INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, path)
) STRICT;
