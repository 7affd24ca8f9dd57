//! `agent-secret-store dev`: one command runs the whole system, prints a curl that works, and
//! a second run reuses the same data.

#![cfg(feature = "dev")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::BufRead;
use std::process::{Command, Stdio};

use agent_secret_testkit::process::Spawned;

use serde_json::Value;

/// Starts `dev` on free ports and returns its `dev.json` document.
fn start(dir: &std::path::Path) -> (Spawned, Value) {
    let mut dev = Spawned::start(
        Command::new(env!("CARGO_BIN_EXE_agent-secret-store"))
            .args(["dev", "--json", "--dir"])
            .arg(dir)
            .args(["--listen", "127.0.0.1:0", "--proxy-listen", "127.0.0.1:0"])
            .args([
                "--admin-listen",
                "127.0.0.1:0",
                "--echo-listen",
                "127.0.0.1:0",
                "--mcp-listen",
                "127.0.0.1:0",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let mut stdout = dev.take_stdout();
    let mut doc = String::new();
    loop {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "dev exited early; printed {doc:?}"
        );
        doc.push_str(&line);
        if let Ok(v) = serde_json::from_str::<Value>(&doc) {
            return (dev, v);
        }
    }
}

fn curl_through(info: &Value) -> Value {
    let proxy = info["proxy_url"].as_str().unwrap();
    let token = info["demo_token"].as_str().unwrap();
    let placeholder = info["demo_placeholder"].as_str().unwrap();
    let out = Command::new("curl")
        .args([
            "-sS",
            "--fail",
            "-x",
            proxy,
            "--proxy-user",
            &format!("agent:{token}"),
        ])
        .args(["-H", &format!("Authorization: Bearer {placeholder}")])
        .arg(format!("{}/hello", info["echo_url"].as_str().unwrap()))
        .output()
        .expect("curl is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn dev_runs_everything_and_the_printed_curl_injects_and_scrubs() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (dev, first) = start(&state);
    let echoed = curl_through(&first);
    assert_eq!(
        echoed["authorization_matches_demo_secret"], true,
        "{echoed}"
    );
    assert_eq!(
        echoed["received_headers"]["authorization"], "Bearer [REDACTED:demo/echo/api_key]",
        "the agent sees the echo scrubbed"
    );
    for key in [
        "control_plane_url",
        "ca_cert",
        "admin_url",
        "admin_token",
        "keyring",
        "master_key_file",
        "agent_key",
        "control_plane_mcp_url",
        "sidecar_mcp_url",
    ] {
        assert!(first[key].is_string(), "dev.json lacks {key}: {first}");
    }
    // The sidecar's MCP endpoint is up and wants the agent's token.
    let mcp = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .arg(first["sidecar_mcp_url"].as_str().unwrap())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&mcp.stdout), "401");
    let on_disk: Value =
        serde_json::from_slice(&std::fs::read(state.join("dev.json")).unwrap()).unwrap();
    assert_eq!(on_disk, first);
    drop(dev);

    let (_dev, second) = start(&state);
    assert_eq!(
        second["tenant_id"], first["tenant_id"],
        "a re-run reuses the install"
    );
    assert_eq!(second["admin_token"], first["admin_token"]);
    assert_ne!(
        second["demo_token"], first["demo_token"],
        "a fresh demo token each run"
    );
    assert_eq!(
        curl_through(&second)["authorization_matches_demo_secret"],
        true
    );
}
