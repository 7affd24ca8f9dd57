//! Issue 10, item 8: the control plane's log never carries a credential or a secret value, even
//! at `[log] level = "trace"` (and `RUST_LOG=trace`). HTTP, TLS and SQL libraries print whole
//! requests at debug and trace; `serve` pins them below that
//! (`agent_secret_core::diagnostics::PINNED_LOG_TARGETS`).
//!
//! Runs the real `agent-secret-store serve` binary and drives it over HTTP/1.1 and HTTP/2 the
//! way an operator, an agent and a sidecar do, then reads everything it wrote to stderr: the
//! server's own events are there (down to debug), the HTTP, TLS and SQL libraries' debug and
//! trace events are not, and no credential or secret value is.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};

use agent_secret_testkit::process::Spawned;
use std::time::Duration;

use reqwest::{Client, Method};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_agent-secret-store");
const SECRET: &str = "sk-trace-log-secret-value-0123456789";

/// A config with every path inside `dir`, the dev TLS pair minted there, and JSON logs at
/// `level` (one event a line, so the test can read each event's level and target).
fn write_config(dir: &Path, level: &str) -> std::path::PathBuf {
    agent_secret_control_plane::tls::self_signed(&dir.join("tls")).unwrap();
    let text = format!(
        "listen = \"127.0.0.1:0\"\n\
         [database]\nurl = \"sqlite://{}\"\n\
         [security]\npepper_file = {:?}\n\
         [kms]\nkeyring = {:?}\nmaster_key_file = {:?}\n\
         [tls]\ncert_file = {:?}\nkey_file = {:?}\n\
         [log]\nlevel = {level:?}\nformat = \"json\"\n",
        dir.join("store.db").display(),
        dir.join("pepper"),
        dir.join("keyring.json"),
        dir.join("master.key"),
        dir.join("tls/server.pem"),
        dir.join("tls/server.key"),
    );
    let config = dir.join("control-plane.toml");
    std::fs::write(&config, text).unwrap();
    config
}

/// One call; panics unless it succeeds. Returns the JSON body.
async fn ok(client: &Client, method: Method, url: String, bearer: &str, body: Value) -> Value {
    let res = client
        .request(method.clone(), &url)
        .bearer_auth(bearer)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert!(status.is_success(), "{method} {url}: {status} {body}");
    body
}

/// The whole life of a secret over `client`: the operator creates an agent and a sidecar and
/// stores the secret, the agent issues a token, the sidecar resolves it. Returns every
/// credential used on the way.
async fn operator_agent_and_sidecar(
    client: &Client,
    base: &str,
    admin: &str,
    label: &str,
) -> Vec<String> {
    let url = |path: &str| format!("{base}{path}");
    let agent = ok(
        client,
        Method::POST,
        url("/v1/agents"),
        admin,
        json!({"name": format!("bot-{label}"), "allow": ["secrets:read:**"]}),
    )
    .await;
    let agent_key = agent["agent_key"].as_str().unwrap().to_owned();
    let sidecar = ok(
        client,
        Method::POST,
        url("/v1/sidecars"),
        admin,
        json!({"name": format!("host-{label}")}),
    )
    .await;
    let sidecar_key = sidecar["sidecar_key"].as_str().unwrap().to_owned();
    let path = format!("app/{label}/api_key");
    ok(
        client,
        Method::PUT,
        url(&format!("/v1/secrets/{path}")),
        admin,
        json!({"value": SECRET, "allowed_hosts": ["api.example.com"]}),
    )
    .await;
    let issued = ok(
        client,
        Method::POST,
        url("/v1/tokens"),
        &agent_key,
        json!({"scopes": [format!("secrets:read:app/{label}/*")], "ttl_seconds": 600}),
    )
    .await;
    let token = issued["token"].as_str().unwrap().to_owned();
    let resolved = ok(
        client,
        Method::POST,
        url("/v1/sidecar/resolve"),
        &sidecar_key,
        json!({
            "token": token,
            "paths": [path],
            "destination_host": "api.example.com",
            "client_ip": "10.0.0.1",
        }),
    )
    .await;
    assert_eq!(resolved["secrets"][0]["path"], json!(path), "{resolved}");
    assert!(resolved["secrets"][0]["envelope"].is_object(), "{resolved}");
    vec![agent_key, sidecar_key, token]
}

/// Whether `target` logging at `level` is more verbose than the issue allows: the HTTP and TLS
/// libraries print frames and handshakes (and could print headers) below INFO, sqlx prints
/// every statement below WARN.
fn below_pin(target: &str, level: &str) -> bool {
    const HTTP_AND_TLS: [&str; 8] = [
        "hyper",
        "h2",
        "http_body",
        "rustls",
        "tokio_rustls",
        "tower_http",
        "axum",
        "reqwest",
    ];
    if target.starts_with("sqlx") {
        !matches!(level, "WARN" | "ERROR")
    } else if HTTP_AND_TLS.iter().any(|lib| target.starts_with(lib)) {
        matches!(level, "DEBUG" | "TRACE")
    } else {
        false
    }
}

#[tokio::test]
async fn trace_logging_keeps_libraries_pinned_and_prints_no_credential_or_secret() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "trace");
    let init = Command::new(BIN)
        .env_clear()
        .args(["init", "--config"])
        .arg(&config)
        .arg("--json")
        .output()
        .unwrap();
    assert!(init.status.success(), "{init:?}");
    let init: Value = serde_json::from_slice(&init.stdout).unwrap();
    let admin = init["admin_token"].as_str().unwrap().to_owned();

    // A file, not a pipe: at trace the server writes a lot, and must never block on it.
    let log_file = dir.path().join("serve.log");
    let mut server = Spawned::start(
        Command::new(BIN)
            .env_clear()
            .env("RUST_LOG", "trace")
            .env("NO_COLOR", "1")
            .args(["serve", "--config"])
            .arg(&config)
            .arg("--json")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log_file).unwrap()),
    );
    let mut stdout = server.take_stdout();
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let listen: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    let base = listen["listen"].as_str().unwrap().to_owned();

    let ca = std::fs::read(dir.path().join("tls/ca.pem")).unwrap();
    let client = |http1: bool| {
        let builder = Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .no_proxy()
            .timeout(Duration::from_secs(30));
        let builder = if http1 { builder.http1_only() } else { builder };
        builder.build().unwrap()
    };
    // Plain HTTP to the TLS port: the server logs the failed handshake at debug, which shows
    // that the level took effect while the pinned libraries stay quiet.
    let addr = base.trim_start_matches("https://").to_owned();
    let mut plain = tokio::net::TcpStream::connect(&addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let _ = plain.read_to_end(&mut sink).await;

    let mut credentials = vec![admin.clone()];
    credentials.extend(operator_agent_and_sidecar(&client(true), &base, &admin, "h1").await);
    credentials.extend(operator_agent_and_sidecar(&client(false), &base, &admin, "h2").await);

    // SIGINT, as an operator stops it; the log is complete once the process has exited.
    server.interrupt();
    let exited = server.exited(Duration::from_secs(30)).await.is_some();
    assert!(exited, "serve did not exit after SIGINT");

    let log = std::fs::read_to_string(&log_file).unwrap();
    let events: Vec<Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let logged = |level: &str, message: &str| {
        events
            .iter()
            .any(|e| e["level"] == level && e["fields"]["message"] == message)
    };
    assert!(logged("INFO", "listening"), "the server logs: {log}");
    assert!(
        logged("DEBUG", "TLS handshake failed"),
        "the level took effect: {log}"
    );
    // The libraries that print requests, frames or SQL stay at their pinned levels.
    let too_verbose: BTreeSet<String> = events
        .iter()
        .filter_map(|e| {
            let target = e["target"].as_str().unwrap_or_default();
            let level = e["level"].as_str().unwrap_or_default();
            below_pin(target, level).then(|| format!("{target} {level}"))
        })
        .collect();
    assert!(
        too_verbose.is_empty(),
        "library targets logged below their pin: {too_verbose:?}"
    );
    assert!(!log.contains(SECRET), "the secret value is in the log");
    // Whole credentials, and their secret part on its own (a library could log a fragment).
    for credential in &credentials {
        let kind = &credential[..5];
        assert!(
            !log.contains(credential.as_str()),
            "a {kind} credential is in the log"
        );
        let secret_part = credential.split('_').nth(2).unwrap();
        assert_eq!(secret_part.len(), 43, "{kind} credential format");
        assert!(
            !log.contains(secret_part),
            "a {kind} credential's secret is in the log"
        );
    }
}
