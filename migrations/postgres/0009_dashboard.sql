-- What the dashboard lists. Sidecars: when each last authenticated and the version it
-- reported (its User-Agent), written at most once a minute per sidecar by the control plane
-- (control-plane/src/service/sidecars.rs), never in an audited transaction: a heartbeat, not
-- an event. Tokens: newest first per tenant, for the tokens page.
ALTER TABLE sidecars ADD COLUMN last_seen_at BIGINT;
ALTER TABLE sidecars ADD COLUMN last_version TEXT CHECK (length(last_version) <= 64);
CREATE INDEX tokens_by_created ON tokens (tenant_id, created_at);
