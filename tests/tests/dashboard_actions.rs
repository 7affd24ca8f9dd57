//! The dashboard's forms over real HTTPS, each checked against the API's view of the result:
//! an admin creates an agent (its key shown once, and working), sets its tier, widens and
//! narrows its ceiling (a token outside is revoked), lists and revokes tokens, rotates the key
//! (the old one dies), disables the agent, stores a secret value through the write-only field
//! (it never comes back), and revokes a sidecar seen with its version. Forms without the
//! session's token or from another origin change nothing; an approver is refused admin forms.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use agent_secret_testkit::harness::{agent, Harness};
use agent_secret_testkit::human::HumanLogin;
use reqwest::{header, Method, StatusCode};
use serde_json::{json, Value};

/// The `value` of the first input of `html` named `name` (or with `id="name"`).
fn input_value(html: &str, marker: &str) -> String {
    let at = html
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} in {html}"));
    let rest = &html[at..];
    let v = rest.find("value=\"").expect("a value") + 7;
    rest[v..].split('"').next().unwrap().to_owned()
}

struct Page {
    status: StatusCode,
    path: String,
    html: String,
}

async fn get(who: &HumanLogin, path: &str) -> Page {
    let res = who.request(Method::GET, path).send().await.unwrap();
    Page {
        status: res.status(),
        path: res.url().path().to_owned(),
        html: res.text().await.unwrap(),
    }
}

/// A browser's form post from this origin with the page's form token (redirects followed).
async fn post(who: &HumanLogin, path: &str, csrf: &str, fields: &[(&str, &str)]) -> Page {
    let mut form: Vec<(&str, &str)> = vec![("csrf", csrf)];
    form.extend_from_slice(fields);
    let res = who
        .request(Method::POST, path)
        .form(&form)
        .send()
        .await
        .unwrap();
    Page {
        status: res.status(),
        path: res.url().path().to_owned(),
        html: res.text().await.unwrap(),
    }
}

async fn api(h: &Harness, method: Method, path: &str, body: Option<Value>) -> Value {
    h.cp.ok(method, path, &h.tenant.admin, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_manages_agents_tokens_secrets_and_sidecars_from_the_dashboard() {
    let h = Harness::builder()
        .secret("demo/echo/api_key", "sk-demo-value-0123456789")
        .start()
        .await;
    let root = HumanLogin::create(&h.cp, &h.tenant.id, &h.tenant.admin, "root", "admin").await;
    let agents_page = get(&root, "/ui/agents").await;
    assert_eq!(agents_page.status, StatusCode::OK);
    let csrf = input_value(&agents_page.html, "name=\"csrf\"");

    // Forms without the session's token, or from another origin, change nothing.
    let before = api(&h, Method::GET, "/v1/agents", None).await["agents"]
        .as_array()
        .unwrap()
        .len();
    let forged = post(&root, "/ui/agents", "", &[("name", "forged")]).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let cross =
        h.cp.client
            .post(h.cp.url("/ui/agents"))
            .header(header::COOKIE, &root.cookie)
            .header(header::ORIGIN, "https://evil.example")
            .form(&[("csrf", csrf.as_str()), ("name", "forged")])
            .send()
            .await
            .unwrap();
    assert_eq!(cross.status(), StatusCode::FORBIDDEN);
    // A second Origin after this site's own is refused too.
    let doubled = root
        .request(Method::POST, "/ui/agents")
        .header(header::ORIGIN, "https://evil.example")
        .form(&[("csrf", csrf.as_str()), ("name", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(doubled.status(), StatusCode::FORBIDDEN);
    let after = api(&h, Method::GET, "/v1/agents", None).await["agents"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(before, after, "no agent was created");

    // Create: the key is on the response page once, and it works.
    let created = post(
        &root,
        "/ui/agents",
        &csrf,
        &[
            ("name", "ci-bot"),
            ("trust_tier", "1"),
            ("allow", "secrets:read:team/*\nsecrets:read:ops/*"),
        ],
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.html);
    let key = input_value(&created.html, "id=\"agent-key\"");
    let id = created
        .html
        .split("/ui/agents/")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    let mint = |key: String, scope: &'static str| {
        let cp = &h.cp;
        async move {
            cp.call(
                Method::POST,
                "/v1/tokens",
                &key,
                Some(json!({"scopes": [scope], "ttl_seconds": 600})),
            )
            .await
        }
    };
    let (status, team_token) = mint(key.clone(), "secrets:read:team/*").await;
    assert_eq!(status, StatusCode::CREATED, "{team_token}");
    let team_token = team_token["id"].as_str().unwrap().to_owned();
    let agent_page = get(&root, &format!("/ui/agents/{id}")).await;
    assert_eq!(agent_page.status, StatusCode::OK);
    assert!(
        !agent_page.html.contains(&key),
        "the key is shown only once"
    );
    assert!(agent_page.html.contains(&team_token), "its token is listed");

    // Tier and ceiling, as the API then sees them.
    let tier = post(
        &root,
        &format!("/ui/agents/{id}/tier"),
        &csrf,
        &[("trust_tier", "3")],
    )
    .await;
    assert!(tier.html.contains("Trust tier saved"), "{}", tier.html);
    let bad_tier = post(
        &root,
        &format!("/ui/agents/{id}/tier"),
        &csrf,
        &[("trust_tier", "9")],
    )
    .await;
    assert_eq!(bad_tier.status, StatusCode::BAD_REQUEST);
    assert!(
        bad_tier.html.contains("between 0 and 4"),
        "{}",
        bad_tier.html
    );
    let narrowed = post(
        &root,
        &format!("/ui/agents/{id}/ceiling"),
        &csrf,
        &[("change", "deny"), ("scopes", "secrets:read:team/*")],
    )
    .await;
    assert!(
        narrowed.html.contains("Ceiling narrowed"),
        "{}",
        narrowed.html
    );
    post(
        &root,
        &format!("/ui/agents/{id}/ceiling"),
        &csrf,
        &[("change", "allow"), ("scopes", "secrets:read:demo/**")],
    )
    .await;
    let shown = api(&h, Method::GET, &format!("/v1/agents/{id}"), None).await;
    assert_eq!(shown["trust_tier"], 3);
    assert_eq!(
        shown["ceiling"],
        json!(["secrets:read:ops/*", "secrets:read:demo/**"])
    );
    let team = api(&h, Method::GET, &format!("/v1/tokens/{team_token}"), None).await;
    assert_eq!(team["status"], "revoked", "the narrowing revoked it");

    // The tokens page filters by agent and state; an admin revokes from the agent's page.
    let revoked_list = get(&root, &format!("/ui/tokens?agent={id}&status=revoked")).await;
    assert!(revoked_list.html.contains(&team_token));
    let (_, ops_token) = mint(key.clone(), "secrets:read:ops/*").await;
    let ops_token = ops_token["id"].as_str().unwrap().to_owned();
    let active_list = get(&root, &format!("/ui/tokens?agent={id}&status=active")).await;
    assert!(active_list.html.contains(&ops_token) && !active_list.html.contains(&team_token));
    let revoked = post(
        &root,
        &format!("/ui/tokens/{ops_token}/revoke"),
        &csrf,
        &[("back", "agent")],
    )
    .await;
    assert_eq!(revoked.path, format!("/ui/agents/{id}"));
    assert!(revoked.html.contains("Token revoked"));
    let ops = api(&h, Method::GET, &format!("/v1/tokens/{ops_token}"), None).await;
    assert_eq!(ops["status"], "revoked");

    // Rotation needs the confirmation; then the old key is dead and the new one works.
    let unconfirmed = post(&root, &format!("/ui/agents/{id}/rotate"), &csrf, &[]).await;
    assert_eq!(unconfirmed.status, StatusCode::BAD_REQUEST);
    let rotated = post(
        &root,
        &format!("/ui/agents/{id}/rotate"),
        &csrf,
        &[("confirm", "yes")],
    )
    .await;
    assert_eq!(rotated.status, StatusCode::OK);
    let new_key = input_value(&rotated.html, "id=\"agent-key\"");
    assert_ne!(new_key, key);
    assert_eq!(
        mint(key.clone(), "secrets:read:ops/*").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        mint(new_key.clone(), "secrets:read:ops/*").await.0,
        StatusCode::CREATED
    );

    // Disable: the agent is revoked and its key stops working.
    let disabled = post(
        &root,
        &format!("/ui/agents/{id}/disable"),
        &csrf,
        &[("confirm", "yes")],
    )
    .await;
    assert!(
        disabled.html.contains("Agent disabled"),
        "{}",
        disabled.html
    );
    assert!(!api(&h, Method::GET, &format!("/v1/agents/{id}"), None).await["revoked_at"].is_null());
    assert_eq!(
        mint(new_key, "secrets:read:ops/*").await.0,
        StatusCode::UNAUTHORIZED
    );

    // A secret written through the form: stored, listed under its folder, never shown back.
    let value = "pg-password-never-shown-4242";
    let host = h.upstream.authority();
    let stored = post(
        &root,
        "/ui/secrets",
        &csrf,
        &[
            ("path", "team/db/password"),
            ("value", value),
            ("sensitivity", "sensitive"),
            ("allowed_hosts", host.as_str()),
        ],
    )
    .await;
    assert_eq!(stored.status, StatusCode::OK);
    assert!(
        stored.html.contains("Stored version 1 of team/db/password"),
        "{}",
        stored.html
    );
    assert!(!stored.html.contains(value));
    let meta = api(&h, Method::GET, "/v1/secrets/team/db/password", None).await;
    assert_eq!(meta["sensitivity"], "sensitive");
    let rotated_value = "pg-password-rotated-4343";
    post(
        &root,
        "/ui/secrets",
        &csrf,
        &[
            ("path", "team/db/password"),
            ("value", rotated_value),
            ("allowed_hosts", host.as_str()),
        ],
    )
    .await;
    let detail = get(&root, "/ui/secret?path=team/db/password").await;
    assert!(detail.html.contains("2 version(s)"), "{}", detail.html);
    assert!(
        detail.html.contains("sensitive"),
        "the sensitivity was kept"
    );
    assert!(!detail.html.contains(value) && !detail.html.contains(rotated_value));
    let tree = get(&root, "/ui/secrets").await;
    assert!(
        tree.html.contains("?prefix=team/\">team/</a>"),
        "{}",
        tree.html
    );
    let refused = post(
        &root,
        "/ui/secrets",
        &csrf,
        &[
            ("path", "../bad path"),
            ("value", value),
            ("allowed_hosts", "x.example"),
        ],
    )
    .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.html.contains("Not stored"), "{}", refused.html);
    assert!(
        !refused.html.contains(value),
        "a refused value is not echoed"
    );

    // The sidecar is listed once it has authenticated, with the version it reports.
    let token = h.issue(agent().scope("secrets:read:demo/echo/*")).await;
    let injected = h
        .agent(&token)
        .get(h.url("/echo"))
        .header("authorization", "Bearer {{secret:demo/echo/api_key}}")
        .send()
        .await
        .unwrap();
    assert_eq!(injected.status(), StatusCode::OK);
    let sidecars = get(&root, "/ui/sidecars").await;
    assert!(
        sidecars
            .html
            .contains(&format!("<code>{}</code>", env!("CARGO_PKG_VERSION"))),
        "{}",
        sidecars.html
    );
    assert!(!sidecars.html.contains(">never<"), "{}", sidecars.html);
    let listed = api(&h, Method::GET, "/v1/sidecars", None).await;
    let sidecar = listed["sidecars"][0]["id"].as_str().unwrap().to_owned();
    assert!(!listed["sidecars"][0]["last_seen_at"].is_null());
    let gone = post(
        &root,
        &format!("/ui/sidecars/{sidecar}/revoke"),
        &csrf,
        &[("confirm", "yes")],
    )
    .await;
    assert!(gone.html.contains("Sidecar key revoked"), "{}", gone.html);
    let listed = api(&h, Method::GET, "/v1/sidecars", None).await;
    assert!(!listed["sidecars"][0]["revoked_at"].is_null());

    // No page or response above carried a secret value; the audit saw every action.
    for kind in [
        "agent.created",
        "agent.trust_tier_set",
        "agent.key_rotated",
        "agent.revoked",
        "token.revoked",
        "secret.write",
        "sidecar.revoked",
    ] {
        assert!(
            !h.audit(&format!("type={kind}")).await.is_empty(),
            "{kind} audited"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_reads_but_cannot_use_admin_forms() {
    let h = Harness::builder().start().await;
    let bob = HumanLogin::create(&h.cp, &h.tenant.id, &h.tenant.admin, "bob", "approver").await;
    let page = get(&bob, "/ui/tokens").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        !page.html.contains("Revoke"),
        "no revoke buttons for an approver"
    );
    let agents = get(&bob, "/ui/agents").await;
    assert!(!agents.html.contains("Create an agent"));
    let csrf = input_value(&agents.html, "name=\"csrf\"");
    let refused = post(&bob, "/ui/agents", &csrf, &[("name", "sneaky")]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let secrets = post(
        &bob,
        "/ui/secrets",
        &csrf,
        &[
            ("path", "x/y"),
            ("value", "v"),
            ("allowed_hosts", "x.example"),
        ],
    )
    .await;
    assert_eq!(secrets.status, StatusCode::FORBIDDEN);
    assert_eq!(
        get(&bob, "/ui/sidecars").await.status,
        StatusCode::FORBIDDEN
    );
    let names: Vec<Value> =
        h.cp.ok(Method::GET, "/v1/agents", &h.tenant.admin, None)
            .await["agents"]
            .as_array()
            .unwrap()
            .clone();
    assert!(names.iter().all(|a| a["name"] != "sneaky"));
}
