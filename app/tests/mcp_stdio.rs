//! `agent-secret-store mcp`, the stdio bridge, launched as a command by the official MCP
//! Python SDK (as desktop hosts launch MCP servers): it offers the control plane's tools and the
//! sidecar's `http_request` under their own names and forwards each call. A token for a
//! standard secret is active at once; one for a critical secret waits while the client polls
//! and two humans approve; `http_request` injects and comes back scrubbed, and is refused for a
//! host the secret is not bound to and for a wrong token. What comes back holds placeholders
//! and scrubbed echoes, never the value.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use agent_secret_testkit::eventually;
use agent_secret_testkit::harness::{agent, quick_approvals, Harness};
use agent_secret_testkit::human::HumanLogin;
use agent_secret_testkit::python::{script, venv_python};
use agent_secret_testkit::sidecar::local_host;
use agent_secret_testkit::Upstream;
use reqwest::Method;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_agent-secret-store");
const VALUE: &str = "sk-demo-stdio-value-0123456789";
const ROOT: &str = "root-credential-stdio-0123456789";

/// Launches the bridge from the Python client with `env`, runs `steps`, returns the results
/// and the raw output.
async fn bridge(python: &PathBuf, args: &Value, env: Value, steps: Value) -> (Value, String) {
    let mut cmd = Command::new(python);
    cmd.arg(script("mcp_stdio_client.py"))
        .arg(BIN)
        .arg(args.to_string())
        .arg(env.to_string())
        .arg(steps.to_string());
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let results: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "stdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (results, stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stdio_bridge_offers_both_servers_tools_and_forwards_calls() {
    let Some(python) = venv_python("mcp") else {
        return;
    };
    let elsewhere = Upstream::http().await;
    let other_host = elsewhere.authority();
    let h = Harness::builder()
        .policy(quick_approvals(Duration::from_secs(1)))
        .secret("demo/echo/api_key", VALUE)
        .sidecar(move |c| {
            c.mcp_listen = Some("127.0.0.1:0".parse().unwrap());
            c.hosts.push(local_host(&other_host));
        })
        .start()
        .await;
    h.cp.ok(
        Method::PUT,
        "/v1/secrets/vault/root",
        &h.tenant.admin,
        Some(json!({"value": ROOT, "sensitivity": "critical", "allowed_hosts": [h.upstream.authority()]})),
    )
    .await;
    let token = h.issue(agent().scope("secrets:read:demo/echo/*")).await;
    let sidecar = format!("http://{}/mcp", h.sidecar.mcp_addr().unwrap());
    let args = json!([
        "--server",
        h.cp.url(""),
        "--ca-cert",
        h.cp.ca_file,
        "mcp",
        "--sidecar",
        sidecar
    ]);
    let env = |token: &str| {
        json!({
            "AGENT_SECRET_STORE_AGENT_KEY": h.tenant.agent_key,
            "AGENT_SECRET_STORE_AGENT_TOKEN": token,
            "RUST_LOG": "warn",
        })
    };
    let placeholder = json!({"authorization": "Bearer {{secret:demo/echo/api_key}}"});
    let steps = json!([
        ["list_secrets", {}],
        ["request_token", {"scopes": ["secrets:read:demo/echo/*"], "ttl_seconds": 600}],
        ["http_request", {"method": "GET", "url": h.url("/echo"), "headers": placeholder}],
        ["http_request", {"method": "GET", "url": format!("http://{}/echo", elsewhere.authority()),
                          "headers": placeholder}],
        ["request_token", {"scopes": ["secrets:read:vault/*"], "ttl_seconds": 600}],
        ["await_approval", {}],
        ["no_such_tool", {}],
    ]);
    let client = bridge(&python, &args, env(&token.token), steps);
    // Two humans approve the critical token while the client polls.
    let approve = async {
        let pending = eventually("the pending approval", Duration::from_secs(60), || async {
            let list =
                h.cp.ok(
                    Method::GET,
                    "/v1/approvals?status=pending",
                    &h.tenant.admin,
                    None,
                )
                .await;
            list["approvals"][0]["id"].as_str().map(str::to_owned)
        })
        .await;
        for name in ["alice", "bob"] {
            let human =
                HumanLogin::create(&h.cp, &h.tenant.id, &h.tenant.admin, name, "approver").await;
            let (code, body) = human
                .call(
                    Method::POST,
                    &format!("/v1/approvals/{pending}/approve"),
                    Some(json!({"comment": "checked"})),
                )
                .await;
            assert!(code.is_success(), "{body}");
        }
    };
    let ((results, stdout), ()) = tokio::join!(client, approve);

    assert_eq!(
        results[0]["tools"],
        json!([
            "approval_status",
            "http_request",
            "list_secrets",
            "request_access",
            "request_token"
        ])
    );
    let secrets = &results[1]["structured"]["secrets"];
    assert_eq!(
        secrets[0]["placeholder"], "{{secret:demo/echo/api_key}}",
        "{results}"
    );
    assert_eq!(results[2]["structured"]["status"], "active", "{results}");
    assert_eq!(results[3]["structured"]["status"], 200, "{results}");
    assert_eq!(
        h.upstream.last().header("authorization"),
        Some(format!("Bearer {VALUE}").as_str())
    );
    assert!(
        results[3]["structured"]["body"]
            .as_str()
            .unwrap()
            .contains("[REDACTED:demo/echo/api_key]"),
        "{results}"
    );
    assert_eq!(results[4]["is_error"], true, "{results}");
    assert_eq!(
        results[4]["structured"]["error"]["code"], "destination_not_allowed",
        "{results}"
    );
    assert!(
        elsewhere.received().is_empty(),
        "nothing reached the other host"
    );
    assert_eq!(
        results[5]["structured"]["status"], "pending_approval",
        "{results}"
    );
    assert_eq!(results[6]["structured"]["status"], "approved", "{results}");
    assert!(results[6]["polls"].as_u64().unwrap() >= 1, "{results}");
    assert!(results[7]["protocol_error"].is_i64(), "{results}");
    assert!(
        !stdout.contains(VALUE) && !stdout.contains(ROOT),
        "the value never reaches the client: {stdout}"
    );

    // A wrong token: the sidecar's tool refuses it, the bridge passes the refusal on.
    let wrong = "asst_0190f3a2b4c87d5e9f0a1b2c3d4e5f60_not-a-real-token";
    let (refused, _) = bridge(
        &python,
        &args,
        env(wrong),
        json!([["http_request", {"method": "GET", "url": h.url("/echo"), "headers": placeholder}]]),
    )
    .await;
    assert_eq!(refused[1]["is_error"], true, "{refused}");
    assert_eq!(
        refused[1]["structured"]["error"]["code"], "token_invalid",
        "{refused}"
    );
}
