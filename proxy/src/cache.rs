//! The sidecar's two caches, so a warm request needs no control-plane call.
//!
//! Over 400 lines: three caches that share one invalidation story (watch, versions, expiry).
//!
//! * **Grants**, keyed by SHA-256 of the token (never the token itself), each for
//!   `min(control plane's cache_ttl_seconds, config cap, time to the token's expiry)`. Grants of
//!   `max_uses` tokens are never cached: every use is an atomic decrement at the control plane.
//!   Three quarters in, one request renews a grant in the background
//!   ([`CachedGrant::claim_refresh`], `Resolver`).
//! * **Values**, keyed by (tenant, path): the decrypted secret with its version, sensitivity and
//!   allowed hosts, for the configured TTL and entry bound. Values live in [`SecretBytes`],
//!   which zeroizes on drop; moka drops an entry's last reference when it is evicted,
//!   invalidated or expires, and readers hold an `Arc` only for the duration of one request.
//!
//! * **Combined scrubbers**, keyed by (tenant, the sorted (path, version) list) of a request
//!   that injects several values: each value's own scrubber is built once per version (in
//!   [`CachedValue`]), but a combination would otherwise be compiled per request — thousands
//!   of windows, milliseconds of CPU, an amplifier for an agent sending many placeholders.
//!   Weighed by memory ([`COMBINED_SCRUB_BYTES`] in all) and dropped with their paths.
//!
//! Watch events invalidate by token id, agent id or path with moka's invalidation predicates,
//! which `get` honours at once. Token ids known to be revoked, expired or invalid are also
//! remembered (the id is embedded in the token), so a token whose grant was dropped is not
//! waved through on a format check alone.

use crate::scrub::{ScrubSet, ScrubSetError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_secret_core::api::{Grant, Sensitivity, TokenStatus};
use agent_secret_core::host::HostPattern;
use agent_secret_core::ids::TenantId;
use agent_secret_core::path::SecretPath;
use agent_secret_core::policy::{GrantFacts, SecretFacts};
use agent_secret_core::scope::Scope;
use agent_secret_core::secret::SecretBytes;
use chrono::{DateTime, Utc};
use ipnet::IpNet;
use moka::future::Cache;
use moka::Expiry;
use uuid::Uuid;

use crate::config::CacheConfig;

/// How long a known-dead token id is remembered; longer than any token's TTL cap.
const DEAD_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// Most dead token ids remembered.
const DEAD_TOKEN_ENTRIES: u64 = 100_000;

/// A grant as the control plane returned it, with its scopes and CIDRs parsed once, so the
/// policy's view of it ([`CachedGrant::facts`]) costs nothing per request.
pub struct CachedGrant {
    pub grant: Grant,
    pub tenant: TenantId,
    pub scopes: Vec<Scope>,
    pub ip_allowlist: Vec<IpNet>,
    /// The agent id, parsed once for the per-agent rate limits (`None` if it is not a UUID:
    /// the control plane's own limits still apply to such an agent).
    pub agent: Option<Uuid>,
    ttl: Duration,
    /// From when a request renews it in the background (three quarters into its time in
    /// the cache; `None`: never), and whether one already has: see
    /// [`claim_refresh`](Self::claim_refresh). Wall-clock, so a request compares it with the
    /// `now` it already read; a clock step only moves the renewal, never the expiry.
    refresh_at: Option<DateTime<Utc>>,
    refresh_claimed: AtomicBool,
}

/// A decrypted secret version with what the policy needs to check it locally
/// ([`CachedValue::facts`]), and its response
/// scrubber, built once per version rather than once per request (building one generates every
/// encoded form and compiles a searcher: the largest cost of a warm request).
pub struct CachedValue {
    pub path: SecretPath,
    pub version: i64,
    pub value: SecretBytes,
    pub sensitivity: Sensitivity,
    pub allowed_hosts: Vec<HostPattern>,
    pub scrub: Arc<ScrubSet>,
}

/// Why a grant from the control plane cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error("grant has an invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

type ValueKey = (TenantId, SecretPath);

/// A combination of injected values: the tenant and each (path, version), sorted.
type ScrubKey = (TenantId, Vec<(SecretPath, i64)>);

/// Memory all cached combined scrubbers may hold together.
pub const COMBINED_SCRUB_BYTES: u64 = 64 * 1024 * 1024;
/// Largest combination compiled for one request (the sum of its values' own scrubbers).
pub const MAX_COMBINED_SCRUB_BYTES: usize = 16 * 1024 * 1024;

/// Why a request's combined scrubber cannot be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CombinedScrubError {
    #[error("the injected values together need a {bytes}-byte scrubber, over the per-request cap")]
    TooLarge { bytes: usize },
    #[error("cannot build the response scrubber: {0}")]
    Build(String),
}

/// Both caches plus the dead-token memory.
#[derive(Clone)]
pub struct Caches {
    grants: Option<Cache<[u8; 32], Arc<CachedGrant>, Hasher>>,
    values: Option<Cache<ValueKey, Arc<CachedValue>, Hasher>>,
    scrub_sets: Option<Cache<ScrubKey, Arc<ScrubSet>, Hasher>>,
    /// One combined scrubber compiles at a time, on a blocking thread.
    scrub_builds: Arc<tokio::sync::Semaphore>,
    dead_tokens: Cache<Uuid, (), Hasher>,
    /// Set before the first token is marked dead: until then [`Caches::is_dead`] answers
    /// without a lookup. Every request asks, and most sidecars never see a revocation.
    any_dead: Arc<AtomicBool>,
    grant_ttl_cap: Duration,
}

/// The caches hash with foldhash, seeded per process, as the rate limits do
/// (`crate::rate_limit`): their keys are SHA-256 digests, UUIDs and secret paths, and SipHash
/// (moka's default) was ~1,800 instructions of the four lookups of a warm request.
type Hasher = foldhash::fast::RandomState;

struct GrantExpiry;

impl Expiry<[u8; 32], Arc<CachedGrant>> for GrantExpiry {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Arc<CachedGrant>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }

    fn expire_after_update(
        &self,
        _key: &[u8; 32],
        value: &Arc<CachedGrant>,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

impl CachedGrant {
    /// Parse a grant; `ttl_cap` is the config's cap on grant caching.
    pub fn new(grant: Grant, ttl_cap: Duration) -> Result<CachedGrant, GrantError> {
        let tenant = grant
            .tenant_id
            .parse::<TenantId>()
            .map_err(|e| invalid("tenant_id", e.to_string()))?;
        let scopes = grant
            .scopes
            .iter()
            .map(|s| Scope::parse(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid("scope", e.to_string()))?;
        let ip_allowlist = grant
            .ip_allowlist
            .iter()
            .map(|s| parse_net(s))
            .collect::<Result<Vec<_>, _>>()?;
        let until_expiry = (grant.expires_at - Utc::now()).to_std().unwrap_or_default();
        let ttl = if grant.max_uses.is_some() {
            Duration::ZERO
        } else {
            Duration::from_secs(grant.cache_ttl_seconds)
                .min(ttl_cap)
                .min(until_expiry)
        };
        let agent = Uuid::parse_str(&grant.agent_id).ok();
        let refresh_at = (!ttl.is_zero())
            .then(|| chrono::Duration::from_std(ttl / 4 * 3).ok())
            .flatten()
            .and_then(|after| Utc::now().checked_add_signed(after));
        Ok(CachedGrant {
            grant,
            tenant,
            scopes,
            ip_allowlist,
            agent,
            ttl,
            refresh_at,
            refresh_claimed: AtomicBool::new(false),
        })
    }

    /// Whether the caller should renew this grant: it is three quarters into its time in the
    /// cache and no other request has claimed the renewal (at most one per cached grant, so
    /// a busy token costs one extra resolve per grant lifetime, not one per request).
    pub fn claim_refresh(&self, now: DateTime<Utc>) -> bool {
        self.refresh_at.is_some_and(|at| now >= at)
            && !self.refresh_claimed.swap(true, Ordering::AcqRel)
    }

    /// May this grant be served from cache at all?
    pub fn cacheable(&self) -> bool {
        !self.ttl.is_zero()
    }

    /// The policy's view of this grant. The control plane grants only an active, unrevoked
    /// token (a later revocation reaches the sidecar as a watch event that drops the grant),
    /// so those two facts are fixed here. `uses` includes the use of the resolve that returned
    /// the grant; grants of `max_uses` tokens are never cached, so no warm check meets one.
    pub fn facts(&self) -> GrantFacts<'_> {
        GrantFacts {
            status: TokenStatus::Active,
            revoked: false,
            expires_at: self.grant.expires_at,
            ip_allowlist: &self.ip_allowlist,
            scopes: &self.scopes,
            approved_sensitivity: self.grant.approved_sensitivity,
            max_uses: self.grant.max_uses,
            uses: self.grant.uses,
        }
    }
}

impl CachedValue {
    pub fn new(
        path: SecretPath,
        version: i64,
        value: SecretBytes,
        sensitivity: Sensitivity,
        allowed_hosts: Vec<HostPattern>,
    ) -> Result<CachedValue, ScrubSetError> {
        let scrub = Arc::new(ScrubSet::new(&[(path.clone(), value.clone())])?);
        Ok(CachedValue {
            path,
            version,
            value,
            sensitivity,
            allowed_hosts,
            scrub,
        })
    }

    /// The policy's view of this secret.
    pub fn facts(&self) -> SecretFacts<'_> {
        SecretFacts {
            path: &self.path,
            sensitivity: self.sensitivity,
            allowed_hosts: &self.allowed_hosts,
        }
    }
}

impl Caches {
    pub fn new(config: &CacheConfig) -> Caches {
        let enabled = config.max_entries > 0;
        let grants = (enabled && config.grant_ttl_seconds > 0).then(|| {
            Cache::builder()
                .max_capacity(config.max_entries)
                .expire_after(GrantExpiry)
                .support_invalidation_closures()
                .build_with_hasher(Hasher::default())
        });
        let values = (enabled && config.value_ttl_seconds > 0).then(|| {
            Cache::builder()
                .max_capacity(config.max_entries)
                .time_to_live(Duration::from_secs(config.value_ttl_seconds))
                .support_invalidation_closures()
                .build_with_hasher(Hasher::default())
        });
        let scrub_sets = (enabled && config.value_ttl_seconds > 0).then(|| {
            Cache::builder()
                .max_capacity(COMBINED_SCRUB_BYTES / 1024)
                .weigher(|_: &ScrubKey, set: &Arc<ScrubSet>| {
                    u32::try_from(set.memory_usage() / 1024 + 1).unwrap_or(u32::MAX)
                })
                .time_to_live(Duration::from_secs(config.value_ttl_seconds))
                .support_invalidation_closures()
                .build_with_hasher(Hasher::default())
        });
        Caches {
            grants,
            values,
            scrub_sets,
            scrub_builds: Arc::new(tokio::sync::Semaphore::new(1)),
            dead_tokens: Cache::builder()
                .max_capacity(DEAD_TOKEN_ENTRIES)
                .time_to_live(DEAD_TOKEN_TTL)
                .build_with_hasher(Hasher::default()),
            any_dead: Arc::new(AtomicBool::new(false)),
            grant_ttl_cap: Duration::from_secs(config.grant_ttl_seconds),
        }
    }

    pub fn grant_ttl_cap(&self) -> Duration {
        self.grant_ttl_cap
    }

    pub async fn grant(&self, key: &[u8; 32]) -> Option<Arc<CachedGrant>> {
        self.grants.as_ref()?.get(key).await
    }

    /// Cache `grant` if it may be cached.
    pub async fn put_grant(&self, key: [u8; 32], grant: Arc<CachedGrant>) {
        if let Some(grants) = &self.grants {
            if grant.cacheable() {
                grants.insert(key, grant).await;
            }
        }
    }

    pub async fn drop_grant(&self, key: &[u8; 32]) {
        if let Some(grants) = &self.grants {
            grants.invalidate(key).await;
        }
    }

    pub async fn value(&self, tenant: TenantId, path: &SecretPath) -> Option<Arc<CachedValue>> {
        let values = self.values.as_ref()?;
        values.get(&(tenant, path.clone())).await
    }

    pub async fn put_value(&self, tenant: TenantId, value: Arc<CachedValue>) {
        if let Some(values) = &self.values {
            values.insert((tenant, value.path.clone()), value).await;
        }
    }

    /// Remember a token id as revoked, expired or invalid.
    pub async fn mark_dead(&self, token_id: Uuid) {
        // Before the insert: a request that still reads `false` was checked before this
        // revocation, as it would have been by a lookup that ran before the insert.
        self.any_dead.store(true, Ordering::SeqCst);
        self.dead_tokens.insert(token_id, ()).await;
    }

    pub async fn is_dead(&self, token_id: Uuid) -> bool {
        self.any_dead.load(Ordering::SeqCst) && self.dead_tokens.get(&token_id).await.is_some()
    }

    /// `token_revoked`: drop the token's grants and remember it.
    pub async fn revoke_token(&self, token_id: &str) {
        if let Ok(id) = token_id.parse::<Uuid>() {
            self.mark_dead(id).await;
        }
        let id = token_id.to_owned();
        self.drop_grants_where(move |g| g.grant.token_id == id);
    }

    /// `token_approved`: forget what is cached for the token without condemning it.
    pub fn forget_token(&self, token_id: &str) {
        let id = token_id.to_owned();
        self.drop_grants_where(move |g| g.grant.token_id == id);
    }

    /// `agent_ceiling_changed`: drop the agent's grants so its next request asks the control
    /// plane (tokens left outside the ceiling arrive as `token_revoked` of their own).
    pub fn forget_agent(&self, agent_id: &str) {
        let id = agent_id.to_owned();
        self.drop_grants_where(move |g| g.grant.agent_id == id);
    }

    /// `agent_key_rotated`: every token of the agent dies with its key.
    pub async fn revoke_agent(&self, agent_id: &str) {
        if let Some(grants) = &self.grants {
            let dead: Vec<Uuid> = grants
                .iter()
                .filter(|(_, g)| g.grant.agent_id == agent_id)
                .filter_map(|(_, g)| g.grant.token_id.parse().ok())
                .collect();
            for id in dead {
                self.mark_dead(id).await;
            }
        }
        let id = agent_id.to_owned();
        self.drop_grants_where(move |g| g.grant.agent_id == id);
    }

    /// The scrubber of the values injected into one request: a single value's own (built once
    /// per version), or the combination's, built once per combination of versions. A
    /// combination is compiled off the async runtime, one at a time per sidecar, and refused
    /// when its values' scrubbers together exceed [`MAX_COMBINED_SCRUB_BYTES`]: an agent
    /// cannot make the sidecar build tens of megabytes of scrubber per request.
    pub async fn scrub_set(
        &self,
        tenant: TenantId,
        values: &[Arc<CachedValue>],
    ) -> Result<Arc<ScrubSet>, CombinedScrubError> {
        if let [only] = values {
            return Ok(only.scrub.clone());
        }
        let bytes: usize = values.iter().map(|v| v.scrub.memory_usage()).sum();
        if bytes > MAX_COMBINED_SCRUB_BYTES {
            return Err(CombinedScrubError::TooLarge { bytes });
        }
        let owned: Vec<(SecretPath, SecretBytes)> = values
            .iter()
            .map(|v| (v.path.clone(), v.value.clone()))
            .collect();
        let builds = self.scrub_builds.clone();
        let build = async move {
            let _permit = builds.acquire_owned().await.map_err(|_| {
                CombinedScrubError::Build("the scrubber build queue is closed".into())
            })?;
            tokio::task::spawn_blocking(move || ScrubSet::new(&owned).map(Arc::new))
                .await
                .map_err(|e| CombinedScrubError::Build(e.to_string()))?
                .map_err(|e| CombinedScrubError::Build(e.to_string()))
        };
        let Some(sets) = &self.scrub_sets else {
            return build.await;
        };
        let mut parts: Vec<(SecretPath, i64)> =
            values.iter().map(|v| (v.path.clone(), v.version)).collect();
        parts.sort();
        sets.try_get_with((tenant, parts), build)
            .await
            .map_err(|e| (*e).clone())
    }

    /// `secret_updated` / `secret_deleted`: drop the path's value in every tenant.
    pub fn drop_path(&self, path: &str) {
        if let Some(values) = &self.values {
            let path = path.to_owned();
            if let Err(e) = values.invalidate_entries_if(move |(_, p), _| p.as_str() == path) {
                tracing::warn!(error = %e, "cannot invalidate cached values; flushing all");
                values.invalidate_all();
            }
        }
        if let Some(sets) = &self.scrub_sets {
            let path = path.to_owned();
            let dropped = sets.invalidate_entries_if(move |(_, parts), _| {
                parts.iter().any(|(p, _)| p.as_str() == path)
            });
            if dropped.is_err() {
                sets.invalidate_all();
            }
        }
    }

    /// Drop every grant and value: the watch stream (re)connected or sent something it could
    /// not parse, so revocations, re-bindings (`allowed_hosts`) or deletions may have been
    /// missed. Values go too: a cached value carries the destinations it may be sent to.
    pub fn flush(&self) {
        if let Some(grants) = &self.grants {
            grants.invalidate_all();
        }
        if let Some(values) = &self.values {
            values.invalidate_all();
        }
        if let Some(sets) = &self.scrub_sets {
            sets.invalidate_all();
        }
    }

    fn drop_grants_where(&self, predicate: impl Fn(&CachedGrant) -> bool + Send + Sync + 'static) {
        if let Some(grants) = &self.grants {
            if let Err(e) = grants.invalidate_entries_if(move |_, g| predicate(g)) {
                tracing::warn!(error = %e, "cannot invalidate grants selectively; flushing all");
                grants.invalidate_all();
            }
        }
    }
}

fn parse_net(s: &str) -> Result<IpNet, GrantError> {
    agent_secret_core::cidr::parse_cidr(s).map_err(|e| invalid("ip_allowlist", e.to_string()))
}

fn invalid(field: &'static str, reason: String) -> GrantError {
    GrantError::Invalid { field, reason }
}

#[cfg(test)]
mod tests;
