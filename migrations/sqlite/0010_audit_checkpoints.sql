-- See migrations/postgres/0011_audit_checkpoints.sql.
CREATE TABLE audit_keys (
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    key_id       TEXT NOT NULL,
    public_key   BLOB NOT NULL CHECK (length(public_key) = 32),
    key_name     TEXT NOT NULL,
    key_version  TEXT NOT NULL,
    wrapped_dek  BLOB NOT NULL,
    nonce        BLOB NOT NULL,
    ciphertext   BLOB NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, key_id)
) STRICT;

ALTER TABLE tenants ADD COLUMN audit_checkpoint_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tenants ADD COLUMN audit_checkpoint_at INTEGER;
