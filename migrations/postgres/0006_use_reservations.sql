-- Issue 10, "use counting on failure": a use of a `max_uses` token is reserved at resolve and
-- given back if the sidecar could not inject the value (KMS down, decrypt error, a refusal
-- after resolve).
--
-- `tokens.uses` keeps counting reserved and spent uses together, so the one conditional
-- `uses < max_uses` UPDATE stays the only gate and N parallel uses still grant exactly
-- max_uses. Each reservation of a counted use is a row here; a release decrements `uses` and
-- sets `released_at` in one transaction, and only while `deadline` has not passed. A
-- reservation never released is spent at its deadline without any write (the fail-safe
-- direction: the control plane cannot know whether a value it handed out was used, so only the
-- sidecar's explicit, timely word gives a use back, and never twice).
--
-- Rows past their deadline carry no meaning any more; the next reservation of the same token
-- deletes them, so the table holds about the uses in flight. Ids and times only, no secrets.
CREATE TABLE token_reservations (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    token_id     TEXT NOT NULL REFERENCES tokens (id),
    -- The sidecar that resolved; only it may release.
    sidecar_id   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    deadline     BIGINT NOT NULL,
    released_at  BIGINT,
    CHECK (deadline >= created_at)
);
CREATE INDEX token_reservations_by_token ON token_reservations (tenant_id, token_id, deadline);

ALTER TABLE token_reservations ENABLE ROW LEVEL SECURITY;
ALTER TABLE token_reservations FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON token_reservations
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));
