#![allow(clippy::unwrap_used, clippy::expect_used)]

use agent_secret_core::credential::{issue, Pepper};

use super::*;

fn token() -> String {
    issue(CredentialKind::Token, &Pepper::generate())
        .token
        .expose()
        .to_owned()
}

fn header(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap()
}

#[test]
fn bearer_token_is_accepted() {
    let t = token();
    let parsed = AgentToken::from_header(Some(&header(&format!("Bearer {t}")))).unwrap();
    assert_eq!(parsed.expose(), t);
}

#[test]
fn basic_auth_takes_the_token_as_password() {
    let t = token();
    let basic = STANDARD.encode(format!("agent:{t}"));
    let parsed = AgentToken::from_header(Some(&header(&format!("basic {basic}")))).unwrap();
    assert_eq!(parsed.expose(), t);
    assert_eq!(parsed.id().simple().to_string(), t[5..37]);
}

#[test]
fn missing_and_malformed_headers_are_refused() {
    assert_eq!(
        AgentToken::from_header(None).unwrap_err(),
        AuthError::Missing
    );
    assert_eq!(
        AgentToken::from_header(Some(&header("Token abc"))).unwrap_err(),
        AuthError::BadScheme
    );
    assert_eq!(
        AgentToken::from_header(Some(&header("Basic !!!"))).unwrap_err(),
        AuthError::BadBasic
    );
    assert_eq!(
        AgentToken::from_header(Some(&header("Bearer asst_nope"))).unwrap_err(),
        AuthError::NotAToken
    );
}

#[test]
fn other_credential_kinds_are_not_tokens() {
    let agent_key = issue(CredentialKind::Agent, &Pepper::generate())
        .token
        .expose()
        .to_owned();
    assert_eq!(
        AgentToken::from_header(Some(&header(&format!("Bearer {agent_key}")))).unwrap_err(),
        AuthError::NotAToken
    );
}

#[test]
fn a_token_with_a_bad_checksum_is_refused() {
    let mut t = token();
    let last = t.pop().unwrap();
    t.push(if last == '0' { '1' } else { '0' });
    assert!(AgentToken::from_header(Some(&header(&format!("Bearer {t}")))).is_err());
}

#[test]
fn cache_key_is_a_hash_not_the_token() {
    let t = token();
    let parsed = AgentToken::from_header(Some(&header(&format!("Bearer {t}")))).unwrap();
    let key = parsed.cache_key();
    assert!(!key
        .windows(8)
        .any(|w| t.as_bytes().windows(8).any(|x| x == w)));
    assert!(!format!("{parsed:?}").contains(&t[38..80]));
}

#[test]
fn sidecar_headers_are_recognised_case_insensitively() {
    for name in [
        "proxy-authorization",
        "Proxy-Connection",
        "X-Agent-Secret-Debug",
        "x-agent-secret-",
    ] {
        assert!(is_sidecar_header(name), "{name}");
    }
    for name in ["authorization", "x-agent", "x-agent-secrets", "connection"] {
        assert!(!is_sidecar_header(name), "{name}");
    }
}
