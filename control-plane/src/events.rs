//! Change events for sidecars (`GET /v1/sidecar/watch`): revocations, key rotations, secret
//! updates. They let sidecars drop cached grants and values within a second instead of waiting
//! for a cache TTL.
//!
//! With several control-plane replicas on one PostgreSQL database, an event raised on any
//! replica must reach sidecars watching any other: events are published with `pg_notify` and
//! every replica (the publisher included) `LISTEN`s and fans them out to its local
//! subscribers. On SQLite there is one replica and events go straight to the local channel.
//!
//! NOTIFYs sent while a replica's LISTEN connection is down are lost for that replica, and it
//! cannot know which. So whenever the listener comes back (sqlx reconnects it transparently,
//! or we open a new one after an error), the replica raises a *resync*: every watch stream it
//! serves, whatever the tenant, sends `resync` and its sidecar flushes every cached grant and
//! value. A sidecar that reconnects its own stream flushes too, and cache TTLs bound staleness
//! should anything else be lost.

use std::sync::Arc;
use std::time::Duration;

use agent_secret_core::api::WatchEvent;
use agent_secret_core::ids::{SidecarId, TenantId};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::{broadcast, watch};

/// PostgreSQL notification channel carrying `TenantEvent` JSON.
pub const CHANNEL: &str = "agent_secret_store_events";
/// Events buffered per subscriber; a subscriber that falls further behind is disconnected
/// (its sidecar reconnects and flushes its caches).
const BUFFER: usize = 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantEvent {
    pub tenant: TenantId,
    pub signal: Signal,
}

/// What travels between replicas: events for sidecars, and control signals for the watch
/// streams themselves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// Forwarded to every watcher of the tenant.
    Watch(WatchEvent),
    /// Ends that sidecar's watch streams: a revoked key must stop hearing its tenant's events.
    SidecarRevoked(SidecarId),
}

pub struct EventHub {
    local: broadcast::Sender<TenantEvent>,
    /// Bumped on every resync; each watch stream holds a receiver and reacts to a change.
    resync: Arc<watch::Sender<u64>>,
    postgres: Option<PgPool>,
}

impl Default for EventHub {
    fn default() -> Self {
        Self::local()
    }
}

impl EventHub {
    /// Single replica: publish goes straight to local subscribers.
    pub fn local() -> EventHub {
        EventHub {
            local: broadcast::channel(BUFFER).0,
            resync: Arc::new(watch::channel(0).0),
            postgres: None,
        }
    }

    /// Replicas sharing `pool`'s database: publish through `pg_notify`, and a background task
    /// listens (reconnecting after errors, then raising a resync) and fans notifications out
    /// to local subscribers.
    pub fn postgres(pool: PgPool) -> EventHub {
        let local = broadcast::channel(BUFFER).0;
        let resync = Arc::new(watch::channel(0).0);
        tokio::spawn(listen(pool.clone(), local.clone(), resync.clone()));
        EventHub {
            local,
            resync,
            postgres: Some(pool),
        }
    }

    /// True when events reach only this process's watchers (SQLite: one replica), so a change
    /// recorded by another process (the CLI) must be announced by this one.
    pub fn is_local(&self) -> bool {
        self.postgres.is_none()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<TenantEvent> {
        self.local.subscribe()
    }

    /// Resync requests: `changed()` fires on every resync raised after this call.
    pub fn resyncs(&self) -> watch::Receiver<u64> {
        self.resync.subscribe()
    }

    /// Tells every local watcher, of every tenant, to flush its caches: events may have been
    /// missed. Local only: each replica raises its own when its listener reconnects.
    pub fn request_resync(&self) {
        raise_resync(&self.resync);
    }

    /// Publishes after the change has committed. A failure is logged, not returned: the
    /// change stands, and sidecar cache TTLs bound how long a missed event matters.
    pub async fn publish(&self, tenant: TenantId, event: WatchEvent) {
        self.signal(tenant, Signal::Watch(event)).await;
    }

    /// Like [`publish`](Self::publish), for any signal.
    pub async fn signal(&self, tenant: TenantId, signal: Signal) {
        let event = TenantEvent { tenant, signal };
        match &self.postgres {
            None => {
                // No subscriber is not an error.
                let _ = self.local.send(event);
            }
            Some(pool) => {
                let payload = match serde_json::to_string(&event) {
                    Ok(p) => p,
                    Err(e) => return tracing::error!(error = %e, "event encoding failed"),
                };
                if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(CHANNEL)
                    .bind(payload)
                    .execute(pool)
                    .await
                {
                    tracing::error!(error = %e, "could not publish a watch event");
                }
            }
        }
    }
}

fn raise_resync(resync: &watch::Sender<u64>) {
    resync.send_modify(|generation| *generation = generation.wrapping_add(1));
}

async fn listen(
    pool: PgPool,
    local: broadcast::Sender<TenantEvent>,
    resync: Arc<watch::Sender<u64>>,
) {
    let mut backoff = Duration::from_millis(100);
    // The first LISTEN missed nothing: watchers connecting now flush on connect anyway.
    let mut listened_before = false;
    loop {
        let mut connected = false;
        match listen_once(&pool, &local, &resync, &mut listened_before, &mut connected).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, "event listener lost its connection; reconnecting");
                if connected {
                    backoff = Duration::from_millis(100);
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Runs until the connection fails and cannot be re-established (`Err`) or nobody can
/// subscribe any more (`Ok`). Raises a resync once LISTEN is in place again after any gap,
/// never before: an event sent between the resync and the LISTEN would be lost again.
async fn listen_once(
    pool: &PgPool,
    local: &broadcast::Sender<TenantEvent>,
    resync: &watch::Sender<u64>,
    listened_before: &mut bool,
    connected: &mut bool,
) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // Reconnect inside `try_recv` (re-issuing LISTEN) before it reports the gap as `None`.
    listener.eager_reconnect(true);
    listener.listen(CHANNEL).await?;
    *connected = true;
    if std::mem::replace(listened_before, true) {
        tracing::warn!("event listener is back; telling watchers to resync");
        raise_resync(resync);
    }
    loop {
        match listener.try_recv().await? {
            Some(notification) => {
                match serde_json::from_str::<TenantEvent>(notification.payload()) {
                    Ok(event) => {
                        let _ = local.send(event);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "ignoring a malformed watch notification")
                    }
                }
            }
            None => {
                tracing::warn!(
                    "event listener reconnected; events may have been missed, resyncing"
                );
                raise_resync(resync);
            }
        }
        if local.receiver_count() == 0 && local.strong_count() <= 1 {
            // Only this task still holds the sender: the hub is gone.
            return Ok(());
        }
    }
}
