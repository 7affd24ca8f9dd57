//! Grouping for resolves: concurrent resolves of one tenant share one read transaction
//! ([`GroupRead`]) and one write transaction ([`GroupCommit`]).
//!
//! Every granted resolve counts a use and appends `secret.read` events to the tenant's hash
//! chain, and the chain's row lock is held until the commit's WAL flush. One transaction per
//! resolve therefore caps a tenant at one resolve per fsync. Here the first caller for a tenant
//! starts a flush task that takes everything queued for that tenant, commits it as one
//! transaction (`TokenStore::consume_token_uses`), answers each caller, and repeats until the
//! queue is empty. There is no timer: under light load a batch is one use and adds no
//! latency; under load the queue fills while the previous batch commits.
//!
//! Reads are grouped the same way (`TokenStore::resolve_snapshots`): on PostgreSQL a resolve's
//! read is five round trips (the transaction's start with the tenant setting, the token, the
//! secrets, the commit, and the check sqlx makes when the connection goes back to its pool),
//! each waking a database process, and bench/README.md (issue 16, session 17) measured that
//! per-statement overhead, not the statements, as most of PostgreSQL's CPU per resolve. A
//! batch pays it once. Each resolve's admission (its credential and the policy) still decides
//! for that resolve alone, between the two reads, so a refused token reads no secret row.
//!
//! Within a commit, the uses of tokens used once in the batch and holding no reservation are
//! counted by one statement (`consume_token_uses`), so a commit's round trips do not grow
//! with its size.
//!
//! The log still fails closed: a caller gets `Counted` only after the commit that holds its
//! events succeeded; if the batch fails, every caller in it gets the error.
//!
//! A use of a `max_uses` token also writes its reservation row in the same batch (see
//! `release`), under the token row lock its count took, so the count stays exact and a batch
//! still commits once; uses of unlimited tokens carry none and cost nothing more.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use agent_secret_core::ids::{TenantId, TokenId};
use agent_secret_core::path::SecretPath;
use tokio::sync::oneshot;

use crate::store::{
    Snapshot, SnapshotAsk, Store, StoreError, StoreResult, TokenRecord, TokenUse, UseOutcome,
};

/// Most resolves per transaction; the rest wait for the next one.
const MAX_BATCH: usize = 128;
/// Resolves a tenant may have waiting; beyond it callers are refused at once (503) rather than
/// piling up in memory behind a stalled database.
const MAX_WAITING: usize = 4096;
/// Attempts of a batch that PostgreSQL aborted as a deadlock victim or serialization failure
/// (e.g. against an agent-key rotation locking the same token rows in another order).
const BATCH_ATTEMPTS: usize = 3;

/// What one batch does: one store call for all of its items, one outcome per item in order.
pub trait Job: Send + Sync + 'static {
    type Item: Send + 'static;
    type Outcome: Send + 'static;
    fn run(
        store: &Arc<dyn Store>,
        tenant: TenantId,
        items: Vec<Self::Item>,
    ) -> impl Future<Output = StoreResult<Vec<Self::Outcome>>> + Send;
}

/// Counts uses and appends their events: `TokenStore::consume_token_uses`.
pub struct Consume;

impl Job for Consume {
    type Item = TokenUse;
    type Outcome = UseOutcome;
    async fn run(
        store: &Arc<dyn Store>,
        tenant: TenantId,
        uses: Vec<TokenUse>,
    ) -> StoreResult<Vec<UseOutcome>> {
        commit(store, tenant, uses).await
    }
}

/// Reads tokens and the secrets their resolves may see: `TokenStore::resolve_snapshots`.
pub struct Read;

/// One resolve's read: its token, its paths, and its own admission rule (the presented
/// credential and the policy), which decides before any of its secrets are read.
pub struct ReadAsk {
    pub id: TokenId,
    pub paths: Vec<SecretPath>,
    pub admit: Box<dyn Fn(&TokenRecord) -> bool + Send + Sync>,
}

impl Job for Read {
    type Item = ReadAsk;
    type Outcome = Snapshot;
    async fn run(
        store: &Arc<dyn Store>,
        tenant: TenantId,
        reads: Vec<ReadAsk>,
    ) -> StoreResult<Vec<Snapshot>> {
        let asked: Vec<SnapshotAsk<'_>> = reads
            .iter()
            .map(|r| SnapshotAsk {
                id: r.id,
                paths: &r.paths,
            })
            .collect();
        store
            .resolve_snapshots(tenant, &asked, &|i, token| (reads[i].admit)(token))
            .await
    }
}

/// Concurrent resolves' writes, one transaction per batch.
pub type GroupCommit = Group<Consume>;
/// Concurrent resolves' reads, one read transaction per batch.
pub type GroupRead = Group<Read>;

type Reply<J> = oneshot::Sender<StoreResult<<J as Job>::Outcome>>;

/// Per-tenant queues of items waiting for a batch.
pub struct Group<J: Job> {
    queues: Mutex<HashMap<TenantId, Queue<J>>>,
    batch_size: prometheus::Histogram,
}

struct Queue<J: Job> {
    waiting: Vec<(J::Item, Reply<J>)>,
    /// A flush task is running for this tenant and will take `waiting`.
    flushing: bool,
}

impl<J: Job> Default for Queue<J> {
    fn default() -> Self {
        Queue {
            waiting: Vec::new(),
            flushing: false,
        }
    }
}

impl<J: Job> Group<J> {
    /// `batch_size` observes how many items each transaction carried.
    pub fn new(batch_size: prometheus::Histogram) -> Group<J> {
        Group {
            queues: Mutex::default(),
            batch_size,
        }
    }

    /// Runs `one` in the next batch for `tenant`.
    pub async fn run(
        self: &Arc<Self>,
        store: &Arc<dyn Store>,
        tenant: TenantId,
        one: J::Item,
    ) -> StoreResult<J::Outcome> {
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
            let queue = queues.entry(tenant).or_default();
            if queue.waiting.len() >= MAX_WAITING {
                return Err(StoreError::Database(
                    "too many resolves are waiting for the database".into(),
                ));
            }
            queue.waiting.push((one, reply));
            !std::mem::replace(&mut queue.flushing, true)
        };
        if start {
            tokio::spawn(self.clone().flush(store.clone(), tenant));
        }
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Database(
                "the resolve batch was dropped before it ran".into(),
            ))
        })
    }

    async fn flush(self: Arc<Self>, store: Arc<dyn Store>, tenant: TenantId) {
        // If this task dies (a panic in the store), the next caller must start a new one.
        let _reset = ResetOnDrop {
            group: &self,
            tenant,
        };
        while let Some(batch) = self.take(tenant) {
            self.batch_size.observe(batch.len() as f64);
            let (items, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            match J::run(&store, tenant, items).await {
                Ok(outcomes) => {
                    for (reply, outcome) in replies.into_iter().zip(outcomes) {
                        let _ = reply.send(Ok(outcome));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        }
    }

    /// The next batch, or `None` (and the tenant marked idle) when nothing is waiting.
    ///
    /// A caller that went away (the sidecar closed the request) is dropped here, so its use is
    /// not spent and no read is logged for a value nobody received. One that goes away after
    /// this point is counted anyway: the safe direction.
    fn take(&self, tenant: TenantId) -> Option<Vec<(J::Item, Reply<J>)>> {
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        let queue = queues.get_mut(&tenant)?;
        queue.waiting.retain(|(_, reply)| !reply.is_closed());
        if queue.waiting.is_empty() {
            queues.remove(&tenant);
            return None;
        }
        let n = queue.waiting.len().min(MAX_BATCH);
        Some(queue.waiting.drain(..n).collect())
    }
}

/// One batch's transaction, retried if PostgreSQL chose it as a deadlock victim or refused it
/// as a serialization failure: it rolled back whole, so running it again is exact.
async fn commit(
    store: &Arc<dyn Store>,
    tenant: TenantId,
    uses: Vec<TokenUse>,
) -> StoreResult<Vec<UseOutcome>> {
    let mut attempt = 1;
    loop {
        match store.consume_token_uses(tenant, uses.clone()).await {
            Err(StoreError::Database(message))
                if attempt < BATCH_ATTEMPTS
                    && (message.starts_with("40P01") || message.starts_with("40001")) =>
            {
                tracing::warn!(%tenant, attempt, %message, "resolve batch aborted; retrying");
                attempt += 1;
            }
            result => return result,
        }
    }
}

struct ResetOnDrop<'a, J: Job> {
    group: &'a Group<J>,
    tenant: TenantId,
}

impl<J: Job> Drop for ResetOnDrop<'_, J> {
    fn drop(&mut self) {
        // A normal exit already removed the tenant's entry, and a new flush task may own a
        // new one by now: only clean up after a panic.
        if !std::thread::panicking() {
            return;
        }
        let mut queues = self
            .group
            .queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(queue) = queues.get_mut(&self.tenant) {
            // Whoever is still waiting is dropped with its reply (and gets an error), and the
            // next caller starts a new flush task.
            queue.flushing = false;
            queue.waiting.clear();
        }
    }
}
