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

#[test]
fn pattern_inclusion_is_exact() {
    let includes = |outer: &str, inner: &str| {
        ScopePattern::parse(outer)
            .unwrap()
            .includes(&ScopePattern::parse(inner).unwrap())
    };
    type Row = (&'static str, &'static str, bool);
    let table: &[Row] = &[
        ("a/b", "a/b", true),
        ("a/b", "a/c", false),
        ("a/*", "a/b", true),
        ("a/*", "a/*", true),
        ("a/b", "a/*", false),
        ("a/*", "a/b/c", false),
        ("a/*", "a", false),
        ("a/**", "a", true),
        ("a/**", "a/b/c", true),
        ("a/**", "a/*/c", true),
        ("a/**", "a/**", true),
        ("a/**", "a/b/**", true),
        ("a/b/**", "a/**", false),
        ("a/*", "a/**", false),
        ("a/*/**", "a/**", false),
        ("a/*/**", "a/b/**", true),
        ("**", "anything/at/all", true),
        ("**", "**", true),
        ("a/**", "b", false),
        ("*/db", "prod/db", true),
        ("*/db", "prod/cache", false),
        ("prod/*/key", "prod/*/key", true),
        ("prod/x/key", "prod/*/key", false),
    ];
    for (outer, inner, want) in table {
        assert_eq!(includes(outer, inner), *want, "{outer} includes {inner}");
    }
}

/// Whatever the patterns, inclusion never claims a path the outer pattern does not match.
#[test]
fn inclusion_agrees_with_matching_on_sample_paths() {
    let patterns = [
        "a", "a/b", "a/*", "a/**", "*/b", "a/*/c", "a/b/**", "**", "*", "*/**",
    ];
    let paths = [
        "a", "a/b", "a/c", "b", "b/b", "a/b/c", "a/x/c", "a/b/c/d", "x/y/z",
    ];
    for outer in patterns {
        let outer_p = ScopePattern::parse(outer).unwrap();
        for inner in patterns {
            let inner_p = ScopePattern::parse(inner).unwrap();
            if !outer_p.includes(&inner_p) {
                continue;
            }
            for p in paths {
                if inner_p.matches(&path(p)) {
                    assert!(
                        outer_p.matches(&path(p)),
                        "{outer} ⊇ {inner} but misses {p}"
                    );
                }
            }
        }
    }
}

#[test]
fn ceilings_bound_each_scope_by_action_and_pattern() {
    let ceiling: Vec<Scope> = ["secrets:read:demo/**", "secrets:list:ops/*"]
        .iter()
        .map(|s| Scope::parse(s).unwrap())
        .collect();
    let within = |s: &str| within_ceiling(&ceiling, &Scope::parse(s).unwrap());
    assert!(within("secrets:read:demo/echo/api_key"));
    assert!(within("secrets:read:demo/*"));
    assert!(!within("secrets:write:demo/echo/api_key"));
    assert!(!within("secrets:read:ops/x"));
    assert!(within("secrets:list:ops/x"));
    assert!(!within_ceiling(
        &[],
        &Scope::parse("secrets:read:a").unwrap()
    ));
}

#[test]
fn literal_prefix_is_where_matches_start() {
    let prefix = |s: &str| {
        ScopePattern::parse(s)
            .unwrap()
            .literal_prefix()
            .map(|p| p.to_string())
    };
    assert_eq!(prefix("prod/db/*").as_deref(), Some("prod/db"));
    assert_eq!(prefix("prod/**").as_deref(), Some("prod"));
    assert_eq!(prefix("prod/*/key").as_deref(), Some("prod"));
    assert_eq!(prefix("a/b").as_deref(), Some("a/b"));
    assert_eq!(prefix("*/db"), None);
    assert_eq!(prefix("**"), None);
}
