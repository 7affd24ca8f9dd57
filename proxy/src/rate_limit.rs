//! Per-token and per-agent rate limits on the sidecar (`[rate_limits]` in `config/proxy.toml`).
//!
//! Why: a runaway or hijacked agent loop must not turn the sidecar into an amplifier against
//! the control plane, the KMS or an upstream API billed per call. Two budgets per subject:
//! requests, and injections (each placeholder path resolved counts one), so a request carrying
//! sixteen secrets costs sixteen injections.
//!
//! Keys: a token is keyed by the SHA-256 of the whole token (the grant-cache key), never by
//! its id alone: the id is not secret (audit records show it), and a forger who knows a
//! victim's id must not be able to spend the victim's budget. An agent is keyed by the agent id
//! of a grant the control plane (or the warm cache) vouched for, so it is checked only once
//! the token is known to be good. GCRA through the `governor` crate; idle keys are swept by
//! [`RateLimits::sweep`] so forged tokens cannot grow the tables without bound.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// The keyed maps hash with foldhash, seeded per process: the keys are SHA-256 digests and
/// UUIDs, and SipHash (the default) was most of the check's cost on the hot path. The random
/// seed keeps forged tokens from being ground into one bucket.
type Keyed<K> = DefaultKeyedRateLimiter<K, governor::middleware::NoOpMiddleware, Hasher>;
type Hasher = foldhash::fast::RandomState;
use serde::Deserialize;
use uuid::Uuid;

/// A subject may trip a limit once per this long before its next trip is audited again.
const TRIP_AUDIT_INTERVAL: Duration = Duration::from_secs(60);
/// Most subjects remembered for trip de-duplication; beyond it the oldest are forgotten.
const MAX_REMEMBERED_TRIPS: usize = 4096;

/// `[rate_limits]`: rates per second and bursts; a rate of 0 turns that limit off.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    #[serde(default = "default_token_rate")]
    pub token_requests_per_second: u32,
    #[serde(default = "default_token_burst")]
    pub token_requests_burst: u32,
    #[serde(default = "default_token_rate")]
    pub token_injections_per_second: u32,
    #[serde(default = "default_token_burst")]
    pub token_injections_burst: u32,
    #[serde(default = "default_agent_rate")]
    pub agent_requests_per_second: u32,
    #[serde(default = "default_agent_burst")]
    pub agent_requests_burst: u32,
    #[serde(default = "default_agent_rate")]
    pub agent_injections_per_second: u32,
    #[serde(default = "default_agent_burst")]
    pub agent_injections_burst: u32,
}

fn default_token_rate() -> u32 {
    100
}

fn default_token_burst() -> u32 {
    200
}

fn default_agent_rate() -> u32 {
    500
}

fn default_agent_burst() -> u32 {
    1000
}

impl Default for RateLimitConfig {
    fn default() -> RateLimitConfig {
        RateLimitConfig {
            token_requests_per_second: default_token_rate(),
            token_requests_burst: default_token_burst(),
            token_injections_per_second: default_token_rate(),
            token_injections_burst: default_token_burst(),
            agent_requests_per_second: default_agent_rate(),
            agent_requests_burst: default_agent_burst(),
            agent_injections_per_second: default_agent_rate(),
            agent_injections_burst: default_agent_burst(),
        }
    }
}

/// Which budget ran out; the closed set of metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Limit {
    TokenRequests,
    TokenInjections,
    AgentRequests,
    AgentInjections,
}

impl Limit {
    pub const ALL: [Limit; 4] = [
        Limit::TokenRequests,
        Limit::TokenInjections,
        Limit::AgentRequests,
        Limit::AgentInjections,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Limit::TokenRequests => "token_requests",
            Limit::TokenInjections => "token_injections",
            Limit::AgentRequests => "agent_requests",
            Limit::AgentInjections => "agent_injections",
        }
    }
}

/// A refused request: which limit, and when to try again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limited {
    pub limit: Limit,
    pub retry_after: Duration,
    /// First trip for this subject in a while: worth an audit event (later ones are only
    /// counted, so a flood cannot flood the audit spool too).
    pub first_trip: bool,
}

/// The sidecar's limiters.
pub struct RateLimits {
    token_requests: Option<Keyed<[u8; 32]>>,
    token_injections: Option<Keyed<[u8; 32]>>,
    agent_requests: Option<Keyed<Uuid>>,
    agent_injections: Option<Keyed<Uuid>>,
    /// (limit, subject digest) → when it last tripped.
    trips: Mutex<std::collections::HashMap<(Limit, [u8; 32]), Instant>>,
    clock: DefaultClock,
}

impl RateLimits {
    pub fn new(config: &RateLimitConfig) -> RateLimits {
        RateLimits {
            token_requests: keyed(
                config.token_requests_per_second,
                config.token_requests_burst,
            ),
            token_injections: keyed(
                config.token_injections_per_second,
                config.token_injections_burst,
            ),
            agent_requests: keyed(
                config.agent_requests_per_second,
                config.agent_requests_burst,
            ),
            agent_injections: keyed(
                config.agent_injections_per_second,
                config.agent_injections_burst,
            ),
            trips: Mutex::new(std::collections::HashMap::new()),
            clock: DefaultClock::default(),
        }
    }

    /// One request of the token keyed by `token_key` carrying `injections` placeholders.
    /// Checked before anything is resolved.
    pub fn check_token(&self, token_key: &[u8; 32], injections: usize) -> Result<(), Limited> {
        self.check(
            &self.token_requests,
            Limit::TokenRequests,
            token_key,
            1,
            token_key,
        )?;
        self.check(
            &self.token_injections,
            Limit::TokenInjections,
            token_key,
            injections,
            token_key,
        )
    }

    /// The same for the agent a vouched-for grant names.
    pub fn check_agent(&self, agent: Uuid, injections: usize) -> Result<(), Limited> {
        let mut subject = [0u8; 32];
        subject[..16].copy_from_slice(agent.as_bytes());
        self.check(
            &self.agent_requests,
            Limit::AgentRequests,
            &agent,
            1,
            &subject,
        )?;
        self.check(
            &self.agent_injections,
            Limit::AgentInjections,
            &agent,
            injections,
            &subject,
        )
    }

    /// Forget keys whose buckets are full again (indistinguishable from new ones) and trips
    /// older than the audit interval. Called periodically by the sidecar.
    pub fn sweep(&self) {
        for limiter in [&self.token_requests, &self.token_injections]
            .into_iter()
            .flatten()
        {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        for limiter in [&self.agent_requests, &self.agent_injections]
            .into_iter()
            .flatten()
        {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        let mut trips = self.trips.lock().unwrap_or_else(|e| e.into_inner());
        trips.retain(|_, at| at.elapsed() < TRIP_AUDIT_INTERVAL);
    }

    /// Keys currently tracked (tests check that the sweep forgets idle ones).
    #[cfg(test)]
    pub fn tracked_keys(&self) -> usize {
        [&self.token_requests, &self.token_injections]
            .into_iter()
            .flatten()
            .map(|l| l.len())
            .chain(
                [&self.agent_requests, &self.agent_injections]
                    .into_iter()
                    .flatten()
                    .map(|l| l.len()),
            )
            .sum()
    }

    fn check<K: std::hash::Hash + Eq + Clone>(
        &self,
        limiter: &Option<Keyed<K>>,
        limit: Limit,
        key: &K,
        cells: usize,
        subject: &[u8; 32],
    ) -> Result<(), Limited> {
        let (Some(limiter), Some(cells)) = (limiter, NonZeroU32::new(saturate(cells))) else {
            return Ok(());
        };
        let retry_after = match limiter.check_key_n(key, cells) {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(not_until)) => not_until.wait_time_from(self.clock.now()),
            // More cells than the burst can ever hold: this request never fits. Say so with
            // the time a full bucket takes to refill, rather than "try again" forever.
            Err(_) => Duration::from_secs(1),
        };
        Err(Limited {
            limit,
            retry_after,
            first_trip: self.first_trip(limit, subject),
        })
    }

    fn first_trip(&self, limit: Limit, subject: &[u8; 32]) -> bool {
        let mut trips = self.trips.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match trips.get_mut(&(limit, *subject)) {
            Some(at) if at.elapsed() < TRIP_AUDIT_INTERVAL => false,
            Some(at) => {
                *at = now;
                true
            }
            None => {
                if trips.len() >= MAX_REMEMBERED_TRIPS {
                    trips.retain(|_, at| at.elapsed() < TRIP_AUDIT_INTERVAL);
                }
                // Still full of recent trips: stop remembering new subjects (they are counted
                // by the metric, and audited once the table has room again).
                if trips.len() < MAX_REMEMBERED_TRIPS {
                    trips.insert((limit, *subject), now);
                }
                true
            }
        }
    }
}

fn keyed<K: std::hash::Hash + Eq + Clone>(per_second: u32, burst: u32) -> Option<Keyed<K>> {
    let rate = NonZeroU32::new(per_second)?;
    let burst = NonZeroU32::new(burst).unwrap_or(rate);
    Some(Keyed::dashmap_with_hasher(
        Quota::per_second(rate).allow_burst(burst),
        Hasher::default(),
    ))
}

fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn tight() -> RateLimitConfig {
        RateLimitConfig {
            token_requests_per_second: 1,
            token_requests_burst: 3,
            token_injections_per_second: 1,
            token_injections_burst: 5,
            agent_requests_per_second: 1,
            agent_requests_burst: 4,
            agent_injections_per_second: 1,
            agent_injections_burst: 100,
        }
    }

    #[test]
    fn a_token_gets_its_burst_then_a_retry_after() {
        let limits = RateLimits::new(&tight());
        let token = [7u8; 32];
        for _ in 0..3 {
            limits.check_token(&token, 0).unwrap();
        }
        let refused = limits.check_token(&token, 0).unwrap_err();
        assert_eq!(refused.limit, Limit::TokenRequests);
        assert!(refused.retry_after > Duration::ZERO);
        assert!(refused.retry_after <= Duration::from_secs(1));
        assert!(refused.first_trip);
        // The second refusal in the same interval is not a first trip.
        assert!(!limits.check_token(&token, 0).unwrap_err().first_trip);
        // Another token is unaffected.
        limits.check_token(&[8u8; 32], 0).unwrap();
    }

    #[test]
    fn injections_count_each_placeholder() {
        let limits = RateLimits::new(&tight());
        let token = [1u8; 32];
        limits.check_token(&token, 4).unwrap();
        let refused = limits.check_token(&token, 2).unwrap_err();
        assert_eq!(refused.limit, Limit::TokenInjections);
        // More than the burst can ever hold is refused too, never waited on forever.
        let other = [2u8; 32];
        assert_eq!(
            limits.check_token(&other, 6).unwrap_err().limit,
            Limit::TokenInjections
        );
    }

    #[test]
    fn agents_have_their_own_budget_across_tokens() {
        let limits = RateLimits::new(&tight());
        let agent = Uuid::new_v4();
        for _ in 0..4 {
            limits.check_agent(agent, 1).unwrap();
        }
        assert_eq!(
            limits.check_agent(agent, 1).unwrap_err().limit,
            Limit::AgentRequests
        );
        limits.check_agent(Uuid::new_v4(), 1).unwrap();
    }

    #[test]
    fn a_zero_rate_turns_the_limit_off() {
        let config = RateLimitConfig {
            token_requests_per_second: 0,
            token_injections_per_second: 0,
            ..tight()
        };
        let limits = RateLimits::new(&config);
        for _ in 0..1000 {
            limits.check_token(&[3u8; 32], 16).unwrap();
        }
        assert_eq!(limits.tracked_keys(), 0);
    }

    #[test]
    fn sweep_forgets_idle_keys() {
        let config = RateLimitConfig {
            token_requests_per_second: 1000,
            token_requests_burst: 1,
            ..RateLimitConfig::default()
        };
        let limits = RateLimits::new(&config);
        for i in 0..100u8 {
            limits.check_token(&[i; 32], 0).unwrap();
        }
        assert!(limits.tracked_keys() >= 100);
        // A burst of 1 at 1000/s refills within a few milliseconds: wait for that (a liveness
        // wait, not a timing assertion), then the sweep drops every key.
        std::thread::sleep(Duration::from_millis(50));
        limits.sweep();
        assert_eq!(limits.tracked_keys(), 0);
    }
}
