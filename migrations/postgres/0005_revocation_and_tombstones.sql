-- Issue 10, "stale state after missed events" and operator revocation.
--
-- agents.revoked_at: a revoked agent's key is removed from credential_index (so it stops
-- authenticating at the commit that revokes it and every token it held); the timestamp keeps
-- it revoked, so a later key rotation cannot bring it back.
ALTER TABLE agents ADD COLUMN revoked_at BIGINT;

-- The last version a deleted secret reached, per path. A secret created again at that path
-- continues from `last_version + 1`, so a (path, version) pair is never reused: a sidecar
-- that still caches the old value under its version can never mistake it for the new one.
-- Holds paths and numbers only, no secret material.
CREATE TABLE secret_tombstones (
    tenant_id     TEXT NOT NULL REFERENCES tenants (id),
    path          TEXT COLLATE "C" NOT NULL,
    last_version  BIGINT NOT NULL CHECK (last_version >= 1),
    deleted_at    BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, path)
);

ALTER TABLE secret_tombstones ENABLE ROW LEVEL SECURITY;
ALTER TABLE secret_tombstones FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON secret_tombstones
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));
