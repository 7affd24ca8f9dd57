-- The audit log is append-only: triggers refuse UPDATE and DELETE. SQLite has no TRUNCATE;
-- `DELETE FROM audit_events` is its equivalent, and the presence of a DELETE trigger also
-- disables SQLite's truncate optimisation, so that statement is refused row by row too.
CREATE TRIGGER audit_events_no_update
BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only: UPDATE refused');
END;

CREATE TRIGGER audit_events_no_delete
BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only: DELETE refused');
END;
