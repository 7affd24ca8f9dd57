#![allow(clippy::unwrap_used, clippy::expect_used)]

use agent_secret_core::host::Destination;
use agent_secret_core::policy;
use chrono::Duration as ChronoDuration;

use super::*;

fn grant(token_id: Uuid, agent: &str, ttl: u64, max_uses: Option<i64>) -> Grant {
    Grant {
        token_id: token_id.hyphenated().to_string(),
        tenant_id: TenantId::new().to_string(),
        agent_id: agent.into(),
        scopes: vec!["secrets:read:prod/*".into()],
        ip_allowlist: vec!["10.0.0.0/8".into(), "127.0.0.1".into()],
        approved_sensitivity: Sensitivity::Standard,
        expires_at: Utc::now() + ChronoDuration::hours(1),
        max_uses,
        uses: 0,
        cache_ttl_seconds: ttl,
    }
}

fn config(grant_ttl: u64, value_ttl: u64, max: u64) -> CacheConfig {
    CacheConfig {
        grant_ttl_seconds: grant_ttl,
        value_ttl_seconds: value_ttl,
        max_entries: max,
    }
}

#[test]
fn grant_checks_scope_and_ip_locally() {
    let g = CachedGrant::new(
        grant(Uuid::new_v4(), "a", 30, None),
        Duration::from_secs(60),
    )
    .unwrap();
    let facts = g.facts();
    let scope = |path: &str| policy::check_scope(&facts, &[SecretPath::parse(path).unwrap()]);
    assert!(scope("prod/key").is_ok());
    assert_eq!(scope("prod/a/key").unwrap_err().code(), "scope_denied");
    let from = |ip: &str| policy::check_grant(&facts, ip.parse().unwrap(), Utc::now());
    assert!(from("10.1.2.3").is_ok());
    assert!(from("127.0.0.1").is_ok());
    assert_eq!(from("192.168.0.1").unwrap_err().code(), "ip_not_allowed");
    let later = g.grant.expires_at + ChronoDuration::seconds(1);
    assert_eq!(
        policy::check_grant(&facts, "10.1.2.3".parse().unwrap(), later)
            .unwrap_err()
            .code(),
        "token_expired",
        "the cached grant carries its expiry into the policy"
    );
}

#[test]
fn a_grant_is_claimed_for_renewal_once_three_quarters_into_its_ttl() {
    let g = CachedGrant::new(
        grant(Uuid::new_v4(), "a", 40, None),
        Duration::from_secs(60),
    )
    .unwrap();
    let now = Utc::now();
    assert!(
        !g.claim_refresh(now + ChronoDuration::seconds(29)),
        "too early"
    );
    assert!(g.claim_refresh(now + ChronoDuration::seconds(31)));
    assert!(
        !g.claim_refresh(now + ChronoDuration::seconds(32)),
        "one renewal per cached grant"
    );
    for uncached in [
        grant(Uuid::new_v4(), "a", 0, None),
        grant(Uuid::new_v4(), "a", 40, Some(5)),
    ] {
        let g = CachedGrant::new(uncached, Duration::from_secs(60)).unwrap();
        assert!(!g.claim_refresh(now + ChronoDuration::seconds(3600)));
    }
}

#[test]
fn max_uses_grants_are_never_cacheable() {
    let g = CachedGrant::new(
        grant(Uuid::new_v4(), "a", 30, Some(5)),
        Duration::from_secs(60),
    )
    .unwrap();
    assert!(!g.cacheable());
}

#[test]
fn grant_ttl_is_capped_by_config_and_expiry() {
    let g = CachedGrant::new(
        grant(Uuid::new_v4(), "a", 30, None),
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(g.ttl, Duration::from_secs(10));
    let mut near = grant(Uuid::new_v4(), "a", 30, None);
    near.expires_at = Utc::now() + ChronoDuration::seconds(3);
    let g = CachedGrant::new(near, Duration::from_secs(60)).unwrap();
    assert!(g.ttl <= Duration::from_secs(3));
    let g = CachedGrant::new(grant(Uuid::new_v4(), "a", 0, None), Duration::from_secs(60)).unwrap();
    assert!(!g.cacheable());
}

#[test]
fn malformed_grants_are_refused() {
    let mut g = grant(Uuid::new_v4(), "a", 30, None);
    g.scopes = vec!["secrets:read:prod*".into()];
    assert!(CachedGrant::new(g, Duration::from_secs(60)).is_err());
    let mut g = grant(Uuid::new_v4(), "a", 30, None);
    g.ip_allowlist = vec!["not-an-ip".into()];
    assert!(CachedGrant::new(g, Duration::from_secs(60)).is_err());
}

#[tokio::test]
async fn revoking_a_token_drops_its_grant_and_remembers_it() {
    let caches = Caches::new(&config(60, 60, 100));
    let id = Uuid::new_v4();
    let g = Arc::new(
        CachedGrant::new(grant(id, "agent-1", 30, None), Duration::from_secs(60)).unwrap(),
    );
    caches.put_grant([1; 32], g).await;
    assert!(caches.grant(&[1; 32]).await.is_some());
    // The request path holds a clone of the caches the watch task revokes through.
    let request_path = caches.clone();
    assert!(!request_path.is_dead(id).await);
    caches.revoke_token(&id.hyphenated().to_string()).await;
    assert!(caches.grant(&[1; 32]).await.is_none());
    assert!(caches.is_dead(id).await);
    assert!(request_path.is_dead(id).await);
}

#[tokio::test]
async fn rotating_an_agent_key_drops_all_its_grants() {
    let caches = Caches::new(&config(60, 60, 100));
    let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    for (key, id, agent) in [
        ([1; 32], a, "agent-1"),
        ([2; 32], b, "agent-1"),
        ([3; 32], c, "agent-2"),
    ] {
        let g = CachedGrant::new(grant(id, agent, 30, None), Duration::from_secs(60)).unwrap();
        caches.put_grant(key, Arc::new(g)).await;
    }
    caches.grants.as_ref().unwrap().run_pending_tasks().await;
    caches.revoke_agent("agent-1").await;
    assert!(caches.grant(&[1; 32]).await.is_none());
    assert!(caches.grant(&[2; 32]).await.is_none());
    assert!(caches.grant(&[3; 32]).await.is_some());
    assert!(caches.is_dead(a).await && caches.is_dead(b).await && !caches.is_dead(c).await);
}

#[tokio::test]
async fn secret_updates_drop_the_path_in_every_tenant() {
    let caches = Caches::new(&config(60, 60, 100));
    let path = SecretPath::parse("prod/key").unwrap();
    let other = SecretPath::parse("prod/other").unwrap();
    let (t1, t2) = (TenantId::new(), TenantId::new());
    for (tenant, p) in [(t1, &path), (t2, &path), (t1, &other)] {
        let v = CachedValue::new(
            p.clone(),
            1,
            SecretBytes::new(b"v".to_vec()),
            Sensitivity::Standard,
            vec![],
        )
        .unwrap();
        caches.put_value(tenant, Arc::new(v)).await;
    }
    caches.drop_path("prod/key");
    assert!(caches.value(t1, &path).await.is_none());
    assert!(caches.value(t2, &path).await.is_none());
    assert!(caches.value(t1, &other).await.is_some());
}

#[tokio::test]
async fn flush_drops_every_grant_and_value() {
    let caches = Caches::new(&config(60, 60, 100));
    let g = CachedGrant::new(
        grant(Uuid::new_v4(), "a", 30, None),
        Duration::from_secs(60),
    )
    .unwrap();
    caches.put_grant([9; 32], Arc::new(g)).await;
    let tenant = TenantId::new();
    let path = SecretPath::parse("prod/key").unwrap();
    let v = CachedValue::new(
        path.clone(),
        1,
        SecretBytes::new(b"v".to_vec()),
        Sensitivity::Standard,
        vec![],
    )
    .unwrap();
    caches.put_value(tenant, Arc::new(v)).await;
    caches.flush();
    assert!(caches.grant(&[9; 32]).await.is_none());
    assert!(
        caches.value(tenant, &path).await.is_none(),
        "a value may have been re-bound or deleted while the watch was down"
    );
}

#[tokio::test]
async fn zero_ttl_or_zero_entries_disable_caching() {
    for cfg in [config(0, 0, 100), config(60, 60, 0)] {
        let caches = Caches::new(&cfg);
        let g = CachedGrant::new(
            grant(Uuid::new_v4(), "a", 30, None),
            Duration::from_secs(60),
        )
        .unwrap();
        caches.put_grant([1; 32], Arc::new(g)).await;
        assert!(caches.grant(&[1; 32]).await.is_none());
        let v = CachedValue::new(
            SecretPath::parse("a").unwrap(),
            1,
            SecretBytes::new(b"v".to_vec()),
            Sensitivity::Standard,
            vec![],
        )
        .unwrap();
        let t = TenantId::new();
        caches.put_value(t, Arc::new(v)).await;
        assert!(caches
            .value(t, &SecretPath::parse("a").unwrap())
            .await
            .is_none());
    }
}

#[test]
fn cached_value_checks_destination_binding() {
    let v = CachedValue::new(
        SecretPath::parse("a").unwrap(),
        1,
        SecretBytes::new(b"v".to_vec()),
        Sensitivity::Standard,
        vec![HostPattern::parse("api.example.com").unwrap()],
    )
    .unwrap();
    let g = CachedGrant::new(
        grant(Uuid::new_v4(), "a", 30, None),
        Duration::from_secs(60),
    )
    .unwrap();
    let to = |host: &str| {
        policy::check_secret(&g.facts(), &v.facts(), &Destination::parse(host).unwrap())
            .map_err(|d| d.code())
    };
    assert_eq!(to("api.example.com"), Ok(()));
    assert_eq!(to("api.example.com:8443"), Err("destination_not_allowed"));
    assert_eq!(to("evil.example.com"), Err("destination_not_allowed"));
}

#[test]
fn a_cached_value_above_the_grants_approval_is_approval_pending() {
    let v = CachedValue::new(
        SecretPath::parse("prod/payments").unwrap(),
        1,
        SecretBytes::new(b"v".to_vec()),
        Sensitivity::Critical,
        vec![HostPattern::parse("api.example.com").unwrap()],
    )
    .unwrap();
    let to = Destination::parse("api.example.com").unwrap();
    let standard = CachedGrant::new(
        grant(Uuid::new_v4(), "a", 30, None),
        Duration::from_secs(60),
    )
    .unwrap();
    let denial = policy::check_secret(&standard.facts(), &v.facts(), &to).unwrap_err();
    assert_eq!(denial.code(), "approval_pending");
    assert_eq!(denial.path(), Some(&v.path));
    let mut approved = grant(Uuid::new_v4(), "a", 30, None);
    approved.approved_sensitivity = Sensitivity::Critical;
    let critical = CachedGrant::new(approved, Duration::from_secs(60)).unwrap();
    assert!(policy::check_secret(&critical.facts(), &v.facts(), &to).is_ok());
}

/// A cache holding one grant of `agent` and the value of `prod/key` in two tenants.
async fn warm(caches: &Caches, agent: &str) -> (Uuid, [TenantId; 2], SecretPath) {
    let id = Uuid::new_v4();
    let g = CachedGrant::new(grant(id, agent, 30, None), Duration::from_secs(60)).unwrap();
    caches.put_grant([7; 32], Arc::new(g)).await;
    let path = SecretPath::parse("prod/key").unwrap();
    let tenants = [TenantId::new(), TenantId::new()];
    for tenant in tenants {
        let v = CachedValue::new(
            path.clone(),
            1,
            SecretBytes::new(b"cached-value".to_vec()),
            Sensitivity::Standard,
            vec![HostPattern::parse("api.example.com").unwrap()],
        )
        .unwrap();
        caches.put_value(tenant, Arc::new(v)).await;
    }
    assert!(caches.grant(&[7; 32]).await.is_some());
    (id, tenants, path)
}

#[tokio::test]
async fn a_resync_event_flushes_cached_grants_and_values() {
    let caches = Caches::new(&config(60, 60, 100));
    let metrics = crate::metrics::Metrics::new().unwrap();
    let (_, tenants, path) = warm(&caches, "agent-1").await;
    for tenant in tenants {
        assert!(caches.value(tenant, &path).await.is_some());
    }
    // Exactly what the control plane sends: `event: resync`, `data: {"type":"resync"}`.
    let data = serde_json::to_string(&agent_secret_core::api::WatchEvent::Resync).unwrap();
    assert_eq!(data, r#"{"type":"resync"}"#);
    crate::watch::apply(&caches, &metrics, "resync", &data).await;
    assert!(
        caches.grant(&[7; 32]).await.is_none(),
        "a revocation may have been missed"
    );
    for tenant in tenants {
        assert!(
            caches.value(tenant, &path).await.is_none(),
            "a value may have been deleted, re-bound or replaced meanwhile"
        );
    }
    assert_eq!(metrics.watch_events.with_label_values(&["resync"]).get(), 1);
}

#[tokio::test]
async fn an_agent_revoked_event_drops_its_grants_and_remembers_its_tokens() {
    let caches = Caches::new(&config(60, 60, 100));
    let metrics = crate::metrics::Metrics::new().unwrap();
    let (id, tenants, path) = warm(&caches, "agent-1").await;
    let other = Uuid::new_v4();
    let g = CachedGrant::new(grant(other, "agent-2", 30, None), Duration::from_secs(60)).unwrap();
    caches.put_grant([8; 32], Arc::new(g)).await;
    caches.grants.as_ref().unwrap().run_pending_tasks().await;
    let data = serde_json::to_string(&agent_secret_core::api::WatchEvent::AgentRevoked {
        agent_id: "agent-1".into(),
    })
    .unwrap();
    crate::watch::apply(&caches, &metrics, "agent_revoked", &data).await;
    assert!(caches.grant(&[7; 32]).await.is_none());
    assert!(caches.is_dead(id).await);
    assert!(
        caches.grant(&[8; 32]).await.is_some(),
        "other agents keep theirs"
    );
    assert!(!caches.is_dead(other).await);
    // Values are not the agent's: they stay.
    assert!(caches.value(tenants[0], &path).await.is_some());
}

fn value(path: &str, version: i64, secret: &str) -> Arc<CachedValue> {
    Arc::new(
        CachedValue::new(
            SecretPath::parse(path).unwrap(),
            version,
            SecretBytes::new(secret.as_bytes().to_vec()),
            Sensitivity::Standard,
            vec![],
        )
        .unwrap(),
    )
}

#[tokio::test]
async fn a_combination_of_values_is_compiled_once_per_versions_and_dropped_with_its_paths() {
    let caches = Caches::new(&config(60, 60, 100));
    let tenant = TenantId::new();
    let a = value("prod/a", 1, "sk-live-aaaaaaaaaaaaaaaaaaaa");
    let b = value("prod/b", 1, "sk-live-bbbbbbbbbbbbbbbbbbbb");
    // A single value uses its own scrubber, built with the value.
    let only = caches
        .scrub_set(tenant, std::slice::from_ref(&a))
        .await
        .unwrap();
    assert!(Arc::ptr_eq(&only, &a.scrub));

    let first = caches
        .scrub_set(tenant, &[a.clone(), b.clone()])
        .await
        .unwrap();
    let again = caches
        .scrub_set(tenant, &[b.clone(), a.clone()])
        .await
        .unwrap();
    assert!(Arc::ptr_eq(&first, &again), "same combination, any order");
    assert_eq!(
        first.scrub_header_value(b"x sk-live-bbbbbbbbbbbbbbbbbbbb y"),
        Some(b"x [REDACTED:prod/b] y".to_vec())
    );

    // A new version of one value is another combination.
    let b2 = value("prod/b", 2, "sk-live-cccccccccccccccccccc");
    let newer = caches
        .scrub_set(tenant, &[a.clone(), b2.clone()])
        .await
        .unwrap();
    assert!(!Arc::ptr_eq(&first, &newer));
    assert!(newer
        .scrub_header_value(b"sk-live-cccccccccccccccccccc")
        .is_some());

    // An update of prod/a drops every combination holding it.
    caches.drop_path("prod/a");
    let rebuilt = caches
        .scrub_set(tenant, &[a.clone(), b.clone()])
        .await
        .unwrap();
    assert!(!Arc::ptr_eq(&first, &rebuilt));
}

#[tokio::test]
async fn a_combination_too_large_to_scrub_together_is_refused_not_compiled() {
    let caches = Caches::new(&config(60, 60, 100));
    let tenant = TenantId::new();
    // Long, varied values (certificates, service-account keys) have the largest scrubbers.
    let mut values = Vec::new();
    let mut total = 0;
    let mut i = 0u32;
    while total <= MAX_COMBINED_SCRUB_BYTES {
        let mut x = 0x2545_f491_4f6c_dd1d_u64 ^ u64::from(i);
        let secret: String = (0..4000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(b'!' + (x % 90) as u8)
            })
            .collect();
        let v = value(&format!("prod/big{i}"), 1, &secret);
        total += v.scrub.memory_usage();
        values.push(v);
        i += 1;
        assert!(i < 64, "values this long should have large scrubbers");
    }
    match caches.scrub_set(tenant, &values).await {
        Err(CombinedScrubError::TooLarge { bytes }) => assert_eq!(bytes, total),
        other => panic!("expected TooLarge, got {:?}", other.map(|_| ())),
    }
    // Fewer of them still combine.
    assert!(caches.scrub_set(tenant, &values[..2]).await.is_ok());
}
