-- See migrations/postgres/0012_audit_sinks.sql.
CREATE TABLE audit_sink_cursors (
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    sink        TEXT NOT NULL CHECK (length(sink) BETWEEN 1 AND 32),
    last_seq    INTEGER NOT NULL CHECK (last_seq >= 0),
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, sink)
) STRICT;
