//! Test vectors for the grammars both trust domains share: secret paths, scopes, placeholders
//! and host patterns. Each table is the readable statement of the contract README.md describes;
//! a change here is a change to what users, scripts and the other crates rely on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use agent_secret_core::host::{Destination, HostPattern};
use agent_secret_core::path::SecretPath;
use agent_secret_core::placeholder::{find_placeholders, PlaceholderError};
use agent_secret_core::scope::{Action, Scope};

fn path(s: &str) -> SecretPath {
    SecretPath::parse(s).unwrap_or_else(|e| panic!("test path {s:?} is invalid: {e}"))
}

// ---------------------------------------------------------------- paths

const VALID_PATHS: &[&str] = &[
    "production/openai/api_key",
    "a",
    "A-Z_a-z.0-9",
    "prod/v1.2/key-name",
    "...",
    ".hidden/x",
    "x/y/z/w/v/u/t/s",
];

const INVALID_PATHS: &[(&str, &str)] = &[
    ("", "empty"),
    ("/production", "leading slash"),
    ("production/", "trailing slash"),
    ("a//b", "empty segment"),
    ("prod/api key", "space"),
    ("prod/api:key", "colon"),
    ("prod/*", "wildcard is not a path character"),
    ("prod/ключ", "non-ASCII"),
    ("prod/../admin", "dot-dot segment"),
    ("./prod", "dot segment"),
    ("prod\\key", "backslash"),
    ("prod/key\n", "newline"),
    ("prod/%2F", "percent"),
];

#[test]
fn valid_paths_parse_and_display_unchanged() {
    for &s in VALID_PATHS {
        assert_eq!(path(s).to_string(), s);
    }
}

#[test]
fn invalid_paths_are_rejected() {
    for &(s, why) in INVALID_PATHS {
        assert!(
            SecretPath::parse(s).is_err(),
            "{s:?} ({why}) should be invalid"
        );
    }
}

// ---------------------------------------------------------------- scopes

const VALID_SCOPES: &[&str] = &[
    "secrets:read:production/openai/api_key",
    "secrets:write:production/openai/*",
    "secrets:delete:staging/**",
    "secrets:list:**",
    "secrets:read:*",
    "secrets:read:*/openai/*",
    "secrets:read:a/*/b/**",
    "secrets:read:prod.v2/key_name-1",
];

/// (scope, why it is invalid)
const INVALID_SCOPES: &[(&str, &str)] = &[
    ("", "empty"),
    ("secrets:reed:production/x", "unknown action"),
    ("secrets:READ:production/x", "actions are case-sensitive"),
    ("Secrets:read:production/x", "resource is case-sensitive"),
    ("secret:read:production/x", "unknown resource"),
    ("keys:read:production/x", "unknown resource"),
    ("secrets:read", "no pattern"),
    ("secrets:read:", "empty pattern"),
    ("secrets::x", "empty action"),
    ("read:production/x", "no resource"),
    ("secrets:read:production/**/key", "`**` not last"),
    ("secrets:read:**/key", "`**` not last"),
    ("secrets:read:production/prod*", "partial wildcard"),
    ("secrets:read:production/*key", "partial wildcard"),
    ("secrets:read:production/***", "triple star"),
    ("secrets:read:production/?", "`?` is not a wildcard"),
    ("secrets:read:/production", "leading slash"),
    ("secrets:read:production/", "trailing slash"),
    ("secrets:read:production//x", "empty segment"),
    ("secrets:read:prod/a:b", "colon in pattern"),
    ("secrets:read:prod/../x", "dot-dot segment"),
    (" secrets:read:x", "leading whitespace"),
    ("secrets:read:x ", "trailing whitespace"),
    ("secrets: read:x", "whitespace in action"),
];

/// (scope, path, covered by a request for the scope's own action)
const SCOPE_MATCHES: &[(&str, &str, bool)] = &[
    // The documented examples.
    (
        "secrets:read:production/openai/*",
        "production/openai/api_key",
        true,
    ),
    (
        "secrets:read:production/openai/*",
        "production/openai/org/key",
        false,
    ),
    (
        "secrets:read:production/openai/*",
        "production/anthropic/api_key",
        false,
    ),
    (
        "secrets:read:production/openai/*",
        "production/openai",
        false,
    ),
    // `**`: zero or more trailing segments.
    ("secrets:read:production/**", "production", true),
    ("secrets:read:production/**", "production/openai", true),
    (
        "secrets:read:production/**",
        "production/openai/org/key",
        true,
    ),
    ("secrets:read:production/**", "productionx", false),
    ("secrets:read:production/**", "staging/production", false),
    ("secrets:read:**", "anything/at/all", true),
    ("secrets:read:a/*/**", "a", false),
    ("secrets:read:a/*/**", "a/b", true),
    ("secrets:read:a/*/**", "a/b/c/d", true),
    // Literal and single-segment wildcard.
    (
        "secrets:read:production/openai/api_key",
        "production/openai/api_key",
        true,
    ),
    (
        "secrets:read:production/openai/api_key",
        "production/openai/api_key2",
        false,
    ),
    (
        "secrets:read:production/openai/api_key",
        "production/openai",
        false,
    ),
    (
        "secrets:read:production/openai/api_key",
        "Production/openai/api_key",
        false,
    ),
    ("secrets:read:*", "x", true),
    ("secrets:read:*", "x/y", false),
    ("secrets:read:*/openai/key", "staging/openai/key", true),
    ("secrets:read:*/openai/key", "staging/anthropic/key", false),
    // `.` is an ordinary character, not a wildcard.
    ("secrets:read:prod/a.b", "prod/a.b", true),
    ("secrets:read:prod/a.b", "prod/axb", false),
];

#[test]
fn valid_scopes_parse_and_display_unchanged() {
    for &s in VALID_SCOPES {
        let scope = Scope::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
        assert_eq!(scope.to_string(), s);
    }
}

#[test]
fn invalid_scopes_are_errors_with_one_code() {
    for &(s, why) in INVALID_SCOPES {
        match Scope::parse(s) {
            Ok(scope) => panic!("{s:?} ({why}) parsed as {scope:?}"),
            Err(e) => assert_eq!(e.code(), "invalid_scope"),
        }
    }
}

#[test]
fn scope_matching_vectors() {
    for &(scope, p, expected) in SCOPE_MATCHES {
        let scope = Scope::parse(scope).unwrap();
        let p = path(p);
        assert_eq!(scope.covers(scope.action, &p), expected, "{scope} vs {p}");
        let other = if scope.action == Action::Read {
            Action::Write
        } else {
            Action::Read
        };
        assert!(
            !scope.covers(other, &p),
            "{scope} must not cover {other} {p}"
        );
    }
}

// ---------------------------------------------------------------- placeholders

/// (header value, the paths found in order)
const PLACEHOLDERS_FOUND: &[(&str, &[&str])] = &[
    (
        "Bearer {{secret:production/openai/api_key}}",
        &["production/openai/api_key"],
    ),
    ("{{secret:a}}", &["a"]),
    ("{{secret:a}}:{{secret:b/c}}", &["a", "b/c"]),
    ("{{secret:a}}{{secret:a}}", &["a", "a"]),
    ("no placeholder here", &[]),
    ("", &[]),
    ("{{name}} templating is left alone", &[]),
    ("{{ name }} and {{ secre }}", &[]),
    ("{\"json\": {\"x\": 1}}", &[]),
    ("{{{secret:a}}}", &["a"]),
    ("}}{{secret:a}}{{", &["a"]),
    ("{{sec}}", &[]),
    ("{{secre", &[]),
];

/// (header value, why it is refused)
const PLACEHOLDERS_REFUSED: &[(&str, &str)] = &[
    ("Bearer {{secret:a", "unterminated"),
    ("{{secret:a}", "single closing brace"),
    ("{{secret:}}", "empty path"),
    ("{{secret:a//b}}", "invalid path"),
    ("{{secret:a b}}", "space in path"),
    ("{{secret:a/*}}", "wildcard in path"),
    ("{{ secret:a}}", "space before keyword"),
    ("{{\tsecret:a}}", "tab before keyword"),
    ("{{secret: a}}", "space before path"),
    ("{{secret:a }}", "space after path"),
    ("{{SECRET:a}}", "upper-case keyword"),
    ("{{Secret:a}}", "mixed-case keyword"),
    ("{{secret a}}", "no colon"),
    ("{{secret}}", "no path"),
    ("{{secrets:a}}", "plural keyword"),
    ("{{secret::a}}", "double colon"),
    ("ok {{secret:a}} then {{secret:b", "one bad among good"),
    ("{{secret:a {{secret:b}}", "nested opening"),
    (
        "{{secretary}}",
        "starts with the keyword, so it is an attempt",
    ),
];

#[test]
fn placeholders_are_found() {
    for &(value, paths) in PLACEHOLDERS_FOUND {
        let found =
            find_placeholders(value.as_bytes()).unwrap_or_else(|e| panic!("{value:?}: {e}"));
        let got: Vec<&str> = found.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(got, paths, "{value:?}");
        for p in &found {
            let text = &value[p.range.clone()];
            assert_eq!(text, format!("{{{{secret:{}}}}}", p.path), "{value:?}");
        }
    }
}

#[test]
fn malformed_placeholders_are_refused() {
    for &(value, why) in PLACEHOLDERS_REFUSED {
        match find_placeholders(value.as_bytes()) {
            Ok(found) => panic!("{value:?} ({why}) was accepted: {found:?}"),
            Err(e) => assert_eq!(e.code(), "invalid_placeholder"),
        }
    }
    assert_eq!(
        find_placeholders(b"{{secret:a").unwrap_err(),
        PlaceholderError::Unterminated
    );
}

// ---------------------------------------------------------------- hosts

const VALID_HOST_PATTERNS: &[(&str, &str)] = &[
    ("api.openai.com", "api.openai.com"),
    ("API.OpenAI.com", "api.openai.com"),
    ("api.openai.com.", "api.openai.com"),
    ("api.openai.com:8443", "api.openai.com:8443"),
    ("*.example.com", "*.example.com"),
    ("*.example.com:443", "*.example.com:443"),
    ("127.0.0.1:18080", "127.0.0.1:18080"),
    ("[::1]:8080", "[::1]:8080"),
    ("[2001:DB8::1]", "[2001:db8::1]"),
    ("localhost", "localhost"),
    ("xn--bcher-kva.example", "xn--bcher-kva.example"),
    ("a-b.c-d.io", "a-b.c-d.io"),
];

const INVALID_HOST_PATTERNS: &[(&str, &str)] = &[
    ("", "empty"),
    (".", "only a dot"),
    ("api.openai.com:0", "port zero"),
    ("api.openai.com:65536", "port too large"),
    ("api.openai.com:", "empty port"),
    ("api.openai.com:+443", "signed port"),
    ("api.openai.com:https", "named port"),
    ("*.com", "wildcard too broad"),
    ("*", "bare wildcard"),
    ("a.*.example.com", "wildcard not first"),
    ("*.*.example.com", "double wildcard"),
    ("api*.example.com", "partial wildcard"),
    ("*.127.0.0.1", "wildcard on IPv4"),
    ("*.[::1]", "wildcard on IPv6"),
    ("::1", "unbracketed IPv6"),
    ("[::1", "unclosed bracket"),
    ("[::1]x", "junk after bracket"),
    ("[fe80::1%25eth0]", "zone id"),
    ("bücher.example", "non-ASCII"),
    ("api_openai.com", "underscore"),
    ("-api.openai.com", "leading hyphen"),
    ("api-.openai.com", "trailing hyphen"),
    ("api..openai.com", "empty label"),
    ("127.1", "short-form IPv4"),
    ("10.0.0.010", "octal-looking IPv4"),
    ("foo.0x7f", "hex final label"),
    (" api.openai.com", "leading space"),
    ("https://api.openai.com", "URL, not a host"),
    ("api.openai.com/v1", "path"),
];

/// (pattern, destination, matches)
const HOST_MATCHES: &[(&str, &str, bool)] = &[
    ("api.openai.com", "api.openai.com", true),
    ("api.openai.com", "API.OpenAI.COM", true),
    ("api.openai.com", "api.openai.com.", true),
    ("api.openai.com", "api.openai.com:443", true),
    ("api.openai.com", "api.openai.com:80", true),
    ("api.openai.com", "api.openai.com:8443", false),
    ("api.openai.com", "evil.com", false),
    ("api.openai.com", "api.openai.com.evil.com", false),
    ("api.openai.com", "xapi.openai.com", false),
    ("api.openai.com:8443", "api.openai.com:8443", true),
    ("api.openai.com:8443", "api.openai.com", false),
    ("api.openai.com:8443", "api.openai.com:443", false),
    ("api.openai.com:443", "api.openai.com:443", true),
    ("*.example.com", "a.example.com", true),
    ("*.example.com", "A.Example.com:443", true),
    ("*.example.com", "a.b.example.com", false),
    ("*.example.com", "example.com", false),
    ("*.example.com", "aexample.com", false),
    ("*.example.com", "a.example.com.evil.com", false),
    ("*.example.com:8443", "a.example.com:8443", true),
    ("*.example.com:8443", "a.example.com", false),
    ("127.0.0.1:18080", "127.0.0.1:18080", true),
    ("127.0.0.1:18080", "127.0.0.1:18081", false),
    ("127.0.0.1:18080", "127.0.0.2:18080", false),
    ("127.0.0.1", "[::ffff:127.0.0.1]", true),
    ("[::1]:8080", "[::1]:8080", true),
    ("[::1]:8080", "[0:0::1]:8080", true),
    ("[::1]:8080", "127.0.0.1:8080", false),
    ("localhost", "127.0.0.1", false),
];

#[test]
fn host_patterns_parse_to_canonical_form() {
    for &(input, canonical) in VALID_HOST_PATTERNS {
        let pattern = HostPattern::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
        assert_eq!(pattern.as_str(), canonical, "{input:?}");
        assert_eq!(
            HostPattern::parse(canonical).unwrap(),
            pattern,
            "{canonical:?} is stable"
        );
    }
}

#[test]
fn invalid_host_patterns_are_rejected() {
    for &(input, why) in INVALID_HOST_PATTERNS {
        match HostPattern::parse(input) {
            Ok(p) => panic!("{input:?} ({why}) parsed as {p:?}"),
            Err(e) => assert_eq!(e.code(), "invalid_host"),
        }
    }
}

#[test]
fn host_matching_vectors() {
    for &(pattern, dest, expected) in HOST_MATCHES {
        let pattern = HostPattern::parse(pattern).unwrap();
        let dest = Destination::parse(dest).unwrap_or_else(|e| panic!("{dest:?}: {e}"));
        assert_eq!(pattern.matches(&dest), expected, "{pattern} vs {dest}");
    }
}

#[test]
fn vector_count_meets_the_contract() {
    let total = VALID_PATHS.len()
        + INVALID_PATHS.len()
        + VALID_SCOPES.len()
        + INVALID_SCOPES.len()
        + SCOPE_MATCHES.len()
        + PLACEHOLDERS_FOUND.len()
        + PLACEHOLDERS_REFUSED.len()
        + VALID_HOST_PATTERNS.len()
        + INVALID_HOST_PATTERNS.len()
        + HOST_MATCHES.len();
    assert!(total >= 40, "only {total} vectors");
}
