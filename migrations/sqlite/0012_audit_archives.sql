-- Audit retention (docs/operations.md, "Audit retention"): where each tenant's chain starts in
-- the database after an archive (see the PostgreSQL migration of the same name).
CREATE TABLE audit_archives (
    tenant_id     TEXT NOT NULL REFERENCES tenants (id),
    through_seq   INTEGER NOT NULL CHECK (through_seq >= 1),
    through_hash  BLOB NOT NULL CHECK (length(through_hash) = 32),
    first_seq     INTEGER NOT NULL CHECK (first_seq >= 1 AND first_seq <= through_seq),
    events        INTEGER NOT NULL CHECK (events >= 1),
    file_sha256   TEXT NOT NULL CHECK (length(file_sha256) = 64),
    archived_at   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, through_seq)
) STRICT;
