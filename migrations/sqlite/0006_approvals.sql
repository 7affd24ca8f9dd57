-- Agent ceilings, approval requests and decisions; see migrations/postgres/0007_approvals.sql.
-- SQLite cannot change a column default afterwards: agents that exist now keep every action on
-- every path, and the store always writes the ceiling of a new agent explicitly.
ALTER TABLE agents ADD COLUMN ceiling TEXT NOT NULL
    DEFAULT '["secrets:read:**","secrets:write:**","secrets:delete:**","secrets:list:**"]';
ALTER TABLE agents ADD COLUMN created_by TEXT;

CREATE TABLE approval_requests (
    id                  TEXT PRIMARY KEY,
    tenant_id           TEXT NOT NULL REFERENCES tenants (id),
    token_id            TEXT UNIQUE REFERENCES tokens (id),
    agent_id            TEXT NOT NULL,
    requested_by        TEXT NOT NULL,
    status              TEXT NOT NULL
                        CHECK (status IN ('pending', 'approved', 'denied', 'expired')),
    unlocks             TEXT NOT NULL,
    digest              BLOB NOT NULL CHECK (length(digest) = 32),
    required_approvals  INTEGER NOT NULL CHECK (required_approvals >= 0),
    delay_seconds       INTEGER NOT NULL CHECK (delay_seconds >= 0),
    time_lock_until     INTEGER,
    created_at          INTEGER NOT NULL,
    expires_at          INTEGER NOT NULL,
    decided_at          INTEGER,
    FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id)
) STRICT;
CREATE INDEX approval_requests_by_status ON approval_requests (tenant_id, status, created_at);

CREATE TABLE approval_decisions (
    request_id   TEXT NOT NULL REFERENCES approval_requests (id),
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    operator_id  TEXT NOT NULL,
    decision     TEXT NOT NULL CHECK (decision IN ('approve', 'deny')),
    digest       BLOB NOT NULL CHECK (length(digest) = 32),
    comment      TEXT,
    decided_at   INTEGER NOT NULL,
    PRIMARY KEY (request_id, operator_id, digest)
) STRICT;
