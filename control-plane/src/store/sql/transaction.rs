//! Tenant-confined transactions and the mapping of database errors to `StoreError`.
//!
//! Every tenant-scoped statement runs inside a transaction opened here:
//! * PostgreSQL: `BEGIN` carries `set_config('app.tenant_id', id, true)` (`SET LOCAL`),
//!   which the row-level-security policies read, so a query that forgot `WHERE tenant_id`
//!   still cannot see another tenant. Reads open `BEGIN READ ONLY`, so a read path that
//!   writes by mistake fails instead of writing.
//! * SQLite: writes open `BEGIN IMMEDIATE`, taking the write lock up front. A deferred
//!   transaction that reads and then writes can deadlock with another one doing the same
//!   (both hold read locks, neither can upgrade, and the busy timeout is not applied); an
//!   immediate one queues on the busy timeout instead.

use agent_secret_core::ids::TenantId;
use sqlx::{AssertSqlSafe, PgPool, Postgres, QueryBuilder, Sqlite, SqlitePool, Transaction};

use crate::store::{StoreError, StoreResult};

/// Opens transactions confined to one tenant.
pub(super) trait TenantPool {
    type Database: sqlx::Database;

    /// A transaction that may write.
    async fn begin_write(
        &self,
        tenant: TenantId,
    ) -> StoreResult<Transaction<'static, Self::Database>>;

    /// A transaction that only reads (a consistent snapshot for multi-statement reads).
    async fn begin_read(
        &self,
        tenant: TenantId,
    ) -> StoreResult<Transaction<'static, Self::Database>>;
}

impl TenantPool for SqlitePool {
    type Database = Sqlite;

    async fn begin_write(&self, _tenant: TenantId) -> StoreResult<Transaction<'static, Sqlite>> {
        self.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)
    }

    async fn begin_read(&self, _tenant: TenantId) -> StoreResult<Transaction<'static, Sqlite>> {
        self.begin().await.map_err(db_error)
    }
}

impl TenantPool for PgPool {
    type Database = Postgres;

    async fn begin_write(&self, tenant: TenantId) -> StoreResult<Transaction<'static, Postgres>> {
        self.begin_with(begin_for(tenant, "BEGIN"))
            .await
            .map_err(db_error)
    }

    async fn begin_read(&self, tenant: TenantId) -> StoreResult<Transaction<'static, Postgres>> {
        self.begin_with(begin_for(tenant, "BEGIN READ ONLY"))
            .await
            .map_err(db_error)
    }
}

/// `BEGIN` and the tenant setting as one simple query: one round trip instead of two on every
/// transaction (the resolve path runs two). Isolation stays READ COMMITTED: each statement
/// sees its own snapshot, which nothing relies on (a use is re-checked under the row lock). The tenant id is inlined as a literal because a
/// simple query takes no parameters; it is a `Uuid` rendered as hex digits and hyphens, so it
/// cannot close the quotes.
fn begin_for(tenant: TenantId, begin: &str) -> AssertSqlSafe<String> {
    let id: uuid::Uuid = tenant.0;
    AssertSqlSafe(format!(
        "{begin}; SELECT set_config('app.tenant_id', '{}', true)",
        id.hyphenated()
    ))
}

/// `items` (non-empty) repeated at the end up to the next power of two, for an `IN (...)`
/// list: a list's length is part of the statement's text, and each text is prepared and
/// cached per connection, so a batch of any size reuses one of a few statements. Repeats in
/// an `IN` list change nothing it matches.
pub(super) fn padded<T: Copy>(items: &[T]) -> impl Iterator<Item = T> + '_ {
    let last = items.last().copied();
    let pad = items.len().next_power_of_two() - items.len();
    items
        .iter()
        .copied()
        .chain(std::iter::repeat_n(last, pad).flatten())
}

/// A query builder for the pool's backend, so dynamic filters get the right placeholders.
pub(super) fn query_builder<P: TenantPool>(
    _pool: &P,
    init: &'static str,
) -> QueryBuilder<P::Database>
where
    <P::Database as sqlx::Database>::Arguments: Default,
{
    QueryBuilder::new(init)
}

/// Maps a sqlx error: unique violations become `Conflict` naming the constraint, everything
/// else `Database`. Only server messages and codes are kept, which name tables, columns and
/// constraints but not the values bound to the statement.
pub(super) fn db_error(err: sqlx::Error) -> StoreError {
    match err {
        sqlx::Error::Database(e) if e.is_unique_violation() => {
            StoreError::Conflict(e.constraint().unwrap_or(e.message()).to_owned())
        }
        sqlx::Error::Database(e) => StoreError::Database(match e.code() {
            Some(code) => format!("{code}: {}", e.message()),
            None => e.message().to_owned(),
        }),
        sqlx::Error::RowNotFound => StoreError::NotFound,
        other => StoreError::Database(other.to_string()),
    }
}
