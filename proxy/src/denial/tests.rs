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
        assert_eq!(d.code, code.as_str());
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
    assert_eq!(d.code, "control_plane_unavailable");
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
    assert_eq!(d.code, "token_invalid");
}

#[test]
fn ssrf_refusals_are_destination_not_allowed() {
    let d = Denial::from(SsrfError::Forbidden {
        host: "x".into(),
        ip: "127.0.0.1".parse().unwrap(),
        class: "loopback",
    });
    assert_eq!(d.status, StatusCode::FORBIDDEN);
    assert_eq!(d.code, "destination_not_allowed");
    assert!(d.message.contains("SSRF"));
}
