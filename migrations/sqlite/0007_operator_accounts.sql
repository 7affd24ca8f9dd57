-- Operator accounts and sessions; see migrations/postgres/0008_operator_accounts.sql for the
-- design (login lookup through operator_logins, what each column holds, why nothing here is a
-- usable secret, how the TOTP secret is sealed and why not under the KEK). Numbered 0007
-- here: the ceilings/approvals work takes 0006.
CREATE TABLE operator_accounts (
    operator_id          TEXT PRIMARY KEY REFERENCES operators (id),
    tenant_id            TEXT NOT NULL REFERENCES tenants (id),
    password_hash        TEXT,
    password_changed_at  INTEGER,
    totp_nonce           BLOB CHECK (length(totp_nonce) = 12),
    totp_ciphertext      BLOB CHECK (length(totp_ciphertext) >= 32),
    totp_confirmed_at    INTEGER,
    totp_last_step       INTEGER NOT NULL DEFAULT 0,
    failed_logins        INTEGER NOT NULL DEFAULT 0 CHECK (failed_logins >= 0),
    locked_until         INTEGER,
    lockouts             INTEGER NOT NULL DEFAULT 0 CHECK (lockouts >= 0),
    disabled_at          INTEGER,
    created_at           INTEGER NOT NULL,
    CHECK ((totp_nonce IS NULL) = (totp_ciphertext IS NULL)),
    UNIQUE (tenant_id, operator_id)
) STRICT;

CREATE TABLE operator_logins (
    tenant_name  TEXT NOT NULL,
    username     TEXT NOT NULL,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    operator_id  TEXT NOT NULL UNIQUE REFERENCES operators (id),
    PRIMARY KEY (tenant_name, username)
) STRICT;

CREATE TABLE operator_sessions (
    id_hash       BLOB PRIMARY KEY CHECK (length(id_hash) = 32),
    tenant_id     TEXT NOT NULL REFERENCES tenants (id),
    operator_id   TEXT NOT NULL,
    csrf_hash     BLOB NOT NULL CHECK (length(csrf_hash) = 32),
    created_at    INTEGER NOT NULL,
    last_seen_at  INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    revoked_at    INTEGER,
    ip            TEXT,
    user_agent    TEXT,
    CHECK (expires_at >= created_at),
    FOREIGN KEY (tenant_id, operator_id) REFERENCES operator_accounts (tenant_id, operator_id)
) STRICT;
CREATE INDEX operator_sessions_by_operator ON operator_sessions (tenant_id, operator_id);
