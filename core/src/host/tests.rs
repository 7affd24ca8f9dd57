#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

#[test]
fn canonical_forms() {
    let cases = [
        ("API.OpenAI.com.", "api.openai.com"),
        ("*.Example.COM:08443", "*.example.com:8443"),
        ("[::FFFF:127.0.0.1]:80", "127.0.0.1:80"),
        ("[0:0:0:0:0:0:0:1]", "[::1]"),
    ];
    for (input, canonical) in cases {
        assert_eq!(
            HostPattern::parse(input).unwrap().as_str(),
            canonical,
            "{input}"
        );
    }
}

#[test]
fn destination_from_parts_accepts_bare_ipv6() {
    let dest = Destination::from_parts("::1", Some(8080)).unwrap();
    assert_eq!(dest.host(), "[::1]");
    assert_eq!(dest.port(), Some(8080));
    assert_eq!(Destination::parse("[::1]:8080").unwrap(), dest);
    assert!(Destination::from_parts("a", Some(0)).is_err());
    assert!(Destination::from_parts("[::1", None).is_err());
}

#[test]
fn errors_have_one_code() {
    let err = HostPattern::parse("*.com").unwrap_err();
    assert_eq!(err, HostError::WildcardTooBroad);
    assert_eq!(err.code(), "invalid_host");
}

#[test]
fn serde_uses_canonical_text() {
    let p: HostPattern = serde_json::from_str("\"API.openai.com\"").unwrap();
    assert_eq!(serde_json::to_string(&p).unwrap(), "\"api.openai.com\"");
    assert!(serde_json::from_str::<HostPattern>("\"a b\"").is_err());
}
