#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

#[test]
fn segments_are_split_on_slash() {
    let path = SecretPath::parse("production/openai/api_key").unwrap();
    let segments: Vec<&str> = path.segments().collect();
    assert_eq!(segments, ["production", "openai", "api_key"]);
}

#[test]
fn error_points_at_the_offending_byte() {
    assert_eq!(
        SecretPath::parse("prod/ap!").unwrap_err(),
        PathError::InvalidCharacter { ch: '!', index: 7 }
    );
}

#[test]
fn limits_are_inclusive() {
    let longest = "a".repeat(MAX_PATH_LEN);
    assert!(SecretPath::parse(&longest).is_ok());
    assert_eq!(
        SecretPath::parse(&format!("{longest}b")).unwrap_err(),
        PathError::TooLong
    );
    let deepest = vec!["a"; MAX_SEGMENTS].join("/");
    assert!(SecretPath::parse(&deepest).is_ok());
    assert_eq!(
        SecretPath::parse(&format!("{deepest}/a")).unwrap_err(),
        PathError::TooManySegments
    );
}

#[test]
fn starts_with_compares_whole_segments() {
    let path = SecretPath::parse("production/openai/key").unwrap();
    for (prefix, expected) in [
        ("production", true),
        ("production/openai", true),
        ("production/openai/key", true),
        ("prod", false),
        ("production/open", false),
        ("production/openai/key/x", false),
    ] {
        let prefix = SecretPath::parse(prefix).unwrap();
        assert_eq!(path.starts_with(&prefix), expected, "{prefix}");
    }
}

#[test]
fn serde_validates_on_the_way_in() {
    let path: SecretPath = serde_json::from_str("\"a/b\"").unwrap();
    assert_eq!(serde_json::to_string(&path).unwrap(), "\"a/b\"");
    assert!(serde_json::from_str::<SecretPath>("\"a//b\"").is_err());
    assert!(serde_json::from_str::<SecretPath>("\"../etc\"").is_err());
}
