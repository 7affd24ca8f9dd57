-- Audit retention (docs/operations.md, "Audit retention"). The service never deletes audit
-- events; an owner-run archive (`agent-secret-store audit archive`) exports a verified prefix
-- of a tenant's chain to a file, records here where the database's part of the chain now
-- starts, and deletes that prefix, in one transaction. Online verification starts from the
-- latest marker: the first remaining event must chain to `through_hash`.
--
-- The service role may only read this table (db.rs grants). Deleting audit events needs the
-- append-only trigger lifted, which only the tables' owner can do.
CREATE TABLE audit_archives (
    tenant_id     TEXT NOT NULL REFERENCES tenants (id),
    through_seq   BIGINT NOT NULL CHECK (through_seq >= 1),
    through_hash  BYTEA NOT NULL CHECK (length(through_hash) = 32),
    first_seq     BIGINT NOT NULL CHECK (first_seq >= 1 AND first_seq <= through_seq),
    events        BIGINT NOT NULL CHECK (events >= 1),
    file_sha256   TEXT NOT NULL CHECK (length(file_sha256) = 64),
    archived_at   BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, through_seq)
);
ALTER TABLE audit_archives ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_archives FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_archives
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));
