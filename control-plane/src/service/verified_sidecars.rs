//! Sidecar keys verified a moment ago, so a busy sidecar's resolves skip the two lookups
//! (credential index, sidecar row) that authenticate it: on PostgreSQL four of the resolve's
//! round trips (bench/README.md, issue 16).
//!
//! An entry is made only after the full check (`service::auth`) passed, keyed by the SHA-256
//! of the presented bearer, so only the exact key that verified hits it, and the map holds no
//! more entries than there are live sidecar keys. It lives `ttl`: revoking a sidecar clears
//! this replica's entries at once; another replica may accept the revoked key for up to `ttl`
//! longer (`[security] sidecar_auth_cache_seconds`, 0 turns the cache off).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::principal::SidecarPrincipal;
use agent_secret_core::ids::SidecarId;

/// Recently verified sidecar keys.
pub struct VerifiedSidecars {
    ttl: Duration,
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    by_key: HashMap<[u8; 32], (SidecarPrincipal, Instant)>,
    /// When expired entries were last swept: at most once per `ttl`, so a put costs O(1)
    /// however many sidecars there are.
    swept: Option<Instant>,
}

impl VerifiedSidecars {
    pub fn new(ttl: Duration) -> VerifiedSidecars {
        VerifiedSidecars {
            ttl,
            entries: Mutex::new(Entries::default()),
        }
    }

    /// The sidecar `bearer` verified as within the last `ttl`.
    pub fn get(&self, bearer: &str) -> Option<SidecarPrincipal> {
        if self.ttl.is_zero() {
            return None;
        }
        let key = key(bearer);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.by_key.get(&key) {
            Some((principal, at)) if at.elapsed() < self.ttl => Some(*principal),
            Some(_) => {
                entries.by_key.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Remember that `bearer` just verified as `principal`; expired entries go on the way.
    pub fn put(&self, bearer: &str, principal: SidecarPrincipal) {
        if self.ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries
            .swept
            .is_none_or(|at| now.duration_since(at) >= self.ttl)
        {
            let ttl = self.ttl;
            entries
                .by_key
                .retain(|_, (_, at)| now.duration_since(*at) < ttl);
            entries.swept = Some(now);
        }
        entries.by_key.insert(key(bearer), (principal, now));
    }

    /// Forget every key of `sidecar` (it was revoked).
    pub fn forget(&self, sidecar: SidecarId) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .by_key
            .retain(|_, (principal, _)| principal.id != sidecar);
    }
}

fn key(bearer: &str) -> [u8; 32] {
    Sha256::digest(bearer.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_secret_core::ids::TenantId;

    fn principal() -> SidecarPrincipal {
        SidecarPrincipal {
            tenant: TenantId(uuid::Uuid::new_v4()),
            id: SidecarId(uuid::Uuid::new_v4()),
        }
    }

    #[test]
    fn only_the_key_that_verified_hits_and_only_until_it_expires_or_is_revoked() {
        let cache = VerifiedSidecars::new(Duration::from_millis(200));
        let (a, b) = (principal(), principal());
        cache.put("ass_sc_a", a);
        cache.put("ass_sc_b", b);
        assert_eq!(cache.get("ass_sc_a").map(|p| p.id), Some(a.id));
        assert!(cache.get("ass_sc_a2").is_none(), "another key of nobody");
        cache.forget(a.id);
        assert!(cache.get("ass_sc_a").is_none(), "revoked");
        assert_eq!(cache.get("ass_sc_b").map(|p| p.id), Some(b.id));
        std::thread::sleep(Duration::from_millis(250));
        assert!(cache.get("ass_sc_b").is_none(), "expired");
    }

    #[test]
    fn expired_entries_are_swept_by_a_later_put() {
        let cache = VerifiedSidecars::new(Duration::from_millis(50));
        cache.put("ass_sc_a", principal());
        cache.put("ass_sc_b", principal());
        std::thread::sleep(Duration::from_millis(60));
        cache.put("ass_sc_c", principal());
        let entries = cache.entries.lock().unwrap_or_else(|p| p.into_inner());
        assert_eq!(entries.by_key.len(), 1, "only the fresh entry is left");
    }

    #[test]
    fn a_zero_ttl_caches_nothing() {
        let cache = VerifiedSidecars::new(Duration::ZERO);
        cache.put("ass_sc_a", principal());
        assert!(cache.get("ass_sc_a").is_none());
    }
}
