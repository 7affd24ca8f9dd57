//! `SqlStore`: every store trait on SQLite or PostgreSQL, with one SQL text per operation.
//!
//! Each method runs its statements through `on_db!`, which expands the same code for both
//! backends, inside a tenant-confined transaction (`transaction`). Mutating methods end with
//! the one audit append helper (`audit::AuditChain`), so a change and its audit events commit
//! or roll back together. Rows are decoded into primitive types and converted in `rows`.
//!
//! SQL lives in `&'static str` constants beside the methods that run them; the only dynamic
//! SQL (audit filters, `IN` lists) is built with `QueryBuilder` from constant fragments and
//! bound parameters.

mod agents;
mod approvals;
mod archives;
mod audit;
mod checkpoints;
mod credential_index;
mod keys;
mod operator_accounts;
mod operators;
mod rows;
mod secrets;
mod sidecars;
mod sink_cursors;
mod tenants;
mod tokens;
mod transaction;

use async_trait::async_trait;

use crate::db::{on_db, Db};
use crate::store::{Store, StoreResult};
use transaction::db_error;

/// The SQL implementation of [`Store`]. Cheap to clone (it holds a connection pool).
#[derive(Clone, Debug)]
pub struct SqlStore {
    db: Db,
}

impl SqlStore {
    /// Wraps a migrated database. On PostgreSQL, connect as the service role, not the owner.
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// The underlying database, e.g. for migrations or a test's direct inspection.
    pub fn db(&self) -> &Db {
        &self.db
    }
}

#[async_trait]
impl Store for SqlStore {
    async fn ping(&self) -> StoreResult<()> {
        on_db!(self.db, pool => {
            sqlx::query("SELECT 1").execute(pool).await.map_err(db_error)?;
            Ok(())
        })
    }
}
