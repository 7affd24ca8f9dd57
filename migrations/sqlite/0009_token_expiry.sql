-- See migrations/postgres/0010_token_expiry.sql. The table is STRICT: a flag is an INTEGER.
ALTER TABLE tokens ADD COLUMN expiry_recorded INTEGER NOT NULL DEFAULT 0
    CHECK (expiry_recorded IN (0, 1));
CREATE INDEX tokens_expiry_due ON tokens (tenant_id, expires_at) WHERE NOT expiry_recorded;
