//! Revocation push: keep `GET /v1/sidecar/watch` open and drop what the control plane says
//! changed.
//!
//! Caching grants and values is only safe because the control plane tells sidecars at once
//! when a token is revoked, an agent key rotated or revoked, or a secret changed. Every
//! (re)connect flushes the caches, because events sent while the stream was down are lost; so
//! does `resync`, which the control plane sends when it may itself have missed events (its
//! PostgreSQL listener reconnected, or this stream fell behind); an event that cannot be
//! understood flushes them too. A stream silent for longer than the idle timeout
//! (not even a keep-alive comment) is treated as dead, so a half-open connection cannot
//! quietly stop revocations. Reconnection backs off exponentially up to a cap.

use std::time::Duration;

use agent_secret_core::api::WatchEvent;
use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use tokio::sync::watch;

use crate::cache::Caches;
use crate::control_plane::ControlPlane;
use crate::metrics::Metrics;

const INITIAL_BACKOFF: Duration = Duration::from_millis(250);

/// Settings of the watch loop.
#[derive(Clone, Copy, Debug)]
pub struct WatchSettings {
    /// Reconnect when nothing arrived for this long; `None` = never.
    pub idle_timeout: Option<Duration>,
    pub max_backoff: Duration,
}

/// Why one watch session ended.
#[derive(Debug, thiserror::Error)]
enum SessionEnd {
    #[error("{0}")]
    Connect(#[from] crate::control_plane::CpError),
    #[error("stream error: {0}")]
    Stream(String),
    #[error("no data for {0:?}")]
    Idle(Duration),
    #[error("stream closed by the control plane")]
    Closed,
}

/// Run until `shutdown` turns true.
pub async fn run(
    control_plane: ControlPlane,
    caches: Caches,
    metrics: Metrics,
    settings: WatchSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = INITIAL_BACKOFF;
    loop {
        let mut connected = false;
        let end = tokio::select! {
            end = session(&control_plane, &caches, &metrics, settings, &mut connected) => end,
            _ = crate::stopped(&mut shutdown) => break,
        };
        metrics.watch_connected.set(0);
        if connected {
            backoff = INITIAL_BACKOFF;
        }
        tracing::warn!(reason = %end, retry_in = ?backoff, "watch stream ended; reconnecting");
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = crate::stopped(&mut shutdown) => break,
        }
        backoff = (backoff * 2).min(settings.max_backoff);
    }
    metrics.watch_connected.set(0);
}

async fn session(
    control_plane: &ControlPlane,
    caches: &Caches,
    metrics: &Metrics,
    settings: WatchSettings,
    connected: &mut bool,
) -> SessionEnd {
    let response = match control_plane.watch().await {
        Ok(response) => response,
        Err(e) => return e.into(),
    };
    *connected = true;
    caches.flush();
    metrics.watch_connected.set(1);
    tracing::info!("watch stream connected; caches flushed");
    let bytes = futures::stream::unfold(Some(response), move |state| async move {
        let mut response = state?;
        let next = match settings.idle_timeout {
            Some(limit) => match tokio::time::timeout(limit, response.chunk()).await {
                Ok(chunk) => chunk.map_err(|e| SessionEnd::Stream(e.to_string())),
                Err(_) => Err(SessionEnd::Idle(limit)),
            },
            None => response
                .chunk()
                .await
                .map_err(|e| SessionEnd::Stream(e.to_string())),
        };
        match next {
            Ok(Some(chunk)) => Some((Ok::<Bytes, SessionEnd>(chunk), Some(response))),
            Ok(None) => None,
            Err(e) => Some((Err(e), None)),
        }
    });
    let mut events = Box::pin(bytes.eventsource());
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => apply(caches, metrics, &event.event, &event.data).await,
            Err(eventsource_stream::EventStreamError::Transport(end)) => return end,
            Err(e) => return SessionEnd::Stream(e.to_string()),
        }
    }
    SessionEnd::Closed
}

/// Apply one event to the caches. Unknown or unparsable events flush the caches: the sidecar
/// cannot tell what it missed.
pub async fn apply(caches: &Caches, metrics: &Metrics, name: &str, data: &str) {
    let event = match serde_json::from_str::<WatchEvent>(data) {
        Ok(event) => event,
        Err(e) => {
            tracing::warn!(event = name, error = %e, "unparsable watch event; flushing caches");
            caches.flush();
            metrics.watch_events.with_label_values(&["unknown"]).inc();
            return;
        }
    };
    let kind = match &event {
        WatchEvent::TokenRevoked { token_id } => {
            caches.revoke_token(token_id).await;
            "token_revoked"
        }
        WatchEvent::AgentKeyRotated { agent_id } => {
            caches.revoke_agent(agent_id).await;
            "agent_key_rotated"
        }
        WatchEvent::AgentRevoked { agent_id } => {
            caches.revoke_agent(agent_id).await;
            "agent_revoked"
        }
        // A pending token is refused without caching anything, so there is nothing stale to
        // keep; dropping the token's entry keeps that true if a denial is ever cached.
        WatchEvent::TokenApproved { token_id } => {
            caches.forget_token(token_id);
            "token_approved"
        }
        WatchEvent::AgentCeilingChanged { agent_id } => {
            caches.forget_agent(agent_id);
            "agent_ceiling_changed"
        }
        // The control plane cannot tell what it missed: neither can we.
        WatchEvent::Resync => {
            caches.flush();
            tracing::info!("control plane asked for a resync; caches flushed");
            "resync"
        }
        WatchEvent::SecretUpdated { path, .. } => {
            caches.drop_path(path);
            "secret_updated"
        }
        WatchEvent::SecretDeleted { path } => {
            caches.drop_path(path);
            "secret_deleted"
        }
        // Cached values stay valid (a rotation re-encrypts nothing), and the local keyring
        // reloads itself when an envelope names a version it lacks. A sidecar holding a copy
        // of the keyring rather than the shared file needs the new one before `kms rewrap`.
        WatchEvent::KekRotated {
            key_name,
            key_version,
        } => {
            tracing::info!(
                key = %key_name, version = %key_version,
                "KEK rotated; a copied local keyring must be refreshed before `kms rewrap`"
            );
            "kek_rotated"
        }
    };
    tracing::debug!(event = kind, "watch event applied");
    metrics.watch_events.with_label_values(&[kind]).inc();
}
