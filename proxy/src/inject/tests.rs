#![allow(clippy::unwrap_used, clippy::expect_used)]

use http::HeaderValue;

use super::*;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    map
}

fn path(s: &str) -> SecretPath {
    SecretPath::parse(s).unwrap()
}

#[test]
fn finds_placeholders_in_any_header_value() {
    let h = headers(&[
        ("authorization", "Bearer {{secret:prod/openai/key}}"),
        (
            "x-other",
            "a {{secret:prod/a}} b {{secret:prod/openai/key}}",
        ),
        ("accept", "application/json"),
    ]);
    let scan = scan(&h, b"/v1/x", &Limits::default()).unwrap();
    assert_eq!(scan.headers.len(), 2);
    assert_eq!(scan.paths(), vec![path("prod/a"), path("prod/openai/key")]);
}

#[test]
fn plain_requests_have_no_placeholders() {
    let h = headers(&[
        ("authorization", "Bearer sk-123"),
        ("x-json", "{{\"a\":1}}"),
    ]);
    assert!(scan(&h, b"/", &Limits::default()).unwrap().is_empty());
}

#[test]
fn malformed_placeholders_are_refused() {
    for bad in [
        "{{ secret:a/b}}",
        "{{SECRET:a/b}}",
        "{{secret:a b}}",
        "{{secret:a/b",
        "{{secret:}}",
    ] {
        let h = headers(&[("authorization", bad)]);
        assert!(
            matches!(
                scan(&h, b"/", &Limits::default()),
                Err(InjectError::Malformed { .. })
            ),
            "{bad}"
        );
    }
}

#[test]
fn placeholders_in_host_or_target_are_refused() {
    let h = headers(&[("host", "{{secret:a/b}}.example.com")]);
    assert_eq!(
        scan(&h, b"/", &Limits::default()).unwrap_err(),
        InjectError::InHost
    );
    let h = headers(&[]);
    assert_eq!(
        scan(&h, b"/x?k={{secret:a/b}}", &Limits::default()).unwrap_err(),
        InjectError::InTarget
    );
    assert_eq!(
        scan(&h, b"/x?k={{SECRET:a/b}}", &Limits::default()).unwrap_err(),
        InjectError::InTarget
    );
    assert!(scan(&h, b"/x?k={{name}}", &Limits::default())
        .unwrap()
        .is_empty());
}

#[test]
fn the_sidecars_own_headers_are_not_scanned() {
    // Consumed by the sidecar and never forwarded: nothing in them is ever substituted (a
    // placeholder as the token is refused by authentication, 407).
    let h = headers(&[
        ("x-agent-secret-note", "{{secret:bad path}}"),
        ("proxy-authorization", "Bearer {{secret:x}}"),
        ("proxy-connection", "{{secret:x}}"),
    ]);
    assert!(scan(&h, b"/", &Limits::default()).unwrap().is_empty());
}

#[test]
fn substitution_keeps_every_value_of_the_header_in_order() {
    let h = headers(&[
        ("x-key", "first"),
        ("x-key", "k={{secret:a/b}};again={{secret:a/b}}"),
        ("x-key", "last"),
        ("authorization", "Bearer {{secret:c}}"),
    ]);
    let scan = scan(&h, b"/", &Limits::default()).unwrap();
    let values = [
        (path("a/b"), b"VALUE-AB".to_vec()),
        (path("c"), b"VALUE-C".to_vec()),
    ];
    let lookup = |p: &SecretPath| {
        values
            .iter()
            .find(|(q, _)| q == p)
            .map(|(_, v)| v.as_slice())
    };
    let out = substitute_headers(&h, &scan, lookup, &Limits::default()).unwrap();
    let x_key = out.iter().find(|s| s.name == "x-key").unwrap();
    let rendered: Vec<&[u8]> = x_key.values.iter().map(|v| v.as_bytes()).collect();
    assert_eq!(
        rendered,
        vec![&b"first"[..], b"k=VALUE-AB;again=VALUE-AB", b"last"]
    );
    let auth = out.iter().find(|s| s.name == "authorization").unwrap();
    assert_eq!(auth.values[0].as_bytes(), b"Bearer VALUE-C");
    assert!(
        auth.values.iter().all(http::HeaderValue::is_sensitive),
        "substituted values are marked sensitive"
    );
    assert!(!format!("{:?}", auth.values[0]).contains("VALUE-C"));
}

#[test]
fn a_missing_value_fails_substitution() {
    let h = headers(&[("authorization", "Bearer {{secret:c}}")]);
    let scan = scan(&h, b"/", &Limits::default()).unwrap();
    assert!(substitute_headers(&h, &scan, |_| None, &Limits::default()).is_err());
}

#[test]
fn values_that_would_break_the_header_are_refused() {
    let h = headers(&[("authorization", "Bearer {{secret:c}}")]);
    let scan = scan(&h, b"/", &Limits::default()).unwrap();
    let err = substitute_headers(
        &h,
        &scan,
        |_| Some(&b"x\r\nInjected: 1"[..]),
        &Limits::default(),
    )
    .err()
    .unwrap();
    assert_eq!(err, InjectError::InvalidValue("authorization".into()));
}

#[test]
fn framing_and_hop_by_hop_headers_never_take_a_placeholder() {
    for name in [
        "transfer-encoding",
        "content-length",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-anything",
    ] {
        let h = headers(&[(name, "{{secret:prod/a}}")]);
        assert_eq!(
            scan(&h, b"/", &Limits::default()).unwrap_err(),
            InjectError::InFramingHeader(name.into()),
            "{name}"
        );
    }
    assert_eq!(
        scan(
            &headers(&[("host", "{{secret:prod/a}}")]),
            b"/",
            &Limits::default()
        )
        .unwrap_err(),
        InjectError::InHost
    );
}

#[test]
fn headers_named_by_connection_are_hop_by_hop_too() {
    let h = headers(&[
        ("connection", "keep-alive, X-Hop"),
        ("x-hop", "Bearer {{secret:prod/a}}"),
    ]);
    assert_eq!(
        scan(&h, b"/", &Limits::default()).unwrap_err(),
        InjectError::InFramingHeader("x-hop".into())
    );
    // A Connection value that is not visible ASCII still names its headers.
    let mut h = headers(&[("x-hop", "Bearer {{secret:prod/a}}")]);
    h.append(
        CONNECTION,
        HeaderValue::from_bytes(b"x-hop,\t\x80").unwrap(),
    );
    assert_eq!(
        scan(&h, b"/", &Limits::default()).unwrap_err(),
        InjectError::InFramingHeader("x-hop".into())
    );
    // The same header, not named by Connection, is an ordinary end-to-end header.
    let h = headers(&[("x-hop", "Bearer {{secret:prod/a}}")]);
    assert_eq!(scan(&h, b"/", &Limits::default()).unwrap().paths().len(), 1);
}

#[test]
fn placeholder_counts_are_capped_per_header_and_per_request() {
    let limits = Limits {
        max_placeholders_per_request: 3,
        max_placeholders_per_header: 2,
        max_header_value_bytes: 64,
    };
    let h = headers(&[("x-a", "{{secret:a}} {{secret:b}}")]);
    assert_eq!(scan(&h, b"/", &limits).unwrap().paths().len(), 2);
    let h = headers(&[("x-a", "{{secret:a}} {{secret:b}} {{secret:a}}")]);
    assert_eq!(
        scan(&h, b"/", &limits).unwrap_err(),
        InjectError::TooManyInHeader {
            header: "x-a".into(),
            limit: 2
        }
    );
    // Repeats count: the cap bounds the work, not only the distinct paths.
    let h = headers(&[
        ("x-a", "{{secret:a}} {{secret:a}}"),
        ("x-b", "{{secret:a}} {{secret:a}}"),
    ]);
    assert_eq!(
        scan(&h, b"/", &limits).unwrap_err(),
        InjectError::TooMany { limit: 3 }
    );
    let err = InjectError::TooMany { limit: 3 }.to_string();
    assert!(err.contains("more than 3 placeholders"), "{err}");
}

#[test]
fn a_header_value_too_long_after_substitution_is_refused() {
    let limits = Limits {
        max_header_value_bytes: 32,
        ..Limits::default()
    };
    let h = headers(&[("authorization", "Bearer {{secret:c}}")]);
    let scan = scan(&h, b"/", &limits).unwrap();
    let long = vec![b'k'; 40];
    let err = substitute_headers(&h, &scan, |_| Some(long.as_slice()), &limits)
        .err()
        .unwrap();
    assert_eq!(
        err,
        InjectError::ValueTooLong {
            header: "authorization".into(),
            limit: 32
        }
    );
    let short = vec![b'k'; 8];
    assert!(substitute_headers(&h, &scan, |_| Some(short.as_slice()), &limits).is_ok());
}
