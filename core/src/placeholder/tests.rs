#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn path(s: &str) -> SecretPath {
    SecretPath::parse(s).unwrap()
}

#[test]
fn finds_ranges_of_each_placeholder() {
    let value = b"a {{secret:x/y}} b {{secret:z}}";
    let found = find_placeholders(value).unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!(&value[found[0].range.clone()], b"{{secret:x/y}}");
    assert_eq!(found[0].path, path("x/y"));
    assert_eq!(&value[found[1].range.clone()], b"{{secret:z}}");
}

#[test]
fn substitutes_values_and_sizes_once() {
    let value = b"Bearer {{secret:k}}!";
    let found = find_placeholders(value).unwrap();
    let out = substitute(value, &found, |_| Some(&b"sk-123"[..])).unwrap();
    assert_eq!(&out[..], b"Bearer sk-123!");
    assert_eq!(out.capacity(), out.len());
}

#[test]
fn missing_value_is_an_error_naming_the_path() {
    let value = b"{{secret:k}}";
    let found = find_placeholders(value).unwrap();
    let err = substitute(value, &found, |_| None).unwrap_err();
    assert_eq!(err, PlaceholderError::Missing(path("k")));
    assert_eq!(err.code(), "invalid_placeholder");
}

#[test]
fn foreign_ranges_are_rejected_not_panicking() {
    let found = find_placeholders(b"xxxxxxxx{{secret:k}}").unwrap();
    assert!(substitute(b"short", &found, |_| Some(&b"v"[..])).is_err());
    let mut reversed = find_placeholders(b"{{secret:a}}{{secret:b}}").unwrap();
    reversed.reverse();
    assert!(substitute(b"{{secret:a}}{{secret:b}}", &reversed, |_| Some(&b"v"[..])).is_err());
}

#[test]
fn non_utf8_inside_is_an_invalid_path() {
    let err = find_placeholders(b"{{secret:a\xff}}").unwrap_err();
    assert!(matches!(
        err,
        PlaceholderError::InvalidPath(PathError::InvalidCharacter { index: 1, .. })
    ));
}

#[test]
fn marker_check() {
    assert!(contains_placeholder_marker(b"x{{y"));
    assert!(!contains_placeholder_marker(b"x{y}}"));
    assert!(!contains_placeholder_marker(b""));
}

#[test]
fn messages_show_the_expected_syntax() {
    let err = find_placeholders(b"{{SECRET:a}}").unwrap_err();
    assert!(err.to_string().contains("`{{secret:PATH}}`"), "{err}");
    assert!(matches!(err, PlaceholderError::Malformed { offset: 0, .. }));
    let err = find_placeholders(b"{{secret:a").unwrap_err();
    assert_eq!(
        err.to_string(),
        "placeholder `{{secret:...` has no closing `}}`"
    );
}
