#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

#[test]
fn token_codes_are_407_and_policy_codes_403() {
    for code in [
        ErrorCode::TokenInvalid,
        ErrorCode::TokenExpired,
        ErrorCode::TokenRevoked,
    ] {
        let d = Denial::from_code(code, "m");
        assert_eq!(d.status, StatusCode::PROXY_AUTHENTICATION_REQUIRED);
        assert!(d.is_auth());
    }
    for code in [
        ErrorCode::ScopeDenied,
        ErrorCode::DestinationNotAllowed,
        ErrorCode::IpNotAllowed,
        ErrorCode::ApprovalPending,
        ErrorCode::ApprovalDenied,
        ErrorCode::UsesExhausted,
    ] {
        let d = Denial::from_code(code, "m");
        assert_eq!(d.status, StatusCode::FORBIDDEN, "{code}");
        assert_eq!(d.code, code);
    }
    assert_eq!(
        Denial::from_code(ErrorCode::SecretNotFound, "m").status,
        StatusCode::NOT_FOUND
    );
}

#[test]
fn unexpected_codes_become_control_plane_unavailable() {
    let d = Denial::from_code(ErrorCode::Internal, "boom details");
    assert_eq!(d.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(d.code.as_str(), "control_plane_unavailable");
    assert!(!d.message.contains("boom"));
}

#[test]
fn body_is_the_error_envelope() {
    let d = Denial::from(RouteError::Connect);
    assert_eq!(d.status, StatusCode::METHOD_NOT_ALLOWED);
    let v: serde_json::Value = serde_json::from_slice(&d.body()).unwrap();
    assert_eq!(v["error"]["code"], "method_not_allowed");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("route mode"));
}

#[test]
fn auth_errors_are_token_invalid() {
    let d = Denial::from(AuthError::Missing);
    assert_eq!(d.status, StatusCode::PROXY_AUTHENTICATION_REQUIRED);
    assert_eq!(d.code.as_str(), "token_invalid");
}

#[test]
fn ssrf_refusals_are_destination_not_allowed() {
    let d = Denial::from(SsrfError::Forbidden {
        host: "x".into(),
        ip: "127.0.0.1".parse().unwrap(),
        class: "loopback",
    });
    assert_eq!(d.status, StatusCode::FORBIDDEN);
    assert_eq!(d.code.as_str(), "destination_not_allowed");
    assert!(d.message.contains("SSRF"));
}

#[test]
fn kms_faults_have_their_own_codes() {
    let down = Denial::from(ResolveError::Kms("Cloud KMS decrypt: UNAVAILABLE".into()));
    assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(down.code.as_str(), "kms_unavailable");
    assert_eq!(down.retry_after, Some(KMS_RETRY_AFTER_SECONDS));
    assert!(!down.message.contains("UNAVAILABLE"), "{}", down.message);

    let forged = Denial::from(ResolveError::KmsIntegrity {
        path: "prod/a".into(),
        reason: "the plaintext does not match its checksum".into(),
    });
    assert_eq!(forged.status, StatusCode::BAD_GATEWAY);
    assert_eq!(forged.code.as_str(), "kms_integrity_failed");
    assert_eq!(
        forged.retry_after, None,
        "an integrity failure is not retried blindly"
    );
    assert!(!forged.message.contains("checksum"), "{}", forged.message);

    // The resolver's own code for each error matches what the agent is answered.
    for e in [
        ResolveError::Kms("x".into()),
        ResolveError::KmsIntegrity {
            path: "p".into(),
            reason: "r".into(),
        },
        ResolveError::Denied {
            code: ErrorCode::UsesExhausted,
            message: "m".into(),
            path: None,
            recorded: true,
        },
    ] {
        let code = e.code();
        assert_eq!(Denial::from(e).code.as_str(), code);
    }
}

#[test]
fn a_control_plane_rate_limit_reaches_the_agent_as_429_with_retry_after() {
    let d = Denial::from_code(ErrorCode::RateLimited, "slow down");
    assert_eq!(d.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(d.code.as_str(), "rate_limited");
    assert_eq!(d.retry_after, Some(1));
}

#[test]
fn sidecar_rate_limits_round_retry_after_up_to_whole_seconds() {
    let limited = crate::rate_limit::Limited {
        limit: crate::rate_limit::Limit::TokenInjections,
        retry_after: std::time::Duration::from_millis(1500),
        first_trip: true,
    };
    let d = Denial::rate_limited(&limited);
    assert_eq!((d.status.as_u16(), d.code.as_str()), (429, "rate_limited"));
    assert_eq!(d.retry_after, Some(2));
    assert!(d.message.contains("token_injections"), "{}", d.message);
}

#[test]
fn the_body_is_byte_for_byte_the_documented_envelope() {
    let d = Denial::from(AuthError::Missing);
    let expected = format!(
        "{{\"error\":{{\"code\":\"token_invalid\",\"message\":{}}}}}",
        serde_json::to_string(&AuthError::Missing.to_string()).unwrap()
    );
    assert_eq!(d.body(), expected.as_bytes());
}

#[test]
fn sidecar_only_refusals_keep_their_wire_codes() {
    let cases = [
        (Denial::audit_unavailable(), 503, "audit_unavailable"),
        (Denial::unscannable("zstd"), 502, "unscannable_response"),
        (Denial::unscannable_upgrade(), 502, "unscannable_response"),
        (Denial::from(RouteError::Connect), 405, "method_not_allowed"),
        (
            Denial::from(SsrfError::Resolve {
                host: "nowhere.invalid".into(),
                reason: "no address".into(),
            }),
            502,
            "upstream_unresolvable",
        ),
        (Denial::client_address_unknown(), 400, "invalid_request"),
    ];
    for (denial, status, code) in cases {
        assert_eq!(
            (denial.status.as_u16(), denial.code.as_str()),
            (status, code),
            "{denial:?}"
        );
        let v: serde_json::Value = serde_json::from_slice(&denial.body()).unwrap();
        assert_eq!(v["error"]["code"], code);
    }
}

#[test]
fn proxying_errors_map_to_upstream_codes_by_the_side_that_failed() {
    use pingora::{Error, ErrorType};
    let cases: [(Box<Error>, u16, &str); 5] = [
        (
            Error::explain(ErrorType::HTTPStatus(504), "timed out"),
            504,
            "upstream_error",
        ),
        (
            Error::explain(ErrorType::HTTPStatus(1000), "not a status"),
            502,
            "upstream_error",
        ),
        (
            Error::new_up(ErrorType::ConnectRefused),
            502,
            "upstream_unavailable",
        ),
        (
            Error::new_down(ErrorType::InvalidHTTPHeader),
            400,
            "invalid_request",
        ),
        (Error::new(ErrorType::InternalError), 500, "internal"),
    ];
    for (error, status, code) in cases {
        let d = Denial::from_proxy_error(&error);
        assert_eq!(
            (d.status.as_u16(), d.code.as_str()),
            (status, code),
            "{error}"
        );
        assert!(!d.message.contains("timed out"), "{}", d.message);
    }
}

#[test]
fn the_response_head_is_json_never_cached_and_sized_to_the_body() {
    let d = Denial::control_plane_unavailable();
    let body = d.body();
    let head = d.response_header(body.len()).unwrap();
    assert_eq!(head.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(head.headers["content-type"], "application/json");
    assert_eq!(head.headers["content-length"], body.len().to_string());
    assert_eq!(head.headers["cache-control"], "no-store");
    assert!(head.headers.get("proxy-authenticate").is_none());
    assert!(head.headers.get("retry-after").is_none());
}

#[test]
fn a_token_refusal_asks_for_proxy_credentials_and_a_limit_says_when_to_retry() {
    let auth = Denial::from(AuthError::Missing).response_header(1).unwrap();
    assert_eq!(auth.status, StatusCode::PROXY_AUTHENTICATION_REQUIRED);
    assert_eq!(auth.headers["proxy-authenticate"], PROXY_AUTHENTICATE);

    let kms = Denial::from(ResolveError::Kms("down".into()))
        .response_header(1)
        .unwrap();
    assert_eq!(
        kms.headers["retry-after"],
        KMS_RETRY_AFTER_SECONDS.to_string()
    );
    assert!(kms.headers.get("proxy-authenticate").is_none());
}

#[test]
fn the_admin_404_body_is_the_bytes_it_always_was() {
    let d = Denial::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        "no such endpoint",
    );
    assert_eq!(
        d.body(),
        &br#"{"error":{"code":"not_found","message":"no such endpoint"}}"#[..]
    );
}

#[test]
fn a_policy_denial_keeps_the_path_it_refused_for_the_audit_record() {
    let path = agent_secret_core::path::SecretPath::parse("prod/second").unwrap();
    let e = ResolveError::from(agent_secret_core::policy::Denial::SecretNotFound {
        path: path.clone(),
    });
    assert_eq!(e.denied_path(), Some(&path));
    assert_eq!(e.code(), "secret_not_found");
    assert_eq!(ResolveError::Unavailable("x".into()).denied_path(), None);
}
