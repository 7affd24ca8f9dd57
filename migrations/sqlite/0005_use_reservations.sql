-- Reserved uses of `max_uses` tokens; see migrations/postgres/0006_use_reservations.sql.
CREATE TABLE token_reservations (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    token_id     TEXT NOT NULL REFERENCES tokens (id),
    sidecar_id   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    deadline     INTEGER NOT NULL,
    released_at  INTEGER,
    CHECK (deadline >= created_at)
) STRICT;
CREATE INDEX token_reservations_by_token ON token_reservations (tenant_id, token_id, deadline);
