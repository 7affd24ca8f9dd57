//! Real clients through the real sidecar: `curl -x`, Python `requests` with `HTTP_PROXY`, and
//! the official `openai` Python SDK with `base_url` pointed at a sidecar route, talking to a
//! local fake OpenAI server. Python comes from the venv `.ci/run` creates (`target/py`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use agent_secret_control_plane::service::Policy;
use agent_secret_testkit::control_plane::{ControlPlane, Install, Tenant};
use agent_secret_testkit::python::venv_python;
use agent_secret_testkit::sidecar::{local_host, route, start_sidecar};
use agent_secret_testkit::Upstream;
use serde_json::json;

const KEY: &str = "sk-proj-realclient-0123456789abcdef";

struct Setup {
    _dir: tempfile::TempDir,
    _cp: ControlPlane,
    upstream: Upstream,
    sidecar: agent_secret_proxy::RunningSidecar,
    token: String,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let install = Install::new(dir.path(), None).await;
    let cp = ControlPlane::serve(&install, "127.0.0.1:0".parse().unwrap(), Policy::default()).await;
    let tenant = Tenant::create(&cp, "acme").await;
    let upstream = Upstream::http().await;
    upstream.accept_openai_key(KEY);
    tenant
        .put_secret(&cp, "prod/openai/api_key", KEY, &[&upstream.authority()])
        .await;
    let host = upstream.authority();
    let sidecar = start_sidecar(&install, &cp, &tenant.sidecar_key, |c| {
        c.hosts.push(local_host(&host));
        c.routes.push(route("/openai/", &format!("http://{host}/")));
    })
    .await;
    let (_, token) = tenant
        .token(&cp, &["secrets:read:prod/openai/*"], json!({}))
        .await;
    Setup {
        _dir: dir,
        _cp: cp,
        upstream,
        sidecar,
        token,
    }
}

/// Runs a blocking client process off the async runtime (the sidecar lives on it).
async fn run(mut cmd: Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("client runs"))
        .await
        .unwrap()
}

fn clean_env(cmd: &mut Command) -> &mut Command {
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "no_proxy",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

#[tokio::test]
async fn curl_through_the_sidecar_gets_the_key_injected() {
    let s = setup().await;
    let mut cmd = Command::new("curl");
    clean_env(&mut cmd)
        .args([
            "-sS",
            "--fail",
            "-x",
            &format!("http://{}", s.sidecar.proxy_addr()),
        ])
        .args(["--proxy-user", &format!("agent:{}", s.token)])
        .args(["-H", "Authorization: Bearer {{secret:prod/openai/api_key}}"])
        .arg(format!("http://{}/echo", s.upstream.authority()));
    let out = run(cmd).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        s.upstream.last().header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains(KEY));
    s.sidecar.stop().await;
}

#[tokio::test]
async fn python_requests_with_http_proxy_gets_the_key_injected() {
    let Some(python) = venv_python("requests, openai") else {
        return;
    };
    let s = setup().await;
    let script = r#"
import sys, requests
r = requests.get(sys.argv[1], headers={"Authorization": "Bearer {{secret:prod/openai/api_key}}"})
print(r.status_code)
print(r.text)
"#;
    let mut cmd = Command::new(python);
    clean_env(&mut cmd)
        .env(
            "HTTP_PROXY",
            format!("http://agent:{}@{}", s.token, s.sidecar.proxy_addr()),
        )
        .args([
            "-c",
            script,
            &format!("http://{}/echo", s.upstream.authority()),
        ]);
    let out = run(cmd).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("200"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        s.upstream.last().header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert!(
        stdout.contains("[REDACTED:prod/openai/api_key]") && !stdout.contains(KEY),
        "{stdout}"
    );
    s.sidecar.stop().await;
}

#[tokio::test]
async fn the_openai_sdk_with_a_sidecar_base_url_gets_the_key_injected() {
    let Some(python) = venv_python("requests, openai") else {
        return;
    };
    let s = setup().await;
    let script = r#"
import sys
from openai import OpenAI
client = OpenAI(
    base_url=sys.argv[1],
    api_key="{{secret:prod/openai/api_key}}",
    default_headers={"Proxy-Authorization": "Bearer " + sys.argv[2]},
    max_retries=0,
)
reply = client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
print(reply.choices[0].message.content)
"#;
    let mut cmd = Command::new(python);
    clean_env(&mut cmd).args([
        "-c",
        script,
        &format!("http://{}/openai/v1", s.sidecar.proxy_addr()),
        &s.token,
    ]);
    let out = run(cmd).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "key accepted");
    let received = s.upstream.last();
    assert_eq!(received.uri, "/v1/chat/completions");
    assert_eq!(
        received.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert!(!received.everything().contains(&s.token));
    s.sidecar.stop().await;
}
