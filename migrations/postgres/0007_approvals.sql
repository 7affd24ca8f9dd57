-- Issue 12, "Authorization": agent ceilings, approval requests and human decisions.
-- The lifecycle is described in docs/approvals.md.
--
-- agents.ceiling: the scopes the agent may ever be granted (a JSON array of scope strings, read
-- and written whole). Agents that exist when this migration runs keep what they could do
-- before it (every action on every path), so an upgrade breaks no running agent; admins narrow
-- them with `agent deny`. The column default then becomes the empty ceiling: an agent created
-- from now on may be granted nothing until an admin allows it something.
ALTER TABLE agents ADD COLUMN ceiling TEXT NOT NULL
    DEFAULT '["secrets:read:**","secrets:write:**","secrets:delete:**","secrets:list:**"]';
ALTER TABLE agents ALTER COLUMN ceiling SET DEFAULT '[]';
-- The operator who created the agent (NULL for agents created before this migration): by
-- default they may not approve its requests.
ALTER TABLE agents ADD COLUMN created_by TEXT;

-- One request per pending token, or an operator's request to widen an agent's ceiling (no
-- token: `token_id` NULL). `unlocks` is the JSON of what approving it would unlock as
-- last evaluated (api::Unlocks: secrets with their sensitivities, TTL, IP allowlist, max_uses,
-- the agent and its tier, scopes added to the ceiling) and `digest` its SHA-256; both are
-- refreshed whenever an evaluation finds them changed, which voids earlier approvals.
CREATE TABLE approval_requests (
    id                  TEXT PRIMARY KEY,
    tenant_id           TEXT NOT NULL REFERENCES tenants (id),
    token_id            TEXT UNIQUE REFERENCES tokens (id),
    agent_id            TEXT NOT NULL,
    -- `agent:<id>` or `operator:<id>`: an operator never approves their own request.
    requested_by        TEXT NOT NULL,
    status              TEXT NOT NULL
                        CHECK (status IN ('pending', 'approved', 'denied', 'expired')),
    unlocks             TEXT NOT NULL,
    digest              BYTEA NOT NULL CHECK (length(digest) = 32),
    required_approvals  INTEGER NOT NULL CHECK (required_approvals >= 0),
    delay_seconds       BIGINT NOT NULL CHECK (delay_seconds >= 0),
    -- Set when the quorum is reached: the token turns active at this time.
    time_lock_until     BIGINT,
    created_at          BIGINT NOT NULL,
    expires_at          BIGINT NOT NULL,
    decided_at          BIGINT,
    FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id)
);
CREATE INDEX approval_requests_by_status ON approval_requests (tenant_id, status, created_at);

-- Each human's decision on one digest of a request. Written once (the service may only
-- SELECT and INSERT): the primary key makes the same human count once per digest.
CREATE TABLE approval_decisions (
    request_id   TEXT NOT NULL REFERENCES approval_requests (id),
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    operator_id  TEXT NOT NULL,
    decision     TEXT NOT NULL CHECK (decision IN ('approve', 'deny')),
    digest       BYTEA NOT NULL CHECK (length(digest) = 32),
    comment      TEXT,
    decided_at   BIGINT NOT NULL,
    PRIMARY KEY (request_id, operator_id, digest)
);

ALTER TABLE approval_requests ENABLE ROW LEVEL SECURITY;
ALTER TABLE approval_requests FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON approval_requests
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

ALTER TABLE approval_decisions ENABLE ROW LEVEL SECURITY;
ALTER TABLE approval_decisions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON approval_decisions
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));
