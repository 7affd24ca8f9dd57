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

#[test]
fn kms_faults_have_their_own_codes() {
    let down = Denial::from(ResolveError::Kms("Cloud KMS decrypt: UNAVAILABLE".into()));
    assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(down.code, "kms_unavailable");
    assert_eq!(down.retry_after, Some(KMS_RETRY_AFTER_SECONDS));
    assert!(!down.message.contains("UNAVAILABLE"), "{}", down.message);

    let forged = Denial::from(ResolveError::KmsIntegrity {
        path: "prod/a".into(),
        reason: "the plaintext does not match its checksum".into(),
    });
    assert_eq!(forged.status, StatusCode::BAD_GATEWAY);
    assert_eq!(forged.code, "kms_integrity_failed");
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
        },
    ] {
        let code = e.code();
        assert_eq!(Denial::from(e).code, code);
    }
}

#[test]
fn a_control_plane_rate_limit_reaches_the_agent_as_429_with_retry_after() {
    let d = Denial::from_code(ErrorCode::RateLimited, "slow down");
    assert_eq!(d.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(d.code, "rate_limited");
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
    assert_eq!((d.status.as_u16(), d.code), (429, "rate_limited"));
    assert_eq!(d.retry_after, Some(2));
    assert!(d.message.contains("token_injections"), "{}", d.message);
}
