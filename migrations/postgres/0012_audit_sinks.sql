-- Where each SIEM sink is in each tenant's audit chain (control-plane/src/service/siem.rs).
-- The audit table is the outbox; this is the only state delivery needs. `last_seq` moves only
-- after the receiver accepted everything up to it, with a conditional update, so a restart
-- resumes where delivery stopped and replicas racing never move it backwards.
CREATE TABLE audit_sink_cursors (
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    sink        TEXT NOT NULL CHECK (length(sink) BETWEEN 1 AND 32),
    last_seq    BIGINT NOT NULL CHECK (last_seq >= 0),
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, sink)
);
ALTER TABLE audit_sink_cursors ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_sink_cursors FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_sink_cursors
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));
