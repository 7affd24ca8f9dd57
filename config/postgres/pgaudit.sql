-- pgaudit for the Agent Secret Store database: what docs/pgaudit.md describes, as one script.
--
-- Run it as a superuser (or the DBA role of a managed service that may create extensions),
-- connected to the service's database, after the first `migrate` and again after every upgrade:
--
--     psql -v ON_ERROR_STOP=1 -d agent_secret_store -f config/postgres/pgaudit.sql
--
-- It is not a migration (migrations/postgres) on purpose: migrations run as the owner role,
-- which is not a superuser, and `CREATE EXTENSION pgaudit`, creating the audit role and setting
-- the pgaudit.* parameters (superuser-only, so that the audited roles cannot turn them off)
-- all need one.
--
-- Prerequisite: the server runs with `shared_preload_libraries` including 'pgaudit' (Debian:
-- the postgresql-<major>-pgaudit package, then a restart; .ci/run does both). The script stops
-- with an error otherwise, and also when the tables are missing (run `migrate` first).
--
-- Idempotent, one transaction, plain SQL (no psql meta-commands, no database name: everything
-- applies to current_database()), so control-plane/tests/pgaudit.rs runs this very file.
-- Settings take effect for sessions opened afterwards: restart the control plane (or let its
-- pool recycle connections) after the first run.

BEGIN;

DO $$
BEGIN
    IF NOT EXISTS (
        SELECT FROM unnest(string_to_array(current_setting('shared_preload_libraries'), ',')) AS l
        WHERE btrim(l, ' "') = 'pgaudit'
    ) THEN
        RAISE EXCEPTION 'pgaudit is not loaded: add it to shared_preload_libraries and restart '
            'PostgreSQL first (docs/pgaudit.md)';
    END IF;
    IF to_regclass('public.secrets') IS NULL
        OR to_regclass('public.secret_versions') IS NULL
        OR to_regclass('public.tokens') IS NULL
        OR to_regclass('public.audit_events') IS NULL THEN
        RAISE EXCEPTION 'database % has no Agent Secret Store schema: run `migrate` first',
            current_database();
    END IF;
    -- Serialise runs across the whole cluster (the audit role is cluster-wide; advisory locks
    -- are per database): this mode of the shared pg_authid waits for other role changes but
    -- not for logins. Taking it also makes this session read what a run before it committed,
    -- so the ALTER ROLE and GRANT below never start from a stale catalog entry ("tuple
    -- concurrently updated"). Held until COMMIT, a few milliseconds.
    LOCK TABLE pg_catalog.pg_authid IN SHARE ROW EXCLUSIVE MODE;
END
$$;

-- Before any pgaudit.log setting (pgaudit's README): the extension's event triggers add the
-- object type and name to DDL entries.
CREATE EXTENSION IF NOT EXISTS pgaudit;

-- The object-audit role (pgaudit.role). It never logs in and nobody may be a member of it:
-- its grants below only mark what pgaudit logs, and a member would really hold them (UPDATE
-- and DELETE on the append-only audit_events, SELECT on every ciphertext).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'agent_secret_store_auditor') THEN
        CREATE ROLE agent_secret_store_auditor NOLOGIN;
    END IF;
    -- Whatever happened to it since, these are its attributes (rewritten only when they differ).
    IF EXISTS (
        SELECT FROM pg_roles WHERE rolname = 'agent_secret_store_auditor'
            AND (rolcanlogin OR rolsuper OR rolcreatedb OR rolcreaterole OR rolreplication
                OR rolbypassrls)
    ) THEN
        ALTER ROLE agent_secret_store_auditor
            NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
    END IF;
    IF EXISTS (
        SELECT FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid
        WHERE r.rolname = 'agent_secret_store_auditor'
    ) THEN
        RAISE EXCEPTION 'agent_secret_store_auditor has members: revoke its membership from '
            'every role (it is an audit marker, not a role to act as)';
    END IF;
END
$$;

-- Object-level auditing: every SELECT, INSERT, UPDATE and DELETE that touches these tables,
-- by any role, is logged as `AUDIT: OBJECT,...,<CLASS>,<COMMAND>,TABLE,public.<table>,...`.
-- These four hold the ciphertexts, the token hashes and the audit trail; the service's other
-- tables are left out to keep the volume down (add a table here to audit it too).
GRANT SELECT, INSERT, UPDATE, DELETE
    ON public.secrets, public.secret_versions, public.tokens, public.audit_events
    TO agent_secret_store_auditor;

-- The settings, for this database only (ALTER DATABASE ... SET; the role that connects cannot
-- override them: every pgaudit.* parameter is superuser-only). docs/pgaudit.md says why each.
DO $$
DECLARE
    wanted record;
BEGIN
    FOR wanted IN
        SELECT * FROM (VALUES
            -- Object auditing through the role above.
            ('pgaudit.role', 'agent_secret_store_auditor'),
            -- Session auditing of schema changes and of GRANT/REVOKE/role changes only: reads
            -- and writes are covered, table by table, by object auditing.
            ('pgaudit.log', 'ddl, role'),
            -- No noise from catalog-only queries (psql's \d, drivers' type lookups).
            ('pgaudit.log_catalog', 'off'),
            -- One entry per relation, should the session classes ever include read or write.
            ('pgaudit.log_relation', 'on'),
            -- Never copy bind values into the log: they are ciphertexts, wrapped keys, token
            -- hashes and audit details. The service binds every value, so the statement text
            -- logged below holds none.
            ('pgaudit.log_parameter', 'off'),
            -- The (parameterised) statement text on every entry, so each line stands alone in
            -- a SIEM.
            ('pgaudit.log_statement', 'on'),
            ('pgaudit.log_statement_once', 'off'),
            -- How many rows a statement returned or changed (pgaudit 1.7+): a bulk read of
            -- secret_versions stands out. Skipped where the version lacks it.
            ('pgaudit.log_rows', 'on'),
            -- Audit entries go to the server log only, never back to the client.
            ('pgaudit.log_client', 'off'),
            ('pgaudit.log_level', 'log'),
            -- PostgreSQL's own statement logging must not print bind values either (when an
            -- operator turns on log_min_duration_statement or log_statement).
            ('log_parameter_max_length', '0'),
            ('log_parameter_max_length_on_error', '0')
        ) AS s(name, value)
    LOOP
        IF EXISTS (SELECT FROM pg_settings WHERE name = wanted.name) THEN
            EXECUTE format('ALTER DATABASE %I SET %s = %L',
                current_database(), wanted.name, wanted.value);
        ELSE
            RAISE NOTICE '% is not supported by this server; not set', wanted.name;
        END IF;
    END LOOP;
END
$$;

COMMIT;
