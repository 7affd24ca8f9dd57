#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;

use agent_secret_core::api::Sensitivity;
use agent_secret_core::credential::{issue, CredentialKind, Pepper};
use agent_secret_core::secret::SecretBytes;
use http::StatusCode;

use super::*;
use crate::config::ProxyConfig;

fn router() -> Router {
    let config = ProxyConfig::from_toml_str(
        r#"
[control_plane]
url = "https://127.0.0.1:8200"
sidecar_key_file = "k"
[kms]
keyring = "r"
master_key_file = "m"
[[hosts]]
name = "passthrough.example.com"
pass_through = true
[[routes]]
prefix = "/openai/"
upstream = "https://api.openai.com/"
"#,
    )
    .unwrap();
    config.validate().unwrap();
    Router::new(&config).unwrap()
}

fn token() -> String {
    issue(CredentialKind::Token, &Pepper::generate())
        .token
        .expose()
        .to_owned()
}

fn request(method: &str, target: &str, headers: &[(&str, &str)]) -> RequestHeader {
    let mut req = RequestHeader::build(method, target.as_bytes(), None).unwrap();
    for (name, value) in headers {
        req.append_header(name.to_string(), *value).unwrap();
    }
    req
}

fn ip() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

fn read(req: &RequestHeader) -> (Result<Ask, Denial>, Option<uuid::Uuid>) {
    let mut caller = Caller::new(ip(), req);
    let ask = read_request(req, &router(), &Limits::default(), &mut caller);
    (ask, caller.token_id)
}

fn path(s: &str) -> SecretPath {
    SecretPath::parse(s).unwrap()
}

fn value(p: &str, v: &str) -> Arc<CachedValue> {
    Arc::new(
        CachedValue::new(
            path(p),
            1,
            SecretBytes::new(v.as_bytes().to_vec()),
            Sensitivity::Standard,
            Vec::new(),
        )
        .unwrap(),
    )
}

#[test]
fn a_request_is_read_into_its_target_token_and_distinct_sorted_paths() {
    let t = token();
    let bearer = format!("Bearer {t}");
    let req = request(
        "GET",
        "http://api.example.com/v1/x?y=1",
        &[
            ("proxy-authorization", &bearer),
            ("authorization", "Bearer {{secret:prod/b}}"),
            ("x-both", "{{secret:prod/a}} {{secret:prod/b}}"),
        ],
    );
    let (ask, token_id) = read(&req);
    let ask = ask.unwrap();
    assert_eq!(ask.target.destination.to_string(), "api.example.com");
    assert_eq!(ask.target.path_and_query.as_str(), "/v1/x?y=1");
    assert_eq!(ask.token.expose(), t);
    assert_eq!(ask.paths, vec![path("prod/a"), path("prod/b")]);
    assert_eq!(ask.scan.headers.len(), 2);
    assert_eq!(token_id, Some(ask.token.id()));
}

#[test]
fn the_target_is_refused_before_the_token_and_the_token_before_the_placeholders() {
    let bearer = format!("Bearer {}", token());
    let cases: [(RequestHeader, StatusCode, &str, bool); 4] = [
        // CONNECT without any token: the method is what is wrong first.
        (
            request("CONNECT", "api.example.com:443", &[]),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            false,
        ),
        // No route, and no token either.
        (
            request("GET", "/nowhere/x", &[("x", "{{secret:bad path}}")]),
            StatusCode::NOT_FOUND,
            "not_found",
            false,
        ),
        // A malformed placeholder, but the token is missing first.
        (
            request("GET", "/openai/v1", &[("x", "{{secret:}}")]),
            StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            "token_invalid",
            false,
        ),
        // Token read: the refusal of the placeholder in the target is audited with its id.
        (
            request(
                "GET",
                "/openai/v1?k={{secret:prod/a}}",
                &[("proxy-authorization", &bearer)],
            ),
            StatusCode::BAD_REQUEST,
            "invalid_placeholder",
            true,
        ),
    ];
    for (req, status, code, names_token) in cases {
        let (ask, token_id) = read(&req);
        let denial = ask.err().unwrap();
        assert_eq!((denial.status, denial.code.as_str()), (status, code));
        assert_eq!(token_id.is_some(), names_token, "{code}");
    }
}

#[test]
fn only_routes_and_pass_through_hosts_take_requests_without_placeholders() {
    let bearer = format!("Bearer {}", token());
    let auth = [("proxy-authorization", bearer.as_str())];
    for allowed in ["/openai/v1/models", "http://passthrough.example.com/x"] {
        let ask = read(&request("GET", allowed, &auth)).0.unwrap();
        assert!(ask.scan.is_empty());
        check_pass_through(&ask.target).unwrap();
    }
    let ask = read(&request("GET", "http://api.example.com/x", &auth))
        .0
        .unwrap();
    let denial = check_pass_through(&ask.target).unwrap_err();
    assert_eq!(denial.status, StatusCode::FORBIDDEN);
    assert_eq!(denial.code.as_str(), "destination_not_allowed");
    assert!(
        denial.message.starts_with("api.example.com is not"),
        "{}",
        denial.message
    );
    assert!(
        denial.message.contains("{{secret:PATH}}"),
        "{}",
        denial.message
    );
}

#[test]
fn substitution_puts_each_resolved_value_in_its_placeholder() {
    let bearer = format!("Bearer {}", token());
    let req = request(
        "GET",
        "http://api.example.com/x",
        &[
            ("proxy-authorization", &bearer),
            ("authorization", "Bearer {{secret:prod/a}}"),
            ("x-key", "{{secret:prod/b}}"),
        ],
    );
    let ask = read(&req).0.unwrap();
    let values = [value("prod/b", "bee"), value("prod/a", "sk-a")];
    let substituted = substitute(&req, &ask.scan, &values, &Limits::default()).unwrap();
    let shown: Vec<(String, Vec<&[u8]>)> = substituted
        .iter()
        .map(|s| {
            let values = s.values.iter().map(|v| v.as_bytes()).collect();
            (s.name.to_string(), values)
        })
        .collect();
    assert_eq!(
        shown,
        vec![
            ("authorization".to_owned(), vec![&b"Bearer sk-a"[..]]),
            ("x-key".to_owned(), vec![&b"bee"[..]]),
        ]
    );
    assert!(substituted.iter().all(|s| s.values[0].is_sensitive()));
}

#[test]
fn a_value_missing_from_the_resolved_set_fails_substitution() {
    let bearer = format!("Bearer {}", token());
    let req = request(
        "GET",
        "http://api.example.com/x",
        &[
            ("proxy-authorization", &bearer),
            ("authorization", "{{secret:prod/a}}"),
        ],
    );
    let ask = read(&req).0.unwrap();
    let denial = substitute(&req, &ask.scan, &[value("prod/b", "x")], &Limits::default())
        .err()
        .unwrap();
    assert_eq!(denial.status, StatusCode::BAD_REQUEST);
    assert_eq!(denial.code.as_str(), "invalid_placeholder");
}

#[test]
fn only_an_admission_that_injected_something_has_values_to_scrub() {
    let bearer = format!("Bearer {}", token());
    let req = request(
        "GET",
        "/openai/v1",
        &[("proxy-authorization", bearer.as_str())],
    );
    let target = read(&req).0.unwrap().target;
    let addr: SocketAddr = "127.0.0.1:443".parse().unwrap();
    let mut admission = Admission::pass_through(target, addr);
    assert!(admission.scrub_set().is_none());
    assert!(admission.substituted.is_empty());
    admission.scrub = Some(Arc::new(ScrubSet::new(&[]).unwrap()));
    assert!(
        admission.scrub_set().is_none(),
        "an empty set scrubs nothing"
    );
    admission.scrub = Some(value("prod/a", "sk-live-0123456789").scrub.clone());
    assert!(admission.scrub_set().is_some());
}
