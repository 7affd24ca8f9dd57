-- `token.expired` is written once per token by the expiry sweeper
-- (control-plane/src/service/expiry.rs): the conditional UPDATE that sets `expiry_recorded`
-- claims the token, in the transaction that appends the event, so replicas racing on the same
-- tokens record each expiry exactly once. Tokens that expired before this migration are
-- recorded by the first sweep (late, with their real expiry time in the reason).
ALTER TABLE tokens ADD COLUMN expiry_recorded BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX tokens_expiry_due ON tokens (tenant_id, expires_at) WHERE NOT expiry_recorded;
