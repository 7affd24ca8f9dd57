//! The `agent-secret-store` binary as scripts use it: help text, `--json` output, exit codes,
//! key files created by `init`, and (end to end) remote commands against a real `serve`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use agent_secret_testkit::process::Spawned;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_agent-secret-store");

/// A command with a clean environment, so no AGENT_SECRET_* of the caller leaks in.
fn cli(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear().args(args).stdin(Stdio::null());
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("the binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// Stdout must be exactly one JSON document (trailing whitespace allowed).
fn one_json_doc(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "command failed: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        stdout(out),
        stderr(out)
    );
    serde_json::from_str(&stdout(out))
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {:?}", stdout(out)))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A temp install: config file with every path inside `dir`.
struct Install {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Install {
    fn new() -> Install {
        Install::with_tls(None)
    }

    fn with_tls(tls: Option<(&Path, &Path)>) -> Install {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut text = format!(
            "listen = \"127.0.0.1:0\"\n\
             [database]\nurl = \"sqlite://{}\"\n\
             [security]\npepper_file = {:?}\n\
             [kms]\nkeyring = {:?}\nmaster_key_file = {:?}\n",
            d.join("db/store.db").display(),
            d.join("keys/pepper"),
            d.join("keys/keyring.json"),
            d.join("keys/master.key"),
        );
        if let Some((cert, key)) = tls {
            text.push_str(&format!(
                "[tls]\ncert_file = {cert:?}\nkey_file = {key:?}\n"
            ));
        }
        let config = d.join("control-plane.toml");
        std::fs::write(&config, text).unwrap();
        Install { dir, config }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn cfg(&self) -> &str {
        self.config.to_str().unwrap()
    }

    /// `init` through this install's config; the first tenant's id.
    fn init(&self) -> String {
        let init = one_json_doc(&run(&mut cli(&["init", "--config", self.cfg(), "--json"])));
        init["tenant_id"].as_str().unwrap().to_owned()
    }
}

#[test]
fn every_command_has_help() {
    let commands: &[&[&str]] = &[
        &[],
        &["serve"],
        &["init"],
        &["migrate"],
        &["tenant"],
        &["tenant", "create"],
        &["sidecar", "create"],
        &["sidecar", "list"],
        &["sidecar", "revoke"],
        &["agent", "create"],
        &["agent", "rotate-key"],
        &["agent", "list"],
        &["agent", "show"],
        &["agent", "allow"],
        &["agent", "deny"],
        &["agent", "request-access"],
        &["agent", "set-tier"],
        &["approval", "list"],
        &["approval", "show"],
        &["approval", "approve"],
        &["approval", "deny"],
        &["token", "request-access"],
        &["operator", "create"],
        &["operator", "list"],
        &["secret", "put"],
        &["secret", "get-metadata"],
        &["secret", "list"],
        &["secret", "delete"],
        &["token", "issue"],
        &["token", "show"],
        &["token", "revoke"],
        &["audit", "export"],
        &["audit", "verify"],
        &["audit", "public-keys"],
        &["kms", "status"],
        &["kms", "rotate"],
        &["kms", "rewrap"],
        &["kms", "retire-version"],
        &["backup"],
        &["backup-keygen"],
        &["restore"],
        &["restore-keys"],
    ];
    for command in commands {
        let mut args = command.to_vec();
        args.push("--help");
        let out = run(&mut cli(&args));
        assert!(
            out.status.success(),
            "{args:?} --help failed: {}",
            stderr(&out)
        );
        let text = stdout(&out);
        assert!(
            text.contains("Usage:"),
            "{args:?} --help shows no usage: {text}"
        );
        assert!(
            text.contains("--json"),
            "{args:?} --help does not mention --json: {text}"
        );
    }
}

#[test]
fn secret_value_is_never_accepted_from_argv() {
    let help = stdout(&run(&mut cli(&["secret", "put", "--help"])));
    assert!(help.contains("stdin"), "{help}");
    assert!(
        !help.contains("--value "),
        "secret put must have no value flag: {help}"
    );
    for flag in ["--value", "--secret"] {
        let out = run(&mut cli(&[
            "secret",
            "put",
            "a/b",
            "--allow-host",
            "h",
            flag,
            "sk-live",
        ]));
        assert_eq!(out.status.code(), Some(2), "{flag} must be a usage error");
        assert!(stdout(&out).is_empty());
    }
    // Nor is there a flag for the operator token or the agent key.
    let out = run(&mut cli(&["agent", "list", "--token", "asso_x"]));
    assert_eq!(out.status.code(), Some(2));
}

/// Arguments, one environment variable, and what stderr must name.
type UsageError<'a> = (&'a [&'a str], Option<(&'a str, &'a str)>, &'a [&'a str]);

/// Usage errors exit 2 with a stable code (and what to set) on stderr and nothing on stdout,
/// one row each: the arguments, the environment, what stderr must name.
#[test]
fn usage_errors_exit_2_with_a_stable_code_and_an_empty_stdout() {
    let issue = ["token", "issue", "--scope", "secrets:read:a/*", "--ttl"];
    #[rustfmt::skip]
    let rows: [UsageError; 4] = [
        (&[&issue[..], &["1h", "--json"]].concat(), Some(("AGENT_SECRET_STORE_TOKEN", "asso_not_an_agent_key")), &["missing_credential", "AGENT_SECRET_AGENT_KEY"]),
        (&["agent", "list", "--json"], None, &["missing_credential"]),
        (&["agent", "list", "--json"], Some(("AGENT_SECRET_STORE_TOKEN", "asso_x")), &["missing_ca_cert"]),
        (&[&issue[..], &["1 week"]].concat(), Some(("AGENT_SECRET_AGENT_KEY", "assa_x")), &["invalid_argument"]),
    ];
    for (args, env, expected) in rows {
        let mut cmd = cli(args);
        if let Some((name, value)) = env {
            cmd.env(name, value);
        }
        let out = run(&mut cmd);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            stdout(&out).is_empty(),
            "{args:?}: stdout must stay empty on error"
        );
        for needle in expected {
            assert!(err.contains(needle), "{args:?}: no {needle} in {err}");
        }
    }
}

#[test]
fn init_creates_private_key_files_and_prints_one_json_document() {
    let install = Install::new();
    let doc = one_json_doc(&run(&mut cli(&[
        "init",
        "--config",
        install.cfg(),
        "--json",
    ])));
    let obj = doc.as_object().unwrap();
    assert_eq!(obj.len(), 2, "exactly tenant_id and admin_token: {doc}");
    assert!(obj["tenant_id"].as_str().unwrap().len() == 36, "{doc}");
    assert!(
        obj["admin_token"].as_str().unwrap().starts_with("asso_"),
        "{doc}"
    );
    for file in [
        "keys/pepper",
        "keys/master.key",
        "keys/keyring.json",
        "db/store.db",
    ] {
        assert_eq!(mode(&install.path(file)), 0o600, "{file} must be mode 0600");
    }

    // A second tenant through the same config.
    let second = one_json_doc(&run(&mut cli(&[
        "tenant",
        "create",
        "second",
        "--config",
        install.cfg(),
        "--json",
    ])));
    assert_ne!(second["tenant_id"], doc["tenant_id"]);
    assert!(second["admin_token"].as_str().unwrap().starts_with("asso_"));

    // `init` again: refused, and the key files are untouched.
    let pepper = std::fs::read(install.path("keys/pepper")).unwrap();
    let master = std::fs::read(install.path("keys/master.key")).unwrap();
    let again = run(&mut cli(&["init", "--config", install.cfg(), "--json"]));
    assert!(!again.status.success(), "a second init must not succeed");
    assert!(stdout(&again).is_empty());
    assert!(
        stderr(&again).contains("already_initialized"),
        "{}",
        stderr(&again)
    );
    assert_eq!(std::fs::read(install.path("keys/pepper")).unwrap(), pepper);
    assert_eq!(
        std::fs::read(install.path("keys/master.key")).unwrap(),
        master
    );
}

#[test]
fn init_can_write_the_admin_token_to_a_private_file() {
    let install = Install::new();
    let token_file = install.path("admin.token");
    let doc = one_json_doc(&run(&mut cli(&[
        "init",
        "--config",
        install.cfg(),
        "--admin-token-file",
        token_file.to_str().unwrap(),
        "--json",
    ])));
    assert!(
        doc.get("admin_token").is_none(),
        "token must not be printed: {doc}"
    );
    assert_eq!(mode(&token_file), 0o600);
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert!(token.trim().starts_with("asso_"));

    // An existing token file is never overwritten, and nothing is created then.
    let out = run(&mut cli(&[
        "tenant",
        "create",
        "other",
        "--config",
        install.cfg(),
        "--admin-token-file",
        token_file.to_str().unwrap(),
    ]));
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(std::fs::read_to_string(&token_file).unwrap(), token);
}

#[test]
fn init_refuses_a_new_master_key_for_an_existing_keyring() {
    let install = Install::new();
    one_json_doc(&run(&mut cli(&[
        "init",
        "--config",
        install.cfg(),
        "--json",
    ])));
    std::fs::remove_file(install.path("keys/master.key")).unwrap();
    let out = run(&mut cli(&["init", "--config", install.cfg(), "--json"]));
    assert!(!out.status.success());
    assert!(
        !install.path("keys/master.key").exists(),
        "no orphan master key may be written"
    );
    assert!(
        stderr(&out).contains("kms.master_key_file"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn kms_commands_rotate_report_and_refuse_to_retire_the_primary() {
    let install = Install::new();
    let tenant = install.init();
    let kms = |args: &[&str]| {
        let mut cmd = cli(&["kms"]);
        cmd.args(args).args(["--config", install.cfg(), "--json"]);
        cmd.env("AGENT_SECRET_KMS_RETIRE_GRACE_HOURS", "0");
        run(&mut cmd)
    };

    let status = one_json_doc(&kms(&["status"]));
    assert_eq!(
        status["tenants"][0]["tenant_id"],
        tenant.as_str(),
        "{status}"
    );
    assert_eq!(status["tenants"][0]["primary_version"], "1", "{status}");
    assert_eq!(status["tenants"][0]["deks_not_on_primary"], 0, "{status}");

    let rotated = one_json_doc(&kms(&["rotate", "--tenant", &tenant]));
    assert_eq!(rotated["primary_version"], "2", "{rotated}");
    let status = one_json_doc(&kms(&["status", "--tenant", &tenant]));
    assert_eq!(status["tenants"][0]["primary_version"], "2", "{status}");

    let refused = kms(&["retire-version", "--tenant", &tenant, "--version", "2"]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(stdout(&refused).is_empty());
    assert!(
        stderr(&refused).contains("key_version_is_primary"),
        "{}",
        stderr(&refused)
    );
    let retired = one_json_doc(&kms(&[
        "retire-version",
        "--tenant",
        &tenant,
        "--version",
        "1",
    ]));
    assert_eq!(retired["retired_version"], "1", "{retired}");

    let rewrap = one_json_doc(&kms(&["rewrap"]));
    assert_eq!(rewrap["tenants"][0]["rewrapped"], 0, "{rewrap}");
    assert_eq!(rewrap["tenants"][0]["remaining"], 0, "{rewrap}");

    let bad = kms(&["rotate", "--tenant", "not-a-tenant"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("invalid_tenant"), "{}", stderr(&bad));
}

#[test]
fn config_errors_name_the_key_and_exit_2() {
    let install = Install::new();
    std::fs::write(&install.config, "[database]\nurll = \"sqlite://x\"\n").unwrap();
    let out = run(&mut cli(&["migrate", "--config", install.cfg(), "--json"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stdout(&out).is_empty());
    let err = stderr(&out);
    assert!(
        err.contains("invalid_config") && err.contains("urll"),
        "{err}"
    );
}

#[test]
fn migrate_reports_one_json_document() {
    let install = Install::new();
    let doc = one_json_doc(&run(&mut cli(&[
        "migrate",
        "--config",
        install.cfg(),
        "--json",
    ])));
    assert_eq!(doc["migrated"], true);
}

#[test]
fn end_to_end_agent_secret_and_token_through_a_real_server() {
    let tls_dir = tempfile::tempdir().unwrap();
    let tls = agent_secret_control_plane::tls::self_signed(tls_dir.path()).unwrap();
    let cert = tls_dir.path().join("server.pem");
    let key = tls_dir.path().join("server.key");
    let install = Install::with_tls(Some((&cert, &key)));
    let admin = one_json_doc(&run(&mut cli(&[
        "init",
        "--config",
        install.cfg(),
        "--json",
    ])));
    let admin_token = admin["admin_token"].as_str().unwrap().to_owned();

    let mut server = Spawned::start(
        cli(&["serve", "--config", install.cfg(), "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    );
    let mut server_out = server.take_stdout();
    let mut line = String::new();
    server_out.read_line(&mut line).unwrap();
    let listen: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    let url = listen["listen"].as_str().unwrap().to_owned();
    let ca = tls.cert_path.to_str().unwrap().to_owned();

    let remote = |args: &[&str]| {
        let mut cmd = cli(args);
        cmd.args(["--server", &url, "--ca-cert", &ca, "--json"]);
        cmd
    };

    let agent = one_json_doc(&run(remote(&[
        "agent",
        "create",
        "bot",
        "--allow",
        "secrets:read:production/openai/*",
    ])
    .env("AGENT_SECRET_STORE_TOKEN", &admin_token)));
    let agent_key = agent["agent_key"].as_str().unwrap().to_owned();
    assert!(agent_key.starts_with("assa_"), "{agent}");
    let agent_id = agent["id"].as_str().unwrap().to_owned();
    // The ceiling: shown, widened and narrowed again.
    let widened = one_json_doc(&run(remote(&[
        "agent",
        "allow",
        &agent_id,
        "secrets:read:staging/**",
    ])
    .env("AGENT_SECRET_STORE_TOKEN", &admin_token)));
    assert_eq!(
        widened["ceiling"],
        serde_json::json!([
            "secrets:read:production/openai/*",
            "secrets:read:staging/**"
        ])
    );
    run(
        remote(&["agent", "deny", &agent_id, "secrets:read:staging/**"])
            .env("AGENT_SECRET_STORE_TOKEN", &admin_token),
    );
    let shown = one_json_doc(&run(
        remote(&["agent", "show", &agent_id]).env("AGENT_SECRET_STORE_TOKEN", &admin_token)
    ));
    assert_eq!(
        shown["ceiling"],
        serde_json::json!(["secrets:read:production/openai/*"])
    );

    let secret_value = "sk-test-e2e-value-0123456789";
    let mut put = remote(&[
        "secret",
        "put",
        "production/openai/api_key",
        "--allow-host",
        "api.openai.com",
    ])
    .env("AGENT_SECRET_STORE_TOKEN", &admin_token)
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    put.stdin
        .take()
        .unwrap()
        .write_all(format!("{secret_value}\n").as_bytes())
        .unwrap();
    let put = put.wait_with_output().unwrap();
    let stored = one_json_doc(&put);
    assert_eq!(stored["path"], "production/openai/api_key");
    assert_eq!(stored["version"], 1);

    // A new version from --value-file (one trailing newline stripped there too).
    let value_file = install.path("value.txt");
    std::fs::write(&value_file, format!("{secret_value}-v2\n")).unwrap();
    let v2 = one_json_doc(&run(remote(&[
        "secret",
        "put",
        "production/openai/api_key",
        "--allow-host",
        "api.openai.com",
        "--value-file",
        value_file.to_str().unwrap(),
    ])
    .env("AGENT_SECRET_STORE_TOKEN", &admin_token)));
    assert_eq!(v2["version"], 2);

    let meta = run(
        remote(&["secret", "get-metadata", "production/openai/api_key"])
            .env("AGENT_SECRET_STORE_TOKEN", &admin_token),
    );
    let meta_doc = one_json_doc(&meta);
    assert_eq!(meta_doc["allowed_hosts"][0], "api.openai.com");
    assert!(
        !stdout(&meta).contains(secret_value),
        "metadata must never carry the value"
    );

    let issued = one_json_doc(&run(remote(&[
        "token",
        "issue",
        "--scope",
        "secrets:read:production/openai/*",
        "--ttl",
        "1h",
    ])
    .env("AGENT_SECRET_AGENT_KEY", &agent_key)));
    assert_eq!(issued["status"], "active", "{issued}");
    assert!(issued["token"].as_str().unwrap().starts_with("asst_"));
    assert!(issued["expires_at"].is_string());

    let id = issued["id"].as_str().unwrap();
    let shown = one_json_doc(&run(
        remote(&["token", "show", id]).env("AGENT_SECRET_AGENT_KEY", &agent_key)
    ));
    assert_eq!(shown["status"], "active");

    // Outside the ceiling: refused, unless filed as an access request for a human to approve.
    let outside = ["--scope", "secrets:read:staging/db", "--ttl", "1h"];
    let refused = run(remote(&[&["token", "issue"][..], &outside[..]].concat())
        .env("AGENT_SECRET_AGENT_KEY", &agent_key));
    assert_ne!(refused.status.code(), Some(0));
    assert!(
        stderr(&refused).contains("scope_not_permitted"),
        "{}",
        stderr(&refused)
    );
    let filed = one_json_doc(&run(remote(
        &[&["token", "request-access"][..], &outside[..]].concat(),
    )
    .env("AGENT_SECRET_AGENT_KEY", &agent_key)));
    assert_eq!(filed["status"], "pending_approval", "{filed}");
    let approval = filed["approval_id"].as_str().unwrap().to_owned();
    let listed = one_json_doc(&run(remote(&["approval", "list", "--status", "pending"])
        .env("AGENT_SECRET_STORE_TOKEN", &admin_token)));
    assert_eq!(listed["approvals"][0]["id"], approval.as_str(), "{listed}");
    assert_eq!(
        listed["approvals"][0]["unlocks"]["ceiling_additions"][0],
        "secrets:read:staging/db"
    );
    // An operator API token may not approve unless [approvals] token_approver_roles says so.
    let by_token =
        run(remote(&["approval", "approve", &approval])
            .env("AGENT_SECRET_STORE_TOKEN", &admin_token));
    assert_ne!(by_token.status.code(), Some(0));
    assert!(
        stderr(&by_token).contains("forbidden"),
        "{}",
        stderr(&by_token)
    );

    // A server error code reaches stderr, stdout stays empty.
    let missing = run(remote(&["secret", "get-metadata", "production/none"])
        .env("AGENT_SECRET_STORE_TOKEN", &admin_token));
    assert_eq!(missing.status.code(), Some(1));
    assert!(missing.stdout.is_empty());
    assert!(
        stderr(&missing).contains("not_found"),
        "{}",
        stderr(&missing)
    );

    // The audit export, streamed: JSON Lines to stdout (no progress noise on a pipe), CSV to a
    // file, filtered by type and path prefix; --json follows the cursor into one document.
    let export = |args: &[&str]| {
        let mut cmd = cli(&[&["audit", "export"][..], args].concat());
        cmd.args(["--server", &url, "--ca-cert", &ca])
            .env("AGENT_SECRET_STORE_TOKEN", &admin_token);
        run(&mut cmd)
    };
    let lines = export(&["--type", "secret.write", "--path-prefix", "production/"]);
    assert!(lines.status.success(), "{}", stderr(&lines));
    assert!(
        stderr(&lines).is_empty(),
        "quiet when piped: {}",
        stderr(&lines)
    );
    let writes: Vec<Value> = stdout(&lines)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(writes.len(), 2, "{writes:?}");
    assert!(writes
        .iter()
        .all(|e| e["path"] == "production/openai/api_key"));
    let csv_file = install.path("audit.csv");
    let csv = export(&["--format", "csv", "--output", csv_file.to_str().unwrap()]);
    assert!(csv.status.success(), "{}", stderr(&csv));
    assert!(csv.stdout.is_empty());
    let text = std::fs::read_to_string(&csv_file).unwrap();
    assert!(text.starts_with("id,tenant_id,seq,type,actor,"), "{text}");
    let doc = one_json_doc(&export(&["--json", "--type", "secret.write"]));
    assert_eq!(doc["events"].as_array().unwrap().len(), 2, "{doc}");

    // The whole log exported and checked offline; then an edited, a deleted and a reordered
    // event, each named by the offline check.
    let file = install.path("audit.jsonl");
    assert!(export(&["--output", file.to_str().unwrap()])
        .status
        .success());
    let verify = |path: &Path| run(cli(&["audit", "verify", "--json", "--offline"]).arg(path));
    let intact = one_json_doc(&verify(&file));
    assert_eq!(intact["valid"], true, "{intact}");
    assert_eq!(intact["first_seq"], 1);
    let lines: Vec<String> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(lines.len() > 5);
    let tampered = install.path("tampered.jsonl");
    let check = |lines: &[String], bad_seq: i64| {
        std::fs::write(&tampered, lines.join("\n")).unwrap();
        let out = verify(&tampered);
        assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
        let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(report["valid"], false);
        assert_eq!(report["first_bad_seq"], bad_seq, "{report}");
        report
    };
    let mut edited = lines.clone();
    let mut flipped: Value = serde_json::from_str(&lines[3]).unwrap();
    flipped["actor"] = Value::from("operator:someone-else");
    edited[3] = flipped.to_string();
    let report = check(&edited, 4);
    assert!(
        report["problem"].as_str().unwrap().contains("hash"),
        "{report}"
    );
    let mut deleted = lines.clone();
    deleted.remove(2);
    check(&deleted, 4);
    let mut reordered = lines.clone();
    reordered.swap(1, 2);
    check(&reordered, 3);
    // The checkpoint keys; a key that is not one is a usage error.
    let keys = one_json_doc(&run(
        remote(&["audit", "public-keys"]).env("AGENT_SECRET_STORE_TOKEN", &admin_token)
    ));
    assert!(keys["keys"].is_array(), "{keys}");
    let bad_key =
        run(cli(&["audit", "verify", "--public-key", "not-a-key", "--offline"]).arg(&file));
    assert_eq!(bad_key.status.code(), Some(2), "{}", stderr(&bad_key));

    // A wrong CA is a connection failure, not a silent success.
    let wrong_ca = install.path("wrong-ca.pem");
    let other = tempfile::tempdir().unwrap();
    let other_tls = agent_secret_control_plane::tls::self_signed(other.path()).unwrap();
    std::fs::copy(&other_tls.cert_path, &wrong_ca).unwrap();
    let out = run(
        cli(&["agent", "list", "--json", "--server", &url, "--ca-cert"])
            .arg(&wrong_ca)
            .env("AGENT_SECRET_STORE_TOKEN", &admin_token),
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("connection_failed"));

    drop(server);
}

#[test]
fn serve_without_tls_refuses_and_dev_tls_mints_a_trusted_ca() {
    let install = Install::new();
    run(&mut cli(&["init", "--config", install.cfg(), "--json"]));
    let refused = run(&mut cli(&["serve", "--config", install.cfg()]));
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("invalid_config"),
        "{}",
        stderr(&refused)
    );

    let tls_dir = install.path("tls");
    let mut server = Spawned::start(
        cli(&[
            "serve",
            "--config",
            install.cfg(),
            "--dev-tls",
            tls_dir.to_str().unwrap(),
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped()),
    );
    let mut server_out = server.take_stdout();
    let mut server_err = server.take_stderr();
    let mut line = String::new();
    server_out.read_line(&mut line).unwrap();
    let url = serde_json::from_str::<Value>(&line).unwrap()["listen"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut note = String::new();
    server_err.read_line(&mut note).unwrap();
    assert!(
        note.contains("fingerprint"),
        "the CA fingerprint is printed: {note}"
    );

    let ca = tls_dir.join("ca.pem");
    let health = Command::new("curl")
        .args(["-sS", "--fail", "--cacert", ca.to_str().unwrap()])
        .arg(format!("{url}/healthz"))
        .output()
        .expect("curl is installed");
    assert!(
        health.status.success(),
        "{}",
        String::from_utf8_lossy(&health.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&health.stdout), "ok");
}

#[test]
fn backup_and_restore_through_the_binary_with_encryption_and_a_key_export() {
    let install = Install::new();
    let tenant = install.init();

    // An age identity for the backups, kept apart from the install.
    let apart = tempfile::tempdir().unwrap();
    let identity = apart.path().join("backup-identity.txt");
    let keygen = one_json_doc(&run(&mut cli(&[
        "backup-keygen",
        "-o",
        identity.to_str().unwrap(),
        "--json",
    ])));
    assert_eq!(mode(&identity), 0o600);
    let recipient = keygen["recipient"].as_str().unwrap().to_owned();
    assert!(recipient.starts_with("age1"), "{keygen}");

    let backups = install.path("backups");
    let made = one_json_doc(&run(&mut cli(&[
        "backup",
        "--config",
        install.cfg(),
        "--output-dir",
        backups.to_str().unwrap(),
        "--recipient",
        &recipient,
        "--json",
    ])));
    let file = made["path"].as_str().unwrap().to_owned();
    assert!(file.ends_with(".tar.zst.age"), "{made}");
    assert_eq!(made["encrypted"], true);
    assert_eq!(mode(Path::new(&file)), 0o600);

    // Restore into a new database of the same installation (same keys), as after losing it.
    let restored_config = install.path("restored.toml");
    let text = std::fs::read_to_string(&install.config)
        .unwrap()
        .replace("db/store.db", "restored/store.db");
    std::fs::write(&restored_config, text).unwrap();
    let cfg = restored_config.to_str().unwrap();
    let refused = run(&mut cli(&["restore", &file, "--config", cfg]));
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        stderr(&refused).contains("identity_required"),
        "{}",
        stderr(&refused)
    );
    let restored = one_json_doc(&run(&mut cli(&[
        "restore",
        &file,
        "--config",
        cfg,
        "--identity",
        identity.to_str().unwrap(),
        "--json",
    ])));
    let tenants = restored["tenants"].as_array().unwrap();
    assert_eq!(tenants.len(), 1, "{restored}");
    assert_eq!(tenants[0]["tenant_id"], tenant.as_str());
    assert!(tenants[0]["audit_events"].as_i64().unwrap() >= 1);
    assert_eq!(mode(&install.path("restored/store.db")), 0o600);
    // Again into the now restored database: refused, exit 1, nothing on stdout.
    let again = run(&mut cli(&[
        "restore",
        &file,
        "--config",
        cfg,
        "--identity",
        identity.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(again.status.code(), Some(1));
    assert!(stdout(&again).is_empty());
    assert!(
        stderr(&again).contains("target_not_empty"),
        "{}",
        stderr(&again)
    );

    // The keys, exported apart (with a warning) and unpacked again: the same pepper.
    let export = apart.path().join("keys.age");
    let exported = run(&mut cli(&[
        "backup",
        "--config",
        install.cfg(),
        "--keys",
        "--recipient",
        &recipient,
        "-o",
        export.to_str().unwrap(),
    ]));
    assert!(exported.status.success(), "{}", stderr(&exported));
    assert!(
        stderr(&exported).contains("WARNING"),
        "{}",
        stderr(&exported)
    );
    let pepper = std::fs::read_to_string(install.path("keys/pepper")).unwrap();
    let bytes = std::fs::read(&export).unwrap();
    assert!(!bytes
        .windows(pepper.trim().len())
        .any(|w| w == pepper.trim().as_bytes()));
    let unpacked = apart.path().join("unpacked");
    let out = one_json_doc(&run(&mut cli(&[
        "restore-keys",
        export.to_str().unwrap(),
        "--identity",
        identity.to_str().unwrap(),
        "--output-dir",
        unpacked.to_str().unwrap(),
        "--json",
    ])));
    assert_eq!(out["files"].as_array().unwrap().len(), 4, "{out}");
    assert_eq!(
        std::fs::read_to_string(unpacked.join("pepper"))
            .unwrap()
            .trim(),
        pepper.trim()
    );
    assert_eq!(mode(&unpacked.join("master-key")), 0o600);
}

/// The same on PostgreSQL, production-shaped: the service role, the owner running migrations,
/// and a backup role that bypasses row-level security (here the test superuser).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_backup_and_restore_through_the_binary() {
    let Some(source) = agent_secret_testkit::pg::test_database().await else {
        return;
    };
    let Some(target) = agent_secret_testkit::pg::test_database().await else {
        return;
    };
    let install = Install::new();
    let config_for = |db: &agent_secret_testkit::pg::TestDb, name: &str| {
        let text = std::fs::read_to_string(&install.config).unwrap().replace(
            &format!(
                "url = \"sqlite://{}\"",
                install.path("db/store.db").display()
            ),
            &format!(
                "url = \"{}\"\nowner_url = \"{}\"\nservice_role = \"{}\"",
                db.service_url,
                db.owner_url,
                agent_secret_testkit::pg::SERVICE_ROLE
            ),
        );
        let text = format!("{text}[backup]\npostgres_url = \"{}\"\n", db.admin_url);
        let path = install.path(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let source_config = config_for(&source, "source.toml");
    let target_config = config_for(&target, "target.toml");
    let (src, dst) = (
        source_config.to_str().unwrap(),
        target_config.to_str().unwrap(),
    );

    let init = one_json_doc(&run(&mut cli(&["init", "--config", src, "--json"])));
    let tenant = init["tenant_id"].as_str().unwrap().to_owned();
    let backups = install.path("pg-backups");
    let made = one_json_doc(&run(&mut cli(&[
        "backup",
        "--config",
        src,
        "--output-dir",
        backups.to_str().unwrap(),
        "--json",
    ])));
    assert_eq!(made["manifest"]["backend"], "postgres", "{made}");
    let file = made["path"].as_str().unwrap().to_owned();

    let restored = one_json_doc(&run(&mut cli(&[
        "restore", &file, "--config", dst, "--json",
    ])));
    let tenants = restored["tenants"].as_array().unwrap();
    assert_eq!(tenants.len(), 1, "{restored}");
    assert_eq!(tenants[0]["tenant_id"], tenant.as_str());
    // The restored database serves: `migrate` as its owner finds it current.
    let migrated = run(&mut cli(&["migrate", "--config", dst]));
    assert!(migrated.status.success(), "{}", stderr(&migrated));
    let again = run(&mut cli(&["restore", &file, "--config", dst]));
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("target_not_empty"),
        "{}",
        stderr(&again)
    );
}
