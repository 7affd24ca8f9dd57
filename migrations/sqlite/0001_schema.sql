-- Agent Secret Store schema, SQLite flavour.
--
-- Same tables and columns as migrations/postgres, so the store runs one SQL text on both
-- backends (sqlx accepts `$1` parameters on SQLite). Conventions shared by both:
--   * ids are TEXT holding hyphenated lowercase UUIDs (v7, so they sort by creation time);
--   * timestamps are INTEGER microseconds since the Unix epoch, UTC (BIGINT on PostgreSQL);
--   * byte strings are BLOB (BYTEA on PostgreSQL); booleans are INTEGER 0/1;
--   * lists (scopes, allowed_hosts, ip_allowlist) are JSON arrays in TEXT, read and written
--     whole;
--   * enums are TEXT with CHECK constraints naming every stored value.
-- Tables are STRICT so a value of the wrong type is an error, as it would be on PostgreSQL,
-- rather than silently stored with SQLite's type affinity. Text comparison uses SQLite's
-- default BINARY collation, i.e. bytewise, matching `COLLATE "C"` on PostgreSQL.
-- SQLite has no roles or row-level security: an embedded database is one tenant boundary
-- short of PostgreSQL, which is why every query still filters by tenant_id explicitly.
-- No table holds a secret value in the clear: secret_versions holds AES-256-GCM ciphertexts
-- and DEKs wrapped by the tenant's KEK, credentials are stored only as keyed HMAC hashes.

-- `audit_seq`/`audit_head` are the head of the tenant's audit hash chain, bumped by every
-- append with `UPDATE ... RETURNING` inside a `BEGIN IMMEDIATE` transaction.
CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    audit_seq   INTEGER NOT NULL DEFAULT 0 CHECK (audit_seq >= 0),
    audit_head  BLOB CHECK (audit_head IS NULL OR length(audit_head) = 32)
) STRICT;

-- Credential id -> owning tenant: how a request finds its tenant. Holds no secret material.
CREATE TABLE credential_index (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants (id),
    kind       TEXT NOT NULL CHECK (kind IN ('operator', 'agent', 'token', 'sidecar'))
) STRICT;

CREATE TABLE operators (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    name        TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('admin', 'approver', 'auditor')),
    key_hash    BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
) STRICT;
CREATE INDEX operators_by_tenant ON operators (tenant_id, created_at);

CREATE TABLE sidecars (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    name        TEXT NOT NULL,
    key_hash    BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
) STRICT;
CREATE INDEX sidecars_by_tenant ON sidecars (tenant_id, created_at);

-- `key_id` is the id embedded in the agent's current key; it changes on rotation. UNIQUE
-- (tenant_id, id) is the target of the tokens' composite foreign key, so a token can never
-- point at another tenant's agent.
CREATE TABLE agents (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants (id),
    name            TEXT NOT NULL,
    trust_tier      INTEGER NOT NULL DEFAULT 0,
    key_id          TEXT NOT NULL UNIQUE,
    key_hash        BLOB NOT NULL,
    created_at      INTEGER NOT NULL,
    key_rotated_at  INTEGER,
    UNIQUE (tenant_id, id)
) STRICT;
CREATE INDEX agents_by_tenant ON agents (tenant_id, created_at);

-- Prefix listing is the bytewise range `path >= 'p/' AND path < 'p0'`, served by the
-- UNIQUE (tenant_id, path) index. `sensitivity` is stored from the start for approvals.
CREATE TABLE secrets (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants (id),
    path             TEXT NOT NULL,
    sensitivity      TEXT NOT NULL DEFAULT 'standard'
                     CHECK (sensitivity IN ('standard', 'sensitive', 'critical')),
    allowed_hosts    TEXT NOT NULL DEFAULT '[]',
    current_version  INTEGER NOT NULL CHECK (current_version >= 1),
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    UNIQUE (tenant_id, path),
    UNIQUE (tenant_id, id)
) STRICT;

-- One sealed envelope per version; deleted with its secret (foreign keys are switched on for
-- every connection, and secure_delete overwrites the freed pages).
CREATE TABLE secret_versions (
    secret_id    TEXT NOT NULL,
    tenant_id    TEXT NOT NULL,
    version      INTEGER NOT NULL CHECK (version >= 1),
    key_name     TEXT NOT NULL,
    key_version  TEXT NOT NULL,
    wrapped_dek  BLOB NOT NULL,
    nonce        BLOB NOT NULL,
    ciphertext   BLOB NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (secret_id, version),
    FOREIGN KEY (tenant_id, secret_id) REFERENCES secrets (tenant_id, id) ON DELETE CASCADE
) STRICT;

-- Scoped tokens; 'expired' is derived from expires_at and never stored. The last CHECK is a
-- second line of defence behind the conditional `uses < max_uses` update.
CREATE TABLE tokens (
    id                    TEXT PRIMARY KEY,
    tenant_id             TEXT NOT NULL REFERENCES tenants (id),
    agent_id              TEXT NOT NULL,
    scopes                TEXT NOT NULL,
    key_hash              BLOB NOT NULL,
    status                TEXT NOT NULL
                          CHECK (status IN ('pending_approval', 'active', 'denied', 'revoked')),
    approved_sensitivity  TEXT NOT NULL DEFAULT 'standard'
                          CHECK (approved_sensitivity IN ('standard', 'sensitive', 'critical')),
    ip_allowlist          TEXT NOT NULL DEFAULT '[]',
    max_uses              INTEGER CHECK (max_uses IS NULL OR max_uses >= 1),
    uses                  INTEGER NOT NULL DEFAULT 0 CHECK (uses >= 0),
    expires_at            INTEGER NOT NULL,
    created_at            INTEGER NOT NULL,
    revoked_at            INTEGER,
    CHECK (max_uses IS NULL OR uses <= max_uses),
    FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id)
) STRICT;
CREATE INDEX tokens_by_agent ON tokens (tenant_id, agent_id);

-- The per-tenant hash chain. `event_type` has no CHECK list on purpose: a new event type must
-- not require rebuilding an append-only table (SQLite cannot alter a CHECK in place).
CREATE TABLE audit_events (
    id                TEXT PRIMARY KEY,
    tenant_id         TEXT NOT NULL REFERENCES tenants (id),
    seq               INTEGER NOT NULL CHECK (seq >= 1),
    event_type        TEXT NOT NULL CHECK (event_type <> ''),
    actor             TEXT NOT NULL,
    ip                TEXT,
    user_agent        TEXT,
    path              TEXT,
    destination_host  TEXT,
    success           INTEGER NOT NULL CHECK (success IN (0, 1)),
    reason            TEXT,
    occurred_at       INTEGER NOT NULL,
    prev_hash         BLOB NOT NULL CHECK (length(prev_hash) = 32),
    hash              BLOB NOT NULL CHECK (length(hash) = 32),
    UNIQUE (tenant_id, seq)
) STRICT;
CREATE INDEX audit_events_by_time ON audit_events (tenant_id, occurred_at);
