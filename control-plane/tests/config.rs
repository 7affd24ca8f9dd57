//! The configuration layers (defaults → TOML → env), their errors, and secret handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use agent_secret_control_plane::config::{Config, ConfigError, KmsBackend, KmsRole, LogFormat};
use agent_secret_core::kms::gcp::{GcpCredentials, GcpProtection};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

const PEPPER_B64: &str = "cGVwcGVyLXBlcHBlci1wZXBwZXItcGVwcGVyLXBlcHBlcg=="; // 35 bytes
const MASTER_B64: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="; // 32 bytes

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name| map.get(name).cloned()
}

fn no_env() -> impl Fn(&str) -> Option<String> {
    env(&[])
}

/// Writes a file as an operator should write secrets: mode 0600.
fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn load_toml(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "cp.toml", text);
    Config::load(Some(&path), &env(vars))
}

#[test]
fn defaults_without_file_or_env() {
    let c = Config::load(None, &no_env()).unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:8200");
    assert_eq!(c.tls.cert_file, None);
    assert_eq!(c.database.url.expose(), "sqlite://data/store.db");
    assert!(c.database.owner_url.is_none());
    assert_eq!(c.database.service_role, "agent_secret_store_app");
    assert_eq!(c.database.max_connections, 10);
    assert_eq!(c.tokens.max_ttl_seconds, 86_400);
    assert_eq!(c.tokens.grant_cache_ttl_seconds, 30);
    assert_eq!(c.kms.backend, KmsBackend::Local);
    assert_eq!(c.log.level, "info");
    assert_eq!(c.log.format, LogFormat::Text);
}

#[test]
fn shipped_example_config_parses_and_matches_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/control-plane.toml");
    let shipped = Config::load(Some(&path), &no_env()).unwrap();
    let defaults = Config::load(None, &no_env()).unwrap();
    assert_eq!(format!("{shipped:?}"), format!("{defaults:?}"));
}

#[test]
fn toml_overrides_defaults_and_keeps_the_rest() {
    let c = load_toml(
        r#"
        listen = "0.0.0.0:9443"
        [database]
        url = "postgres://app@db/store"
        max_connections = 3
        [tokens]
        max_ttl_seconds = 600
        [log]
        format = "json"
        "#,
        &[],
    )
    .unwrap();
    assert_eq!(c.listen.to_string(), "0.0.0.0:9443");
    assert_eq!(c.database.url.expose(), "postgres://app@db/store");
    assert_eq!(c.database.max_connections, 3);
    assert_eq!(c.database.service_role, "agent_secret_store_app");
    assert_eq!(c.tokens.max_ttl_seconds, 600);
    assert_eq!(c.tokens.grant_cache_ttl_seconds, 30);
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(c.log.level, "info");
}

#[test]
fn env_overrides_toml() {
    let c = load_toml(
        r#"
        listen = "0.0.0.0:9443"
        [database]
        url = "sqlite://from-toml.db"
        max_connections = 3
        [tls]
        cert_file = "toml.pem"
        key_file = "toml.key"
        "#,
        &[
            ("AGENT_SECRET_LISTEN", "127.0.0.1:0"),
            ("AGENT_SECRET_DATABASE_URL", "postgres://app@db/env"),
            ("AGENT_SECRET_DATABASE_MAX_CONNECTIONS", "7"),
            ("AGENT_SECRET_TLS_CERT_FILE", "env.pem"),
            ("AGENT_SECRET_TOKENS_MAX_TTL_SECONDS", "120"),
            ("AGENT_SECRET_LOG_LEVEL", "debug"),
        ],
    )
    .unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:0");
    assert_eq!(c.database.url.expose(), "postgres://app@db/env");
    assert_eq!(c.database.max_connections, 7);
    assert_eq!(c.tls.cert_file, Some(PathBuf::from("env.pem")));
    assert_eq!(c.tls.key_file, Some(PathBuf::from("toml.key")));
    assert_eq!(c.tokens.max_ttl_seconds, 120);
    assert_eq!(c.log.level, "debug");
}

#[test]
fn unknown_top_level_key_is_an_error_naming_it() {
    let err = load_toml("listen = \"127.0.0.1:1\"\nlisten_adress = \"x\"\n", &[]).unwrap_err();
    assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
    assert!(err.to_string().contains("listen_adress"), "{err}");
}

#[test]
fn a_parse_error_names_its_place_but_never_quotes_the_line() {
    // A missing quote on the URL line: TOML's own message would print the whole line.
    let err = load_toml(
        "[database]\nurl = \"postgres://app:hunter2@db/store\nmax_connections = 4\n",
        &[],
    )
    .unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("line 2"), "{shown}");
}

#[test]
fn unknown_key_in_a_section_is_an_error_naming_it() {
    let err = load_toml(
        "[database]\nurl = \"sqlite://x.db\"\npasword = \"x\"\n",
        &[],
    )
    .unwrap_err();
    assert!(err.to_string().contains("pasword"), "{err}");
    let err = load_toml("[databse]\nurl = \"sqlite://x.db\"\n", &[]).unwrap_err();
    assert!(err.to_string().contains("databse"), "{err}");
}

#[test]
fn invalid_values_name_their_key_or_variable() {
    let err = load_toml("[database]\nmax_connections = 0\n", &[]).unwrap_err();
    assert!(
        err.to_string().contains("database.max_connections"),
        "{err}"
    );
    let err = load_toml("[tls]\ncert_file = \"c.pem\"\n", &[]).unwrap_err();
    assert!(err.to_string().contains("tls.key_file"), "{err}");
    let err = Config::load(
        None,
        &env(&[("AGENT_SECRET_DATABASE_MAX_CONNECTIONS", "many")]),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("AGENT_SECRET_DATABASE_MAX_CONNECTIONS"),
        "{err}"
    );
    let err = Config::load(None, &env(&[("AGENT_SECRET_DATABASE_URL", "mysql://x")])).unwrap_err();
    assert!(err.to_string().contains("database.url"), "{err}");
    let err = Config::load(None, &env(&[("AGENT_SECRET_LOG_FORMAT", "xml")])).unwrap_err();
    assert!(err.to_string().contains("AGENT_SECRET_LOG_FORMAT"), "{err}");
    let err = load_toml("[kms]\nbackend = \"vault\"\n", &[]).unwrap_err();
    assert!(err.to_string().contains("vault"), "{err}");
}

#[test]
fn database_url_file_variant_reads_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "db-url", "postgres://app:s3cr3t@db/store\n");
    let c = Config::load(
        None,
        &env(&[("AGENT_SECRET_DATABASE_URL_FILE", file.to_str().unwrap())]),
    )
    .unwrap();
    assert_eq!(c.database.url.expose(), "postgres://app:s3cr3t@db/store");
}

#[test]
fn a_secret_and_its_file_variant_together_are_refused() {
    let err = Config::load(
        None,
        &env(&[
            ("AGENT_SECRET_DATABASE_URL", "sqlite://a.db"),
            ("AGENT_SECRET_DATABASE_URL_FILE", "/nonexistent"),
        ]),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("AGENT_SECRET_DATABASE_URL"),
        "{err}"
    );
    let err = Config::load(
        None,
        &env(&[
            ("AGENT_SECRET_MASTER_KEY", MASTER_B64),
            ("AGENT_SECRET_MASTER_KEY_FILE", "/x"),
        ]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("AGENT_SECRET_MASTER_KEY"), "{err}");
}

#[test]
fn pepper_file_variant_and_inline_pepper_load() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "pepper", &format!("{PEPPER_B64}\n"));
    let from_file = Config::load(
        None,
        &env(&[("AGENT_SECRET_SECURITY_PEPPER_FILE", file.to_str().unwrap())]),
    )
    .unwrap();
    let from_env =
        Config::load(None, &env(&[("AGENT_SECRET_SECURITY_PEPPER", PEPPER_B64)])).unwrap();
    let a = from_file.pepper().unwrap().mac(b"x");
    let b = from_env.pepper().unwrap().mac(b"x");
    assert_eq!(
        a, b,
        "the same pepper from a file and from the env must key the same MAC"
    );
}

#[test]
fn short_or_missing_pepper_is_a_clear_error() {
    let short = STANDARD.encode([7u8; 16]);
    let err = Config::load(None, &env(&[("AGENT_SECRET_SECURITY_PEPPER", &short)]))
        .unwrap()
        .pepper()
        .unwrap_err();
    assert!(
        err.to_string().contains("AGENT_SECRET_SECURITY_PEPPER"),
        "{err}"
    );
    assert!(err.to_string().contains("32"), "{err}");
    let err = load_toml("[security]\npepper_file = \"/nonexistent/pepper\"\n", &[])
        .unwrap()
        .pepper()
        .unwrap_err();
    assert!(err.to_string().contains("security.pepper_file"), "{err}");
    assert!(err.to_string().contains("init"), "{err}");
}

#[test]
fn master_key_from_env_file_variant_and_kms_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "master.key", &format!("{MASTER_B64}\n"));
    let path = file.to_str().unwrap();
    Config::load(None, &env(&[("AGENT_SECRET_MASTER_KEY", MASTER_B64)]))
        .unwrap()
        .master_key()
        .unwrap();
    let c = Config::load(None, &env(&[("AGENT_SECRET_MASTER_KEY_FILE", path)])).unwrap();
    assert_eq!(c.kms.master_key_file, file);
    c.master_key().unwrap();
    load_toml(&format!("[kms]\nmaster_key_file = {path:?}\n"), &[])
        .unwrap()
        .master_key()
        .unwrap();
}

#[test]
fn secret_files_other_users_can_read_are_refused_naming_key_file_and_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let pepper = write(dir.path(), "pepper", &format!("{PEPPER_B64}\n"));
    let master = write(dir.path(), "master.key", &format!("{MASTER_B64}\n"));
    let db_url = write(dir.path(), "db-url", "postgres://app:s3cr3t@db/store\n");
    for (file, mode) in [(&pepper, 0o640), (&master, 0o604), (&db_url, 0o644)] {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let toml =
        format!("[security]\npepper_file = {pepper:?}\n[kms]\nmaster_key_file = {master:?}\n");
    let c = load_toml(&toml, &[]).unwrap();
    let refused = [
        (
            "security.pepper_file",
            &pepper,
            "0640",
            c.pepper().map(drop),
        ),
        (
            "kms.master_key_file",
            &master,
            "0604",
            c.master_key().map(drop),
        ),
    ];
    for (key, file, mode, result) in refused {
        let text = result.unwrap_err().to_string();
        assert!(text.contains(key), "{text}");
        assert!(
            text.contains(file.to_str().unwrap()) && text.contains(mode),
            "{text}"
        );
        assert!(
            !text.contains(PEPPER_B64) && !text.contains(MASTER_B64),
            "{text}"
        );
    }
    let err = Config::load(
        None,
        &env(&[("AGENT_SECRET_DATABASE_URL_FILE", db_url.to_str().unwrap())]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("AGENT_SECRET_DATABASE_URL_FILE") && err.contains("0644"),
        "{err}"
    );
    assert!(!err.contains("s3cr3t"), "{err}");
}

#[test]
fn bad_master_key_is_a_clear_error() {
    let wrong_length = STANDARD.encode([1u8; 16]);
    let err = Config::load(None, &env(&[("AGENT_SECRET_MASTER_KEY", &wrong_length)]))
        .unwrap()
        .master_key()
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("AGENT_SECRET_MASTER_KEY") && text.contains("32"),
        "{text}"
    );
    assert!(
        !text.contains(&wrong_length),
        "the error must not echo the key: {text}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "master.key", "not base64 at all!\n");
    let err = load_toml(
        &format!("[kms]\nmaster_key_file = {:?}\n", file.to_str().unwrap()),
        &[],
    )
    .unwrap()
    .master_key()
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("kms.master_key_file") && text.contains("base64"),
        "{text}"
    );
}

#[test]
fn gcp_settings_build_the_cloud_kms_client_config_per_identity() {
    let c = load_toml(
        "[kms]\nbackend = \"gcp\"\nproject = \"p\"\nlocation = \"us\"\nkey_ring = \"r\"\n\
         credentials_file = \"/etc/sa.json\"\nadmin_credentials_file = \"/etc/admin.json\"\n\
         protection_level = \"software\"\nrotation_period_days = 30\n",
        &[("AGENT_SECRET_KMS_MAX_ATTEMPTS", "7")],
    )
    .unwrap();
    assert_eq!(c.kms.backend, KmsBackend::Gcp);
    let service = c.kms.gcp(KmsRole::Service).unwrap();
    assert_eq!(
        service.key_ring_name(),
        "projects/p/locations/us/keyRings/r"
    );
    assert_eq!(
        service.credentials,
        GcpCredentials::ServiceAccountFile("/etc/sa.json".into())
    );
    assert_eq!(service.protection, GcpProtection::Software);
    assert_eq!(service.rotation_period.as_secs(), 30 * 86_400);
    assert_eq!(service.max_attempts, 7);
    let admin = c.kms.gcp(KmsRole::Admin).unwrap();
    assert_eq!(
        admin.credentials,
        GcpCredentials::ServiceAccountFile("/etc/admin.json".into())
    );
}

#[test]
fn gcp_config_errors_name_their_key() {
    let err = load_toml("[kms]\nbackend = \"gcp\"\nproject = \"p\"\n", &[]).unwrap_err();
    assert!(err.to_string().contains("kms.location"), "{err}");
    let err = load_toml(
        "[kms]\nbackend = \"gcp\"\nproject = \"p/x\"\nlocation = \"us\"\nkey_ring = \"r\"\n",
        &[],
    )
    .unwrap_err();
    assert!(err.to_string().contains("kms.project"), "{err}");
    // Anonymous credentials only for a loopback test endpoint, never Google's.
    let base = "[kms]\nbackend = \"gcp\"\nproject = \"p\"\nlocation = \"us\"\nkey_ring = \"r\"\n\
                credentials_file = \"anonymous\"\n";
    let err = load_toml(base, &[]).unwrap_err();
    assert!(err.to_string().contains("kms.credentials_file"), "{err}");
    let with_fake = format!("{base}endpoint = \"http://127.0.0.1:8555\"\n");
    let c = load_toml(&with_fake, &[]).unwrap();
    assert_eq!(
        c.kms.gcp(KmsRole::Service).unwrap().credentials,
        GcpCredentials::Anonymous
    );
    let err = load_toml(base, &[("AGENT_SECRET_KMS_PROTECTION_LEVEL", "tpm")]).unwrap_err();
    assert!(
        err.to_string()
            .contains("AGENT_SECRET_KMS_PROTECTION_LEVEL"),
        "{err}"
    );
    // The admin identity's errors name its own key.
    let admin = "[kms]\nbackend = \"gcp\"\nproject = \"p\"\nlocation = \"us\"\nkey_ring = \"r\"\n\
                 admin_credentials_file = \"anonymous\"\n";
    let err = load_toml(admin, &[]).unwrap_err();
    assert!(
        err.to_string().contains("kms.admin_credentials_file"),
        "{err}"
    );
    let err = load_toml("[kms]\nrotation_period_days = 0\n", &[]).unwrap_err();
    assert!(
        err.to_string().contains("kms.rotation_period_days"),
        "{err}"
    );
}

#[test]
fn debug_never_shows_pepper_master_key_or_database_password() {
    let c = load_toml(
        "[database]\nurl = \"postgres://app:hunter2-db-pass@db/store\"\n\
         owner_url = \"postgres://owner:owner-pass-99@db/store?password=query-pass-77\"\n",
        &[
            ("AGENT_SECRET_SECURITY_PEPPER", PEPPER_B64),
            ("AGENT_SECRET_MASTER_KEY", MASTER_B64),
        ],
    )
    .unwrap();
    let debug = format!("{c:?} {c:#?}");
    for secret in [
        PEPPER_B64,
        MASTER_B64,
        "hunter2-db-pass",
        "owner-pass-99",
        "query-pass-77",
    ] {
        assert!(
            !debug.contains(secret),
            "Debug of Config shows {secret}: {debug}"
        );
    }
    assert!(
        debug.contains("postgres://app:[REDACTED]@db/store"),
        "{debug}"
    );
    assert!(!c.database.url.to_string().contains("hunter2"));
}

#[test]
fn approvals_section_from_toml_and_env_becomes_the_service_policy() {
    use agent_secret_core::api::{Role, Sensitivity};
    use std::time::Duration;
    let c = load_toml(
        r#"
        [approvals]
        sensitive_approvals = 2
        critical_delay_seconds = 60
        token_approver_roles = ["approver"]
        [approvals.trust_tier_webhook]
        url = "http://127.0.0.1:9/tier"
        fallback_tier = 1
        "#,
        &[
            ("AGENT_SECRET_APPROVALS_TRUSTED_TIER", "4"),
            ("AGENT_SECRET_APPROVALS_REQUEST_TTL_SECONDS", "3600"),
        ],
    )
    .unwrap();
    let settings = c.approvals.settings();
    assert_eq!(
        settings
            .policy
            .requirement(Sensitivity::Sensitive, 0)
            .approvals,
        2
    );
    assert_eq!(
        settings
            .policy
            .requirement(Sensitivity::Sensitive, 3)
            .approvals,
        2
    );
    assert_eq!(
        settings
            .policy
            .requirement(Sensitivity::Sensitive, 4)
            .approvals,
        1
    );
    assert_eq!(
        settings.policy.requirement(Sensitivity::Critical, 0).delay,
        Duration::from_secs(60)
    );
    assert_eq!(settings.request_ttl, Duration::from_secs(3600));
    assert_eq!(settings.token_approver_roles, vec![Role::Approver]);
    let hook = c.approvals.trust_tier_webhook.unwrap();
    assert_eq!((hook.fallback_tier, hook.timeout_ms), (1, 2000));
}

#[test]
fn approvals_refuse_an_auditor_approving_and_nonsense_values() {
    for (text, key) in [
        (
            "[approvals]\ntoken_approver_roles = [\"auditor\"]",
            "approvals.token_approver_roles",
        ),
        (
            "[approvals]\nrequest_ttl_seconds = 0",
            "approvals.request_ttl_seconds",
        ),
        ("[approvals]\ntrusted_tier = 9", "approvals.trusted_tier"),
        (
            "[approvals.trust_tier_webhook]\nurl = \"http://x\"\nfallback_tier = 7",
            "approvals.trust_tier_webhook.fallback_tier",
        ),
    ] {
        let err = load_toml(text, &[]).unwrap_err().to_string();
        assert!(err.contains(key), "{text}: {err}");
    }
    let err = load_toml(
        "",
        &[(
            "AGENT_SECRET_APPROVALS_TOKEN_APPROVER_ROLES",
            "approver,root",
        )],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("APPROVALS_TOKEN_APPROVER_ROLES"), "{err}");
}

#[test]
fn sessions_come_from_toml_and_env_and_bad_values_are_refused() {
    use agent_secret_core::api::Role;
    let defaults = Config::load(None, &no_env()).unwrap().sessions;
    assert_eq!(
        (
            defaults.idle_timeout_seconds,
            defaults.absolute_timeout_seconds
        ),
        (1800, 43200)
    );
    assert_eq!(defaults.require_totp_roles, [Role::Admin, Role::Approver]);
    assert_eq!(
        (defaults.max_failed_logins, defaults.lockout_seconds),
        (5, 900)
    );
    let c = load_toml(
        "[sessions]\nidle_timeout_seconds = 60\nrequire_totp_roles = [\"admin\"]\n",
        &[
            ("AGENT_SECRET_SESSIONS_ABSOLUTE_TIMEOUT_SECONDS", "3600"),
            (
                "AGENT_SECRET_SESSIONS_REQUIRE_TOTP_ROLES",
                "approver, auditor",
            ),
            ("AGENT_SECRET_SESSIONS_MAX_FAILED_LOGINS", "3"),
        ],
    )
    .unwrap();
    let s = c.sessions;
    assert_eq!(
        (s.idle_timeout_seconds, s.absolute_timeout_seconds),
        (60, 3600)
    );
    assert_eq!(s.require_totp_roles, [Role::Approver, Role::Auditor]);
    assert_eq!(s.max_failed_logins, 3);
    let none = load_toml("", &[("AGENT_SECRET_SESSIONS_REQUIRE_TOTP_ROLES", "none")]).unwrap();
    assert!(none.sessions.require_totp_roles.is_empty());
    for (toml, vars, key) in [
        (
            "[sessions]\nidle_timeout_seconds = 0\n",
            &[][..],
            "sessions.idle_timeout_seconds",
        ),
        (
            "[sessions]\nmin_password_chars = 8\n",
            &[][..],
            "sessions.min_password_chars",
        ),
        (
            "",
            &[("AGENT_SECRET_SESSIONS_REQUIRE_TOTP_ROLES", "root")][..],
            "REQUIRE_TOTP_ROLES",
        ),
        (
            "[sessions]\nrequire_totp_roles = [\"root\"]\n",
            &[][..],
            "root",
        ),
    ] {
        let err = load_toml(toml, vars).unwrap_err().to_string();
        assert!(err.contains(key), "{err}");
    }
}

#[test]
fn notifications_are_off_by_default_and_come_from_toml_and_env() {
    use agent_secret_control_plane::service::notify::NotificationFormat;
    use std::time::Duration;
    let defaults = Config::load(None, &no_env()).unwrap();
    assert!(defaults.notifications.webhook_url.is_none());
    assert!(defaults
        .notifications
        .settings(defaults.listen)
        .unwrap()
        .is_none());

    let c = load_toml(
        r#"
        listen = "10.0.0.5:8443"
        [notifications]
        webhook_url = "https://hooks.slack.example/services/T0/B0/sekrit-path-token"
        timeout_seconds = 2
        "#,
        &[
            ("AGENT_SECRET_NOTIFICATIONS_FORMAT", "teams"),
            ("AGENT_SECRET_NOTIFICATIONS_MAX_ATTEMPTS", "3"),
            ("AGENT_SECRET_NOTIFICATIONS_QUEUE", "10"),
        ],
    )
    .unwrap();
    let s = c.notifications.settings(c.listen).unwrap().unwrap();
    assert_eq!(s.format, NotificationFormat::Teams);
    assert_eq!(
        s.dashboard_url, "https://10.0.0.5:8443",
        "derived from listen"
    );
    assert_eq!(s.timeout, Duration::from_secs(2));
    assert_eq!((s.max_attempts, s.queue), (3, 10));
    assert_eq!(s.first_backoff, Duration::from_secs(1));
    assert!(
        !format!("{c:?}").contains("sekrit"),
        "Debug never shows the webhook URL's credential"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "hook",
        "https://outlook.example/webhook/file-token\n",
    );
    let c = Config::load(
        None,
        &env(&[
            (
                "AGENT_SECRET_NOTIFICATIONS_WEBHOOK_URL_FILE",
                file.to_str().unwrap(),
            ),
            (
                "AGENT_SECRET_NOTIFICATIONS_DASHBOARD_URL",
                "https://secrets.example.com/",
            ),
        ]),
    )
    .unwrap();
    let s = c.notifications.settings(c.listen).unwrap().unwrap();
    assert_eq!(
        s.webhook_url.expose(),
        "https://outlook.example/webhook/file-token"
    );
    assert_eq!(s.dashboard_url, "https://secrets.example.com");
    assert_eq!(s.format, NotificationFormat::Slack, "the default format");
}

#[test]
fn notifications_refuse_bad_urls_formats_and_zeros_without_quoting_the_webhook() {
    for (text, key) in [
        (
            "[notifications]\nwebhook_url = \"ftp://hooks.example/secret-token\"",
            "notifications.webhook_url",
        ),
        (
            "[notifications]\nwebhook_url = \"not a url secret-token\"",
            "notifications.webhook_url",
        ),
        (
            "[notifications]\ndashboard_url = \"secrets.example.com\"",
            "notifications.dashboard_url",
        ),
        ("[notifications]\nformat = \"discord\"", "discord"),
        (
            "[notifications]\ntimeout_seconds = 0",
            "notifications.timeout_seconds",
        ),
        (
            "[notifications]\nmax_attempts = 0",
            "notifications.max_attempts",
        ),
        ("[notifications]\nqueue = 0", "notifications.queue"),
        ("[notifications]\nretries = 3", "retries"),
    ] {
        let err = load_toml(text, &[]).unwrap_err().to_string();
        assert!(err.contains(key), "{text}: {err}");
        assert!(!err.contains("secret-token"), "{text}: {err}");
    }
    for (var, value) in [
        ("AGENT_SECRET_NOTIFICATIONS_FORMAT", "discord"),
        ("AGENT_SECRET_NOTIFICATIONS_MAX_ATTEMPTS", "many"),
        (
            "AGENT_SECRET_NOTIFICATIONS_WEBHOOK_URL",
            "mailto:ops@example.com",
        ),
    ] {
        let err = Config::load(None, &env(&[(var, value)]))
            .unwrap_err()
            .to_string();
        assert!(err.to_lowercase().contains("notifications"), "{var}: {err}");
    }
}

#[test]
fn audit_checkpoints_and_sinks_come_from_toml_and_are_checked() {
    use agent_secret_control_plane::service::siem::SinkKind;
    let defaults = Config::load(None, &no_env()).unwrap();
    assert_eq!(defaults.audit.checkpoint_every_events, 1000);
    assert!(defaults.audit.sinks.is_empty());

    let dir = tempfile::tempdir().unwrap();
    let token = write(dir.path(), "hec", "hec-token-from-file\n");
    let c = load_toml(
        &format!(
            r#"
            [audit]
            checkpoint_interval_seconds = 60
            [[audit.sinks]]
            name = "splunk"
            kind = "splunk_hec"
            url = "https://splunk.example:8088/services/collector/event"
            token_file = "{}"
            [[audit.sinks]]
            name = "local-lines"
            kind = "jsonl"
            url = "http://127.0.0.1:9000/ingest"
            batch_size = 50
            "#,
            token.display()
        ),
        &[("AGENT_SECRET_AUDIT_CHECKPOINT_EVERY_EVENTS", "10")],
    )
    .unwrap();
    assert_eq!(c.audit.checkpoint_every_events, 10);
    assert_eq!(c.audit.checkpoint_interval_seconds, 60);
    let sinks = agent_secret_control_plane::bootstrap::audit_sinks(&c).unwrap();
    assert_eq!(sinks[0].kind, SinkKind::SplunkHec);
    assert_eq!(
        sinks[0].token.as_ref().map(|t| t.expose().to_owned()),
        Some("hec-token-from-file".to_owned())
    );
    assert!(!format!("{sinks:?}").contains("hec-token-from-file"));
    assert_eq!(
        (sinks[1].kind, sinks[1].batch_size),
        (SinkKind::JsonLines, 50)
    );

    for (bad, key) in [
        (
            r#"name = "x"
               kind = "datadog"
               url = "http://intake.example/api/v2/logs""#,
            "audit.sinks.x.url",
        ),
        (
            r#"name = "Not OK"
               kind = "datadog"
               url = "https://intake.example/api/v2/logs""#,
            "audit.sinks.name",
        ),
        (
            r#"name = "x"
               kind = "datadog"
               url = "https://intake.example/api/v2/logs"
               batch_size = 0"#,
            "audit.sinks.x.batch_size",
        ),
    ] {
        let err = load_toml(&format!("[[audit.sinks]]\n{bad}\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{err}");
    }
}

#[test]
fn alert_rules_keep_their_own_defaults_and_refuse_other_rules_keys() {
    // A table naming only `enabled` keeps the rule's default revocation.
    let c = load_toml("[alerts.exfiltration]\nenabled = true\n", &[]).unwrap();
    let rules = c.alerts.rules().unwrap();
    assert!(rules.exfiltration.revoke_token);
    assert!(!rules.new_ip.revoke_token);
    // A partial burst table keeps the rest of that rule's defaults, not another rule's.
    let c = load_toml("[alerts.auth_failed_burst]\nwindow_seconds = 30\n", &[]).unwrap();
    let burst = c.alerts.rules().unwrap().auth_failed_burst;
    assert_eq!((burst.threshold, burst.window_seconds), (20, 30));
    for (toml, key) in [
        (
            "[alerts.new_ip]\nthreshold = 3\n",
            "alerts.new_ip.threshold",
        ),
        (
            "[alerts.read_spike]\nfactor = 0.5\n",
            "alerts.read_spike.factor",
        ),
        (
            "[alerts.unusual_hours]\nmax_share = 1.5\n",
            "alerts.unusual_hours.max_share",
        ),
        (
            "[alerts.denial_burst]\nthreshold = 0\n",
            "alerts.denial_burst.threshold",
        ),
        (
            "[alerts]\nwebhook_url = \"http://alerts.example.com/x\"\n",
            "alerts.webhook_url",
        ),
    ] {
        let err = load_toml(toml, &[]).unwrap_err();
        assert!(err.to_string().contains(key), "{toml}: {err}");
    }
    let c = load_toml("", &[("AGENT_SECRET_ALERTS_ENABLED", "false")]).unwrap();
    assert!(!c.alerts.enabled);
}

#[test]
fn the_kubernetes_injector_needs_an_image_and_a_readable_template() {
    // Off by default: nothing is required, and no injector is built.
    let config = load_toml("", &[]).unwrap();
    assert!(!config.kubernetes.injector);
    assert!(config.kubernetes.injector_settings().unwrap().is_none());

    let err = load_toml("[kubernetes]\ninjector = true\n", &[]).unwrap_err();
    assert!(
        err.to_string().contains("kubernetes.sidecar_image"),
        "{err}"
    );
    let err = load_toml(
        "[kubernetes]\ninjector = true\nsidecar_image = \"proxy:1\"\n",
        &[],
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("kubernetes.sidecar_template"),
        "{err}"
    );
    let err = load_toml(
        "[kubernetes]\ninjector = true\nsidecar_image = \"proxy:1\"\n\
         sidecar_template = \"/x.toml\"\nsidecar_credentials_secret = \"Bad_Name\"\n",
        &[],
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("kubernetes.sidecar_credentials_secret"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let template = write(
        dir.path(),
        "sidecar.toml",
        "[control_plane]\nurl = \"https://cp:8200\"\n",
    );
    let text = format!(
        "[kubernetes]\ninjector = true\nsidecar_image = \"proxy:1\"\nsidecar_template = {:?}\n",
        template.display().to_string()
    );
    let settings = load_toml(&text, &[])
        .unwrap()
        .kubernetes
        .injector_settings()
        .unwrap()
        .unwrap();
    assert_eq!(settings.image, "proxy:1");
    assert_eq!(settings.credentials_secret, "agent-secret-sidecar");
    assert_eq!(settings.proxy_port, 8080);
    assert_eq!(
        settings.template["control_plane"]["url"].as_str(),
        Some("https://cp:8200")
    );

    // The same through the environment.
    let vars = [
        ("AGENT_SECRET_KUBERNETES_INJECTOR", "true"),
        ("AGENT_SECRET_KUBERNETES_SIDECAR_IMAGE", "proxy:2"),
        (
            "AGENT_SECRET_KUBERNETES_SIDECAR_TEMPLATE",
            template.to_str().unwrap(),
        ),
        ("AGENT_SECRET_KUBERNETES_SIDECAR_PORT", "18080"),
    ];
    let settings = load_toml("", &vars)
        .unwrap()
        .kubernetes
        .injector_settings()
        .unwrap()
        .unwrap();
    assert_eq!(
        (settings.image.as_str(), settings.proxy_port),
        ("proxy:2", 18080)
    );

    // A template that is not TOML is refused at start, naming the key and not quoting it.
    std::fs::write(&template, "url = \"https://cp:8200\nsecret-ish text").unwrap();
    let err = load_toml(&text, &[])
        .unwrap()
        .kubernetes
        .injector_settings()
        .unwrap_err();
    assert!(
        err.to_string().contains("kubernetes.sidecar_template"),
        "{err}"
    );
    assert!(!err.to_string().contains("secret-ish"), "{err}");
}

#[test]
fn workload_identity_needs_its_verifier_settings_and_well_formed_bindings() {
    let config = load_toml("", &[]).unwrap();
    assert!(config.kubernetes.workload_identity().unwrap().is_none());

    let err = load_toml("[kubernetes]\nidentity = \"jwks\"\n", &[]).unwrap_err();
    assert!(err.to_string().contains("kubernetes.jwks_url"), "{err}");
    let err = load_toml(
        "[kubernetes]\nidentity = \"jwks\"\njwks_url = \"https://issuer.example/keys\"\n",
        &[],
    )
    .unwrap_err();
    assert!(err.to_string().contains("kubernetes.issuer"), "{err}");
    // The control plane's own token travels to the API server: https only (or loopback).
    let err = load_toml(
        "[kubernetes]\nidentity = \"token_review\"\napi_url = \"http://kubernetes.example\"\n",
        &[],
    )
    .unwrap_err();
    assert!(err.to_string().contains("kubernetes.api_url"), "{err}");
    let err = load_toml("[kubernetes]\nidentity = \"magic\"\n", &[]).unwrap_err();
    assert!(
        err.to_string()
            .contains("expected one of `off`, `token_review`, `jwks`"),
        "{err}"
    );

    let binding = |tenant: &str, ttl: u64| {
        format!(
            "[kubernetes]\nidentity = \"token_review\"\n[[kubernetes.bindings]]\n\
             namespace = \"agents\"\nservice_account = \"research-agent\"\ntenant = \"{tenant}\"\n\
             agent = \"0193a5f0-0000-7000-8000-000000000002\"\nmax_ttl_seconds = {ttl}\n"
        )
    };
    let good = "0193a5f0-0000-7000-8000-000000000001";
    let config = load_toml(&binding(good, 900), &[]).unwrap();
    assert_eq!(config.kubernetes.bindings.len(), 1);
    let err = load_toml(&binding("acme", 900), &[]).unwrap_err();
    assert!(err.to_string().contains("kubernetes.bindings"), "{err}");
    let err = load_toml(&binding(good, 86_401), &[]).unwrap_err();
    assert!(err.to_string().contains("max_ttl_seconds"), "{err}");
}

#[test]
fn backup_section_comes_from_toml_and_env_and_bad_values_are_refused() {
    let defaults = Config::load(None, &no_env()).unwrap();
    assert_eq!(defaults.backup.directory, None);
    assert_eq!(defaults.backup.retention_days, 30);
    assert_eq!(defaults.backup.interval_seconds, 86_400);

    let recipient = age::x25519::Identity::generate().to_public().to_string();
    let c = load_toml(
        &format!(
            "[backup]\ndirectory = \"/var/backups/ass\"\ninterval_seconds = 3600\n\
             recipients = [\"{recipient}\"]\n"
        ),
        &[("AGENT_SECRET_BACKUP_RETENTION_DAYS", "7")],
    )
    .unwrap();
    assert_eq!(
        c.backup.directory.as_deref(),
        Some(Path::new("/var/backups/ass"))
    );
    assert_eq!(c.backup.interval().as_secs(), 3600);
    assert_eq!(c.backup.retention().as_secs(), 7 * 86_400);
    assert_eq!(c.backup.age_recipients().unwrap().len(), 1);

    let c = load_toml(
        "",
        &[
            ("AGENT_SECRET_BACKUP_DIRECTORY", "/b"),
            (
                "AGENT_SECRET_BACKUP_RECIPIENTS",
                &format!("{recipient}, {recipient}"),
            ),
        ],
    )
    .unwrap();
    assert_eq!(c.backup.recipients.len(), 2);

    for (text, key) in [
        ("[backup]\nretention_days = 0\n", "backup.retention_days"),
        (
            "[backup]\ninterval_seconds = 0\n",
            "backup.interval_seconds",
        ),
        (
            "[backup]\nrecipients = [\"age1nope\"]\n",
            "backup.recipients",
        ),
        (
            "[backup]\npostgres_url = \"mysql://x\"\n",
            "backup.postgres_url",
        ),
        // PostgreSQL backups need a role that sees every tenant's rows.
        (
            "[database]\nurl = \"postgres://app@db/store\"\n[backup]\ndirectory = \"/b\"\n",
            "backup.postgres_url",
        ),
    ] {
        let err = load_toml(text, &[]).unwrap_err();
        assert!(err.to_string().contains(key), "{text}: {err}");
    }
    // The backup role's URL is a secret: its password never shows.
    let c = load_toml(
        "[database]\nurl = \"postgres://app@db/store\"\n[backup]\ndirectory = \"/b\"\n",
        &[(
            "AGENT_SECRET_BACKUP_POSTGRES_URL",
            "postgres://backup:hunter2@db/store",
        )],
    )
    .unwrap();
    assert!(!format!("{c:?}").contains("hunter2"));
}
