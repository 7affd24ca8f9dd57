#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use super::*;

const MINIMAL: &str = r#"
[control_plane]
url = "https://127.0.0.1:8200"
sidecar_key_file = "sidecar.key"
[kms]
keyring = "keyring.json"
master_key_file = "master.key"
"#;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A configuration built in code starts where the same settings in a file start: one set of
/// defaults, whichever way an embedder or an operator configures the sidecar.
#[test]
fn a_config_built_in_code_equals_the_same_config_read_from_toml() {
    let mut control_plane = ControlPlaneConfig::new("https://127.0.0.1:8200");
    control_plane.sidecar_key_file = Some("sidecar.key".into());
    let built = ProxyConfig::new(
        control_plane,
        KmsConfig::local("keyring.json".into(), "master.key".into()),
    );
    built.validate().unwrap();
    let read = ProxyConfig::from_toml_str(MINIMAL).unwrap();
    assert_eq!(format!("{built:?}"), format!("{read:?}"));

    let mut with_host = built.clone();
    with_host.hosts.push(HostRule {
        plaintext: true,
        allow_private: true,
        ..HostRule::new("127.0.0.1:18080".parse().unwrap())
    });
    let text = format!("{MINIMAL}\n[[hosts]]\nname = \"127.0.0.1:18080\"\nplaintext = true\nallow_private = true\n");
    let read = ProxyConfig::from_toml_str(&text).unwrap();
    assert_eq!(format!("{with_host:?}"), format!("{read:?}"));

    let gcp = KmsConfig::cloud_kms("p", "l", "r");
    let read: KmsConfig =
        toml::from_str("backend = \"gcp\"\nproject = \"p\"\nlocation = \"l\"\nkey_ring = \"r\"\n")
            .unwrap();
    assert_eq!(format!("{gcp:?}"), format!("{read:?}"));
}

#[test]
fn minimal_config_gets_documented_defaults() {
    let config = ProxyConfig::from_toml_str(MINIMAL).unwrap();
    config.validate().unwrap();
    assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(config.admin_listen.to_string(), "127.0.0.1:9090");
    assert_eq!(config.cache.grant_ttl_seconds, 60);
    assert_eq!(config.cache.max_entries, 10_000);
    assert_eq!(config.audit.batch_size, 100);
    assert_eq!(config.max_agent_connections, 16_384);
    assert!(config.control_plane.watch);
    assert!(config.hosts.is_empty() && config.routes.is_empty());
}

#[test]
fn the_documented_example_file_parses_and_validates() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/proxy.toml"))
            .expect("config/proxy.toml exists");
    let config = ProxyConfig::from_toml_str(&text).unwrap();
    config.validate().unwrap();
    assert!(!config.hosts.is_empty());
    assert!(!config.routes.is_empty());
    // The documented values are the defaults.
    let minimal = ProxyConfig::from_toml_str(MINIMAL).unwrap();
    assert_eq!(config.limits, minimal.limits);
    assert_eq!(config.limits, crate::inject::Limits::default());
    assert_eq!(config.rate_limits, minimal.rate_limits);
    assert_eq!(config.max_agent_connections, minimal.max_agent_connections);
}

#[test]
fn the_agent_connection_cap_is_between_one_and_its_ceiling() {
    let err = ProxyConfig::from_toml_str(&format!("max_agent_connections = 0\n{MINIMAL}"))
        .unwrap()
        .validate()
        .unwrap_err();
    assert!(err.to_string().contains("max_agent_connections"), "{err}");
    let too_many = format!(
        "max_agent_connections = {}\n{MINIMAL}",
        MAX_AGENT_CONNECTIONS + 1
    );
    let err = ProxyConfig::from_toml_str(&too_many)
        .unwrap()
        .validate()
        .unwrap_err();
    assert!(err.to_string().contains("max_agent_connections"), "{err}");
    ProxyConfig::from_toml_str(&format!("max_agent_connections = 1\n{MINIMAL}"))
        .unwrap()
        .validate()
        .unwrap();
}

#[test]
fn unknown_keys_are_an_error_in_every_section() {
    for extra in [
        "lisen = \"127.0.0.1:1\"\n",
        "[cache]\ngrant_ttl = 3\n",
        "[audit]\nspool = \"x\"\n",
        "[upstream]\nca_file = \"x\"\n",
        "[limits]\nmax_placeholders = 3\n",
        "[rate_limits]\ntoken_rps = 3\n",
        "[[hosts]]\nname = \"a.example.com\"\nplaintxt = true\n",
        "[[routes]]\nprefix = \"/a/\"\nupstream = \"https://a.example.com/\"\nhost = \"x\"\n",
    ] {
        let text = format!("{extra}{MINIMAL}");
        let text = if extra.starts_with('[') {
            format!("{MINIMAL}{extra}")
        } else {
            text
        };
        let err = ProxyConfig::from_toml_str(&text).unwrap_err();
        assert!(
            err.to_string().contains("unknown field"),
            "{extra:?} gave {err}"
        );
    }
}

#[test]
fn a_parse_error_names_its_place_but_never_quotes_the_line() {
    let text = format!("{MINIMAL}[upstream]\nextra_ca_file = \"sk-live-hunter2\" x\n");
    let err = ProxyConfig::from_toml_str(&text).unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("line "), "{shown}");
}

#[test]
fn control_plane_must_be_https() {
    let text = MINIMAL.replace("https://127.0.0.1:8200", "http://127.0.0.1:8200");
    let err = ProxyConfig::from_toml_str(&text)
        .unwrap()
        .validate()
        .unwrap_err();
    assert!(err.to_string().contains("control_plane.url"), "{err}");
}

#[test]
fn plain_http_route_needs_a_plaintext_host_rule() {
    let route = "[[routes]]\nprefix = \"/local/\"\nupstream = \"http://127.0.0.1:18080/\"\n";
    let err = ProxyConfig::from_toml_str(&format!("{MINIMAL}{route}"))
        .unwrap()
        .validate()
        .unwrap_err();
    assert!(err.to_string().contains("plaintext"), "{err}");
    let host = "[[hosts]]\nname = \"127.0.0.1:18080\"\nplaintext = true\n";
    ProxyConfig::from_toml_str(&format!("{MINIMAL}{route}{host}"))
        .unwrap()
        .validate()
        .unwrap();
}

#[test]
fn bad_route_prefix_is_refused() {
    let route = "[[routes]]\nprefix = \"openai\"\nupstream = \"https://api.openai.com/\"\n";
    let err = ProxyConfig::from_toml_str(&format!("{MINIMAL}{route}"))
        .unwrap()
        .validate()
        .unwrap_err();
    assert!(err.to_string().contains("routes[0].prefix"), "{err}");
}

#[test]
fn host_rule_names_are_host_patterns() {
    let bad = "[[hosts]]\nname = \"*.com\"\n";
    assert!(ProxyConfig::from_toml_str(&format!("{MINIMAL}{bad}")).is_err());
}

#[test]
fn secrets_come_from_env_value_or_file_but_not_both() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    write_private(&key_file, "assc_from_file\n");
    let mut config = ProxyConfig::from_toml_str(MINIMAL).unwrap();
    let vars = env(&[("AGENT_SECRET_SIDECAR_KEY_FILE", key_file.to_str().unwrap())]);
    config.apply_env(&|n| vars.get(n).cloned()).unwrap();
    assert_eq!(config.sidecar_key().unwrap().expose(), "assc_from_file");

    let vars = env(&[("AGENT_SECRET_SIDECAR_KEY", "assc_value")]);
    config.apply_env(&|n| vars.get(n).cloned()).unwrap();
    assert_eq!(config.sidecar_key().unwrap().expose(), "assc_value");

    let vars = env(&[
        ("AGENT_SECRET_MASTER_KEY", "a"),
        ("AGENT_SECRET_MASTER_KEY_FILE", "b"),
    ]);
    let err = config.apply_env(&|n| vars.get(n).cloned()).unwrap_err();
    assert!(err.to_string().contains("not both"), "{err}");
}

#[test]
fn secret_file_errors_never_show_the_content() {
    let dir = tempfile::tempdir().unwrap();
    let master = dir.path().join("master.key");
    write_private(&master, "not-base64-SECRETISH");
    let text = MINIMAL.replace("master.key", master.to_str().unwrap());
    let config = ProxyConfig::from_toml_str(&text).unwrap();
    let err = config.master_key().unwrap_err().to_string();
    assert!(err.contains("kms.master_key_file"), "{err}");
    assert!(err.contains("base64"), "{err}");
    assert!(!err.contains("SECRETISH"), "{err}");
}

#[test]
fn a_secret_file_other_users_can_read_is_refused_naming_key_file_and_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("sidecar.key");
    write_private(&key_file, "assc_SECRETISH\n");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = MINIMAL.replace("sidecar.key", key_file.to_str().unwrap());
    let config = ProxyConfig::from_toml_str(&text).unwrap();
    let err = config.sidecar_key().unwrap_err().to_string();
    assert!(err.contains("control_plane.sidecar_key_file"), "{err}");
    assert!(
        err.contains(key_file.to_str().unwrap()) && err.contains("0644"),
        "{err}"
    );
    assert!(!err.contains("SECRETISH"), "{err}");
}

/// Writes a secret file as an operator should: mode 0600.
fn write_private(path: &std::path::Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn missing_secrets_are_reported_by_key() {
    let text = MINIMAL.replace("sidecar_key_file = \"sidecar.key\"\n", "");
    let err = ProxyConfig::from_toml_str(&text)
        .unwrap()
        .validate()
        .unwrap_err();
    assert!(
        err.to_string().contains("AGENT_SECRET_SIDECAR_KEY"),
        "{err}"
    );
}

#[test]
fn gcp_backend_needs_the_whole_key_ring_and_no_master_key() {
    let text = MINIMAL.replace("[kms]\n", "[kms]\nbackend = \"gcp\"\nproject = \"p\"\n");
    let config = ProxyConfig::from_toml_str(&text).unwrap();
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("kms.location"), "{err}");

    let text = MINIMAL.replace(
        "[kms]\n",
        "[kms]\nbackend = \"gcp\"\nproject = \"p\"\nlocation = \"us\"\nkey_ring = \"r\"\n",
    );
    let config = ProxyConfig::from_toml_str(&text).unwrap();
    config.validate().unwrap();
    let gcp = config.kms.gcp().unwrap();
    assert_eq!(gcp.key_ring_name(), "projects/p/locations/us/keyRings/r");
}

#[test]
fn anonymous_gcp_credentials_only_reach_a_loopback_test_endpoint() {
    let base = "[kms]\nbackend = \"gcp\"\nproject = \"p\"\nlocation = \"us\"\nkey_ring = \"r\"\ncredentials_file = \"anonymous\"\n";
    let config = ProxyConfig::from_toml_str(&MINIMAL.replace("[kms]\n", base)).unwrap();
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("kms.credentials_file"), "{err}");

    let local = format!("{base}endpoint = \"http://127.0.0.1:9999\"\n");
    let config = ProxyConfig::from_toml_str(&MINIMAL.replace("[kms]\n", &local)).unwrap();
    config.validate().unwrap();
}

#[test]
fn a_service_account_token_file_stands_in_for_the_sidecar_key_but_not_beside_it() {
    let with_token = MINIMAL.replace(
        "sidecar_key_file = \"sidecar.key\"",
        "service_account_token_file = \"/var/run/secrets/agent-secrets.io/serviceaccount/token\"",
    );
    assert_ne!(with_token, MINIMAL, "MINIMAL names its key file");
    let config = ProxyConfig::from_toml_str(&with_token).unwrap();
    config.validate().unwrap();
    assert!(matches!(
        config.credential().unwrap(),
        Credential::TokenFile(path) if path.ends_with("serviceaccount/token")
    ));

    let both = with_token.replace(
        "service_account_token_file",
        "sidecar_key_file = \"sidecar.key\"\nservice_account_token_file",
    );
    let err = ProxyConfig::from_toml_str(&both)
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("control_plane.service_account_token_file"),
        "{err}"
    );

    let neither = MINIMAL.replace("sidecar_key_file = \"sidecar.key\"\n", "");
    let err = ProxyConfig::from_toml_str(&neither)
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(err.contains("service_account_token_file"), "{err}");
}
