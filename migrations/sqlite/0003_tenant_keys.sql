-- The KEK primary version the control plane last saw for each tenant, and the rotation lease.
-- See migrations/postgres/0004_tenant_keys.sql; SQLite has one writer, so the conditional
-- UPDATEs there are trivially exclusive here.
CREATE TABLE tenant_keys (
    tenant_id            TEXT PRIMARY KEY REFERENCES tenants (id),
    key_name             TEXT NOT NULL,
    primary_version      TEXT NOT NULL,
    observed_at          INTEGER NOT NULL,
    rotation_claimed_at  INTEGER
);

CREATE INDEX secret_versions_by_key ON secret_versions (tenant_id, key_name, key_version);
