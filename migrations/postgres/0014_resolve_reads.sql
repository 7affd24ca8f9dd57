-- The resolve path's two reads, each one round trip. A resolve reads the token, checks it in
-- the service (the key hash and the policy), and only then reads the secrets it asked for.
-- In an explicit transaction that was four round trips (BEGIN with the tenant setting, the
-- token, the secrets, COMMIT). Each function below sets the tenant (transaction-local, as
-- 0003_row_level_security.sql requires) and runs its query in the same statement; a
-- statement sent outside a transaction block is its own transaction, so the setting ends
-- with it. Nothing relied on the two reads sharing a transaction: it was READ COMMITTED, and
-- a use is re-checked under the row lock when it is counted.
--
-- SECURITY INVOKER (the default): the caller's privileges and row-level security apply
-- inside, so a role can read through these nothing it could not read directly.

CREATE FUNCTION resolve_token(p_tenant TEXT, p_id TEXT) RETURNS SETOF tokens
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant, true);
    RETURN QUERY SELECT * FROM tokens t WHERE t.tenant_id = p_tenant AND t.id = p_id;
END
$$;

CREATE FUNCTION resolve_secrets(p_tenant TEXT, p_paths TEXT[])
RETURNS TABLE (
    id               TEXT,
    tenant_id        TEXT,
    path             TEXT,
    sensitivity      TEXT,
    allowed_hosts    TEXT,
    current_version  BIGINT,
    created_at       BIGINT,
    updated_at       BIGINT,
    key_name         TEXT,
    key_version      TEXT,
    wrapped_dek      BYTEA,
    nonce            BYTEA,
    ciphertext       BYTEA
)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant, true);
    RETURN QUERY
        SELECT s.id, s.tenant_id, s.path::TEXT, s.sensitivity, s.allowed_hosts,
               s.current_version, s.created_at, s.updated_at, v.key_name, v.key_version,
               v.wrapped_dek, v.nonce, v.ciphertext
        FROM secrets s JOIN secret_versions v
          ON v.tenant_id = s.tenant_id AND v.secret_id = s.id AND v.version = s.current_version
        WHERE s.tenant_id = p_tenant AND s.path = ANY (p_paths)
        ORDER BY s.path;
END
$$;
