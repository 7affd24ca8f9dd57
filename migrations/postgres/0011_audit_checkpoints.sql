-- Signed checkpoints of the audit chain (control-plane/src/audit_checkpoint.rs).
--
-- audit_keys: each tenant's Ed25519 audit keys. The private key (PKCS#8) is sealed like a
-- secret: AES-256-GCM under a fresh DEK wrapped by the tenant's KEK, so the database alone
-- cannot sign. The public key is stored in the clear: anyone may verify. A key is never
-- changed or deleted; a new one (new key_id) replaces it for new checkpoints when it cannot be
-- opened any more (say its KEK version was retired), and old checkpoints keep verifying.
--
-- tenants.audit_checkpoint_seq/_at: where and when the last checkpoint event was written, read
-- and set under the tenant row's lock, so replicas never checkpoint the same head twice.
CREATE TABLE audit_keys (
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    key_id       TEXT NOT NULL,
    public_key   BYTEA NOT NULL CHECK (length(public_key) = 32),
    key_name     TEXT NOT NULL,
    key_version  TEXT NOT NULL,
    wrapped_dek  BYTEA NOT NULL,
    nonce        BYTEA NOT NULL,
    ciphertext   BYTEA NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, key_id)
);
ALTER TABLE audit_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_keys
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

ALTER TABLE tenants ADD COLUMN audit_checkpoint_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tenants ADD COLUMN audit_checkpoint_at BIGINT;
