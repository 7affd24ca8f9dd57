//! The product end to end: an agent's request goes through the real sidecar, which resolves
//! against the real control plane (TLS, SQLite, local KMS) and reaches a real upstream.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use agent_secret_control_plane::service::Policy;
use agent_secret_proxy::config::HostRule;
use agent_secret_proxy::ProxyConfig;
use agent_secret_testkit::control_plane::{ControlPlane, Install, Tenant};
use agent_secret_testkit::harness::{agent, AgentToken, Harness, Issued};
use agent_secret_testkit::pki::TestCa;
use agent_secret_testkit::sidecar::{local_host, route, start_sidecar};
use agent_secret_testkit::{eventually, Upstream};
use reqwest::StatusCode;
use serde_json::{json, Value};

const KEY: &str = "sk-live-e2e-0123456789abcdefXYZ";

struct World {
    _dir: tempfile::TempDir,
    install: Install,
    cp: ControlPlane,
    tenant: Tenant,
    upstream: Upstream,
}

impl World {
    async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let install = Install::new(dir.path(), None).await;
        let cp =
            ControlPlane::serve(&install, "127.0.0.1:0".parse().unwrap(), Policy::default()).await;
        let tenant = Tenant::create(&cp, "acme").await;
        let upstream = Upstream::http().await;
        tenant
            .put_secret(&cp, "prod/api/key", KEY, &[&upstream.authority()])
            .await;
        World {
            _dir: dir,
            install,
            cp,
            tenant,
            upstream,
        }
    }

    /// A sidecar that may reach the world's upstream, changed by `configure`.
    async fn sidecar(
        &self,
        configure: impl FnOnce(&mut ProxyConfig),
    ) -> agent_secret_proxy::RunningSidecar {
        let host = self.upstream.authority();
        start_sidecar(&self.install, &self.cp, &self.tenant.sidecar_key, |c| {
            c.hosts.push(local_host(&host));
            configure(c);
        })
        .await
    }

    async fn token(&self, scopes: &[&str], extra: Value) -> (String, String) {
        self.tenant.token(&self.cp, scopes, extra).await
    }
}

/// An agent's HTTP client: the sidecar is its proxy, the token its proxy credential.
fn agent_client(sidecar: &agent_secret_proxy::RunningSidecar, token: &str) -> reqwest::Client {
    let proxy = reqwest::Proxy::http(format!("http://{}", sidecar.proxy_addr()))
        .unwrap()
        .basic_auth("agent", token);
    reqwest::Client::builder().proxy(proxy).build().unwrap()
}

async fn get(client: &reqwest::Client, url: &str, auth: &str) -> (StatusCode, String) {
    let res = client
        .get(url)
        .header("authorization", auth)
        .send()
        .await
        .unwrap();
    (res.status(), res.text().await.unwrap())
}

fn code(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .map(|v| v["error"]["code"].as_str().unwrap_or("").to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_upstream_receives_the_secret_and_never_the_token() {
    let h = Harness::builder().secret("prod/api/key", KEY).start().await;
    let issued = h.issue(agent().scope("secrets:read:prod/api/*")).await;
    let res = h
        .agent(&issued)
        .get(h.url("/echo"))
        .header("authorization", "Bearer {{secret:prod/api/key}}")
        .header("x-agent-secret-debug", "drop me")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = res.text().await.unwrap();
    let received = h.upstream.last();
    assert_eq!(
        received.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert!(
        !received.everything().contains(&issued.token),
        "the agent's token reached the upstream"
    );
    assert!(received.header("proxy-authorization").is_none());
    assert!(received.header("x-agent-secret-debug").is_none());
    assert!(
        !body.contains(KEY),
        "the echoed value reached the agent: {body}"
    );
    assert!(body.contains("[REDACTED:prod/api/key]"), "{body}");
}

#[tokio::test]
async fn https_upstreams_get_tls_from_the_sidecar() {
    let w = World::new().await;
    let ca = TestCa::new();
    let tls_upstream = Upstream::https(ca.server_config(&["localhost"])).await;
    let host = format!("localhost:{}", tls_upstream.addr.port());
    w.tenant
        .put_secret(&w.cp, "prod/tls/key", KEY, &[&host])
        .await;
    let ca_file = ca.write(&w.install.dir);
    let sidecar = w
        .sidecar(|c| {
            c.upstream.extra_ca_file = Some(ca_file);
            c.hosts.push(HostRule {
                allow_private: true,
                ..HostRule::new(host.parse().unwrap())
            });
        })
        .await;
    let (_, token) = w.token(&["secrets:read:prod/**"], json!({})).await;
    // Forward mode: the agent speaks plain HTTP to the sidecar, which originates TLS.
    let (status, body) = get(
        &agent_client(&sidecar, &token),
        &format!("http://{host}/echo"),
        "Bearer {{secret:prod/tls/key}}",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        tls_upstream.last().header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    sidecar.stop().await;
}

/// One row of `denials_carry_their_codes`: why, the token request (`None`: a forged token), the
/// URL, the `Authorization` header, and the status and code expected.
type Denial<'a> = (
    &'a str,
    Option<AgentToken>,
    &'a str,
    &'a str,
    StatusCode,
    &'a str,
);

/// Every refusal an agent can meet end to end, one row each: what it sends, with which token,
/// and the status and code it gets back. Nothing is forwarded on a refusal.
#[tokio::test]
async fn denials_carry_their_codes() {
    let other = Upstream::http().await;
    let other_host = other.authority();
    let h = Harness::builder()
        .secret("prod/api/key", KEY)
        .sidecar(move |c| c.hosts.push(local_host(&other_host)))
        .start()
        .await;
    // Bound to api.example.com, never to a test upstream.
    h.tenant
        .put_secret(&h.cp, "prod/other/key", KEY, &["api.example.com"])
        .await;
    let (here, there) = (h.url("/echo"), format!("http://{}/echo", other.authority()));
    let (api, bound_elsewhere) = (
        "Bearer {{secret:prod/api/key}}",
        "Bearer {{secret:prod/other/key}}",
    );
    let wide = || agent().scope("secrets:read:prod/**");
    let narrow = || agent().scope("secrets:read:prod/other/*");
    let forged = Issued {
        id: String::new(),
        token: "asst_garbage".into(),
    };
    use StatusCode as S;
    #[rustfmt::skip]
    let rows: Vec<Denial> = vec![
        ("forged token", None, &here, api, S::PROXY_AUTHENTICATION_REQUIRED, "token_invalid"),
        ("scope too narrow", Some(narrow()), &here, api, S::FORBIDDEN, "scope_denied"),
        ("secret bound elsewhere", Some(narrow()), &here, bound_elsewhere, S::FORBIDDEN, "destination_not_allowed"),
        ("secret to another upstream", Some(wide()), &there, api, S::FORBIDDEN, "destination_not_allowed"),
        ("outside the IP allowlist", Some(wide().from_ips(&["10.0.0.0/8"])), &here, api, S::FORBIDDEN, "ip_not_allowed"),
        ("malformed placeholder", Some(wide()), &here, "Bearer {{secret:prod/api/key", S::BAD_REQUEST, "invalid_placeholder"),
    ];
    for (why, request, url, auth, status, expected) in rows {
        let token = match request {
            Some(request) => h.issue(request).await,
            None => forged.clone(),
        };
        let (got, body) = get(&h.agent(&token), url, auth).await;
        assert_eq!(
            (got, code(&body).as_str()),
            (status, expected),
            "{why}: {body}"
        );
    }
    assert!(
        other.received().is_empty(),
        "nothing was forwarded on a denial"
    );
    assert!(
        h.upstream.received().is_empty(),
        "nothing was forwarded on a denial"
    );

    // No proxy credential at all.
    let no_token = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(format!("http://{}", h.sidecar.proxy_addr())).unwrap())
        .build()
        .unwrap();
    let (status, _) = get(&no_token, &here, api).await;
    assert_eq!(status, StatusCode::PROXY_AUTHENTICATION_REQUIRED);

    // Used up: two uses pass, the third is refused.
    let twice = h.issue(wide().max_uses(2)).await;
    for _ in 0..2 {
        let (status, body) = get(&h.agent(&twice), &here, api).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, body) = get(&h.agent(&twice), &here, api).await;
    assert_eq!(
        (status, code(&body).as_str()),
        (S::FORBIDDEN, "uses_exhausted")
    );

    // Expired.
    let short = h.issue(wide().ttl(1)).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body) = get(&h.agent(&short), &here, api).await;
    assert_eq!(
        (status, code(&body).as_str()),
        (S::PROXY_AUTHENTICATION_REQUIRED, "token_expired")
    );
}

#[tokio::test]
async fn a_revoked_token_is_refused_by_a_warm_sidecar_within_a_second() {
    let w = World::new().await;
    let sidecar = w.sidecar(|_| {}).await;
    let (id, token) = w.token(&["secrets:read:prod/**"], json!({})).await;
    let client = agent_client(&sidecar, &token);
    let url = format!("http://{}/echo", w.upstream.authority());
    for _ in 0..2 {
        let (status, body) = get(&client, &url, "Bearer {{secret:prod/api/key}}").await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    w.tenant.revoke(&w.cp, &id).await;
    eventually(
        "the warm sidecar refuses the revoked token",
        Duration::from_secs(1),
        || async {
            let (status, body) = get(&client, &url, "Bearer {{secret:prod/api/key}}").await;
            (status == StatusCode::PROXY_AUTHENTICATION_REQUIRED && code(&body) == "token_revoked")
                .then_some(())
        },
    )
    .await;
    sidecar.stop().await;
}

#[tokio::test]
async fn echoed_values_never_reach_the_agent_in_any_form() {
    let w = World::new().await;
    let sidecar = w.sidecar(|_| {}).await;
    let (_, token) = w.token(&["secrets:read:prod/**"], json!({})).await;
    let client = reqwest::Client::builder()
        .proxy(
            reqwest::Proxy::http(format!("http://{}", sidecar.proxy_addr()))
                .unwrap()
                .basic_auth("a", &token),
        )
        .no_gzip()
        .build()
        .unwrap();
    let base = format!("http://{}", w.upstream.authority());
    use base64::Engine;
    let forms = [
        KEY.to_owned(),
        base64::engine::general_purpose::STANDARD.encode(KEY),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(KEY),
    ];
    for path in ["/echo", "/echo/chunked", "/echo/base64", "/echo/header"] {
        let res = client
            .get(format!("{base}{path}"))
            .header("authorization", "Bearer {{secret:prod/api/key}}")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        let headers = format!("{:?}", res.headers());
        let body = res.bytes().await.unwrap();
        let text = String::from_utf8_lossy(&body);
        for form in &forms {
            assert!(
                !text.contains(form.as_str()),
                "{path} leaked {form} in the body: {text}"
            );
            assert!(
                !headers.contains(form.as_str()),
                "{path} leaked {form} in headers: {headers}"
            );
        }
        assert!(
            w.upstream
                .last()
                .header("authorization")
                .unwrap()
                .contains(KEY),
            "{path}: the value was injected"
        );
    }
    // gzip: the sidecar decodes, scrubs and re-encodes (or sends identity).
    let res = client
        .get(format!("{base}/echo/gzip"))
        .header("authorization", "Bearer {{secret:prod/api/key}}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let encoding = res
        .headers()
        .get("content-encoding")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = res.bytes().await.unwrap();
    let text = match encoding.as_deref() {
        Some("gzip") => {
            let mut out = String::new();
            std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut out)
                .unwrap();
            out
        }
        _ => String::from_utf8_lossy(&body).into_owned(),
    };
    assert!(text.contains("[REDACTED:prod/api/key]"), "{text}");
    assert!(!text.contains(KEY));
    sidecar.stop().await;
}

#[tokio::test]
async fn host_spoofing_and_unlisted_destinations_are_refused() {
    let w = World::new().await;
    let sidecar = w.sidecar(|_| {}).await;
    let (_, token) = w.token(&["secrets:read:prod/**"], json!({})).await;
    let client = agent_client(&sidecar, &token);
    // Absolute URI to the allowed upstream, Host header naming another: pingora refuses.
    let res = client
        .get(format!("http://{}/echo", w.upstream.authority()))
        .header("host", "api.example.com")
        .header("authorization", "Bearer {{secret:prod/api/key}}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    // A destination no rule mentions, without placeholders: no pass-through.
    let (status, body) = get(
        &client,
        "http://unlisted.example.com/",
        "Bearer nothing-secret",
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "destination_not_allowed".into())
    );
    // CONNECT is not supported until interception exists.
    let https_client = reqwest::Client::builder()
        .proxy(
            reqwest::Proxy::https(format!("http://{}", sidecar.proxy_addr()))
                .unwrap()
                .basic_auth("a", &token),
        )
        .build()
        .unwrap();
    assert!(
        https_client
            .get("https://api.example.com/")
            .send()
            .await
            .is_err(),
        "CONNECT must be refused"
    );
    assert!(w.upstream.received().is_empty());
    sidecar.stop().await;
}

#[tokio::test]
async fn server_sent_events_arrive_incrementally() {
    let w = World::new().await;
    let sidecar = w.sidecar(|_| {}).await;
    let (_, token) = w.token(&["secrets:read:prod/**"], json!({})).await;
    let res = agent_client(&sidecar, &token)
        .get(format!("http://{}/sse", w.upstream.authority()))
        .header("authorization", "Bearer {{secret:prod/api/key}}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let mut stream = res.bytes_stream();
    use futures::StreamExt;
    let mut seen = String::new();
    // The upstream holds the second event until released: the first must arrive before that.
    while !seen.contains("first") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("first event flows")
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(!seen.contains("second"));
    w.upstream.release_sse();
    while !seen.contains("second") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("second event flows")
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    sidecar.stop().await;
}

#[tokio::test]
async fn the_ssrf_guard_blocks_internal_addresses_unless_allowed() {
    let w = World::new().await;
    let internal = Upstream::http_on("127.0.0.2:0").await;
    let host = format!("127.0.0.2:{}", internal.addr.port());
    w.tenant
        .put_secret(&w.cp, "prod/internal/key", KEY, &[&host, "169.254.169.254"])
        .await;
    let (_, token) = w.token(&["secrets:read:prod/**"], json!({})).await;

    // Listed as plaintext (so the request is well-formed) but not allow_private.
    let guarded = w
        .sidecar(|c| {
            for name in [host.as_str(), "169.254.169.254"] {
                c.hosts.push(HostRule {
                    plaintext: true,
                    ..HostRule::new(name.parse().unwrap())
                });
            }
        })
        .await;
    for url in [
        format!("http://{host}/echo"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
    ] {
        let (status, body) = get(
            &agent_client(&guarded, &token),
            &url,
            "Bearer {{secret:prod/internal/key}}",
        )
        .await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::FORBIDDEN, "destination_not_allowed".into()),
            "{url}"
        );
    }
    assert!(internal.received().is_empty());
    guarded.stop().await;

    let allowed = w.sidecar(|c| c.hosts.push(local_host(&host))).await;
    let (status, body) = get(
        &agent_client(&allowed, &token),
        &format!("http://{host}/echo"),
        "Bearer {{secret:prod/internal/key}}",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        internal.last().header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    allowed.stop().await;
}

#[tokio::test]
async fn redirects_are_passed_to_the_agent_not_followed() {
    let w = World::new().await;
    let sidecar = w.sidecar(|_| {}).await;
    let (_, token) = w.token(&["secrets:read:prod/**"], json!({})).await;
    let client = reqwest::Client::builder()
        .proxy(
            reqwest::Proxy::http(format!("http://{}", sidecar.proxy_addr()))
                .unwrap()
                .basic_auth("a", &token),
        )
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = client
        .get(format!("http://{}/redirect", w.upstream.authority()))
        .header("authorization", "Bearer {{secret:prod/api/key}}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FOUND);
    assert_eq!(w.upstream.received().len(), 1);
    sidecar.stop().await;
}

#[tokio::test]
async fn audit_events_are_spooled_through_a_control_plane_outage_and_drain_after() {
    let mut w = World::new().await;
    let sidecar = w.sidecar(|_| {}).await;
    let (_, token) = w.token(&["secrets:read:prod/**"], json!({})).await;
    let client = agent_client(&sidecar, &token);
    let url = format!("http://{}/echo", w.upstream.authority());
    let (status, _) = get(&client, &url, "Bearer {{secret:prod/api/key}}").await;
    assert_eq!(status, StatusCode::OK, "warm the caches");

    let addr = w.cp.addr;
    w.cp.stop().await;
    // Warm caches keep injecting; the audit events wait in the spool.
    for i in 0..3 {
        let res = client
            .get(&url)
            .header("authorization", "Bearer {{secret:prod/api/key}}")
            .header("user-agent", format!("during-outage-{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    eventually(
        "events are spooled while the control plane is down",
        Duration::from_secs(10),
        || async { (sidecar.audit().map(|a| a.stats().spooled).unwrap_or(0) > 0).then_some(()) },
    )
    .await;

    w.cp = ControlPlane::serve(&w.install, addr, Policy::default()).await;
    let events = eventually(
        "the spool drains into the audit log",
        Duration::from_secs(20),
        || async {
            let events = w.tenant.audit(&w.cp, "type=secret.read").await;
            let during = events
                .iter()
                .filter(|e| {
                    e["user_agent"]
                        .as_str()
                        .is_some_and(|ua| ua.starts_with("during-outage-"))
                })
                .count();
            (during == 3).then_some(events)
        },
    )
    .await;
    assert!(events
        .iter()
        .all(|e| e["destination_host"] == w.upstream.authority()));
    let verify =
        w.cp.ok(
            reqwest::Method::GET,
            "/v1/audit/verify",
            &w.tenant.admin,
            None,
        )
        .await;
    assert_eq!(verify["valid"], true, "{verify}");
    sidecar.stop().await;
}

#[tokio::test]
async fn requests_without_placeholders_still_need_a_token_the_control_plane_accepts() {
    let w = World::new().await;
    let upstream = format!("http://{}/", w.upstream.authority());
    let sidecar = w.sidecar(|c| c.routes.push(route("/up/", &upstream))).await;
    let (id, token) = w
        .token(&["secrets:read:prod/**"], json!({"max_uses": 1}))
        .await;
    let url = format!("http://{}/up/echo", sidecar.proxy_addr());
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    let send = |token: String| {
        plain
            .get(&url)
            .header("proxy-authorization", format!("Bearer {token}"))
            .send()
    };
    // Well-formed (right prefix, id and checksum) but never issued.
    let forged = agent_secret_core::credential::issue(
        agent_secret_core::credential::CredentialKind::Token,
        &agent_secret_core::credential::Pepper::generate(),
    );
    let res = send(forged.token.expose().to_owned()).await.unwrap();
    assert_eq!(res.status(), StatusCode::PROXY_AUTHENTICATION_REQUIRED);
    assert_eq!(code(&res.text().await.unwrap()), "token_invalid");
    assert!(
        w.upstream.received().is_empty(),
        "a forged token opened the proxy"
    );

    for _ in 0..2 {
        assert_eq!(send(token.clone()).await.unwrap().status(), StatusCode::OK);
    }
    let info =
        w.cp.ok(
            reqwest::Method::GET,
            &format!("/v1/tokens/{id}"),
            &w.tenant.admin,
            None,
        )
        .await;
    assert_eq!(
        info["uses"], 0,
        "pass-through requests read no secret and count no use"
    );
    sidecar.stop().await;
}

#[tokio::test]
async fn reason_phrases_stacked_encodings_and_upgrades_cannot_smuggle_the_value_back() {
    let w = World::new().await;
    let sidecar = w.sidecar(|_| {}).await;
    let (_, token) = w.token(&["secrets:read:prod/**"], json!({})).await;
    let base = format!("http://{}", w.upstream.authority());
    let proxy = format!("http://agent:{token}@{}", sidecar.proxy_addr());
    // curl applies every Content-Encoding line and shows the raw status line: what an agent
    // with a simple client would see.
    let curl = |path: &str, extra: &[&str]| {
        let mut cmd = std::process::Command::new("curl");
        cmd.args(["-sS", "-i", "--compressed", "-x", &proxy])
            .args(["-H", "Authorization: Bearer {{secret:prod/api/key}}"])
            .args(extra)
            .arg(format!("{base}{path}"));
        cmd
    };
    for (path, extra) in [
        ("/echo/reason", &[][..]),
        ("/echo/stacked-encoding", &[][..]),
        (
            "/upgrade",
            &["-H", "Connection: Upgrade", "-H", "Upgrade: websocket"][..],
        ),
    ] {
        let mut cmd = curl(path, extra);
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        let seen = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            !seen.contains(KEY),
            "{path} smuggled the value back:\n{seen}"
        );
        assert!(
            w.upstream
                .last()
                .header("authorization")
                .unwrap()
                .contains(KEY),
            "{path}: injected"
        );
        if path == "/upgrade" {
            assert!(
                seen.starts_with("HTTP/1.1 502"),
                "an upgrade after injection is refused:\n{seen}"
            );
            assert!(seen.contains("unscannable_response"), "{seen}");
        }
    }
    sidecar.stop().await;
}

#[tokio::test]
async fn a_forged_token_with_a_victims_id_does_not_lock_the_victim_out() {
    let w = World::new().await;
    let sidecar = w.sidecar(|_| {}).await;
    let (id, token) = w.token(&["secrets:read:prod/**"], json!({})).await;
    let url = format!("http://{}/echo", w.upstream.authority());
    let victim_id = uuid::Uuid::parse_str(&id).unwrap();
    let forged = agent_secret_core::credential::issue_with_id(
        agent_secret_core::credential::CredentialKind::Token,
        victim_id,
        &agent_secret_core::credential::Pepper::generate(),
    );
    let (status, body) = get(
        &agent_client(&sidecar, forged.token.expose()),
        &url,
        "Bearer {{secret:prod/api/key}}",
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (
            StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            "token_invalid".into()
        )
    );
    let (status, body) = get(
        &agent_client(&sidecar, &token),
        &url,
        "Bearer {{secret:prod/api/key}}",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "the real token still works: {body}");
    sidecar.stop().await;
}

/// What a new end-to-end test looks like on the harness: an injection lands in the tenant's
/// audit log under the token that made it, with the path and the destination.
#[tokio::test]
async fn an_injection_is_audited_under_its_token_with_path_and_destination() {
    let h = Harness::builder().secret("prod/api/key", KEY).start().await;
    let token = h.issue(agent().scope("secrets:read:prod/**")).await;
    let placeholder = "Bearer {{secret:prod/api/key}}";
    let (status, body) = get(&h.agent(&token), &h.url("/echo"), placeholder).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let reads = eventually(
        "the secret.read event",
        Duration::from_secs(10),
        async || Some(h.audit("type=secret.read").await).filter(|events| !events.is_empty()),
    )
    .await;
    assert_eq!(reads[0]["path"], "prod/api/key");
    assert_eq!(reads[0]["destination_host"], h.upstream.authority());
    assert!(
        reads[0]["actor"].as_str().unwrap().contains(&token.id),
        "{}",
        reads[0]
    );
}
