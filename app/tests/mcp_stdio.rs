//! `agent-secret-store mcp`, the stdio bridge, launched as a command by the official MCP
//! Python SDK (as desktop hosts launch MCP servers): it offers the control plane's tools and the
//! sidecar's `http_request` under their own names, forwards each call, and what comes back
//! holds placeholders and scrubbed echoes, never the value.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use agent_secret_testkit::harness::{agent, Harness};
use agent_secret_testkit::python::{script, venv_python};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_agent-secret-store");
const VALUE: &str = "sk-demo-stdio-value-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stdio_bridge_offers_both_servers_tools_and_forwards_calls() {
    let Some(python) = venv_python("mcp") else {
        return;
    };
    let h = Harness::builder()
        .secret("demo/echo/api_key", VALUE)
        .sidecar(|c| c.mcp_listen = Some("127.0.0.1:0".parse().unwrap()))
        .start()
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
    let env = json!({
        "AGENT_SECRET_STORE_AGENT_KEY": h.tenant.agent_key,
        "AGENT_SECRET_STORE_AGENT_TOKEN": token.token,
        "RUST_LOG": "warn",
    });
    let steps = json!([
        ["list_secrets", {}],
        ["http_request", {"method": "GET", "url": h.url("/echo"),
                          "headers": {"authorization": "Bearer {{secret:demo/echo/api_key}}"}}],
        ["no_such_tool", {}],
    ]);
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
    assert_eq!(results[2]["structured"]["status"], 200, "{results}");
    assert_eq!(
        h.upstream.last().header("authorization"),
        Some(format!("Bearer {VALUE}").as_str())
    );
    assert!(results[3]["protocol_error"].is_i64(), "{results}");
    assert!(
        !stdout.contains(VALUE),
        "the value never reaches the client: {stdout}"
    );
}
