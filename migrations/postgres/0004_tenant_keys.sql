-- The KEK primary version the control plane last saw for each tenant, and the rotation lease.
--
-- It is how a rotation is made and announced once across replicas: a replica must win the
-- conditional UPDATE of `rotation_claimed_at` to rotate a local-backend KEK, and the replica
-- whose UPDATE of `primary_version` changes the row writes the `kms.rotated` event (in the same
-- transaction) and pushes the watch event. Rows appear on first observation, so tenants created
-- before this migration need no backfill. It holds key names and version ids, no key material.
CREATE TABLE tenant_keys (
    tenant_id            TEXT PRIMARY KEY REFERENCES tenants (id),
    key_name             TEXT NOT NULL,
    primary_version      TEXT NOT NULL,
    observed_at          BIGINT NOT NULL,
    rotation_claimed_at  BIGINT
);

ALTER TABLE tenant_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_keys
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

-- `kms status` and `kms rewrap` group and page the tenant's DEKs by the KEK version that wraps them.
CREATE INDEX secret_versions_by_key ON secret_versions (tenant_id, key_name, key_version);
