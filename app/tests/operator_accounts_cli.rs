//! Issue 12, item 5: `operator create --password-*`, `operator passwd`, `operator totp-enroll`,
//! `operator totp-confirm` and `operator disable` against the real HTTPS server, each printing
//! exactly one JSON document with `--json`; passwords and codes come from files or stdin.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../control-plane/tests/served/mod.rs"]
mod served;
#[path = "../../control-plane/tests/support/mod.rs"]
mod support;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use served::{Served, Tenant};

const BIN: &str = env!("CARGO_BIN_EXE_agent-secret-store");
const PASSWORD: &str = "correct horse battery staple";

/// Runs the CLI as `token` with `stdin`; (exit code, stdout, stderr).
fn cli(cp: &Served, token: &str, args: &[&str], stdin: &str) -> (Option<i32>, String, String) {
    let mut child = Command::new(BIN)
        .args(["--server", &cp.url(""), "--ca-cert"])
        .arg(&cp.ca_file)
        .args(args)
        .env("AGENT_SECRET_STORE_TOKEN", token)
        .env_remove("AGENT_SECRET_SERVER")
        .env_remove("AGENT_SECRET_CA_CERT")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn one_doc(status: Option<i32>, stdout: &str, stderr: &str) -> Value {
    assert_eq!(status, Some(0), "{stderr}");
    serde_json::from_str(stdout).expect("exactly one JSON document on stdout")
}

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn code_now(base32: &str) -> String {
    let totp = totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(6)
        .with_step_duration(30)
        .with_secret(totp_rs::Secret::try_from_base32(base32).unwrap())
        .build()
        .unwrap();
    totp.generate_current().to_string()
}

// The CLI runs as a blocking child process: the server needs a thread of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_account_commands_print_one_json_document_each() {
    let cp = Served::builder().start().await;
    let t = Tenant::create(&cp, "acme").await;
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("password");
    write_private(&password_file, &format!("{PASSWORD}\n"));

    let args = [
        "operator",
        "create",
        "alice",
        "--role",
        "approver",
        "--password-file",
    ];
    let (status, stdout, stderr) = cli(
        &cp,
        &t.admin,
        &[&args[..], &[password_file.to_str().unwrap(), "--json"]].concat(),
        "",
    );
    let created = one_doc(status, &stdout, &stderr);
    assert_eq!(created["password_set"], json!(true), "{created}");
    assert!(created["operator_token"]
        .as_str()
        .unwrap()
        .starts_with("asso_"));
    let id = created["id"].as_str().unwrap().to_owned();

    // A password refused by the rules: the error code on stderr, nothing on stdout.
    let (status, stdout, stderr) = cli(
        &cp,
        &t.admin,
        &[
            "operator",
            "create",
            "bob",
            "--role",
            "auditor",
            "--password-stdin",
            "--json",
        ],
        "short\n",
    );
    assert_ne!(status, Some(0));
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("invalid_password"), "{stderr}");

    let (status, stdout, stderr) = cli(
        &cp,
        &t.admin,
        &["operator", "totp-enroll", &id, "--json"],
        "",
    );
    let enrolled = one_doc(status, &stdout, &stderr);
    let secret = enrolled["secret"].as_str().unwrap().to_owned();
    assert!(enrolled["otpauth_url"]
        .as_str()
        .unwrap()
        .starts_with("otpauth://totp/"));
    assert!(stderr.contains("shown only once"), "{stderr}");

    let (status, stdout, stderr) = cli(
        &cp,
        &t.admin,
        &["operator", "totp-confirm", &id, "--json"],
        &format!("{}\n", code_now(&secret)),
    );
    let confirmed = one_doc(status, &stdout, &stderr);
    assert_eq!(confirmed["totp_confirmed"], json!(true), "{confirmed}");

    let new_file = dir.path().join("new-password");
    write_private(&new_file, "another long passphrase");
    let (status, stdout, stderr) = cli(
        &cp,
        &t.admin,
        &[
            "operator",
            "passwd",
            &id,
            "--password-file",
            new_file.to_str().unwrap(),
            "--json",
        ],
        "",
    );
    let changed = one_doc(status, &stdout, &stderr);
    assert_eq!(changed["operator_id"], json!(id));

    let (status, stdout, stderr) = cli(&cp, &t.admin, &["operator", "disable", &id, "--json"], "");
    let disabled = one_doc(status, &stdout, &stderr);
    assert!(disabled["disabled_at"].is_string(), "{disabled}");
    let token = created["operator_token"].as_str().unwrap();
    let (status, _) = cp.call(Method::GET, "/v1/operators", token, None).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a disabled operator's token is revoked"
    );

    let (status, stdout, stderr) = cli(&cp, &t.admin, &["operator", "list", "--json"], "");
    let list = one_doc(status, &stdout, &stderr);
    assert_eq!(list["operators"].as_array().unwrap().len(), 3, "{list}");
    for text in [&stdout, &stderr] {
        assert!(!text.contains(PASSWORD) && !text.contains("another long passphrase"));
    }
}
