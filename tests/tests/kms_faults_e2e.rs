//! KMS faults have codes, and a KMS outage does not burn a limited use (issue 10 items 9 and
//! 11): the real control plane and the real sidecar, each with its own `google-cloud-kms-v1`
//! client, against the suite's fake Cloud KMS with its fault switches; agents' HTTP goes
//! through real sockets to a real upstream.
//!
//! * Unreachable, timing out or 5xx → 503 `kms_unavailable` with `Retry-After`, on the
//!   sidecar (decrypt) and on `secret put` (encrypt, API and CLI).
//! * An answer that fails its checks (CRC32C either way, another key's version, unverified
//!   flags) → 502 `kms_integrity_failed`, counted and audited on both sides.
//! * A single-use token whose first attempt met a KMS outage still has its use afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt as _;

use std::time::Duration;

use agent_secret_control_plane::service::Policy;
use agent_secret_proxy::RunningSidecar;
use agent_secret_testkit::fake_gcp_kms::{FakeGcpKms, Fault};
use agent_secret_testkit::sidecar::{local_host, start_sidecar};
use agent_secret_testkit::{control_plane::Install, control_plane::Tenant, ControlPlane, Upstream};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const VALUE: &str = "sk-gcp-wrapped-0123456789abcdef";
const PATH: &str = "prod/api/key";

struct World {
    _dir: tempfile::TempDir,
    fake: FakeGcpKms,
    install: Install,
    cp: ControlPlane,
    tenant: Tenant,
    upstream: Upstream,
}

/// What the agent saw.
struct Seen {
    status: StatusCode,
    retry_after: Option<String>,
    body: String,
}

impl Seen {
    fn code(&self) -> String {
        serde_json::from_str::<Value>(&self.body)
            .map(|b| b["error"]["code"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_default()
    }
}

impl World {
    async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeGcpKms::start().await;
        let install = Install::new(dir.path(), None).await.with_fake_gcp(&fake);
        let cp =
            ControlPlane::serve(&install, "127.0.0.1:0".parse().unwrap(), Policy::default()).await;
        let tenant = Tenant::create(&cp, "acme").await;
        let upstream = Upstream::http().await;
        tenant
            .put_secret(&cp, PATH, VALUE, &[&upstream.authority()])
            .await;
        World {
            _dir: dir,
            fake,
            install,
            cp,
            tenant,
            upstream,
        }
    }

    async fn sidecar(&self) -> RunningSidecar {
        let host = self.upstream.authority();
        start_sidecar(&self.install, &self.cp, &self.tenant.sidecar_key, |c| {
            c.hosts.push(local_host(&host))
        })
        .await
    }

    /// `(id, token)` of a token for the secret; `max_uses` when given.
    async fn token(&self, max_uses: Option<i64>) -> (String, String) {
        let extra = max_uses.map_or(json!({}), |n| json!({ "max_uses": n }));
        self.tenant
            .token(&self.cp, &["secrets:read:prod/api/*"], extra)
            .await
    }

    async fn call(&self, sidecar: &RunningSidecar, token: &str) -> Seen {
        let proxy = reqwest::Proxy::http(format!("http://{}", sidecar.proxy_addr()))
            .unwrap()
            .basic_auth("agent", token);
        let client = reqwest::Client::builder().proxy(proxy).build().unwrap();
        let res = client
            .get(format!("http://{}/echo", self.upstream.authority()))
            .header("authorization", format!("Bearer {{{{secret:{PATH}}}}}"))
            .send()
            .await
            .unwrap();
        Seen {
            status: res.status(),
            retry_after: res
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned()),
            body: res.text().await.unwrap(),
        }
    }

    async fn token_uses(&self, id: &str) -> i64 {
        let body = self
            .cp
            .ok(
                Method::GET,
                &format!("/v1/tokens/{id}"),
                &self.tenant.admin,
                None,
            )
            .await;
        body["uses"].as_i64().unwrap()
    }

    /// `PUT /v1/secrets/{path}` as the admin: status, `Retry-After` and body.
    async fn put(&self, path: &str) -> (StatusCode, Option<String>, Value) {
        let res = self
            .cp
            .client
            .put(format!("{}/v1/secrets/{path}", self.cp.url))
            .bearer_auth(&self.tenant.admin)
            .json(&json!({"value": "v-0123456789", "allowed_hosts": ["api.example.com"]}))
            .send()
            .await
            .unwrap();
        let status = res.status();
        let retry_after = res
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        (status, retry_after, res.json().await.unwrap())
    }
}

/// The scenario: Cloud KMS is down for a single-use token's first attempt (503
/// `kms_unavailable`, `Retry-After`), the sidecar gives the reserved use back, and the retry
/// after the KMS recovers succeeds; the use is then spent.
#[tokio::test]
async fn a_kms_outage_does_not_burn_a_single_use_token() {
    let w = World::new().await;
    let sidecar = w.sidecar().await;
    let (id, token) = w.token(Some(1)).await;
    let before = w.upstream.received().len();

    w.fake.set_fault(Fault::Unavailable { times: 1_000 });
    let first = w.call(&sidecar, &token).await;
    assert_eq!(
        first.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        first.body
    );
    assert_eq!(first.code(), "kms_unavailable", "{}", first.body);
    assert_eq!(first.retry_after.as_deref(), Some("5"));
    assert_eq!(w.upstream.received().len(), before, "nothing was forwarded");
    assert_eq!(
        w.token_uses(&id).await,
        0,
        "the reserved use was given back"
    );
    let released = sidecar
        .metrics()
        .use_releases
        .with_label_values(&["released"]);
    assert_eq!(released.get(), 1);

    w.fake.clear_faults();
    let retry = w.call(&sidecar, &token).await;
    assert_eq!(retry.status, StatusCode::OK, "{}", retry.body);
    assert_eq!(
        w.upstream.last().header("authorization"),
        Some(format!("Bearer {VALUE}").as_str())
    );
    assert_eq!(w.token_uses(&id).await, 1);
    let spent = w.call(&sidecar, &token).await;
    assert_eq!(spent.status, StatusCode::FORBIDDEN, "{}", spent.body);
    assert_eq!(spent.code(), "uses_exhausted");

    let releases = w.tenant.audit(&w.cp, "type=token.use_released").await;
    assert_eq!(releases.len(), 1, "{releases:?}");
    assert!(
        releases[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("kms_unavailable"),
        "{releases:?}"
    );
    sidecar.stop().await;
}

/// Unreachable, timing out and 5xx all read as an outage at the sidecar: 503
/// `kms_unavailable` with `Retry-After`, never 500 `internal`.
#[tokio::test]
async fn every_kind_of_kms_outage_is_a_503_with_retry_after_at_the_sidecar() {
    let w = World::new().await;
    let sidecar = w.sidecar().await;
    let (_, token) = w.token(None).await;
    for fault in [
        Fault::Unavailable { times: 1_000 },
        Fault::DeadlineExceeded { times: 1_000 },
        Fault::ProxyUnavailable { times: 1_000 },
        Fault::Internal { times: 1_000 },
    ] {
        w.fake.set_fault(fault.clone());
        let seen = w.call(&sidecar, &token).await;
        assert_eq!(
            (seen.status, seen.code()),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "kms_unavailable".to_owned()
            ),
            "{fault:?}: {}",
            seen.body
        );
        assert_eq!(seen.retry_after.as_deref(), Some("5"), "{fault:?}");
        w.fake.clear_faults();
    }
    let ok = w.call(&sidecar, &token).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert!(
        sidecar
            .metrics()
            .kms_failures
            .with_label_values(&["unavailable"])
            .get()
            >= 4
    );
    sidecar.stop().await;
}

/// A decrypt answer that fails its checks is a 502 `kms_integrity_failed` (no `Retry-After`:
/// not to be retried blindly), counted, and audited as a failed `secret.read` with that
/// reason; nothing is forwarded and nothing wrong is cached.
#[tokio::test]
async fn a_corrupted_decrypt_answer_is_a_502_kms_integrity_failed_and_audited() {
    let w = World::new().await;
    let sidecar = w.sidecar().await;
    let (_, token) = w.token(None).await;
    let before = w.upstream.received().len();
    for fault in [Fault::CorruptResponse, Fault::WrongResponseCrc] {
        w.fake.set_fault(fault.clone());
        let seen = w.call(&sidecar, &token).await;
        assert_eq!(
            seen.status,
            StatusCode::BAD_GATEWAY,
            "{fault:?}: {}",
            seen.body
        );
        assert_eq!(seen.code(), "kms_integrity_failed", "{fault:?}");
        assert_eq!(seen.retry_after, None, "{fault:?}");
        assert!(!seen.body.contains(VALUE));
        w.fake.clear_faults();
    }
    assert_eq!(w.upstream.received().len(), before, "nothing was forwarded");
    assert_eq!(
        sidecar
            .metrics()
            .kms_failures
            .with_label_values(&["integrity"])
            .get(),
        2
    );
    let failed = agent_secret_testkit::eventually(
        "the sidecar's integrity refusals reach the audit log",
        Duration::from_secs(10),
        || async {
            let events = w.tenant.audit(&w.cp, "type=secret.read").await;
            let failed: Vec<Value> = events
                .into_iter()
                .filter(|e| {
                    e["success"] == false
                        && e["reason"]
                            .as_str()
                            .is_some_and(|r| r.starts_with("kms_integrity_failed"))
                })
                .collect();
            (failed.len() == 2).then_some(failed)
        },
    )
    .await;
    assert_eq!(failed[0]["path"], PATH);

    let ok = w.call(&sidecar, &token).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    sidecar.stop().await;
}

/// `secret put` through the API: an outage is 503 `kms_unavailable` with `Retry-After`, an
/// answer failing its checks is 502 `kms_integrity_failed` with a failed `secret.write` audit
/// event and a metric; nothing is written either way.
#[tokio::test]
async fn secret_put_answers_kms_unavailable_and_kms_integrity_failed() {
    let w = World::new().await;
    for fault in [
        Fault::Unavailable { times: 1_000 },
        Fault::Internal { times: 1_000 },
        Fault::ProxyUnavailable { times: 1_000 },
    ] {
        w.fake.set_fault(fault.clone());
        let (status, retry_after, body) = w.put("prod/other/key").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{fault:?}: {body}");
        assert_eq!(
            body["error"]["code"], "kms_unavailable",
            "{fault:?}: {body}"
        );
        assert_eq!(retry_after.as_deref(), Some("5"), "{fault:?}");
        w.fake.clear_faults();
    }
    let integrity = [
        Fault::CorruptResponse,
        Fault::WrongResponseCrc,
        Fault::DropVerifiedFlags,
        Fault::WrongKeyName,
        Fault::CorruptRequestInTransit,
    ];
    for fault in &integrity {
        w.fake.set_fault(fault.clone());
        let (status, retry_after, body) = w.put("prod/other/key").await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{fault:?}: {body}");
        assert_eq!(
            body["error"]["code"], "kms_integrity_failed",
            "{fault:?}: {body}"
        );
        assert_eq!(retry_after, None, "{fault:?}");
        w.fake.clear_faults();
    }
    let (status, missing) =
        w.cp.call(
            Method::GET,
            "/v1/secrets/prod/other/key",
            &w.tenant.admin,
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "nothing was written: {missing}"
    );
    let failed: Vec<Value> = w
        .tenant
        .audit(&w.cp, "type=secret.write")
        .await
        .into_iter()
        .filter(|e| e["success"] == false)
        .collect();
    assert_eq!(failed.len(), integrity.len(), "{failed:?}");
    assert!(failed
        .iter()
        .all(|e| e["reason"] == "kms_integrity_failed" && e["path"] == "prod/other/key"));
    let metrics = &w.cp.app.metrics;
    assert_eq!(
        metrics.kms_failures.with_label_values(&["integrity"]).get(),
        integrity.len() as u64
    );
    assert_eq!(
        metrics
            .kms_failures
            .with_label_values(&["unavailable"])
            .get(),
        3
    );

    let (status, _, body) = w.put("prod/other/key").await;
    assert_eq!(status, StatusCode::OK, "the KMS is back: {body}");
}

/// `secret put` through the CLI fails with the server's code, as scripts branch on it.
#[tokio::test]
async fn the_cli_secret_put_reports_the_kms_codes() {
    use agent_secret_store::cli::{self, Cli};
    use clap::Parser;

    let w = World::new().await;
    let token_file = w.install.dir.join("admin.token");
    std::fs::write(&token_file, &w.tenant.admin).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let value_file = w.install.dir.join("value");
    std::fs::write(&value_file, "v-0123456789").unwrap();
    let put = || {
        Cli::try_parse_from([
            "agent-secret-store".as_ref(),
            "--server".as_ref(),
            w.cp.url.as_ref(),
            "--ca-cert".as_ref(),
            w.cp.ca_file.as_os_str(),
            "--token-file".as_ref(),
            token_file.as_os_str(),
            "secret".as_ref(),
            "put".as_ref(),
            "prod/cli/key".as_ref(),
            "--allow-host".as_ref(),
            "api.example.com".as_ref(),
            "--value-file".as_ref(),
            value_file.as_os_str(),
            "--json".as_ref(),
        ] as [&std::ffi::OsStr; 15])
        .unwrap()
    };
    for (fault, code) in [
        (Fault::WrongResponseCrc, "kms_integrity_failed"),
        (Fault::Unavailable { times: 1_000 }, "kms_unavailable"),
    ] {
        w.fake.set_fault(fault.clone());
        let failure = cli::run(put()).await.unwrap_err();
        assert_eq!(failure.code, code, "{fault:?}: {failure}");
        assert!(
            failure.to_string().starts_with(&format!("{code}: ")),
            "what the CLI prints: {failure}"
        );
        assert_ne!(failure.exit, 0);
        w.fake.clear_faults();
    }
    cli::run(put()).await.unwrap();
}
