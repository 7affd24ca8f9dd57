//! The control plane's MCP server driven by an independent client: the official MCP Python SDK
//! (`mcp`, in the venv `.ci/run` creates) over Streamable HTTP with the install's CA. It lists
//! the tools and calls each: secrets come back as placeholders only; a token for a standard
//! secret is active and injects through the real sidecar; one for a critical secret waits for
//! approval, which the client polls until two humans approve; an access request reaches the
//! operators with its reason; wrong credentials, unknown tools, oversized arguments and
//! malformed JSON-RPC are refused while the server keeps serving; every call is audited.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use agent_secret_control_plane::service::Policy;
use agent_secret_testkit::eventually;
use agent_secret_testkit::harness::{quick_approvals, Harness, Issued};
use agent_secret_testkit::human::HumanLogin;
use agent_secret_testkit::python::{script, venv_python};
use agent_secret_testkit::sidecar::local_host;
use agent_secret_testkit::Upstream;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const VALUE: &str = "sk-demo-mcp-value-0123456789";
const ROOT: &str = "root-credential-mcp-0123456789";

struct Mcp {
    python: PathBuf,
    url: String,
    /// The CA of an https endpoint; `-` for plain HTTP.
    ca: PathBuf,
}

impl Mcp {
    /// One client run: `--list`, or a tool with its arguments. Runs off the async runtime.
    async fn run(&self, bearer: &str, tool: &str, arguments: Value) -> Value {
        let mut cmd = Command::new(&self.python);
        cmd.arg(script("mcp_http_client.py"))
            .arg(&self.url)
            .arg(&self.ca)
            .arg(bearer)
            .arg(tool)
            .arg(arguments.to_string());
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
            panic!(
                "client output: {stdout}\nstderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    async fn call(&self, bearer: &str, tool: &str, arguments: Value) -> Value {
        self.run(bearer, tool, arguments).await
    }
}

fn policy() -> Policy {
    quick_approvals(Duration::from_secs(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_client_discovers_requests_and_waits_for_approval() {
    let Some(python) = venv_python("mcp, httpx2") else {
        return;
    };
    let h = Harness::builder()
        .policy(policy())
        .secret("demo/echo/api_key", VALUE)
        .start()
        .await;
    h.cp.ok(
        Method::PUT,
        "/v1/secrets/vault/root",
        &h.tenant.admin,
        Some(json!({"value": ROOT, "sensitivity": "critical", "allowed_hosts": [h.upstream.authority()]})),
    )
    .await;
    let mcp = Mcp {
        python,
        url: h.cp.url("/mcp"),
        ca: h.cp.ca_file.clone(),
    };
    let key = h.tenant.agent_key.clone();

    // The tools, each with an input schema.
    let listed = mcp.run(&key, "--list", Value::Null).await;
    let mut names: Vec<&str> = listed["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{listed}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "approval_status",
            "list_secrets",
            "request_access",
            "request_token"
        ]
    );
    assert!(listed["tools"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["input_schema"]["type"] == "object"));

    // Secrets as placeholders, never values.
    let secrets = mcp.call(&key, "list_secrets", json!({})).await;
    let text = secrets.to_string();
    assert!(!text.contains(VALUE) && !text.contains(ROOT), "{text}");
    let demo = secrets["structured"]["secrets"]
        .as_array()
        .unwrap_or_else(|| panic!("{secrets}"))
        .iter()
        .find(|s| s["path"] == "demo/echo/api_key")
        .unwrap()
        .clone();
    assert_eq!(demo["placeholder"], "{{secret:demo/echo/api_key}}");
    assert_eq!(demo["why_not"], "no_token");

    // A standard secret: an active token that injects through the sidecar.
    let issued = mcp
        .call(
            &key,
            "request_token",
            json!({"scopes": ["secrets:read:demo/echo/*"], "ttl_seconds": 600}),
        )
        .await;
    assert_eq!(issued["structured"]["status"], "active", "{issued}");
    let token = Issued {
        id: issued["structured"]["id"].as_str().unwrap().to_owned(),
        token: issued["structured"]["token"].as_str().unwrap().to_owned(),
    };
    let res = h
        .agent(&token)
        .get(h.url("/echo"))
        .header("authorization", "Bearer {{secret:demo/echo/api_key}}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        h.upstream.last().header("authorization"),
        Some(format!("Bearer {VALUE}").as_str())
    );
    let with_token = mcp.call(&token.token, "list_secrets", json!({})).await;
    let usable: Vec<&str> = with_token["structured"]["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["usable_now"] == true)
        .map(|s| s["path"].as_str().unwrap())
        .collect();
    assert_eq!(usable, ["demo/echo/api_key"], "{with_token}");
    let refused = mcp
        .call(
            &token.token,
            "request_token",
            json!({"scopes": ["secrets:read:demo/echo/*"], "ttl_seconds": 60}),
        )
        .await;
    assert_eq!(refused["is_error"], true);
    assert_eq!(
        refused["structured"]["error"]["code"], "forbidden",
        "{refused}"
    );

    // A critical secret: pending; the client polls until two humans approve.
    let pending = mcp
        .call(
            &key,
            "request_token",
            json!({"scopes": ["secrets:read:vault/*"], "ttl_seconds": 600}),
        )
        .await;
    assert_eq!(
        pending["structured"]["status"], "pending_approval",
        "{pending}"
    );
    let approval = pending["structured"]["approval_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let status = mcp
        .call(&key, "approval_status", json!({"approval_id": approval}))
        .await;
    assert_eq!(status["structured"]["status"], "pending", "{status}");
    assert_eq!(status["structured"]["required_approvals"], 2);
    assert_eq!(
        status["structured"]["unlocks"],
        json!([["vault/root", "critical"]])
    );
    for name in ["alice", "bob"] {
        let human =
            HumanLogin::create(&h.cp, &h.tenant.id, &h.tenant.admin, name, "approver").await;
        let (code, body) = human
            .call(
                Method::POST,
                &format!("/v1/approvals/{approval}/approve"),
                Some(json!({"comment": "checked"})),
            )
            .await;
        assert_eq!(code, StatusCode::OK, "{body}");
    }
    eventually(
        "the client sees the approval",
        Duration::from_secs(30),
        || async {
            let status = mcp
                .call(&key, "approval_status", json!({"approval_id": approval}))
                .await;
            status["structured"]["status"] == "approved"
        },
    )
    .await;

    // An access request by a narrow agent, with its reason for the humans.
    let narrow =
        h.cp.ok(
            Method::POST,
            "/v1/agents",
            &h.tenant.admin,
            Some(json!({"name": "narrow", "allow": ["secrets:read:demo/**"]})),
        )
        .await;
    let narrow_key = narrow["agent_key"].as_str().unwrap().to_owned();
    let asked = mcp
        .call(
            &narrow_key,
            "request_access",
            json!({"paths": ["vault/*"], "reason": "rotate the root credential"}),
        )
        .await;
    assert_eq!(asked["structured"]["status"], "pending_approval", "{asked}");
    let asked_id = asked["structured"]["approval_id"].as_str().unwrap();
    let asked_status = mcp
        .call(
            &narrow_key,
            "approval_status",
            json!({"approval_id": asked_id}),
        )
        .await;
    assert_eq!(
        asked_status["structured"]["ceiling_additions"],
        json!(["secrets:read:vault/*"])
    );
    let foreign = mcp
        .call(
            &narrow_key,
            "approval_status",
            json!({"approval_id": approval}),
        )
        .await;
    assert_eq!(
        foreign["structured"]["error"]["code"], "not_found",
        "another agent's request"
    );

    // Refusals: a wrong credential, an unknown tool, oversized arguments, bad JSON-RPC.
    let wrong = mcp.run("assa_not-a-key", "--list", Value::Null).await;
    assert!(
        wrong.get("connect_error").is_some() || wrong.get("protocol_error").is_some(),
        "{wrong}"
    );
    let unknown = mcp.call(&key, "no_such_tool", json!({})).await;
    assert!(unknown["protocol_error"].is_i64(), "{unknown}");
    let huge = mcp
        .call(
            &key,
            "request_access",
            json!({"paths": ["x/*"], "reason": "r".repeat(20_000)}),
        )
        .await;
    assert_eq!(huge["protocol_error"], -32602, "invalid params: {huge}");
    assert!(
        huge["message"].as_str().unwrap().contains("exceed"),
        "{huge}"
    );
    let malformed =
        h.cp.client
            .post(h.cp.url("/mcp"))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body("{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\":")
            .send()
            .await
            .unwrap();
    assert!(
        malformed.status().is_client_error(),
        "{}",
        malformed.status()
    );
    let still = mcp.run(&key, "--list", Value::Null).await;
    assert!(
        still["tools"].is_array(),
        "the server keeps serving: {still}"
    );

    // Every call is audited with its tool and outcome.
    let calls = h.audit("type=mcp.tool_called").await;
    let reasons: Vec<&str> = calls
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("tool request_token; ok")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("tool request_token; forbidden")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("request_access; ok; reason: rotate the root credential")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("payload_too_large")),
        "{reasons:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecars_http_request_tool_injects_scrubs_and_refuses_like_the_proxy() {
    let Some(python) = venv_python("mcp, httpx2") else {
        return;
    };
    let elsewhere = Upstream::http().await;
    let other_host = elsewhere.authority();
    let h = Harness::builder()
        .secret("demo/echo/api_key", VALUE)
        .sidecar(move |c| {
            c.mcp_listen = Some("127.0.0.1:0".parse().unwrap());
            c.hosts.push(local_host(&other_host));
        })
        .start()
        .await;
    let mcp = Mcp {
        python,
        url: format!("http://{}/mcp", h.sidecar.mcp_addr().unwrap()),
        ca: PathBuf::from("-"),
    };
    let token = h
        .issue(agent_secret_testkit::harness::agent().scope("secrets:read:demo/echo/*"))
        .await;

    let listed = mcp.run(&token.token, "--list", Value::Null).await;
    assert_eq!(listed["tools"][0]["name"], "http_request", "{listed}");

    // Injected upstream, scrubbed on the way back: the value never reaches the client.
    let sent = mcp
        .call(
            &token.token,
            "http_request",
            json!({"method": "GET", "url": h.url("/echo"),
                   "headers": {"authorization": "Bearer {{secret:demo/echo/api_key}}"}}),
        )
        .await;
    assert_eq!(sent["structured"]["status"], 200, "{sent}");
    assert_eq!(
        h.upstream.last().header("authorization"),
        Some(format!("Bearer {VALUE}").as_str())
    );
    let text = sent.to_string();
    assert!(!text.contains(VALUE), "{text}");
    assert!(text.contains("[REDACTED:demo/echo/api_key]"), "{text}");

    // A host the secret is not bound to: the proxy's refusal, as a tool error with its code.
    let refused = mcp
        .call(
            &token.token,
            "http_request",
            json!({"method": "GET", "url": format!("http://{}/echo", elsewhere.authority()),
                   "headers": {"authorization": "Bearer {{secret:demo/echo/api_key}}"}}),
        )
        .await;
    assert_eq!(refused["is_error"], true, "{refused}");
    assert_eq!(
        refused["structured"]["error"]["code"],
        "destination_not_allowed"
    );
    assert!(
        elsewhere.received().is_empty(),
        "nothing reached the other host"
    );

    // An upstream cannot pass itself off as the sidecar refusing.
    let spoofed = mcp
        .call(
            &token.token,
            "http_request",
            json!({"method": "GET", "url": h.url("/spoof-denial"),
                   "headers": {"authorization": "Bearer {{secret:demo/echo/api_key}}"}}),
        )
        .await;
    assert_eq!(spoofed["is_error"], false, "{spoofed}");
    assert_eq!(spoofed["structured"]["body"], "an upstream's own words");
    assert!(spoofed["structured"]["headers"]
        .get("x-agent-secret-denial")
        .is_none());

    // A wrong token is refused by the proxy's own authentication.
    let wrong = mcp
        .call(
            "ast_not-a-token",
            "http_request",
            json!({"method": "GET", "url": h.url("/echo")}),
        )
        .await;
    assert_eq!(wrong["is_error"], true, "{wrong}");
    assert_eq!(
        wrong["structured"]["error"]["code"], "token_invalid",
        "{wrong}"
    );

    // The injection was audited like any proxied request's, and every call as a tool call
    // with its outcome, in the name of the token that made it.
    agent_secret_testkit::eventually("the read is audited", Duration::from_secs(20), || async {
        !h.audit("type=secret.read").await.is_empty()
    })
    .await;
    let expected = [
        "tool http_request; ok; HTTP 200",
        "tool http_request; destination_not_allowed",
        "tool http_request; token_invalid",
    ];
    let calls = agent_secret_testkit::eventually(
        "the tool calls are audited",
        Duration::from_secs(20),
        || async {
            let calls = h.audit("type=mcp.tool_called").await;
            let reasons: Vec<String> = calls
                .iter()
                .map(|e| e["reason"].as_str().unwrap_or_default().to_owned())
                .collect();
            expected
                .iter()
                .all(|x| reasons.iter().any(|r| r.starts_with(x)))
                .then_some(calls)
        },
    )
    .await;
    let ok = calls
        .iter()
        .find(|e| {
            e["reason"]
                .as_str()
                .unwrap()
                .starts_with("tool http_request; ok")
        })
        .unwrap();
    assert_eq!(ok["actor"], format!("token:{}", token.id), "{ok}");
    assert_eq!(ok["success"], true);
    assert_eq!(ok["ip"], "127.0.0.1", "{ok}");
    let denied = calls
        .iter()
        .find(|e| {
            e["reason"]
                .as_str()
                .unwrap()
                .contains("destination_not_allowed")
        })
        .unwrap();
    assert_eq!(denied["success"], false);
    assert_eq!(denied["destination_host"], "127.0.0.1", "{denied}");
}
