//! Request rate limits (token buckets from the `governor` crate, keyed by subject) and the
//! once-per-window bookkeeping that keeps a tripped limit from writing an audit event per
//! refused request.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use agent_secret_core::ids::{AgentId, SidecarId};
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};

use super::ClientAddr;
use crate::config::{RateLimit, RateLimitsConfig};

/// The limits, as metric labels and in messages: a closed set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Limit {
    TokensPerAgent,
    TokensPerIp,
    ResolvePerSidecar,
    ResolvePerIp,
    AuthFailuresPerIp,
    McpPerAgent,
}

impl Limit {
    pub const ALL: [Limit; 6] = [
        Self::TokensPerAgent,
        Self::TokensPerIp,
        Self::ResolvePerSidecar,
        Self::ResolvePerIp,
        Self::AuthFailuresPerIp,
        Self::McpPerAgent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::TokensPerAgent => "tokens_per_agent",
            Self::TokensPerIp => "tokens_per_ip",
            Self::ResolvePerSidecar => "resolve_per_sidecar",
            Self::ResolvePerIp => "resolve_per_ip",
            Self::AuthFailuresPerIp => "auth_failures_per_ip",
            Self::McpPerAgent => "mcp_per_agent",
        }
    }
}

/// A refused request: which limit, whose, and how long until one fits again.
#[derive(Clone, Debug)]
pub struct Refused {
    pub limit: Limit,
    /// The agent, sidecar or address the limit counts (never a credential).
    pub subject: String,
    pub retry_after: Duration,
    /// `"20/s, burst 100"`, for the audit event.
    pub rate: String,
}

impl Refused {
    /// Whole seconds for `Retry-After`, rounded up and at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        retry_after_secs(self.retry_after)
    }
}

pub(super) fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// One keyed token bucket and its settings.
pub(super) struct Bucket<K: Hash + Eq + Clone> {
    limit: Limit,
    setting: RateLimit,
    limiter: DefaultKeyedRateLimiter<K>,
}

impl<K: Hash + Eq + Clone> Bucket<K> {
    pub(super) fn new(limit: Limit, setting: RateLimit) -> Self {
        let rate = NonZeroU32::new(setting.per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(setting.burst).unwrap_or(NonZeroU32::MIN);
        Bucket {
            limit,
            setting,
            limiter: DefaultKeyedRateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
        }
    }

    /// Takes one cell for `key`, or says how long until one is free.
    pub(super) fn check(&self, key: &K, subject: impl FnOnce() -> String) -> Result<(), Refused> {
        self.limiter.check_key(key).map_err(|not_until| Refused {
            limit: self.limit,
            subject: subject(),
            retry_after: not_until.wait_time_from(self.limiter.clock().now()),
            rate: format!(
                "{}/s, burst {}",
                self.setting.per_second, self.setting.burst
            ),
        })
    }

    /// Forgets keys whose bucket has refilled: they are indistinguishable from new ones.
    pub(super) fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.limiter.len()
    }
}

pub struct RateLimits {
    tokens_per_agent: Bucket<AgentId>,
    tokens_per_ip: Bucket<ClientAddr>,
    resolve_per_sidecar: Bucket<SidecarId>,
    resolve_per_ip: Bucket<ClientAddr>,
    mcp_per_agent: Bucket<AgentId>,
}

impl RateLimits {
    pub fn new(config: &RateLimitsConfig) -> RateLimits {
        RateLimits {
            tokens_per_agent: Bucket::new(Limit::TokensPerAgent, config.tokens_per_agent),
            tokens_per_ip: Bucket::new(Limit::TokensPerIp, config.tokens_per_ip),
            resolve_per_sidecar: Bucket::new(Limit::ResolvePerSidecar, config.resolve_per_sidecar),
            resolve_per_ip: Bucket::new(Limit::ResolvePerIp, config.resolve_per_ip),
            mcp_per_agent: Bucket::new(Limit::McpPerAgent, config.mcp_per_agent),
        }
    }

    /// `POST /v1/tokens`: the agent's bucket, then its address's.
    pub fn check_token_issue(&self, agent: AgentId, ip: Option<IpAddr>) -> Result<(), Refused> {
        self.tokens_per_agent
            .check(&agent, || format!("agent:{agent}"))?;
        check_addr(&self.tokens_per_ip, ip)
    }

    /// `POST /v1/sidecar/resolve`: the sidecar's bucket, then its address's.
    pub fn check_resolve(&self, sidecar: SidecarId, ip: Option<IpAddr>) -> Result<(), Refused> {
        self.resolve_per_sidecar
            .check(&sidecar, || format!("sidecar:{sidecar}"))?;
        check_addr(&self.resolve_per_ip, ip)
    }

    /// `/mcp`: every JSON-RPC request of one agent (by key or by any of its tokens).
    pub fn check_mcp(&self, agent: AgentId) -> Result<(), Refused> {
        self.mcp_per_agent
            .check(&agent, || format!("agent:{agent}"))
    }

    pub fn prune(&self) {
        self.mcp_per_agent.prune();
        self.tokens_per_agent.prune();
        self.tokens_per_ip.prune();
        self.resolve_per_sidecar.prune();
        self.resolve_per_ip.prune();
    }
}

/// A request without a peer address (in-process tests) has no address bucket.
fn check_addr(bucket: &Bucket<ClientAddr>, ip: Option<IpAddr>) -> Result<(), Refused> {
    match ip.map(ClientAddr::of) {
        Some(addr) => bucket.check(&addr, || format!("ip:{addr}")),
        None => Ok(()),
    }
}

/// Remembers when each subject last raised an alert, so a limit that stays tripped raises one
/// audit event per window instead of one per refused request.
pub struct AlertWindows {
    window: Duration,
    raised: Mutex<HashMap<String, Instant>>,
}

impl AlertWindows {
    pub fn new(window: Duration) -> AlertWindows {
        AlertWindows {
            window,
            raised: Mutex::default(),
        }
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Instant>> {
        // Plain inserts and removals: a panicking holder cannot leave the map inconsistent.
        self.raised.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// True the first time `key` trips in a window (the caller then writes the event).
    pub fn first(&self, key: String) -> bool {
        let now = Instant::now();
        let mut raised = self.lock();
        match raised.get(&key) {
            Some(at) if now.duration_since(*at) < self.window => false,
            _ => {
                raised.insert(key, now);
                true
            }
        }
    }

    /// Forgets windows that have closed.
    pub fn prune(&self) {
        let window = self.window;
        self.lock().retain(|_, at| at.elapsed() < window);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_bucket_refuses_past_its_burst_with_a_wait_and_other_keys_are_unaffected() {
        let bucket = Bucket::new(
            Limit::TokensPerAgent,
            RateLimit {
                per_second: 1,
                burst: 3,
            },
        );
        for _ in 0..3 {
            bucket.check(&1u32, String::new).unwrap();
        }
        let refused = bucket.check(&1u32, || "agent:1".into()).unwrap_err();
        assert_eq!(refused.limit, Limit::TokensPerAgent);
        assert!(refused.retry_after > Duration::ZERO);
        assert_eq!(refused.retry_after_secs(), 1);
        assert_eq!(refused.rate, "1/s, burst 3");
        bucket.check(&2u32, String::new).unwrap();
    }

    #[test]
    fn pruning_forgets_refilled_keys() {
        let bucket = Bucket::new(
            Limit::ResolvePerIp,
            RateLimit {
                per_second: 1000,
                burst: 1,
            },
        );
        for key in 0..100u32 {
            bucket.check(&key, String::new).unwrap();
        }
        assert_eq!(bucket.len(), 100);
        std::thread::sleep(Duration::from_millis(20));
        bucket.prune();
        assert_eq!(bucket.len(), 0);
    }

    #[test]
    fn an_alert_is_raised_once_per_window_per_subject() {
        let alerts = AlertWindows::new(Duration::from_secs(60));
        assert!(alerts.first("tokens_per_agent|a".into()));
        assert!(!alerts.first("tokens_per_agent|a".into()));
        assert!(alerts.first("tokens_per_agent|b".into()));
        let short = AlertWindows::new(Duration::from_millis(1));
        assert!(short.first("x".into()));
        std::thread::sleep(Duration::from_millis(5));
        assert!(short.first("x".into()));
        short.prune();
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
