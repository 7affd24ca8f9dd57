//! The sidecar end to end on real sockets: a fake control plane over TLS sealing real
//! envelopes, echo upstreams over HTTP and HTTPS (test CA), and agents speaking raw HTTP/1.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use agent_secret_core::api::{ErrorCode, WatchEvent};
use agent_secret_proxy::{RunningSidecar, Sidecar};
use base64::Engine as _;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injection_reaches_the_upstream_and_agent_credentials_never_do() {
    let w = World::new().await;
    let token = w.secret_and_token().await;
    let sidecar = w.default_sidecar().await;
    let mut headers = with_placeholder(&token);
    headers.push(("X-Agent-Secret-Debug".into(), "1".into()));
    headers.push(("Proxy-Connection".into(), "keep-alive".into()));
    let resp = get(sidecar.proxy_addr(), &w.http_url("/echo?x=1"), &headers).await;
    assert_eq!(resp.status, 200, "{}", resp.text());

    let seen = w.http.last();
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {SECRET}").as_str())
    );
    assert_eq!(seen.target, "/echo?x=1", "upstream got origin-form");
    assert_eq!(
        seen.header("host"),
        Some(format!("127.0.0.1:{}", w.http.addr.port()).as_str())
    );
    assert!(
        seen.header("proxy-authorization").is_none(),
        "token leaked upstream"
    );
    assert!(seen.header("proxy-connection").is_none());
    assert!(
        !seen.has_header_prefix("x-agent-secret-"),
        "control header leaked upstream"
    );
    assert!(!format!("{:?}", seen.headers).contains(&token.token));

    // The echo comes back scrubbed, in headers and body.
    assert!(
        !resp.text().contains(SECRET),
        "secret reached the agent: {}",
        resp.text()
    );
    assert!(resp.text().contains("[REDACTED:prod/api/key]"));
    assert_eq!(
        resp.header("x-echo-authorization"),
        Some("Bearer [REDACTED:prod/api/key]")
    );
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_mode_originates_tls_to_the_upstream() {
    let w = World::new().await;
    let token = w.secret_and_token().await;
    let sidecar = w.default_sidecar().await;
    let resp = get(
        sidecar.proxy_addr(),
        &w.https_url("/echo"),
        &with_placeholder(&token),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        w.https.last().header("authorization"),
        Some(format!("Bearer {SECRET}").as_str())
    );
    assert!(!resp.text().contains(SECRET));
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_only_for_hosts_marked_plaintext() {
    let w = World::new().await;
    let token = w.secret_and_token().await;
    // Only allow_private for the plain HTTP upstream: the sidecar speaks TLS to it and fails.
    let tables = format!(
        "[[hosts]]\nname = \"127.0.0.1:{}\"\nallow_private = true\n",
        w.http.addr.port()
    );
    let sidecar = w.sidecar(&tables).await;
    let resp = get(
        sidecar.proxy_addr(),
        &w.http_url("/echo"),
        &with_placeholder(&token),
    )
    .await;
    assert_eq!(resp.status, 502, "{}", resp.text());
    assert!(
        w.http.requests().is_empty(),
        "a plain HTTP request went out"
    );
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_invalid_token_is_407_with_a_challenge() {
    let w = World::new().await;
    w.secret_and_token().await;
    let sidecar = w.default_sidecar().await;
    let auth = ("Authorization".to_string(), PLACEHOLDER.to_string());
    let cases = vec![
        vec![auth.clone()],
        vec![
            auth.clone(),
            ("Proxy-Authorization".into(), "Bearer not-a-token".into()),
        ],
        vec![
            auth.clone(),
            ("Proxy-Authorization".into(), "Digest abc".into()),
        ],
    ];
    for headers in cases {
        let resp = get(sidecar.proxy_addr(), &w.http_url("/echo"), &headers).await;
        assert_eq!(resp.status, 407, "{}", resp.text());
        assert_eq!(resp.code(), "token_invalid");
        assert_eq!(
            resp.header("proxy-authenticate"),
            Some("Basic realm=\"agent-secret-store\"")
        );
    }
    // Well-formed but unknown to the control plane.
    let stranger = FakeCp::start(&w.ca, tempfile::tempdir().unwrap().path())
        .await
        .issue_token(&["secrets:read:prod/**"]);
    let resp = get(
        sidecar.proxy_addr(),
        &w.http_url("/echo"),
        &with_placeholder(&stranger),
    )
    .await;
    assert_eq!(resp.status, 407, "{}", resp.text());
    assert_eq!(resp.code(), "token_invalid");
    assert!(w.http.requests().is_empty());
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_carries_the_token_as_password() {
    let w = World::new().await;
    let token = w.secret_and_token().await;
    let sidecar = w.default_sidecar().await;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("agent:{}", token.token));
    let headers = vec![
        ("Proxy-Authorization".into(), format!("Basic {basic}")),
        ("Authorization".into(), PLACEHOLDER.into()),
    ];
    let resp = get(sidecar.proxy_addr(), &w.http_url("/echo"), &headers).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        w.http.last().header("authorization"),
        Some(format!("Bearer {SECRET}").as_str())
    );
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_denials_keep_their_codes() {
    let w = World::new().await;
    w.secret_and_token().await;
    w.cp.put_secret("prod/elsewhere", "v-elsewhere", &["api.example.com"])
        .await;
    let sidecar = w.default_sidecar().await;
    let cases: Vec<(IssuedToken, &str, u16, &str)> = vec![
        (
            w.cp.issue_token(&["secrets:read:staging/**"]),
            PATH,
            403,
            "scope_denied",
        ),
        (
            w.cp.issue_token(&["secrets:read:prod/**"]),
            "prod/elsewhere",
            403,
            "destination_not_allowed",
        ),
        (
            w.cp.issue_token_with(&["secrets:read:prod/**"], |t| {
                t.ip_allowlist = vec!["10.0.0.0/8".into()]
            }),
            PATH,
            403,
            "ip_not_allowed",
        ),
        (
            w.cp.issue_token_with(&["secrets:read:prod/**"], |t| {
                t.force = Some(ErrorCode::ApprovalPending)
            }),
            PATH,
            403,
            "approval_pending",
        ),
        (
            w.cp.issue_token_with(&["secrets:read:prod/**"], |t| {
                t.force = Some(ErrorCode::ApprovalDenied)
            }),
            PATH,
            403,
            "approval_denied",
        ),
        (
            w.cp.issue_token_with(&["secrets:read:prod/**"], |t| t.revoked = true),
            PATH,
            407,
            "token_revoked",
        ),
        (
            w.cp.issue_token_with(&["secrets:read:prod/**"], |t| {
                t.expires_at = chrono::Utc::now() - chrono::Duration::seconds(1)
            }),
            PATH,
            407,
            "token_expired",
        ),
        (
            w.cp.issue_token(&["secrets:read:prod/**"]),
            "prod/missing",
            404,
            "secret_not_found",
        ),
    ];
    for (token, path, status, code) in cases {
        let headers = vec![
            bearer(&token),
            (
                "Authorization".into(),
                format!("Bearer {{{{secret:{path}}}}}"),
            ),
        ];
        let resp = get(sidecar.proxy_addr(), &w.http_url("/echo"), &headers).await;
        assert_eq!(
            (resp.status, resp.code().as_str()),
            (status, code),
            "{}",
            resp.text()
        );
    }
    assert!(
        w.http.requests().is_empty(),
        "a denied request reached the upstream"
    );
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_cache_serves_without_calling_the_control_plane() {
    let w = World::new().await;
    let token = w.secret_and_token().await;
    let sidecar = w.default_sidecar().await;
    for _ in 0..3 {
        let resp = get(
            sidecar.proxy_addr(),
            &w.http_url("/echo"),
            &with_placeholder(&token),
        )
        .await;
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    assert_eq!(w.cp.resolves(), 1, "warm requests called the control plane");
    assert_eq!(w.http.requests().len(), 3);
    assert!(w
        .http
        .requests()
        .iter()
        .all(|r| r.header("authorization") == Some(format!("Bearer {SECRET}").as_str())));
    // A silent revocation is not seen by a warm cache: that is what the watch stream is for.
    sidecar.stop().await;
}

/// The secret at `PATH` and a token whose grant the sidecar may cache for `seconds`.
async fn token_with_grant_ttl(w: &World, seconds: u64) -> IssuedToken {
    let http = format!("127.0.0.1:{}", w.http.addr.port());
    w.cp.put_secret(PATH, SECRET, &[&http]).await;
    w.cp.issue_token_with(&["secrets:read:prod/**"], |t| t.cache_ttl_seconds = seconds)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_tokens_grant_is_renewed_in_the_background_before_it_expires() {
    let w = World::new().await;
    let token = token_with_grant_ttl(&w, 2).await;
    let sidecar = w.default_sidecar().await;
    let (url, headers) = (w.http_url("/echo"), with_placeholder(&token));
    let send = || get(sidecar.proxy_addr(), &url, &headers);
    assert_eq!(send().await.status, 200);
    assert_eq!(w.cp.resolved_paths(), [vec![PATH.to_owned()]]);
    // Three quarters into the grant's two seconds: served warm, and renewed behind it.
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    assert_eq!(send().await.status, 200);
    // Renewed once the sidecar has stored the new grant (its metric), not merely asked.
    eventually("the grant is renewed", Duration::from_secs(10), || async {
        let renewed = sidecar
            .metrics()
            .grant_refreshes
            .with_label_values(&["renewed"])
            .get();
        (renewed == 1).then_some(())
    })
    .await;
    assert_eq!(
        w.cp.resolved_paths(),
        [vec![PATH.to_owned()], vec![]],
        "one renewal, asking for no secret (so nothing is read, counted or audited as a read)"
    );
    // Past the first grant's expiry, the renewed grant serves.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(send().await.status, 200);
    assert_eq!(w.cp.resolves(), 2, "no request waited for a resolve");
    assert_eq!(w.http.requests().len(), 3);
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_renewal_ends_the_grant_before_its_expiry() {
    let w = World::new().await;
    let token = token_with_grant_ttl(&w, 4).await;
    let sidecar = w.default_sidecar().await;
    let (url, headers) = (w.http_url("/echo"), with_placeholder(&token));
    let send = || get(sidecar.proxy_addr(), &url, &headers);
    assert_eq!(send().await.status, 200);
    // Revoked where no watch event tells the sidecar: only the renewal can find out.
    w.cp.revoke_silently(&token);
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    assert_eq!(send().await.status, 200, "still within the cached grant");
    // Done when the sidecar has handled the refusal, not when the control plane sent it: the
    // next request could otherwise still find the grant in the cache.
    eventually(
        "the renewal is refused",
        Duration::from_secs(10),
        || async {
            let refused = sidecar
                .metrics()
                .grant_refreshes
                .with_label_values(&["refused"])
                .get();
            (refused == 1).then_some(())
        },
    )
    .await;
    let resp = send().await;
    assert_eq!(resp.code(), "token_revoked", "{}", resp.text());
    assert_eq!(
        w.cp.resolves(),
        2,
        "refused from the sidecar's memory of the dead token"
    );
    assert_eq!(w.http.requests().len(), 2);
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_grants_are_checked_locally_for_scope_and_destination() {
    let w = World::new().await;
    let token = w.secret_and_token().await;
    w.cp.put_secret("other/key", "v-other", &["127.0.0.1"])
        .await;
    let sidecar = w.default_sidecar().await;
    let resp = get(
        sidecar.proxy_addr(),
        &w.http_url("/echo"),
        &with_placeholder(&token),
    )
    .await;
    assert_eq!(resp.status, 200);
    let headers = vec![
        bearer(&token),
        ("Authorization".into(), "Bearer {{secret:other/key}}".into()),
    ];
    let resp = get(sidecar.proxy_addr(), &w.http_url("/echo"), &headers).await;
    assert_eq!(
        (resp.status, resp.code().as_str()),
        (403, "scope_denied"),
        "{}",
        resp.text()
    );
    assert_eq!(
        w.cp.resolves(),
        1,
        "a local refusal needs no control-plane call"
    );
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_max_uses_token_resolves_on_every_request() {
    let w = World::new().await;
    w.secret_and_token().await;
    let token =
        w.cp.issue_token_with(&["secrets:read:prod/**"], |t| t.max_uses = Some(2));
    let sidecar = w.default_sidecar().await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let resp = get(
            sidecar.proxy_addr(),
            &w.http_url("/echo"),
            &with_placeholder(&token),
        )
        .await;
        statuses.push((
            resp.status,
            if resp.status == 200 {
                String::new()
            } else {
                resp.code()
            },
        ));
    }
    assert_eq!(
        statuses,
        vec![
            (200, String::new()),
            (200, String::new()),
            (403, "uses_exhausted".into())
        ]
    );
    assert_eq!(w.cp.resolves(), 3);
    assert_eq!(w.cp.uses(&token), 2);
    assert_eq!(w.http.requests().len(), 2);
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_placeholders_are_400_and_never_forwarded() {
    let w = World::new().await;
    let token = w.secret_and_token().await;
    let sidecar = w.default_sidecar().await;
    for bad in [
        "Bearer {{secret:prod/api key}}",
        "Bearer {{ secret:prod/api/key}}",
        "Bearer {{secret:prod/api/key",
    ] {
        let headers = vec![bearer(&token), ("Authorization".into(), bad.into())];
        let resp = get(sidecar.proxy_addr(), &w.http_url("/echo"), &headers).await;
        assert_eq!(
            (resp.status, resp.code().as_str()),
            (400, "invalid_placeholder"),
            "{bad}"
        );
    }
    let resp = get(
        sidecar.proxy_addr(),
        &w.http_url("/echo?key={{secret:prod/api/key}}"),
        &[bearer(&token)],
    )
    .await;
    assert_eq!(
        (resp.status, resp.code().as_str()),
        (400, "invalid_placeholder")
    );
    assert!(w.http.requests().is_empty());
    assert_eq!(w.cp.resolves(), 0);
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_is_405_naming_route_mode() {
    let w = World::new().await;
    let token = w.secret_and_token().await;
    let sidecar = w.default_sidecar().await;
    let req = format!(
        "CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\nProxy-Authorization: Bearer {}\r\n\r\n",
        token.token
    );
    let resp = send_raw(sidecar.proxy_addr(), req.as_bytes()).await;
    assert_eq!(resp.status, 405, "{}", resp.text());
    assert_eq!(resp.code(), "method_not_allowed");
    assert!(resp.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("route mode"));
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_header_spoofing_in_forward_mode_is_400() {
    let w = World::new().await;
    let token = w.secret_and_token().await;
    let sidecar = w.default_sidecar().await;
    let mut headers = with_placeholder(&token);
    headers.push(("Host".into(), "api.example.com".into()));
    let resp = get(sidecar.proxy_addr(), &w.http_url("/echo"), &headers).await;
    assert_eq!(resp.status, 400);
    assert!(w.http.requests().is_empty());
    assert_eq!(w.cp.resolves(), 0);
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_mode_rewrites_the_path_and_replaces_host() {
    let w = World::new().await;
    let token = w.secret_and_token().await;
    let tables = format!(
        "{}\n[[routes]]\nprefix = \"/svc/\"\nupstream = \"http://127.0.0.1:{}/base/\"\n[[routes]]\nprefix = \"/tls/\"\nupstream = \"https://127.0.0.1:{}/\"\n",
        w.hosts(),
        w.http.addr.port(),
        w.https.addr.port()
    );
    let sidecar = w.sidecar(&tables).await;
    let resp = request(
        sidecar.proxy_addr(),
        "POST",
        "/svc/v1/echo?stream=true",
        &with_placeholder(&token),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = w.http.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.target, "/base/v1/echo?stream=true");
    assert_eq!(
        seen.header("host"),
        Some(format!("127.0.0.1:{}", w.http.addr.port()).as_str())
    );
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {SECRET}").as_str())
    );

    let resp = get(sidecar.proxy_addr(), "/tls/echo", &with_placeholder(&token)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(w.https.last().target, "/echo");

    // Requests without placeholders may use routes.
    let resp = get(sidecar.proxy_addr(), "/svc/plain", &[bearer(&token)]).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let resp = get(sidecar.proxy_addr(), "/nowhere/", &[bearer(&token)]).await;
    assert_eq!((resp.status, resp.code().as_str()), (404, "not_found"));
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_placeholders_need_a_pass_through_host() {
    let w = World::new().await;
    let token = w.secret_and_token().await;
    let sidecar = w.default_sidecar().await;
    let resp = get(
        sidecar.proxy_addr(),
        &w.http_url("/echo"),
        &[bearer(&token)],
    )
    .await;
    assert_eq!(
        (resp.status, resp.code().as_str()),
        (403, "destination_not_allowed")
    );
    sidecar.stop().await;

    let tables = format!(
        "[[hosts]]\nname = \"127.0.0.1:{}\"\nplaintext = true\nallow_private = true\npass_through = true\n",
        w.http.addr.port()
    );
    let sidecar = w.sidecar(&tables).await;
    let resp = get(
        sidecar.proxy_addr(),
        &w.http_url("/echo"),
        &[bearer(&token)],
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let resp = get(sidecar.proxy_addr(), &w.http_url("/echo"), &[]).await;
    assert_eq!(resp.status, 407, "pass-through still needs a token");
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrf_guard_blocks_loopback_and_metadata_unless_allowed() {
    let w = World::new().await;
    let token = w.secret_and_token().await;
    let loop2 = Upstream::start("127.0.0.2:0".parse().unwrap(), Some(w.ca.loopback_tls13())).await;
    let port = loop2.addr.port();
    w.cp.put_secret(
        PATH,
        SECRET,
        &[&format!("127.0.0.2:{port}"), "169.254.169.254"],
    )
    .await;
    let sidecar = w.sidecar("").await;
    for url in [
        format!("http://127.0.0.2:{port}/echo"),
        "http://169.254.169.254/latest/meta-data/".into(),
    ] {
        let resp = get(sidecar.proxy_addr(), &url, &with_placeholder(&token)).await;
        assert_eq!(
            (resp.status, resp.code().as_str()),
            (403, "destination_not_allowed"),
            "{url}"
        );
        assert!(resp.text().contains("SSRF guard"), "{}", resp.text());
    }
    assert!(loop2.requests().is_empty());
    assert_eq!(
        w.cp.resolves(),
        0,
        "the guard runs before any secret is resolved"
    );
    sidecar.stop().await;

    let tables = format!(
        "[[hosts]]\nname = \"127.0.0.2:{port}\"\nallow_private = true\n[[hosts]]\nname = \"169.254.169.254\"\nallow_private = true\n"
    );
    let sidecar = w.sidecar(&tables).await;
    let resp = get(
        sidecar.proxy_addr(),
        &format!("http://127.0.0.2:{port}/echo"),
        &with_placeholder(&token),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        loop2.last().header("authorization"),
        Some(format!("Bearer {SECRET}").as_str())
    );
    let resp = get(
        sidecar.proxy_addr(),
        "http://169.254.169.254/latest/meta-data/",
        &with_placeholder(&token),
    )
    .await;
    assert_ne!(
        resp.code(),
        "destination_not_allowed",
        "allow_private lifts the guard"
    );
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_down_is_503() {
    let w = World::new().await;
    let token = w.secret_and_token().await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("https://127.0.0.1:{closed}");
    let config = sidecar_config_with_url(&url, &w.cp, &w.ca_file, w.dir.path(), &w.hosts());
    let sidecar = Sidecar::start(config).await.unwrap();
    let resp = get(
        sidecar.proxy_addr(),
        &w.http_url("/echo"),
        &with_placeholder(&token),
    )
    .await;
    assert_eq!(
        (resp.status, resp.code().as_str()),
        (503, "control_plane_unavailable")
    );
    sidecar.stop().await;

    let sidecar = w.default_sidecar().await;
    w.cp.state.unavailable.store(true, Ordering::SeqCst);
    let resp = get(
        sidecar.proxy_addr(),
        &w.http_url("/echo"),
        &with_placeholder(&token),
    )
    .await;
    assert_eq!(
        (resp.status, resp.code().as_str()),
        (503, "control_plane_unavailable")
    );
    assert!(w.http.requests().is_empty());
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_event_drops_the_warm_grant() {
    let w = World::new().await;
    let token = w.secret_and_token().await;
    let tables = format!(
        "[[hosts]]\nname = \"127.0.0.1:{}\"\nplaintext = true\nallow_private = true\npass_through = true\n",
        w.http.addr.port()
    );
    let sidecar = w.sidecar(&tables).await;
    eventually("sidecar never watched", DEADLINE, async || {
        w.cp.watchers() >= 1
    })
    .await;
    let resp = get(
        sidecar.proxy_addr(),
        &w.http_url("/echo"),
        &with_placeholder(&token),
    )
    .await;
    assert_eq!(resp.status, 200);
    w.cp.revoke_silently(&token);
    w.cp.push(WatchEvent::TokenRevoked {
        token_id: token.id.hyphenated().to_string(),
    });
    eventually(
        "the revoked token kept working through the warm sidecar",
        DEADLINE,
        async || {
            let resp = get(
                sidecar.proxy_addr(),
                &w.http_url("/echo"),
                &with_placeholder(&token),
            )
            .await;
            resp.status == 407 && resp.code() == "token_revoked"
        },
    )
    .await;
    // Requests without placeholders are refused too: the sidecar remembers the revoked id.
    let resp = get(
        sidecar.proxy_addr(),
        &w.http_url("/echo"),
        &[bearer(&token)],
    )
    .await;
    assert_eq!((resp.status, resp.code().as_str()), (407, "token_revoked"));
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_reconnect_flushes_grants_it_may_have_missed_events_for() {
    let w = World::new().await;
    let token = w.secret_and_token().await;
    let sidecar = w.default_sidecar().await;
    eventually("w.cp.watchers() >= 1", DEADLINE, async || {
        w.cp.watchers() >= 1
    })
    .await;
    let resp = get(
        sidecar.proxy_addr(),
        &w.http_url("/echo"),
        &with_placeholder(&token),
    )
    .await;
    assert_eq!(resp.status, 200);
    // Revoked while no event reaches the sidecar, then the stream drops and comes back.
    w.cp.revoke_silently(&token);
    w.cp.disconnect_watchers();
    eventually("sidecar never reconnected", DEADLINE, async || {
        w.cp.watchers() >= 2
    })
    .await;
    eventually(
        "a grant cached before the reconnect was still served",
        DEADLINE,
        async || {
            let resp = get(
                sidecar.proxy_addr(),
                &w.http_url("/echo"),
                &with_placeholder(&token),
            )
            .await;
            resp.status == 407
        },
    )
    .await;
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_update_event_drops_the_cached_value() {
    let w = World::new().await;
    let token = w.secret_and_token().await;
    let sidecar = w.default_sidecar().await;
    eventually("w.cp.watchers() >= 1", DEADLINE, async || {
        w.cp.watchers() >= 1
    })
    .await;
    get(
        sidecar.proxy_addr(),
        &w.http_url("/echo"),
        &with_placeholder(&token),
    )
    .await;
    let hosts = [format!("127.0.0.1:{}", w.http.addr.port())];
    let version =
        w.cp.put_secret(PATH, "sk-live-rotated-value-42", &[&hosts[0]])
            .await;
    w.cp.push(WatchEvent::SecretUpdated {
        path: PATH.into(),
        version,
    });
    eventually(
        "the sidecar kept injecting the old version",
        DEADLINE,
        async || {
            get(
                sidecar.proxy_addr(),
                &w.http_url("/echo"),
                &with_placeholder(&token),
            )
            .await;
            w.http.last().header("authorization") == Some("Bearer sk-live-rotated-value-42")
        },
    )
    .await;
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoed_secrets_are_scrubbed_through_gzip_chunking_and_redirects() {
    let w = World::new().await;
    let token = w.secret_and_token().await;
    let sidecar = w.default_sidecar().await;

    let resp = get(
        sidecar.proxy_addr(),
        &w.http_url("/gzip"),
        &with_placeholder(&token),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let mut decoded = String::new();
    flate2::read::GzDecoder::new(resp.body.as_slice()).read_to_string_sync(&mut decoded);
    assert!(!decoded.contains(SECRET), "gzip body leaked: {decoded}");
    assert!(decoded.contains("[REDACTED:prod/api/key]"), "{decoded}");

    let resp = get(
        sidecar.proxy_addr(),
        &w.http_url("/chunked"),
        &with_placeholder(&token),
    )
    .await;
    assert_eq!(resp.status, 200);
    assert!(!resp.text().contains(SECRET), "chunked body leaked");
    assert!(resp.text().contains("[REDACTED:prod/api/key]"));

    let resp = get(
        sidecar.proxy_addr(),
        &w.http_url("/redirect"),
        &with_placeholder(&token),
    )
    .await;
    assert_eq!(resp.status, 302, "redirects are passed back, not followed");
    let location = resp.header("location").unwrap();
    assert!(!location.contains(SECRET), "{location}");
    assert_eq!(w.http.requests().len(), 3, "the redirect was not followed");

    let resp = get(
        sidecar.proxy_addr(),
        &w.http_url("/zstd"),
        &with_placeholder(&token),
    )
    .await;
    assert_eq!(
        (resp.status, resp.code().as_str()),
        (502, "unscannable_response")
    );
    sidecar.stop().await;
}

/// Issue 10 item 1: an upstream echoing the value base64url-encoded, hex-encoded and
/// half-truncated, brotli-compressed and split across frames, hands none of it to the agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transformed_echoes_are_scrubbed_through_brotli() {
    use base64::Engine;
    use std::io::Read;
    let w = World::new().await;
    let token = w.secret_and_token().await;
    let sidecar = w.default_sidecar().await;
    let resp = get(
        sidecar.proxy_addr(),
        &w.http_url("/br-echo"),
        &with_placeholder(&token),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("content-encoding"), Some("br"));
    let mut decoded = Vec::new();
    brotli::Decompressor::new(resp.body.as_slice(), 4096)
        .read_to_end(&mut decoded)
        .unwrap();
    let decoded = String::from_utf8(decoded).unwrap();
    // The upstream encodes the whole header value: the secret sits 7 bytes in.
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("Bearer {SECRET}"));
    let hex: String = SECRET.bytes().map(|b| format!("{b:02x}")).collect();
    let lower = decoded.to_lowercase();
    assert!(!decoded.contains(&SECRET[SECRET.len() / 2..]), "{decoded}");
    assert!(!lower.contains(&hex[..24]), "hex leaked: {decoded}");
    assert!(
        !decoded.contains(&b64[12..28]),
        "base64url leaked: {decoded}"
    );
    assert_eq!(
        decoded.matches("[REDACTED:prod/api/key]").count(),
        3,
        "{decoded}"
    );
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_only_scrubbing_passes_bodies_through() {
    let w = World::new().await;
    let token = w.secret_and_token().await;
    let tables = format!(
        "[[hosts]]\nname = \"127.0.0.1:{}\"\nplaintext = true\nallow_private = true\nscrub = \"headers\"\n",
        w.http.addr.port()
    );
    let sidecar = w.sidecar(&tables).await;
    let resp = get(
        sidecar.proxy_addr(),
        &w.http_url("/br"),
        &with_placeholder(&token),
    )
    .await;
    assert_eq!(resp.status, 200, "binary bodies pass with scrub = headers");
    assert_eq!(
        resp.header("x-echo-authorization"),
        Some("Bearer [REDACTED:prod/api/key]")
    );
    sidecar.stop().await;
}

/// Reads the response incrementally: the first SSE event must arrive before the upstream is
/// allowed to send the second.
async fn sse_flows_incrementally(
    w: &World,
    sidecar: &RunningSidecar,
    headers: &[(String, String)],
) {
    let mut stream = tokio::net::TcpStream::connect(sidecar.proxy_addr())
        .await
        .unwrap();
    let mut req = format!(
        "GET {} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n",
        w.http_url("/sse"),
        w.http.addr.port()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let first = tokio::time::timeout(DEADLINE, async {
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&seen).contains("data: one") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "stream ended early: {}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(
        first.is_ok(),
        "first event not delivered before the second was sent: {}",
        String::from_utf8_lossy(&seen)
    );
    assert!(!String::from_utf8_lossy(&seen).contains("data: two"));
    w.http.state.sse_next.notify_one();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut seen))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&seen).contains("data: two"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_is_streamed_event_by_event() {
    let w = World::new().await;
    let token = w.secret_and_token().await;
    let tables = format!(
        "[[hosts]]\nname = \"127.0.0.1:{}\"\nplaintext = true\nallow_private = true\npass_through = true\n",
        w.http.addr.port()
    );
    let sidecar = w.sidecar(&tables).await;
    sse_flows_incrementally(&w, &sidecar, &[bearer(&token)]).await;
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_is_streamed_event_by_event_while_scrubbing() {
    let w = World::new().await;
    let token = w.secret_and_token().await;
    let sidecar = w.default_sidecar().await;
    sse_flows_incrementally(&w, &sidecar, &with_placeholder(&token)).await;
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_listener_serves_health_and_metrics() {
    let w = World::new().await;
    let token = w.secret_and_token().await;
    let sidecar = w.default_sidecar().await;
    get(
        sidecar.proxy_addr(),
        &w.http_url("/echo"),
        &with_placeholder(&token),
    )
    .await;
    get(sidecar.proxy_addr(), &w.http_url("/echo"), &[]).await;
    let admin = sidecar.admin_addr();
    let health = send_raw(
        admin,
        b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(health.status, 200);
    let metrics = send_raw(
        admin,
        b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    let text = metrics.text();
    assert!(
        text.contains("agent_secret_proxy_injections_total 1"),
        "{text}"
    );
    assert!(
        text.contains("agent_secret_proxy_denials_total{code=\"token_invalid\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("agent_secret_proxy_requests_total{outcome=\"forwarded\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("agent_secret_proxy_cache_misses_total{cache=\"grant\"}"),
        "{text}"
    );
    assert!(
        text.contains("agent_secret_proxy_control_plane_seconds_bucket"),
        "{text}"
    );
    assert!(!text.contains(SECRET) && !text.contains(&token.token));
    sidecar.stop().await;
}

/// One kept-alive connection, two injected requests: each small scrubbed answer (sent in one
/// piece, `agent_secret_proxy::downstream`) arrives whole and the connection serves the next;
/// stopping the sidecar closes the connection waiting for its third.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_gets_whole_scrubbed_answers_and_is_closed_on_stop() {
    let w = World::new().await;
    let token = w.secret_and_token().await;
    let sidecar = w.default_sidecar().await;
    let mut tcp = tokio::net::TcpStream::connect(sidecar.proxy_addr())
        .await
        .unwrap();
    let mut request = format!(
        "GET {} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n",
        w.http_url("/echo"),
        w.http.addr.port()
    );
    for (name, value) in with_placeholder(&token) {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    for _ in 0..2 {
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        let mut chunk = [0u8; 4096];
        while !raw.ends_with(b"\r\n0\r\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut chunk))
                .await
                .expect("the answer within 10 s")
                .unwrap();
            assert!(
                n > 0,
                "closed mid-answer: {}",
                String::from_utf8_lossy(&raw)
            );
            raw.extend_from_slice(&chunk[..n]);
        }
        let resp = parse_response(&raw);
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert!(resp.text().contains("[REDACTED:prod/api/key]"));
        assert!(!resp.text().contains(SECRET));
    }
    sidecar.stop().await;
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut rest))
        .await
        .expect("closed on stop")
        .unwrap();
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_closes_the_listeners() {
    let w = World::new().await;
    let sidecar = w.default_sidecar().await;
    let addr = sidecar.proxy_addr();
    sidecar.stop().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "proxy still accepting after stop"
    );
}

/// An audit backend with a fixed capacity that keeps what it records.
#[derive(Default)]
struct CountingAudit {
    room: std::sync::Mutex<usize>,
    events: std::sync::Mutex<Vec<agent_secret_core::api::SidecarAuditEvent>>,
}

impl agent_secret_proxy::audit::AuditBackend for CountingAudit {
    fn try_reserve(&self, count: usize) -> bool {
        let mut room = self.room.lock().unwrap();
        if *room >= count {
            *room -= count;
            true
        } else {
            false
        }
    }
    fn release(&self, count: usize) {
        *self.room.lock().unwrap() += count;
    }
    fn record_reserved(&self, event: &agent_secret_core::api::SidecarAuditEventRef<'_>) {
        self.events.lock().unwrap().push(event.to_event());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injections_and_denials_are_audited_and_a_full_spool_fails_closed() {
    let w = World::new().await;
    let token = w.secret_and_token().await;
    let audit = std::sync::Arc::new(CountingAudit {
        room: std::sync::Mutex::new(2),
        ..Default::default()
    });
    let config = sidecar_config(&w.cp, &w.ca_file, w.dir.path(), &w.hosts());
    let sidecar = Sidecar::start_with_audit(config, audit.clone())
        .await
        .unwrap();
    // The first watch connection flushes the grant cache: let it happen before the cold
    // injection fills the cache, or the second injection would be cold too.
    for _ in 0..200 {
        if sidecar.metrics().watch_connected.get() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(sidecar.metrics().watch_connected.get(), 1);
    let mut headers = with_placeholder(&token);
    headers.push(("User-Agent".into(), "agent-test/1.0".into()));
    // The cold injection is the control plane's to record (it resolved the value); the warm
    // one, served from the cache, is the sidecar's.
    for _ in 0..2 {
        let resp = get(sidecar.proxy_addr(), &w.http_url("/echo"), &headers).await;
        assert_eq!(resp.status, 200);
    }
    // Refused by the control plane (nothing is cached for this token): the control plane
    // records it, the sidecar does not report it again, and its room is given back.
    let denied = w.cp.issue_token(&["secrets:read:staging/**"]);
    let resp = get(
        sidecar.proxy_addr(),
        &w.http_url("/echo"),
        &with_placeholder(&denied),
    )
    .await;
    assert_eq!(resp.code(), "scope_denied");
    // Refused by the sidecar itself (the cached grant's scopes): the sidecar's to record.
    let mut outside = with_placeholder(&token);
    outside[1] = (
        outside[1].0.clone(),
        "Bearer {{secret:staging/other}}".to_owned(),
    );
    let resp = get(sidecar.proxy_addr(), &w.http_url("/echo"), &outside).await;
    assert_eq!(resp.code(), "scope_denied");
    // A success is recorded in the logging phase, after its response went out.
    for _ in 0..100 {
        if audit.events.lock().unwrap().len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    {
        let events = audit.events.lock().unwrap();
        assert_eq!(events.len(), 2, "{events:?}");
        let read = events.iter().find(|e| e.success).unwrap();
        assert_eq!(
            read.token_id.as_deref(),
            Some(token.id.hyphenated().to_string().as_str())
        );
        assert_eq!(read.path.as_deref(), Some(PATH));
        assert_eq!(read.client_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(read.user_agent.as_deref(), Some("agent-test/1.0"));
        assert_eq!(
            read.destination_host,
            Some(format!("127.0.0.1:{}", w.http.addr.port()))
        );
        let refusal = events.iter().find(|e| !e.success).unwrap();
        assert_eq!(refusal.reason.as_deref(), Some("scope_denied"));
        assert_eq!(refusal.path.as_deref(), Some("staging/other"));
    }
    // No room left: the next injection is refused before anything is resolved or sent.
    let resolves = w.cp.resolves();
    let resp = get(
        sidecar.proxy_addr(),
        &w.http_url("/echo"),
        &with_placeholder(&token),
    )
    .await;
    assert_eq!(
        (resp.status, resp.code().as_str()),
        (503, "audit_unavailable")
    );
    assert_eq!(w.cp.resolves(), resolves);
    assert_eq!(w.http.requests().len(), 2);
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_and_exits_cleanly_on_sigint() {
    let w = World::new().await;
    let token = w.secret_and_token().await;
    let config = format!(
        r#"
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
shutdown_grace_seconds = 1
[control_plane]
url = "{url}"
ca_file = "{ca}"
[kms]
keyring = "{keyring}"
[upstream]
extra_ca_file = "{ca}"
[audit]
spool_path = "{spool}"
{hosts}
"#,
        url = w.cp.url,
        ca = w.ca_file.display(),
        keyring = w.cp.keyring.display(),
        spool = w.dir.path().join("binary-spool.jsonl").display(),
        hosts = w.hosts(),
    );
    let config_file = w.dir.path().join("proxy.toml");
    std::fs::write(&config_file, &config).unwrap();
    let binary = ProxyBinary::start(&w.cp, &config_file, "info");
    let addr = binary.addr;
    let resp = get(addr, &w.http_url("/echo"), &with_placeholder(&token)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        w.http.last().header("authorization"),
        Some(format!("Bearer {SECRET}").as_str())
    );
    let (status, _) = binary.stop().await;
    assert!(status.success());

    // The same configuration as text in the environment (how the Kubernetes injector
    // configures a sidecar), with no file.
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_agent-secret-proxy"));
    command
        .env_remove("AGENT_SECRET_PROXY_CONFIG")
        .env("AGENT_SECRET_PROXY_CONFIG_TOML", &config);
    let binary = ProxyBinary::start_command(&w.cp, command, "info");
    let resp = get(binary.addr, &w.http_url("/echo"), &with_placeholder(&token)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let (status, _) = binary.stop().await;
    assert!(status.success());

    // Both a file and the text: refused, rather than one silently winning.
    let both = std::process::Command::new(env!("CARGO_BIN_EXE_agent-secret-proxy"))
        .arg("--config")
        .arg(&config_file)
        .env("AGENT_SECRET_PROXY_CONFIG_TOML", &config)
        .output()
        .unwrap();
    assert_eq!(both.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&both.stderr).contains("AGENT_SECRET_PROXY_CONFIG_TOML"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_events_reach_the_control_plane_and_survive_its_outage() {
    let w = World::new().await;
    let token = w.secret_and_token().await;
    let sidecar = w.default_sidecar().await;
    // Cold (the control plane records it as it resolves), then warm (the sidecar reports it).
    for _ in 0..2 {
        let resp = get(
            sidecar.proxy_addr(),
            &w.http_url("/echo"),
            &with_placeholder(&token),
        )
        .await;
        assert_eq!(resp.status, 200);
    }
    eventually(
        "the secret.read event never reached the control plane",
        DEADLINE,
        async || {
            w.cp.audits()
                .iter()
                .any(|e| e.success && e.path.as_deref() == Some(PATH))
        },
    )
    .await;

    // Audit endpoint down: the event waits in the spool, then drains.
    w.cp.state.audit_unavailable.store(true, Ordering::SeqCst);
    let mut headers = with_placeholder(&token);
    headers.push(("User-Agent".into(), "during-outage".into()));
    let resp = get(sidecar.proxy_addr(), &w.http_url("/echo"), &headers).await;
    assert_eq!(
        resp.status, 200,
        "injection continues while the spool has room"
    );
    let audit = sidecar.audit().unwrap();
    eventually(
        "the event is spooled during the outage",
        DEADLINE,
        async || audit.stats().spooled >= 1,
    )
    .await;
    w.cp.state.audit_unavailable.store(false, Ordering::SeqCst);
    eventually(
        "the spooled event is delivered after the outage",
        Duration::from_secs(20),
        async || {
            w.cp.audits()
                .iter()
                .any(|e| e.user_agent.as_deref() == Some("during-outage"))
        },
    )
    .await;
    eventually("audit.stats().spooled == 0", DEADLINE, async || {
        audit.stats().spooled == 0
    })
    .await;
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_refuses_injections() {
    let w = World::new().await;
    let token = w.secret_and_token().await;
    w.cp.state.audit_unavailable.store(true, Ordering::SeqCst);
    let mut config = sidecar_config(&w.cp, &w.ca_file, w.dir.path(), &w.hosts());
    config.audit.max_spool_bytes = 1500;
    let sidecar = Sidecar::start(config).await.unwrap();
    let mut codes = Vec::new();
    for _ in 0..8 {
        let resp = get(
            sidecar.proxy_addr(),
            &w.http_url("/echo"),
            &with_placeholder(&token),
        )
        .await;
        codes.push(if resp.status == 200 {
            "ok".to_owned()
        } else {
            resp.code()
        });
    }
    assert_eq!(codes[0], "ok");
    assert!(codes.contains(&"audit_unavailable".to_owned()), "{codes:?}");
    let forwarded = w.http.requests().len();
    assert_eq!(forwarded, codes.iter().filter(|c| *c == "ok").count());
    sidecar.stop().await;
}

trait ReadToStringSync {
    fn read_to_string_sync(&mut self, out: &mut String);
}

impl<R: std::io::Read> ReadToStringSync for R {
    fn read_to_string_sync(&mut self, out: &mut String) {
        std::io::Read::read_to_string(self, out).unwrap();
    }
}

/// Dropping the handle without `stop()` (an embedder's early return, a panicking test) still
/// closes the sidecar's listeners: its tasks end when the handle's shutdown sender is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_sidecar_handle_stops_listening() {
    let w = World::new().await;
    let sidecar = w.default_sidecar().await;
    let (proxy, admin) = (sidecar.proxy_addr(), sidecar.admin_addr());
    assert!(tokio::net::TcpStream::connect(proxy).await.is_ok());
    drop(sidecar);
    eventually("the proxy and admin ports close", DEADLINE, async || {
        tokio::net::TcpStream::connect(proxy).await.is_err()
            && tokio::net::TcpStream::connect(admin).await.is_err()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_kubernetes_the_sidecar_presents_its_service_account_token_and_follows_its_rotation() {
    let w = World::new().await;
    let token = w.secret_and_token().await;
    let sa_file = w.dir.path().join("sa-token");
    std::fs::write(&sa_file, "eyJhbGciOiJSUzI1NiJ9.Zmlyc3Q.c2ln\n").unwrap();
    w.cp.accept_bearer("eyJhbGciOiJSUzI1NiJ9.Zmlyc3Q.c2ln");
    let mut config = sidecar_config(&w.cp, &w.ca_file, w.dir.path(), &w.hosts());
    config.control_plane.sidecar_key_file = None;
    config.control_plane.service_account_token_file = Some(sa_file.clone());
    let sidecar = Sidecar::start(config).await.unwrap();
    let resp = get(
        sidecar.proxy_addr(),
        &w.http_url("/echo"),
        &with_placeholder(&token),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());

    // The kubelet writes a new token; the control plane accepts only that one from now on.
    std::fs::write(&sa_file, "eyJhbGciOiJSUzI1NiJ9.c2Vjb25k.c2ln\n").unwrap();
    w.cp.accept_bearer("eyJhbGciOiJSUzI1NiJ9.c2Vjb25k.c2ln");
    // Another token's first request resolves: refused once with the old token, the file is
    // read again and the call retried with the new one.
    let other = w.cp.issue_token(&["secrets:read:prod/**"]);
    let resp = get(
        sidecar.proxy_addr(),
        &w.http_url("/echo"),
        &with_placeholder(&other),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        w.http.last().header("authorization"),
        Some(format!("Bearer {SECRET}").as_str())
    );
    sidecar.stop().await;
}
