-- Agent Secret Store schema, PostgreSQL flavour.
--
-- The SQLite migrations create the same tables with the same columns, so the store runs one SQL
-- text on both backends. Conventions shared by both:
--   * ids are TEXT holding hyphenated lowercase UUIDs (v7, so they sort by creation time);
--   * timestamps are BIGINT microseconds since the Unix epoch, UTC: `expires_at > $now`
--     compares integers identically everywhere, with no time-zone or precision surprises;
--   * byte strings (hashes, wrapped keys, ciphertexts) are BYTEA here, BLOB on SQLite;
--   * lists (scopes, allowed_hosts, ip_allowlist) are JSON arrays in TEXT: always read and
--     written whole, never searched inside, so no backend-specific array type is needed;
--   * enums are TEXT with CHECK constraints naming every stored value.
-- No table holds a secret value in the clear: secret_versions holds AES-256-GCM ciphertexts
-- and DEKs wrapped by the tenant's KEK, credentials are stored only as keyed HMAC hashes.
-- Row-level security and the append-only audit trigger live in the later migrations.

-- One row per tenant. `audit_seq`/`audit_head` are the head of the tenant's audit hash chain:
-- every append runs `UPDATE tenants SET audit_seq = audit_seq + 1 ... RETURNING`, and that row
-- lock serialises the tenant's chain across control-plane replicas.
CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL,
    audit_seq   BIGINT NOT NULL DEFAULT 0 CHECK (audit_seq >= 0),
    audit_head  BYTEA CHECK (audit_head IS NULL OR length(audit_head) = 32)
);

-- Credential id -> owning tenant. Deliberately NOT row-level secured: it is how a request finds
-- its tenant before any tenant-scoped lookup. It holds no secret material (the hashes stay in
-- the tenant tables), and the service may only SELECT, INSERT and DELETE here.
CREATE TABLE credential_index (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants (id),
    kind       TEXT NOT NULL CHECK (kind IN ('operator', 'agent', 'token', 'sidecar'))
);

CREATE TABLE operators (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    name        TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('admin', 'approver', 'auditor')),
    key_hash    BYTEA NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
CREATE INDEX operators_by_tenant ON operators (tenant_id, created_at);

CREATE TABLE sidecars (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    name        TEXT NOT NULL,
    key_hash    BYTEA NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
CREATE INDEX sidecars_by_tenant ON sidecars (tenant_id, created_at);

-- `key_id` is the id embedded in the agent's current key (the credential_index id for agents);
-- it changes on rotation, while `id` stays. UNIQUE (tenant_id, id) is the target of the
-- tokens' composite foreign key, so a token can never point at another tenant's agent.
CREATE TABLE agents (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants (id),
    name            TEXT NOT NULL,
    trust_tier      INTEGER NOT NULL DEFAULT 0,
    key_id          TEXT NOT NULL UNIQUE,
    key_hash        BYTEA NOT NULL,
    created_at      BIGINT NOT NULL,
    key_rotated_at  BIGINT,
    UNIQUE (tenant_id, id)
);
CREATE INDEX agents_by_tenant ON agents (tenant_id, created_at);

-- `path` uses the "C" collation so comparisons and ORDER BY are bytewise, exactly as SQLite's
-- BINARY collation: prefix listing is the range `path >= 'p/' AND path < 'p0'` ('0' follows '/')
-- and must not depend on the server's locale. UNIQUE (tenant_id, path) also serves that range.
-- `sensitivity` is stored from the start so approvals need no schema change.
CREATE TABLE secrets (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants (id),
    path             TEXT COLLATE "C" NOT NULL,
    sensitivity      TEXT NOT NULL DEFAULT 'standard'
                     CHECK (sensitivity IN ('standard', 'sensitive', 'critical')),
    allowed_hosts    TEXT NOT NULL DEFAULT '[]',
    current_version  BIGINT NOT NULL CHECK (current_version >= 1),
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    UNIQUE (tenant_id, path),
    UNIQUE (tenant_id, id)
);

-- One sealed envelope per version. Rows are written once; only the wrapped DEK columns may be
-- rewritten (KEK rotation re-wraps DEKs without touching ciphertexts). Deleting the secret
-- deletes its versions (ON DELETE CASCADE), so the ciphertexts are gone with it.
CREATE TABLE secret_versions (
    secret_id    TEXT NOT NULL,
    tenant_id    TEXT NOT NULL,
    version      BIGINT NOT NULL CHECK (version >= 1),
    key_name     TEXT NOT NULL,
    key_version  TEXT NOT NULL,
    wrapped_dek  BYTEA NOT NULL,
    nonce        BYTEA NOT NULL,
    ciphertext   BYTEA NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (secret_id, version),
    FOREIGN KEY (tenant_id, secret_id) REFERENCES secrets (tenant_id, id) ON DELETE CASCADE
);

-- Scoped tokens. `status` holds stored states only ('expired' is derived from expires_at), and
-- includes 'pending_approval' for tokens waiting on human approval. A use is counted by one
-- conditional UPDATE (`uses < max_uses`); the CHECK below is a second line of defence that no
-- code path can count past max_uses.
CREATE TABLE tokens (
    id                    TEXT PRIMARY KEY,
    tenant_id             TEXT NOT NULL REFERENCES tenants (id),
    agent_id              TEXT NOT NULL,
    scopes                TEXT NOT NULL,
    key_hash              BYTEA NOT NULL,
    status                TEXT NOT NULL
                          CHECK (status IN ('pending_approval', 'active', 'denied', 'revoked')),
    approved_sensitivity  TEXT NOT NULL DEFAULT 'standard'
                          CHECK (approved_sensitivity IN ('standard', 'sensitive', 'critical')),
    ip_allowlist          TEXT NOT NULL DEFAULT '[]',
    max_uses              BIGINT CHECK (max_uses IS NULL OR max_uses >= 1),
    uses                  BIGINT NOT NULL DEFAULT 0 CHECK (uses >= 0),
    expires_at            BIGINT NOT NULL,
    created_at            BIGINT NOT NULL,
    revoked_at            BIGINT,
    CHECK (max_uses IS NULL OR uses <= max_uses),
    FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id)
);
CREATE INDEX tokens_by_agent ON tokens (tenant_id, agent_id);

-- The per-tenant hash chain (see control-plane/src/audit.rs). UNIQUE (tenant_id, seq) both
-- forbids forks of the chain and serves paging by seq. `event_type` has no CHECK list on
-- purpose: new event types must not need a rebuild of an append-only table, and the type is
-- covered by the event hash anyway. `ip` is TEXT, not INET, to keep one SQL text for both
-- backends.
CREATE TABLE audit_events (
    id                TEXT PRIMARY KEY,
    tenant_id         TEXT NOT NULL REFERENCES tenants (id),
    seq               BIGINT NOT NULL CHECK (seq >= 1),
    event_type        TEXT NOT NULL CHECK (event_type <> ''),
    actor             TEXT NOT NULL,
    ip                TEXT,
    user_agent        TEXT,
    path              TEXT,
    destination_host  TEXT,
    success           BOOLEAN NOT NULL,
    reason            TEXT,
    occurred_at       BIGINT NOT NULL,
    prev_hash         BYTEA NOT NULL CHECK (length(prev_hash) = 32),
    hash              BYTEA NOT NULL CHECK (length(hash) = 32),
    UNIQUE (tenant_id, seq)
);
CREATE INDEX audit_events_by_time ON audit_events (tenant_id, occurred_at);
