-- The audit log is append-only, enforced by the database and not only by the service's
-- grants: row triggers refuse UPDATE and DELETE, a statement trigger refuses TRUNCATE (which
-- fires no row triggers). This holds for the table owner too; only someone able to disable
-- triggers (the owner, deliberately) can edit history, and the hash chain then shows where.
CREATE FUNCTION audit_events_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP
        USING ERRCODE = 'raise_exception';
END;
$$;

CREATE TRIGGER audit_events_no_update_or_delete
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_refuse_change();

CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_refuse_change();
