#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn path(s: &str) -> SecretPath {
    SecretPath::parse(s).unwrap()
}

#[test]
fn display_is_the_canonical_input() {
    for s in [
        "secrets:read:a/*",
        "secrets:list:**",
        "secrets:delete:x/y/**",
    ] {
        assert_eq!(Scope::parse(s).unwrap().to_string(), s);
    }
}

#[test]
fn errors_name_the_problem() {
    let err = Scope::parse("secrets:reed:a").unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown action `reed` (expected read, write, delete or list)"
    );
    assert_eq!(err.code(), "invalid_scope");
    assert!(Scope::parse("secrets:read:a/**/b")
        .unwrap_err()
        .to_string()
        .contains("`**`"));
}

#[test]
fn echoed_input_is_truncated() {
    let long = "x".repeat(10_000);
    let msg = Scope::parse(&format!("{long}:read:a"))
        .unwrap_err()
        .to_string();
    assert!(msg.len() < 200, "{msg}");
}

#[test]
fn action_must_match_too() {
    let scope = Scope::parse("secrets:read:a/**").unwrap();
    assert!(scope.covers(Action::Read, &path("a/b")));
    assert!(!scope.covers(Action::Write, &path("a/b")));
}

#[test]
fn scopes_cover_is_any() {
    let scopes = [
        Scope::parse("secrets:read:a/*").unwrap(),
        Scope::parse("secrets:write:b").unwrap(),
    ];
    assert!(scopes_cover(&scopes, Action::Read, &path("a/x")));
    assert!(scopes_cover(&scopes, Action::Write, &path("b")));
    assert!(!scopes_cover(&scopes, Action::Read, &path("b")));
    assert!(!scopes_cover(&[], Action::Read, &path("b")));
}

#[test]
fn could_match_under_prefix() {
    let cases = [
        ("production/openai/*", "production", true),
        ("production/openai/*", "production/openai", true),
        ("production/openai/*", "production/openai/key", true),
        ("production/openai/*", "production/openai/key/deeper", false),
        ("production/openai/*", "staging", false),
        ("production/**", "production/x/y/z", true),
        ("*/openai/key", "anything/openai", true),
        ("*/openai/key", "anything/anthropic", false),
        ("**", "x/y", true),
        ("a", "a/b", false),
    ];
    for (pattern, prefix, expected) in cases {
        let pattern = ScopePattern::parse(pattern).unwrap();
        assert_eq!(
            pattern.could_match_under(&path(prefix)),
            expected,
            "{pattern:?} under {prefix}"
        );
    }
}

#[test]
fn serde_round_trips_and_validates() {
    let scope: Scope = serde_json::from_str("\"secrets:read:a/*\"").unwrap();
    assert_eq!(
        serde_json::to_string(&scope).unwrap(),
        "\"secrets:read:a/*\""
    );
    assert!(serde_json::from_str::<Scope>("\"secrets:read:a*\"").is_err());
    assert_eq!(
        serde_json::to_string(&Action::Delete).unwrap(),
        "\"delete\""
    );
    assert_eq!("list".parse::<Action>().unwrap(), Action::List);
}
