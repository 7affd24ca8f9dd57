-- Issue 12, item 5: operator accounts (password, TOTP second factor, lock-out) and server-side
-- sessions for humans. Numbered 0008 here and 0007 on SQLite: the ceilings/approvals work
-- takes 0007 here and 0006 on SQLite.
--
-- Finding the tenant at login. Row-level security hides every tenant row until the
-- transaction has set app.tenant_id, and a login form only knows a tenant name and a user
-- name. `operator_logins` maps (tenant name, user name) to (tenant id, operator id) and is,
-- like credential_index, read without a tenant and kept outside row-level security. It holds
-- no secret material: names and ids only (the operators table already lists the same names to
-- every admin of the tenant). A row is written when an operator's password is first set, in
-- the same transaction; its primary key makes user names unique per tenant among operators
-- who can log in (a second operator of the same name gets 409 when a password is set).
-- Sessions are found the same way without an index: the session cookie carries the tenant id
-- (not secret) next to the session secret, so the lookup runs inside the tenant.
--
-- Nothing here is a usable secret in the database's hands:
--   * password_hash is bcrypt (cost 12) over HMAC-SHA256(pepper, password): useless without
--     the pepper, which never sits next to the database;
--   * the TOTP secret is AES-256-GCM ciphertext (a fresh random nonce per enrollment) under a
--     key derived from the pepper, HMAC-SHA256(pepper, "agent-secret-store/operator-totp-seal/
--     v1\0"), its AAD binding the tenant and the operator id under its own domain tag
--     ("agent-secret-store/operator-totp/v1"), so it cannot be moved to another operator,
--     tenant or a secret row. Not the tenant's KEK: checking a code needs the plaintext on every
--     login, and the control plane may hold an encrypt-only KMS identity (Cloud KMS). So TOTP
--     secrets do not depend on KEK versions (they are not in the KEK inventory), and a new
--     pepper voids every enrollment as it voids every password;
--   * sessions are keyed by HMAC-SHA256(pepper, session secret) and hold the CSRF token only as
--     HMAC-SHA256(pepper, token): the raw session id and CSRF token exist only in the client.

CREATE TABLE operator_accounts (
    operator_id          TEXT PRIMARY KEY REFERENCES operators (id),
    tenant_id            TEXT NOT NULL REFERENCES tenants (id),
    password_hash        TEXT,
    password_changed_at  BIGINT,
    -- The sealed TOTP secret (12-byte nonce and ciphertext || 16-byte tag of a secret of at
    -- least 128 bits: both set or neither) and whether a first code confirmed it; a second factor is only required once confirmed.
    totp_nonce           BYTEA CHECK (length(totp_nonce) = 12),
    totp_ciphertext      BYTEA CHECK (length(totp_ciphertext) >= 32),
    totp_confirmed_at    BIGINT,
    -- RFC 6238 section 5.2: the step of the last accepted code. Logins set it with a
    -- conditional UPDATE ... WHERE totp_last_step < $step, so a code is accepted once, even
    -- by two replicas at the same moment.
    totp_last_step       BIGINT NOT NULL DEFAULT 0,
    -- Per-account throttle, shared by every replica: failures since the last success or
    -- lock-out, the lock-out in force, and how many lock-outs in a row (each one doubles).
    failed_logins        INTEGER NOT NULL DEFAULT 0 CHECK (failed_logins >= 0),
    locked_until         BIGINT,
    lockouts             INTEGER NOT NULL DEFAULT 0 CHECK (lockouts >= 0),
    disabled_at          BIGINT,
    created_at           BIGINT NOT NULL,
    CHECK ((totp_nonce IS NULL) = (totp_ciphertext IS NULL)),
    UNIQUE (tenant_id, operator_id)
);

CREATE TABLE operator_logins (
    tenant_name  TEXT NOT NULL,
    username     TEXT NOT NULL,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    operator_id  TEXT NOT NULL UNIQUE REFERENCES operators (id),
    PRIMARY KEY (tenant_name, username)
);

-- Idle expiry is `last_seen_at + idle timeout` (configuration, so a shorter setting applies to
-- sessions already open); `expires_at` is the absolute end fixed at login.
CREATE TABLE operator_sessions (
    id_hash       BYTEA PRIMARY KEY CHECK (length(id_hash) = 32),
    tenant_id     TEXT NOT NULL REFERENCES tenants (id),
    operator_id   TEXT NOT NULL,
    csrf_hash     BYTEA NOT NULL CHECK (length(csrf_hash) = 32),
    created_at    BIGINT NOT NULL,
    last_seen_at  BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    revoked_at    BIGINT,
    ip            TEXT,
    user_agent    TEXT,
    CHECK (expires_at >= created_at),
    FOREIGN KEY (tenant_id, operator_id) REFERENCES operator_accounts (tenant_id, operator_id)
);
CREATE INDEX operator_sessions_by_operator ON operator_sessions (tenant_id, operator_id);

ALTER TABLE operator_accounts ENABLE ROW LEVEL SECURITY;
ALTER TABLE operator_accounts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON operator_accounts
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

ALTER TABLE operator_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE operator_sessions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON operator_sessions
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));
