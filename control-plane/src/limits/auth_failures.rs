//! Failed authentications per client address: a rate limit with a penalty box, and the
//! aggregation of `auth.failed` audit events.
//!
//! Each failed authentication takes a cell from its address's bucket. When the bucket is empty
//! the address goes into the penalty box until the bucket is full again (the `Retry-After` it
//! is told), and every request from it is refused before its credential is checked, so a
//! guesser learns nothing (not even that a guess was right) while it is over the limit.
//!
//! A guesser must not be able to flood a tenant's audit log either: the first failure of an
//! address against a tenant is written at once; the ones after it within the window are only
//! counted, and written as one event with their count when the window closes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use agent_secret_core::ids::TenantId;

use super::rates::{retry_after_secs, Bucket, Limit, Refused};
use super::ClientAddr;
use crate::audit::{now_micros, Actor, AuditDraft};
use crate::config::RateLimit;
use crate::store::AuditStore;

/// Failures of one address against one tenant within a window.
struct Burst {
    opened: Instant,
    /// Failures after the first (which was written when the burst opened).
    more: u64,
    /// The first failure's event; the summary reuses its actor (if every attempt used the
    /// same credential id), address and user agent.
    first: AuditDraft,
    same_actor: bool,
}

type BurstKey = (TenantId, Option<ClientAddr>);

pub struct AuthFailures {
    bucket: Bucket<ClientAddr>,
    /// How long an address that emptied its bucket is refused: until the bucket is full again.
    lockout: Duration,
    window: Duration,
    penalties: Mutex<HashMap<ClientAddr, Instant>>,
    bursts: Mutex<HashMap<BurstKey, Burst>>,
}

/// Every critical section below is a plain map update: a panicking holder cannot leave a map
/// half-written, so a poisoned lock is safe to keep using.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl AuthFailures {
    pub fn new(setting: RateLimit, window: Duration) -> AuthFailures {
        let refill = setting.burst.div_ceil(setting.per_second.max(1));
        AuthFailures {
            bucket: Bucket::new(Limit::AuthFailuresPerIp, setting),
            lockout: Duration::from_secs(u64::from(refill).max(1)),
            window,
            penalties: Mutex::default(),
            bursts: Mutex::default(),
        }
    }

    /// Refuses an address in the penalty box, before its credential is looked at.
    pub fn check(&self, ip: Option<IpAddr>) -> Result<(), Refused> {
        let Some(addr) = ip.map(ClientAddr::of) else {
            return Ok(());
        };
        let now = Instant::now();
        let mut penalties = lock(&self.penalties);
        match penalties.get(&addr) {
            Some(until) if *until > now => Err(self.refused(addr, *until - now)),
            Some(_) => {
                penalties.remove(&addr);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Counts one failure of `ip`; `Err` when it went over the limit. The address is then in
    /// the penalty box until its bucket would be full again (`burst / per_second`, at least
    /// the wait for one cell), the whole seconds it is told in `Retry-After`.
    pub fn count(&self, ip: Option<IpAddr>) -> Result<(), Refused> {
        let Some(addr) = ip.map(ClientAddr::of) else {
            return Ok(());
        };
        self.bucket
            .check(&addr, || format!("ip:{addr}"))
            .map_err(|mut refused| {
                let wait =
                    Duration::from_secs(retry_after_secs(refused.retry_after)).max(self.lockout);
                lock(&self.penalties).insert(addr, Instant::now() + wait);
                refused.retry_after = wait;
                refused
            })
    }

    fn refused(&self, addr: ClientAddr, wait: Duration) -> Refused {
        Refused {
            limit: Limit::AuthFailuresPerIp,
            subject: format!("ip:{addr}"),
            retry_after: wait,
            rate: String::new(),
        }
    }

    /// Audits one failure against `tenant`: written now if it opens a burst, else counted into
    /// the burst's summary. A summary of a closed burst under the same key is written first.
    pub async fn record(
        &self,
        store: &(dyn AuditStore + Send + Sync),
        tenant: TenantId,
        ip: Option<IpAddr>,
        draft: AuditDraft,
    ) {
        let key = (tenant, ip.map(ClientAddr::of));
        let (closed, write_now) = {
            let mut bursts = lock(&self.bursts);
            let closed = match bursts.get_mut(&key) {
                Some(burst) if burst.opened.elapsed() < self.window => {
                    burst.more += 1;
                    burst.same_actor &= burst.first.actor == draft.actor;
                    return;
                }
                Some(_) => bursts.remove(&key),
                None => None,
            };
            bursts.insert(
                key,
                Burst {
                    opened: Instant::now(),
                    more: 0,
                    first: draft.clone(),
                    same_actor: true,
                },
            );
            (closed, draft)
        };
        if let Some(burst) = closed {
            self.write_summary(store, tenant, burst).await;
        }
        write(store, tenant, write_now).await;
    }

    /// Writes the summary of every burst whose window has closed (`all`: of every burst, at
    /// shutdown).
    pub async fn flush(&self, store: &(dyn AuditStore + Send + Sync), all: bool) {
        let closed: Vec<(BurstKey, Burst)> = {
            let mut bursts = lock(&self.bursts);
            let keys: Vec<BurstKey> = bursts
                .iter()
                .filter(|(_, b)| all || b.opened.elapsed() >= self.window)
                .map(|(k, _)| *k)
                .collect();
            keys.into_iter()
                .filter_map(|k| bursts.remove(&k).map(|b| (k, b)))
                .collect()
        };
        for ((tenant, _), burst) in closed {
            self.write_summary(store, tenant, burst).await;
        }
    }

    async fn write_summary(
        &self,
        store: &(dyn AuditStore + Send + Sync),
        tenant: TenantId,
        burst: Burst,
    ) {
        if burst.more == 0 {
            return;
        }
        let mut draft = burst.first;
        if !burst.same_actor {
            draft.actor = Actor::system();
        }
        draft.occurred_at = now_micros();
        draft.success = false;
        draft.reason = Some(format!(
            "invalid_credential: {} more failed authentications from this address in {}s",
            burst.more,
            self.window.as_secs().max(1)
        ));
        write(store, tenant, draft).await;
    }

    /// Forgets refilled buckets and served penalties.
    pub fn prune(&self) {
        self.bucket.prune();
        let now = Instant::now();
        lock(&self.penalties).retain(|_, until| *until > now);
    }
}

/// The refusal stands even if its event cannot be written (it is logged instead).
async fn write(store: &(dyn AuditStore + Send + Sync), tenant: TenantId, draft: AuditDraft) {
    if let Err(e) = store.append_audit(tenant, draft).await {
        tracing::error!(error = %e, "could not write auth.failed audit event");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn an_address_past_its_failures_is_refused_until_its_bucket_refills() {
        let failures = AuthFailures::new(
            RateLimit {
                per_second: 2,
                burst: 6,
            },
            Duration::from_secs(10),
        );
        let guesser = Some("192.0.2.1".parse().unwrap());
        let other = Some("192.0.2.2".parse().unwrap());
        for _ in 0..6 {
            failures.count(guesser).unwrap();
        }
        let refused = failures.count(guesser).unwrap_err();
        assert_eq!(refused.limit, Limit::AuthFailuresPerIp);
        // 6 cells at 2/s: the whole bucket takes 3 s to refill.
        assert_eq!(refused.retry_after_secs(), 3);
        let waiting = failures.check(guesser).unwrap_err();
        assert!(waiting.retry_after_secs() <= 3);
        failures.check(other).unwrap();
        // Requests without a peer address (in-process callers) are not counted.
        for _ in 0..100 {
            failures.count(None).unwrap();
        }
    }
}
