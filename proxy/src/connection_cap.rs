//! `max_agent_connections` (config/proxy.toml): how many agent connections the sidecar serves
//! at once. Past the cap the accept loop stops accepting rather than refusing, so the waiting
//! connections queue in the kernel's listen backlog at no cost to the sidecar, and are served
//! in order as others close.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntGauge};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::metrics::Metrics;

/// Room for `max_agent_connections` (config/proxy.toml): a connection holds an [`Open`] for
/// as long as it is served.
pub(crate) struct Slots {
    free: Arc<Semaphore>,
    max: usize,
    open: IntGauge,
    cap_reached: IntCounter,
    last_warned: Option<Instant>,
}

/// One agent connection being served; counted in `agent_connections` until dropped.
pub(crate) struct Open {
    _slot: OwnedSemaphorePermit,
    gauge: IntGauge,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

impl Slots {
    /// A full sidecar says so at most this often; the counter counts every time.
    const WARN_EVERY: Duration = Duration::from_secs(60);

    pub(crate) fn new(max: usize, metrics: &Metrics) -> Slots {
        Slots {
            free: Arc::new(Semaphore::new(max)),
            max,
            open: metrics.agent_connections.clone(),
            cap_reached: metrics.agent_connection_cap_reached.clone(),
            last_warned: None,
        }
    }

    /// Room for the next connection, waiting for one to close when all are taken; `None`
    /// once `shutdown` fires.
    pub(crate) async fn next(&mut self, shutdown: &mut watch::Receiver<bool>) -> Option<Open> {
        let slot = match self.free.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                self.cap_reached.inc();
                if self
                    .last_warned
                    .is_none_or(|at| at.elapsed() >= Self::WARN_EVERY)
                {
                    self.last_warned = Some(Instant::now());
                    tracing::warn!(
                        max_agent_connections = self.max,
                        "agent connection cap reached; new connections wait in the listen backlog until one closes"
                    );
                }
                tokio::select! {
                    slot = self.free.clone().acquire_owned() => slot.ok()?,
                    _ = crate::stopped(shutdown) => return None,
                }
            }
        };
        self.open.inc();
        Some(Open {
            _slot: slot,
            gauge: self.open.clone(),
        })
    }
}

#[cfg(test)]
mod tests;
